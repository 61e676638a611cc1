"""Hybrid inversion settings swept on held-out TRAIN faces (never the test split).

The hybrid's learning rate (0.3) and CUDA step count (110) were first picked on test faces;
this sweep picks them again on faces no shipped setting was chosen on: the tail of the
train pack that the encoders hold out for validation (``--tail``, 256 faces; the generator
did see them, the encoder and these settings did not). For each model and space it runs
the 500-step optimiser (the reference the hybrid must match) and the hybrid over a grid of
learning rates (at the default steps) and step counts (at the default learning rate), same
faces, same seed, and writes the reconstructions.

``pti`` does the same for PTI's edit-consistency weight (10, first picked on 5 test faces):
PTI from one hybrid pivot per model with each weight, PSNR and the share of a smile edit's
slope the tuning keeps (``faceedit.bench.methods.editability``).

Two passes, because the GPU machine has no dlib and dlib's identity network is the judge:

    python bench/scripts/hybrid_sweep.py run --pack .gpu/data/faces64_train.npz --out out/sweep   # GPU
    python bench/scripts/hybrid_sweep.py pti --pack .gpu/data/faces64_train.npz --out out/sweep   # GPU
    python bench/scripts/hybrid_sweep.py identity --out out/sweep [--file pti.json]               # CPU, dlib

The last prints the table: PSNR and identity similarity per setting, the paired difference
to the reference's identity (the optimiser; PTI without the term) with its standard error.
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from faceedit.core.device import resolve_device

REPO = Path(__file__).resolve().parents[2]
RUNS = (("faces64", "w+"), ("faces64-wpp", "wpp"))


@click.group()
def main():
    """Hybrid settings on held-out train faces."""


def _val_faces(pack: str, tail: int, n: int):
    from faceedit.core.pack import Pack

    p = Pack(pack)
    if str(p.meta.get("split", "")).lower() != "train":
        raise click.BadParameter(f"{pack} is not a train pack; this sweep must not look at test faces", param_hint="--pack")
    idx = np.arange(len(p) - tail, len(p))
    idx = idx[np.unique(np.linspace(0, len(idx) - 1, min(n, len(idx))).round().astype(int))]
    return p.images(idx), [str(p.names[i]) for i in idx]


@main.command()
@click.option("--pack", required=True, type=click.Path(exists=True, dir_okay=False), help="The TRAIN pack (faces64).")
@click.option("--tail", default=256, show_default=True, help="Held-out faces at the end of the pack (the encoders' val).")
@click.option("--n", default=100, show_default=True, help="Faces taken from the tail, evenly spaced.")
@click.option("--optim-steps", default=500, show_default=True)
@click.option("--lrs", default="0.1,0.2,0.3,0.5", show_default=True, help="Learning rates, at --at-steps.")
@click.option("--steps", "steps_grid", default="50,70,90,110,150", show_default=True,
              help="Step counts, at the default learning rate.")
@click.option("--at-steps", type=int, default=None, help="Steps of the learning-rate rows [default: the hybrid's CUDA "
                                                       "default, inversion.hybrid.HYBRID_STEPS].")
@click.option("--out", required=True, type=click.Path(file_okay=False))
def run(pack, tail, n, optim_steps, lrs, steps_grid, at_steps, out):
    """GPU pass: invert the held-out faces with every setting; reconstructions and PSNR to --out."""
    import torch

    from faceedit.checkpoints.registry import load_model
    from faceedit.core.files import atomic_write_bytes, atomic_write_text
    from faceedit.core.images import tensor_to_uint8
    from faceedit.inversion.encoder import encoder_for
    from faceedit.inversion.hybrid import HYBRID_LR, HYBRID_STEPS
    from faceedit.inversion.methods import invert_with
    from faceedit.inversion.prior import load_prior
    from faceedit.inversion.pti import synthesize
    from faceedit.metrics.reconstruction import psnr

    dev = resolve_device("auto").type
    at_steps = HYBRID_STEPS["cuda"] if at_steps is None else at_steps
    out = Path(out)
    images, names = _val_faces(pack, tail, n)
    rows = []
    for model_name, space in RUNS:
        m = load_model(model_name, device=dev, with_discriminator=True)
        prior = load_prior(m, m.G)  # loaded once, as the Pipeline does, so no row times a file read
        enc = encoder_for(m, space, G=m.G, device=dev, model_sha256=m.sha256)[0]
        settings = [("optim", optim_steps, None)]
        settings += [("hybrid", at_steps, float(lr)) for lr in lrs.split(",")]
        settings += [("hybrid", int(s), HYBRID_LR) for s in steps_grid.split(",") if int(s) != at_steps]
        for method, steps, lr in settings:
            kw = {} if lr is None else {"lr": lr, "encoder": enc}
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            sync()
            t0 = time.perf_counter()
            lat = invert_with(method, list(images), m, space=space, steps=steps, G=m.G, D=m.D,
                              prior=prior, batch_size=len(images), seed=0, **kw)
            sync()
            sec = time.perf_counter() - t0
            recon = tensor_to_uint8(synthesize(m.G, lat))
            tag = (f"{model_name}_{space}_{method}_s{steps}" + ("" if lr is None else f"_lr{lr}")).replace("+", "p")
            buf = io.BytesIO()
            np.savez_compressed(buf, targets=images, recon=recon)
            atomic_write_bytes(out / f"{tag}.npz", buf.getvalue())
            p = psnr(images, recon)
            rows.append({"tag": tag, "model": model_name, "space": space, "method": method, "steps": steps,
                         "lr": lr, "seconds": sec, "psnr": float(np.mean(p)), "psnr_per_face": np.asarray(p).tolist()})
            print(f"{tag}: {np.mean(p):.2f} dB, {sec:.1f} s", flush=True)
    atomic_write_text(out / "sweep.json", json.dumps({"faces": names, "pack": str(pack), "tail": tail,
                                                      "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "rows": rows}, indent=1))


@main.command()
@click.option("--pack", required=True, type=click.Path(exists=True, dir_okay=False), help="The TRAIN pack (faces64).")
@click.option("--tail", default=256, show_default=True, help="Held-out faces at the end of the pack (the encoders' val).")
@click.option("--n", default=12, show_default=True, help="Faces (PTI tunes one at a time).")
@click.option("--weights", default="0,1,3,10,30", show_default=True, help="Edit-consistency weights.")
@click.option("--edit-attr", default="smile", show_default=True)
@click.option("--model", "only", type=click.Choice([r[0] for r in RUNS]), default=None,
              help="One model only [default: both]; PTI takes ~11 s per face and weight on an H100 (200 steps), "
                   "so a full sweep needs more than one 10-minute call.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
def pti(pack, tail, n, weights, edit_attr, only, out):
    """GPU pass: PTI's edit-consistency weight on held-out faces: reconstructions, PSNR and editability
    (the edit's slope after tuning / before, faceedit.bench.methods.editability) to --out/pti.json,
    rewritten after every row (a run cut short keeps what it finished)."""
    import torch

    from faceedit.bench.methods import editability
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.files import atomic_write_bytes, atomic_write_text
    from faceedit.core.images import tensor_to_uint8
    from faceedit.inversion.methods import invert_with
    from faceedit.inversion.prior import load_prior
    from faceedit.inversion.pti import pti_invert, synthesize
    from faceedit.metrics.reconstruction import psnr

    dev = resolve_device("auto").type
    out = Path(out)
    images, names = _val_faces(pack, tail, n)
    rows = []
    for model_name, space in RUNS:
        if only and model_name != only:
            continue
        m = load_model(model_name, device=dev, with_discriminator=True)
        prior = load_prior(m, m.G)
        pivot = invert_with("hybrid", list(images), m, space=space, G=m.G, D=m.D, prior=prior,
                            batch_size=len(images), seed=0)
        for w in (float(x) for x in weights.split(",")):
            t0 = time.perf_counter()
            lat = pti_invert(list(images), m, space, G=m.G, D=m.D, pivot=pivot, prior=prior,
                             consistency_weight=w, seed=0)
            sec = time.perf_counter() - t0
            recon = tensor_to_uint8(synthesize(m.G, lat))
            tag = f"{model_name}_{space}_pti_cw{w:g}".replace("+", "p")
            buf = io.BytesIO()
            np.savez_compressed(buf, targets=images, recon=recon)
            atomic_write_bytes(out / f"{tag}.npz", buf.getvalue())
            p = psnr(images, recon)
            e = editability(m.G, lat, edit_attr)
            rows.append({"tag": tag, "model": model_name, "space": space, "method": "pti", "steps": None,
                         "lr": None, "consistency_weight": w, "seconds": sec, "psnr": float(np.mean(p)),
                         "psnr_per_face": np.asarray(p).tolist(), "edit": e})
            print(f"{tag}: {np.mean(p):.2f} dB, edit kept {e['ratio']:.2f}, {sec:.1f} s", flush=True)
            atomic_write_text(out / "pti.json", json.dumps({
                "faces": names, "pack": str(pack), "tail": tail, "rows": rows,
                "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}, indent=1))


@main.command()
@click.option("--out", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--file", "name", type=click.Choice(["sweep.json", "pti.json"]), default="sweep.json", show_default=True)
def identity(out, name):
    """CPU pass (dlib): identity similarity of each setting's reconstructions; prints the table."""
    from faceedit.core.files import atomic_write_text
    from faceedit.metrics.identity import IdentityEncoder
    from faceedit.metrics.reconstruction import reconstruction_metrics

    out = Path(out)
    rec = json.loads((out / name).read_text())
    enc = IdentityEncoder()
    for r in rec["rows"]:
        with np.load(out / f"{r['tag']}.npz") as z:
            met = reconstruction_metrics(z["targets"], z["recon"], identity=enc)
            r["id_per_face"] = np.asarray(met["identity_similarity"], np.float64).tolist()
        r["id_sim"] = float(np.nanmean(r["id_per_face"]))
    atomic_write_text(out / name, json.dumps(rec, indent=1))
    table = []
    def is_ref(x):  # PTI without the consistency term, or the optimiser
        return x.get("consistency_weight") == 0.0 if name == "pti.json" else x["method"] == "optim"

    for r in rec["rows"]:
        ref = next((x for x in rec["rows"] if x["model"] == r["model"] and is_ref(x)), None)
        if ref is None:
            raise click.ClickException(f"{r['model']} has no reference row in {name} (the optimiser, or PTI at "
                                       f"weight 0): run it with that setting included")
        d = np.subtract(r["id_per_face"], ref["id_per_face"])
        setting = (f"cw {r['consistency_weight']:g}" if "consistency_weight" in r
                   else f"{r['steps']} steps, lr {'-' if r['lr'] is None else r['lr']}")
        table.append([r["model"], r["space"], r["method"], setting, f"{r['psnr']:.2f}", f"{r['id_sim']:.4f}",
                      f"{np.nanmean(d):+.4f} +- {np.nanstd(d, ddof=1) / np.sqrt(np.sum(~np.isnan(d))):.4f}",
                      f"{r['edit']['ratio']:.2f}" if "edit" in r else "-", f"{r['seconds']:.1f}"])
    head = ["model", "space", "method", "setting", "PSNR dB", "identity", "vs ref (paired, se)", "edit kept", "seconds"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    ref_name = "PTI without the consistency term (cw 0)" if name == "pti.json" else "the 500-step optimiser"
    print(f"{len(rec['faces'])} held-out TRAIN faces (from the last {rec['tail']} of the train pack), {rec['device']}; "
          f"ref = {ref_name}; edit kept = the smile edit's slope after tuning / before")
    for line in [head, ["-" * w for w in widths], *table]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths)))


if __name__ == "__main__":
    sys.exit(main())
