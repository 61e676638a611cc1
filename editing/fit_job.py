"""GPU job: fit the shipped attribute directions of one or more generators.

    faceedit --device cuda directions fit-all --model checkpoints/weights/faces64 \\
        --model checkpoints/weights/faces64-wpp --scorers checkpoints/weights/scorers/attrnet.safetensors \\
        --n 100000 --out DIR

For each model: sample ``--n`` latents, synthesise and score them once with the
attribute network (:class:`faceedit.metrics.attributes.AttributeScorer`, logits for the
CelebA attributes, years for ``age``), then fit an InterFaceGAN direction per attribute
(top/bottom ``--fraction``, linear SVM, held-out accuracy) in the model's own space (W
for an MLP mapping, W++ for a transformer mapping, fitted on the flattened per-layer
codes), the conditional variants (``age|male``, ``eyeglasses|age``, ...), and the
unsupervised GANSpace and SeFa directions, and the linear separability of the
model's code space (``faceedit.metrics.separability``, on the first ``--separability``
samples, over the binary attributes fitted here; one process per attribute). With
``--wplus-pack TRAIN.npz`` W+ directions are also fitted on the codes of inverted train
faces (MLP models; the default inversion method; scored by the same classifier on the
real images). Files go to ``DIR/<model>/`` (copy them to
``checkpoints/weights/directions/<model>/``), a report to ``DIR/<model>/fit_report.json``,
and the command prints a table last.

Landmark-based directions (``--scorers landmarks``: yaw, and any other score the
landmark scorer gives) need dlib; where it is not installed, run those on the CPU with
fewer samples (e.g. ``--scorers landmarks --n 6000 --fraction 0.05 --attrs yaw
--device cpu --unsupervised 0 --separability 0``, about 25 ms per image); the report
records the sample count. Faster: let the GPU run synthesise them (``--save-samples 6000``
writes ``samples_<model>.npz``, JPEG images plus the seed) and score only on the CPU
(``--scorers landmarks --from-samples DIR``; the codes are recomputed from the seed by
the mapping alone). Yaw's sign: positive = nose towards the image's right = the
head turned to the subject's left (``faceedit.metrics.geometry``).

Needs only torch, numpy, scikit-learn and safetensors (no dlib, lpips, facenet for the
classifier path); runs on CUDA or CPU.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceedit.core.errors import EditingError

from .direction import canonical_attribute, model_name
from .fit import SVM_C, code_space, condition, fit_direction, ganspace, sample_and_score, sefa

log = logging.getLogger(__name__)

# Always fitted when the scorer has them (the shipped set's core); others join when the scorer's
# validation AUC on real faces reaches --min-auc.
CORE = ("smile", "age", "male", "eyeglasses", "young")
# (primal, conditions)
CONDITIONAL = (("age", ("male",)), ("male", ("age",)), ("eyeglasses", ("age",)), ("eyeglasses", ("age", "male")),
               ("smile", ("male",)), ("age", ("eyeglasses", "male")), ("young", ("male",)))
NEVER = ("attractive", "blurry", "female")  # judgements of looks, image quality, redundant heads


def classifier_scorer(path, device):
    """``images -> {attribute: logit or years}`` from the shipped attribute network."""
    from faceedit.metrics.attributes import AttributeScorer

    sc = AttributeScorer.load(path, device=device)
    names = [canonical_attribute(a) for a in sc.attributes]

    @torch.no_grad()
    def score(img):
        out = sc.logits(img)
        res = {n: out["attrs"][:, j] for j, n in enumerate(names)}
        res["age"] = out["age"]
        return res

    aucs = {}
    val = (sc.card or {}).get("validation", {})
    for a, v in (val.get("attributes") or {}).items():
        try:
            aucs[canonical_attribute(a)] = float(v["auc"])
        except (KeyError, TypeError, ValueError):
            pass
    ident = f"attrnet@{sc.sha256[:12]}" if sc.sha256 else "attrnet"
    return score, aucs, ident


def landmark_scorer(device, *, with_yaw5: bool = False):
    """``images -> {yaw, pitch, roll, smile, mouth_open, eyes_open[, yaw5]}`` from the metrics
    room's landmark geometry (``faceedit.metrics.geometry.crop_geometry``: dlib, so CPU only;
    NaN where no face is found, which the SVM fit drops)."""
    try:
        from faceedit.metrics.geometry import crop_geometry
    except ImportError as e:
        raise EditingError(f"the landmark scorer (faceedit.metrics.geometry) is not available here ({e}); "
                           f"it needs dlib: run this on the CPU machine") from e
    from faceedit.core.images import tensor_to_uint8

    keys = ("yaw", "pitch", "roll", "smile", "mouth_open", "eyes_open") + (("yaw5",) if with_yaw5 else ())

    def score(img):
        geos = [crop_geometry(a, with_yaw5=with_yaw5) for a in tensor_to_uint8(img)]
        return {k: torch.tensor([getattr(g, k) for g in geos], dtype=torch.float32) for k in keys}

    return score, {}, "landmarks-dlib68"


def _fit_wplus(m, score_fn, scorer_id, pack_path, attrs, *, folder, n, steps, fraction, seed, report, device) -> list:
    """W+ directions from the codes of inverted TRAIN-split faces (mapping samples are the same
    on every layer, so a flattened W+ SVM on them would be degenerate). The faces are scored
    by the same classifier on the real aligned images; the default inversion method is used."""
    from faceedit.core.images import uint8_to_tensor
    from faceedit.core.pack import Pack
    from faceedit.inversion.methods import default_method, invert_with

    pack = Pack(pack_path)
    if str(pack.meta.get("split", "")).lower() == "test":
        raise EditingError(f"{pack_path} is the test split; directions are fitted on the train split only")
    idx = np.unique(np.linspace(0, len(pack) - 1, min(n, len(pack))).round().astype(int))
    imgs = pack.images(idx)
    G = m.G
    t0 = time.time()
    method = default_method(m, "w+")
    lat = invert_with(method, list(imgs), m, space="w+", steps=steps, G=G, D=m.D, seed=seed,
                      batch_size=256 if torch.device(device).type == "cuda" else 32)
    t_inv = time.time() - t0
    scores = {}
    with torch.no_grad():
        for i in range(0, len(imgs), 512):
            for k, v in score_fn(uint8_to_tensor(imgs[i:i + 512], device=device)).items():
                scores.setdefault(k, []).append(torch.as_tensor(v).float().cpu().numpy().reshape(-1))
    scores = {k: np.concatenate(v) for k, v in scores.items()}
    codes = lat.codes.float().numpy()
    rows, name = [], model_name(m.model_id)
    report["wplus"] = {"pack": str(pack_path), "faces": int(len(idx)), "method": method,
                       "steps": lat.meta.get("steps"), "seconds_invert": round(t_inv, 1), "directions": {}}
    for a in attrs:
        if a not in scores:
            continue
        try:
            d = fit_direction(codes, scores[a], attribute=a, model_id=m.model_id, num_ws=G.num_ws, space="w+",
                              fraction=fraction, seed=seed, scorer=scorer_id, arch=G.arch,
                              meta={"source": "inverted train faces", "pack": Path(pack_path).name,
                                    "inversion": method})
        except ValueError as e:
            log.warning("%s: W+ %s skipped (%s)", name, a, e)
            continue
        p = d.save(folder)
        report["wplus"]["directions"][d.key] = {"file": p.name, "accuracy": d.accuracy, "std": d.latent_std}
        rows.append((name, d.key, d.space, f"{d.accuracy:.3f}", f"{d.meta['train_accuracy']:.3f}",
                     f"{d.latent_std:.4g}", d.meta["n_kept"], "inverted train faces"))
    return rows


def _parallel_separability(X, probs, fn, jobs: int = 0) -> dict:
    """``fn(X, probs)`` with one attribute per worker process (each SVM is single-threaded)."""
    import os

    names = sorted(probs)
    jobs = min(len(names), jobs or os.cpu_count() or 1, 16)
    if jobs <= 1:
        return fn(X, probs)
    from joblib import Parallel, delayed

    parts = Parallel(n_jobs=jobs)(delayed(fn)(X, {a: probs[a]}) for a in names)
    per = {a: r for p in parts for a, r in p["per_attribute"].items()}
    total = sum(r["entropy"] for r in per.values())
    return {"separability": float(np.exp(total)), "sum_entropy_nats": float(total), "per_attribute": per,
            "skipped": [a for p in parts for a in p["skipped"]], "n": int(len(X))}


@torch.no_grad()
def _save_samples(G, model_id, codes, path, *, seed, batch, device) -> Path:
    """The first sampled images as JPEG (q92) in one ``.npz`` (no pickles), with what is needed
    to recompute their codes on another machine (seed, batch: the z are drawn on the CPU)."""
    import cv2

    from faceedit.core.files import atomic_write_bytes
    from faceedit.core.images import tensor_to_uint8

    jpegs = []
    for i in range(0, len(codes), 256):
        c = torch.from_numpy(np.asarray(codes[i:i + 256])).to(device)
        ws = c[:, None].expand(-1, G.num_ws, -1) if c.ndim == 2 else c
        for im in tensor_to_uint8(G.synthesis(ws)):
            ok, enc = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            jpegs.append(enc.reshape(-1))
    offsets = np.zeros(len(jpegs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(j) for j in jpegs])
    meta = {"model_id": model_id, "seed": int(seed), "batch": int(batch), "n": len(jpegs), "truncation_psi": 1.0}
    import io

    buf = io.BytesIO()
    np.savez(buf, jpeg=np.concatenate(jpegs), offsets=offsets, meta=np.array(json.dumps(meta)))
    return atomic_write_bytes(path, buf.getvalue())


def _score_saved_samples(G, model_id, folder, score_fn, device) -> tuple:
    """Codes (recomputed from the saved seed) and scores (of the saved images) of ``samples_<model>.npz``."""
    import cv2

    from faceedit.core.images import uint8_to_tensor
    from faceedit.editing.fit import sample_codes

    path = Path(folder) / f"samples_{model_name(model_id)}.npz"
    if not path.is_file():
        raise EditingError(f"{path} not found; write it on the GPU with --save-samples N")
    with np.load(path, allow_pickle=False) as z:
        jpeg, offsets, meta = z["jpeg"], z["offsets"], json.loads(str(z["meta"]))
    if meta["model_id"] != model_id:
        raise EditingError(f"{path} holds samples of {meta['model_id']}, not {model_id}")
    n = int(meta["n"])
    codes = sample_codes(G, n, seed=meta["seed"], batch=meta["batch"], device=device)
    scores = {}
    for i in range(0, n, 64):
        imgs = np.stack([cv2.cvtColor(cv2.imdecode(jpeg[offsets[j]:offsets[j + 1]], cv2.IMREAD_COLOR),
                                      cv2.COLOR_BGR2RGB) for j in range(i, min(i + 64, n))])
        for k, v in score_fn(uint8_to_tensor(imgs)).items():
            scores.setdefault(k, []).append(torch.as_tensor(v).float().cpu().numpy().reshape(-1))
    return codes, {k: np.concatenate(v) for k, v in scores.items()}, n


def _zip_folder(folder, zip_path) -> None:
    import io
    import zipfile

    from faceedit.core.files import atomic_write_bytes

    buf = io.BytesIO()
    root = Path(folder)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.resolve() != Path(zip_path).resolve() and not f.name.startswith("samples_"):
                z.write(f, f.relative_to(root).as_posix())
    atomic_write_bytes(zip_path, buf.getvalue())


def code_space_name(G) -> str:
    return {"w": "W", "wpp": "W++ (flattened)"}[code_space(G)]


def table(rows) -> str:
    """The summary table of :func:`run_fit_job`'s rows."""
    head = ("model", "direction", "space", "val acc", "train acc", "std", "kept", "cos(primal)")
    lines = [head] + [tuple(str(x) for x in r) for r in rows]
    w = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in lines)


