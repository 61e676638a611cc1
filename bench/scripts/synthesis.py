"""Synthesis speed: faceedit's generator (reference and fast paths) beside NVIDIA's, with floors.

What it measures (``noise_mode='const'``, synthesis network only, ``ws`` precomputed):

* a StyleGAN2 config-f generator (1024 px, ``channel_base=32768``, ``channel_max=512``,
  random weights) on the GPU at batch 1, 8, 32:
    - ``ours-ref fp32``: the reference path (``path="reference"``: per-sample grouped convs);
    - ``ours-fast fp32``: ``path="shared"`` (one shared conv per layer, demodulation by a
      matmul, fused epilogue), ``channels_last``;
    - ``ours-fast bf16``: the same under ``torch.autocast(bfloat16)``;
    - ``ours-fast bf16 compiled``: the same through ``torch.compile`` (``--compile``);
    - ``ours-poly``: ``path="poly"`` (``networks/fastsynth.py``: every up-sampling conv as one
      dense low-resolution conv plus a depth-to-space shuffle, no transposed conv, no blur
      pass; channels_last on its own), fp32 and bf16, eager (its ``poly3`` up-conv);
    - ``ours-poly compiled (poly3|phase2)``: bf16 through ``torch.compile``, with either
      up-conv (``phase2``: the 2x2 transposed-conv phases with the blur fused into the
      epilogue; fewer FLOPs). Compiled rows run most important first (batch 32 of both,
      then the faster one at the other batches, then the ``path="shared"`` compiled rows)
      until ``--time-budget`` is spent;
    - with ``--nvidia-src DIR`` (a checkout of NVlabs/stylegan2-ada-pytorch, never part of
      this repository): NVIDIA's implementation with the *same weights* (built by NVIDIA's
      code, pickled, read back by faceedit's safe reader), ``force_fp32`` and its fp16 mode
      (``num_fp16_res=4``, ``conv_clamp=256``, as its training config). Whether its CUDA
      plugins built is printed.
* bf16 (and NVIDIA fp16) PSNR against the fp32 reference on the same ``ws``
  (images clipped to [-1, 1], peak-to-peak 2);
* two floors: FLOPs per image (``torch.utils.flop_counter``) over the measured matmul peak
  (bf16 rows: bf16 peak; fp32 rows: TF32 peak, as cuDNN convolutions use TF32 by default),
  and bytes that the high-resolution layers (the top three resolutions: 256 px and up)
  must move at least (every activation written once and read once) over the measured
  copy bandwidth;
* a 64 px generator (faceedit's ``faces64`` size) on the CPU;
* ``--profile``: the top CUDA kernels at the largest batch (the polyphase path compiled and
  eager, the ``path="shared"`` path eager) in ``synthesis_profile.txt``.

The compute floor of every row is the reference's FLOPs (the same work); the polyphase
path executes more multiply-adds (``gflop_per_image_poly3`` / ``_phase2`` in the info).

Run on the GPU machine::

    python bench/scripts/synthesis.py --out $OUT/bench [--nvidia-src .gpu/nvidia-src] [--compile] \\
        [--no-nvidia-plugins] [--min-time 0.5] [--profile]

and here, at toy size, to check it works::

    python bench/scripts/synthesis.py --out /tmp/b --device cpu --resolution 64 --channel-base 1024 \\
        --channel-max 64 --batches 1,2 --min-time 0.2 --no-compile

Writes ``synthesis.json`` and ``synthesis.md`` to ``--out`` and prints the table last.
"""
from __future__ import annotations

import copy
import json
import math
import pickle
import sys
import tempfile
import time
import types
from pathlib import Path

import click
import torch

