"""How good the models and the instruments are (``faceedit bench generator``, ``scorers``,
``identity-calibration``).

* ``generator``: a generator against the real faces, in the attribute network's
  features: KID-attr with a bootstrap interval, FD-attr, precision/recall-attr (means over
  disjoint draws of the generated faces, with intervals; recall differences between the models
  of one run paired by test face), each also for real-train vs real-test (the floor a perfect generator would reach);
  attribute rates of generated vs real faces; PPL and linear separability; a contact
  sheet of generated faces beside their nearest train faces.
* ``scorers``: the attribute network's test-split card (per-attribute AUC, gender
  AUC, age MAE, per race / gender / age bucket) and the landmark scores' agreement
  (geometric smile vs CelebA ``Smiling`` AUC, 68-point yaw vs MTCNN yaw correlation).
* ``identity-calibration``: the identity calibration shipped beside the scorers.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from faceedit.core.errors import PipelineError

from .report import _jsonable, bar_chart, file_sha256, format_table, provenance, write_outputs

log = logging.getLogger(__name__)

KEY_ATTRIBUTES = ("Smiling", "Male", "Young", "Eyeglasses", "Wearing_Hat", "Blond_Hair", "Black_Hair", "Bald",
                  "Mustache", "No_Beard", "Heavy_Makeup", "Wearing_Lipstick")


# --------------------------------------------------------------------------------------------- generator


def _gen_images(G, n: int, *, seed: int = 0, trunc: float = 1.0, batch: int = 128, noise_mode: str = "const"):
    """``(uint8 images [n, R, R, 3], z [n, ...], w [n, num_ws, w_dim])`` for seeds ``seed..seed+n-1``-style sampling."""
    import torch

    from faceedit.core.images import tensor_to_uint8

    dev = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    imgs, zs, ws_all = [], [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            b = min(batch, n - i)
            z = torch.randn((b, *G.z_shape), generator=gen).to(dev)
            ws = G.mapping(z, truncation_psi=trunc)
            imgs.append(tensor_to_uint8(G.synthesis(ws, noise_mode=noise_mode)))
            zs.append(z.float().cpu().numpy())
            ws_all.append(ws.float().cpu().numpy())
    return np.concatenate(imgs), np.concatenate(zs), np.concatenate(ws_all)


def load_image_folder(folder, limit: int | None = None) -> np.ndarray:
    """All images of a folder (sorted by name; PNG/JPEG/WebP/BMP) as uint8 ``[N, S, S, 3]``, resized to the
    first image's size when they differ."""
    import cv2

    from faceedit.core.images import load_image

    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts)
    if limit:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images (png/jpg/webp/bmp) in {folder}")
    out = []
    for f in files:
        a = load_image(f)
        if out and a.shape != out[0].shape:
            a = cv2.resize(a, (out[0].shape[1], out[0].shape[0]), interpolation=cv2.INTER_AREA)
        out.append(a)
    if out[0].shape[0] != out[0].shape[1]:
        raise PipelineError(f"images in {folder} are {out[0].shape[1]}x{out[0].shape[0]}; aligned square faces expected")
    return np.stack(out)


def _pairs_sheet(gen, train, idx, cols: int = 8) -> np.ndarray:
    """Generated faces (top of each pair) above their nearest train faces."""
    from faceedit.core.images import make_grid

    tiles = []
    for r in range(0, len(gen), cols):
        g = gen[r:r + cols]
        t = train[idx[r:r + cols]]
        pad = cols - len(g)
        if pad:
            blank = np.full((pad, *g.shape[1:]), 255, np.uint8)
            g, t = np.concatenate([g, blank]), np.concatenate([t, blank])
        tiles += [g, t]
    return make_grid(np.concatenate(tiles), cols=cols)


