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

    OMP_NUM_THREADS=1 python bench/scripts/hybrid_cpu_steps.py --pack .gpu/data/faces64_train.npz

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
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
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
    for steps in (int(s) for s in a.steps.split(",")):
        method, kw = ("encoder", {}) if steps == 0 else ("hybrid", {"steps": steps, "D": m.D, "prior": prior})
        lat = invert_with(method, list(images), m, space="w+", G=m.G, batch_size=len(images), seed=0, **kw)
        met = reconstruction_metrics(images, tensor_to_uint8(synthesize(m.G, lat)), identity=ident)
        one = []
        for _ in range(a.repeats):  # one face, as `faceedit edit` inverts it
            t0 = time.perf_counter()
            invert_with(method, [images[0]], m, space="w+", G=m.G, seed=0, **kw)
            one.append(time.perf_counter() - t0)
        rows.append({"steps": steps, "psnr": np.asarray(met["psnr"], float).tolist(),
                     "identity": np.asarray(met["identity_similarity"], float).tolist(),
                     "one_face_s": float(np.median(one)), "load": os.getloadavg()[0]})
        print(f"{steps} steps: {np.mean(rows[-1]['psnr']):.2f} dB, identity {np.nanmean(rows[-1]['identity']):.4f}, "
              f"one face {rows[-1]['one_face_s']:.2f} s", file=sys.stderr, flush=True)
    ref = next(r for r in rows if r["steps"] == a.ref)
    lines = [f"Hybrid on the CPU: {len(names)} held-out TRAIN faces of faces64 (W+), {a.threads} thread(s); "
             f"time = one face, median of {a.repeats}; paired differences against {a.ref} steps (standard error)", "",
             "| steps | PSNR dB | identity | PSNR vs ref | identity vs ref | one face |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        dp = np.subtract(r["psnr"], ref["psnr"])
        di = np.subtract(r["identity"], ref["identity"])
        se = lambda d: np.nanstd(d, ddof=1) / np.sqrt(np.sum(~np.isnan(d)))  # noqa: E731
        lines.append(f"| {r['steps'] or 'encoder'} | {np.mean(r['psnr']):.2f} | {np.nanmean(r['identity']):.4f} | "
                     f"{dp.mean():+.2f} ({se(dp):.2f}) | {np.nanmean(di):+.4f} ({se(di):.4f}) | "
                     f"{r['one_face_s']:.2f} s |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hybrid_cpu_steps.json").write_text(json.dumps({"faces": names, "threads": a.threads, "rows": rows},
                                                          indent=1))
    (out / "hybrid_cpu_steps.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
