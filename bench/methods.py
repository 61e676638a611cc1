"""Encoder vs optim vs hybrid vs PTI on the same test faces: one table of the trade-off.

``faceedit bench methods --methods encoder,optim,hybrid,pti ...`` (:func:`run_table`; also
reached as ``faceedit bench inversion --methods ...``; ``faceedit bench inversion`` without
``--methods`` is the optimiser's space/prior/loss table of :mod:`faceedit.bench.inversion`).

For each ``MODEL:SPACE`` run (default ``faces64:w+`` and ``faces64-wpp:wpp``) the same
``--n`` faces of the aligned *test* pack are inverted by every method and measured:

* ``mse``, ``psnr``, ``ssim`` (``faceedit.metrics.reconstruction``) and, where dlib's
  identity instrument is installed (not on the GPU machine), ``id_sim``;
* ``s/img``: wall seconds per image of the whole method (hybrid: encoder + optimiser;
  PTI: its hybrid pivot + tuning), batched as ``faceedit invert`` does;
* ``steps`` and ``bytes/img``: size of one face's latent file (PTI: codes + LoRA deltas);
* for PTI, when the model has a direction for ``--edit-attr`` and the attribute scorer is
  installed: the attribute change per unit strength (slope of the scorer's probability
  over strengths -2..2, ``metrics.editing``) of the pivot without and with its tuning,
  and their ratio (the target is >= 0.7).

Run on the GPU machine (after the encoders are in the model folders), then on a CPU
machine with dlib (identity, and seconds per image on that CPU for the first ``--cpu-n``
faces of each row, same method and steps: the ``s/img CPU`` column)::

    faceedit bench methods --methods encoder,optim,hybrid,pti --n 100 --save-recon --out runs/methods
    faceedit bench methods --methods encoder,optim,hybrid,pti --add-identity --cpu-n 8 --out runs/methods

Writes ``methods.json`` and ``methods.md``; prints the table last. Identity figures on
the test split are optimistic (splits are by image, not by person).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faceedit.core.device import resolve_device
from faceedit.core.errors import PipelineError
from faceedit.inversion.hybrid import HYBRID_PRIOR_WEIGHT
from faceedit.inversion.methods import METHODS, invert_with
from faceedit.inversion.projector import DEFAULT_PRIOR_WEIGHT

from .inversion import load_faces

log = logging.getLogger(__name__)


def _resized(images: np.ndarray, R: int) -> np.ndarray:
    if images.shape[1] == R:
        return images
    import cv2

    return np.stack([cv2.resize(a, (R, R), interpolation=cv2.INTER_AREA) for a in images])


def _bytes_per_image(lat) -> int:
    with tempfile.TemporaryDirectory() as d:
        return lat[0].save(Path(d) / "one.latent.safetensors").stat().st_size


def editability(G, lat, attr: str, strengths=(-2.0, -1.0, 0.0, 1.0, 2.0)):
    """Slope of the attribute probability per unit strength, without and with the latent's tuning."""
    from faceedit.core.images import tensor_to_uint8
    from faceedit.editing.apply import edit
    from faceedit.editing.direction import canonical_attribute, find_direction
    from faceedit.inversion.latent import Latent
    from faceedit.inversion.pti import synthesize
    from faceedit.metrics.attributes import AttributeScorer
    from faceedit.metrics.editing import editing_metrics

    dev = G.synthesis.const.device
    scorer = AttributeScorer.load(device=dev)
    d = find_direction(lat.model_id, attr, lat.space)
    name = next((k for k in scorer.names if canonical_attribute(k) == d.attribute), None)
    if name is None:
        raise PipelineError(f"the attribute scorer has no output for {d.attribute!r}")
    plain = Latent(space=lat.space, codes=lat.codes, model_id=lat.model_id, meta=lat.meta)
    out = {}
    for tag, base in (("pivot", plain), ("pti", lat)):
        scores = [scorer.scores(tensor_to_uint8(synthesize(G, edit(base, {d: s})))) for s in strengths]
        out[tag] = editing_metrics(list(strengths), scores, name)["target"]["slope_prob"]
    out["ratio"] = out["pti"] / out["pivot"] if out["pivot"] else float("nan")
    out["attribute"] = name
    return out