def fit_attribute_set(codes, scores, attrs, *, model_id: str, num_ws: int, arch: str, scorer: str,
                      fraction: float, seed: int, C: float = SVM_C, aucs: dict | None = None,
                      meta: dict | None = None, needed: Callable[[int], float] | None = None) -> dict:
    """InterFaceGAN directions of ``attrs`` from scored samples, and their :data:`CONDITIONAL` variants.

    The one fitting path of the shipped directions (:func:`fit_model`) and of
    ``faceedit adopt`` (``training.adopt``): one :func:`~faceedit.editing.fit.fit_direction`
    per attribute (top/bottom ``fraction``, linear SVM, held-out accuracy), then every
    conditional direction whose primal and conditions were all fitted (projected off on
    ``codes``). The same samples and seed give the same directions by either caller.

    Args:
        codes: ``[N, w_dim]`` or ``[N, num_ws, w_dim]`` codes of the samples.
        scores: ``{attribute: [N]}`` scores of the same samples.
        attrs: attributes to fit, in order (each must be in ``scores``).
        model_id, num_ws, arch: the generator's, recorded in each direction.
        scorer: the scorer's id, recorded in each direction.
        fraction: kept at each end of the scores.
        seed: seed of the train/held-out split.
        C: the SVM's regularisation (:data:`~faceedit.editing.fit.SVM_C`, the shipped recipe's).
        aucs: ``{attribute: the scorer's validation AUC}``, recorded as ``classifier_auc``.
        meta: more fields for every direction's ``meta``.
        needed: optional ``n_val -> accuracy``: a direction whose held-out accuracy is below
            it is refused (``faceedit adopt``'s chance check); ``None`` keeps every fit.
    Returns:
        ``{"fitted": {attribute: Direction}, "refused": {attribute: {"reason", "accuracy",
        "needed", "n_val"}}, "conditional": [Direction]}``.
    Raises:
        EditingError: an attribute the scores lack.
    """
    aucs = aucs or {}
    missing = [a for a in attrs if a not in scores]
    if missing:
        raise EditingError(f"the scorer gives no {', '.join(missing)}; it scores {', '.join(sorted(scores))}")
    fitted, refused = {}, {}
    for a in attrs:
        try:
            d = fit_direction(codes, scores[a], attribute=a, model_id=model_id, num_ws=num_ws, fraction=fraction,
                              C=C, seed=seed, scorer=scorer, arch=arch,
                              meta={"classifier_auc": aucs.get(a), "truncation_psi": 1.0, "seed": seed,
                                    **(meta or {})})
        except EditingError as e:
            log.info("%s: %s: refused (%s)", model_id, a, e)
            refused[a] = {"reason": str(e), "accuracy": None, "needed": None, "n_val": None}
            continue
        need = None if needed is None else float(needed(d.meta["n_val"]))
        if need is not None and (d.accuracy is None or d.accuracy < need):
            log.info("%s: %s: refused: held-out accuracy %.3f < %.3f on %d held-out samples", model_id, a,
                     float("nan") if d.accuracy is None else d.accuracy, need, d.meta["n_val"])
            refused[a] = {"reason": "not better than chance", "accuracy": d.accuracy, "needed": need,
                          "n_val": d.meta["n_val"]}
            continue
        fitted[a] = d
    conditional = [condition(fitted[primal], [fitted[c] for c in conds], codes=codes)
                   for primal, conds in CONDITIONAL if primal in fitted and all(c in fitted for c in conds)]
    return {"fitted": fitted, "refused": refused, "conditional": conditional}


