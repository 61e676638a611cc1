"""What each step of the hybrid inversion buys on the CPU: quality and time against the step count.

The hybrid (encoder, then a short optimisation) is the default inversion of `faceedit edit`;
its CPU step count (``inversion.hybrid.HYBRID_STEPS["cpu"]``) is chosen from this table. On 100
held-out TRAIN faces of ``faces64`` (the tail of the train pack the encoders hold out, as
``hybrid_sweep.py`` takes them; never the test split), W+, the shipped settings otherwise (lr
0.3, discriminator-feature loss, the Gaussianized prior), one batch: PSNR and identity
similarity (dlib's face descriptor, ``faceedit.metrics.identity``) of the reconstructions to the
aligned faces, per step count, with the paired difference to ``--ref`` steps. The time per step
is that of one face (batch 1, as `faceedit edit` runs it), median of ``--repeats`` runs, at
``--threads`` threads.

``--paths`` runs the same table for each synthesis path the projector can take
(``networks.SYNTHESIS_PATHS``; ``default`` is ``inversion.projector.default_path``'s choice):
the paths are one function to float rounding, so their quality columns agree within the run's
noise, and the time per step is what the choice buys. The per-step time there is the
optimisation alone (the latent's ``seconds`` less its ``encoder_seconds``, over the steps).

    OMP_NUM_THREADS=1 python bench/scripts/hybrid_cpu_steps.py --pack .gpu/data/faces64_train.npz
    OMP_NUM_THREADS=2 python bench/scripts/hybrid_cpu_steps.py --pack PACK --steps 20 --ref 20 \
        --paths reference,shared,poly --threads 2 --stem hybrid_cpu_paths

Writes ``hybrid_cpu_steps.json`` and ``hybrid_cpu_steps.md`` under ``--out`` (default
``bench/results/photo_path``) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", required=True, help="the faces64 TRAIN pack")
    ap.add_argument("--n", type=int, default=100, help="held-out faces")
    ap.add_argument("--steps", default="0,10,15,20,25,30", help="step counts (0 = the encoder alone)")
    ap.add_argument("--ref", type=int, default=30, help="step count the others are compared with (paired)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="default", help="comma-separated synthesis paths of the optimisation "
                    "(reference, shared, poly; default: the projector's own choice); the reference run is the "
                    "first path's --ref steps")
    ap.add_argument("--stem", default="hybrid_cpu_steps", help="the output files' name")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
    paths = [p.strip() for p in a.paths.split(",") if p.strip()]
    step_counts = [int(s) for s in a.steps.split(",")]
    from faceedit.networks import SYNTHESIS_PATHS

    bad = [p for p in paths if p != "default" and p not in SYNTHESIS_PATHS]
    if bad or not paths:
        ap.error(f"--paths takes default or {', '.join(SYNTHESIS_PATHS)}, got {a.paths!r}")
    if a.ref not in step_counts:
        ap.error(f"--ref {a.ref} is not one of --steps {a.steps}: the paired differences need that run")
    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hybrid_sweep import _val_faces

    from faceedit.checkpoints.registry import load_model
    from faceedit.core.images import tensor_to_uint8
    from faceedit.inversion.methods import invert_with
    from faceedit.inversion.prior import load_prior
    from faceedit.inversion.pti import synthesize
    from faceedit.metrics.identity import IdentityEncoder
    from faceedit.metrics.reconstruction import reconstruction_metrics

    images, names = _val_faces(a.pack, 256, a.n)
    m = load_model("faces64", device="cpu", with_discriminator=True)
    prior = load_prior(m, m.G)
    ident = IdentityEncoder()
    rows = []
    for path in paths:
        for steps in step_counts:
            if steps == 0 and path != paths[0]:
                continue  # the encoder alone takes no path
            method, kw = ("encoder", {}) if steps == 0 else ("hybrid", {"steps": steps, "D": m.D, "prior": prior})
            if steps and path != "default":
                kw["path"] = path
            lat = invert_with(method, list(images), m, space="w+", G=m.G, batch_size=len(images), seed=0, **kw)
            met = reconstruction_metrics(images, tensor_to_uint8(synthesize(m.G, lat)), identity=ident)
            one, per_step = [], []
            for _ in range(a.repeats):  # one face, as `faceedit edit` inverts it
                t0 = time.perf_counter()
                lone = invert_with(method, [images[0]], m, space="w+", G=m.G, seed=0, **kw)
                one.append(time.perf_counter() - t0)
                if steps:
                    per_step.append((lone.meta["seconds"] - lone.meta["encoder_seconds"]) / steps)
            rows.append({"path": path if steps else "-", "steps": steps,
                         "psnr": np.asarray(met["psnr"], float).tolist(),
                         "identity": np.asarray(met["identity_similarity"], float).tolist(),
                         "one_face_s": float(np.median(one)),
                         "step_s": float(np.median(per_step)) if per_step else None, "load": os.getloadavg()[0]})
            print(f"{path} {steps} steps: {np.mean(rows[-1]['psnr']):.2f} dB, identity "
                  f"{np.nanmean(rows[-1]['identity']):.4f}, one face {rows[-1]['one_face_s']:.2f} s",
                  file=sys.stderr, flush=True)
    ref = next(r for r in rows if r["steps"] == a.ref and r["path"] in (paths[0], "-"))
    loads = [r["load"] for r in rows]
    lines = [f"Hybrid on the CPU: {len(names)} held-out TRAIN faces of faces64 (W+), {a.threads} thread(s); "
             f"time = one face, median of {a.repeats}; paired differences against {a.ref} steps on "
             f"{ref['path'] if ref['steps'] else 'the encoder'} (standard error); load average "
             f"{min(loads):.2f}-{max(loads):.2f}, read after each row's runs (the benchmark's own threads count in "
             f"it)", "",
             "| path | steps | PSNR dB | identity | PSNR vs ref | identity vs ref | one face | one step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        dp = np.subtract(r["psnr"], ref["psnr"])
        di = np.subtract(r["identity"], ref["identity"])
        se = lambda d: np.nanstd(d, ddof=1) / np.sqrt(np.sum(~np.isnan(d)))  # noqa: E731
        step = "" if r["step_s"] is None else f"{r['step_s'] * 1e3:.1f} ms"
        lines.append(f"| {r['path']} | {r['steps'] or 'encoder'} | {np.mean(r['psnr']):.2f} | "
                     f"{np.nanmean(r['identity']):.4f} | {dp.mean():+.2f} ({se(dp):.2f}) | {np.nanmean(di):+.4f} "
                     f"({se(di):.4f}) | {r['one_face_s']:.2f} s | {step} |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.stem}.json").write_text(json.dumps({"faces": names, "threads": a.threads, "paths": paths,
                                                     "rows": rows}, indent=1))
    (out / f"{a.stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
