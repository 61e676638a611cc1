"""Training speed at 64 px: the reference step and the fast step, same run, same GPU, both models.

For each model (``faces64``: MLP mapping, ``faces64-wpp``: transformer mapping), starting from
the shipped weights (or random ones with ``--random``), on the real train pack:

* the reference step (``TrainConfig(fast=False)``) at the shipped models' batch (192);
* the fast step (``TrainConfig(fast=True)``, ``training.faststep``) at ``--batch``.

Each row times whole steps over a multiple of 16 steps (so the lazy R1 every 16 and path
length every 4 steps are in the mean), after warm-up steps that are not timed; the fast
rows' warm-up includes ``torch.compile``, and its wall time is a column of its own (what a
user waits for once per process). img/s counts real images shown to D per second.

The compute floor: FLOPs per training image counted with ``torch.utils.flop_counter`` over
16 reference steps (every phase and regulariser, forward and backward, at a small batch;
FLOPs are linear in the batch), against the measured dense bf16 matmul rate of this GPU.
``% of floor`` is img/s over that bound. Both steps do the same work per image; the fast
path's polyphase convolutions do more multiply-adds than the reference's, so its share of
the floor is measured against the reference's FLOPs (the work that has to be done).

    python bench/scripts/training_speed.py --data PACK --out DIR [--batch 512] [--steps 48]

Prints a table last and writes ``DIR/training_speed.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesis import matmul_peak  # noqa: E402

from faceedit.training.export import init_from_native, native_train_config  # noqa: E402
from faceedit.training.loop import Trainer, TrainConfig, load_images  # noqa: E402

MODELS = {"faces64": "mlp", "faces64-wpp": "transformer"}
OLD_BATCH = 192


def _weights_dir(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "checkpoints" / "weights" / name


def make_trainer(name: str, images, device, *, fast: bool, batch: int, random: bool, compile: bool = True,
                 mode: str = "default") -> Trainer:
    quiet = dict(compile=compile, compile_mode=mode, log_every=10 ** 9, gsnr_every=0, profile_every=0,
                 sample_every_kimg=1e12)
    if random:
        cfg = TrainConfig(mapping=MODELS[name], batch=batch, fast=fast, **quiet)
        return Trainer(cfg, images, device)
    folder = _weights_dir(name)
    tr = Trainer(native_train_config(folder, dict(batch=batch, fast=fast, **quiet)), images, device)
    init_from_native(tr, folder)
    return tr


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(tr: Trainer, warmup: int, steps: int) -> dict:
    """Wall time of ``warmup`` untimed steps (compile included) and of ``steps`` timed ones."""
    dev = tr.device
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(warmup):
        tr.step()
    sync(dev)
    t1 = time.perf_counter()
    for _ in range(steps):
        tr.step()
    sync(dev)
    t2 = time.perf_counter()
    finite = all(math.isfinite(float(s / max(c, 1))) for s, c in tr._acc.values())
    return {"warmup_s": t1 - t0, "s": t2 - t1, "ms_per_step": 1000 * (t2 - t1) / steps,
            "img_per_s": steps * tr.cfg.batch / (t2 - t1), "finite": finite}


def flops_per_image(name: str, images, device, random: bool, batch: int = 32) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    tr = make_trainer(name, images, device, fast=False, batch=batch, random=random)
    tr.step()  # lazy state (cudnn) outside the count
    with FlopCounterMode(display=False) as fc:
        for _ in range(16):
            tr.step()
    return fc.get_total_flops() / (16 * batch)


def _fast_row(ap: argparse.ArgumentParser, spec: str) -> tuple:
    """``BATCH:MODE`` -> ``(batch, compile mode)``; anything else is a usage error naming the form."""
    batch, _, mode = spec.partition(":")
    if not batch.isdigit() or not mode:
        ap.error(f"--fast rows are BATCH:MODE (e.g. 1024:default), got {spec!r}")
    return int(batch), mode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="train pack (faceedit dataset build)")
    ap.add_argument("--out", required=True, help="folder for training_speed.json / .md")
    ap.add_argument("--batch", type=int, default=512, help="batch of the fast step")
    ap.add_argument("--fast", default=None, metavar="BATCH:MODE,...",
                    help="fast-step rows to time, e.g. 1024:reduce-overhead,512:default "
                         "(default: one row, --batch with torch.compile's default mode)")
    ap.add_argument("--old-batch", type=int, default=OLD_BATCH, help="batch of the reference step")
    ap.add_argument("--steps", type=int, default=48, help="timed steps (multiple of 16)")
    ap.add_argument("--warmup", type=int, default=16, help="untimed steps before timing (compile included)")
    ap.add_argument("--models", default="faces64,faces64-wpp")
    ap.add_argument("--random", action="store_true", help="random weights instead of the shipped ones")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="the fast step without torch.compile")
    a = ap.parse_args(argv)
    if a.steps % 16:
        ap.error("--steps must be a multiple of 16 (the R1 interval)")
    fast_rows = [_fast_row(ap, x) for x in a.fast.split(",")] if a.fast else [(a.batch, "default")]
    dev = torch.device(a.device)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(a.data, 64)
    peak = matmul_peak(dev, torch.bfloat16)
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "images": len(images), "bf16_matmul_tflops": peak / 1e12, "rows": []}
    print(f"# {info['device']}, torch {info['torch']}, bf16 matmul {peak / 1e12:.0f} TFLOP/s", flush=True)
    for name in a.models.split(","):
        fpi = flops_per_image(name, images, dev, a.random, batch=min(32, a.old_batch))
        floor = peak / fpi
        for fast, batch, mode in [(False, a.old_batch, "default")] + [(True, b, m) for b, m in fast_rows]:
            torch.manual_seed(0)
            tr = make_trainer(name, images, dev, fast=fast, batch=batch, random=a.random, compile=not a.no_compile,
                              mode=mode)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                r = time_steps(tr, a.warmup, a.steps)
            except Exception as e:  # a mode that fails on this torch/GPU is a row that says so, not a lost run
                print(f"{name} fast batch {batch} {mode}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                info["rows"].append({"model": name, "step": f"fast, compile {mode}", "batch": batch,
                                     "error": f"{type(e).__name__}: {str(e)[:120]}"})
                del tr
                continue
            step = "reference" if not fast else "fast (eager)" if a.no_compile else f"fast, compile {mode}"
            r.update(model=name, step=step, batch=batch, gflop_per_img=fpi / 1e9,
                     floor_img_per_s=floor, share_of_floor=r["img_per_s"] / floor,
                     peak_mem_gib=torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None)
            info["rows"].append(r)
            print(json.dumps(r), flush=True)
            del tr
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    base = {r["model"]: r["img_per_s"] for r in info["rows"] if r["step"] == "reference"}
    lines = ["| model | step | batch | img/s | ms/step | x reference | warm-up s (compile) | GFLOP/img | "
             "% of bf16 floor | peak GiB | finite |", "|" + "---|" * 11]
    for r in info["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['step']} | {r['batch']} | failed: {r['error']} |" + " |" * 7)
            continue
        r["ratio"] = r["img_per_s"] / base[r["model"]]
        lines.append(f"| {r['model']} | {r['step']} | {r['batch']} | {r['img_per_s']:.0f} | {r['ms_per_step']:.1f} | "
                     f"{r['ratio']:.2f} | {r['warmup_s']:.1f} | {r['gflop_per_img']:.2f} | "
                     f"{100 * r['share_of_floor']:.2f} | {r['peak_mem_gib'] or 0:.1f} | {r['finite']} |")
    table = "\n".join(lines)
    (out / "training_speed.json").write_text(json.dumps(info, indent=2))
    (out / "training_speed.md").write_text(f"{info['device']}, torch {info['torch']}, bf16 matmul "
                                           f"{peak / 1e12:.0f} TFLOP/s; timed {a.steps} steps after "
                                           f"{a.warmup} warm-up steps\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
