"""Where the time of `faceedit edit PHOTO --attr smile` goes, for the working tree and a baseline revision.

The whole photo path is timed for two code trees in the same run: the working tree
("current") and the tree of a git revision (``--baseline``, default ``main``), extracted with
``git archive`` into a temporary folder (default: ``git merge-base HEAD main``, the code this
branch started from). Each tree runs in its own fresh Python processes (the
same interpreter and packages), whose imports of ``faceedit`` resolve to that tree, so the
baseline is the code as it was, not a re-enactment of it. Runs of the two trees alternate
(baseline, current, baseline, ...), and the load average is recorded with every figure.

Two measurements per tree:

* ``cli``: wall time of the README's command in a fresh process (``faceedit edit PHOTO --attr
  smile --out TMP``; start-up, imports, model loading and writing included), ``--repeats``
  times, median and range; once for the photo and once for the folder (``faceedit edit DIR``,
  per photo). The environment is the caller's: with ``OMP_NUM_THREADS`` unset each tree runs
  with the thread count it would choose itself (torch's default, or faceedit's own choice).
  Each run waits for the one-minute load average to fall below ``--max-load`` (0.3) first, so
  that the runs before it (and other users of a shared machine) do not make it choose one
  thread; the load at its start is recorded. Where the one photo's time went is read from
  the stage times the command records itself (its ``*_edit.json``), the rest of the wall
  time being Python's start-up, the imports and the exit.
* ``stages``: one fresh process per tree times each stage of the chain with the public
  functions both trees have: decode (``load_image``), detect (``detect_faces``, the tree's
  default search), landmarks (``landmarks68_averaged`` on the largest face), warp
  (``align_landmarks`` with the model's recipe), invert (``Pipeline.invert``, the default
  method), edit, synthesize (reconstruction and edit), paste back, and encode + write
  (``faceedit.outputs.write_edit``: the photo PNG, crops, latent, JSON). The first photo is the
  cold path (model files loaded on first use; ``import torch`` and ``Pipeline()`` are rows of
  their own), the folder's photos after it the warm one (median per photo). Threads:
  ``--threads`` (default 1, both trees), set before torch loads.

Examples::

    python bench/scripts/photo_path.py                                   # CPU, the default photo and folder
    python bench/scripts/photo_path.py --device cuda --repeats 5         # on the GPU machine
    python bench/scripts/photo_path.py --baseline 495cfd4 --photo examples/astronaut.jpg

Writes ``photo_path_<device>.json`` and ``photo_path_<device>.md`` under ``--out`` (default
``bench/results/photo_path``) and prints the markdown tables last.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FACEEDIT_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "datasets" / "photos"
DEFAULT_PHOTO = PHOTOS / "face_recognition__knn_examples_obama1.jpg"  # 1480x832, 1.2 MP, one face
# The folder: photos of 1-2 MP with one face each (dlib finds it), from the in-the-wild set.
DEFAULT_FOLDER = ("face_recognition__knn_examples_alex_lacamoire1.jpg", "face_recognition__knn_examples_obama1.jpg",
                  "face_recognition__knn_examples_train_biden_biden2.jpg", "face_recognition__obama.jpg",
                  "facenet__kate_siegel_1.jpg", "insightface__RD_d1.jpeg", "insightface__bulk_woman_search.jpeg",
                  "insightface__bulk_yifei.jpg")
ROOMS = ("core", "networks", "checkpoints", "alignment", "metrics", "inversion", "editing", "training", "bench")
STAGES = ("decode", "detect", "landmarks", "warp", "invert", "edit", "synthesize", "paste", "encode+write")

# Run first in every child process: imports of faceedit.* come from the tree in FACEEDIT_TREE.
BOOT = r"""
import importlib.util, os, sys
from importlib.machinery import PathFinder
TREE = os.environ["FACEEDIT_TREE"]
ROOMS = {ROOMS!r}
class TreeFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        parts = name.split(".")
        if parts[0] != "faceedit":
            return None
        if len(parts) == 1:
            folder = os.path.join(TREE, "faceedit")
        elif len(parts) == 2 and parts[1] in ROOMS:
            folder = os.path.join(TREE, parts[1])
        else:
            return PathFinder.find_spec(name, path)
        return importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
