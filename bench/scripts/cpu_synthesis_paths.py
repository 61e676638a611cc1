"""Which synthesis path a projector step should take on the CPU, by the generator's size.

``poly`` (``networks.fastsynth``) replaces each up-sampling layer's transposed conv and blur by
one dense conv at the low resolution: 4x the transposed conv's multiply-adds for fewer, larger
operations and no blur pass. On a CPU that pays where a step is bound by the number of
operations (small generators such as the shipped 64 px ones) and costs where it is bound by the
multiply-adds (wide ones such as FFHQ's). This script times the part of a projector step the path
changes, synthesis forward and backward to the codes of one image (``[1, num_ws, w_dim]``,
constant noise, pixel loss), for each path on a ladder of generator sizes (random weights: the
time does not depend on them), runs of the paths interleaved, median of ``--repeats``. The
``up-conv MACs`` column is :func:`faceedit.inversion.projector.up_conv_macs`, the measure
``default_path`` compares with :data:`faceedit.inversion.projector.POLY_CPU_MAX_UP_MACS`.

    OMP_NUM_THREADS=2 python bench/scripts/cpu_synthesis_paths.py --threads 2

Writes ``cpu_synthesis_paths_<threads>t.json`` and ``.md`` under ``--out`` (default
``bench/results/photo_path``) and prints the table last. Time it on a quiet machine: the load
average is recorded with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: (resolution, channel_base, channel_max): the shipped faces64 first, FFHQ's widths last.
SIZES = ((64, 2048, 256), (128, 2048, 256), (64, 3072, 256), (64, 4096, 256), (64, 4096, 512), (64, 8192, 512),
         (128, 8192, 512), (64, 32768, 512), (256, 32768, 512))
PATHS = ("reference", "shared", "poly")


def time_paths(G, repeats: int, paths=PATHS) -> dict:
    """Median seconds of one synthesis forward + backward to the codes, per path (interleaved)."""
    import torch

    ws0 = G.mapping(G.sample_z(1, seed=0))
    target = torch.zeros(1, 3, G.resolution, G.resolution)

    def step(path):
        ws = ws0.clone().requires_grad_(True)
        (G.synthesis(ws, noise_mode="const", path=path) - target).square().mean().backward()

    for p in paths:  # warm-up: allocations, poly's kernel cache
        step(p)
    times = {p: [] for p in paths}
    for _ in range(repeats):
        for p in paths:
            t0 = time.perf_counter()
            step(p)
            times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(v) for p, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", default="", help="resolution:channel_base:channel_max,... [default: the ladder "
                    "from faces64 to FFHQ's widths]")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
    try:
        sizes = [tuple(int(x) for x in s.split(":")) for s in a.sizes.split(",") if s] or list(SIZES)
    except ValueError:
        ap.error(f"--sizes takes resolution:channel_base:channel_max,..., got {a.sizes!r}")
    if any(len(s) != 3 for s in sizes):
        ap.error(f"--sizes takes resolution:channel_base:channel_max,..., got {a.sizes!r}")
    import torch

    from faceedit.inversion.projector import POLY_CPU_MAX_UP_MACS, default_path, up_conv_macs
    from faceedit.networks import Generator

    torch.set_num_threads(a.threads)
    rows = []
    for res, base, cmax in sizes:
        torch.manual_seed(0)
        G = Generator(z_dim=256, w_dim=256, resolution=res, channel_base=base, channel_max=cmax,
                      mapping_layers=2).eval().requires_grad_(False)
        t = time_paths(G, a.repeats)  # G frozen, as the projector holds it: poly's kernels cached
        rows.append({"resolution": res, "channel_base": base, "channel_max": cmax, "up_conv_macs": up_conv_macs(G),
                     "seconds": t, "fastest": min(t, key=t.get), "default": default_path(G, "cpu"),
                     "load": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    lines = [f"Synthesis forward + backward to the codes of one image on the CPU, per path ({a.threads} thread(s), "
             f"median of {a.repeats}, paths interleaved; torch {torch.__version__}); `default` is "
             f"inversion.projector.default_path's CPU choice (poly up to {POLY_CPU_MAX_UP_MACS / 1e6:.0f}M up-conv "
             f"MACs); load average read after each row", "",
             "| resolution | channel_base | channel_max | up-conv MACs | reference | shared | poly | poly / shared | "
             "fastest | default | load |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['resolution']} | {r['channel_base']} | {r['channel_max']} | {r['up_conv_macs'] / 1e6:.0f}M | "
                     + " | ".join(f"{s[p] * 1e3:.1f} ms" for p in PATHS)
                     + f" | {s['poly'] / s['shared']:.2f} | {r['fastest']} | {r['default']} | {r['load']:.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu_synthesis_paths_{a.threads}t"
    (out / f"{stem}.json").write_text(json.dumps({"threads": a.threads, "repeats": a.repeats,
                                                  "torch": torch.__version__, "rows": rows}, indent=1))
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
