"""Photos/s of `faceedit invert DIR` at 1, 2, ... processes (torchrun), and where the time goes.

A folder of real photos (``--photos``, default ``../shared/datasets/photos``, replicated under
new names up to ``--count``) is inverted once per process count of ``--nproc`` (one
``torchrun --standalone --nproc_per_node N`` launch each, counts above the GPUs present skipped
on CUDA), into a fresh folder each time, with the same settings. For each launch:

* photos/s over the run itself (rank 0's plan to the last rank's end; model loading and
  start-up left out) and over the launch's wall time (everything), the scaling efficiency
  (photos/s at N over N times photos/s at 1), faces, failures;
* where the time of the processes went, summed over them and divided by the photos: reading
  and aligning (in the loader workers, beside the process), waiting for the workers (the part
  of the alignment the GPU did not hide), inverting, writing.

Where alignment's own time goes (decode, detect, landmarks, warp) is measured once, in one
process, over ``--stage-photos`` of the photos, by timing the functions ``align_photo`` calls
(the same code the workers run). With ``--baseline`` the folder is also inverted by the old
single-process path, the ``faceedit invert DIR`` of another tree (a git revision, extracted with
``git archive``, or a folder holding such a tree), in a fresh process, with the same settings:
its wall photos/s is the row the 1-process launch is compared with, and its images are compared
with those of the 1-process launch.

Every child runs the working tree's code (``bench/scripts/photo_path.py``'s import hook: nothing
needs installing), with ``OMP_NUM_THREADS=1`` unless set. On a machine without dlib's landmark
model (the GPU machine), ``--detector auto`` takes MTCNN; ``--prepare DIR`` (run where the
packages are) copies the photos, facenet-pytorch (and requests, which it imports) and the
baseline tree into DIR so that DIR can travel with the repository.

Examples::

    nice -n 10 python bench/scripts/batch_scaling.py --count 32 --nproc 1,2 --baseline main   # CPU here
    python bench/scripts/batch_scaling.py --prepare .gpu/batch --baseline main               # before a GPU run
    python bench/scripts/batch_scaling.py --device cuda --nproc 1 --carried .gpu/batch --out $OUT
    python bench/scripts/batch_scaling.py --device cuda --nproc 1,2,4,8 --count 2000 --carried .gpu/batch --no-baseline

Writes ``batch_scaling_<device>.json`` and ``.md`` under ``--out`` (default
``bench/results/batch_scaling``) and prints the markdown tables last.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import photo_path  # noqa: E402 - the import hook (BOOT), the child environment, git

if os.environ.get("FACEEDIT_TREE"):  # a child (a rank, or a loader worker it spawns): faceedit from that tree
    exec(photo_path.BOOT)  # noqa: S102 - this repository's own hook
for extra in os.environ.get("FACEEDIT_BENCH_SITE", "").split(os.pathsep):
    if extra and extra not in sys.path:
        sys.path.append(extra)  # packages carried to a machine that lacks them, after its own

SHARED_PHOTOS = photo_path.PHOTOS
#: What the old path's process runs after the import hook: the carried packages after its own.
SITE = ("for extra in os.environ.get('FACEEDIT_BENCH_SITE', '').split(os.pathsep):\n"
        "    if extra and extra not in sys.path:\n        sys.path.append(extra)\n")
STAGES = ("decode", "detect", "landmarks", "warp")
#: Settings of the working tree measured beside its defaults at one process (``--variants``).
VARIANTS = {"cpu-align": {"pipeline": {"align_device": "cpu"}}, "graphs": {"pipeline": {"cuda_graphs": True}},
            "reference": {"pipeline": {"align_device": "cpu", "cuda_graphs": False}}, "batch32": {"batch": 32},
            "batch64": {"batch": 64}}
RUN_STAGES = ("read", "align", "wait", "invert", "write")


# ----------------------------------------------------------------------------- inside a launch
def _rank_job(job: dict) -> None:
    """One rank of a launch: invert the folder, rank 0 writes the run's figures to ``job["result"]``."""
    from faceedit.batchrun import launched
    from faceedit.pipeline import Pipeline

    t0 = time.perf_counter()
    with launched(job["device"]) as (dist, device):
        pipe = Pipeline(job["model"], device=device, detector=job["detector"],
                        invert_options={k: v for k, v in (("steps", job["steps"]),) if v is not None},
                        **photo_path._accepted(Pipeline, job.get("pipeline", {})))
        t_load = time.perf_counter() - t0
        photos = sorted(Path(job["photos"]).iterdir())
        run = pipe.invert_files(photos, job["out"], batch_size=job["batch"], quiet=True, workers=job["workers"],
                                dist=dist)
        if dist.is_main:
            import torch

            Path(job["result"]).write_text(json.dumps({
                "rate": run.rate, "faces": len(run.records), "failures": len(run.failures), "load_s": t_load,
                "method": pipe.method, "steps": run.records[0]["steps"] if run.records else None,
                "world_size": dist.world_size, "torch": torch.__version__,
                "align_device": str(getattr(pipe, "align_device", None) or "cpu"),
                "cuda_graphs": getattr(pipe, "cuda_graphs", "absent"),
                "device_name": torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()} CPU cores"}))


def _stage_job(job: dict) -> None:
    """Decode, detect, landmarks and warp of the photos in one process, through ``align_photo``'s own calls."""
    from faceedit.alignment import FaceNotFoundError, align_photo
    from faceedit.core.images import load_image
    from faceedit.pipeline import model_recipe
    from faceedit.checkpoints.registry import load_model

    align_mod = importlib.import_module("faceedit.alignment.align")  # the package's `align` is a function
    spent = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    for attr, stage in (("detect_faces", "detect"), ("landmarks68", "landmarks"), ("landmarks68_averaged", "landmarks"),
                        ("mtcnn5_refined", "landmarks"), ("calibrate_mtcnn5", "landmarks"),
                        ("quadnet_points", "landmarks"), ("align_landmarks", "warp")):
        setattr(align_mod, attr, timed(stage, getattr(align_mod, attr)))
    m = load_model(job["model"])
    recipe = model_recipe(m.config, m.G.resolution)
    rows = []
    for p in job["paths"]:
        spent.clear()
        t = time.perf_counter()
        photo = load_image(p)
        spent["decode"] = time.perf_counter() - t
        try:
            faces = len(align_photo(photo, recipe=recipe, detector=job["detector"], face="largest",
                                    try_rotations=True).faces)
        except FaceNotFoundError:  # a photo without a face still costs its search; any other error stops the run
            faces = 0
        rows.append({"photo": Path(p).name, "faces": faces, **{k: spent.get(k, 0.0) for k in STAGES}})
    Path(job["result"]).write_text(json.dumps(rows))


# ----------------------------------------------------------------------------- the parent
def _env(tree: Path, site: list, home: Path) -> dict:
    env = photo_path._child_env(tree, None)  # OMP_NUM_THREADS as set here; unset, each process chooses
    env.update(FACEEDIT_BENCH_SITE=os.pathsep.join(map(str, site)), FACEEDIT_HOME=str(home))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _child(mode: str, job: dict, env: dict, nproc: int = 0) -> float:
    """Run ``_rank_job`` / ``_stage_job`` in fresh processes (a torchrun launch of ``nproc``); wall seconds."""
    args = [str(Path(__file__).resolve()), f"--_{mode}", json.dumps(job)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
           if nproc else [sys.executable, *args])
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{mode} ({nproc or 1} process(es)) failed:\n{p.stderr[-4000:]}")
    return wall


def replicate(src: Path, dest: Path, count: int) -> list:
    """``count`` photos in ``dest``: the photos of ``src`` in turn, linked under new names (``p0007_<name>``)."""
    from faceedit.inputs import folder_photos

    photos = folder_photos(src)
    if not photos:
        raise SystemExit(f"no photos in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        p = photos[i % len(photos)]
        q = dest / f"p{i:05d}_{p.name}"
        try:
            q.symlink_to(p.resolve())
        except OSError:
            shutil.copy(p, q)
        out.append(q)
    return out


def pick_detector(choice: str) -> str:
    """``auto``: dlib where dlib and its 68-point landmark model are installed, else MTCNN."""
    if choice != "auto":
        return choice
    try:
        import dlib  # noqa: F401

        from faceedit.alignment.models import model_file

        model_file("shape_predictor_68_face_landmarks.dat")
        return "dlib"
    except Exception:  # noqa: BLE001 - any reason dlib cannot align here
        if importlib.util.find_spec("facenet_pytorch") is None:
            raise SystemExit("neither dlib (with its landmark model) nor facenet-pytorch is importable; run "
                             "--prepare DIR where they are and pass --carried DIR") from None
        return "mtcnn"


def prepare(dest: Path, baseline: str | None, photos: Path) -> None:
    """Copy what a run needs onto a machine that lacks it: the photos, facenet-pytorch (and the
    pure-Python packages it imports), pytorch-msssim, the baseline tree without its weights (the
    same as this tree's)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(photos, dest / "photos", dirs_exist_ok=True)
    site = dest / "site"
    for name in ("facenet_pytorch", "requests", "urllib3", "idna", "charset_normalizer", "certifi", "pytorch_msssim"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            print(f"not found here, not copied: {name}", file=sys.stderr)
            continue
        shutil.copytree(list(spec.submodule_search_locations)[0], site / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    if baseline:
        rev = photo_path._git("rev-parse", baseline)
        if subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", rev, "HEAD", "--", "checkpoints/weights"]).returncode:
            raise SystemExit(f"the shipped weights differ between {baseline} and HEAD: the baseline needs its own")
        tree = dest / "baseline"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "--", ".", ":(exclude)checkpoints/weights"],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        (dest / "baseline.txt").write_text(f"{baseline} {rev}\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"prepared {dest}: {size / 2**20:.1f} MiB (photos, site packages{', baseline tree' if baseline else ''})")


def _commit() -> str | None:
    """This tree's commit, where git and the repository's history are at hand."""
    try:
        return photo_path._git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return None


def _gpus(device: str) -> int:
    if device != "cuda":
        return 1 << 30
    import torch

    return torch.cuda.device_count()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200, help="photos in the folder (the photos replicated)")
    ap.add_argument("--nproc", default="1,2", help="process counts, comma-separated (above the GPUs present: skipped)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="faces64")
    ap.add_argument("--batch", type=int, default=16, help="faces per inversion batch (and photos per group)")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps [default: the method's on the device]")
    ap.add_argument("--detector", default="auto", choices=["auto", "dlib", "mtcnn", "dlib-cnn"])
    ap.add_argument("--workers", type=int, default=None, help="loader workers per process [default: the cores per "
                    "process, less one]")
    ap.add_argument("--baseline", default=None, help="also time the old single-process path: a git revision, or a "
                    "folder holding its tree")
    ap.add_argument("--no-baseline", action="store_true", help="leave the old path out, even when --carried has it")
    ap.add_argument("--photos", default=None, help="folder of photos [default: ../shared/datasets/photos, or "
                    "CARRIED/photos]")
    ap.add_argument("--stage-photos", type=int, default=16, help="photos the alignment stages are timed on")
    ap.add_argument("--carried", default=None, help="a folder made by --prepare: its photos, packages and baseline")
    ap.add_argument("--prepare", default=None, metavar="DIR", help="only copy what a run needs into DIR (see above)")
    ap.add_argument("--variants", default="", help="also run one process with these settings of the working tree, "
                    f"comma-separated, of: {', '.join(VARIANTS)} (alignment on the CPU workers against the GPU, the "
                    "eager step against the CUDA graph, larger inversion batches)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "batch_scaling"))
    ap.add_argument("--_rank", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_stage", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._rank:
        _rank_job(json.loads(a._rank))
        return 0
    if a._stage:
        _stage_job(json.loads(a._stage))
        return 0
    carried = Path(a.carried).resolve() if a.carried else None
    photos_src = Path(a.photos) if a.photos else (carried / "photos" if carried else SHARED_PHOTOS)
    if a.prepare:
        prepare(Path(a.prepare), a.baseline, photos_src)
        return 0
    site = [carried / "site"] if carried and (carried / "site").is_dir() else []
    sys.path.extend(str(s) for s in site)
    if a.baseline is None and carried and (carried / "baseline").is_dir():
        a.baseline = str(carried / "baseline")
    if a.no_baseline:
        a.baseline = None
    detector = pick_detector(a.detector)
    out = Path(a.out)
    work = Path(tempfile.mkdtemp(prefix="batch_scaling_"))
    env = _env(REPO, site, work / "home")
    gpus = _gpus(a.device)
    counts = [n for n in (int(x) for x in a.nproc.split(",")) if n <= gpus]
    skipped = [int(x) for x in a.nproc.split(",") if int(x) > gpus]
    try:
        paths = replicate(photos_src, work / "photos", a.count)
        res = {"device": a.device, "count": a.count, "distinct_photos": len({p.resolve() for p in paths}),
               "batch": a.batch, "steps": a.steps, "detector": detector, "model": a.model, "workers": a.workers,
               "nice": os.nice(0), "cores": os.cpu_count(), "omp_threads": env.get("OMP_NUM_THREADS"),
               "commit": _commit(),
               "skipped_nproc": skipped, "load_start": photo_path._load(), "runs": [], "baseline": None}
        job = {"device": a.device, "model": a.model, "detector": detector, "steps": a.steps, "batch": a.batch,
               "workers": a.workers, "photos": str(work / "photos")}
        variants = [v for v in a.variants.split(",") if v]
        for v in variants:
            if v not in VARIANTS:
                raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        plan = [(n, "default") for n in counts] + [(1, v) for v in variants]
        for n, v in plan:
            res_file = work / f"run{n}_{v}.json"
            wall = _child("rank", {**job, **VARIANTS.get(v, {}), "out": str(work / (f"out{n}" if v == "default" else
                                                                                    f"out{n}_{v}")),
                                   "result": str(res_file)}, env, nproc=n)
            r = json.loads(res_file.read_text())
            r.update(nproc=n, wall_s=wall, load=photo_path._load(), variant=v,
                     batch=VARIANTS.get(v, {}).get("batch", a.batch))
            res["runs"].append(r)
            print(f"{n} process(es), {v}: {r['rate']['photos_per_s']:.2f} photos/s (run), {a.count / wall:.2f} (wall)",
                  file=sys.stderr, flush=True)
        if a.baseline:
            tree = photo_path.baseline_tree(a.baseline, work)
            args = ["--device", a.device, "-q", "invert", str(work / "photos"), "--model", a.model, "--batch",
                    str(a.batch), "--detector", detector, *(["--steps", str(a.steps)] if a.steps else [])]
            code = (photo_path.BOOT + SITE + "sys.argv = ['faceedit'] + sys.argv[1:]\n"
                    "from faceedit.cli import main\nmain()\n")
            benv = _env(tree, site, work / "home_baseline")
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code, *args, "--out", str(work / "out_baseline")], env=benv,
                               capture_output=True, text=True)
            wall = time.perf_counter() - t
            if p.returncode not in (0, 1):  # 1: some photos had no face, as in the launches
                raise RuntimeError(f"the baseline failed:\n{p.stderr[-4000:]}")
            res["baseline"] = {"tree": str(a.baseline), "wall_s": wall, "load": photo_path._load(),
                               "same_images": _same_images(work / "out_baseline", work / f"out{counts[0]}")
                               if counts and counts[0] == 1 else None,
                               "faces": len(_records(work / "out_baseline"))}
            print(f"baseline: {a.count / wall:.2f} photos/s (wall)", file=sys.stderr, flush=True)
        stage_paths = [str(p) for p in paths[: a.stage_photos]]
        _child("stage", {"paths": stage_paths, "model": a.model, "detector": detector,
                         "result": str(work / "stages.json")}, env)
        res["stages"] = json.loads((work / "stages.json").read_text())
        res["load_end"] = photo_path._load()
        text = report(res)
        photo_path.write_report(out, f"batch_scaling_{a.device}", res, text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _records(folder: Path) -> list:
    """The face records (``<stem>_<face>.json``) of an inversion folder."""
    import re

    return sorted(p for p in folder.glob("*.json") if re.fullmatch(r".+_\d+\.json", p.name))


def _same_images(a: Path, b: Path) -> dict:
    """How many reconstructions of folder ``a`` are byte-identical to those of ``b`` (same names)."""
    names = sorted(p.name[:-len(".json")] + ".png" for p in _records(a))
    same = sum(1 for n in names if (b / n).is_file() and (a / n).read_bytes() == (b / n).read_bytes())
    return {"compared": len(names), "identical": same}


# ----------------------------------------------------------------------------- the report
def _ms(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def _variant(r: dict) -> str:
    return r.get("variant", "default")


def _label(r: dict) -> str:
    """A run's row label: its process count, and its variant and settings beside the defaults."""
    if _variant(r) == "default":
        extra = f" (MTCNN on {r['align_device']}, graphs {r['cuda_graphs']})" if "align_device" in r else ""
        return f"{r['nproc']}{extra}"
    return f"{r['nproc']}, {_variant(r)} (batch {r.get('batch')}, MTCNN on {r.get('align_device')}, graphs " \
           f"{r.get('cuda_graphs')})"


def report(res: dict) -> str:
    runs, base = res["runs"], res["baseline"]
    first = runs[0] if runs else {}
    dev = first.get("device_name", res["device"])
    lines = [f"# Batch inversion across processes, {res['device']} ({dev}, torch {first.get('torch', '?')})", "",
             f"`faceedit invert DIR` of {res['count']} photos ({res['distinct_photos']} distinct photos of "
             f"../shared/datasets/photos, replicated), model {res['model']}, {first.get('method', '?')} with "
             f"{first.get('steps', '?')} steps, batch {res['batch']}, detector {res['detector']}, loader workers "
             f"{res['workers'] if res['workers'] is not None else 'the default (cores per process less one)'}; "
             f"{res['cores']} cores, OMP_NUM_THREADS {res['omp_threads'] or 'unset (each process chooses)'}, nice "
             f"{res['nice']}, load average "
             f"{res['load_start']} at the start, {res['load_end']} at the end; commit "
             f"{(res['commit'] or 'unknown')[:10]}.", ""]
    if res["skipped_nproc"]:
        lines += [f"Not run (more processes than GPUs here): {', '.join(map(str, res['skipped_nproc']))}.", ""]
    lines += ["photos/s (run) counts from the plan to the last rank's end; photos/s (wall) the whole launch, start-up "
              "and model loading included. Efficiency: photos/s (run) at N over N times that at 1.", "",
              "| processes | photos/s (run) | photos/s (wall) | efficiency | per process | faces | failures | "
              "wall | load average |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    one = next((r["rate"]["photos_per_s"] for r in runs if r["nproc"] == 1 and _variant(r) == "default"), None)
    if base:
        lines.append(f"| old single-process path (baseline) | | {res['count'] / base['wall_s']:.2f} | | | "
                     f"{base['faces']} | | {base['wall_s']:.1f} s | {base['load']} |")
    for r in runs:
        rate = r["rate"]
        eff = f"{rate['photos_per_s'] / (r['nproc'] * one):.2f}" if one and _variant(r) == "default" else ""
        lines.append(f"| {_label(r)} | {rate['photos_per_s']:.2f} | {res['count'] / r['wall_s']:.2f} | {eff} | "
                     f"{rate['per_process']:.2f} | {r['faces']} | {r['failures']} | {r['wall_s']:.1f} s | "
                     f"{r['load']} |")
    if base and base.get("same_images"):
        s = base["same_images"]
        lines += ["", f"Reconstructions of the 1-process launch byte-identical to the baseline's: {s['identical']} of "
                  f"{s['compared']} (the old path fills each batch with the next {res['batch']} faces, so after a "
                  "photo without a face, or with two, its batches are not the fixed groups of photos, and a face's "
                  "last bits depend on its batch)."]
    lines += ["", "## Where the processes' time goes (seconds per photo, summed over the processes)", "",
              "read + align run in the loader workers, beside the process (their sum can pass the wall time); wait "
              "is the part of them the process waited for; invert and write are the process's own.", "",
              "| processes | read | align | wait | invert | write | waiting share of the run |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        st, n = r["rate"]["stages"], max(1, r["rate"]["photos"])
        busy = r["rate"]["seconds"] * r["nproc"]
        lines.append(f"| {_label(r)} | " + " | ".join(_ms(st.get(k, 0.0) / n) for k in RUN_STAGES)
                     + f" | {st.get('wait', 0.0) / busy:.0%} |")
    rows = res["stages"]
    lines += ["", f"## Alignment's stages, one process, {len(rows)} photos (mean per photo; detect includes the "
              "rotated tries of photos without a face)", "", "| " + " | ".join(STAGES) + " | total |",
              "| " + " | ".join("---" for _ in STAGES) + " | --- |"]
    means = [statistics.fmean(r[k] for r in rows) if rows else 0.0 for k in STAGES]
    lines.append("| " + " | ".join(_ms(m) for m in means) + f" | {_ms(sum(means))} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