def fit_model(model_path, score_fn, aucs, scorer_id, *, n, out, fraction, batch, device, seed, attrs,
              min_auc, unsupervised: int, separability: int = 0, jobs: int = 0, wplus_pack=None,
              wplus_n: int = 5000, wplus_steps=None, wplus_fraction: float = 0.1, save_samples: int = 0,
              from_samples=None, samples_dir=None, svm_c: float = SVM_C):
    from faceedit.checkpoints.registry import load_model

    m = load_model(model_path, device=device)
    G, model_id = m.G, m.model_id
    name = model_name(model_id)
    folder = Path(out) / name
    t0 = time.time()
    try:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"{name}: sample+score", file=sys.stderr, disable=not sys.stderr.isatty())
        progress = lambda done, total: bar.update(done - bar.n)  # noqa: E731
    except ImportError:
        bar, progress = None, None
    if from_samples:
        codes, scores, n = _score_saved_samples(G, model_id, from_samples, score_fn, device)
    else:
        codes, scores = sample_and_score(G, score_fn, n, seed=seed, batch=batch, device=device, progress=progress)
    if bar is not None:
        bar.close()
    t_sample = time.time() - t0
    if save_samples:
        k = max(batch, save_samples // batch * batch)  # whole batches: the CPU redraws exactly these z
        p = _save_samples(G, model_id, codes[:k], Path(samples_dir or out) / f"samples_{name}.npz", seed=seed,
                          batch=batch, device=device)
        log.info("%s: wrote %d sample images to %s for the CPU landmark fit", name, len(codes[:k]), p)
    if attrs:
        want = [canonical_attribute(a) for a in attrs]
        missing = [a for a in want if a not in scores]
        if missing:
            raise EditingError(f"the scorer gives no {missing}; it scores {sorted(scores)}")
    else:
        want = [a for a in CORE if a in scores] + sorted(
            a for a in scores if a not in CORE and a not in NEVER and aucs.get(a, 0.0) >= min_auc)
    rows, report = [], {"model_id": model_id, "scorer": scorer_id, "samples": n, "fraction": fraction,
                        "seconds_sample_and_score": round(t_sample, 2), "directions": {}}
    num_ws = G.num_ws
    fit = fit_attribute_set(codes, scores, want, model_id=model_id, num_ws=num_ws, arch=G.arch, scorer=scorer_id,
                            fraction=fraction, seed=seed, C=svm_c, aucs=aucs)
    fitted = fit["fitted"]
    for a, r in fit["refused"].items():
        log.warning("%s: %s: skipped (%s)", name, a, r["reason"])
    for a, d in fitted.items():
        p = d.save(folder)
        report["directions"][d.key] = {"file": p.name, "accuracy": d.accuracy, "std": d.latent_std,
                                       "train_accuracy": d.meta["train_accuracy"], "classifier_auc": aucs.get(a)}
        rows.append((name, d.key, d.space, f"{d.accuracy:.3f}", f"{d.meta['train_accuracy']:.3f}",
                     f"{d.latent_std:.4g}", d.meta["n_kept"], ""))
    for d in fit["conditional"]:
        p = d.save(folder)
        report["directions"][d.key] = {"file": p.name, "std": d.latent_std, "primal_cosine": d.meta["primal_cosine"]}
        rows.append((name, d.key, d.space, "", "", f"{d.latent_std:.4g}", "", f"{d.meta['primal_cosine']:.3f}"))
    if wplus_pack and G.mapping_kind == "mlp" and fitted:
        rows += _fit_wplus(m, score_fn, scorer_id, wplus_pack, list(fitted), folder=folder, n=wplus_n,
                           steps=wplus_steps, fraction=wplus_fraction, seed=seed, report=report, device=device)
    if unsupervised:
        sub = codes[: min(len(codes), 50000)]
        for d in ganspace(sub, model_id=model_id, num_ws=num_ws, k=unsupervised, seed=seed, arch=G.arch):
            d.save(folder)
            rows.append((name, d.key, d.space, "", "", f"{d.latent_std:.4g}", "ganspace",
                         f"evr={d.meta['explained_variance_ratio']:.3f}"))
        for d in sefa(G, model_id=model_id, k=unsupervised, codes=sub):
            d.save(folder)
            rows.append((name, d.key, d.space, "", "", f"{d.latent_std:.4g}", "sefa", ""))
    if separability:
        # the metrics room's definition (held-out H(Y|X)), on the first samples' probabilities
        from faceedit.metrics.separability import linear_separability

        k = min(separability, len(codes))
        probs = {a: 1.0 / (1.0 + np.exp(-scores[a][:k].astype(np.float64))) for a in fitted if a != "age"}
        t1 = time.time()
        sep = _parallel_separability(codes[:k].reshape(k, -1), probs, linear_separability, jobs)
        report["separability"] = {"space": code_space_name(G), "n": k, "seconds": round(time.time() - t1, 2),
                                  "separability": sep["separability"], "skipped": sep["skipped"],
                                  "per_attribute": {a: {"entropy": r["entropy"], "svm_accuracy": r["svm_accuracy"]}
                                                    for a, r in sep["per_attribute"].items()}}
        rows.append((name, "linear separability", code_space_name(G), "", "", "", k,
                     f"exp(sum H)={sep['separability']:.3g} over {len(sep['per_attribute'])} attrs"))
    report["seconds_total"] = round(time.time() - t0, 2)
    report["score_summary"] = {a: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v))}
                               for a, v in scores.items()}
    from faceedit.core.files import atomic_write_text

    suffix = "_landmarks" if scorer_id.startswith("landmarks") else ""
    atomic_write_text(folder / f"fit_report{suffix}.json", json.dumps(report, indent=2))
    return rows, report


