"""Where a warm process's time goes for one photo on a GPU: the inversion's step by batch and setting, and the edit.

Three measurements in one process, after the models are loaded (start-up is
``photo_path.py``'s to time; everything here is a warm process, as the page or a Python user has):

* **The inversion's step.** ``Pipeline.invert`` (the default method, hybrid on the shipped
  models) of ``B`` aligned faces for each batch of ``--batches`` and each setting of ``--configs``
  (``eager``; ``graphs``: the step replayed from one CUDA graph; ``bf16``: synthesis and the loss
  under bf16 autocast; ``graphs-bf16``; ``graphs-compiled``: ``torch.compile`` of the loss, then
  captured), at ``--short`` and ``--long`` steps, best of ``--reps`` calls each after one untimed
  call (its time, a compilation included, is reported on its own): the cost per step is the slope
  between the two, the fixed cost (encoder, capture, warm-up steps, set-up) the rest. Settings that need
  CUDA are left out on the CPU, and said so.
* **The kernels of an eager step** (CUDA, ``--profile-batches``): ``torch.profiler``'s table of an
  eager ``--short``-step inversion, and the number of CUDA kernels it launched.
* **The whole edit of one photo**, ``Pipeline.edit_file(photo, tmp, {"smile": 1})`` as ``faceedit
  edit`` runs it (read, detect, landmarks, warp, invert, edit, synthesize, paste, write), over the
  first ``--photos-n`` photos ``--reps`` times, with CUDA graphs on (the CUDA default) and off:
  wall per photo (median and best after the first round) and the stage times of the record.

Examples::

    python bench/scripts/gpu_inversion_probe.py --out $OUT                      # the GPU machine, MTCNN
    python bench/scripts/gpu_inversion_probe.py --device cpu --detector dlib --batches 1,4 --configs eager

Writes ``gpu_inversion_probe_<device>.json`` and ``.md`` (and ``kernels_b<B>.txt`` on CUDA) under
``--out`` (default ``bench/results/photo_path``) and prints the tables last.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import photo_path  # noqa: E402 - the default photos, write_report

CONFIGS = {"eager": {}, "graphs": {"cuda_graphs": True}, "bf16": {"amp": "bf16"},
           "graphs-bf16": {"cuda_graphs": True, "amp": "bf16"},
           "graphs-compiled": {"cuda_graphs": True, "compile": "default"}}
NEEDS_CUDA = {name for name, opt in CONFIGS.items() if opt.get("cuda_graphs")}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_invert(pipe, faces: list, batch: int, steps: int, options: dict, reps: int, device: str) -> tuple:
    """Best and median seconds of ``pipe.invert`` of ``batch`` faces (the list repeated) at ``steps``,
    and what the result says of its CUDA graphs."""
    chosen = (faces * (batch // len(faces) + 1))[:batch]
    pipe.invert_options = {"steps": steps, **{k: v for k, v in options.items() if k != "cuda_graphs"}}
    pipe.cuda_graphs = bool(options.get("cuda_graphs", False))
    times, graph = [], None
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        lat = pipe.invert(chosen)
        _sync(device)
        times.append(time.perf_counter() - t)
        graph = lat.meta.get("cuda_graphs")
    return min(times), statistics.median(times), graph


def step_rows(pipe, faces: list, a, device: str) -> list:
    rows = []
    for batch in a.batches:
        for name in a.configs:
            row = {"batch": batch, "config": name}
            if name in NEEDS_CUDA and device != "cuda":
                rows.append({**row, "error": "needs CUDA"})
                continue
            try:
                t = time.perf_counter()  # untimed: first use of the files, cuDNN's choices, a compilation
                time_invert(pipe, faces, batch, a.short, CONFIGS[name], 1, device)
                row["first_call_s"] = time.perf_counter() - t
                short = time_invert(pipe, faces, batch, a.short, CONFIGS[name], a.reps, device)
                long = time_invert(pipe, faces, batch, a.long, CONFIGS[name], a.reps, device)
                per = (long[0] - short[0]) / (a.long - a.short)
                row.update(short_s=short[0], long_s=long[0], long_median_s=long[1], per_step_ms=per * 1e3,
                           fixed_ms=(short[0] - a.short * per) * 1e3, graph=str(long[2]))
            except Exception as e:  # noqa: BLE001 - a setting that fails is a row of the table, the others go on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            rows.append(row)
            print(row, flush=True)
    return rows


def kernel_profiles(pipe, faces: list, a, out: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    found = {}
    for batch in a.profile_batches:
        chosen = (faces * (batch // len(faces) + 1))[:batch]
        pipe.invert_options, pipe.cuda_graphs = {"steps": a.short}, False
        pipe.invert(chosen)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            pipe.invert(chosen)
            torch.cuda.synchronize()
        (out / f"kernels_b{batch}.txt").write_text(
            prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        found[batch] = {"kernels": len(kernels), "kernels_per_step": len(kernels) / a.short,
                        "gpu_ms": sum(getattr(e, "device_time", 0.0) for e in kernels) / 1e3}
    return found


def photo_rows(a, device: str, photos: list) -> dict:
    from faceedit.pipeline import Pipeline

    found = {}
    for graphs in ((True, False) if device == "cuda" else (False,)):
        t = time.perf_counter()
        pipe = Pipeline(a.model, device=device, detector=a.detector, cuda_graphs=graphs)
        pipeline_s = time.perf_counter() - t
        runs = []
        for rep in range(a.reps):
            for photo in photos:
                with tempfile.TemporaryDirectory() as tmp:
                    _sync(device)
                    t0 = time.perf_counter()
                    rec = pipe.edit_file(str(photo), tmp, {"smile": 1.0})
                    _sync(device)
                    runs.append({"photo": photo.name, "round": rep, "wall_s": time.perf_counter() - t0,
                                 "timings": rec.get("timings", {})})
        warm = [r for r in runs if r["round"] >= 1] or runs
        found["graphs" if graphs else "eager"] = {
            "pipeline_s": pipeline_s, "runs": runs,
            "median_s": statistics.median(r["wall_s"] for r in warm), "best_s": min(r["wall_s"] for r in warm),
            "stages": {k: statistics.median(r["timings"].get(k, 0.0) for r in warm)
                       for k in sorted({k for r in warm for k in r["timings"]})}}
    return found


def report(res: dict) -> str:
    lines = [f"# A warm process on {res['device_name']} ({res['device']}, torch {res['torch']}): one photo's inversion "
             "and edit", "", f"Model {res['model']}, detector {res['detector']}, method {res['method']}; "
             f"{res['short']} and {res['long']} steps, best of {res['reps']} calls. Per step: the slope between "
             "the two; fixed: the rest of a call (encoder, warm-up steps, capture, set-up).", "",
             "| batch | setting | per step | fixed | long call | untimed first call | graph |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["steps"]:
        if "error" in r:
            lines.append(f"| {r['batch']} | {r['config']} | {r['error']} | | | | |")
            continue
        lines.append(f"| {r['batch']} | {r['config']} | {r['per_step_ms']:.2f} ms | {r['fixed_ms']:.0f} ms | "
                     f"{r['long_s']:.3f} s | {r['first_call_s']:.2f} s | {r['graph'][:40]} |")
    if res.get("kernels"):
        lines += ["", "| batch | CUDA kernels a step (eager) | GPU time of the call |", "| --- | --- | --- |"]
        lines += [f"| {b} | {k['kernels_per_step']:.0f} | {k['gpu_ms']:.1f} ms |" for b, k in res["kernels"].items()]
    if res.get("photos"):
        stages = sorted({s for p in res["photos"].values() for s in p["stages"]})
        lines += ["", f"The edit of one photo ({res['photos_n']} photos, {res['reps']} rounds; wall after the first "
                  "round):", "", "| inversion steps | median | best | " + " | ".join(stages) + " |",
                  "| --- | --- | --- |" + " --- |" * len(stages)]
        for name, p in res["photos"].items():
            lines.append(f"| {name} | {p['median_s']:.3f} s | {p['best_s']:.3f} s | "
                         + " | ".join(f"{p['stages'][s] * 1e3:.0f} ms" for s in stages) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="faces64")
    ap.add_argument("--detector", default="mtcnn", choices=["dlib", "mtcnn"])
    ap.add_argument("--photos", default=None, help="folder of photos [default: photo_path.py's 8 one-face photos]")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--configs", default="eager,graphs,bf16,graphs-bf16,graphs-compiled")
    ap.add_argument("--short", type=int, default=10, help="steps of the short call")
    ap.add_argument("--long", type=int, default=110, help="steps of the long call (the CUDA hybrid default)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile-batches", default="1,16", help="CUDA: eager kernel profiles of these batches")
    ap.add_argument("--photos-n", type=int, default=4, help="photos of the one-photo edit (0: leave it out)")
    ap.add_argument("--out", default=str(HERE.parents[1] / "bench" / "results" / "photo_path"))
    a = ap.parse_args(argv)
    a.batches = [int(b) for b in a.batches.split(",") if b]
    a.configs = [c for c in a.configs.split(",") if c]
    a.profile_batches = [int(b) for b in a.profile_batches.split(",") if b] if a.device == "cuda" else []
    for c in a.configs:
        if c not in CONFIGS:
            ap.error(f"unknown setting {c!r}; choose from {', '.join(CONFIGS)}")
    if not 0 < a.short < a.long:
        ap.error("--short must be at least 1 and below --long")
    import torch

    from faceedit.pipeline import Pipeline

    photos = (sorted(p for p in Path(a.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
              if a.photos else [photo_path.PHOTOS / n for n in photo_path.DEFAULT_FOLDER])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(a.model, device=a.device, detector=a.detector)
    faces = [f for p in photos for _, f, _ in pipe.align_file(str(p))]
    res = {"device": a.device, "device_name": torch.cuda.get_device_name() if a.device == "cuda" else
           f"{os.cpu_count()} CPU cores", "torch": torch.__version__, "model": a.model, "detector": a.detector,
           "method": pipe.method, "short": a.short, "long": a.long, "reps": a.reps, "photos_n": a.photos_n,
           "faces": len(faces)}
    res["steps"] = step_rows(pipe, faces, a, a.device)
    res["kernels"] = kernel_profiles(pipe, faces, a, out) if a.profile_batches else {}
    res["photos"] = photo_rows(a, a.device, photos[:a.photos_n]) if a.photos_n > 0 else {}
    photo_path.write_report(out, f"gpu_inversion_probe_{a.device}", json.loads(json.dumps(res, default=str)),
                            report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
