"""The README's command on a shared CPU: faceedit's own thread choice against fixed thread counts.

Busy-loop processes (``--busy``, one per core they should take) keep the machine loaded; once the
one-minute load average has risen to them, the command runs in fresh processes with
``OMP_NUM_THREADS`` unset (faceedit chooses: :func:`faceedit.core.threads.cpu_threads`, the idle
cores), set to the core count (torch's own default) and set to 1, interleaved, ``--repeats`` times
each. It prints the wall times, the load average before each run and the thread count the
unset runs chose (their own ``-v`` log line); the same with no busy process gives the idle row.

    python bench/scripts/contention.py --busy 0,1 --repeats 3 --out DIR
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT.parent / "shared" / "datasets" / "photos" / "face_recognition__knn_examples_obama1.jpg"


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _wait_load(target: float, timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        load = os.getloadavg()[0]
        if load >= target:
            return load
        time.sleep(2)
    return os.getloadavg()[0]


def run_command(photo: Path, threads: str | None) -> tuple:
    """``(wall seconds, threads it used or None)`` of ``faceedit -v edit PHOTO --attr smile`` in a fresh
    process, ``OMP_NUM_THREADS=threads`` (None: unset, faceedit chooses and logs its choice), into a
    temporary folder."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    out = Path(tempfile.mkdtemp(prefix="contention_"))
    try:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "faceedit", "-v", "edit", str(photo), "--attr", "smile",
                            "--out", str(out)], env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        used = re.search(r"CPU threads: (\d+)", r.stderr)
        return wall, int(used.group(1)) if used else None
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    from faceedit.core.threads import available_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", default="0,1", help="busy-loop process counts to measure under, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photo", default=str(PHOTO))
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cores = available_cores()
    variants = [("faceedit's choice", None), (f"{cores} (torch's default)", str(cores)), ("1", "1")]
    rows = []
    for busy in [int(b) for b in a.busy.split(",")]:
        stop = mp.Event()
        procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in procs:
            p.start()
        try:
            load0 = _wait_load(busy - 0.3, 120) if busy else _wait_idle()
            times = {name: [] for name, _ in variants}
            loads, chosen = [], []
            for _ in range(a.repeats):
                for name, threads in variants:
                    loads.append(os.getloadavg()[0])
                    wall, used = run_command(Path(a.photo), threads)
                    times[name].append(wall)
                    if threads is None:
                        chosen.append(used)
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=5)
        for name, _ in variants:
            ts = times[name]
            rows.append({"busy processes": busy, "threads": name, "median s": statistics.median(ts),
                         "range s": f"{min(ts):.2f}-{max(ts):.2f}", "runs": len(ts),
                         "load average": f"{min(loads):.2f}-{max(loads):.2f}",
                         "faceedit chose": ",".join(str(c) for c in chosen) if name.startswith("faceedit") else "",
                         "load at start": round(load0, 2)})
        print(json.dumps(rows[-len(variants):]), flush=True)
    cols = ["busy processes", "threads", "median s", "range s", "runs", "load average", "faceedit chose"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    table = "\n".join(lines)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "contention.json").write_text(json.dumps({"cores": cores, "photo": a.photo, "rows": rows}, indent=1))
    (out / "contention.md").write_text(
        f"`faceedit edit {Path(a.photo).name} --attr smile` in fresh processes on {cores} cores while busy-loop "
        f"processes run; variants interleaved, {a.repeats} runs each\n\n{table}\n")
    print(table)
    return 0


def _wait_idle(timeout: float = 180) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout and os.getloadavg()[0] > 0.3:
        time.sleep(3)
    return os.getloadavg()[0]


if __name__ == "__main__":
    raise SystemExit(main())
