"""Alignment benchmarks and quality measurements (CPU; dlib and facenet-pytorch needed).

The parts, each printing a short table last and writing JSON (and PNGs) under --out:

  speed      photos aligned per second for a 1024 px FFHQ crop from a ~2 MP photo, per
             detector, on the reference and the fast path (align(path=...)) side by side
             (wall and CPU, with and without reading the photo; the breakdown detect /
             landmarks / warp), the decode and model-load costs, and on both paths the faces
             found on the in-the-wild photos, the crops' PSNR, the quad agreement and the eye
             re-detection (the figures of `quads` and `redetect`), face for face.
  photos     faces found per detector on ../shared/datasets/photos against the counts a
             person made (tests/data/photo_face_counts.json), and how every photo ends:
             aligned, a clear FaceNotFoundError, or an unexpected exception.
  redetect   on EVERY CelebA and UTKFace TRAIN face: align (faces64 framing as the data set,
             or --recipe ffhq), re-find the 68 landmarks on the crop from the template face
             box, compare the eye centres with the template; percentiles per source and a
             contact sheet of the worst. Resumable (one JSONL line per face).
  recon-kinds the shipped encoder's reconstructions of TEST photos aligned with dlib68
             (averaged) and dlib68-single (one pass, as its data set was cut), paired.
  quads      68-point vs MTCNN quads of the same faces (centre offset / quad side, side
             ratio) on the TEST split, a TRAIN sample and the in-the-wild photos, for
             MTCNN's raw points, the refined / mirrored / calibrated ones and QuadNet's,
             against dlib68 (averaged, align's default) and dlib68-single (one pass);
             --fit fits the MTCNN calibration on the TRAIN faces.

Examples:
  OMP_NUM_THREADS=1 python bench/scripts/alignment.py speed --workers 2 --out out/speed22b
  OMP_NUM_THREADS=1 python bench/scripts/alignment.py photos --detectors dlib,mtcnn,dlib-cnn --out out/photos
  OMP_NUM_THREADS=1 python bench/scripts/alignment.py redetect --recipe ffhq --workers 2 --out out/redetect_ffhq
  OMP_NUM_THREADS=1 python bench/scripts/alignment.py quads --scale 1.0 --workers 2 --out out/quads_qn
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FACEEDIT_SHARED", REPO.parent / "shared"))


def _table(rows, header):
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w[i]) for i, v in enumerate(r))  # noqa: E731
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def _write_json(out: Path, name: str, obj):
    from faceedit.core.files import atomic_write_text

    atomic_write_text(out / name, json.dumps(obj, indent=1))


@click.group()
def main():
    """Alignment benchmarks (see the module docstring)."""


# ----------------------------------------------------------------------------------------------
def _cpu_wall(fn):
    """``(result, wall s, CPU s)`` of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - w0, time.process_time() - c0


def _stage_seconds(img, det: str, recipe, upsample, coarse: bool, path: str) -> dict:
    """CPU seconds of each step ``align_photo`` takes for every face of ``img``: detect, landmarks, warp
    (and, for the dlib detectors, one predictor pass, the dlib68-single baseline of the averaged points)."""
    from faceedit.alignment import align_landmarks, calibrate_mtcnn5, detect_faces, landmarks68, landmarks68_averaged
    from faceedit.alignment import mtcnn5_refined
    from faceedit.alignment.quadnet import quadnet_points

    c = time.process_time
    a = c()
    d = detect_faces(img, det, upsample, coarse=coarse, path=path)
    b = c()
    lms = [quadnet_points(img, calibrate_mtcnn5(mtcnn5_refined(img, x.box))) if det == "mtcnn"
           else landmarks68_averaged(img, x.box) for x in d]
    e = c()
    for lm in lms:
        align_landmarks(img, lm, recipe, path=path)
    f = c()
    out = {"detect": b - a, "landmarks": e - b, "warp": f - e}
    if det != "mtcnn":
        for x in d:
            landmarks68(img, x.box)
        out["landmarks_one_pass"] = c() - f
    return out


