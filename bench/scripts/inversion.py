"""Speed of optimisation inversion: steps/s and images x steps/s, ours beside NVIDIA's recipe.

Usage (GPU machine; no lpips/dlib needed there)::

    python bench/scripts/inversion.py --out OUT [--model PATH] [--device auto] [--quick] \\
        [--configs nvidia-baseline,ours-poly-bf16-compile] [--batches 1] [--skip-64] [--no-cpu-rows]

Rows:

* ``nvidia-baseline``: NVIDIA's projector step as its code runs it: batch 1, float32,
  grouped ("fused") modulated convolutions, VGG16 features of the image area-downsampled
  to 256 px, noise maps optimised with the noise regulariser, Adam. The VGG16 here is
  torchvision's architecture with random weights (no download on the GPU machine): the
  cost is that of the real network, the loss values are meaningless.
* ``nvidia-code-fp16`` / ``nvidia-code-fp32`` (with ``--nvidia-src DIR``, a
  stylegan2-ada-pytorch checkout): the same step run on NVIDIA's own generator code in
  its fp16 mode (``num_fp16_res=4, conv_clamp=256``) and in fp32, with ours timed on the
  very same weights; the speed-up is then stated against ``nvidia-code-fp16``.
* ``ours``: the same loss terms, batched (1, 8, 32), shared-conv modulated convolutions,
  optionally bf16 autocast and ``torch.compile``; ``ours-poly-*``: the polyphase synthesis
  path (``path="poly"``, ``networks/fastsynth.py``).
* ``ours-poly-bf16-graphs`` / ``ours-poly-bf16-compile-graphs``: the whole step (latent
  noise, synthesis, loss, backward, fused Adam, noise re-normalisation) captured in one
  CUDA graph (``InversionOptions(cuda_graphs=True)``), eager ops / compiled loss inside;
  ``ours-poly-bf16-compile-ro``: ``compile="reduce-overhead"`` (CUDA graphs for the compiled
  loss's forward and backward only). A row whose capture fails reports the error and the run
  goes on.
* the 1000-step W+ inversion of one 1024 px photo: the projector of the fastest batch-1 row
  (already compiled) runs 1000 steps, timed wall-clock (graph capture included).
* ``cpu``: the default 64 px model (or its random twin) at batch 1/8/32 on the CPU, and
  the wall time of 200 steps for one face with the default CPU settings
  (``--perceptual disc``, prior on).

Generators: the given ``--model`` (default: the shipped ``faces64`` when present, else a
random generator of the same configuration) and a random config-f 1024 generator
(``Generator(512, 512, 1024)``, 30M synthesis parameters) on CUDA. Writes
``inversion_speed.json`` and ``inversion_speed.md`` to ``--out`` and prints the table last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from faceedit.core.device import resolve_device

FACES64 = dict(z_dim=256, w_dim=256, resolution=64, channel_base=2048, channel_max=256)
CONFIG_F = dict(z_dim=512, w_dim=512, resolution=1024, channel_base=32768, channel_max=512)
GPU_CONFIGS = ("nvidia-baseline", "ours-fp32", "ours-bf16", "ours-bf16-compile", "ours-poly-bf16",
               "ours-poly-bf16-compile", "ours-poly-bf16-graphs", "ours-poly-bf16-compile-graphs",
               "ours-poly-bf16-compile-ro")
ROW_KEYS = ("path", "amp", "compile", "cuda_graphs")  # Projector settings a row records


class VGGFeatureLoss(torch.nn.Module):
    """LPIPS-shaped VGG16 distance (5 stages, unit-normalised, area-downsampled to 256 px).

    Random torchvision weights: for timing only (same architecture and cost as LPIPS-VGG).
    """

    name = "vgg16-random"

    def __init__(self):
        super().__init__()
        import torchvision

        feats = torchvision.models.vgg16(weights=None).features.eval().requires_grad_(False)
        cuts = [4, 9, 16, 23, 30]
        self.slices = torch.nn.ModuleList([feats[a:b] for a, b in zip([0] + cuts[:-1], cuts)])

    def _feats(self, x):
        x = x.float() if not torch.is_autocast_enabled() else x
        if x.shape[-1] > 256:
            x = F.interpolate(x, size=(256, 256), mode="area")
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x / (x.float().square().sum(1, keepdim=True).sqrt() + 1e-10).to(x.dtype))
        return out

    def prepare(self, target):
        with torch.no_grad():
            return self._feats(target)

    def __call__(self, img, prep):
        return sum((a.float() - b.float()).square().sum(1).mean(dim=(1, 2)) for a, b in zip(self._feats(img), prep))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_projector(G, *, batch, steps, warmup, perceptual, optimize_noise=True, path="shared", amp=None,
                   compile=False, cuda_graphs=False, prior=None, prior_weight=0.0, space="w+", keep=None,
                   reference_step=False):
    """Seconds per optimisation step (median, mean) for one configuration.

    ``keep``: a dict that receives the ``projector`` and its ``target`` (to run it again
    without compiling anew). ``reference_step``: per-step Adam and noise re-normalisation as
    NVIDIA's code does them (foreach Adam, per-map ops) instead of the fused CUDA ones.
    """
    from faceedit.inversion.projector import InversionOptions, Projector

    dev = G.synthesis.const.device
    with torch.no_grad():
        target = G.synthesis(G.mapping(G.sample_z(batch, seed=1, device=dev)), path="shared").clamp(-1, 1)
    named = perceptual is None or isinstance(perceptual, str)
    opts = InversionOptions(space=space, steps=warmup + steps, perceptual=perceptual if named else "none",
                            optimize_noise=optimize_noise, path=path, amp=amp, compile=compile,
                            cuda_graphs=cuda_graphs, prior_weight=prior_weight)
    p = Projector(G, opts, prior=prior, perceptual_loss=None if named else perceptual)
    p._w_std = lambda: 1.0  # not part of a step; skip the sampling it needs
    if reference_step:
        p._fast_step = False
    marks = []

    def cb(step, _):
        if step + 1 >= warmup:
            _sync(dev)
            marks.append(time.perf_counter())

    p.project(target, callback=cb)
    if keep is not None:
        keep.update(projector=p, target=target)
    dts = [b - a for a, b in zip(marks[:-1], marks[1:])]
    dts.sort()
    return dts[len(dts) // 2], sum(dts) / len(dts)


def time_nvidia_projector(nv, vgg, *, steps: int, warmup: int, force_fp32: bool = False):
    """NVIDIA's projector step on NVIDIA's own generator code (``--nvidia-src``), batch 1.

    The loop of its ``projector.py``: one W code broadcast to all layers plus annealed latent
    noise, the noise buffers optimised with Adam (betas 0.9/0.999, lr 0.1) and re-normalised,
    images scaled to [0, 255] and area-downsampled to 256 px for VGG16 features, the noise
    regulariser at weight 1e5. The VGG16 is ``VGGFeatureLoss`` (random weights; NVIDIA's own
    file is a download). Returns (median, mean) seconds per step.
    """
    dev = next(nv.parameters()).device
    with torch.no_grad():
        ws_s = nv.mapping(torch.randn(1000, nv.z_dim, device=dev), None)[:, :1]
        w_avg = ws_s.mean(0, keepdim=True)
        w_std = float(((ws_s - w_avg).square().sum() / 1000) ** 0.5)
        target = nv.synthesis(nv.mapping(torch.randn(1, nv.z_dim, device=dev), None), noise_mode="const",
                              force_fp32=True).float().clamp(-1, 1)
        target_f = vgg.prepare((target + 1) * 127.5)
    noise_bufs = [b for n, b in nv.synthesis.named_buffers() if "noise_const" in n]
    w_opt = w_avg.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=0.1)
    with torch.no_grad():
        for b in noise_bufs:
            b[:] = torch.randn_like(b)
    for b in noise_bufs:
        b.requires_grad = True
    marks = []
    total = warmup + steps
    for step in range(total):
        t = step / total
        noise_scale = w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
        ws = (w_opt + torch.randn_like(w_opt) * noise_scale).repeat([1, nv.num_ws, 1])
        img = nv.synthesis(ws, noise_mode="const", force_fp32=force_fp32).float()
        img = (img + 1) * (255 / 2)
        dist = vgg(img, target_f).sum()
        reg = 0.0
        for v in noise_bufs:
            noise = v[None, None, :, :]
            while True:
                reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
                reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
                if noise.shape[2] <= 8:
                    break
                noise = F.avg_pool2d(noise, kernel_size=2)
        loss = dist + reg * 1e5
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for b in noise_bufs:
                b -= b.mean()
                b *= b.square().mean().rsqrt()
        if step + 1 >= warmup:
            _sync(dev)
            marks.append(time.perf_counter())
    for b in noise_bufs:
        b.requires_grad = False
    dts = sorted(b - a for a, b in zip(marks[:-1], marks[1:]))
    return dts[len(dts) // 2], sum(dts) / len(dts)


def _nvidia_row(nv, vgg, label, dev, steps, warmup, force_fp32, name):
    try:
        med, mean = time_nvidia_projector(nv, vgg, steps=steps, warmup=warmup, force_fp32=force_fp32)
        return {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "model": label, "config": name, "batch": 1, "ms_per_step": med * 1e3, "steps_per_s": 1 / med,
                "image_steps_per_s": 1 / med, "mean_ms": mean * 1e3}
    except Exception as e:  # noqa: BLE001
        return {"device": str(dev), "model": label, "config": name, "batch": 1,
                "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _cuda_cleanup(dev):
    if dev.type == "cuda":
        try:
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 -- the next row reports whatever is still broken
            pass


def _rows_for(G, label, dev, batches, configs, steps, warmup, perceptual, out_rows, log, kept=None):
    """Time each (config, batch); ``kept[config]`` receives the batch-1 projectors (CUDA)."""
    for name, kw in configs:
        for b in batches:
            if name == "nvidia-baseline" and b != 1:
                continue
            keep = {} if kept is not None and b == 1 else None
            try:
                med, mean = time_projector(G, batch=b, steps=steps, warmup=warmup, perceptual=perceptual, keep=keep,
                                           **kw)
                row = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                       "model": label, "config": name, "batch": b, "ms_per_step": med * 1e3,
                       "steps_per_s": 1 / med, "image_steps_per_s": b / med, "mean_ms": mean * 1e3, **{
                           k: v for k, v in kw.items() if k in ROW_KEYS}}
                if keep:
                    kept[name] = keep
            except Exception as e:  # noqa: BLE001 -- a row that cannot run (OOM, compile, capture) is reported
                row = {"device": str(dev), "model": label, "config": name, "batch": b, "error": _error(e)}
                _cuda_cleanup(dev)
            out_rows.append(row)
            log(row)


def time_1000_steps(rows, kept, label, dev, G, vgg, log, steps=1000):
    """One photo's ``steps``-step W+ inversion with the fastest batch-1 config that ran.

    The projector kept from that config's timing row runs again (already compiled; a CUDA
    graph is captured anew per run and that is timed). Falls back to the next fastest config
    when a run fails. Returns the rows (error rows first), empty when no batch-1 row ran.
    """
    cands = sorted((r for r in rows if r["model"] == label and r["batch"] == 1 and "error" not in r
                    and not r["config"].startswith("nvidia")), key=lambda r: r["ms_per_step"])
    out = []
    for best in cands[:2]:
        try:
            k = kept.get(best["config"])
            if k is None:  # not kept: a fresh projector (its compilation is timed too)
                kw = {key: best[key] for key in ROW_KEYS if key in best}
                k = {}
                time_projector(G, batch=1, steps=2, warmup=1, perceptual=vgg, keep=k, **kw)
            p, target = k["projector"], k["target"]
            p.steps = steps
            _sync(dev)
            t = time.perf_counter()
            res = p.project(target)
            _sync(dev)
            sec = time.perf_counter() - t
            row = {"device": str(dev), "model": label, "config": best["config"], "batch": 1,
                   "what": f"{res.steps}-step W+ inversion of one photo (wall s)", "seconds": sec,
                   "ms_per_step": sec / res.steps * 1e3, "goal_s": 20.0, "goal_met": sec < 20.0}
            out.append(row)
            log(row)
            break
        except Exception as e:  # noqa: BLE001 -- report and try the next config
            row = {"device": str(dev), "model": label, "config": best["config"], "batch": 1,
                   "what": f"{steps}-step W+ inversion of one photo", "error": _error(e)}
            _cuda_cleanup(dev)
            out.append(row)
            log(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="checkpoint path or name (default: faces64 if present)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test of this script)")
    ap.add_argument("--skip-1024", action="store_true")
    ap.add_argument("--nvidia-src", default=None, help="a stylegan2-ada-pytorch checkout: time NVIDIA's own "
                    "generator code (fp16 mode and fp32) as the baseline, ours on the same weights")
    ap.add_argument("--cpu-200", action=argparse.BooleanOptionalAction, default=True,
                    help="time 200 steps of one face on the CPU")
    ap.add_argument("--cpu-rows", action=argparse.BooleanOptionalAction, default=True,
                    help="the CPU rows (default model at batch 1/8/32)")
    ap.add_argument("--skip-64", action="store_true", help="no GPU rows for the default (64 px) model")
    ap.add_argument("--configs", default=None, help=f"comma-separated GPU configs to run (default: all of "
                    f"{', '.join(GPU_CONFIGS)}); nvidia-code-* rows follow --nvidia-src")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8,32)")
    ap.add_argument("--long-steps", type=int, default=1000, help="steps of the one-photo 1024 px run (default 1000)")
    a = ap.parse_args(argv)
    if a.configs and set(a.configs.split(",")) - set(GPU_CONFIGS):
        ap.error(f"unknown --configs {sorted(set(a.configs.split(',')) - set(GPU_CONFIGS))}; choose from "
                 f"{list(GPU_CONFIGS)}")
    from faceedit.networks import Discriminator, Generator

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(a.device)
    rows = []
    log = lambda r: print(json.dumps(r), flush=True)  # noqa: E731

    # the default model (or a random twin of it)
    D = None
    if a.model:
        from faceedit.checkpoints.registry import load_model

        m = load_model(a.model, with_discriminator=False)
        G, label = m.G, m.model_id
    else:
        from faceedit.checkpoints.registry import load_model

        m = load_model("faces64")
        G, label = m.G, m.model_id
    steps, warmup = (4, 2) if a.quick else (30, 5)
    batches = (1, 2) if a.quick else (1, 8, 32)
    if a.batches:
        batches = tuple(int(b) for b in a.batches.split(","))
    if dev.type == "cuda":
        # every compiled row is a new Projector: one more compilation of the same ``_losses`` code
        # object; beyond dynamo's recompile limit (8) later rows would silently run eagerly
        import torch._dynamo.config as dynamo_config

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, 64)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        vgg = VGGFeatureLoss().to(dev)
        configs = [("nvidia-baseline", dict(path="reference", reference_step=True)),
                   ("ours-fp32", dict(path="shared")),
                   ("ours-bf16", dict(path="shared", amp="bf16")),
                   ("ours-bf16-compile", dict(path="shared", amp="bf16", compile=True)),
                   ("ours-poly-bf16", dict(path="poly", amp="bf16")),
                   ("ours-poly-bf16-compile", dict(path="poly", amp="bf16", compile=True)),
                   ("ours-poly-bf16-graphs", dict(path="poly", amp="bf16", cuda_graphs=True)),
                   ("ours-poly-bf16-compile-graphs", dict(path="poly", amp="bf16", compile=True, cuda_graphs=True)),
                   ("ours-poly-bf16-compile-ro", dict(path="poly", amp="bf16", compile="reduce-overhead"))]
        if a.configs:
            configs = [(n, kw) for n, kw in configs if n in a.configs.split(",")]
        if not a.skip_64:
            _rows_for(G.to(dev), label, dev, batches, configs, steps, warmup, vgg, rows, log)
        if not a.skip_1024 and not a.quick:
            torch.manual_seed(0)
            label_f = "random-config-f-1024"
            if a.nvidia_src:  # NVIDIA's own code as the baseline, ours with the same weights
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                from synthesis import load_nvidia, nvidia_plugins_status

                nv, Gf = load_nvidia(a.nvidia_src, dev, 1024, 32768, 512)
                Gf = Gf.eval()
                label_f = "random-config-f-1024 (NVIDIA init)"
                for name, fp32 in (("nvidia-code-fp16", False), ("nvidia-code-fp32", True)):
                    rows.append(_nvidia_row(nv, vgg, label_f, dev, 20, 5, fp32, name))
                    rows[-1]["nvidia_ops"] = nvidia_plugins_status(a.nvidia_src)
                    log(rows[-1])
                del nv
            else:
                Gf = Generator(**CONFIG_F).eval().to(dev)
            kept = {}
            _rows_for(Gf, label_f, dev, batches, configs, 20, 5, vgg, rows, log, kept=kept)
            # one 1024 photo, 1000 W+ steps, with the fastest batch-1 configuration
            rows += time_1000_steps(rows, kept, label_f, dev, Gf, vgg, log, steps=a.long_steps)
            del Gf, kept
    # CPU rows: default model (or twin), batch 1/8/32, default CPU settings
    Gc = G.to("cpu")
    if not a.cpu_rows:
        batches = ()
    Dc = Discriminator(Gc.resolution, channel_base=Gc.config["channel_base"], channel_max=Gc.config["channel_max"])
    if D is not None:
        Dc = D.to("cpu")
    from faceedit.inversion.losses import DiscFeatureLoss
    from faceedit.inversion.projector import default_path

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    cpu_default = dict(path=default_path(Gc, "cpu"), optimize_noise=False)  # the path the CPU projector takes
    _rows_for(Gc, label, torch.device("cpu"), batches, [("cpu-default", cpu_default)],
              3 if a.quick else 10, 1 if a.quick else 3, DiscFeatureLoss(Dc), rows, log)
    if a.cpu_200:
        from faceedit.inversion.prior import GaussianPrior, fit_prior
        from faceedit.inversion.projector import InversionOptions, Projector

        prior = GaussianPrior(fit_prior(Gc, 2000 if a.quick else 20000, check_n=0), Gc.num_ws, Gc.w_dim)
        with torch.no_grad():
            target = Gc.synthesis(Gc.mapping(Gc.sample_z(1, seed=2)))
        n = 20 if a.quick else 200
        p = Projector(Gc, InversionOptions(space="w+", steps=n, prior_weight=0.01), prior=prior,
                      perceptual_loss=DiscFeatureLoss(Dc))
        t, c = time.perf_counter(), time.process_time()
        p.project(target)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rows.append({"device": "cpu", "threads": torch.get_num_threads(), "model": label, "config": "cpu-default",
                     "batch": 1, "what": f"{n} steps of one face (wall s; process CPU s {cpu:.2f}, "
                     f"load average {os.getloadavg()[0]:.1f})", "seconds": wall, "cpu_seconds": cpu})
        log(rows[-1])

    (out / "inversion_speed.json").write_text(json.dumps(rows, indent=2))
    lines = ["| device | model | config | batch | ms/step | steps/s | image-steps/s | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "seconds" in r:
            goal = "" if "goal_s" not in r else \
                f" (goal < {r['goal_s']:.0f} s: {'met' if r['goal_met'] else 'NOT met'})"
            ms = f"{r['ms_per_step']:.1f}" if "ms_per_step" in r else ""
            lines.append(f"| {r['device']} | {r['model']} | {r['config']} | {r['batch']} | {ms} | | | "
                         f"{r['what']}: {r['seconds']:.2f}{goal} |")
        elif "error" in r:
            what = f"{r['what']}: " if "what" in r else ""
            lines.append(f"| {r['device']} | {r['model']} | {r['config']} | {r['batch']} | | | | "
                         f"{what}{r['error'].replace('|', '/')} |")
        else:
            lines.append(f"| {r['device']} | {r['model']} | {r['config']} | {r['batch']} | {r['ms_per_step']:.1f} | "
                         f"{r['steps_per_s']:.2f} | {r['image_steps_per_s']:.1f} | |")
    base = {r["model"]: r for r in rows if r.get("config") == "nvidia-baseline" and "error" not in r}
    base.update({r["model"]: r for r in rows if r.get("config") == "nvidia-code-fp16" and "error" not in r})
    for r in rows:
        if r.get("model") in base and "image_steps_per_s" in r and not r["config"].startswith("nvidia") \
                and r["device"] != "cpu":
            r["speedup_vs_baseline"] = r["image_steps_per_s"] / base[r["model"]]["image_steps_per_s"]
    best = {}
    for r in rows:
        if "speedup_vs_baseline" in r:
            best[r["model"]] = max(best.get(r["model"], 0), r["speedup_vs_baseline"])
    for k, v in best.items():
        lines.append(f"\nbest image-steps/s speed-up over the NVIDIA baseline on {k}: {v:.1f}x")
    table = "\n".join(lines)
    (out / "inversion_speed.md").write_text(table + "\n")
    (out / "inversion_speed.json").write_text(json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()
