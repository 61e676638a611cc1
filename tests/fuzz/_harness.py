"""Shared atheris harness: count executions, keep fuzzing past a finding, group findings.

A *finding* is any exception outside a target's documented error types (those carry a
message naming the fix; anything else would reach the user as a traceback). Findings
are grouped by (exception type, innermost frame in faceedit's own code) and the first
input of each group is saved. libFuzzer's own crash reports (a hang past ``-timeout``, a
native crash, out of memory past ``-rss_limit_mb``) end the process and are counted by
``run_fuzz.py`` from its exit status.

Each target module defines ``ALLOWED`` (exception types), ``one_input(data: bytes)`` and
``seeds() -> list[bytes]``, and calls :func:`main` at import time when run as a script.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Stats:
    def __init__(self, name: str, out: Path):
        self.name, self.out = name, out
        self.execs, self.findings, self.t0, self.last = 0, {}, time.time(), 0.0
        (out / "crashes" / name).mkdir(parents=True, exist_ok=True)

    def record(self, data: bytes, exc: BaseException) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if str(REPO) in f.filename and "/tests/fuzz/" not in f.filename
                and "/.venv/" not in f.filename]
        where = f"{Path(ours[-1].filename).relative_to(REPO)}:{ours[-1].lineno}" if ours else "?"
        if tb and tb[-1] not in ours[-1:]:  # raised inside a library: name that frame too
            where += f" (in {Path(tb[-1].filename).name}:{tb[-1].lineno})"
        sig = f"{type(exc).__name__} at {where}"
        if sig not in self.findings:
            h = hashlib.sha1(data).hexdigest()[:12]
            (self.out / "crashes" / self.name / f"{h}.bin").write_bytes(data)
            self.findings[sig] = {"count": 0, "input": f"{h}.bin", "message": str(exc)[:300],
                                  "traceback": "".join(traceback.format_exception(exc))[-3000:]}
            sys.stderr.write(f"\n[{self.name}] NEW FINDING {sig}: {str(exc)[:200]}\n")
        self.findings[sig]["count"] += 1

    def flush(self, force=False) -> None:
        now = time.time()
        if force or now - self.last > 1.0:
            self.last = now
            tmp = self.out / f".{self.name}.json.tmp"
            tmp.write_text(json.dumps({"target": self.name, "execs": self.execs, "seconds": round(now - self.t0, 1),
                                       "unique_findings": len(self.findings), "findings": self.findings}, indent=1))
            os.replace(tmp, self.out / f"{self.name}.json")


def main(name: str, one_input, allowed: tuple, seeds, instrument=("faceedit", "PIL", "safetensors")) -> None:
    """Run libFuzzer on ``one_input``; ``sys.argv`` carries libFuzzer flags and ``--out DIR``."""
    import atheris

    argv = list(sys.argv)
    out = Path("/tmp/faceedit-fuzz")
    if "--out" in argv:
        i = argv.index("--out")
        out = Path(argv[i + 1])
        del argv[i:i + 2]
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(seeds()):
        (corpus / f"seed{k:03d}").write_bytes(s)
    stats = Stats(name, out)

    def test_one(data: bytes) -> None:
        stats.execs += 1
        try:
            one_input(data)
        except allowed:
            pass
        except RecursionError as e:  # an uncaught one is a finding like any other
            stats.record(data, e)
        except Exception as e:  # noqa: BLE001 - the point of the harness
            stats.record(data, e)
        stats.flush()

    import atexit

    atexit.register(lambda: stats.flush(True))
    atheris.Setup(argv + [str(corpus)], test_one)
    try:
        atheris.Fuzz()
    finally:
        stats.flush(True)