def _decode_options(photo: Path, repeats: int) -> dict:
    """CPU ms of the ways to get pixels for detection out of a JPEG: the full decode ``load_image`` does,
    PIL's DCT-domain ``draft`` at 1/2, 1/4, 1/8, and the fast path's 2x reduction of the decoded photo."""
    import io

    from PIL import Image

    from faceedit.alignment.resample import shrink
    from faceedit.core.images import load_image

    data = photo.read_bytes()

    def draft(k):
        with Image.open(io.BytesIO(data)) as im:
            if k > 1:
                im.draft("RGB", (im.width // k, im.height // k))
            return np.asarray(im.convert("RGB"))

    img = load_image(photo)
    fns = {"load_image (full decode)": lambda: load_image(photo), "PIL decode, full": lambda: draft(1),
           "PIL draft 1/2": lambda: draft(2), "PIL draft 1/4": lambda: draft(4), "PIL draft 1/8": lambda: draft(8),
           "shrink the decoded photo 1/2 (fast path)": lambda: shrink(img, img.shape[1] // 2, img.shape[0] // 2)}
    return {k: float(np.median([_cpu_wall(f)[2] for _ in range(repeats)]) * 1e3) for k, f in fns.items()}


def _model_loads() -> dict:
    """Seconds to load each model again in this process (the OS file cache is warm; a cold disk adds to it)."""
    from faceedit.alignment import models
    from faceedit.alignment.quadnet import load_quadnet, quadnet_on

    out = {}
    for name, cache, fn in (("dlib HOG detector", models.hog_detector, models.hog_detector),
                            ("dlib 68-point predictor", models.shape_predictor68, models.shape_predictor68),
                            ("MTCNN", models._mtcnn, models.mtcnn), ("QuadNet", load_quadnet, lambda: quadnet_on("cpu"))):
        cache.cache_clear()
        if name == "QuadNet":
            quadnet_on.cache_clear()
        out[name] = _cpu_wall(fn)[1]
    return out


def _quad_pair(img, path: str) -> dict:
    """The largest dlib face's averaged 68 points and the MTCNN + QuadNet points of the same face, as
    ``align`` finds them on ``path`` (the 'mtcnn5 (QuadNet) vs dlib68' row of ``quads``)."""
    from faceedit.alignment import calibrate_mtcnn5, detect_faces, landmarks68_averaged, mtcnn5_refined
    from faceedit.alignment.quadnet import quadnet_points

    d = detect_faces(img, "dlib", path=path)
    if not d:
        return {"ok": False, "reason": "dlib: no face"}
    d = max(d, key=lambda x: x.size)
    m = detect_faces(img, "mtcnn", path=path)
    if not m:
        return {"ok": False, "reason": "mtcnn: no face"}
    m = min(m, key=lambda x: np.hypot(*np.subtract(x.center, d.center)))
    return {"ok": True, "lm68_avg": np.round(landmarks68_averaged(img, d.box), 3).tolist(),
            "quadnet": np.round(quadnet_points(img, calibrate_mtcnn5(mtcnn5_refined(img, m.box))), 3).tolist()}


def _paths_job(job) -> dict:
    """One face's records on both paths: ``("quads", name, file)`` or ``("redetect", name, file, recipe)``."""
    from faceedit.alignment import ALIGN_PATHS
    from faceedit.core.images import load_image

    kind, name, file = job[:3]
    out = {"kind": kind, "name": name}
    for p in ALIGN_PATHS:
        if kind == "redetect":
            out[p] = _redetect_one(file, job[3], False, p)
        else:
            try:
                out[p] = _quad_pair(load_image(file), p)
            except Exception as e:  # noqa: BLE001 -- an unreadable photo is a record, not the end of the run
                out[p] = {"ok": False, "reason": f"{type(e).__name__}: {e}"}
    return out


def _photo_faces(detector: str, path: str, recipe) -> dict:
    """``align_photo(face='all')`` on every in-the-wild photo: ``{photo: [face box centres and sizes]}``
    (``None`` for a photo that raised), and the CPU seconds of the aligning alone. The minimum face is
    faces64's (24 px), so the faces are those of the ``photos`` part whatever the crop size."""
    from faceedit.alignment import AlignmentError, align_photo
    from faceedit.core.images import ImageLoadError, load_image

    truth = json.loads((REPO / "tests/data/photo_face_counts.json").read_text())["counts"]
    found, cpu = {}, 0.0
    for name in sorted(truth):
        try:
            img = load_image(SHARED / "datasets/photos" / name)
        except ImageLoadError as e:
            found[name] = type(e).__name__
            continue
        try:
            rep, _, c = _cpu_wall(lambda: align_photo(img, recipe=recipe, detector=detector, name=name, min_face=24,
                                                      path=path))
            cpu += c
            found[name] = [[*d.center, d.size] for d in rep.detections]
        except AlignmentError as e:  # the error's kind, so that two paths failing differently are not "the same"
            found[name] = type(e).__name__
    return {"faces": found, "cpu_s": cpu}


def _crop_psnr(recipes) -> dict:
    """PSNR of the fast path's crops against the reference's, every dlib face of the in-the-wild
    photos, the same landmarks: ``{recipe label: [dB per face]}``."""
    from faceedit.alignment import align_landmarks, detect_faces, landmarks68_averaged
    from faceedit.core.images import ImageLoadError, load_image

    out = {label: [] for label, _ in recipes}
    for p in sorted((SHARED / "datasets" / "photos").iterdir()):
        try:
            img = load_image(p)
        except ImageLoadError:
            continue
        for d in detect_faces(img):
            lm = landmarks68_averaged(img, d.box)
            for label, recipe in recipes:
                a, b = (align_landmarks(img, lm, recipe, path=q).crop.astype(np.float64) for q in ("fast", "reference"))
                out[label].append(float(10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12))))
    return out


def _same_faces(a, b, tol: float = 0.1) -> bool:
    """Whether two lists of ``[cx, cy, size]`` are the same faces: equal counts, centres within
    ``tol`` of the size and sizes within ``tol``, matched in order (left to right); a photo that
    failed (its error's name) matches only the same error."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(np.hypot(x[0] - y[0], x[1] - y[1]) <= tol * x[2] and abs(y[2] / x[2] - 1) <= tol
                                    for x, y in zip(a, b))


def _accuracy(out: Path, size: int, train_per_source: int, test_per_source: int, seed: int, workers: int) -> tuple:
    """Faces found on the in-the-wild photos (and the CPU time to align them at ``size`` px), the
    crops' PSNR, quad agreement (all TEST faces and the photos) and eye re-detection (TRAIN faces,
    FFHQ recipe at 256 px) on both paths, face for face. Returns ``(summary, rows)``."""
    from faceedit.alignment import ALIGN_PATHS, FACES64, FFHQ
    from faceedit.alignment.ffhq import quad_difference, quads_agree

    summary, rows = {"photos": {}, "crop_psnr": {}, "quads": {}, "redetect": {}}, []
    for det in ("dlib", "mtcnn"):
        got = {p: _photo_faces(det, p, FFHQ.with_size(size)) for p in ALIGN_PATHS}
        ref, fast = got["reference"]["faces"], got["fast"]["faces"]
        same = sum(_same_faces(ref[k], fast[k]) for k in ref)
        n_ref, n_fast = (sum(len(v) for v in x.values() if isinstance(v, list)) for x in (ref, fast))
        summary["photos"][det] = {"photos": len(ref), "faces_reference": n_ref, "faces_fast": n_fast,
                                  "photos_same_faces": same, "differ": [k for k in ref if not _same_faces(ref[k], fast[k])],
                                  "cpu_s": {p: got[p]["cpu_s"] for p in ALIGN_PATHS}}
        rows.append([f"faces found, {det}", f"{len(ref)} photos", n_ref, n_fast, f"{same}/{len(ref)} photos the same",
                     f"{got['reference']['cpu_s']:.1f} s / {got['fast']['cpu_s']:.1f} s"])
    for label, v in _crop_psnr([(f"ffhq {size}", FFHQ.with_size(size)), ("ffhq 256", FFHQ.with_size(256)),
                                ("faces64", FACES64)]).items():
        v = np.array(v)
        summary["crop_psnr"][label] = {"faces": len(v), "min": float(v.min()), "p5": float(np.percentile(v, 5)),
                                       "median": float(np.median(v))}
        rows.append([f"crop PSNR fast vs reference, {label}", f"{len(v)} faces", "-", "-",
                     f"min {v.min():.1f} / p5 {np.percentile(v, 5):.1f} / median {np.median(v):.1f} dB", ""])
    rng = np.random.default_rng(seed)
    files = _split_files()
    recipe = FFHQ.with_size(256)
    jobs = [("quads", name, file) for (_, split), lst in sorted(files.items()) if split == "test"
            for name, file in lst[:test_per_source or None]]
    jobs += [("quads", f"photos/{p.name}", str(p)) for p in sorted((SHARED / "datasets" / "photos").iterdir())
             if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    for (_, split), lst in sorted(files.items()):
        if split == "train":
            pick = sorted(rng.choice(len(lst), min(train_per_source, len(lst)), replace=False))
            jobs += [("redetect", lst[i][0], lst[i][1], recipe) for i in pick]
    log_path = out / "paths.jsonl"
    done = {(r["kind"], r["name"]) for r in _read_jsonl(log_path)}
    left = [j for j in jobs if (j[0], j[1]) not in done]
    print(f"accuracy: {len(jobs)} faces, {len(left)} to go", file=sys.stderr, flush=True)
    with open(log_path, "a") as fh, _pool(workers) as pool:
        for k, rec in enumerate(pool.imap(_paths_job, left, chunksize=8) if pool else map(_paths_job, left)):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if (k + 1) % 500 == 0:
                print(f"{k + 1}/{len(left)}", file=sys.stderr, flush=True)
    want = {(j[0], j[1]) for j in jobs}
    recs = [r for r in _read_jsonl(log_path) if (r["kind"], r["name"]) in want]
    for group, sel in (("test", lambda n: not n.startswith("photos/")), ("wild", lambda n: n.startswith("photos/"))):
        rs = [r for r in recs if r["kind"] == "quads" and sel(r["name"]) and all(r[p]["ok"] for p in ALIGN_PATHS)]
        ok = {p: quads_agree([quad_difference(r[p]["lm68_avg"], r[p]["quadnet"]) for r in rs]) for p in ALIGN_PATHS}
        changed = int((ok["reference"] != ok["fast"]).sum())
        summary["quads"][group] = {"faces": len(rs), **{p: float(ok[p].mean()) for p in ALIGN_PATHS}, "verdicts_changed": changed}
        rows.append([f"quads agree, mtcnn5 vs dlib68 ({group})", f"{len(rs)} faces", f"{ok['reference'].mean():.1%}",
                     f"{ok['fast'].mean():.1%}", f"{changed} faces change verdict", ""])
    rs = [r for r in recs if r["kind"] == "redetect" and all(r[p]["ok"] for p in ALIGN_PATHS)]
    # as redetect: one template for all faces, the mean of their first-pass eyes
    template = {p: np.array([r[p]["own"] for r in rs]).mean(0) for p in ALIGN_PATHS}
    for src in ("celeba10k", "utkface", "all"):
        sub = [r for r in rs if src == "all" or r["name"].startswith(src + "/")]
        within = {}
        for p in ALIGN_PATHS:
            err = np.linalg.norm(np.array([r[p]["fixed"] for r in sub]) - template[p], axis=2).max(1) / recipe.size
            within[p] = err <= 0.02
        changed = int((within["reference"] != within["fast"]).sum())
        summary["redetect"][src] = {"faces": len(sub), **{p: float(within[p].mean()) for p in ALIGN_PATHS},
                                    "verdicts_changed": changed}
        rows.append([f"eyes re-found <= 2% ({src})", f"{len(sub)} TRAIN faces", f"{within['reference'].mean():.1%}",
                     f"{within['fast'].mean():.1%}", f"{changed} faces change verdict", ""])
    return summary, rows


@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--photo", default=str(SHARED / "datasets/photos/face_recognition__obama-1080p.jpg"), show_default=True,
              help="A ~2 MP photo.")
@click.option("--size", default=1024, show_default=True)
@click.option("--repeats", default=9, show_default=True)
@click.option("--detectors", default="dlib,mtcnn", show_default=True,
              help="Comma-separated, of dlib, mtcnn, dlib-cnn; dlib-full is dlib without the coarse first pass "
                   "(align(coarse=False)).")
@click.option("--upsample", type=int, default=None, help="dlib upsampling [default: automatic by photo size].")
@click.option("--accuracy/--no-accuracy", default=True, show_default=True,
              help="Also the faces found, quad agreement and eye re-detection on both paths.")
@click.option("--train-per-source", default=1000, show_default=True, help="Random TRAIN faces per source for eye "
                                                                           "re-detection.")
@click.option("--test-per-source", default=0, show_default=True, help="TEST faces per source for the quads (0 = all).")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True, help="Processes for the accuracy part (one thread each).")
def speed(out, photo, size, repeats, detectors, upsample, accuracy, train_per_source, test_per_source, seed, workers):
    """Photos per second for a SIZE px FFHQ crop of a ~2 MP photo, reference and fast paths side by side.

    One core: OpenCV's own thread pool is set to one thread too (OMP_NUM_THREADS does not reach it).
    Per detector and path (``align(path=...)``), the median over REPEATS of: reading the photo
    (``load_image``) and ``align`` (wall and CPU), and of each step align runs (CPU). The paths
    alternate within each repeat. Then the ways to decode a JPEG for detection, the model load
    times, and (``--accuracy``) on both paths: the faces found on the in-the-wild photos, the
    quad agreement of MTCNN + QuadNet with dlib68 on all TEST faces and the photos, and the eye
    re-detection on TRAIN faces (FFHQ recipe, 256 px), each face compared with itself
    (records in paths.jsonl: a killed run resumes).
    """
    import cv2

    from faceedit.alignment import ALIGN_PATHS, FFHQ, align
    from faceedit.core.images import load_image

    cv2.setNumThreads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    img = load_image(photo)
    recipe = FFHQ.with_size(size)
    load0 = os.getloadavg()
    paths = ALIGN_PATHS[::-1]  # the reference first in the table
    rows, res = [], {}
    for name in detectors.split(","):
        det, coarse = name.removesuffix("-full"), not name.endswith("-full")  # dlib-full: no coarse first pass
        align(img, recipe=recipe.with_size(64), detector=det, upsample=upsample)  # load models, warm caches
        t = {p: {"read_wall": [], "read_cpu": [], "align_wall": [], "align_cpu": [], "stages": []} for p in paths}
        n = 0
        for _ in range(repeats):
            for p in paths:
                photo_px, rw, rc = _cpu_wall(lambda: load_image(photo))
                faces, aw, ac = _cpu_wall(lambda: align(photo_px, recipe=recipe, detector=det, upsample=upsample,
                                                        coarse=coarse, path=p))
                n = len(faces)
                for k, v in (("read_wall", rw), ("read_cpu", rc), ("align_wall", aw), ("align_cpu", ac)):
                    t[p][k].append(v)
                t[p]["stages"].append(_stage_seconds(img, det, recipe, upsample, coarse, p))
        for p in paths:
            med = {k: float(np.median(v)) for k, v in t[p].items() if k != "stages"}
            both = float(np.median(np.add(t[p]["read_cpu"], t[p]["align_cpu"])))
            stages = {k: float(np.median([s[k] for s in t[p]["stages"]])) for k in t[p]["stages"][0]}
            res[f"{name}/{p}"] = {"faces": n, **med, "read_align_cpu": both, "photos_per_s_wall": 1 / med["align_wall"],
                                  "photos_per_s_cpu": 1 / med["align_cpu"], "read_align_photos_per_s_cpu": 1 / both,
                                  "stages_cpu_s": stages}
            rows.append([name, p, n, f"{1 / med['align_wall']:.2f}", f"{1 / med['align_cpu']:.2f}", f"{1 / both:.2f}",
                         f"{med['read_cpu'] * 1e3:.0f}", f"{stages['detect'] * 1e3:.0f}", f"{stages['landmarks'] * 1e3:.0f}",
                         f"{stages['landmarks_one_pass'] * 1e3:.0f}" if "landmarks_one_pass" in stages else "-",
                         f"{stages['warp'] * 1e3:.1f}"])
    decode = _decode_options(Path(photo), repeats)
    loads = _model_loads()
    load1 = os.getloadavg()
    h, w = img.shape[:2]
    meta = {"photo": str(photo), "photo_size": [w, h], "megapixels": w * h / 1e6, "size": size, "repeats": repeats,
            "cpu_count": os.cpu_count(), "load_avg_before": load0, "load_avg_after": load1, "results": res,
            "decode_ms": decode, "model_load_s": loads}
    acc_rows = []
    if accuracy:
        meta["accuracy"], acc_rows = _accuracy(out, size, train_per_source, test_per_source, seed, workers)
        meta["load_avg_end"] = os.getloadavg()
    _write_json(out, "speed.json", meta)
    print(f"photo {Path(photo).name} {w}x{h} ({w * h / 1e6:.2f} MP) -> {size} px FFHQ crop, upsample "
          f"{'auto' if upsample is None else upsample}, one thread (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, cv2 1), median of {repeats}, load avg {load0[0]:.1f} -> {load1[0]:.1f}")
    print("decode, CPU ms: " + "; ".join(f"{k} {v:.1f}" for k, v in decode.items()))
    print("model load, s (warm file cache): " + "; ".join(f"{k} {v:.2f}" for k, v in loads.items()))
    if acc_rows:
        print(_table(acc_rows, ["measure", "on", "reference", "fast", "face for face", "align CPU ref / fast"]))
    print(_table(rows, ["detector", "path", "faces", "photos/s wall", "photos/s cpu", "read+align /s cpu", "read ms",
                        "detect ms", "landmarks ms", "one pass ms", "warp ms"]))
    print("photos/s: align() on the decoded photo; read+align: load_image() and align(), CPU; stages CPU ms; "
          "landmarks: dlib68's 14 averaged passes or mtcnn5's refine, calibrate, QuadNet; one pass: dlib68-single")


# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--detectors", default="dlib,mtcnn,dlib-cnn", show_default=True,
              help="Comma-separated; dlib-full is dlib without the coarse first pass (align(coarse=False)).")
@click.option("--try-rotations", is_flag=True, help="Also run each detector with try_rotations=True.")
def photos(out, detectors, try_rotations):
    """Faces found per detector vs the human counts on the 95 photos; how each photo ends."""
    from faceedit.alignment import AlignmentError, FaceNotFoundError, align_photo
    from faceedit.core.images import ImageLoadError, load_image

    out = Path(out)
    truth = json.loads((REPO / "tests/data/photo_face_counts.json").read_text())["counts"]
    folder = SHARED / "datasets/photos"
    runs = [(d, False) for d in detectors.split(",")] + ([(d, True) for d in detectors.split(",")] if try_rotations else [])
    summary, rows, per_photo = {}, [], {}
    for det, rot in runs:
        key = det + (" +rot" if rot else "")
        st = dict(photos=0, human_faces=0, found=0, aligned=0, exact=0, over=0, under=0, clear_error=0,
                  exception=0, no_face_ok=0, no_face_photos=0, false_pos_in_no_face=0, seconds=0.0)
        for name in sorted(truth):
            n_true = truth[name]
            st["photos"] += 1
            st["human_faces"] += n_true
            st["no_face_photos"] += n_true == 0
            t0 = time.perf_counter()
            try:
                img = load_image(folder / name)
                rep = align_photo(img, detector=det.removesuffix("-full"), try_rotations=rot, name=name,
                                  coarse=not det.endswith("-full"))
                found, aligned, outcome = len(rep.detections), len(rep.faces), "aligned"
            except FaceNotFoundError as e:
                found = len(getattr(e, "detections", []) or [])
                aligned, outcome = 0, "FaceNotFoundError"
                st["clear_error"] += 1
                if "below the minimum" in str(e):
                    found = int(str(e).split("found ")[1].split(" ")[0])
            except (AlignmentError, ImageLoadError) as e:
                found, aligned, outcome = 0, 0, type(e).__name__
                st["clear_error"] += 1
            except Exception as e:  # noqa: BLE001 -- counting crashes is the point here
                found, aligned, outcome = 0, 0, f"EXCEPTION {type(e).__name__}: {e}"
                st["exception"] += 1
            st["seconds"] += time.perf_counter() - t0
            st["found"] += found
            st["aligned"] += aligned
            st["exact"] += found == n_true
            st["over"] += found > n_true
            st["under"] += found < n_true
            if n_true == 0:
                st["no_face_ok"] += outcome == "FaceNotFoundError"
                st["false_pos_in_no_face"] += found
            per_photo.setdefault(name, {"human": n_true})[key] = {"found": found, "aligned": aligned, "outcome": outcome}
            print(f"{key:14s} {name:60s} human {n_true} found {found} {outcome[:60]}", file=sys.stderr, flush=True)
        summary[key] = st
        rows.append([key, st["human_faces"], st["found"], st["aligned"], st["exact"], st["under"], st["over"],
                     f"{st['no_face_ok']}/{st['no_face_photos']}", st["clear_error"], st["exception"],
                     f"{st['seconds']:.0f}"])
    _write_json(out, "photos.json", {"summary": summary, "per_photo": per_photo})
    print(f"{len(truth)} photos, {sum(truth.values())} faces counted by a person")
    print(_table(rows, ["detector", "human", "found", "aligned", "exact", "under", "over", "no-face->error",
                        "clear errors", "exceptions", "s"]))


# ----------------------------------------------------------------------------------------------
def _pct(a) -> dict:
    a = np.asarray(a, np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": float(a.max()), "n": int(a.size)}


def _interleave(*lists):
    """Round-robin over lists (so a partial run covers every source)."""
    out = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def _read_jsonl(path: Path) -> list:
    """Records of a JSONL file; a torn last line (killed mid-write) is dropped."""
    recs = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return recs


def _eyes(lm) -> np.ndarray:
    from faceedit.alignment.landmarks import eye_mouth_points

    return np.stack(eye_mouth_points(lm)[:2])


def _redetect_one(path: str, recipe, with_hog: bool, align_path: str = "fast") -> dict:
    """Align a train photo (align()'s defaults, on ``align_path``), re-find the landmarks on the crop, return eye centres."""
    import cv2

    from faceedit.alignment import align, detect_faces, landmarks68_averaged
    from faceedit.alignment.ffhq import apply_matrix
    from faceedit.alignment.landmarks import landmarks68_on_crop
    from faceedit.core.images import load_image

    try:
        f = align(load_image(path), recipe=recipe, face="largest", path=align_path)[0]
    except Exception as e:  # noqa: BLE001 -- the data set build counts these the same way
        return {"ok": False, "reason": type(e).__name__}
    rec = {"ok": True, "own": apply_matrix(f.matrix, _eyes(f.landmarks)).round(3).tolist(),
           "fixed": _eyes(landmarks68_on_crop(f.crop, recipe.scale)).round(3).tolist()}
    if with_hog:  # the detector's box on the crop (grey margin of a quarter side), for comparison
        m = recipe.size // 4
        pad = cv2.copyMakeBorder(f.crop, m, m, m, m, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        d = detect_faces(pad, "dlib", upsample=0) or detect_faces(pad, "dlib", upsample=1)
        rec["hog"] = (_eyes(landmarks68_averaged(pad, max(d, key=lambda x: x.size).box) - m).round(3).tolist()
                      if d else None)
    return rec


def _redetect_job(job) -> dict:
    path, name, recipe, with_hog = job
    return {**_redetect_one(path, recipe, with_hog), "name": name}


def _pool(workers: int):
    """A pool of one-thread worker processes, or a null context (``None``) for one worker."""
    import contextlib
    import multiprocessing

    from faceedit.training.dataset import init_worker

    return multiprocessing.get_context("fork").Pool(workers, init_worker) if workers > 1 else contextlib.nullcontext()


@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for redetect.jsonl (appended per face: a killed run resumes), redetect.json, worst_eyes.png.")
@click.option("--limit", default=0, show_default=True, help="Faces per source (0 = every train face).")
@click.option("--check-size", default=256, show_default=True,
              help="Crop side used for re-detection (faces64 geometry; at 64 px the eyes are a few pixels).")
@click.option("--hog-every", default=10, show_default=True,
              help="Also re-detect with dlib's HOG box on every N-th face (0 = never), to compare with the template box.")
@click.option("--sheet", default=32, show_default=True, help="Worst faces on the contact sheet.")
@click.option("--recipe", "recipe_name", type=click.Choice(["faces64", "ffhq"]), default="faces64", show_default=True,
              help="Crop geometry: faces64 (0.6x the FFHQ quad, how the shipped data sets were cut) or ffhq (the "
                   "FFHQ recipe itself, 1.0x; the same errors in face units are 0.6x the fraction of its crop).")
@click.option("--workers", default=1, show_default=True, help="Processes (one thread each).")
def redetect(out, limit, check_size, hog_every, sheet, recipe_name, workers):
    """Eye centres re-found on the aligned crops of the train faces vs the template positions.

    Every CelebA and UTKFace TRAIN photo of the data set (training.dataset.list_sources) is
    aligned with align()'s defaults (dlib HOG, dlib68 landmarks, RECIPE geometry: faces64 as the
    data set, or the FFHQ recipe; here at CHECK_SIZE px), then the 68 points are found again on
    the crop from the recipe's template face box (alignment.landmarks.landmarks68_on_crop,
    averaged as align's dlib68, no detector). Error of a face =
    the worse eye's distance from its template position / crop side. Template: the mean eye
    position over all faces (one template for the data set); 'own' is where this face's own
    first-pass landmarks put its eyes.
    """
    from faceedit.alignment import FACES64, FFHQ
    from faceedit.training.dataset import list_sources

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {"faces64": FACES64, "ffhq": FFHQ}[recipe_name].with_size(check_size)
    train = list_sources(SHARED / "datasets")["train"]
    by_src = [[r for r in train if r["name"].startswith(s)] for s in ("celeba10k/", "utkface/")]
    if limit:
        by_src = [x[:limit] for x in by_src]
    todo = _interleave(*by_src)
    # the HOG comparison subset: every N-th face of each source
    hog_names = {r["name"] for src in by_src for r in src[::hog_every]} if hog_every else set()
    log_path = out / "redetect.jsonl"
    done = {r["name"] for r in _read_jsonl(log_path)}
    left = [r for r in todo if r["name"] not in done]
    print(f"{len(todo)} train faces, {len(done)} done earlier, {len(left)} to go", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    jobs = [(r["path"], r["name"], recipe, r["name"] in hog_names) for r in left]
    with open(log_path, "a") as fh, _pool(workers) as pool:
        for k, rec in enumerate(pool.imap(_redetect_job, jobs, chunksize=8) if pool else map(_redetect_job, jobs)):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if (k + 1) % 500 == 0:
                dt = time.perf_counter() - t0
                print(f"{k + 1}/{len(left)} {dt:.0f} s, {dt / (k + 1) * 1e3:.0f} ms/face, "
                      f"~{dt / (k + 1) * (len(left) - k - 1) / 60:.0f} min left", file=sys.stderr, flush=True)
    run_s = time.perf_counter() - t0
    recs = {r["name"]: r for r in _read_jsonl(log_path)}
    recs = [recs[r["name"]] for r in todo if r["name"] in recs]
    ok = [r for r in recs if r["ok"]]
    own = np.array([r["own"] for r in ok])
    template = own.mean(0)
    fixed = np.array([r["fixed"] for r in ok])
    err_tpl = np.linalg.norm(fixed - template, axis=2).max(1) / check_size
    err_own = np.linalg.norm(fixed - own, axis=2).max(1) / check_size
    src = np.array([r["name"].split("/")[0] for r in ok])
    err_first = np.linalg.norm(own - template, axis=2).max(1) / check_size  # the recipe's own placement
    tried = np.array(["hog" in r for r in ok])
    hog_i = [i for i, r in enumerate(ok) if r.get("hog") is not None]
    hog = np.zeros((len(ok), 2, 2))
    hog[hog_i] = np.array([ok[i]["hog"] for i in hog_i]).reshape(-1, 2, 2)
    found = np.zeros(len(ok), bool)
    found[hog_i] = True
    err_hog = np.linalg.norm(hog - template, axis=2).max(1) / check_size
    res, rows = {}, []
    for s in ("celeba10k", "utkface", "all"):
        sel = np.ones(len(ok), bool) if s == "all" else src == s
        n_all = sum(r["name"].startswith(s) for r in recs) if s != "all" else len(recs)
        err_src = np.linalg.norm(fixed[sel] - own[sel].mean(0), axis=2).max(1) / check_size
        h = sel & found
        res[s] = {"faces": n_all, "aligned": int(sel.sum()), "err_vs_template": _pct(err_tpl[sel]),
                  "within_2pct_template": float((err_tpl[sel] <= 0.02).mean()),
                  "err_vs_own": _pct(err_own[sel]), "within_2pct_own": float((err_own[sel] <= 0.02).mean()),
                  "first_pass_vs_template": _pct(err_first[sel]),
                  "first_pass_within_2pct_template": float((err_first[sel] <= 0.02).mean()),
                  "template_of_this_source_px": own[sel].mean(0).tolist(),
                  "within_2pct_template_of_this_source": float((err_src <= 0.02).mean()),
                  "hog_box_subset": {"tried": int((sel & tried).sum()), "hog_no_face_on_crop": int((sel & tried & ~found).sum()),
                                     "within_2pct_template_hog": float((err_hog[h] <= 0.02).mean()) if h.any() else None,
                                     "within_2pct_template_fixed_same_faces": float((err_tpl[h] <= 0.02).mean()) if h.any() else None}}
        hb = res[s]["hog_box_subset"]
        rows.append([s, n_all, int(sel.sum()), f"{res[s]['within_2pct_template'] * 100:.1f}%",
                     *(f"{res[s]['err_vs_template'][q] * 100:.2f}%" for q in ("p50", "p90", "p95", "p99", "max")),
                     f"{res[s]['within_2pct_own'] * 100:.1f}%", f"{res[s]['first_pass_within_2pct_template'] * 100:.1f}%",
                     (f"{hb['within_2pct_template_hog'] * 100:.1f}% vs {hb['within_2pct_template_fixed_same_faces'] * 100:.1f}% "
                      f"(n={int(h.sum())}, {hb['hog_no_face_on_crop']} no face)") if h.any() else "-"])
    # Contact sheet of the worst faces: template eyes (green rings), re-found eyes (red dots).
    import cv2

    from faceedit.alignment import align
    from faceedit.alignment.landmarks import landmarks68_on_crop
    from faceedit.core.images import load_image, make_grid

    worst = np.argsort(-err_tpl)[:sheet]
    paths = {r["name"]: r["path"] for r in train}
    tiles = []
    for i in worst:
        f = align(load_image(paths[ok[i]["name"]]), recipe=recipe, face="largest")[0]
        t = f.crop.copy()
        for q in template:
            cv2.circle(t, tuple(int(v) for v in q), 5, (0, 255, 0), 2)
        for q in _eyes(landmarks68_on_crop(f.crop, recipe.scale)):
            cv2.circle(t, tuple(int(v) for v in q), 3, (255, 0, 0), -1)
        cv2.putText(t, f"{err_tpl[i] * 100:.1f}%", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
        tiles.append(cv2.resize(t, (128, 128), interpolation=cv2.INTER_AREA))
    if tiles:  # a 256-colour PNG keeps the sheet small enough to commit
        import io

        from PIL import Image

        from faceedit.core.files import atomic_write_bytes

        buf = io.BytesIO()
        Image.fromarray(make_grid(np.stack(tiles), cols=8)).quantize(256).save(buf, "PNG", optimize=True)
        atomic_write_bytes(out / "worst_eyes.png", buf.getvalue())
    _write_json(out, "redetect.json", {
        "recipe": recipe.to_dict(), "template_eyes_px": template.tolist(), "results": res,
        "worst": [{"name": ok[i]["name"], "err": float(err_tpl[i])} for i in worst],
        "failures": {k: sum(1 for r in recs if not r["ok"] and r["reason"] == k) for k in {r.get("reason") for r in recs if not r["ok"]}},
        "seconds_this_run": run_s, "faces_this_run": len(left)})
    print(f"{recipe.name} geometry (quad scale {recipe.scale}) at {check_size} px; template eyes at {np.round(template, 1).tolist()} px; error = worse "
          f"eye's distance from the template / crop side; 68 points re-found from the template face box "
          f"({len(left)} faces in {run_s / 60:.1f} min this run)")
    print(_table(rows, ["source", "train", "aligned", "<=2%", "p50", "p90", "p95", "p99", "max", "<=2% own",
                        "first pass <=2%", "<=2% HOG box vs template box"]))
    print("<=2%: re-found eyes vs the mean template; own: vs where this face's first pass put them; first pass: "
          "the first pass's eyes vs the template (the recipe's own spread)")


# ----------------------------------------------------------------------------------------------


def _dlib4(lm68, mirrored: bool = False) -> np.ndarray:
    """Eye means and mouth corners of 68 points; for points found on the mirrored photo (mapped back), swap sides."""
    from faceedit.alignment.landmarks import eye_mouth_points

    p = np.stack(eye_mouth_points(np.asarray(lm68)))
    return p[[1, 0, 3, 2]] if mirrored else p


def _quad_record(img) -> dict:
    """dlib 68 points (one pass, one pass on the mirrored photo, averaged) and MTCNN's 5 (raw, raw on the mirrored
    photo, refined with and without mirror, QuadNet's) of the largest dlib face."""
    from faceedit.alignment import detect_faces, landmarks68, landmarks68_averaged
    from faceedit.alignment.mtcnn5 import calibrate_mtcnn5, mtcnn5_refined
    from faceedit.alignment.quadnet import quadnet_points

    W = img.shape[1]
    rnd = lambda a: np.round(np.asarray(a, np.float64), 3).tolist()  # noqa: E731
    d = detect_faces(img, "dlib")
    if not d:
        return {"ok": False, "reason": "dlib: no face"}
    d = max(d, key=lambda x: x.size)
    lm = landmarks68(img, d.box)
    rec = {"ok": True, "lm68": rnd(lm), "lm68_avg": rnd(landmarks68_averaged(img, d.box))}
    c = lm.mean(0)
    mirror = np.ascontiguousarray(img[:, ::-1])
    dm = detect_faces(mirror, "dlib")
    if dm:
        dm = max(dm, key=lambda x: x.size)
        lmm = landmarks68(mirror, dm.box)
        lmm[:, 0] = W - lmm[:, 0]
        rec["lm68_mirror"] = rnd(lmm)
    m = detect_faces(img, "mtcnn")
    if not m:
        rec["reason"] = "mtcnn: no face"
        return rec
    m = min(m, key=lambda x: np.hypot(*(np.asarray(x.center) - c)))
    rec.update(box5=rnd(m.box), raw=rnd(m.landmarks5), ref1=rnd(mtcnn5_refined(img, m.box, mirror=False)),
               ref=rnd(mtcnn5_refined(img, m.box)))
    rec["quadnet"] = rnd(quadnet_points(img, calibrate_mtcnn5(rec["ref"])))
    mm = detect_faces(mirror, "mtcnn")
    if mm:
        mm = min(mm, key=lambda x: np.hypot(*(np.asarray(x.center) - [W - c[0], c[1]])))
        q = mm.landmarks5.copy()
        q[:, 0] = W - q[:, 0]
        rec["raw_mirror"] = rnd(q[[1, 0, 2, 4, 3]])
    return rec


def _split_files() -> dict:
    """``{(source, split): [(name, path), ...]}`` by the data README's split rules (list_sources)."""
    from faceedit.training.dataset import list_sources

    src = list_sources(SHARED / "datasets")
    out = {}
    for split in ("train", "test"):
        for r in src[split]:
            out.setdefault((r["name"].split("/")[0], split), []).append((r["name"], r["path"]))
    return out


def fit_calibration(recs: list) -> tuple:
    """Least-squares ``[7, 8]`` map from refined MTCNN points to the 68-point quad points (TRAIN records only)."""
    from faceedit.alignment.mtcnn5 import dlib4_in_eye_frame, mtcnn5_features

    recs = [r for r in recs if r.get("ref") is not None]
    if any(r["split"] != "train" for r in recs):
        raise ValueError("the calibration is fitted on train-split faces only")
    X = np.array([np.append(mtcnn5_features(r["ref"]), 1.0) for r in recs])
    Y = np.array([dlib4_in_eye_frame(r["ref"], _dlib4(r["lm68"])) for r in recs])
    W, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return W, len(recs)


def _variants(weights):
    """Row name -> ``(points of a record, reference points of it)``; ``None`` skips the record.

    dlib68 is what ``align(landmarks='dlib68')`` uses (dlib averaged over the mirror image and
    moved boxes, ``landmarks68_averaged``), dlib68-single one predictor pass; the rows against
    dlib68-single and the floor (one pass on the photo vs one on its mirror image) are the
    earlier runs' measure.
    """
    from faceedit.alignment.mtcnn5 import calibrate_mtcnn5

    def single(r):
        return r["lm68"]

    def averaged(r):
        return r["lm68_avg"]

    def linear(r):
        return calibrate_mtcnn5(r["ref"], weights)

    return {
        "mtcnn5 (QuadNet) vs dlib68": (lambda r: r["quadnet"], averaged),
        "mtcnn5-linear vs dlib68": (linear, averaged),
        "mtcnn5-raw vs dlib68": (lambda r: r["raw"], averaged),
        "dlib68-single vs dlib68": (single, averaged),
        "mtcnn5 (QuadNet) vs dlib68-single": (lambda r: r["quadnet"], single),
        "mtcnn5-linear vs dlib68-single": (linear, single),
        "raw vs dlib68-single": (lambda r: r["raw"], single),
        "raw, mirror-averaged vs dlib68-single": (
            lambda r: (np.asarray(r["raw"]) + r["raw_mirror"]) / 2 if "raw_mirror" in r else None, single),
        "refined (exact crop) vs dlib68-single": (lambda r: r["ref1"], single),
        "refined + mirror vs dlib68-single": (lambda r: r["ref"], single),
        "floor: dlib68-single on mirrored photo vs on photo": (
            lambda r: _dlib4(r["lm68_mirror"], True) if "lm68_mirror" in r else None, single),
    }


def _quad_job(job) -> dict:
    from faceedit.core.images import load_image

    source, split, name, path = job
    try:
        rec = _quad_record(load_image(path))
    except Exception as e:  # noqa: BLE001 -- an unreadable photo is a record, not the end of the run
        rec = {"ok": False, "reason": f"{type(e).__name__}: {e}"}
    return {**rec, "name": name, "source": source, "split": split}


@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for quads.jsonl (appended per face: a killed run resumes) and quads.json.")
@click.option("--train-per-set", default=1000, show_default=True, help="Random TRAIN faces per source (0 = none).")
@click.option("--test-per-set", default=0, show_default=True, help="TEST faces per source (0 = all).")
@click.option("--fit", is_flag=True, help="Fit the MTCNN calibration on the TRAIN faces and write it to "
                                          "alignment/mtcnn5_calibration.json (never on test faces); QuadNet "
                                          "takes the calibrated points as input: retrain it after a refit.")
@click.option("--scale", default=1.0, show_default=True,
              help="Quad scale whose side the centre offset is measured against (1.0 = the FFHQ quad; 0.6 = faces64).")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=1, show_default=True, help="Processes (one thread each).")
@click.option("--photos/--no-photos", default=True, show_default=True,
              help="Also the largest face of each in-the-wild photo (../shared/datasets/photos).")
def quads(out, train_per_set, test_per_set, fit, scale, seed, workers, photos):
    """68-point vs MTCNN quads of the same faces: centre within 2% of the side and scale within 3%.

    For each face (the largest dlib face of a CelebA or UTKFace photo): dlib's 68 points as
    align(landmarks='dlib68') finds them (averaged over the mirror image and moved boxes) and
    in one pass (dlib68-single), and MTCNN's 5 points of the same face as facenet-pytorch gives
    them, averaged with those of the mirrored photo, refined on an exact crop
    (alignment.mtcnn5.mtcnn5_refined) with and without the mirrored crop, refined + calibrated
    (landmarks='mtcnn5-linear'), and those re-estimated by QuadNet (what align(detector='mtcnn')
    uses). The floor of the one-pass rows: dlib's one pass on the mirrored photo against the
    one on the photo.
    """
    from faceedit.alignment.ffhq import QUAD_CENTRE_TOL, QUAD_SIDE_TOL, quad_difference, quads_agree
    from faceedit.alignment.mtcnn5 import CALIBRATION_FILE, mtcnn5_calibration

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = _split_files()
    jobs = []
    for (source, split), lst in sorted(files.items()):
        n = train_per_set if split == "train" else (test_per_set or len(lst))
        pick = sorted(rng.choice(len(lst), min(n, len(lst)), replace=False)) if n < len(lst) else range(len(lst))
        jobs += [(source, split, *lst[i]) for i in pick]
    if photos:  # the in-the-wild photos: larger faces, real cameras (largest dlib face of each)
        folder = SHARED / "datasets" / "photos"
        jobs += [("photos", "wild", f"photos/{p.name}", str(p)) for p in sorted(folder.iterdir())
                 if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    log_path = out / "quads.jsonl"
    done = {r["name"] for r in _read_jsonl(log_path)}
    left = [j for j in jobs if j[2] not in done]
    print(f"{len(jobs)} faces, {len(done)} done earlier, {len(left)} to go", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as fh, _pool(workers) as pool:
        for k, rec in enumerate(pool.imap(_quad_job, left, chunksize=8) if pool else map(_quad_job, left)):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if (k + 1) % 250 == 0:
                dt = time.perf_counter() - t0
                print(f"{k + 1}/{len(left)} {dt:.0f} s, ~{dt / (k + 1) * (len(left) - k - 1) / 60:.0f} min left",
                      file=sys.stderr, flush=True)
    run_s = time.perf_counter() - t0
    want = {j[2] for j in jobs}
    recs = [r for r in _read_jsonl(log_path) if r["name"] in want and r.get("ref") is not None]
    old = [r["name"] for r in recs if "lm68_avg" not in r or "quadnet" not in r]
    if old:  # records of an earlier version of this bench: its rows would silently cover fewer faces
        raise click.ClickException(f"{len(old)} records in {log_path} (e.g. {old[0]}) lack the averaged dlib68 or "
                                   f"QuadNet points of this version; use a new --out")
    cal_path = REPO / "alignment" / CALIBRATION_FILE
    if fit:
        from faceedit.core.files import atomic_write_text

        W, n_fit = fit_calibration([r for r in recs if r["split"] == "train"])
        counts = {s: sum(1 for r in recs if r["split"] == "train" and r["source"] == s) for s in ("celeba10k", "utkface")}
        atomic_write_text(cal_path, json.dumps({
            "what": "refined MTCNN points (alignment.mtcnn5.mtcnn5_refined, mirror=True) -> dlib 68-point eye "
                    "means and outer mouth corners, in the eye frame of the 5 points (origin eye midpoint, unit eye "
                    "distance, x along the eyes); rows: nose x, nose y, mouth-left x, y, mouth-right x, y, 1; "
                    "columns: eye-left x, y, eye-right x, y, mouth-left x, y, mouth-right x, y",
            "fitted_on": f"{n_fit} TRAIN faces ({counts['celeba10k']} CelebA, {counts['utkface']} UTKFace; random, "
                         f"seed {seed}), least squares; never on the test split",
            "made_by": "python bench/scripts/alignment.py quads --fit", "weights": "@W@"}, indent=1).replace(
            '"@W@"', "[\n  " + ",\n  ".join(json.dumps(np.round(row, 6).tolist()) for row in W) + "\n ]") + "\n")
        mtcnn5_calibration.cache_clear()
    weights = mtcnn5_calibration()["weights"]
    res, rows = {}, []
    for split in ("test", "train", "wild"):
        for source in (("photos",) if split == "wild" else ("celeba10k", "utkface", "all")):
            sel = [r for r in recs if r["split"] == split and source in ("all", r["source"])]
            if not sel:
                continue
            for vname, (get, ref_of) in _variants(weights).items():
                cs = []
                for r in sel:
                    p, ref = get(r), ref_of(r)
                    if p is not None and ref is not None:
                        cs.append(quad_difference(ref, p, scale))
                if not cs:
                    continue
                cs = np.array(cs)
                ok = quads_agree(cs)
                d = {"n": len(cs), "agree": float(ok.mean()), "centre_ok": float((cs[:, 0] < QUAD_CENTRE_TOL).mean()),
                     "scale_ok": float((np.abs(cs[:, 1] - 1) < QUAD_SIDE_TOL).mean()),
                     "centre_p95": float(np.percentile(cs[:, 0], 95)),
                     "scale_err_p95": float(np.percentile(np.abs(cs[:, 1] - 1), 95)),
                     "scale_ratio_mean": float(cs[:, 1].mean())}
                res[f"{split}/{source}/{vname}"] = d
                rows.append([split, source, vname, d["n"], f"{d['agree'] * 100:.1f}%", f"{d['centre_ok'] * 100:.1f}%",
                             f"{d['scale_ok'] * 100:.1f}%", f"{d['centre_p95'] * 100:.2f}%",
                             f"{d['scale_err_p95'] * 100:.2f}%", f"{d['scale_ratio_mean']:.4f}"])
    n_fail = {f"{s}/{sp}": sum(1 for r in _read_jsonl(log_path) if r["name"] in want and r.get("ref") is None
                              and r["source"] == s and r["split"] == sp)
              for s, sp in (("celeba10k", "train"), ("celeba10k", "test"), ("utkface", "train"), ("utkface", "test"),
                            ("photos", "wild"))}
    _write_json(out, "quads.json", {"scale": scale, "seed": seed, "train_per_set": train_per_set,
                                    "test_per_set": test_per_set, "calibration": str(cal_path.relative_to(REPO)),
                                    "no_pair": n_fail, "results": res, "seconds_this_run": run_s})
    print(f"quads at scale {scale}; agree = centre within {QUAD_CENTRE_TOL:.0%} of the 68-point quad's side "
          f"and side within {QUAD_SIDE_TOL:.0%}; faces without a dlib+MTCNN pair: {n_fail}")
    print(_table(rows, ["split", "source", "points vs reference", "faces", "agree", "centre ok", "scale ok", "p95 centre",
                        "p95 scale", "mean ratio"]))


# ----------------------------------------------------------------------------------------------
@main.command("recon-kinds")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--per-source", default=40, show_default=True, help="TEST photos per source (CelebA, UTKFace), evenly spaced.")
@click.option("--model", default="faces64", show_default=True)
def recon_kinds(out, per_source, model):
    """The shipped encoder's reconstructions of the same TEST photos aligned with dlib68 (averaged) and
    dlib68-single (one pass, as the model's data set was cut): paired PSNR / SSIM.

    A landmark change that moved the recipe's geometry would show as worse reconstructions of the
    new crops (the encoder learnt the data set's framing)."""
    import torch

    from faceedit.alignment import AlignmentRecipe, align
    from faceedit.checkpoints.registry import load_model
    from faceedit.core.images import load_image, tensor_to_uint8
    from faceedit.inversion.methods import invert_with
    from faceedit.inversion.pti import synthesize
    from faceedit.metrics.reconstruction import reconstruction_metrics

    torch.set_num_threads(1)
    m = load_model(model)
    recipe = AlignmentRecipe.from_dict(m.config["recipe"])
    kinds = ("dlib68", "dlib68-single")
    files = _split_files()
    crops, used = {k: [] for k in kinds}, 0
    for source in ("celeba10k", "utkface"):
        lst = files[(source, "test")]
        for i in range(per_source):
            img = load_image(lst[i * (len(lst) // per_source)][1])
            try:
                got = [align(img, recipe=recipe, face="largest", landmarks=k)[0].crop for k in kinds]
            except Exception:  # noqa: BLE001 -- no face: the photo is left out of both rows
                continue
            used += 1
            for k, c in zip(kinds, got):
                crops[k].append(c)
    res, rows = {}, []
    for k in kinds:
        lat = invert_with("encoder", crops[k], m, space="w+", G=m.G)
        met = reconstruction_metrics(np.stack(crops[k]), tensor_to_uint8(synthesize(m.G, lat)))
        res[k] = {name: np.asarray(v, np.float64).tolist() for name, v in met.items()}
        rows.append([k, used, f"{np.mean(met['psnr']):.3f}", f"{np.mean(met['ssim']):.4f}"])
    d = np.subtract(res["dlib68"]["psnr"], res["dlib68-single"]["psnr"])
    summary = {"model": model, "photos": used, "psnr_diff_mean": float(d.mean()),
               "psnr_diff_se": float(d.std(ddof=1) / np.sqrt(len(d))), "per_face": res}
    _write_json(Path(out), "recon_kinds.json", summary)
    print(_table(rows, ["landmarks", "TEST photos", "PSNR dB", "SSIM"]))
    print(f"paired PSNR, dlib68 - dlib68-single: {d.mean():+.3f} dB (standard error {summary['psnr_diff_se']:.3f})")


if __name__ == "__main__":
    main()
