"""`faceedit align`: photos (or folders of photos) to aligned face crops plus a JSON per photo."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from faceedit.alignment.align import LANDMARK_KINDS, landmark_kind
from faceedit.alignment.errors import AlignmentError

from .common import (OutDir, detector_option, finish_batch, job_errors, max_pixels_option, min_score_option,
                     retry_failed_option, torchrun_launch)

RECIPES = ("faces64", "ffhq")
#: The names one photo's outputs take (``{s}``: its stem, relative to --out).
ALIGN_NAMES = r"{s}(\.json|_\d+\.(png|jpg))"


def _parse_face(value: str):
    v = str(value).strip().lower()
    if v in ("all", "largest"):
        return v
    if v.isdigit():
        return int(v)
    raise click.BadParameter(f"{value!r}: use all, largest, or a face index (0 = leftmost)", param_hint="--face")


def _gather(inputs):
    """[(photo path, default output stem relative to --out)] for files and folders (recursively;
    folders give the files ``faceedit.inputs.PHOTO_EXTS`` names, files are read whatever their suffix)."""
    from faceedit.inputs import folder_photos

    jobs = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            jobs += [(q, q.relative_to(p).with_suffix("").as_posix()) for q in folder_photos(p, recursive=True)]
        else:
            jobs.append((p, p.stem))
    return jobs


def _done(json_path: Path, src, settings: dict, folder):
    """``"done"`` (a result of this photo with these settings), ``"other"`` (with other settings),
    or ``None`` (nothing, a failure, damaged, or not faceedit's: align it)."""
    from faceedit.outputs import read_record

    rec = read_record(json_path)
    if rec is None or rec.get("error") or not folder.owns(json_path, src):
        return None
    return "done" if rec.get("settings") == settings else "other"


def _align_one(job):
    """Worker: align one photo, write its crops and JSON; returns (status, path, faces, message)."""
    from faceedit.alignment import align_photo, face_to_dict
    from faceedit.core.images import ImageLoadError, load_image

    src, json_path, opts = job
    src, json_path = Path(src), Path(json_path)
    folder = opts["folder"]
    record = {"version": 1, "source": str(src), "detector": opts["detector"], "recipe": opts["recipe"].to_dict(),
              "settings": opts["settings"]}
    try:
        img = load_image(src, max_pixels=opts["max_pixels"])
        rep = align_photo(img, recipe=opts["recipe"], detector=opts["detector"], face=opts["face"],
                          upsample=opts["upsample"], min_face=opts["min_face"], min_score=opts["min_score"],
                          try_rotations=opts["try_rotations"], landmarks=opts["landmarks"], name=str(src))
    except (AlignmentError, ImageLoadError) as e:
        # recorded for the user, never taken as done: a re-run (with the --detector it suggests) tries again
        record.update(error=f"{type(e).__name__}: {e}", faces=[])
        folder.write_text(json_path, json.dumps(record, indent=1), src)
        return "failed", str(src), 0, 0, f"{type(e).__name__}: {e}"
    faces = []
    for f in rep.faces:
        out = json_path.with_name(f"{json_path.name[:-len('.json')]}_{f.index}.{opts['ext']}")
        folder.save_image(out, f.crop, src)
        d = face_to_dict(f)
        d["file"] = out.name
        faces.append(d)
    record.update(source_size=list(img.shape[1::-1]), landmarks=rep.landmarks, rotation=rep.rotation, tried=rep.tried,
                  num_detected=len(rep.detections), faces=faces, skipped=[s.to_dict() for s in rep.skipped])
    folder.write_text(json_path, json.dumps(record, indent=1), src)  # written last: marks "done"
    return "ok", str(src), len(faces), len(rep.skipped), ""


class _cleanup_parts_on_exit:
    """On the way out (interrupt included, after the worker pool is stopped), delete the
    temporary files of workers that were killed mid-write."""

    def __init__(self, out):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        from faceedit.core.files import remove_stale_parts

        remove_stale_parts(self.out)
        return False


@click.command("align")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", type=OutDir(), required=True, help="Output folder.")
@click.option("--recipe", type=click.Choice(RECIPES), default="faces64", show_default=True,
              help="Crop geometry: faces64 (FFHQ at 0.6x, our models) or ffhq (NVIDIA's).")
@click.option("--size", type=click.IntRange(8, 4096), default=None, help="Output side in px [default: the recipe's].")
@click.option("--scale", type=click.FloatRange(0.2, 3.0), default=None,
              help="Quad scale relative to FFHQ [default: the recipe's].")
@detector_option()
@click.option("--landmarks", type=click.Choice(LANDMARK_KINDS), default=None,
              help="Landmarks the quad is built from [default: dlib68 (dlib's predictor averaged over the mirror "
                   "image and moved boxes) with the dlib detectors, mtcnn5 (MTCNN + QuadNet) with mtcnn]; "
                   "dlib68-single is one predictor pass, as the shipped data sets were cut.")
@click.option("--face", default="all", show_default=True,
              help="all, largest, or an index (0 = leftmost face). All by default, unlike invert/edit "
                   "(largest): align builds datasets, where every face is wanted.")
@click.option("--upsample", type=click.IntRange(0, 4), default=None,
              help="dlib upsampling [default: by image size, one more if nothing is found].")
@click.option("--min-face", type=click.IntRange(1, None), default=None,
              help="Skip (and report) faces smaller than this many px [default: max(24, size/16)].")
@min_score_option()
@click.option("--try-rotations", is_flag=True, help="Also try the photo turned 90/180/270 degrees.")
@click.option("--ext", type=click.Choice(["png", "jpg"]), default="png", show_default=True, help="Crop format.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Processes for folder inputs.")
@max_pixels_option()
@click.option("--overwrite", is_flag=True,
              help="Replace results of these photos in --out made with other settings (refused without it).")
@retry_failed_option()
@click.pass_context
def align(ctx, inputs, out, recipe, size, scale, detector, landmarks, face, upsample, min_face, min_score,
          try_rotations, ext, workers, max_pixels, overwrite, retry_failed):
    """Detect, align and crop the faces of photos; write crops and a JSON with each face's transform.

    For every photo STEM it writes STEM_<i>.png per face (i = position left to right
    among all faces found) and STEM.json (source, recipe, photo->crop matrix, quad and
    landmarks per face, skipped small faces, or the error). Folders are searched
    recursively, keep their structure under --out, show a progress bar, use --workers
    processes, and resume: photos done with the same settings are skipped; results made
    with other settings stop the run (another --out keeps both, --overwrite replaces them).
    A photo without a face is reported and recorded (tried again on a re-run with other
    settings, or with --retry-failed), the others go on; the exit code is 1 if any failed.
    Under torchrun the photos are dealt to the processes, each with its --workers. STEM
    becomes STEM_EXT when two photos share one or a name would hit a file that is not this
    photo's earlier result.

    \b
    Examples:
      faceedit align photo.jpg --out aligned/
      faceedit align group.jpg --face largest --recipe ffhq --size 1024 --out aligned/
      faceedit align ../shared/datasets/celeba10k --out data/celeba64 --ext jpg
      faceedit align rotated.jpg --try-rotations --detector mtcnn --out aligned/
      torchrun --nproc_per_node 4 -m faceedit align photos/ --out aligned/ --workers 4
    """
    import logging

    from faceedit.alignment import FACES64, FFHQ

    rec = {"faces64": FACES64, "ffhq": FFHQ}[recipe]
    try:  # checked once here, before any photo is read
        landmark_kind(detector, landmarks)
    except AlignmentError as e:
        raise click.BadParameter(str(e), param_hint="--landmarks") from e
    with job_errors():
        if size is not None or scale is not None:
            rec = type(rec).from_dict({**rec.to_dict(), **({"size": size} if size else {}),
                                       **({"scale": scale} if scale else {})})
    from faceedit.outputs import OutputFolder

    face_sel = _parse_face(face)
    settings = {"recipe": rec.to_dict(), "detector": detector, "landmarks": landmark_kind(detector, landmarks),
                "face": face_sel, "upsample": upsample, "min_face": min_face,
                "min_score": min_score,
                "try_rotations": bool(try_rotations), "ext": ext}
    gathered = _gather(inputs)
    sources = [src for src, _ in gathered]
    opts = dict(recipe=rec, detector=detector, landmarks=landmarks, face=face_sel, upsample=upsample,
                min_face=min_face, min_score=min_score, try_rotations=try_rotations, ext=ext, max_pixels=max_pixels,
                settings=settings)
    out = Path(out)
    quiet = ctx.obj.get("quiet", False) if ctx.obj else False
    with job_errors(), torchrun_launch("cpu") as (dist, _):  # under torchrun the photos are dealt to the ranks
        from faceedit.batchrun import Progress, decided, is_main, shards

        folder = OutputFolder(out, sources, command="align", journal=dist is not None and dist.distributed).check()
        opts["folder"] = folder
        plan = decided(dist, lambda: _plan(folder, gathered, settings, overwrite=overwrite, retry_failed=retry_failed))
        main = is_main(dist)
        if plan.note and main:
            click.echo(plan.note, err=True)
        if not plan.todo and not plan.failed_before:
            if main:
                click.echo(f"nothing to do: all {plan.done} photo(s) already have results in {out}")
            return
        todo = set(plan.todo)
        mine = [i for g in shards(len(sources), 1, dist) for i in g if i in todo]
        jobs = [(str(sources[i]), str(out / (plan.stems[i] + ".json")), opts) for i in mine]
        folder.record_states([{"input": sources[i], "state": "pending"} for i in mine], settings=plan.key,
                             run=plan.run)
        logging.getLogger("faceedit.alignment").setLevel(logging.ERROR)  # skipped faces are summarised below
        progress = Progress(folder, dist, plan, len(plan.todo), desc="align", quiet=quiet)
        ok = faces = small = 0
        failures = []

        def take(status, src, n, n_small, msg, json_name):
            nonlocal ok, faces, small
            ok, faces, small = ok + (status == "ok"), faces + n, small + n_small
            if status != "ok":
                failures.append((src, msg))
            folder.record_states([{"input": src, "state": "done", "files": [json_name]} if status == "ok" else
                                  {"input": src, "state": "failed", "error": msg}], settings=plan.key, run=plan.run)
            progress.tick()

        with _cleanup_parts_on_exit(out):
            names_of = {src: Path(j).relative_to(out).as_posix() for src, j, _ in jobs}
            if workers > 1 and len(jobs) > 1:
                import multiprocessing as mp

                from .common import worker_init

                os.environ.setdefault("OMP_NUM_THREADS", "1")
                with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=worker_init) as pool:
                    for res in pool.imap_unordered(_align_one, jobs, chunksize=8 if len(jobs) > 200 else 1):
                        take(*res, names_of[res[1]])
            else:
                for job in jobs:
                    res = _align_one(job)
                    take(*res, names_of[res[1]])
        stats = progress.finish({"ok": ok, "faces": faces, "small": small, "failures": failures, "photos": len(jobs)})
        if not main:  # rank 0 of a torchrun launch tells the whole run
            return
        ok, faces, small = (sum(s[k] for s in stats) for k in ("ok", "faces", "small"))
        failures = [f for s in stats for f in s["failures"]]
        if failures:
            folder.write_text(out / "failures.json", json.dumps([{"source": s, "error": m} for s, m in failures],
                                                                indent=1))
    failures += plan.failed_before
    done, total = plan.done, len(sources)
    click.echo(f"aligned {faces} face(s) from {ok} photo(s) into {out}; {len(failures)} failed"
               + (f" ({len(plan.failed_before)} in an earlier run, not tried again: --retry-failed tries them)"
                  if plan.failed_before else "")
               + (f"; {small} detection(s) skipped, below --min-face or --min-score (listed in the JSON)"
                  if small else "")
               + (f"; {done} already done" if done else ""))
    if len(stats) > 1 or len(jobs) > 1:
        from faceedit.batchrun import rate_line, throughput

        click.echo(rate_line(throughput(stats, max(s["seconds"] for s in stats))))
    if len(failures) > 10:
        for _s, m in failures[:10]:
            click.echo(f"failed: {m}", err=True)
        raise click.ClickException(f"{len(failures)} of {total} photo(s) failed (the first 10 above, "
                                   f"all in {out / 'failures.json'}); the others are done")
    finish_batch(failures, total, "photo(s)")