sys.meta_path.insert(0, TreeFinder)
""".replace("{ROOMS!r}", repr(ROOMS))


def _child_env(tree: Path, threads: str | None) -> dict:
    env = dict(os.environ, FACEEDIT_TREE=str(tree))
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    return env


def _load() -> float:
    return round(os.getloadavg()[0], 2)


#: Before each timed command run: wait up to QUIET["wait_s"] seconds for the one-minute load average
#: to fall below QUIET["max_load"] (the machine may be shared; the load is recorded with every figure).
QUIET = {"max_load": 0.3, "wait_s": 600.0}


def _wait_for_quiet() -> float:
    """Wait (see :data:`QUIET`) for a quiet machine; the load average it then has."""
    t0 = time.monotonic()
    while _load() >= QUIET["max_load"] and time.monotonic() - t0 < QUIET["wait_s"]:
        time.sleep(2.0)
    return _load()


def run_cli(tree: Path, args: list, out: Path, threads: str | None) -> dict:
    """Wall seconds of ``faceedit ARGS --out OUT`` in a fresh process on ``tree``, after a wait for a quiet
    machine, with the load average at its start and the stage times the command recorded (``timings``
    of its ``*_edit.json``; a folder run: the first photo's)."""
    code = BOOT + "sys.argv = ['faceedit'] + sys.argv[1:]\nfrom faceedit.cli import main\nmain()\n"
    shutil.rmtree(out, ignore_errors=True)
    load = _wait_for_quiet()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args, "--out", str(out)], env=_child_env(tree, threads),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"faceedit {' '.join(args)} failed on {tree}:\n{p.stderr[-2000:]}")
    records = sorted(out.glob("*_edit.json"))
    timings = json.loads(records[0].read_text()).get("timings", {}) if records else {}
    return {"wall_s": wall, "load": load, "timings": timings}


# -- the stages, run inside the child process (python photo_path.py _stages ...) ----------------
def _accepted(fn, kw: dict) -> dict:
    """The keywords of ``kw`` that ``fn`` takes (a baseline tree's functions may lack the newer ones)."""
    import inspect

    params = inspect.signature(fn).parameters
    return {k: v for k, v in kw.items() if k in params}


