"""`faceedit score`: attributes, pose and landmarks of every face in a photo."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from .common import detector_option, finish_batch, job_errors, max_pixels_option, min_score_option

SHOWN = ("Smiling", "Male", "Young", "Eyeglasses", "Wearing_Hat", "Blond_Hair", "Black_Hair", "Bald", "Mustache",
         "No_Beard", "Heavy_Makeup", "Mouth_Slightly_Open")


def score_photo(path, *, detector: str = "dlib", with_attributes: bool = True, with_yaw5: bool = True,
                device="cpu", max_pixels: int | None = None, min_score: float | None = None) -> dict:
    """Everything ``faceedit score`` reports for one photo, as a JSON-ready dict."""
    from faceedit.alignment import FACES64, align_photo, detect_faces
    from faceedit.core.images import DEFAULT_MAX_PIXELS, load_image
    from faceedit.metrics.geometry import _iou, geometry_for_box

    img = load_image(path, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    rep = align_photo(img, recipe=FACES64, detector=detector, face="all", name=str(path), min_score=min_score)
    m5 = detect_faces(img, "mtcnn") if with_yaw5 else []
    scorer, scorer_note = None, ""
    if with_attributes:
        from faceedit.metrics.attributes import AttributeScorer, ScorerNotFoundError

        try:
            scorer = AttributeScorer.load(device=device)
        except ScorerNotFoundError as e:
            scorer_note = str(e)
    faces = []
    for f in rep.faces:
        box = rep.detections[f.index].box
        best = max(m5, key=lambda m: _iou(m.box, box), default=None)
        pts = best.landmarks5 if (best is not None and _iou(best.box, box) >= 0.3) else None
        g = geometry_for_box(img, box, landmarks5=pts)
        rec = {"index": f.index, "box": [round(float(v), 1) for v in box], "detector_score": float(f.score),
               "geometry": g.to_dict()}
        if scorer is not None:
            s = scorer.scores(f.crop)
            rec["attributes"] = {k: round(float(v[0]), 4) for k, v in s.items()}
        faces.append(rec)
    return {"photo": str(path), "size": [int(img.shape[1]), int(img.shape[0])], "faces": faces,
            "skipped": [s.to_dict() for s in rep.skipped], "attribute_scorer": None if scorer is None else
            {"path": str(scorer.path), "sha256": scorer.sha256}, "attribute_scorer_missing": scorer_note or None}


def _fmt(v, nd=1):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


@click.command("score")
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@detector_option()
@min_score_option()
@max_pixels_option()
@click.option("--all-attributes", is_flag=True, help="Print all 40 CelebA attributes, not the usual dozen.")
@click.option("--show-landmarks/--hide-landmarks", default=True, show_default=True,
              help="Print the 68 landmarks of each face.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write everything (all faces, all scores, landmarks) to this JSON file.")
@click.pass_context
def score(ctx, photos, detector, min_score, max_pixels, all_attributes, show_landmarks, json_out):
    """Print the attributes, head pose and landmarks of every face in each photo.

    Attributes come from faceedit's attribute network (probabilities; age in years) on the
    face aligned with the faces64 recipe; smile, mouth/eyes open and yaw/pitch/roll come
    from dlib's 68 landmarks (small faces are upsampled first), yaw5 from MTCNN's 5 points.

    \b
    Examples:
      faceedit score photo.jpg
      faceedit score group.jpg --all-attributes --json scores.json
    """
    from faceedit.core.device import resolve_device

    from faceedit.errors import USER_ERRORS
    from faceedit.inputs import check_photos

    results = []
    good, failures = check_photos(photos, max_pixels=max_pixels)
    with job_errors():
        dev = resolve_device(ctx.obj.get("device", "auto") if ctx.obj else "auto")
        for p in good:  # a photo that fails is listed at the end; the others are scored
            try:
                results.append(score_photo(p, detector=detector, device=dev, max_pixels=max_pixels,
                                           min_score=min_score))
            except USER_ERRORS as e:
                failures.append((str(p), f"{type(e).__name__}: {e}"))
    for r in results:
        click.echo(f"{r['photo']} ({r['size'][0]}x{r['size'][1]}): {len(r['faces'])} face(s)")
        if r["attribute_scorer_missing"]:
            click.echo(f"  attributes unavailable: {r['attribute_scorer_missing']}")
        for s in r["skipped"]:
            click.echo(f"  {'a detection' if s['index'] is None else 'face ' + str(s['index'])} skipped: {s['reason']}")
        for f in r["faces"]:
            g = f["geometry"]
            click.echo(f"  face {f['index']}  box {f['box']}  detector score {f['detector_score']:.2f}")
            if not g["ok"]:
                click.echo(f"    landmarks FAILED: {g['reason']}")
            click.echo(f"    pose    yaw {_fmt(g['yaw'])}  pitch {_fmt(g['pitch'])}  roll {_fmt(g['roll'])} deg"
                       f"   (MTCNN yaw5 {_fmt(g['yaw5'])})")
            click.echo(f"    shape   smile {_fmt(g['smile'], 3)}  mouth_open {_fmt(g['mouth_open'], 3)}  "
                       f"eyes_open {_fmt(g['eyes_open'], 3)}  (upsampled x{g['upsample']:.1f})")
            if "attributes" in f:
                a = f["attributes"]
                names = [k for k in a if k not in ("female", "age")] if all_attributes else list(SHOWN)
                click.echo(f"    age {a['age']:.0f}  female {a['female']:.2f}")
                for i in range(0, len(names), 4):
                    click.echo("    " + "  ".join(f"{n} {a[n]:.2f}" for n in names[i:i + 4]))
            if show_landmarks and g.get("landmarks"):
                pts = " ".join(f"{x:.0f},{y:.0f}" for x, y in g["landmarks"])
                click.echo(f"    landmarks68 {pts}")
    if json_out:
        from faceedit.core.files import atomic_write_text

        atomic_write_text(Path(json_out), json.dumps(results, indent=1), protect=list(photos))
        click.echo(f"wrote {json_out}")
    finish_batch(failures, len(photos), "photo(s)")