from faceedit.checkpoints.nvidia import read_nvidia
from faceedit.core.device import resolve_device
from faceedit.networks import Generator
from faceedit.networks.fastsynth import synthesis_poly


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn, device, min_time: float, warmup: int = 2, min_iters: int = 3) -> float:
    """Seconds per call: warm up, time one call, then enough back-to-back calls for ``min_time``."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    one = time.perf_counter() - t0
    n = max(min_iters, int(math.ceil(min_time / max(one, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def psnr(img: torch.Tensor, ref: torch.Tensor) -> float:
    a, b = img.float().clamp(-1, 1), ref.float().clamp(-1, 1)
    mse = (a - b).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def matmul_peak(device, dtype, n=8192, min_time=1.0) -> float:
    """Measured dense matmul rate in FLOP/s."""
    if device.type == "cpu":
        n = 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_per_call(lambda: a @ b, device, min_time)
    return 2 * n ** 3 / t


def copy_bandwidth(device, nbytes=1 << 30, min_time=1.0) -> float:
    """Measured device memory bandwidth in B/s (a copy reads and writes every byte)."""
    if device.type == "cpu":
        nbytes = 1 << 26
    x = torch.empty(nbytes // 4, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    t = time_per_call(lambda: y.copy_(x), device, min_time)
    return 2 * nbytes / t


def synthesis_flops(G, ws1, path, up_impl=None) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        if up_impl is None:
            G.synthesis(ws1, path=path)
        else:
            synthesis_poly(G.synthesis, ws1, "const", None, up_impl)
    return fc.get_total_flops()


def profile_table(fn, device, n=3, rows=18) -> str:
    """The top kernels of ``n`` calls of ``fn`` by self device time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        sync(device)
    avg = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            return avg.table(sort_by=key, row_limit=rows, max_name_column_width=90)
        except Exception:  # noqa: BLE001 -- the key's name changed across torch versions
            continue
    return avg.table(row_limit=rows)


