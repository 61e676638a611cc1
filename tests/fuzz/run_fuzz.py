"""Bounded fuzzing of faceedit's readers with atheris; prints executions and unique findings per target.

Usage::

    .venv/bin/pip install atheris          # or: pip install -e .[fuzz]
    python tests/fuzz/run_fuzz.py --seconds 60                 # every target, 60 s each
    python tests/fuzz/run_fuzz.py --seconds 10 --targets image --out /tmp/fz

Targets: ``image`` (``faceedit.core.images.decode_image``); the checkpoint readers ``pkl``
(NVIDIA pickles, restricted unpickler), ``pt`` (``torch.load(weights_only=True)`` and the
rosinality mapping), ``zip`` (zipped native checkpoints), ``safetensors`` (native
``model.safetensors``), ``config`` (native ``config.json``); ``latent`` and ``direction``
(the latent and direction file readers). A *finding* is an exception other than the reader's documented error
type, a payload that ran, a hang past ``--timeout`` seconds, a native crash, or memory
past ``--rss-mb``. Inputs that caused findings are saved under ``OUT/crashes/<target>/``;
the corpus grows in ``OUT/corpus/<target>/`` (re-runs continue from it). Exit status 1
when any finding was made. Not part of the pytest run (``tests/fuzz/conftest.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# target -> (script, reader it pins through FACEEDIT_FUZZ_KIND)
TARGETS = {"image": ("fuzz_image.py", None), "pkl": ("fuzz_checkpoint.py", "pkl"),
           "pt": ("fuzz_checkpoint.py", "pt"), "zip": ("fuzz_checkpoint.py", "zip"),
           "safetensors": ("fuzz_checkpoint.py", "safetensors"), "config": ("fuzz_checkpoint.py", "config"),
           "latent": ("fuzz_latent.py", "latent"), "direction": ("fuzz_latent.py", "direction")}


def run_target(name: str, seconds: int, out: Path, timeout: int, rss_mb: int) -> dict:
    art = out / "crashes" / name
    art.mkdir(parents=True, exist_ok=True)
    script, kind = TARGETS[name]
    cmd = [sys.executable, str(HERE / script), f"-max_total_time={seconds}", f"-timeout={timeout}",
           f"-rss_limit_mb={rss_mb}", f"-artifact_prefix={art}/", "-print_final_stats=1", "-max_len=65536",
           "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("FACEEDIT_FUZZ_KIND", None)
    if kind:
        env["FACEEDIT_FUZZ_KIND"] = kind
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace",
                       timeout=seconds + 300)
    log = p.stdout + p.stderr
    (out / f"{name}.log").write_text(log)
    try:
        stats = json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        stats = {"execs": 0, "findings": {}}
    findings = dict(stats.get("findings", {}))
    for kind in ("timeout", "out-of-memory", "deadly signal", "crash"):
        if re.search(rf"==\d+== ERROR: libFuzzer: {kind}", log):
            findings[f"libFuzzer {kind}"] = {"count": 1, "message": log[-1500:]}
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    units = int(m.group(1)) if m else 0  # libFuzzer's count survives a crash that beat our last flush
    return {"target": name, "seconds": round(time.time() - t0, 1), "execs": max(stats.get("execs", 0), units),
            "libfuzzer_units": int(m.group(1)) if m else None, "unique_findings": len(findings),
            "findings": findings, "exit": p.returncode}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="Fuzzing time per target.")
    ap.add_argument("--targets", default=",".join(TARGETS), help="Comma-separated: " + ", ".join(TARGETS))
    ap.add_argument("--out", default="/tmp/faceedit-fuzz", help="Corpus, findings and logs.")
    ap.add_argument("--timeout", type=int, default=20, help="Seconds one input may take before it is a hang.")
    ap.add_argument("--rss-mb", type=int, default=6144, help="Memory limit of a target process (MiB).")
    a = ap.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris (or pip install -e .[fuzz])", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [t.strip() for t in a.targets.split(",") if t.strip()]:
        if name not in TARGETS:
            print(f"unknown target {name!r}; choose from {', '.join(TARGETS)}", file=sys.stderr)
            return 2
        r = run_target(name, a.seconds, out, a.timeout, a.rss_mb)
        rows.append(r)
        for sig, f in r["findings"].items():
            print(f"[{name}] {sig} x{f['count']}: {f.get('message', '')[:300]}")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'target':<12}{'seconds':>9}{'executions':>12}{'unique findings':>17}")
    for r in rows:
        print(f"{r['target']:<12}{r['seconds']:>9}{r['execs']:>12}{r['unique_findings']:>17}")
    return 1 if any(r["unique_findings"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
