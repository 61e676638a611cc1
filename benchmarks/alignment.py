"""Alignment benchmarks and quality measurements (CPU; dlib and facenet-pytorch needed).

Three parts, each printing a short table last and writing JSON (and PNGs) under --out:

  speed      faces aligned per second for a 1024 px FFHQ crop from a ~2 MP photo, per
             detector (wall and CPU time; the breakdown detect / landmarks / warp).
  photos     faces found per detector on ../shared/datasets/photos against the counts a
             person made (tests/data/photo_face_counts.json), and how every photo ends:
             aligned, a clear FaceNotFoundError, or an unexpected exception.
  landmarks  on CelebA and UTKFace TRAIN faces: re-detect landmarks on the aligned crops
             and compare the eye centres with the template (where the first pass put
             them, and the data-set mean); compare 68-point and MTCNN quads of the same
             faces (centre offset / quad side, scale ratio); contact sheet of the worst.

Examples:
  OMP_NUM_THREADS=1 python benchmarks/alignment.py speed --out out/bench_align
  OMP_NUM_THREADS=1 python benchmarks/alignment.py photos --detectors dlib,mtcnn,dlib-cnn --out out/photos
  OMP_NUM_THREADS=1 python benchmarks/alignment.py landmarks --per-set 1000 --out out/lmk
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEEDIT_SHARED", REPO.parent / "shared"))


def _table(rows, header):
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w[i]) for i, v in enumerate(r))  # noqa: E731
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def _write_json(out: Path, name: str, obj):
    from faceedit.checkpoints.atomic import atomic_write_text

    atomic_write_text(out / name, json.dumps(obj, indent=1))


@click.group()
def main():
    """Alignment benchmarks (see the module docstring)."""


# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--photo", default=str(SHARED / "datasets/photos/face_recognition__obama-1080p.jpg"), show_default=True,
              help="A ~2 MP photo.")
@click.option("--size", default=1024, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--detectors", default="dlib,mtcnn,dlib-cnn", show_default=True)
@click.option("--upsample", type=int, default=None, help="dlib upsampling [default: automatic by photo size].")
def speed(out, photo, size, repeats, detectors, upsample):
    """Faces per second for a SIZE px FFHQ crop from a ~2 MP photo, per detector."""
    from faceedit.alignment import FFHQ, align, align_landmarks, detect_faces, landmarks68
    from faceedit.imageio import load_image

    out = Path(out)
    img = load_image(photo)
    recipe = FFHQ.with_size(size)
    rows, res = [], {}
    for det in detectors.split(","):
        align(img, recipe=recipe.with_size(64), detector=det, upsample=upsample)  # load models, warm caches
        t_wall, t_cpu, n = [], [], 0
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            faces = align(img, recipe=recipe, detector=det, upsample=upsample)
            t_wall.append(time.perf_counter() - w0)
            t_cpu.append(time.process_time() - c0)
            n = len(faces)
        # Breakdown (CPU seconds, median of the repeats).
        c = time.process_time
        parts = {"detect": [], "landmarks": [], "warp": []}
        for _ in range(repeats):
            a = c(); d = detect_faces(img, det, upsample); b = c()
            lms = [x.landmarks5 if det == "mtcnn" else landmarks68(img, x.box) for x in d]; e = c()
            for lm in lms:
                align_landmarks(img, lm, recipe)
            f = c()
            parts["detect"].append(b - a); parts["landmarks"].append(e - b); parts["warp"].append(f - e)
        med = {k: float(np.median(v)) for k, v in parts.items()}
        wall, cpu = float(np.median(t_wall)), float(np.median(t_cpu))
        res[det] = {"faces": n, "wall_s": wall, "cpu_s": cpu, "faces_per_s_wall": n / wall, "faces_per_s_cpu": n / cpu,
                    "breakdown_cpu_s": med}
        rows.append([det, n, f"{n / wall:.2f}", f"{n / cpu:.2f}", f"{med['detect'] * 1e3:.0f}",
                     f"{med['landmarks'] * 1e3:.0f}", f"{med['warp'] * 1e3:.0f}"])
    h, w = img.shape[:2]
    meta = {"photo": str(photo), "photo_size": [w, h], "megapixels": w * h / 1e6, "size": size, "repeats": repeats,
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "results": res}
    _write_json(out, "speed.json", meta)
    print(f"photo {Path(photo).name} {w}x{h} ({w * h / 1e6:.2f} MP) -> {size} px FFHQ crop (4x supersampled), "
          f"upsample {'auto' if upsample is None else upsample}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load avg {os.getloadavg()[0]:.1f}")
    print(_table(rows, ["detector", "faces", "faces/s wall", "faces/s cpu", "detect ms", "landmarks ms", "warp ms"]))


# ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--detectors", default="dlib,mtcnn,dlib-cnn", show_default=True)
@click.option("--try-rotations", is_flag=True, help="Also run each detector with try_rotations=True.")
def photos(out, detectors, try_rotations):
    """Faces found per detector vs the human counts on the 95 photos; how each photo ends."""
    from faceedit.alignment import AlignmentError, FaceNotFoundError, align_photo
    from faceedit.imageio import ImageLoadError, load_image

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
                rep = align_photo(img, detector=det, try_rotations=rot, name=name)
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
def _train_files(per_set: int, seed: int):
    """A random sample of CelebA and UTKFace TRAIN files (DATASETS README split rules)."""
    rng = np.random.default_rng(seed)
    celeba = [SHARED / f"datasets/celeba10k/{i:06d}.jpg" for i in range(1, 9001)]
    utk_all = sorted(os.listdir(SHARED / "datasets/utkface"))
    utk = [SHARED / "datasets/utkface" / n for i, n in enumerate(utk_all) if i % 20 != 0]
    pick = lambda xs: [xs[i] for i in sorted(rng.choice(len(xs), min(per_set, len(xs)), replace=False))]  # noqa: E731
    return {"celeba": pick(celeba) if per_set else celeba, "utkface": pick(utk) if per_set else utk}


def _redetect(crop):
    """dlib HOG + 68 landmarks on an aligned crop, with a grey margin of a quarter of its side
    (a tight crop leaves HOG no context around the face). None if no face is found."""
    import cv2

    from faceedit.alignment import detect_faces, landmarks68

    m = crop.shape[0] // 4
    padded = cv2.copyMakeBorder(crop, m, m, m, m, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    d = detect_faces(padded, "dlib", upsample=0) or detect_faces(padded, "dlib", upsample=1)
    if not d:
        return None
    return landmarks68(padded, max(d, key=lambda x: x.size).box) - m


@main.command()
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--per-set", default=1000, show_default=True, help="Faces sampled per data set (0 = all train faces).")
@click.option("--check-size", default=256, show_default=True,
              help="Crop side used for re-detection (FACES64 geometry; 64 px is too small for dlib's HOG).")
@click.option("--seed", default=0, show_default=True)
def landmarks(out, per_set, check_size, seed):
    """Re-detected eye centres on aligned crops vs the template; 68-point vs MTCNN quads."""
    from faceedit.alignment import FACES64, FaceNotFoundError, align, detect_faces, ffhq_quad, landmarks68
    from faceedit.alignment.ffhq import apply_matrix
    from faceedit.alignment.landmarks import eye_mouth_points
    from faceedit.imageio import load_image, make_grid, save_image

    out = Path(out)
    recipe = FACES64.with_size(check_size)
    files = _train_files(per_set, seed)
    result, rows = {}, []
    worst_all = []
    for set_name, paths in files.items():
        recs = []
        n_fail1 = n_fail2 = n_mtcnn_fail = 0
        t0 = time.perf_counter()
        for k, p in enumerate(paths):
            img = load_image(p)
            try:
                f = align(img, recipe=recipe, face="largest")[0]
            except FaceNotFoundError:
                n_fail1 += 1
                continue
            el, er, _, _ = eye_mouth_points(f.landmarks)
            first = apply_matrix(f.matrix, np.stack([el, er]))  # where the first pass put the eyes
            lm2 = _redetect(f.crop)
            rec = {"file": p.name, "first": first.tolist()}
            if lm2 is not None:
                e2 = np.stack(eye_mouth_points(lm2)[:2])
                rec["redetected"] = e2.tolist()
            else:
                n_fail2 += 1
            # 68-point vs MTCNN quad on the same photo (same face: the MTCNN face nearest the dlib quad).
            q68, s68 = ffhq_quad(f.landmarks, recipe.scale)
            dm = detect_faces(img, "mtcnn")
            if dm:
                c68 = q68.mean(0)
                best = min(dm, key=lambda d: np.hypot(*(np.asarray(d.center) - c68)))
                qm, sm = ffhq_quad(best.landmarks5, recipe.scale)
                rec["quad_centre_off"] = float(np.hypot(*(qm.mean(0) - c68)) / s68)
                rec["quad_scale_ratio"] = float(sm / s68)
            else:
                n_mtcnn_fail += 1
            recs.append(rec)
            if (k + 1) % 200 == 0:
                print(f"{set_name}: {k + 1}/{len(paths)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        red = [r for r in recs if "redetected" in r]
        first = np.array([r["first"] for r in red])
        again = np.array([r["redetected"] for r in red])
        template = first.mean(0)
        # error per face: the worse of the two eyes, as a fraction of the crop side
        err_own = np.linalg.norm(again - first, axis=2).max(1) / check_size
        err_tpl = np.linalg.norm(again - template, axis=2).max(1) / check_size
        qo = np.array([r["quad_centre_off"] for r in recs if "quad_centre_off" in r])
        qs = np.array([r["quad_scale_ratio"] for r in recs if "quad_scale_ratio" in r])
        agree = (qo < 0.02) & (np.abs(qs - 1) < 0.03)
        pct = lambda a: {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": float(a.max())}  # noqa: E731
        res = {"sampled": len(paths), "first_pass_no_face": n_fail1, "redetect_no_face": n_fail2,
               "mtcnn_no_face": n_mtcnn_fail, "checked": len(red),
               "template_eyes_px": template.tolist(), "err_vs_own_first_pass": pct(err_own),
               "err_vs_mean_template": pct(err_tpl),
               "within_2pct_own": float((err_own <= 0.02).mean()), "within_2pct_template": float((err_tpl <= 0.02).mean()),
               "quad_pairs": int(len(qo)), "quad_centre_off": pct(qo), "quad_scale_ratio": pct(np.abs(qs - 1)),
               "quad_scale_ratio_mean": float(qs.mean()),
               "quad_agree_frac": float(agree.mean()), "seconds": time.perf_counter() - t0}
        result[set_name] = res
        order = np.argsort(-err_tpl)[:16]
        for i in order:
            worst_all.append((set_name, red[i]["file"], float(err_tpl[i])))
        rows.append([set_name, len(paths), n_fail1, n_fail2, f"{res['within_2pct_own'] * 100:.1f}%",
                     f"{res['within_2pct_template'] * 100:.1f}%", f"{res['err_vs_mean_template']['p95'] * 100:.2f}%",
                     f"{res['quad_agree_frac'] * 100:.1f}%", f"{res['quad_centre_off']['p95'] * 100:.2f}%",
                     f"{res['quad_scale_ratio']['p95'] * 100:.2f}%"])
    # Contact sheet of the worst faces (vs the mean template): crop with template (green) and re-detected (red) eyes.
    import cv2

    tiles = []
    for set_name, name, e in worst_all:
        p = SHARED / "datasets" / ("celeba10k" if set_name == "celeba" else "utkface") / name
        f = align(load_image(p), recipe=recipe, face="largest")[0]
        t = f.crop.copy()
        tpl = np.array(result[set_name]["template_eyes_px"])
        lm2 = _redetect(f.crop)
        for q in tpl:
            cv2.circle(t, tuple(int(v) for v in q), 4, (0, 255, 0), 2)
        for q in np.stack(eye_mouth_points(lm2)[:2]):
            cv2.circle(t, tuple(int(v) for v in q), 3, (255, 0, 0), -1)
        cv2.putText(t, f"{e * 100:.1f}%", (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
        tiles.append(t)
    if tiles:
        save_image(out / "worst_eyes.png", make_grid(np.stack(tiles), cols=8))
    _write_json(out, "landmarks.json", {"recipe": recipe.to_dict(), "per_set": per_set, "seed": seed, "results": result,
                                        "worst": worst_all})
    print(f"FACES64 geometry at {check_size} px; eye error = worse eye's distance / crop side; quad agreement = "
          f"centre within 2% of the side and scale within 3%")
    print(_table(rows, ["set", "faces", "no face", "no face on crop", "eyes<=2% own", "eyes<=2% template",
                        "p95 eye err", "quads agree", "p95 centre", "p95 scale"]))


if __name__ == "__main__":
    main()