def bench_generator(models, *, test_pack, train_pack, n: int | None = None, seed: int = 0, trunc: float = 1.0,
                    ppl_samples: int = 1000, ls_samples: int = 4000, max_train: int = 10000, device=None,
                    scorer=None, out=None, progress=None, images_dirs=None) -> dict:
    """Measure generators against the real test faces (see the module docstring).

    Args:
        models: registry names or checkpoint paths.
        test_pack, train_pack: aligned packs (``faceedit.core.pack``); features of the
            generated faces are compared with the TEST faces; train faces give the floor
            (train vs test) and the nearest-neighbour sheet.
        n: generated faces per model (default: as many as test faces, for equal sample sizes).
        ppl_samples: PPL pairs per space (0 = skip).
        ls_samples: generated faces for linear separability (0 = skip).
        max_train: train faces used (a seeded random subset; the nearest-neighbour search and
            the floor use these).
        scorer: an :class:`AttributeScorer` (default: the shipped one).
        images_dirs: folders of images (aligned faces, e.g. from another generator) measured
            like a model's samples (no PPL or separability: there is no latent).
    Returns:
        ``{"rows", "attribute_rates", "provenance", ...}``; also written to ``out`` when given.
    """
    import torch

    from faceedit.checkpoints.registry import load_model
    from faceedit.core.device import resolve_device
    from faceedit.core.pack import Pack
    from faceedit.metrics import distribution as D
    from faceedit.metrics.attributes import AttributeScorer

    dev = resolve_device(device or "auto")
    scorer = scorer or AttributeScorer.load(device=dev)
    say = progress or (lambda msg: log.info(msg))
    test, train = Pack(test_pack), Pack(train_pack)
    say(f"decoding {len(test)} test and {len(train)} train faces")
    rng = np.random.default_rng(seed)
    test_imgs = test.images()
    train_imgs = train.images(np.sort(rng.choice(len(train), min(len(train), max_train), replace=False)))
    n = int(n or len(test_imgs))
    tr_sel = rng.choice(len(train_imgs), min(len(train_imgs), max(n, len(test_imgs))), replace=False)
    say("scoring real faces")
    sc_test, f_test = scorer.scores_and_features(test_imgs)
    sc_train, f_train_all = scorer.scores_and_features(train_imgs)
    f_train = f_train_all[tr_sel]
    rows = []
    neq = min(len(f_test), len(f_train))

    recalls = {}  # model -> precision_recall_draws result, for the paired recall differences

    def dist_rows(name, f_fake, kind):
        k = D.kid(f_fake, f_test, seed=seed)
        pr = D.precision_recall_draws(f_test, f_fake, seed=seed)
        recalls[name] = pr
        note = f"mean of {pr['draws']} disjoint draws of {pr['n']}"
        return [
            {"model": name, "compared": kind, "metric": "KID-attr", "value": k["kid"], "ci_low": k["ci_low"],
             "ci_high": k["ci_high"], "n": k["n"]},
            {"model": name, "compared": kind, "metric": "FD-attr", "value": D.frechet_distance(f_fake, f_test),
             "n": min(len(f_fake), len(f_test))},
            {"model": name, "compared": kind, "metric": "precision-attr", "value": pr["precision"],
             "ci_low": pr["precision_ci"][0], "ci_high": pr["precision_ci"][1], "n": pr["n"],
             "note": note + "; interval given the test set"},
            {"model": name, "compared": kind, "metric": "recall-attr", "value": pr["recall"],
             "ci_low": pr["recall_ci"][0], "ci_high": pr["recall_ci"][1], "n": pr["n"], "note": note},
        ]

    rows += dist_rows("real-train", f_train[:neq], "vs real test (floor)")
    from faceedit.metrics import fid as fidm

    use_fid = fidm.inception_available()
    if use_fid:
        say("Inception weights present: real FID/KID too")
        inc_test = fidm.inception_features(test_imgs, device=dev)

        def fid_rows(name, imgs, kind):
            f = fidm.inception_features(imgs, device=dev)
            k = D.kid(f, inc_test, seed=seed)
            return [{"model": name, "compared": kind, "metric": "FID (Inception)", "value": D.frechet_distance(f, inc_test),
                     "n": min(len(f), len(inc_test))},
                    {"model": name, "compared": kind, "metric": "KID (Inception)", "value": k["kid"],
                     "ci_low": k["ci_low"], "ci_high": k["ci_high"], "n": k["n"]}]

        rows += fid_rows("real-train", train_imgs[tr_sel][:neq], "vs real test (floor)")
    rates = {"real test (labels: CelebA attrs on CelebA faces)": {}, "real test (scorer)": {}, "real train (scorer)": {}}
    from faceedit.metrics.attributes import CELEBA_ATTRIBUTES, celeba_label_matrix

    lab = celeba_label_matrix(test.labels, len(test))
    for a in KEY_ATTRIBUTES:
        j = CELEBA_ATTRIBUTES.index(a)
        known = lab[:, j] != 0
        rates["real test (labels: CelebA attrs on CelebA faces)"][a] = float((lab[known, j] == 1).mean()) if known.any() else float("nan")
        rates["real test (scorer)"][a] = float((sc_test[a] > 0.5).mean())
        rates["real train (scorer)"][a] = float((sc_train[a] > 0.5).mean())
    from faceedit.metrics.attributes import age_targets, gender_targets

    g_lab, a_lab = gender_targets(test.labels, lab), age_targets(test.labels, len(test))
    rates["real test (labels: CelebA attrs on CelebA faces)"]["female"] = float(np.nanmean(g_lab)) if np.isfinite(g_lab).any() else float("nan")
    rates["real test (labels: CelebA attrs on CelebA faces)"]["mean_age"] = float(np.nanmean(a_lab)) if np.isfinite(a_lab).any() else float("nan")
    for key, sc in (("real test (scorer)", sc_test), ("real train (scorer)", sc_train)):
        rates[key]["female"] = float((sc["female"] > 0.5).mean())
        rates[key]["mean_age"] = float(sc["age"].mean())
    model_hashes = {"attrnet": scorer.sha256}
    images, extra = {}, {}
    sheet_names = set()
    sources = [("model", m) for m in models] + [("images", d) for d in (images_dirs or [])]
    for kind, m in sources:
        if kind == "model":
            say(f"loading {m}")
            info = load_model(m, device=dev)
            G, short = info.G.eval(), info.name
            name = info.model_id
            model_hashes[name] = info.sha256
            say(f"{name}: generating {n} faces")
            gen_imgs, zs, ws = _gen_images(G, n, seed=seed, trunc=trunc)
        else:
            G, short = None, Path(m).name
            gen_imgs = load_image_folder(m, limit=n)
            name = f"images:{Path(m).name}"
            model_hashes[name] = file_sha256(m)
            say(f"{name}: {len(gen_imgs)} images")
        if short in sheet_names:  # two models of one name (a retrained one beside the shipped one): both sheets
            short = f"{short}_{name.rsplit('@', 1)[-1] if '@' in name else len(sheet_names)}"
        sheet_names.add(short)
        if gen_imgs.shape[1] != 64:
            import torch.nn.functional as F

            t = torch.from_numpy(gen_imgs).permute(0, 3, 1, 2).float()
            gen_imgs = F.interpolate(t, size=(64, 64), mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        sc_gen, f_gen = scorer.scores_and_features(gen_imgs)
        rows += dist_rows(name, f_gen, "vs real test")
        if use_fid:
            rows += fid_rows(name, gen_imgs, "vs real test")
        r = {a: float((sc_gen[a] > 0.5).mean()) for a in KEY_ATTRIBUTES}
        r.update(female=float((sc_gen["female"] > 0.5).mean()), mean_age=float(sc_gen["age"].mean()))
        rates[name] = r
        # memorisation check: nearest train face in the attribute features
        nn_gen, d_gen = D.nearest_neighbours(f_gen, f_train_all)
        _, d_test = D.nearest_neighbours(f_test, f_train_all)
        rows.append({"model": name, "compared": "nearest train face", "metric": "median NN distance (attr)",
                     "value": float(np.median(d_gen)), "n": len(d_gen),
                     "note": f"real test faces: {np.median(d_test):.4g}"})
        rows.append({"model": name, "compared": "nearest train face", "metric": "share closer than 1st pct of test",
                     "value": float((d_gen < np.quantile(d_test, 0.01)).mean()), "n": len(d_gen),
                     "note": "~0.01 expected without copying"})
        order = np.argsort(d_gen)[:16]  # the 16 generated faces closest to a train face: the suspects
        images[f"nearest_{short}"] = _pairs_sheet(gen_imgs[order], train_imgs, nn_gen[order])
        from faceedit.core.images import make_grid

        images[f"samples_{short}"] = make_grid(gen_imgs[:64], cols=8)
        if ppl_samples and G is not None:
            from faceedit.metrics.ppl import perceptual_path_length

            for space in ("z", "w"):
                for sampling in ("full", "end"):
                    say(f"{name}: PPL {space} {sampling}")
                    res = perceptual_path_length(G, space=space, sampling=sampling, num_samples=ppl_samples,
                                                 distance=_ppl_distance(scorer), seed=seed, device=dev)
                    rows.append({"model": name, "compared": "path", "metric": res["name"], "value": res["ppl"],
                                 "n": res["num_samples"]})
        if ls_samples and G is not None:
            from faceedit.metrics.separability import linear_separability

            say(f"{name}: linear separability on {ls_samples} faces")
            li, lz, lw = _gen_images(G, ls_samples, seed=seed + 1, trunc=1.0)
            ls_sc = scorer.scores(li)
            attrs = [a for a in KEY_ATTRIBUTES] + ["female"]
            for space, lat in (("z", lz.reshape(len(lz), -1)), ("w", lw[:, 0] if G.mapping_kind == "mlp" else
                                                                  lw.reshape(len(lw), -1))):
                res = linear_separability(lat, ls_sc, attributes=attrs, seed=seed)
                rows.append({"model": name, "compared": "latent", "metric": f"linear separability {space} (attr)",
                             "value": res["separability"], "n": res["n"],
                             "note": f"{len(res['per_attribute'])} attributes, skipped {','.join(res['skipped'])}"})
                extra.setdefault(name, {})[f"separability_{space}"] = res
        del G
    measured = [m for m in recalls if m != "real-train"]
    for i, a in enumerate(measured):
        for b in measured[i + 1:]:
            if recalls[a]["n"] != recalls[b]["n"]:
                continue  # measured against different subsets of the test faces: not paired
            d = D.paired_recall_difference(recalls[a], recalls[b])
            rows.append({"model": f"{b} - {a}", "compared": "paired by test face", "metric": "recall-attr difference",
                         "value": d["difference"], "ci_low": d["ci"][0], "ci_high": d["ci"][1], "n": d["n"],
                         "note": f"draws {d['draws'][0]} and {d['draws'][1]}"})
    labels = list(KEY_ATTRIBUTES) + ["female"]
    chart = {k: [v.get(a, float("nan")) for a in labels] for k, v in rates.items() if k != "real train (scorer)"}
    images["attribute_rates"] = bar_chart(chart, labels)
    result = {"rows": rows, "attribute_rates": rates, "details": extra,
              "settings": {"n": n, "seed": seed, "trunc": trunc, "ppl_samples": ppl_samples, "ls_samples": ls_samples,
                           "train_faces_used": int(len(train_imgs)), "test_pack": str(test_pack), "train_pack": str(train_pack),
                           "feature_space": "attribute network pooled features (KID-attr, FD-attr: not FID/KID)",
                           "inception": "FID/KID rows present" if use_fid else "Inception weights absent: no FID/KID rows",
                           "note": "rates are shares with P > 0.5; mean_age of real test (labels) covers UTKFace faces only"},
              "provenance": provenance(model_hashes, test_pack_sha256=file_sha256(test_pack),
                                       train_pack_sha256=file_sha256(train_pack))}
    if out is not None:
        rate_rows = [{"set": k, **v} for k, v in rates.items()]
        write_outputs(out, "generator", rows, result, images=images,
                      columns=["model", "compared", "metric", "value", "ci_low", "ci_high", "n", "note"],
                      title="faceedit bench generator")
        from faceedit.core.files import atomic_write_text

        atomic_write_text(Path(out) / "generator_attribute_rates.md", format_table(rate_rows) + "\n")
    result["rate_rows"] = [{"set": k, **v} for k, v in rates.items()]
    return result


def _ppl_distance(scorer):
    """LPIPS when its backbone is present, else the scorer's features (named)."""
    from faceedit.metrics.reconstruction import lpips_available

    if lpips_available("vgg"):
        return "lpips"

    def d(x, y):
        return (scorer.net.features(x) - scorer.net.features(y)).pow(2).sum(dim=1)

    d.name = "attr"
    return d


# --------------------------------------------------------------------------------------------- scorers card


def bench_scorers(test_pack, *, weights=None, geometry: int = 400, seed: int = 0, device="cpu", out=None,
                  card=None, attributes: bool = True, progress=None) -> dict:
    """The attribute network's test-split card and the landmark scores' agreement.

    Args:
        test_pack: the aligned TEST pack.
        weights: attribute-network weights (default: the shipped ones).
        geometry: how many test faces get landmark scores (0 = skip; ~0.1-0.8 s each on a CPU).
        card: a card JSON to update in place (its ``test`` entry) -- normally the shipped
            ``attrnet.json``; written atomically.
        attributes: score with the attribute network (False: landmark geometry only).
    """
    from faceedit.core.pack import Pack
    from faceedit.metrics.attributes import CELEBA_ATTRIBUTES, AttributeScorer, celeba_label_matrix, evaluate_scores

    say = progress or (lambda msg: log.info(msg))
    pack = Pack(test_pack)
    imgs = pack.images()
    rows, ev, sc, scores, per_img, single = [], None, None, None, None, None
    if attributes:
        sc = AttributeScorer.load(weights, device=device)
        say(f"scoring {len(imgs)} test faces")
        t = time.time()
        scores = sc.scores(imgs)
        per_img = (time.time() - t) / max(1, len(imgs))
        ev = evaluate_scores(scores, pack.labels)
        t = time.time()
        sc.scores(imgs[:1])
        single = time.time() - t
        rows = [{"output": a, "metric": "AUC", "value": v["auc"], "positives": v["positives"],
                 "negatives": v["negatives"]} for a, v in ev["attributes"].items()]
        rows.append({"output": "mean of 40 attributes", "metric": "AUC", "value": ev["mean_auc"]})
        rows.append({"output": "female", "metric": "AUC", "value": ev["gender"]["auc"], "positives": ev["gender"]["n"]})
        rows.append({"output": "age", "metric": "MAE (years)", "value": ev["age"]["mae"], "positives": ev["age"]["n"]})
        for g, v in ev["groups"].items():
            rows.append({"output": f"age [{g}]", "metric": "MAE (years)", "value": v["age_mae"], "positives": v["n"]})
            if not g.startswith("gender="):  # one class inside a gender group: no AUC
                rows.append({"output": f"female [{g}]", "metric": "AUC", "value": v["gender_auc"], "positives": v["n"]})
    geo = None
    if geometry:
        from faceedit.metrics.attributes import _auc
        from faceedit.metrics.geometry import crop_geometry

        lab = celeba_label_matrix(pack.labels, len(pack))
        smile_lab = lab[:, CELEBA_ATTRIBUTES.index("Smiling")]
        mouth_lab = lab[:, CELEBA_ATTRIBUTES.index("Mouth_Slightly_Open")]
        rng = np.random.default_rng(seed)
        celeba = np.flatnonzero(smile_lab != 0)
        other = np.flatnonzero(smile_lab == 0)
        k1 = min(len(celeba), (geometry + 1) // 2 if len(other) else geometry)
        pick = np.concatenate([rng.choice(celeba, k1, replace=False),
                               rng.choice(other, min(len(other), geometry - k1), replace=False)]).astype(int)
        say(f"landmark scores on {len(pick)} test faces")
        t = time.time()
        gs = [crop_geometry(imgs[i]) for i in pick]
        geo_s = (time.time() - t) / max(1, len(pick))
        ok = np.array([g.ok for g in gs])
        val = lambda k: np.array([getattr(g, k) for g in gs], np.float64)  # noqa: E731
        res = {"faces": int(len(pick)), "landmarks_ok": float(ok.mean()), "seconds_per_face": geo_s,
               "failures": sorted({g.reason for g in gs if not g.ok})[:10]}
        ys = smile_lab[pick]
        m = ok & (ys != 0)
        for k in ("smile", "corner_lift", "mouth_width", "mouth_open"):
            res[f"auc_{k}_vs_Smiling"] = _auc(ys[m] == 1, val(k)[m])
        ym = mouth_lab[pick]
        mm = ok & (ym != 0)
        res["auc_mouth_open_vs_Mouth_Slightly_Open"] = _auc(ym[mm] == 1, val("mouth_open")[mm])
        if scores is not None:
            res["auc_classifier_vs_Smiling_same_faces"] = _auc(ys[m] == 1, scores["Smiling"][pick][m])
        yaw, yaw5 = val("yaw"), val("yaw5")
        both = np.isfinite(yaw) & np.isfinite(yaw5)
        res["yaw_pairs"] = int(both.sum())
        res["yaw_vs_yaw5_pearson"] = float(np.corrcoef(yaw[both], yaw5[both])[0, 1]) if both.sum() > 2 else float("nan")
        from scipy.stats import spearmanr

        res["yaw_vs_yaw5_spearman"] = float(spearmanr(yaw[both], yaw5[both]).statistic) if both.sum() > 2 else float("nan")
        res["yaw_abs_diff_median_deg"] = float(np.median(np.abs(yaw[both] - yaw5[both]))) if both.any() else float("nan")
        geo = res
        rows += [{"output": "geometry", "metric": k, "value": v} for k, v in res.items()
                 if isinstance(v, (int, float))]
    result = {"test": None if ev is None else {
                  **ev, "seconds_per_image_batched": per_img, "seconds_single_image": single,
                  "pack": Path(test_pack).name, "pack_sha256": file_sha256(test_pack),
                  "note": "test split by image, not by person (see datasets/README.md)"},
              "geometry": geo, "provenance": provenance({"attrnet": sc.sha256} if sc is not None else {},
                                                        test_pack_sha256=file_sha256(test_pack))}
    if out is not None:
        write_outputs(out, "scorers", rows, result, columns=["output", "metric", "value", "positives", "negatives"],
                      title="faceedit bench scorers (test split)")
    if card is not None:
        from faceedit.core.files import atomic_write_text

        cp = Path(card)
        c = json.loads(cp.read_text()) if cp.is_file() else {}
        if result["test"] is not None:
            c["test"] = _jsonable(result["test"])
        c["geometry"] = _jsonable(geo)
        c["test_provenance"] = _jsonable(result["provenance"])
        atomic_write_text(cp, json.dumps(c, indent=2) + "\n")
    result["rows"] = rows
    return result


def identity_calibration(test_pack, out_file, *, n_pairs: int = 5000, max_faces: int = 1500, seed: int = 0) -> dict:
    """Measure and write the identity calibration (``faceedit.metrics.identity.calibrate``) on test faces."""
    from faceedit.core.files import atomic_write_text
    from faceedit.core.pack import Pack
    from faceedit.metrics.identity import calibrate

    pack = Pack(test_pack)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(pack), min(len(pack), max_faces), replace=False))
    cal = calibrate(pack.images(idx), n_pairs=n_pairs, seed=seed, source=f"{Path(test_pack).name} "
                    f"sha256 {file_sha256(test_pack)[:16]}, {len(idx)} faces")
    cal["provenance"] = provenance()
    atomic_write_text(out_file, json.dumps(_jsonable(cal), indent=1) + "\n")
    return cal


__all__ = ["KEY_ATTRIBUTES", "bench_generator", "bench_scorers", "identity_calibration", "load_image_folder"]
