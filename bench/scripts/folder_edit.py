"""Photos/s of `faceedit edit DIR --attr smile` by group size, with the old path measured in the same run.

A folder of real photos (``--photos``, default ``../shared/datasets/photos``, replicated under new
names up to ``--count``: ``batch_scaling.replicate``) is edited by the README's command in fresh
processes, into a fresh output folder each time:

* ``baseline``: the command of another tree (``--baseline``: a git revision, extracted with ``git
  archive``, or ``--baseline-tree``: that tree as a folder or tar), which edits one photo at a time;
* ``batch N`` for each N of ``--batches``: the working tree's command with ``--batch N`` (the faces
  of N photos inverted as one batch, the outputs written by threads meanwhile).

Runs alternate (baseline, batch ..., baseline, ...) ``--repeats`` times. For each run: photos/s
over the run itself (the rate line the command prints: its plan to its end, start-up and model
loading left out), photos/s over the process's wall time (everything the user waits for), and
where a photo's time went, the mean over the photos of the stage times each record keeps
(``align_wait``: the part of reading and aligning the loader workers did not hide; ``invert``: a
photo's share of its group's inversion; ``write``: the photo's PNG; the crops, latent and JSON
after it are not timed by the record). The edited photos of each run are compared with the
baseline's (largest difference in levels). Every child runs a tree's code through
``photo_path.py``'s import hook, ``OMP_NUM_THREADS`` as set here (faceedit takes one thread
on a loaded machine: set it, or runs that start at different loads differ in their floats).
The hook is the command's process's only: the loader workers it spawns import the installed
faceedit, so a baseline's photos are read and aligned by this tree's code (the same as
ffe7406's: neither ``alignment/`` nor ``batchrun.prepare_photo`` has changed since).

Examples::

    python bench/scripts/folder_edit.py --count 16 --batches 1,4 --repeats 1      # CPU, here
    python bench/scripts/folder_edit.py --device cuda --detector mtcnn --count 200 \\
        --batches 1,16,64 --baseline ffe7406 --baseline-tree base.tar --out $OUT  # the GPU machine

Writes ``folder_edit_<device>.json`` and ``.md`` under ``--out`` (default
``bench/results/photo_path``) and prints the table last.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import batch_scaling  # noqa: E402 - replicate()
import photo_path  # noqa: E402 - the import hook (BOOT), the child environment, the baseline tree, git

STAGES = ("align_wait", "invert", "edit", "synthesize", "paste", "write")
RATE = re.compile(r"(\d+) photo\(s\) in ([\d.]+) s on \d+ process\(es\): ([\d.]+) photos/s")


def run_edit(tree: Path, args: list, out: Path) -> dict:
    """``faceedit ARGS --out OUT`` on ``tree`` in a fresh process: wall seconds, the run's own rate,
    the mean stage times of its records, and the edited photos' paths."""
    code = photo_path.BOOT + "sys.argv = ['faceedit'] + sys.argv[1:]\nfrom faceedit.cli import main\nmain()\n"
    load = photo_path._load()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args, "--out", str(out)], env=photo_path._child_env(tree, None),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    failed = re.search(r"(\d+) of \d+ input\(s\) failed", p.stderr)
    if p.returncode != 0 and not (p.returncode == 1 and failed):
        raise RuntimeError(f"faceedit {' '.join(args)} failed on {tree}:\n{p.stderr[-3000:]}")
    m = RATE.search(p.stdout)
    records = [json.loads(r.read_text()) for r in sorted(out.glob("*_edit.json"))]
    stages = {s: statistics.mean(r["timings"].get(s, 0.0) for r in records) for s in STAGES} if records else {}
    return {"wall_s": wall, "photos": len(records), "failed": int(failed.group(1)) if failed else 0, "run_s": float(m.group(2)) if m else None,
            "run_rate": float(m.group(3)) if m else None, "wall_rate": len(records) / wall, "load": load,
            "stages": stages}


def max_diff(a: Path, b: Path) -> int | None:
    """Largest difference in levels between the ``*_edit.png`` photos of two output folders."""
    import numpy as np
    from PIL import Image

    worst = None
    for p in sorted(a.glob("*_edit.png")):
        q = b / p.name
        if not q.is_file() or re.search(r"_\d+_edit\.png$", p.name):
            continue
        d = int(np.abs(np.asarray(Image.open(p), dtype=np.int16) - np.asarray(Image.open(q), dtype=np.int16)).max())
        worst = d if worst is None else max(worst, d)
    return worst


