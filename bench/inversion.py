"""`faceedit bench inversion`: reconstruction quality of optimisation inversion, one table.

For every model and every space it supports (MLP models: ``w``, ``w+``; W++ models:
``w+``, ``wpp``, ``wpp-z``), with and without the Gaussianized prior, at equal steps and
the same seed, the same faces are inverted and measured:

* ``mse``, ``psnr`` (on the [0, 1] range), ``ssim`` (``faceedit.metrics.reconstruction``);
* ``id_sim``: identity similarity of target and reconstruction (``faceedit.metrics.identity``,
  dlib's face-recognition ResNet) where that instrument is installed;
* ``realism``: the model's own discriminator score (mean logit) of the reconstructions,
  beside ``real_D`` (the same score of the targets). Scores of different models come from
  different discriminators and are comparable only within one model;
* rows for each perceptual loss asked for (default ``disc`` and ``none``: does the
  discriminator-feature loss help over pixel MSE alone?);
* a second table: log-compression vs truncation at equal reduction of the outliers'
  norm, diversity in the attribute network's features (``compression_table``);
* the prior's promise: ``interp_D``, the discriminator score of images half-way between
  two inverted faces (pairs ``i, i+1``), and ``perturb_D``, of inverted codes plus
  Gaussian noise of norm about ``0.25 * w_std`` per layer (``w_std``: RMS distance of
  mapping samples from ``w_avg``), each with and without the prior;
* ``prior_dist``: the normalised squared Mahalanobis distance of the inverted codes under
  the model's prior (the joint W++ one on a W++ model, for every space: how far from the
  model's distribution the latents end up; about 1 for samples of the model).

Identity is also broken down by UTKFace race, gender and age bucket (faces whose pack
labels have ``source == 1``). Faces come from an aligned test pack (default
``<faceedit cache>/data/faces64_test.npz``; evenly spaced indices, never the train split) and/or a
folder of photos aligned with each model's recipe (largest face). Identity figures on
the test split are optimistic: the splits are by image, not by person.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from faceedit.core.device import resolve_device
from faceedit.core.errors import PipelineError
from faceedit.metrics.attributes import AttributeScorer, ScorerNotFoundError

log = logging.getLogger(__name__)

RACES = ("white", "black", "asian", "indian", "other")
AGE_BUCKETS = ((0, 20), (20, 40), (40, 60), (60, 200))


def spaces_for(G) -> tuple:
    return ("w+", "wpp", "wpp-z") if G.mapping_kind == "transformer" else ("w", "w+")


def load_faces(pack=None, n: int = 100, photos=None, recipe=None, max_photos: int | None = None) -> dict:
    """Aligned target faces: ``{"set": [...], "images": [N,H,W,3] uint8, "labels": {...}, "names": [...]}``."""
    imgs, sets, names, labels = [], [], [], {"race": [], "gender": [], "age": [], "source": []}
    if pack is not None:
        from faceedit.core.pack import Pack

        p = Pack(pack)
        if str(p.meta.get("split", "test")).lower() == "train":
            raise PipelineError(f"{pack} is the train split; quality figures are measured on the test pack")
        idx = np.unique(np.linspace(0, len(p) - 1, min(n, len(p))).round().astype(int))
        for i in idx:
            imgs.append(p.image(int(i)))
            sets.append("test")
            names.append(str(p.names[i]))
            for k in labels:
                labels[k].append(p.labels[k][i] if k in p.labels else -1)
    if photos is not None and str(photos).endswith(".npz"):  # photos aligned beforehand (align_photos_pack)
        from faceedit.core.pack import Pack

        p = Pack(photos)
        for i in range(len(p)):
            imgs.append(p.image(i))
            sets.append("photos")
            names.append(str(p.names[i]))
            for k in labels:
                labels[k].append(-1)
    elif photos is not None:
        from faceedit.alignment import align
        from faceedit.core.images import load_image

        files = sorted(q for q in Path(photos).iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for f in files[:max_photos]:
            try:
                faces = align(load_image(f), recipe=recipe, face="largest")
            except Exception as e:  # noqa: BLE001 -- photos without a usable face are listed, not fatal
                log.info("bench: %s skipped (%s)", f.name, e)
                continue
            imgs.append(faces[0].crop)
            sets.append("photos")
            names.append(f.name)
            for k in labels:
                labels[k].append(-1)
    if not imgs:
        raise PipelineError("no faces to benchmark: pass --pack (an aligned test pack) and/or --photos DIR")
    return {"images": np.stack(imgs), "set": np.array(sets), "names": names,
            "labels": {k: np.asarray(v, dtype=np.float64) for k, v in labels.items()}}


def _identity():
    """dlib's identity instrument, or ``None`` where dlib or its model file is missing (the GPU
    machine: the column is left out, the reason logged, and ``--add-identity`` fills it later)."""
    from faceedit.alignment.errors import ModelFileError
    from faceedit.metrics.identity import IdentityEncoder, IdentityUnavailableError

    try:
        return IdentityEncoder()
    except (IdentityUnavailableError, ModelFileError) as e:
        log.warning("identity similarity left out: %s", e)
        return None


def _d_score(D, imgs: torch.Tensor, bs: int = 64) -> np.ndarray:
    if D is None:
        return np.full(len(imgs), np.nan)
    with torch.no_grad():
        return torch.cat([D(imgs[i:i + bs].clamp(-1, 1)).flatten().float().cpu() for i in range(0, len(imgs), bs)]
                         ).numpy()


def _synth(G, ws, bs=64):
    with torch.no_grad():
        return torch.cat([G.synthesis(ws[i:i + bs]) for i in range(0, len(ws), bs)])


def bench_model(model, faces: dict, *, steps: int = 100, seed: int = 0, perceptual=("disc", "none"),
                prior_weight: float = 0.01, spaces=None, device=None, identity=None, batch_size: int = 32,
                keep: dict | None = None) -> list:
    """Rows for one model (see the module docstring)."""
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.images import tensor_to_uint8, uint8_to_tensor
    from faceedit.inversion.prior import load_prior
    from faceedit.inversion.projector import invert
    from faceedit.metrics.reconstruction import reconstruction_metrics

    dev = resolve_device(device)
    try:
        m = load_model(model, device=dev, with_discriminator=True)
    except ValueError:
        m = load_model(model, device=dev)
    G, D = m.G, m.D
    prior = load_prior(m, G)
    R = G.resolution
    target = uint8_to_tensor(faces["images"]).to(dev)
    if target.shape[-1] != R:
        target = torch.nn.functional.interpolate(target, size=(R, R), mode="bilinear", antialias=True)
    target_u8 = tensor_to_uint8(target)
    real_d = _d_score(D, target)
    w_std = prior.w_std or 1.0
    rows = []
    percs = [perceptual] if isinstance(perceptual, str) else list(perceptual)
    weights = [prior_weight] if isinstance(prior_weight, (int, float)) else list(prior_weight)
    combos = [(s, p, u) for s in (spaces or spaces_for(G)) for p in percs for u in [0.0] + weights]
    for space, perc, pw in combos:
        use_prior = pw > 0
        ptag = f"gaussian@{pw:g}" if use_prior else "none"
        if perc == "disc" and D is None:
            log.warning("bench: %s ships no discriminator; --perceptual disc rows left out", m.model_id)
            continue
        t = time.perf_counter()
        lat = invert(target, m, space=space, steps=steps, G=G, D=D, prior=prior if use_prior else "none",
                     prior_weight=pw, perceptual=perc, seed=seed, batch_size=batch_size)
        secs = time.perf_counter() - t
        ws = lat.codes.to(dev)
        recon = _synth(G, ws)
        met = reconstruction_metrics(target_u8, tensor_to_uint8(recon), identity=identity)
        gen = torch.Generator().manual_seed(seed + 7)
        mid = _synth(G, 0.5 * (ws[:-1] + ws[1:])) if len(ws) > 1 else recon[:0]
        with torch.no_grad():
            dist = (prior.penalty(ws) / prior.total_dim).cpu().numpy()
        eps = 0.25 * w_std / G.w_dim ** 0.5  # per element: a perturbation of norm ~0.25 w_std per layer
        pert = _synth(G, ws + eps * torch.randn(ws.shape, generator=gen).to(dev))
        if keep is not None:
            keep[f"{m.model_id}|{space}|{ptag}|{lat.meta['perceptual']}"] = \
                tensor_to_uint8(recon)
            keep["targets"] = target_u8
        for subset in sorted(set(faces["set"])):
            sel = faces["set"] == subset
            row = {"model": m.model_id, "space": space, "key": f"{m.model_id}|{space}|"
                   f"{ptag}|{lat.meta['perceptual']}", "prior": ptag,
                   "set": subset, "n": int(sel.sum()), "steps": steps, "perceptual": lat.meta["perceptual"],
                   "mse": float(met["mse"][sel].mean()), "psnr": float(met["psnr"][sel].mean()),
                   "ssim": float(met["ssim"][sel].mean()),
                   "id_sim": float(met["identity_similarity"][sel].mean()) if "identity_similarity" in met
                   else None,
                   "realism_D": float(_d_score(D, recon)[sel].mean()), "real_D": float(real_d[sel].mean()),
                   "prior_dist": float(dist[sel].mean()),
                   "seconds": secs}
            msel = sel[:-1] & sel[1:]
            row["interp_D"] = float(_d_score(D, mid)[msel].mean()) if msel.any() else None
            row["perturb_D"] = float(_d_score(D, pert)[sel].mean())
            if "identity_similarity" in met and subset == "test":
                row["id_groups"] = _groups(met["identity_similarity"], faces["labels"], sel)
            rows.append(row)
            log.info("bench %s", row)
    return rows


def _groups(sim: np.ndarray, labels: dict, sel: np.ndarray) -> dict:
    """Mean identity similarity per UTKFace race, gender and age bucket."""
    utk = sel & (labels["source"] == 1)
    out = {}
    for r, name in enumerate(RACES):
        s = utk & (labels["race"] == r)
        if s.any():
            out[f"race={name}"] = (float(sim[s].mean()), int(s.sum()))
    for g, name in enumerate(("male", "female")):
        s = utk & (labels["gender"] == g)
        if s.any():
            out[f"gender={name}"] = (float(sim[s].mean()), int(s.sum()))
    for lo, hi in AGE_BUCKETS:
        s = utk & (labels["age"] >= lo) & (labels["age"] < hi)
        if s.any():
            out[f"age={lo}-{hi - 1 if hi < 200 else ''}"] = (float(sim[s].mean()), int(s.sum()))
    return out


def table(rows: list) -> str:
    """Markdown table of the rows (and the identity breakdown below it)."""
    cols = ["model", "space", "prior", "set", "n", "steps", "perceptual", "mse", "psnr", "ssim", "id_sim",
            "realism_D", "real_D", "interp_D", "perturb_D", "prior_dist", "seconds"]
    f = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(f(r.get(c)) for c in cols) + " |" for r in rows]
    groups = [r for r in rows if r.get("id_groups")]
    if groups:
        keys = sorted({k for r in groups for k in r["id_groups"]})
        lines += ["", "identity similarity by UTKFace group (test set):", "",
                  "| model | space | prior | " + " | ".join(keys) + " |", "|" + " --- |" * (3 + len(keys))]
        for r in groups:
            lines.append(f"| {r['model']} | {r['space']} | {r['prior']} | " + " | ".join(
                f"{r['id_groups'][k][0]:.3f} (n={r['id_groups'][k][1]})" if k in r["id_groups"] else ""
                for k in keys) + " |")
    return "\n".join(lines)


def run(models, *, pack=None, photos=None, n: int = 100, steps: int = 100, seed: int = 0, perceptual=("disc", "none"),
        prior_weight: float = 0.01, out=None, device=None, identity: bool = True, max_photos=None,
        batch_size: int = 32, compression: bool = True) -> dict:
    """Benchmark several models on the same faces; writes ``inversion.json``/``.csv``/``.md`` to ``out``."""
    from faceedit.alignment.types import FACES64, AlignmentRecipe
    from faceedit.checkpoints.registry import load_model

    rows, recon_files = [], []
    enc = _identity() if identity else None
    for model in models:
        cfg = load_model(model).config
        R = cfg["generator"]["resolution"]
        recipe = AlignmentRecipe.from_dict(cfg["recipe"]) if cfg.get("recipe") else FACES64
        faces = load_faces(pack, n, photos, recipe.with_size(R), max_photos)
        keep = {} if out is not None else None
        rows += bench_model(model, faces, steps=steps, seed=seed, perceptual=perceptual, prior_weight=prior_weight,
                            device=device, identity=enc, batch_size=batch_size, keep=keep)
        if keep:  # one file per space keeps each under the GPU machine's 16 MiB per returned file
            for sp in sorted({k.split("|")[1] for k in keep if k != "targets"}):
                part = {k: v for k, v in keep.items() if k == "targets" or k.split("|")[1] == sp}
                f = Path(out) / f"recon_{len(recon_files)}_{sp.replace('+', 'p')}.npz"
                _save_recon(f, part, faces)
                recon_files.append(str(f))
    comp = []
    for model in models if compression else []:
        comp += compression_table(model, device=device)
    result = {"rows": rows, "compression": comp, "settings": {"steps": steps, "seed": seed, "perceptual": perceptual,
                                         "prior_weight": prior_weight, "n": n, "pack": str(pack),
                                         "photos": str(photos), "identity": enc is not None,
                                         "recon_files": recon_files},
              "provenance": _provenance(models)}
    if out is not None:
        _write(Path(out), result)
    return result


def compression_table(model, *, taus=(1.0, 1.5, 2.0, 3.0), n: int = 1000, device=None) -> list:
    """Log-compression vs truncation on ``model`` (``inversion.prior.compression_vs_truncation``).

    Diversity is the mean pairwise distance in the attribute network's pooled features
    (``faceedit.metrics.attributes``) when its weights are installed, else in pixels.
    """
    from faceedit.checkpoints.registry import load_model
    from faceedit.inversion.prior import compression_vs_truncation, load_prior

    dev = resolve_device(device)
    m = load_model(model, device=dev)
    G = m.G
    feats, name = None, "pixels"
    try:
        sc = AttributeScorer.load(device=dev)
        feats, name = (lambda im: torch.from_numpy(sc.features(im.clamp(-1, 1)))), "attribute-net features"
    except ScorerNotFoundError as e:  # no scorer weights installed: pixels, and the table says so
        log.warning("compression table: attribute features unavailable (%s); diversity in pixels", e)
    rows = compression_vs_truncation(G, load_prior(m, G), taus, n=n, features=feats, feature_name=name)
    return [{"model": m.model_id, **r} for r in rows]


def compression_md(rows: list) -> str:
    if not rows:
        return ""
    lines = ["log-compression vs truncation at equal reduction of the outliers' norm |w - w_avg| (outliers: top 10% "
             f"by Mahalanobis distance); diversity = mean pairwise distance in {rows[0]['features']}; maha = mean "
             "Mahalanobis norm of the outliers after:", "",
             "| model | tau | matched psi | diversity compress | diversity truncate | diversity none | "
             "maha compress | maha truncate | maha none |", "|" + " --- |" * 9]
    lines += [f"| {r['model']} | {r['tau']:.2f} | {r['psi']:.3f} | {r['div_compress']:.4g} | {r['div_truncate']:.4g} | "
              f"{r['div_none']:.4g} | {r['maha_compress']:.4g} | {r['maha_truncate']:.4g} | {r['maha_none']:.4g} |"
              for r in rows]
    return "\n".join(lines)


def _save_recon(path: Path, keep: dict, faces: dict) -> None:
    import io

    from faceedit.core.files import atomic_write_bytes

    arrays = {f"recon{i}": v for i, (k, v) in enumerate((k, v) for k, v in keep.items() if k != "targets")}
    keys = [k for k in keep if k != "targets"]
    buf = io.BytesIO()
    np.savez_compressed(buf, targets=keep["targets"], keys=np.array(keys), set=faces["set"],
                        **{f"label_{k}": v for k, v in faces["labels"].items()}, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def add_identity(out) -> dict:
    """CPU pass after a GPU run: identity similarity from the saved reconstructions.

    Reads ``inversion.json`` and its ``recon_*.npz`` in ``out`` (written by :func:`run`),
    fills ``id_sim`` and the UTKFace breakdown with ``faceedit.metrics.identity`` (dlib),
    and rewrites ``inversion.json``/``.md``/``.csv``.
    """
    from faceedit.metrics.reconstruction import reconstruction_metrics

    out = Path(out)
    res = json.loads((out / "inversion.json").read_text())
    enc = _identity()
    if enc is None:
        raise PipelineError("the identity instrument (faceedit.metrics.identity, dlib) is not available here")
    by_key = {}
    for f in res["settings"].get("recon_files", []):
        with np.load(Path(out) / Path(f).name, allow_pickle=False) as z:
            labels = {k[6:]: z[k] for k in z.files if k.startswith("label_")}
            for i, key in enumerate(z["keys"]):
                met = reconstruction_metrics(z["targets"], z[f"recon{i}"], identity=enc)
                by_key[str(key)] = (met["identity_similarity"], z["set"], labels)
    for r in res["rows"]:
        if r.get("key") in by_key:
            sim, sets, labels = by_key[r["key"]]
            sel = sets == r["set"]
            r["id_sim"] = float(sim[sel].mean())
            if r["set"] == "test":
                r["id_groups"] = _groups(sim, {k: v.astype(np.float64) for k, v in labels.items()}, sel)
    res["settings"]["identity"] = True
    _write(out, res)
    return res


def _write(out: Path, result: dict) -> None:
    from faceedit.core.files import atomic_write_text

    rows = result["rows"]
    atomic_write_text(out / "inversion.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "inversion.md", table(rows) + "\n\n" + compression_md(result.get("compression", [])) + "\n")
    keys = [k for k in rows[0] if k != "id_groups"] if rows else []
    atomic_write_text(out / "inversion.csv", "\n".join([",".join(keys)] + [
        ",".join("" if r.get(k) is None else str(r[k]) for k in keys) for r in rows]) + "\n")


def align_photos_pack(photos, model, path) -> Path:
    """Align the largest face of every photo in ``photos`` with ``model``'s recipe into a pack (CPU, dlib)."""
    from faceedit.alignment.types import FACES64, AlignmentRecipe
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.images import encode_image
    from faceedit.core.pack import write_pack

    try:
        cfg = load_model(model).config
        recipe = AlignmentRecipe.from_dict(cfg["recipe"]) if cfg.get("recipe") else FACES64
        recipe = recipe.with_size(cfg["generator"]["resolution"])
    except ValueError as e:  # the model is not built yet: the shipped models' recipe
        log.warning("%s; aligning with the %s recipe", e, FACES64.name)
        recipe = FACES64
    faces = load_faces(None, 0, photos, recipe)
    jpegs = [encode_image(im, "PNG") for im in faces["images"]]
    return write_pack(path, jpegs, {}, faces["names"], {"recipe": recipe.to_dict(), "source": str(photos)})


def _provenance(models) -> dict:
    """``faceedit.bench.report.provenance`` (versions, git commit, command, device) with the models' sha256."""
    from .report import provenance
    from faceedit.checkpoints.registry import load_model

    shas = {}
    for mdl in models:
        try:
            m = load_model(mdl)
            shas[m.model_id] = m.sha256
        except ValueError:
            shas[str(mdl)] = None
    return provenance(shas)