def highres_bytes(G: Generator, elem: int) -> int:
    """Least bytes per image the layers of the top three resolutions (256 px and up at 1024 px)
    move: every activation they produce written once and read once by each consumer (convs,
    toRGB, skip up-sampling)."""
    ch = G.synthesis.channels
    min_res = G.resolution // 4
    total = 0
    for r, c in ch.items():
        if r < min_res or r == 4:
            continue
        cin = ch[r // 2]
        total += cin * (r // 2) ** 2 + c * r * r   # up conv: read input, write output
        total += c * r * r + c * r * r             # conv: read, write
        total += c * r * r + 3 * r * r             # toRGB: read x, write rgb
        total += 3 * (r // 2) ** 2 + 3 * r * r     # skip: read low-res image, write up-sampled
        total += 3 * r * r * 2                     # sum of the two: read both (write counted above)
    return total * elem


def load_nvidia(src: str, device, resolution, channel_base, channel_max):
    """Build NVIDIA's generator with NVIDIA's code; return it and ours with the same weights."""
    sys.path.insert(0, str(Path(src).resolve()))
    try:
        try:
            import requests  # noqa: F401  (dnnlib.util imports it; only downloads use it)
        except ImportError:
            sys.modules["requests"] = types.ModuleType("requests")
        import dnnlib
        from training.networks import Generator as NVGenerator
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    nv = NVGenerator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dnnlib.EasyDict(num_layers=8),
                     synthesis_kwargs=dnnlib.EasyDict(channel_base=channel_base, channel_max=channel_max,
                                                      num_fp16_res=4, conv_clamp=256))
    with torch.no_grad():  # trained models have non-zero noise strengths and biases
        for name, p in nv.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    nv = nv.eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "nv.pkl"
        with open(p, "wb") as f:
            pickle.dump(dict(G_ema=copy.deepcopy(nv)), f)
        ours = read_nvidia(p)["G"]
    return nv.to(device), ours.to(device)


def nvidia_plugins_status(src: str) -> str:
    names = []
    for mod in ("torch_utils.ops.upfirdn2d", "torch_utils.ops.bias_act"):
        m = sys.modules.get(mod)
        if m is not None:
            kind = "cuda-plugin" if getattr(m, "_plugin", None) is not None else "reference"
            names.append(f"{mod.rsplit('.', 1)[1]}:{kind}")
    return ", ".join(names) or "unknown"


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for the results.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resolution", type=int, default=1024, show_default=True)
@click.option("--channel-base", type=int, default=32768, show_default=True)
@click.option("--channel-max", type=int, default=512, show_default=True)
@click.option("--batches", default="1,8,32", show_default=True)
@click.option("--min-time", type=float, default=1.0, show_default=True, help="Seconds timed per row.")
@click.option("--compile/--no-compile", "do_compile", default=True, show_default=True,
              help="Also time the bf16 fast path through torch.compile (CUDA only).")
@click.option("--nvidia-src", type=click.Path(exists=True, file_okay=False), default=None,
              help="A checkout of NVlabs/stylegan2-ada-pytorch to time beside ours (never committed).")
@click.option("--cpu-batches", default="1,8", show_default=True, help="Batches of the 64 px CPU rows.")
@click.option("--nvidia-plugins/--no-nvidia-plugins", default=True, show_default=True,
              help="Let NVIDIA's code try to build its CUDA plugins (it falls back to its reference ops).")
@click.option("--time-budget", type=float, default=170, show_default=True,
              help="No new torch.compile (15-30 s each) once this many seconds have passed.")
@click.option("--profile/--no-profile", "do_profile", default=False, show_default=True,
              help="Write the top CUDA kernels of the polyphase path (largest batch) to synthesis_profile.txt.")
def main(out_dir, device, resolution, channel_base, channel_max, batches, min_time, do_compile, nvidia_src,
         cpu_batches, nvidia_plugins, time_budget, do_profile):
    """Time StyleGAN2 synthesis (ours vs NVIDIA's), print images/s beside two floors."""
    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    batches = [int(b) for b in batches.split(",")]
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms (all rows)
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "cpu_threads": torch.get_num_threads(), "resolution": resolution, "channel_base": channel_base,
            "channel_max": channel_max, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
    rows, checks = [], {}

    def log(msg):
        print(f"[{time.time() - t_start:6.1f}s] {msg}", flush=True)

    def save():
        (out / "synthesis.json").write_text(json.dumps({"info": info, "checks": checks, "rows": rows}, indent=2))

    # --- the generator(s) -------------------------------------------------------------
    nv = None
    if nvidia_src:
        nv, G = load_nvidia(nvidia_src, dev, resolution, channel_base, channel_max)
        if not nvidia_plugins:
            for mod in ("torch_utils.ops.upfirdn2d", "torch_utils.ops.bias_act"):
                sys.modules[mod]._init = lambda: False
        info["weights"] = "NVIDIA's init (their code), conv_clamp=256, read into ours with faceedit's safe reader"
    else:
        torch.manual_seed(0)
        G = Generator(512, 512, resolution, channel_base=channel_base, channel_max=channel_max).eval()
        G.requires_grad_(False).to(dev)
        info["weights"] = "faceedit random init (seed 0)"
    log(f"generator ready on {info['device']}: {resolution} px, num_ws {G.num_ws}")
    with torch.no_grad():
        z = torch.randn(max(batches), 512, generator=torch.Generator().manual_seed(123)).to(dev)
        ws_all = G.mapping(z, truncation_psi=0.7)

    # --- floors ------------------------------------------------------------------------
    flops = synthesis_flops(G, ws_all[:1], path="shared")
    info["gflop_per_image"] = flops / 1e9
    for impl in ("poly3", "phase2"):
        info[f"gflop_per_image_{impl}"] = synthesis_flops(G, ws_all[:1], None, impl) / 1e9
    peak_bf16 = matmul_peak(dev, torch.bfloat16, min_time=min_time)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    peak_tf32 = matmul_peak(dev, torch.float32, min_time=min_time)
    torch.backends.cuda.matmul.allow_tf32 = prev
    bw = copy_bandwidth(dev, min_time=min_time)
    info.update(matmul_peak_bf16_tflops=peak_bf16 / 1e12, matmul_peak_tf32_tflops=peak_tf32 / 1e12,
                copy_bandwidth_gbs=bw / 1e9, highres_mb_per_image_bf16=highres_bytes(G, 2) / 2 ** 20,
                highres_mb_per_image_fp32=highres_bytes(G, 4) / 2 ** 20)
    log(f"{flops / 1e9:.1f} GFLOP/img; peaks bf16 {peak_bf16 / 1e12:.0f} TFLOP/s, tf32 {peak_tf32 / 1e12:.0f} "
        f"TFLOP/s; copy {bw / 1e9:.0f} GB/s")
    save()

    def floors(precision):
        peak = peak_bf16 if precision in ("bf16", "fp16") else peak_tf32
        elem = 2 if precision in ("bf16", "fp16") else 4
        return peak / flops, bw / highres_bytes(G, elem)

    def add_row(impl, precision, batch, sec):
        f_c, f_b = floors(precision)
        row = dict(impl=impl, precision=precision, batch=batch, img_s=batch / sec, ms_per_batch=sec * 1e3,
                   compute_floor_img_s=f_c, bandwidth_floor_img_s=f_b,
                   pct_of_roofline=100 * (batch / sec) / min(f_c, f_b))
        rows.append(row)
        log(f"{impl:28s} {precision:5s} batch {batch:3d}: {row['img_s']:9.1f} img/s")
        save()

    cl = dev.type == "cuda"
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last) if cl else G

    def ours(ws, path, bf16, model):
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return model.synthesis(ws, noise_mode="const", path=path).float()

    ref_imgs = {}
    for b in batches:
        ws = ws_all[:b].contiguous()
        ref_imgs[b] = ours(ws, "reference", False, G)
        add_row("ours-ref (fused)", "fp32", b, time_per_call(lambda: ours(ws, "reference", False, G), dev, min_time))
        add_row("ours-fast", "fp32", b, time_per_call(lambda: ours(ws, "shared", False, G_cl), dev, min_time))
        add_row("ours-fast", "bf16", b, time_per_call(lambda: ours(ws, "shared", True, G_cl), dev, min_time))
    for b in batches:  # the polyphase path, eager (poly3 up-convs); it goes channels_last by itself on CUDA
        ws = ws_all[:b].contiguous()
        add_row("ours-poly", "fp32", b, time_per_call(lambda: ours(ws, "poly", False, G), dev, min_time))
        add_row("ours-poly", "bf16", b, time_per_call(lambda: ours(ws, "poly", True, G), dev, min_time))
    bref = batches[min(1, len(batches) - 1)]
    diff = ours(ws_all[:bref], "shared", False, G_cl) - ref_imgs[bref]
    checks["ours_fast_fp32_vs_ref_max_abs"] = diff.abs().max().item()
    checks["ours_bf16_psnr_db"] = psnr(ours(ws_all[:bref], "shared", True, G_cl), ref_imgs[bref])
    poly32 = ours(ws_all[:bref], "poly", False, G)
    checks["ours_poly_fp32_vs_ref_max_abs"] = (poly32 - ref_imgs[bref]).abs().max().item()
    checks["ours_poly_bf16_psnr_db"] = psnr(ours(ws_all[:bref], "poly", True, G), ref_imgs[bref])
    log(f"fast fp32 vs reference max |diff| {checks['ours_fast_fp32_vs_ref_max_abs']:.2e}; "
        f"bf16 PSNR {checks['ours_bf16_psnr_db']:.1f} dB; poly fp32 max |diff| "
        f"{checks['ours_poly_fp32_vs_ref_max_abs']:.2e}, poly bf16 PSNR {checks['ours_poly_bf16_psnr_db']:.1f} dB")
    save()

    if nv is not None:
        def nvrun(ws, fp32):
            with torch.no_grad():
                return nv.synthesis(ws, noise_mode="const", force_fp32=fp32).float()

        t0 = time.time()
        nvrun(ws_all[:1], False)  # the first fp16 call is where NVIDIA's code builds (or fails to build) plugins
        checks["nvidia_first_call_seconds"] = time.time() - t0
        nv_ref = nvrun(ws_all[:bref], True)
        checks["nvidia_plugins"] = nvidia_plugins_status(nvidia_src)
        checks["ours_vs_nvidia_fp32_max_abs"] = (ref_imgs[bref] - nv_ref).abs().max().item()
        checks["nvidia_fp16_psnr_db"] = psnr(nvrun(ws_all[:bref], False), nv_ref)
        log(f"NVIDIA ops: {checks['nvidia_plugins']}; ours vs NVIDIA (fp32, same weights) max |diff| "
            f"{checks['ours_vs_nvidia_fp32_max_abs']:.2e}; NVIDIA fp16 PSNR {checks['nvidia_fp16_psnr_db']:.1f} dB")
        for b in batches:
            ws = ws_all[:b].contiguous()
            add_row("nvidia", "fp32", b, time_per_call(lambda: nvrun(ws, True), dev, min_time))
            add_row("nvidia (fp16 top 4 res)", "fp16", b, time_per_call(lambda: nvrun(ws, False), dev, min_time))

    if do_compile and dev.type == "cuda":
        def compiled_fn(kind):
            if kind == "fast":
                compiled = torch.compile(G_cl.synthesis, dynamic=False)

                def comp(ws):
                    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                        return compiled(ws, noise_mode="const", path="shared").float()
                return comp

            def poly(ws):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return synthesis_poly(G.synthesis, ws, "const", None, kind)
            compiled_poly = torch.compile(poly, dynamic=False)

            def comp(ws):
                with torch.no_grad():
                    return compiled_poly(ws)
            return comp

        fns, names = {}, {"fast": "ours-fast compiled", "poly3": "ours-poly compiled (poly3)",
                          "phase2": "ours-poly compiled (phase2)"}

        def compiled_row(kind, b):
            """One compiled row (compiling first); False when skipped or failed."""
            if time.time() - t_start > time_budget:
                checks[f"compile_skipped_{kind}_batch{b}"] = f"time budget {time_budget:.0f} s spent"
                log(f"skipping the compiled {kind} row at batch {b}: time budget spent")
                return None
            try:
                if kind not in fns:
                    fns[kind] = compiled_fn(kind)
                ws = ws_all[:b].contiguous()
                t0 = time.time()
                img = fns[kind](ws)
                sync(dev)
                checks[f"compile_seconds_{kind}_batch{b}"] = time.time() - t0
                if b == bref or b == batches[-1]:
                    checks[f"ours_{kind}_compiled_bf16_psnr_db_batch{b}"] = psnr(img, ref_imgs[b])
                add_row(names[kind], "bf16", b, time_per_call(lambda: fns[kind](ws), dev, min_time))
                return rows[-1]["img_s"]
            except Exception as e:  # report, keep the other rows
                checks[f"compile_error_{kind}_batch{b}"] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"torch.compile failed ({kind}, batch {b}): {checks[f'compile_error_{kind}_batch{b}']}")
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                return None

        order = sorted(batches, reverse=True)  # the batch that matters most first
        top = {k: compiled_row(k, order[0]) for k in ("phase2", "poly3")}
        best = max(top, key=lambda k: top[k] or 0)
        for b in order[1:]:
            compiled_row(best, b)
        for b in order:
            compiled_row("fast", b)
        if do_profile and best in fns:
            ws = ws_all[:order[0]].contiguous()
            text = [f"== ours-poly compiled ({best}), batch {order[0]} ==",
                    profile_table(lambda: fns[best](ws), dev),
                    f"== ours-poly eager (poly3) bf16, batch {order[0]} ==",
                    profile_table(lambda: ours(ws, "poly", True, G), dev, n=2),
                    f"== ours-fast eager (path='shared') bf16, batch {order[0]}: where the old path spends its time ==",
                    profile_table(lambda: ours(ws, "shared", True, G_cl), dev, n=2)]
            (out / "synthesis_profile.txt").write_text("\n".join(text) + "\n")
            log("profile written to synthesis_profile.txt")

    # --- 64 px on the CPU --------------------------------------------------------------
    torch.manual_seed(0)
    small = Generator(256, 256, 64, channel_base=2048, channel_max=256).eval().requires_grad_(False)
    with torch.no_grad():
        wsc = small.mapping(torch.randn(max(int(b) for b in cpu_batches.split(",")), 256), truncation_psi=0.7)
    cpu = torch.device("cpu")
    for b in [int(x) for x in cpu_batches.split(",")]:
        for path, name in (("reference", "ours-ref (fused)"), ("shared", "ours-fast"), ("poly", "ours-poly")):
            def run(ws=wsc[:b].contiguous(), path=path):
                with torch.no_grad():
                    return small.synthesis(ws, path=path)
            sec = time_per_call(run, cpu, min_time)
            rows.append(dict(impl=f"{name} 64px CPU", precision="fp32", batch=b, img_s=b / sec,
                             ms_per_batch=sec * 1e3, compute_floor_img_s=None, bandwidth_floor_img_s=None,
                             pct_of_roofline=None))
            log(f"{name} 64px CPU batch {b}: {b / sec:.1f} img/s")
    save()

    # --- table -----------------------------------------------------------------------
    by = {(r["impl"], r["precision"], r["batch"]): r["img_s"] for r in rows}
    for b in batches:
        nvb = max(by.get(("nvidia", "fp32", b), 0), by.get(("nvidia (fp16 top 4 res)", "fp16", b), 0))
        best = max(v for (impl, _, bb), v in by.items() if impl.startswith("ours") and bb == b
                   and not impl.endswith("CPU"))
        if nvb:
            checks[f"speedup_batch{b}_ours_best_vs_nvidia_best"] = best / nvb
    lines = [f"StyleGAN2 synthesis, {resolution} px (channel_base {channel_base}), {info['device']}, "
             f"torch {torch.__version__}; {info['gflop_per_image']:.1f} GFLOP/img (polyphase path executes "
             f"{info['gflop_per_image_poly3']:.1f} with poly3, {info['gflop_per_image_phase2']:.1f} with phase2); "
             f"peaks: bf16 {info['matmul_peak_bf16_tflops']:.0f} TFLOP/s, "
             f"tf32 {info['matmul_peak_tf32_tflops']:.0f} TFLOP/s, copy {info['copy_bandwidth_gbs']:.0f} GB/s", "",
             "| impl | prec | batch | img/s | ms/batch | compute floor img/s | bandwidth floor img/s "
             "| % of roofline | x best NVIDIA |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = None if r["impl"].endswith("CPU") else (
            max(by.get(("nvidia", "fp32", r["batch"]), 0), by.get(("nvidia (fp16 top 4 res)", "fp16", r["batch"]), 0))
            or None)
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {r['impl']} | {r['precision']} | {r['batch']} | {r['img_s']:.1f} | {r['ms_per_batch']:.1f} | "
                     f"{fmt(r['compute_floor_img_s'], '.0f')} | {fmt(r['bandwidth_floor_img_s'], '.0f')} | "
                     f"{fmt(r['pct_of_roofline'], '.1f')} | {fmt(r['img_s'] / base if base else None, '.2f')} |")
    bf16_psnr = {k: v for k, v in checks.items() if "bf16" in k and "psnr_db" in k}
    checks["bf16_psnr_all_ge_40db"] = bool(bf16_psnr) and all(v >= 40 for v in bf16_psnr.values())
    lines += ["", "checks: " + json.dumps(checks), f"total {time.time() - t_start:.0f} s"]
    (out / "synthesis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