def run_fit_job(models, out, *, scorers=None, n: int = 100000, fraction: float = 0.02, batch: int = 1000,
                attrs=None, min_auc: float = 0.9, unsupervised: int = 8, separability: int = 10000,
                wplus_pack=None, wplus_n: int = 5000, wplus_steps=None, wplus_fraction: float = 0.1,
                save_samples: int = 0, samples_dir=None, from_samples=None, zip_path=None, jobs: int = 0,
                seed: int = 0, device="auto", svm_c: float = SVM_C) -> dict:
    """Fit the shipped direction set of every model in ``models`` (see the module docstring).

    Returns ``{"rows": [...], "timing": [lines], "device": str, "seconds": float}``; the
    caller (``faceedit directions fit-all``) prints them.
    """
    from faceedit.core.device import resolve_device

    device = resolve_device(device)
    t0 = time.time()
    if scorers == "landmarks":
        score_fn, aucs, ident = landmark_scorer(device)
        if attrs is None:
            attrs = ["yaw"]  # the classifier's smile stays the shipped smile
    else:
        score_fn, aucs, ident = classifier_scorer(scorers, device)
    all_rows, timing = [], []
    for mp in models:
        rows, rep = fit_model(mp, score_fn, aucs, ident, n=n, out=out, fraction=fraction, batch=batch,
                              device=device, seed=seed, attrs=attrs, min_auc=min_auc,
                              unsupervised=unsupervised, separability=separability, jobs=jobs,
                              wplus_pack=wplus_pack, wplus_n=wplus_n, wplus_steps=wplus_steps,
                              wplus_fraction=wplus_fraction, save_samples=save_samples,
                              from_samples=from_samples, samples_dir=samples_dir, svm_c=svm_c)
        all_rows += rows
        timing.append(f"{rep['model_id']}: sample+score {rep['seconds_sample_and_score']} s, "
                      f"total {rep['seconds_total']} s")
    if zip_path:
        _zip_folder(out, zip_path)
        timing.append(f"zipped {out} into {zip_path}")
    return {"rows": all_rows, "timing": timing, "device": str(device), "seconds": time.time() - t0}