def bench(model: str, space: str, images: np.ndarray, *, optim_steps: int, hybrid_steps, pti_steps, pti_n: int,
          perceptual: str, seed: int, batch_size: int, identity, edit_attr: str | None, device,
          save_recon=None, methods=METHODS, compare_prior: bool = False) -> list:
    from faceedit.core.images import tensor_to_uint8
    from faceedit.inversion.pti import synthesize
    from faceedit.metrics.reconstruction import reconstruction_metrics

    m, G, D, prior, enc = _load(model, space, device, perceptual)
    R = G.resolution
    images = _resized(images, R)
    rows = []
    # (method, steps, faces, prior weight: None = the method's default)
    plan = [("encoder", None, len(images), None), ("optim", optim_steps, len(images), None),
            ("hybrid", hybrid_steps, len(images), None), ("pti", pti_steps, min(pti_n, len(images)), None)]
    if compare_prior:  # optim and hybrid again with the other prior setting: like-for-like comparisons
        plan += [(k, s, len(images), w) for k, s in (("optim", optim_steps), ("hybrid", hybrid_steps))
                 for w in (0.0, DEFAULT_PRIOR_WEIGHT) if w != _default_prior_weight(k)]
    for method, steps, n, pw in plan:
        if method not in methods:
            continue
        extra = {} if pw is None else {"prior_weight": pw}
        if method != "optim" and enc is not None:
            extra["encoder"] = enc
        try:
            lat, secs = _timed_invert(method, images[:n], m, space, steps, G=G, D=D, prior=prior,
                                      perceptual=perceptual, seed=seed, batch_size=batch_size, device=device,
                                      **extra)
        except ValueError as e:  # e.g. no encoder shipped: the row says so
            rows.append({"model": m.model_id, "space": space, "method": method, "error": str(e)})
            log.warning("%s %s %s: %s", model, space, method, e)
            continue
        recon = tensor_to_uint8(synthesize(G, lat))
        met = reconstruction_metrics(images[:n], recon, identity=identity)
        row = {"model": m.model_id, "model_name": model, "space": space, "method": method, "n": n,
               "steps": lat.meta.get("tuning", {}).get("steps") if method == "pti" else lat.meta.get("steps"),
               "pivot_steps": lat.meta.get("steps") if method == "pti" else None,
               "mse": float(met["mse"].mean()), "psnr": float(met["psnr"].mean()), "ssim": float(met["ssim"].mean()),
               "id_sim": float(met["identity_similarity"].mean()) if "identity_similarity" in met else None,
               "s_per_img": secs / n, "bytes_per_img": _bytes_per_image(lat), "device": str(device),
               "prior_weight": lat.meta.get("prior_weight"),
               "settings": {"steps": steps, "perceptual": perceptual, "seed": seed, "batch_size": batch_size,
                            **({} if pw is None else {"prior_weight": pw})}}
        if save_recon is not None:  # for add_identity() on a machine with dlib
            tag = "" if pw is None else f"_pw{pw:g}"
            row["recon_file"] = f"{m.name}_{space}_{method}{tag}.npz".replace("+", "p")
            Path(save_recon).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(save_recon) / row["recon_file"], targets=images[:n], recon=recon)
        if method == "pti" and edit_attr:
            try:
                row["edit"] = editability(G, lat, edit_attr)
            except Exception as e:  # noqa: BLE001 -- no direction/scorer: the reason is recorded
                row["edit"] = {"error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        log.info("%s", row)
    return rows


def _default_prior_weight(method: str) -> float:
    return HYBRID_PRIOR_WEIGHT if method == "hybrid" else DEFAULT_PRIOR_WEIGHT


def _timed_invert(method, images, m, space, steps, *, device, **kw):
    """``(latent, wall seconds)`` of one method on ``images`` (CUDA synchronised around it)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    lat = invert_with(method, list(images), m, space, steps, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return lat, time.perf_counter() - t


def _load(model: str, space: str, device, perceptual: str) -> tuple:
    """``(model dict, G, D, prior, encoder or None)``, loaded once per run like G, D and the prior, so
    that no method's time includes reading a file."""
    from faceedit.checkpoints.registry import load_model
    from faceedit.inversion.encoder import EncoderError, encoder_for
    from faceedit.inversion.prior import load_prior

    m = load_model(model, device=device, with_discriminator=perceptual == "disc")
    G = m.G
    try:
        E = encoder_for(m, space, G=G, device=device, model_sha256=m.sha256)[0]
    except EncoderError:
        E = None  # the encoder-based rows then say why they did not run
    return m, G, m.D, load_prior(m, G), E


def add_cpu_seconds(rows: list, images: np.ndarray, n: int, pti_n: int) -> None:
    """Fill ``s_per_img_cpu``: each row's method and steps re-run on this machine's CPU on ``n`` faces."""
    cpu = torch.device("cpu")
    for r in rows:
        if "error" in r or "model_name" not in r:
            continue
        st = r["settings"]
        m, G, D, prior, E = _load(r["model_name"], r["space"], cpu, st["perceptual"])
        k = min(pti_n if r["method"] == "pti" else n, len(images))
        ims = _resized(images[:k], G.resolution)
        steps = r["steps"] or None  # as run on the GPU (PTI: its tuning steps; its pivot below)
        kw = dict(G=G, D=D, prior=prior, perceptual=st["perceptual"], seed=st["seed"], batch_size=st["batch_size"])
        if r["method"] != "optim" and E is not None:
            kw["encoder"] = E
        if "prior_weight" in st:
            kw["prior_weight"] = st["prior_weight"]
        if r["method"] == "pti":
            kw["pivot_steps"] = r.get("pivot_steps")
        _, secs = _timed_invert(r["method"], ims, m, r["space"], steps, device=cpu, **kw)
        r["s_per_img_cpu"], r["n_cpu"] = secs / k, k
        log.info("CPU %s %s %s: %.3f s/img", r["model"], r["space"], r["method"], secs / k)


def add_identity(folder, *, cpu_n: int = 0, pti_cpu_n: int = 2) -> list:
    """CPU pass after a GPU run: fill ``id_sim`` from the reconstructions saved by ``--save-recon``
    and, with ``cpu_n > 0``, the CPU seconds per image (:func:`add_cpu_seconds`)."""
    from faceedit.metrics.identity import IdentityEncoder
    from faceedit.metrics.reconstruction import reconstruction_metrics

    folder = Path(folder)
    res = json.loads((folder / "methods.json").read_text())
    enc = IdentityEncoder()
    targets_ = None
    for r in res["rows"]:
        if "recon_file" in r:
            z = np.load(folder / r["recon_file"])
            met = reconstruction_metrics(z["targets"], z["recon"], identity=enc)
            r["id_sim"] = float(np.nanmean(met["identity_similarity"]))
            r["id_per_face"] = [float(x) for x in met["identity_similarity"]]
            if targets_ is None or len(z["targets"]) > len(targets_):
                targets_ = z["targets"]
    if cpu_n > 0:
        if targets_ is None:
            raise PipelineError(f"{folder} holds no saved reconstructions (run the GPU pass with --save-recon)")
        add_cpu_seconds(res["rows"], targets_, cpu_n, pti_cpu_n)
    (folder / "methods.json").write_text(json.dumps(res, indent=2, default=str))
    (folder / "methods.md").write_text(table(res["rows"]) + "\n")
    return res["rows"]


def _paired(h: dict, o: dict) -> str:
    """`` (paired difference d +- 95% interval over N faces)`` when both rows hold per-face identities."""
    a, b = h.get("id_per_face"), o.get("id_per_face")
    if not a or not b or len(a) != len(b):
        return ""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return ""
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return f" (paired difference {d.mean():+.4f} +- {half:.4f}, 95% interval over {len(d)} faces)"


def targets(rows: list) -> list:
    """The issue's two targets per model, as sentences (hybrid vs optim identity and time; PTI editability)."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        ok_rows = [r for r in rows if r["model"] == model and "error" not in r]
        default = {r["method"]: r for r in ok_rows if "prior_weight" not in r.get("settings", {})}
        o, h = default.get("optim"), default.get("hybrid")
        pairs = [("defaults", o, h)]
        for pw in sorted({r.get("prior_weight") for r in ok_rows if r["method"] in ("optim", "hybrid")} - {None}):
            same = {r["method"]: r for r in ok_rows if r.get("prior_weight") == pw and r["method"] in ("optim", "hybrid")}
            if len(same) == 2 and (same["optim"], same["hybrid"]) != (o, h):
                pairs.append((f"both with prior weight {pw:g}", same["optim"], same["hybrid"]))
        for what, o, h in pairs:
            if not (o and h and o.get("id_sim") is not None and h.get("id_sim") is not None):
                continue
            frac = h["s_per_img"] / o["s_per_img"]
            cpu = ""
            if o.get("s_per_img_cpu") and h.get("s_per_img_cpu"):
                cpu = f" (CPU: {100 * h['s_per_img_cpu'] / o['s_per_img_cpu']:.1f}%)"
            ok = h["id_sim"] >= o["id_sim"] and frac < 0.2
            lines.append(f"{model}, {what}: hybrid ({h['steps']} steps) identity {h['id_sim']:.4f} vs optim "
                         f"({o['steps']} steps) {o['id_sim']:.4f}{_paired(h, o)} in {100 * frac:.1f}% of its "
                         f"time{cpu}: target {'met' if ok else 'NOT met'}")
    return lines


def table(rows: list) -> str:
    cols = ["model", "space", "method", "n", "steps", "prior_weight", "mse", "psnr", "ssim", "id_sim", "s_per_img",
            "s_per_img_cpu", "bytes_per_img"]
    f = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['space']} | {r['method']} | not run: {r['error']} |")
        else:
            lines.append("| " + " | ".join(f(r.get(c)) for c in cols) + " |")
    for r in rows:
        e = r.get("edit")
        if e and "error" not in e:
            lines.append(f"\nPTI editability ({r['model']} {r['space']}, {e['attribute']}): slope {e['pivot']:.4f} "
                         f"-> {e['pti']:.4f} probability per unit strength, ratio {e['ratio']:.2f} (target >= 0.7)")
        elif e:
            lines.append(f"\nPTI editability ({r['model']} {r['space']}): not measured ({e['error']})")
    verdicts = targets(rows)
    lines += ["", *verdicts] if verdicts else []
    return "\n".join(lines)


def run_table(runs, *, pack, n: int = 100, methods=METHODS, out, optim_steps: int = 500, hybrid_steps=None,
              pti_steps=None, pti_n: int = 100, perceptual: str = "disc", seed: int = 0, batch_size: int = 32,
              identity: bool = False, edit_attr: str | None = "smile", device=None, save_recon: bool = False,
              compare_prior: bool = False, append: bool = False, settings: dict | None = None) -> list:
    """Run every method on every ``(model, space)`` of ``runs``; write ``methods.json`` / ``methods.md`` to ``out``.

    Args:
        runs: ``(model, space)`` pairs, e.g. ``[("faces64", "w+"), ("faces64-wpp", "wpp")]``.
        pack: aligned test pack the faces come from (its first ``n``, evenly spaced).
        n: faces per run (PTI: ``pti_n``).
        methods: names from :data:`faceedit.inversion.methods.METHODS`.
        out: folder for ``methods.json`` and ``methods.md`` (and reconstructions with ``save_recon``).
        optim_steps, hybrid_steps, pti_steps: steps per method (None: the library's default).
        pti_n: faces for PTI (it tunes one face at a time).
        perceptual: ``"disc"`` or ``"none"``.
        seed: seed of every optimisation.
        batch_size: faces per batch.
        identity: add dlib identity similarity (needs dlib's instrument).
        edit_attr: direction for the PTI editability check (None: skip).
        device: torch device or name (None: the best available).
        save_recon: keep targets and reconstructions in ``out`` for :func:`add_identity`.
        compare_prior: also run optim and hybrid with the other prior setting.
        append: add the rows to the ``methods.json`` already in ``out``.
        settings: what to record as this run's settings (the command's options).

    Returns:
        Every row of the table (the earlier ones first with ``append``).

    Raises:
        PipelineError: ``methods`` is empty or names an unknown method.
    """
    methods = tuple(methods)
    bad = [x for x in methods if x not in METHODS]
    if bad or not methods:
        raise PipelineError(f"methods must be a non-empty list of {', '.join(METHODS)}; got {', '.join(methods)!r}")
    dev = resolve_device(device)
    enc = None
    if identity:
        from faceedit.metrics.identity import IdentityEncoder

        enc = IdentityEncoder()
    images = load_faces(pack, n)["images"]
    rows = []
    for model, space in runs:
        rows += bench(model, space, images, optim_steps=optim_steps, hybrid_steps=hybrid_steps,
                      pti_steps=pti_steps, pti_n=pti_n, perceptual=perceptual, seed=seed,
                      batch_size=batch_size, identity=enc, edit_attr=edit_attr or None, device=dev,
                      save_recon=out if save_recon else None, methods=methods,
                      compare_prior=compare_prior)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_meta = [settings or {}]
    if append and (out / "methods.json").is_file():
        old = json.loads((out / "methods.json").read_text())
        rows, runs_meta = old["rows"] + rows, old.get("runs", [old.get("settings")]) + runs_meta
    (out / "methods.json").write_text(json.dumps({"rows": rows, "runs": runs_meta}, indent=2, default=str))
    (out / "methods.md").write_text(table(rows) + "\n")
    return rows