def _stages(photos: list, device: str, out: Path, detector: str = "dlib", variant: dict | None = None) -> dict:
    t0 = time.perf_counter()
    import torch

    t_torch = time.perf_counter() - t0
    import faceedit
    from faceedit import outputs
    from faceedit.alignment import align_landmarks, detect_faces, landmarks68_averaged
    from faceedit.pipeline import EditResult, FaceEdit

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pipe = faceedit.Pipeline(device=device, detector=detector, **_accepted(faceedit.Pipeline, variant or {}))
    t_pipe = time.perf_counter() - t0
    from faceedit.defaults import DEFAULT_STRENGTH as strength  # the tree's own default, as its CLI edits

    adev = getattr(pipe, "align_device", None)  # where this tree's pipeline runs MTCNN (None: the CPU)
    on = {"device": str(adev)} if adev is not None else {}
    rows = []
    for path in photos:
        t, clock = {}, time.perf_counter

        def mark(name, start):
            sync()
            t[name] = clock() - start
            return clock()

        s = clock()
        photo = faceedit.load_image(path)
        s = mark("decode", s)
        det = max(detect_faces(photo, detector, **_accepted(detect_faces, on)), key=lambda d: d.size)
        s = mark("detect", s)
        if detector == "mtcnn":  # as align_photo's default mtcnn5 landmarks: refined, calibrated, QuadNet
            from faceedit.alignment.mtcnn5 import calibrate_mtcnn5, mtcnn5_refined
            from faceedit.alignment.quadnet import quadnet_points

            lm = quadnet_points(photo, calibrate_mtcnn5(mtcnn5_refined(photo, det.box, **_accepted(mtcnn5_refined, on))),
                                **_accepted(quadnet_points, on))
        else:
            lm = landmarks68_averaged(photo, det.box)
        s = mark("landmarks", s)
        face = align_landmarks(photo, lm, pipe.recipe, score=det.score, index=0, detector=detector)
        s = mark("warp", s)
        lat = pipe.invert([face])[0]
        s = mark("invert", s)
        edited = pipe.edit(lat, {"smile": strength})
        s = mark("edit", s)
        recon, crop = pipe.synthesize(lat)[0], pipe.synthesize(edited)[0]
        s = mark("synthesize", s)
        pasted, mask = pipe.paste_back(photo, face, crop, recon)
        s = mark("paste", s)
        res = EditResult(photo=pasted, input=photo, faces=[FaceEdit(face=face, latent=lat, edited=edited,
                                                                   reconstruction=recon, crop=crop, mask=mask)],
                         edits={"smile": strength})
        outputs.write_edit(out, Path(path).stem, path, res, pairs={"smile": strength}, layers=None,
                           inversion={"method": pipe.method}, unit="std", model_id=pipe.model_id, timings={})
        mark("encode+write", s)
        rows.append({"photo": str(path), "size": list(photo.shape[1::-1]), "steps": lat.meta.get("steps"),
                     "graph": lat.meta.get("cuda_graphs", "off"), "align_device": on.get("device", "cpu"),
                     "detect_scale": det.scale, **t})
    return {"import_torch_s": t_torch, "pipeline_s": t_pipe, "method": pipe.method, "torch_threads":
            torch.get_num_threads(), "photos": rows, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPU cores"}


def run_stages(tree: Path, photos: list, device: str, out: Path, threads: str, detector: str = "dlib",
               variant: dict | None = None) -> dict:
    code = BOOT + f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\nimport photo_path\n" \
                  "photo_path._child_main()\n"
    load = _wait_for_quiet()
    p = subprocess.run([sys.executable, "-c", code, device, detector, str(out), json.dumps(variant or {}),
                        *map(str, photos)],
                       env=_child_env(tree, threads), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the stage run failed on {tree}:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["load"] = load
    return res


def _pool_stage_runs(runs: list) -> dict:
    """Several stage runs of one tree as one: the cold figures their median, the warm photos all of them."""
    first = runs[0]
    cold = {k: _med([r["photos"][0][k] for r in runs]) for k in STAGES}
    return {"import_torch_s": _med([r["import_torch_s"] for r in runs]), "pipeline_s": _med([r["pipeline_s"] for r in runs]),
            "method": first["method"], "torch_threads": first["torch_threads"], "loads": [r["load"] for r in runs],
            "torch": first["torch"], "device_name": first["device_name"],
            "photos": [{**first["photos"][0], **cold}] + [p for r in runs for p in r["photos"][1:]], "runs": runs}


def _child_main():
    device, detector, out, variant, *photos = sys.argv[1:]
    print(json.dumps(_stages(photos, device, Path(out), detector, json.loads(variant))))


# -- the report ------------------------------------------------------------------------------------
def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def _fmt(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def report(res: dict) -> str:
    names = ("baseline", "current")
    cur = res["stages"]["current"]
    lines = [f"# The photo path, {res['device']} ({cur['device_name']}, torch {cur['torch']})", "",
             f"baseline = `{res['baseline']}` ({res['baseline_commit'][:10]}), current = the working tree "
             f"({res['current_commit'][:10]}{', with uncommitted changes' if res['dirty'] else ''}); "
             f"photo `{Path(res['photo']).name}` ({res['photo_size'][0]}x{res['photo_size'][1]}), folder of "
             f"{len(res['folder'])} photos of 1-2 MP; load average {res['load_start']} at the start, "
             f"{res['load_end']} at the end.", "",
             "## The README's command, fresh process (wall, median of "
             f"{res['repeats']}; OMP_NUM_THREADS {res['cli_threads'] or 'unset'}"
             + (f"; each run started once the load average was below {res['max_load']}"
                if res.get("max_load") not in (None, float("inf")) else "") + ")", "",
             "| run | baseline | current | speed-up | load average |", "| --- | --- | --- | --- | --- |"]
    for key, label in (("photo", "one photo"), ("folder", f"folder, per photo ({len(res['folder'])} photos)")):
        c = [res["cli"][n][key] for n in names]
        if not all(c):
            continue
        meds = [_med([r["wall_s"] for r in x]) / (len(res["folder"]) if key == "folder" else 1) for x in c]
        rng = [f"{min(r['wall_s'] for r in x):.2f}-{max(r['wall_s'] for r in x):.2f} s" for x in c]
        loads = [r["load"] for x in c for r in x]
        lines.append(f"| {label} | {_fmt(meds[0])} ({rng[0]}) | {_fmt(meds[1])} ({rng[1]}) | {_ratio(*meds)} | "
                     f"{min(loads):.2f}-{max(loads):.2f} |")
    lines += command_stages_table(res)
    if res.get("cli_steps"):
        lines += ["", "The current tree's command with `--steps N` (the hybrid's optimisation steps; wall, median):", "",
                  "| steps | wall | range |", "| --- | --- | --- |"]
        for n, runs in res["cli_steps"].items():
            w = [r["wall_s"] for r in runs]
            lines.append(f"| {n} | {_fmt(_med(w))} | {min(w):.2f}-{max(w):.2f} s |")
    st = [res["stages"][n] for n in names]
    lines += ["", f"## Where the time goes ({len(st[0]['runs'])} fresh processes per tree, alternating, "
              f"{res['stage_threads']} thread(s); cold = the first photo, models loaded on first use, median over the "
              f"processes; warm = median over the folder's photos after it, all processes; load average "
              f"{min(st[0]['loads'] + st[1]['loads']):.2f}-{max(st[0]['loads'] + st[1]['loads']):.2f})", "",
              "| stage | baseline cold | current cold | baseline warm | current warm | warm speed-up |",
              "| --- | --- | --- | --- | --- | --- |",
              f"| import torch | {_fmt(st[0]['import_torch_s'])} | {_fmt(st[1]['import_torch_s'])} | | | |",
              f"| Pipeline() (load the generator) | {_fmt(st[0]['pipeline_s'])} | {_fmt(st[1]['pipeline_s'])} | | | |"]
    tot = {n: [0.0, 0.0] for n in names}
    for stage in STAGES:
        cold = [x["photos"][0][stage] for x in st]
        warm = [_med([p[stage] for p in x["photos"][1:]]) for x in st]
        for n, c, w in zip(names, cold, warm):
            tot[n][0] += c
            tot[n][1] += w
        lines.append(f"| {stage} | {_fmt(cold[0])} | {_fmt(cold[1])} | {_fmt(warm[0])} | {_fmt(warm[1])} | "
                     f"{_ratio(*warm)} |")
    lines.append(f"| **sum of the stages** | {_fmt(tot['baseline'][0])} | {_fmt(tot['current'][0])} | "
                 f"{_fmt(tot['baseline'][1])} | {_fmt(tot['current'][1])} | "
                 f"{_ratio(tot['baseline'][1], tot['current'][1])} |")
    lines += ["", f"Inversion: {st[0]['method']}, {st[0]['photos'][0]['steps']} steps (baseline) / "
              f"{st[1]['photos'][0]['steps']} steps (current); torch threads in the stage runs: "
              f"{st[0]['torch_threads']} / {st[1]['torch_threads']}; the current tree's CUDA graphs: "
              f"{st[1]['photos'][-1].get('graph', 'off')}, MTCNN on {st[1]['photos'][-1].get('align_device', 'cpu')} "
              f"(detection on a {st[1]['photos'][-1].get('detect_scale', 1.0):.2f}x copy of the last photo).", ""]
    lines += variants_table(res)
    return "\n".join(lines)


#: The command's recorded stages on its main process's path, in order (``read`` and ``align`` ran in the
#: background worker where ``align_wait`` is recorded, overlapped with the main process's start-up).
MAIN_PATH = ("load", "preload", "align_wait", "invert", "edit", "synthesize", "paste", "write")


def command_stages_table(res: dict) -> list:
    """Where the one-photo command's wall time went, per tree: the median of each stage it recorded
    itself, and the rest of the wall time (Python's start-up, the imports, torch's among them, the
    exit), median over the same runs."""
    runs = {n: res["cli"][n]["photo"] for n in ("baseline", "current")}
    if not all(r and r[0].get("timings") for r in runs.values()):
        return []
    lines = ["", "Where the command's time went (the stages it records itself, median over the runs above; "
             "read and align in the background worker, overlapped with the start-up):", "",
             "| stage | baseline | current |", "| --- | --- | --- |"]
    names = list(dict.fromkeys(k for r in runs.values() for x in r for k in x["timings"]))
    for k in [*MAIN_PATH, *[n for n in names if n not in MAIN_PATH]]:
        if k not in names:
            continue
        cells = [_fmt(_med([x["timings"][k] for x in r])) if all(k in x["timings"] for x in r) else "-"
                 for r in runs.values()]
        lines.append(f"| {k} | {cells[0]} | {cells[1]} |")
    rest = [_med([x["wall_s"] - sum(x["timings"].get(k, 0.0) for k in MAIN_PATH) for x in r]) for r in runs.values()]
    lines.append(f"| the rest: start-up (Python, imports, torch), exit | {_fmt(rest[0])} | {_fmt(rest[1])} |")
    return lines


#: The current tree's settings measured beside its defaults (``--variants``): Pipeline keywords.
VARIANTS = {"cpu-align": {"align_device": "cpu"}, "graphs": {"cuda_graphs": True},
            "reference": {"align_device": "cpu", "cuda_graphs": False}}


def variants_table(res: dict) -> list:
    """The warm stages of the current tree with its defaults and with each of ``--variants`` (median per photo)."""
    names = ["current", *res.get("variants", {})]
    runs = [res["stages"]["current"], *res.get("variants", {}).values()]
    if len(runs) < 2:
        return []
    lines = ["## The current tree's settings, warm (median per photo; " + "; ".join(
        f"{n}: {VARIANTS[n]}" for n in names[1:]) + ")", "", "| stage | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names)]
    tot = [0.0] * len(runs)
    for stage in STAGES:
        warm = [_med([p[stage] for p in x["photos"][1:]]) for x in runs]
        tot = [a + b for a, b in zip(tot, warm)]
        lines.append(f"| {stage} | " + " | ".join(_fmt(w) for w in warm) + " |")
    lines.append("| **sum of the stages** | " + " | ".join(_fmt(t) for t in tot) + " |")
    lines.append("| CUDA graphs / MTCNN on | " + " | ".join(
        f"{x['photos'][-1].get('graph', 'off')[:40]} / {x['photos'][-1].get('align_device', 'cpu')}" for x in runs)
        + " |")
    return [*lines, ""]


def _git(*args, default: str | None = None) -> str:
    """``git ARGS`` in the repository; ``default`` where there is no history (a copied tree)."""
    res = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if res.returncode and default is not None:
        return default
    res.check_returncode()
    return res.stdout.strip()


def baseline_tree(spec: str, work: Path) -> Path:
    """The baseline tree of ``spec``: a folder as it is, a ``git archive`` tar, or a git revision of
    this repository, the last two extracted into ``work / "baseline"``. A tree without shipped
    weights gets this tree's linked in (the benchmarks compare code, not models)."""
    if Path(spec).is_dir():
        tree = Path(spec)
    else:
        tree = work / "baseline"
        tree.mkdir(parents=True)
        if Path(spec).is_file():
            subprocess.run(["tar", "-x", "-C", str(tree), "-f", spec], check=True)
        else:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", spec], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    weights = tree / "checkpoints" / "weights"
    if weights.is_symlink() and not weights.exists():
        weights.unlink()  # a link made on another machine: its target is not here
    if not weights.exists():
        weights.symlink_to(REPO / "checkpoints" / "weights")
    return tree


def write_report(out: Path, stem: str, res: dict, text: str) -> None:
    """``STEM.json`` (the figures) and ``STEM.md`` (the tables) under ``out``, and the tables printed last."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(text)
    print(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=None, help="git revision of the baseline tree [default: where this "
                    "branch left main, git merge-base HEAD main]")
    ap.add_argument("--baseline-tree", default=None, help="the baseline tree as a folder or a `git archive` tar, for "
                    "a copy of the repository without its history (a GPU machine); with --baseline naming its "
                    "revision. Where it leaves out checkpoints/weights, the working tree's weights are linked in")
    ap.add_argument("--photo", default=str(DEFAULT_PHOTO), help="the one photo")
    ap.add_argument("--folder", default=None, help="a folder of photos [default: 8 photos of 1-2 MP from "
                    "../shared/datasets/photos, linked into a temporary folder]")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--detector", default="dlib", choices=["dlib", "mtcnn"], help="the face detector of every run "
                    "(mtcnn where dlib's landmark model is not installed, as on the GPU machine)")
    ap.add_argument("--repeats", type=int, default=5, help="fresh-process runs of the command per tree")
    ap.add_argument("--cli-threads", default=None, help="OMP_NUM_THREADS for the command runs [default: as set "
                    "in this environment, usually unset: each tree chooses]")
    ap.add_argument("--threads", default="1", help="OMP_NUM_THREADS for the stage runs")
    ap.add_argument("--stage-repeats", type=int, default=2, help="stage runs per tree (fresh processes, alternating)")
    ap.add_argument("--cli-steps", default="", help="also time the current tree's command with --steps N for each "
                    "N of this comma-separated list (what the hybrid's CPU step count costs)")
    ap.add_argument("--variants", default="", help="also time the current tree's stages with these settings, "
                    f"comma-separated, of: {', '.join(VARIANTS)} (e.g. MTCNN on the CPU against the GPU)")
    ap.add_argument("--no-folder-cli", action="store_true", help="leave out the folder command runs (a short GPU call)")
    ap.add_argument("--max-load", type=float, default=QUIET["max_load"], help="before each timed command run, wait "
                    "for the one-minute load average to fall below this (0 or less: no wait)")
    ap.add_argument("--max-wait", type=float, default=QUIET["wait_s"], help="seconds to wait for it before running "
                    "anyway (the load is recorded with every run)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if a.baseline_tree and not a.baseline:
        ap.error("--baseline-tree needs --baseline naming the revision it holds")
    a.baseline = a.baseline or _git("merge-base", "HEAD", "main")
    QUIET.update(max_load=a.max_load if a.max_load > 0 else float("inf"), wait_s=a.max_wait)
    out = Path(a.out)
    work = Path(tempfile.mkdtemp(prefix="photo_path_"))
    try:
        base = baseline_tree(a.baseline_tree or a.baseline, work)
        trees = {"baseline": base, "current": REPO}
        if a.folder:
            folder = Path(a.folder)
        else:
            folder = work / "folder"
            folder.mkdir()
            for name in DEFAULT_FOLDER:
                (folder / name).symlink_to(PHOTOS / name)
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        from PIL import Image

        with Image.open(a.photo) as im:
            size = list(im.size)
        res = {"device": a.device, "detector": a.detector, "baseline": a.baseline,
               "baseline_commit": _git("rev-parse", a.baseline, default=a.baseline),
               "current_commit": _git("rev-parse", "HEAD", default=os.environ.get("FACEEDIT_COMMIT", "unknown")),
               "dirty": bool(_git("status", "--porcelain", "-uno", default="")),
               "photo": a.photo, "photo_size": size, "folder": [str(p) for p in photos], "repeats": a.repeats,
               "cli_threads": a.cli_threads or os.environ.get("OMP_NUM_THREADS"), "stage_threads": a.threads,
               "max_load": QUIET["max_load"] if QUIET["max_load"] != float("inf") else None,
               "load_start": _load(), "cli": {n: {"photo": [], "folder": []} for n in trees}, "stages": {}}
        dev = ["--device", a.device]
        det = ["--detector", a.detector]
        for tree in trees.values():  # one untimed run each: the file cache warm, the .pyc files written
            run_cli(tree, [*dev, "edit", a.photo, *det, "--attr", "smile"], work / "warm", a.cli_threads)
        for r in range(a.repeats):
            for name, tree in trees.items():
                res["cli"][name]["photo"].append(run_cli(tree, [*dev, "edit", a.photo, *det, "--attr", "smile"],
                                                         work / f"cli_{name}", a.cli_threads))
                print(f"cli photo {name} #{r}: {res['cli'][name]['photo'][-1]}", file=sys.stderr, flush=True)
        for r in range(0 if a.no_folder_cli else max(1, a.repeats // 2)):
            for name, tree in trees.items():
                res["cli"][name]["folder"].append(run_cli(tree, [*dev, "edit", str(folder), *det, "--attr", "smile"],
                                                          work / f"cli_{name}", a.cli_threads))
                print(f"cli folder {name} #{r}: {res['cli'][name]['folder'][-1]}", file=sys.stderr, flush=True)
        res["cli_steps"] = {}
        for r in range(a.repeats if a.cli_steps else 0):
            for n in a.cli_steps.split(","):
                res["cli_steps"].setdefault(n, []).append(run_cli(
                    REPO, [*dev, "edit", a.photo, *det, "--attr", "smile", "--steps", n], work / "cli_steps", a.cli_threads))
                print(f"cli --steps {n} #{r}: {res['cli_steps'][n][-1]}", file=sys.stderr, flush=True)
        runs = {n: [] for n in trees}
        for r in range(a.stage_repeats):  # alternating, so that both trees see the same spells of load
            for name, tree in trees.items():
                runs[name].append(run_stages(tree, [a.photo, *photos], a.device, work / f"stages_{name}", a.threads,
                                             a.detector))
                print(f"stages {name} #{r}: done", file=sys.stderr, flush=True)
        res["stages"] = {n: _pool_stage_runs(x) for n, x in runs.items()}
        res["variants"] = {}
        for v in variants:
            res["variants"][v] = _pool_stage_runs([run_stages(REPO, [a.photo, *photos], a.device, work / f"stages_{v}",
                                                              a.threads, a.detector, VARIANTS[v])])
            print(f"stages current ({v}): done", file=sys.stderr, flush=True)
        res["load_end"] = _load()
        text = report(res)
        write_report(out, f"photo_path_{a.device}", res, text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