def _plan(folder, gathered: list, settings: dict, *, overwrite: bool, retry_failed: bool):
    """Rank 0's plan of an alignment run: names, what is done (the manifest, else the record), what
    failed before, and the refusal of results made with other settings."""
    from faceedit.batchrun import Plan, new_run_id, sort_states
    from faceedit.core.errors import PipelineError
    from faceedit.core.files import remove_stale_parts
    from faceedit.outputs import names, read_record, settings_differences, settings_key

    sources = [src for src, _ in gathered]
    stems = folder.plan_stems(sources, names(ALIGN_NAMES), stem=dict(gathered).get)
    key = settings_key(settings)
    todo, done, failed = sort_states(folder, sources, key, retry_failed=retry_failed)
    left, other = [], []
    for i in todo:
        json_path = folder.root / (stems[sources[i]] + ".json")
        state = _done(json_path, sources[i], settings, folder)  # a record written before the manifest's states
        if state == "done":
            done[i] = {}
            continue
        if state == "other":
            other.append(json_path)
        left.append(i)
    note = ""
    if other:
        diff = "; ".join(settings_differences(settings, (read_record(other[0]) or {}).get("settings")))
        if not overwrite:
            raise PipelineError(f"{folder.root} holds results of {len(other)} of these photo(s) made with other "
                                f"settings ({diff}); nothing was aligned. Pass --out ANOTHER_FOLDER to keep them and "
                                f"align there, or --overwrite to replace them")
        note = f"replacing the results of {len(other)} photo(s) in {folder.root} made with other settings ({diff})"
    remove_stale_parts(folder.root)  # temporary files of an earlier run that was killed outright
    return Plan(run=new_run_id(), stems=[stems[s] for s in sources], todo=left, done=len(done), failed_before=failed,
                replacing=len(other), note=note, key=key)
