"""GPU job: train one shipped model for a wall-clock budget, resuming, then export.

Run on the GPU machine (torch, numpy, opencv, pillow, click, safetensors; no dlib,
lpips or facenet needed)::

    faceedit --device cuda train --data packs/faces64_train.npz --mapping mlp \\
        --run-dir runs/faces64 --minutes 8.5 --export $OUT

Under ``torchrun`` (``torchrun --nproc_per_node N -m faceedit --device cuda train ...``) each
process is one rank of a data-parallel run (:class:`training.loop.Trainer` with the launch's
:class:`core.distributed.DistContext`): ``--batch`` is the global batch, rank 0 alone writes the
run folder and the export, and every rank must see the same run folder (on several nodes: shared
storage). The state holds nothing of a rank, so a chunk may continue on another number of ranks.

It continues from ``RUN_DIR/checkpoint.safetensors`` when that exists (same machine,
exact: Adam and RNG included), else from an earlier chunk's export given with
``--resume-from DIR`` (fresh machine; Adam restarts), else starts fresh. ``--minutes``
bounds the whole job from the command's start (data decoding, training, export). It
writes the three files of :mod:`faceedit.training.export` into ``--export``; the
command prints a summary table last.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from faceedit.core.errors import TrainingError

log = logging.getLogger(__name__)

NAMES = {"mlp": "faces64", "transformer": "faces64-wpp"}
SG1_NAME = "faces64-sg1"  # the default name of a StyleGAN v1 run (arch stylegan1, MLP mapping)
EXPORT_RESERVE_S = 30.0


def default_name(mapping: str, arch: str | None = None) -> str:
    """The model name a run gets when none is given: ``faces64``, ``faces64-wpp`` or ``faces64-sg1``."""
    return SG1_NAME if arch == "stylegan1" else NAMES[mapping]


def run_job(*, data, mapping: str, run_dir, minutes: float, export=None, resume_from=None, name: str | None = None,
            device: str = "auto", max_steps: int | None = None, overrides: dict | None = None,
            t_start: float | None = None, init_from=None) -> dict:
    """Train one model for ``minutes`` of wall clock (resuming) and export it.

    Args:
        data: train pack (``faces64_train.npz``).
        mapping: ``mlp`` (faces64) or ``transformer`` (faces64-wpp).
        run_dir: folder kept between chunks on the training machine.
        minutes: wall-clock budget of the whole job, counted from ``t_start``.
        export: folder for the three export files (None: no export).
        resume_from: folder with an earlier export, used when ``run_dir`` has no checkpoint.
        name: model name (default :func:`default_name`: ``faces64`` / ``faces64-wpp``, or
            ``faces64-sg1`` when ``overrides`` has ``arch="stylegan1"``).
        device: ``auto``, ``cpu`` or ``cuda``.
        max_steps: stop after this many steps (tests, benchmarks).
        overrides: :class:`TrainConfig` fields for a fresh run or one started with
            ``init_from`` (ignored on resume, which keeps the saved settings; an ``arch``
            among them must be the resumed run's). ``dict(arch="stylegan1")`` trains a
            StyleGAN v1 generator (``mapping`` must then be ``mlp``).
        init_from: a native checkpoint folder (G_ema and D, e.g. a shipped model) to continue
            when neither ``run_dir`` nor ``resume_from`` holds a training state: G and G_ema
            start from its G_ema, the counters from its provenance, Adam fresh.
        t_start: when the budget started (``time.time()``; a command passes its own start so
            that its imports count); default: this call.
    Returns:
        summary dict (also written as ``train.json`` into the export zip); ``rank`` and
        ``world_size`` say which process of a ``torchrun`` launch returned it (the export is rank 0's).
    Raises:
        TrainingError: the resumed state was trained with another mapping or ``arch`` than
            asked for, no time is left to train, or training diverged before a checkpoint.
        DeviceError: under ``torchrun``, the ranks do not see the same run folder.
    """
    from faceedit.core import distributed as _dist
    from faceedit.core.device import resolve_device

    dev = resolve_device(device)
    with _dist.launch(dev) as ctx:
        return _run_job(ctx, _dist.rank_device(ctx, dev), data=data, mapping=mapping, run_dir=run_dir,
                        minutes=minutes, export=export, resume_from=resume_from, name=name, max_steps=max_steps,
                        overrides=overrides, t_start=t_start, init_from=init_from)


def _run_job(ctx, dev, *, data, mapping, run_dir, minutes, export, resume_from, name, max_steps, overrides, t_start,
             init_from) -> dict:
    import torch

    from faceedit.core import distributed as _dist
    from faceedit.core.pack import Pack

    from . import export as _export
    from .loop import TrainConfig, Trainer, load_images, read_state_metadata

    if not Path(data).is_file():
        raise FileNotFoundError(f"data pack {data} does not exist; build it with `faceedit dataset build` "
                                f"(by default it writes <faceedit cache>/data/faces64_train.npz)")
    t_start = time.time() if t_start is None else t_start
    deadline = t_start + minutes * 60
    overrides = dict(overrides or {})
    name = name or default_name(mapping, overrides.get("arch"))
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"

    if ckpt.is_file():
        cfg = TrainConfig.from_dict(read_state_metadata(ckpt.read_bytes(), ckpt)["config"])
        source = f"checkpoint {ckpt}"
    elif resume_from is not None and _export.find_export(resume_from, name) is not None:
        cfg = _export.read_export_config(resume_from, name)
        source = f"export in {resume_from}"
    elif resume_from is not None:
        raise FileNotFoundError(f"--resume-from {resume_from}: no {', '.join(_export.export_names(name).values())} "
                                f"there and no checkpoint in {run_dir}; copy the files an earlier chunk exported "
                                f"into that folder, or leave out --resume-from to start fresh")
    elif init_from is not None:
        cfg = _export.native_train_config(init_from, overrides)
        source = f"native checkpoint {init_from}"
    else:
        cfg = TrainConfig(mapping=mapping, **overrides)
        source = "fresh start"
    if cfg.mapping != mapping:
        raise TrainingError(f"{source} was trained with mapping {cfg.mapping!r}, not {mapping!r}; "
                            f"use another --run-dir or --mapping {cfg.mapping}")
    if overrides.get("arch", cfg.arch) != cfg.arch:
        raise TrainingError(f"{source} holds a {cfg.arch} run, not {overrides['arch']}; use another --run-dir "
                            f"or --arch {cfg.arch}")

    _dist.check_same(ctx, source, "where the run continues from")
    pack_meta = Pack(data).meta
    images = load_images(data, cfg.resolution)
    trainer = Trainer(cfg, images, dev, run_dir=run_dir, dist=ctx)
    if ckpt.is_file():
        trainer.load_checkpoint(ckpt)
        trainer.load_logs()
    elif source.startswith("export"):
        _export.resume_from_export(trainer, resume_from, name)
    elif source.startswith("native"):
        _export.init_from_native(trainer, init_from)
    _dist.check_same(ctx, (trainer.step_count, trainer.nimg), "the step and image counters")
    trainer.sync_from_main()
    if ctx.is_main:
            log.info("%s: %s; %d training images; step %d, %.1f kimg; device %s, amp %s; %d rank(s)", name, source,
                 len(images), trainer.step_count, trainer.kimg, dev, trainer.amp_dtype, ctx.world_size)

    # rank 0's clock sets every rank's budget (the ranks must stop at the same step)
    budget = _dist.main_value(ctx, deadline - time.time() - (EXPORT_RESERVE_S if export is not None else 5.0))
    if budget <= 0 and max_steps is None:
        raise TrainingError(f"--minutes {minutes} leaves no time to train after loading (need more than "
                            f"{EXPORT_RESERVE_S:.0f} s for the export)")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    summary = trainer.train(seconds=max(budget, 0.0), max_steps=max_steps)
    if summary["stopped_on_nan"]:
        if ckpt.is_file():
            trainer.load_checkpoint(ckpt)
            if ctx.is_main:
                log.error("%s: non-finite losses; exporting the last good checkpoint (step %d)", name,
                          trainer.step_count)
        else:
            raise TrainingError(f"{name}: training diverged before the first checkpoint; lower --lr or raise "
                                f"--r1-gamma")

    profile = trainer.timer.table()
    summary.update({
        "name": name, "arch": cfg.arch, "mapping": mapping, "source": source, "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
        "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2 ** 30) if dev.type == "cuda" else None,
        "train_minutes_total": trainer.train_seconds / 60, "gsnr_seconds": trainer.gsnr_seconds,
        "kid_seconds": trainer.kid_seconds, "kid": trainer.kid_rows[-1] if trainer.kid_rows else None,
        "profile_ms_per_step": {k: round(v, 3) for k, v, _ in profile},
        "config": cfg.to_dict(), "images": len(images), "job_seconds": time.time() - t_start,
        "torch": torch.__version__, "rank": ctx.rank, "world_size": ctx.world_size,
    })
    if export is not None and ctx.is_main:
        provenance = {
            "kimg": round(trainer.kimg, 3), "steps": trainer.step_count,
            "minutes": round(trainer.train_seconds / 60, 2), "images_seen": trainer.nimg,
            "data": {"pack": Path(data).name, "images": len(images), "split": pack_meta.get("split", "train"),
                     "sources": pack_meta.get("sources", "UTKFace + CelebA (train split)")},
            "training": {k: cfg.to_dict()[k] for k in ("batch", "lr", "r1_gamma", "pl_weight", "ema_kimg",
                                                       "augment", "mirror", "style_mixing")},
            "style_mixing_prob": cfg.mixing_prob, "torch": torch.__version__,
            "hardware": (f"{ctx.world_size} x " if ctx.distributed else "") + (summary["gpu"] or "cpu"),
        }
        extra = {"samples.png": _png(trainer.sample_grid()), "train.json": json.dumps(summary, indent=2).encode()}
        for fname in ("loss.csv", "gsnr.csv", "kid.csv"):
            p = run_dir / fname
            if p.is_file():
                extra[fname] = p.read_bytes()
        plot = _gsnr_plot_png(run_dir / "gsnr.csv", name)
        if plot is not None:
            extra["gsnr.png"] = plot
        files = _export.export_run(trainer, export, name, recipe=pack_meta.get("recipe"), provenance=provenance,
                                   extra_files=extra)
        summary["export"] = {k: str(v) for k, v in files.items()}
        summary["export_mib"] = {k: round(Path(v).stat().st_size / 2 ** 20, 2) for k, v in files.items()}
    _dist.barrier(ctx)  # the job ends on every rank once rank 0 has written the export
    summary["job_seconds"] = time.time() - t_start
    return summary


def _png(grid) -> bytes:
    from faceedit.core.images import encode_image

    return encode_image(grid, "PNG")


def _gsnr_plot_png(csv_path: Path, title: str):
    """GSNR per group over kimg as PNG bytes, or None (no matplotlib / no data)."""
    try:
        from .plots import gsnr_plot_png
    except ImportError:
        return None
    try:
        return gsnr_plot_png(csv_path, title)
    except ImportError:
        return None


def format_table(s: dict, extra: tuple | list = ()) -> str:
    """The short table printed last; ``extra`` rows ``(label, value)`` go after the main ones."""
    rows = [("model", s["name"]), ("arch", s.get("arch", "stylegan2")), ("source", s["source"]),
            ("device", s["gpu"] or s["device"]), ("processes", s.get("world_size", 1)),
            ("steps this chunk", s["steps"]), ("kimg total", s["kimg"]), ("kimg this chunk", round(s["chunk_kimg"], 1)),
            ("images/s", round(s["img_per_s"], 1)), ("train minutes total", round(s["train_minutes_total"], 2)),
            ("job seconds", round(s["job_seconds"], 1)), ("gsnr seconds", round(s["gsnr_seconds"], 1)),
            ("kid seconds", round(s.get("kid_seconds", 0.0), 1)),
            ("peak GPU memory GiB", None if s["peak_mem_gib"] is None else round(s["peak_mem_gib"], 2)),
            ("stopped on NaN", s["stopped_on_nan"])]
    if s.get("kid"):
        k = s["kid"]
        rows.append(("KID-attr vs held-out", f"{float(k['kid']):.4f} [{float(k['ci_low']):.4f}, "
                                             f"{float(k['ci_high']):.4f}] n={k['n']}"))
    rows += list(extra)
    for k, v in s.get("profile_ms_per_step", {}).items():
        rows.append((f"  {k} ms/step", v))
    for k, v in s.get("export_mib", {}).items():
        rows.append((f"  export {k} MiB", v))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def parse_overrides(items) -> dict:
    """``["batch=32", "augment=color"]`` -> typed :class:`TrainConfig` overrides."""
    from dataclasses import fields

    from .loop import TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    out = {}
    for item in items:
        if "=" not in item:
            raise TrainingError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in types:
            raise TrainingError(f"unknown setting {k!r}; known: {', '.join(sorted(types))}")
        t = str(types[k])
        if v.lower() in ("none", "null") and "None" in t:
            out[k] = None
        elif t.startswith("bool"):
            out[k] = v.lower() in ("1", "true", "yes", "on")
        elif t.startswith("int"):
            out[k] = int(v)
        elif t.startswith("float"):
            out[k] = float(v)
            if not math.isfinite(out[k]):
                raise TrainingError(f"{k} must be finite")
        else:
            out[k] = v
    return out