def report(res: dict) -> str:
    lines = [f"# `faceedit edit DIR --attr smile` by group size, {res['device']} ({res['device_name']})", "",
             f"{res['count']} photos ({res['distinct']} distinct photos of {res['photos']}, replicated), "
             f"model faces64 (hybrid, the device's default steps), detector {res['detector']}, "
             f"OMP_NUM_THREADS {res['threads'] or 'unset'}; baseline = `{res['baseline']}` "
             f"({res['baseline_commit'][:10]}), current = {res['current_commit'][:10]}"
             + (" with uncommitted changes" if res["dirty"] else "") + f"; {res['repeats']} run(s) each, alternating.",
             "", "photos/s (run): the command's own rate line (its plan to its end; start-up and model loading "
             "left out). photos/s (wall): photos over the process's whole wall time. Stages: mean seconds per "
             "photo from the records; `invert` is a photo's share of its group's inversion.", "",
             "| run | photos/s (run) | photos/s (wall) | wall | " + " | ".join(STAGES)
             + " | max diff vs baseline | load |", "|" + " --- |" * (6 + len(STAGES))]
    for name, runs in res["runs"].items():
        med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
        st = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in STAGES}
        diff = res["diff"].get(name)
        lines.append(f"| {name} | {med('run_rate'):.2f} | {med('wall_rate'):.2f} | {med('wall_s'):.1f} s | "
                     + " | ".join(f"{st[s] * 1e3:.0f} ms" for s in STAGES)
                     + f" | {'' if diff is None else diff} | {min(r['load'] for r in runs):.2f}-"
                     f"{max(r['load'] for r in runs):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=64, help="photos in the folder (the photos replicated)")
    ap.add_argument("--batches", default="1,16", help="the working tree's --batch values, comma-separated")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--detector", default="dlib", choices=["dlib", "mtcnn"])
    ap.add_argument("--photos", default=None, help="folder of photos to replicate [default: photo_path.py's 8 "
                    "one-face photos of 1-2 MP from ../shared/datasets/photos]")
    ap.add_argument("--baseline", default=None, help="git revision of the old path [default: the merge base with main]")
    ap.add_argument("--baseline-tree", default=None, help="that revision's tree as a folder or tar (a machine "
                    "without the repository's history)")
    ap.add_argument("--no-baseline", action="store_true", help="time the working tree only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
    batches = [int(b) for b in a.batches.split(",") if b]
    work = Path(tempfile.mkdtemp(prefix="folder_edit_"))
    if a.photos is None:
        a.photos = work / "source"
        a.photos.mkdir()
        for name in photo_path.DEFAULT_FOLDER:
            (a.photos / name).symlink_to(photo_path.PHOTOS / name)
    folder = work / "photos"
    photos = batch_scaling.replicate(Path(a.photos), folder, a.count)
    a.baseline = a.baseline or photo_path._git("merge-base", "HEAD", "main", default="unknown")
    trees = {} if a.no_baseline else {"baseline": photo_path.baseline_tree(a.baseline_tree or a.baseline, work)}
    plan = [(name, tree, []) for name, tree in trees.items()] + [(f"batch {b}", REPO, ["--batch", str(b)])
                                                                for b in batches]
    base_args = ["--device", a.device, "edit", str(folder), "--attr", "smile", "--detector", a.detector]
    import torch

    res = {"device": a.device, "device_name": torch.cuda.get_device_name() if a.device == "cuda" else
           f"{os.cpu_count()} CPU cores", "count": a.count, "photos": str(a.photos),
           "distinct": len({p.resolve() for p in photos}), "detector": a.detector,
           "threads": os.environ.get("OMP_NUM_THREADS"), "baseline": a.baseline,
           "baseline_commit": photo_path._git("rev-parse", a.baseline, default=a.baseline),
           "current_commit": photo_path._git("rev-parse", "HEAD", default=os.environ.get("FACEEDIT_COMMIT", "unknown")),
           "dirty": bool(photo_path._git("status", "--porcelain", "-uno", default="")), "repeats": a.repeats,
           "runs": {name: [] for name, _, _ in plan}, "diff": {}}
    if a.no_baseline:
        res["baseline"] = res["baseline_commit"] = "none"
    for _, tree, extra in plan:  # one untimed run each on a few photos: .pyc files written, the file cache warm
        warm = work / "warm_photos"
        if not warm.exists():
            batch_scaling.replicate(Path(a.photos), warm, 2)
        run_edit(tree, [*base_args[:3], str(warm), *base_args[4:], *extra], work / "warm_out")
        subprocess.run(["rm", "-rf", str(work / "warm_out")], check=True)
    for rep in range(a.repeats):
        for name, tree, extra in plan:
            dest = work / f"out_{name.replace(' ', '')}_{rep}"
            r = run_edit(tree, [*base_args, *extra], dest)
            res["runs"][name].append(r)
            print(f"{name} (run {rep + 1}): {r['run_rate']} photos/s run, {r['wall_rate']:.2f} wall, "
                  f"{r['wall_s']:.1f} s", flush=True)
    if trees:
        for name, _, _ in plan[1:]:
            res["diff"][name] = max_diff(work / "out_baseline_0", work / f"out_{name.replace(' ', '')}_0")
    text = report(res)
    photo_path.write_report(Path(a.out), f"folder_edit_{a.device}", res, text)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
