"""GPU job: data-parallel training under torchrun at 1..N processes against the plain single process.

Every row is one ``faceedit train`` run of the default 64 px model (``faces64``: MLP mapping,
fresh weights, the shipped models' settings) with the fast step (``--fast``: torch.compile on
CUDA) at one global batch (``--batch``, the same for every row, so that every row trains on the
same batches and their loss curves can be compared step by step):

* ``plain``: ``python -m faceedit --device cuda train ...``, the single-process path;
* ``torchrun N``: ``python -m torch.distributed.run --standalone --nproc_per_node N -m faceedit
  --device cuda train ...`` for each N of ``--nproc`` that this machine has GPUs for (one
  process per GPU; counts above the GPUs present are skipped and said so).

img/s is training images per second (all ranks together) between the ``loss.csv`` row that ends
the warm-up (``--warmup-steps``: the compile and cuDNN's autotuning are in it) and the last
row, on rank 0's clock; ``warm-up s`` is the time from the start of training to that row. The
loss curve is ``loss_G`` / ``loss_D`` per ``loss.csv`` row (means over ``--log-every`` steps);
each row's largest difference to the plain run at the same steps is a column. Runs share one
inductor cache (``--cache-dir``), so only the first pays a cold compile.

The whole job stays within ``--budget-min`` (default 7.5): each run gets ``faceedit train
--minutes`` from what is left, keeping about ``--reserve-min`` for every run still to come, and
a run that meets its budget stops cleanly (its row says how many steps it made).

Run from the checkout with faceedit installed (``pip install --no-deps --no-build-isolation -e .``)::

    python bench/scripts/ddp_train_job.py --out $OUT/ddp_train                    # one H100: plain, torchrun 1
    python bench/scripts/ddp_train_job.py --out $OUT/ddp_train --nproc 1,2,4,8    # several GPUs (issue #21)
    python bench/scripts/ddp_train_job.py --device cpu --tiny --out /tmp/ddp_smoke  # smoke test, no GPU

Writes ``ddp_train.md`` and ``ddp_train.json`` (rows, loss curves, the commands, each run's log
tail) into ``--out``; the run folders go to ``--work`` (checkpoints stay out of ``--out``). The
table is printed last.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

T_START = time.time()
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / ".gpu" / "data" / "faces64_train.npz"
# Quiet runs: no diagnostics, samples or timed checkpoints inside the measured window.
QUIET = ["gsnr_every=0", "profile_every=0", "sample_every_kimg=1e12", "checkpoint_every_min=1e9",
         "console_every=1000000"]
# --tiny: the training tests' toy model (16 px), small enough for two CPU processes.
TINY = ["z_dim=16", "w_dim=16", "mapping_layers=2", "channel_base=128", "channel_max=16", "r1_every=2",
        "pl_every=2"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="Folder for ddp_train.md / ddp_train.json.")
    p.add_argument("--data", default=None, help=f"Train pack [{DEFAULT_DATA.relative_to(REPO)}].")
    p.add_argument("--work", default=None, help="Folder for the run folders [.gpu/ddp_runs; --tiny: OUT/work].")
    p.add_argument("--cache-dir", default=None, help="Inductor cache shared by the runs [.gpu/inductor].")
    p.add_argument("--nproc", default="1", help="Process counts for torchrun rows, e.g. 1,2,4,8 [1].")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (one process per GPU) or cpu.")
    p.add_argument("--batch", type=int, default=512, help="Global batch of every row [512].")
    p.add_argument("--steps", type=int, default=300, help="Steps per run [300].")
    p.add_argument("--warmup-steps", type=int, default=60, help="Steps left out of img/s (compile included) [60].")
    p.add_argument("--log-every", type=int, default=20, help="Steps per loss.csv row [20].")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode of the fast step [default].")
    p.add_argument("--seed", type=int, default=0, help="Seed of every run [0].")
    p.add_argument("--budget-min", type=float, default=7.5, help="Wall-clock budget of the whole job [7.5].")
    p.add_argument("--reserve-min", type=float, default=1.75,
                   help="Minutes kept for each run still to come when a run's budget is set [1.75].")
    p.add_argument("--tiny", action="store_true",
                   help="Toy model (16 px), batch 8, 12 steps, faces64's samples as the pack when --data is absent: a smoke test.")
    a = p.parse_args(argv)
    if a.tiny:
        a.batch, a.steps, a.warmup_steps, a.log_every = 8, 12, 4, 2
        a.reserve_min = min(a.reserve_min, 0.5)
    if a.steps <= a.warmup_steps or a.warmup_steps % a.log_every or a.steps % a.log_every:
        p.error("--steps must exceed --warmup-steps, and both must be multiples of --log-every")
    try:
        a.nproc = sorted({int(n) for n in a.nproc.split(",")})
    except ValueError:
        p.error(f"--nproc takes comma-separated process counts, got {a.nproc!r}")
    if not a.nproc or min(a.nproc) < 1:
        p.error("--nproc counts must be at least 1")
    return a


def tiny_pack(path: Path, n: int = 32) -> Path:
    """A pack of ``n`` faces drawn by the shipped ``faces64`` generator, for the smoke test."""
    import torch

    from faceedit.checkpoints.registry import load_model
    from faceedit.core.images import encode_image, tensor_to_uint8
    from faceedit.core.pack import write_pack

    G = load_model("faces64", device="cpu").G
    with torch.no_grad():
        faces = tensor_to_uint8(G.synthesis(G.mapping(G.sample_z(n, seed=0)), noise_mode="const"))
    write_pack(path, [encode_image(f, "JPEG", 90) for f in faces], {}, [f"g{i}.jpg" for i in range(n)],
               {"recipe": {"name": "faces64", "size": G.resolution}, "split": "train"})
    return path


def train_args(a, data: Path, run_dir: Path, minutes: float) -> list:
    """``faceedit`` arguments of one run (after ``-m faceedit``)."""
    settings = QUIET + [f"log_every={a.log_every}", f"compile_mode={a.compile_mode}"] + (TINY if a.tiny else [])
    args = ["-q", "--device", a.device, "train", "--data", str(data), "--mapping", "mlp", "--fast",
            "--batch", str(a.batch), "--max-steps", str(a.steps), "--minutes", f"{minutes:.3f}", "--seed",
            str(a.seed), "--run-dir", str(run_dir)]
    if a.tiny:
        args += ["--resolution", "16"]
    for s in settings:
        args += ["--set", s]
    return args


def run_one(name: str, launcher: list, a, data: Path, work: Path, minutes: float, env: dict) -> tuple:
    """One training run in its own process group (killed whole at its time limit); its row and curve."""
    run_dir = work / name.replace(" ", "_")
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = launcher + train_args(a, data, run_dir, minutes)
    log_path = work / f"{name.replace(' ', '_')}.log"
    print(f"# {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=minutes * 60 + 45)  # faceedit train stops itself at --minutes
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    secs = time.time() - t0
    tail = log_path.read_text(errors="replace")[-3000:]
    rows = read_loss_csv(run_dir / "loss.csv")
    row = {"run": name, "returncode": rc, "job_s": round(secs, 1), "command": " ".join(cmd), "log_tail": tail,
           **steady_state(rows, a.warmup_steps)}
    curve = [{"step": r["step"], "loss_G": r["loss_G"], "loss_D": r["loss_D"]} for r in rows]
    return row, curve


def read_loss_csv(path: Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        out = []
        for r in csv.DictReader(f):
            out.append({"step": int(float(r["step"])), "kimg": float(r["kimg"]), "minutes": float(r["minutes"]),
                        "loss_G": float(r["loss_G"]), "loss_D": float(r["loss_D"])})
        return out


def steady_state(rows: list, warmup: int) -> dict:
    """img/s between the row at ``warmup`` steps (or the first after it) and the last row."""
    after = [r for r in rows if r["step"] >= warmup]
    out = {"steps": rows[-1]["step"] if rows else 0, "img_per_s": None, "warmup_s": None,
           "finite": all(math.isfinite(r["loss_G"]) and math.isfinite(r["loss_D"]) for r in rows) if rows else None}
    if after:
        out["warmup_s"] = round(after[0]["minutes"] * 60, 1)
    if len(after) >= 2:
        first, last = after[0], after[-1]
        dt = (last["minutes"] - first["minutes"]) * 60
        out["img_per_s"] = (last["kimg"] - first["kimg"]) * 1000 / dt if dt > 0 else None
        tail = after[1:]
        out["mean_loss_G"] = sum(r["loss_G"] for r in tail) / len(tail)
        out["mean_loss_D"] = sum(r["loss_D"] for r in tail) / len(tail)
    return out


def curve_gap(curve: list, ref: list, upto: int | None = None) -> tuple:
    """The largest |loss_G| and |loss_D| differences to ``ref`` at the steps both have (up to step ``upto``)."""
    theirs = {r["step"]: r for r in ref}
    common = [(r, theirs[r["step"]]) for r in curve if r["step"] in theirs and (upto is None or r["step"] <= upto)]
    if not common:
        return None, None
    return (max(abs(a["loss_G"] - b["loss_G"]) for a, b in common),
            max(abs(a["loss_D"] - b["loss_D"]) for a, b in common))


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list) -> str:
    lines = ["| run | processes | batch per process | steps | img/s | img/s per process | vs plain | warm-up s | "
             "job s | mean loss_G | mean loss_D | max dG / dD vs plain, first 100 steps | all steps | finite |",
             "|" + "---|" * 14]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['run']} | {r['processes']} | - | skipped: {r['skipped']} |" + " |" * 10)
            continue
        early = f"{fmt(r.get('gap_G_100'), '.4f')} / {fmt(r.get('gap_D_100'), '.4f')}"
        full = f"{fmt(r.get('gap_G'), '.4f')} / {fmt(r.get('gap_D'), '.4f')}"
        failed = "" if r["returncode"] == 0 else f" (exit {r['returncode']})"
        lines.append(f"| {r['run']}{failed} | {r['processes']} | {r['batch_per_process']} | {r['steps']} | "
                     f"{fmt(r['img_per_s'], '.0f')} | {fmt(r.get('img_per_s_per_process'), '.0f')} | "
                     f"{fmt(r.get('vs_plain'), '.2f')} | {fmt(r['warmup_s'], '.1f')} | {r['job_s']:.1f} | "
                     f"{fmt(r.get('mean_loss_G'), '.4f')} | {fmt(r.get('mean_loss_D'), '.4f')} | {early} | {full} | "
                     f"{r['finite']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else (out / "work" if a.tiny else REPO / ".gpu" / "ddp_runs")
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data) if a.data else DEFAULT_DATA
    if not data.is_file():
        if not a.tiny:
            print(f"no train pack at {data}; pass --data (a pack from `faceedit dataset build`)", file=sys.stderr)
            return 2
        data = tiny_pack(work / "tiny_pack.npz")
    if a.device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda but no GPU here; use --device cpu --tiny for a smoke test", file=sys.stderr)
            return 2
        units, unit_name = torch.cuda.device_count(), "GPU(s)"
        hardware = torch.cuda.get_device_name(0)
    else:
        units, unit_name = os.cpu_count() or 1, "CPU core(s)"
        hardware = "cpu"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               TORCHINDUCTOR_CACHE_DIR=str(Path(a.cache_dir) if a.cache_dir else REPO / ".gpu" / "inductor"))
    plan = [("plain", 1, [sys.executable, "-m", "faceedit"])]
    skipped = []
    for n in a.nproc:
        if n > units:
            skipped.append({"run": f"torchrun {n}", "processes": n, "skipped": f"{units} {unit_name} here"})
            continue
        if a.batch % (4 * n):
            skipped.append({"run": f"torchrun {n}", "processes": n,
                            "skipped": f"batch {a.batch} does not split in minibatch-std groups of 4 over {n}"})
            continue
        plan.append((f"torchrun {n}", n, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node", str(n), "-m", "faceedit"]))
    info = {"hardware": hardware, "units": units, "torch": torch.__version__, "batch": a.batch, "steps": a.steps,
            "warmup_steps": a.warmup_steps, "log_every": a.log_every, "compile_mode": a.compile_mode,
            "tiny": a.tiny, "data": str(data), "rows": [], "curves": {}}
    print(f"# {hardware} ({units} {unit_name}), torch {torch.__version__}; global batch {a.batch}, {a.steps} steps "
          f"per run, {len(plan)} runs in {a.budget_min} min", flush=True)
    for i, (name, n, launcher) in enumerate(plan):
        left = a.budget_min - (time.time() - T_START) / 60 - a.reserve_min * (len(plan) - i - 1) - 0.25
        if left < 0.5:
            info["rows"].append({"run": name, "processes": n, "skipped": "no time left in --budget-min"})
            continue
        row, curve = run_one(name, launcher, a, data, work, left, env)
        row.update(processes=n, batch_per_process=a.batch // n)
        info["rows"].append(row)
        info["curves"][name] = curve
        print(json.dumps({k: v for k, v in row.items() if k not in ("log_tail", "command")}), flush=True)
    info["rows"] += skipped
    plain = next((r for r in info["rows"] if r["run"] == "plain" and not r.get("skipped")), None)
    for r in info["rows"]:
        if r.get("skipped") or r.get("img_per_s") is None:
            continue
        r["img_per_s_per_process"] = r["img_per_s"] / r["processes"]
        if plain is not None and plain.get("img_per_s"):
            r["vs_plain"] = r["img_per_s"] / plain["img_per_s"]
        if plain is not None and r is not plain:
            r["gap_G_100"], r["gap_D_100"] = curve_gap(info["curves"][r["run"]], info["curves"]["plain"], 100)
            r["gap_G"], r["gap_D"] = curve_gap(info["curves"][r["run"]], info["curves"]["plain"])
    text = table(info["rows"])
    info["job_s"] = round(time.time() - T_START, 1)
    (out / "ddp_train.json").write_text(json.dumps(info, indent=2))
    (out / "ddp_train.md").write_text(
        f"{hardware} ({units} {unit_name}), torch {torch.__version__}; `faceedit train --fast` "
        f"(compile {a.compile_mode if a.device == 'cuda' else 'off on the CPU'}), global batch {a.batch}, "
        f"{a.steps} steps per run, img/s after {a.warmup_steps} warm-up steps; whole job {info['job_s']:.0f} s"
        f"{'; --tiny (toy model, smoke test)' if a.tiny else ''}\n\n{text}\n")
    for r in info["rows"]:
        if not r.get("skipped") and r["returncode"] != 0:
            print(f"# {r['run']} failed (exit {r['returncode']}); its log ends:\n{r['log_tail'][-1500:]}", flush=True)
    print(text)
    return 0 if all(r.get("skipped") or r["returncode"] == 0 for r in info["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
