"""`faceedit bench editing`: how well the shipped directions edit real faces, one table.

For every model (default ``faces64`` in W+ and ``faces64-wpp`` in W++, which tests the
W++ paper's claim of better editing) the same test-split faces are inverted once, then
every InterFaceGAN direction of the model (plain and conditional) is applied at a sweep
of strengths (default -2..2, in standard deviations) and the edited images are measured:

* ``d_target``: change of the target attribute per unit strength, measured by a scorer
  the direction was NOT fitted with where one exists: the landmark ``smile`` score
  (dlib 68 points, ``faceedit.metrics.geometry``) for smile, MTCNN's 5-point ``yaw5``
  (degrees) for yaw (fitted with the 68-point yaw). Every other attribute is measured by
  the attribute classifier the direction was fitted with, in logit units per unit
  strength (``age``: years per unit): optimistic, the ``target_by`` column says which;
* ``d_prob``: the classifier's probability change per unit strength and ``flip``: the
  share of faces whose classifier decision flips at the largest strength;
* ``id_lo`` / ``id_hi`` (and ``id_dist_*``, dlib descriptor distances): identity similarity of the face edited at the smallest / largest
  strength to its unedited reconstruction (``faceedit.metrics.identity``, where installed);
* ``drift``: mean absolute probability change per unit strength of the other binary
  attributes, the largest few, and ``held``: the drift of the attributes conditional
  directions hold fixed (``male``, ``age`` in years, ``eyeglasses``, ``smile``), so the
  rows of ``age`` and ``age|male`` show what conditioning buys.

``--photos DIR`` adds the photo check of the issue: every photo of the folder is edited
(all faces) and the output must have the input's size, differ from it only inside the
paste-back mask, and equal it (within 1 level) at strength 0.

Faces come from an aligned test pack (default ``<faceedit cache>/data/faces64_test.npz``, evenly
spaced, never the train split). Figures on the test split are optimistic for identity
(the split is by image, not by person).
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

log = logging.getLogger(__name__)

# What the identity columns are (metrics.identity: dlib descriptors, calibrated similarity).
IDENTITY_BY = "identity similarity"

HELD = ("male", "age", "eyeglasses", "smile")
# attribute -> (independent scorer key in metrics.geometry, units)
INDEPENDENT = {"smile": ("smile", "landmark smile"), "yaw": ("yaw5", "MTCNN yaw5 deg")}


def _slope(s: np.ndarray, v: np.ndarray) -> float:
    """Mean over faces of the least-squares slope of ``v [K, N]`` against ``s [K]`` (NaN-aware)."""
    s = np.asarray(s, np.float64)
    out = []
    for col in np.asarray(v, np.float64).T:
        ok = np.isfinite(col)
        if ok.sum() >= 2 and np.ptp(s[ok]) > 0:
            sc = s[ok] - s[ok].mean()
            out.append(float((sc * (col[ok] - col[ok].mean())).sum() / (sc ** 2).sum()))
    return float(np.mean(out)) if out else float("nan")


def _classifier(device):
    from faceedit.editing.direction import canonical_attribute
    from faceedit.metrics.attributes import AttributeScorer

    sc = AttributeScorer.load(device=device)

    def score(images):
        return {canonical_attribute(k): v for k, v in sc.scores(images).items()}

    return score, f"attrnet@{sc.sha256[:12]}" if sc.sha256 else "attrnet"


def _independent():
    """``{attribute: (label, fn(images uint8) -> [N])}`` for the scorers that are installed."""
    try:
        from faceedit.metrics.geometry import crop_geometry
    except ImportError as e:
        log.warning("landmark scorers unavailable (%s): smile and yaw measured by the classifier only", e)
        return {}

    def make(key, with_yaw5):
        return lambda imgs: np.array([getattr(crop_geometry(a, with_yaw5=with_yaw5), key) for a in imgs], np.float64)

    return {"smile": ("landmark smile", make("smile", False)), "yaw": ("MTCNN yaw5 (deg)", make("yaw5", True))}


@torch.no_grad()
def _synth(G, codes: torch.Tensor, noise=None, bs: int = 64) -> np.ndarray:
    from faceedit.core.images import tensor_to_uint8

    dev = G.synthesis.const.device
    out = []
    for i in range(0, len(codes), bs):
        nz = None if noise is None else [n[i:i + bs].to(dev) for n in noise]
        out.append(tensor_to_uint8(G.synthesis(codes[i:i + bs].to(dev), noise=nz)))
    return np.concatenate(out)


def bench_model(model, faces: dict, *, strengths=(-2, -1, 0, 1, 2), steps: int | None = None, seed: int = 0,
                device=None, classifier=None, independent=None, identity=None, directions=None,
                perceptual: str = "disc", batch_size: int = 32, method: str | None = None, attrs=None,
                latents_dir=None, save_latents=None, invert_only: bool = False,
                identity_n: int | None = None) -> list:
    """Rows of the table for one model (see the module docstring).

    ``latents_dir``: take the inverted faces from ``<dir>/<model>_<space>.latent.safetensors``
    when it is there (e.g. inverted on a GPU machine by ``save_latents``, then scored here
    with the CPU-only instruments); ``save_latents``: write the inversions to that folder
    (and stop there with ``invert_only``: a GPU machine without dlib inverts, the CPU scores).
    ``identity``: an ``IdentityEncoder`` or None; ``identity_n``: measure identity on the first
    that many faces only (dlib's descriptor costs ~0.1 s per image on a small CPU; the
    unedited reconstructions are embedded once per model).
    """
    from faceedit.checkpoints.registry import load_model
    from faceedit.editing.apply import displacement
    from faceedit.editing.direction import EDITABLE, canonical_attribute, list_directions
    from faceedit.inversion.methods import invert_with

    device = resolve_device(device)
    m = load_model(model, device=device, with_discriminator=perceptual == "disc")
    G, mid = m.G, m.model_id
    space = "wpp" if G.mapping_kind == "transformer" else "w+"
    pool = list_directions(mid) if directions is None else list_directions(folder=directions)
    dirs = [d for _, d in pool if d.model_id == mid and d.method not in ("ganspace", "sefa")
            and space in EDITABLE[d.space]]
    if attrs:
        keep = {canonical_attribute(a) for a in attrs}
        dirs = [d for d in dirs if d.attribute in keep]
    if not dirs:
        log.warning("%s: no InterFaceGAN directions found; fit them first (faceedit directions fit-all)", mid)
        return []
    t0 = time.time()
    fname = f"{m.name}_{space}.latent.safetensors"
    if latents_dir is not None and (Path(latents_dir) / fname).is_file():
        from faceedit.inversion.latent import Latent

        lat = Latent.load(Path(latents_dir) / fname)
        lat.check_model(mid)
        if lat.batch_size != len(faces["images"]) or lat.meta.get("faces") != list(faces.get("names", [])):
            raise PipelineError(f"{Path(latents_dir) / fname} holds other faces than this run's; "
                                f"delete it or use the same --pack and --n")
        log.info("%s: %d inverted faces from %s", mid, lat.batch_size, latents_dir)
    else:
        lat = invert_with(method, list(faces["images"]), m, space=space, steps=steps, G=G, D=m.D, seed=seed,
                          perceptual=perceptual, batch_size=batch_size)
        lat.meta["faces"] = list(faces.get("names", []))
        lat.meta["invert_seconds"] = round(time.time() - t0, 2)
        if save_latents is not None:
            Path(save_latents).mkdir(parents=True, exist_ok=True)
            lat.to("cpu").save(Path(save_latents) / fname)
            if invert_only:
                return []
    t_inv = lat.meta.get("invert_seconds")  # None: a latent file saved before this was recorded
    codes = lat.codes
    s = np.asarray(sorted(strengths), np.float64)
    score, scorer_name = classifier
    enc = identity
    k = len(codes) if identity_n is None else max(1, min(int(identity_n), len(codes)))
    indep = independent or {}
    if lat.tuning:
        raise PipelineError("bench editing takes latents without pivotal tuning; use --method optim, hybrid or encoder")
    base = _synth(G, codes, lat.noise)
    base_emb = enc.embed(base[:k]) if enc is not None else None
    rows = []
    for d in sorted(dirs, key=lambda d: d.key):
        t1 = time.time()
        per_s, images = [], []
        for st in s:
            imgs = base if st == 0 else _synth(G, codes + displacement(d, float(st)).to(codes.dtype), lat.noise)
            images.append(imgs)
            per_s.append(score(imgs))
        tgt = d.attribute
        row = {"model": m.name, "space": space, "direction": d.key, "fitted_with": d.scorer, "n": len(codes),
               "strengths": s.tolist(), "val_acc": d.accuracy}
        if tgt in indep:
            label, fn = indep[tgt]
            vals = np.stack([fn(im) for im in images])
            row.update(target_by=label, d_target=_slope(s, vals), target_found=float(np.isfinite(vals).mean()))
        elif tgt == "age":
            row.update(target_by=f"{scorer_name} age (years, same scorer)",
                       d_target=_slope(s, np.stack([p["age"] for p in per_s])))
        elif tgt in per_s[0]:
            lg = np.stack([np.log(np.clip(p[tgt], 1e-4, 1 - 1e-4) / np.clip(1 - p[tgt], 1e-4, 1)) for p in per_s])
            row.update(target_by=f"{scorer_name} logit (same scorer)", d_target=_slope(s, lg))
        else:
            row.update(target_by="none available", d_target=None)
        if tgt in per_s[0] and tgt != "age":
            pv = np.stack([p[tgt] for p in per_s])
            row["d_prob"] = _slope(s, pv)
            if 0.0 in s:
                b = pv[list(s).index(0.0)] > 0.5
                row["flip"] = float(((pv[-1] > 0.5) != b).mean())
        if enc is not None and 0.0 in s:
            for key, im in (("id_lo", images[0]), ("id_hi", images[-1])):
                dist = np.linalg.norm(enc.embed(im[:k]) - base_emb, axis=1)
                row[key] = float(np.nanmean(enc.similarity_from_distance(dist)))
                row[key.replace("id_", "id_dist_")] = float(np.nanmean(dist))  # dlib: < 0.6 = same person
            row["identity_by"] = IDENTITY_BY + (f" (first {k} faces)" if k < len(codes) else "")
        drift = {k: _slope(s, np.stack([p[k] for p in per_s])) for k in per_s[0]
                 if k not in (tgt, "age", "female")}
        row["drift"] = float(np.mean([abs(v) for v in drift.values()])) if drift else None
        row["largest_drift"] = sorted(drift.items(), key=lambda kv: -abs(kv[1]))[:3]
        row["held"] = {k: (_slope(s, np.stack([p["age"] for p in per_s])) if k == "age" else drift.get(k))
                       for k in HELD if k != tgt and (k == "age" or k in drift)}
        row["seconds"] = round(time.time() - t1, 2)
        rows.append(row)
    for r in rows:
        r["invert_seconds"] = t_inv
        r["steps"] = lat.meta.get("steps")
    return rows


def photo_check(pipe, photos, *, attr: str | None = None, strength: float = 2.0, directions=None,
                limit: int | None = None) -> dict:
    """The photo check on every photo of a folder, all faces: the edited photo keeps its size,
    changes only inside the paste-back mask, and equals the input (within 1 level) at strength 0.

    Args:
        pipe: a built :class:`faceedit.Pipeline` (the front door builds it: this room sits below
            it); a few inversion steps are enough, geometry, not quality, is checked.
        photos: folder of ``.jpg`` / ``.png`` photos.
        attr: direction to apply (None: ``smile``, else the model's first). Without a fitted
            direction GANSpace's first component stands in (it moves the face just as well here).
        strength: edit strength.
        directions: folder of direction files (None: shipped + cache).
        limit: check only the first ``limit`` photos.

    Returns:
        Counts (``faces``, ``size_ok``, ``zero_ok``, ``outside_mask_changed_px``, ...) and ``passed``.
    """
    from faceedit.core.images import load_image
    from faceedit.editing.direction import list_directions
    from faceedit.editing.fit import ganspace, sample_codes

    pool = [d for _, d in (list_directions(pipe.model_id) if directions is None else list_directions(folder=directions))
            if d.model_id == pipe.model_id]
    d = next((x for x in pool if x.key == (attr or "smile")), None) or (None if attr else next(iter(pool), None))
    if d is None:
        d = ganspace(sample_codes(pipe.G, 5000), model_id=pipe.model_id, num_ws=pipe.G.num_ws, k=1)[0]
    files = sorted(q for q in Path(photos).iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    res = {"direction": d.key, "strength": strength, "photos": len(files), "no_face": [], "errors": [],
           "faces": 0, "size_ok": 0, "outside_mask_changed_px": 0, "inside_changed": 0, "zero_max_diff": 0,
           "zero_ok": 0, "checked_photos": 0, "seconds": 0.0}
    t0 = time.time()
    for f in files:
        try:
            photo = load_image(f)
            try:
                faces = pipe.align(photo, face="all")
            except ValueError as e:  # AlignmentError / FaceNotFoundError
                res["no_face"].append(f"{f.name}: {type(e).__name__}")
                continue
            r = pipe.edit_photo(photo, {d: strength}, faces=faces)
            r0 = pipe.edit_photo(photo, {d: 0.0}, faces=faces, latents=[x.latent for x in r.faces])
        except Exception as e:  # noqa: BLE001 -- counted and listed, the check goes on
            res["errors"].append(f"{f.name}: {type(e).__name__}: {e}")
            continue
        res["checked_photos"] += 1
        res["faces"] += len(faces)
        res["size_ok"] += int(r.photo.shape == photo.shape and r0.photo.shape == photo.shape)
        changed = np.any(r.photo != photo, axis=2)
        res["outside_mask_changed_px"] += int((changed & (r.mask == 0)).sum())
        res["inside_changed"] += int(changed.any())
        zd = int(np.abs(r0.photo.astype(int) - photo).max())
        res["zero_max_diff"] = max(res["zero_max_diff"], zd)
        res["zero_ok"] += int(zd <= 1)
    res["seconds"] = round(time.time() - t0, 1)
    res["passed"] = (res["size_ok"] == res["checked_photos"] == res["zero_ok"] and res["outside_mask_changed_px"] == 0
                     and not res["errors"])
    return res


def _f(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if v != v else f"{v:+.3f}" if abs(v) < 100 else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_f(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(f"{k} {_f(x)}" for k, x in v)
    return str(v)


def table(rows: list, photos: dict | None = None) -> str:
    """Markdown table (plus the photo check, if run)."""
    cols = ["model", "space", "direction", "val_acc", "target_by", "d_target", "d_prob", "flip", "id_lo", "id_hi",
            "id_dist_lo", "id_dist_hi", "drift", "held", "largest_drift"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_f(r.get(c)) for c in cols) + " |" for r in rows]
    if rows:
        r = rows[0]
        lines += ["", f"Per unit strength (1 = one standard deviation of the latent distribution along the "
                      f"direction), strengths {r['strengths']}, {r['n']} inverted faces per model "
                      f"({r.get('steps')} steps). d_prob/drift: classifier probability per unit; held: drift of "
                      f"attributes conditioning holds (age in years per unit). Rows measured by the scorer they "
                      f"were fitted with are optimistic. id_lo/id_hi: calibrated identity similarity to the "
                      f"unedited reconstruction at the smallest/largest strength; id_dist_*: dlib descriptor "
                      f"distance (< 0.6: same person by dlib's threshold)."]
    if photos:
        lines += ["", "Photo check: " + json.dumps({k: v for k, v in photos.items()
                                                    if k not in ("no_face", "errors")}),
                  f"no face: {len(photos['no_face'])}, errors: {photos['errors'][:5]}"]
    return "\n".join(lines)


def run(models, *, pack=None, photos=None, n: int = 100, strengths=(-2, -1, 0, 1, 2), steps: int | None = None,
        seed: int = 0, device=None, directions=None, out=None, identity: bool = True, perceptual: str = "disc",
        photo_pipeline=None, method: str | None = None, attrs=None, latents_dir=None, save_latents=None,
        invert_only: bool = False, identity_n: int | None = None) -> dict:
    """Benchmark the models; writes ``editing.json`` / ``editing.md`` to ``out``.

    ``photos`` is where faces come from when there is no ``pack``; with ``photo_pipeline`` (a
    built :class:`faceedit.Pipeline` of the first model) the photos also get :func:`photo_check`.
    """
    from faceedit.alignment.types import FACES64, AlignmentRecipe
    from .inversion import _identity, load_faces
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.device import resolve_device

    device = resolve_device(device or "auto")
    clf = _classifier(device)
    indep = _independent()
    enc = _identity() if identity else None
    rows = []
    for model in models:
        cfg = load_model(model).config
        R = cfg["generator"]["resolution"]
        recipe = AlignmentRecipe.from_dict(cfg["recipe"]) if cfg.get("recipe") else FACES64
        faces = load_faces(pack, n, None if pack else photos, recipe.with_size(R))
        rows += bench_model(model, faces, strengths=strengths, steps=steps, seed=seed, device=device, classifier=clf,
                            independent=indep, identity=enc, directions=directions, perceptual=perceptual,
                            method=method, attrs=attrs, latents_dir=latents_dir, save_latents=save_latents,
                            invert_only=invert_only, identity_n=identity_n)
    check = None
    if photos and photo_pipeline is not None:
        check = photo_check(photo_pipeline, photos, directions=directions)
    from .report import provenance

    result = {"rows": rows, "photo_check": check, "provenance": provenance(),
              "settings": {"n": n, "method": method or "default", "strengths": list(strengths), "steps": steps,
                           "seed": seed, "pack": str(pack),
                           "photos": str(photos), "scorer": clf[1], "identity": IDENTITY_BY if enc is not None else None,
                           "identity_n": identity_n,
                           "independent": {k: v[0] for k, v in indep.items()}}}
    if out is not None:
        from faceedit.core.files import atomic_write_text

        out = Path(out)
        atomic_write_text(out / "editing.json", json.dumps(result, indent=2, default=str))
        atomic_write_text(out / "editing.md", table(rows, check) + "\n")
    return result
