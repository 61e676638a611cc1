"""Peak memory of loading hostile checkpoint files: every kind must be refused well under 1 GiB.

Builds each file of ``tests/hostile_builders.py`` (small files that declare GiBs to TiBs:
zip entries that inflate 1000:1, stride-0 tensors, generator records with ``w_dim = 10**9``,
configs larger than their tensors, ...), then loads each with
``faceedit.checkpoints.load_model`` in a fresh Python process and reads that process's peak
resident memory: its ``VmHWM``, or the ``ru_maxrss`` of ``os.wait4`` when it died first (see
``hostile_builders.load_in_fresh_process`` for why not ``getrusage(RUSAGE_CHILDREN)``: Linux
counts the parent's size at fork into it). A first row loads nothing: it is the cost of
importing torch and faceedit, which every other row includes.

Each child may get an address-space limit (``--limit-as-gib``, over what it has mapped after
its imports) so that a regression fails with ``MemoryError`` instead of taking the machine;
``0`` runs without one (what a user's machine does).

Run::

    python bench/scripts/hostile_rss.py [--out bench/results/reliability] [--bomb-gib 3.25] [--limit-as-gib 2]

and, to compare with another checkout (its readers load the same files; keep the limit, they may
allocate what these refuse)::

    python bench/scripts/hostile_rss.py --python /path/to/other/.venv/bin/python --name hostile_rss_other.md

Writes ``hostile_rss.md`` to ``--out`` and prints the table; exits 1 when any file loads,
crashes, is refused without a clear message (one matching its kind's pattern in
``hostile_builders.KINDS`` and quoting no torch internals), or peaks at ``--max-rss-mib``
(1024) or more.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

def load_in_child(path, limit_gib: float, python: str | None = None) -> dict:
    """Load ``path`` (``None``: nothing) in a fresh interpreter; outcome, message, peak RSS (MiB), seconds."""
    from hostile_builders import load_in_fresh_process

    t = time.perf_counter()
    results, rss = load_in_fresh_process([] if path is None else [path], limit_gib, python)
    res = results[0] if results else {"outcome": "-", "message": ""}
    return dict(res, rss_mib=rss, seconds=time.perf_counter() - t)


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _revision(python: str) -> str:
    """``git describe`` of the checkout whose faceedit ``python`` imports (for the table's header)."""
    import subprocess

    try:
        src = subprocess.run([python, "-c", "import faceedit.checkpoints as c; print(c.__file__)"], capture_output=True,
                             text=True, cwd=tempfile.gettempdir(), timeout=120).stdout.strip()
        rev = subprocess.run(["git", "-C", str(Path(src).parent), "log", "-1", "--format=%h %s"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        return f"commit {rev}" if rev else src
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"


def _head(message: str, path: Path, width: int = 110) -> str:
    m = message.replace(str(path.parent) + os.sep, "").replace("|", "\\|").replace("\n", " ")
    return m if len(m) <= width else m[: width - 1] + "…"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reliability")
    ap.add_argument("--bomb-gib", type=float, default=3.25, help="declared size of the zip bombs")
    ap.add_argument("--limit-as-gib", type=float, default=2.0,
                    help="address space each child may map beyond its imports (0: no limit)")
    ap.add_argument("--max-rss-mib", type=float, default=1024)
    ap.add_argument("--only", default="", help="run only kinds whose name contains this")
    ap.add_argument("--python", default=None,
                    help="interpreter that loads the files (another checkout's venv, to compare; default: this one)")
    ap.add_argument("--name", default="hostile_rss.md", help="file written in --out")
    args = ap.parse_args(argv)

    from hostile_builders import KINDS, clear_refusal

    rows, bad = [], 0
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        tmp = Path(tmp)
        base = load_in_child(None, args.limit_as_gib, args.python)
        rows.append(("(imports only, nothing loaded)", "-", "-", "-", base["rss_mib"]))
        for name, (build, _) in KINDS.items():
            if args.only and args.only not in name:
                continue
            path = build(tmp, int(args.bomb_gib * 2 ** 30))
            res = load_in_child(str(path), args.limit_as_gib, args.python)
            clear = res["outcome"] == "refused" and clear_refusal(name, res["message"])
            ok = clear and res["rss_mib"] < args.max_rss_mib
            bad += not ok
            outcome = res["outcome"] + (" (unclear message)" if res["outcome"] == "refused" and not clear else "") \
                + (" (over the RSS limit)" if res["rss_mib"] >= args.max_rss_mib else "")
            rows.append((name, _human(_size(path)), outcome, _head(res["message"], path), res["rss_mib"]))
            print(f"{name}: {outcome}, {res['rss_mib']:.0f} MiB, {res['seconds']:.1f} s", file=sys.stderr)
    refused = sum(r[2].startswith("refused") for r in rows[1:])
    clear = sum(r[2] == "refused" for r in rows[1:])
    cmd = f"python bench/scripts/hostile_rss.py --bomb-gib {args.bomb_gib:g} --limit-as-gib {args.limit_as_gib:g}" + \
        (f" --python {args.python}" if args.python else "")
    who = ("this checkout's faceedit, default size budget (`FACEEDIT_MAX_CHECKPOINT_GIB` unset: 4 GiB)"
           if args.python is None else f"the faceedit that `{args.python}` imports ({_revision(args.python)})")
    space = "unlimited" if args.limit_as_gib <= 0 else \
        f"limited to {args.limit_as_gib:g} GiB over the imports, so RSS stops there: MemoryError"
    lines = ["# Peak memory of loading hostile checkpoint files", "",
             f"`{cmd}`: each file loaded with `load_model` of {who}, in a fresh process (peak RSS: the process's "
             f"VmHWM; address space {space}); the first row is the cost of importing torch and faceedit, included in "
             f"every row.", "",
             f"{len(rows) - 1} kinds tried, {refused} refused, {clear} of them with a clear message (naming the "
             f"field or the limit, no torch internals); max RSS {max(r[4] for r in rows):.0f} MiB "
             f"(limit {args.max_rss_mib:.0f} MiB).", "",
             "| file kind | file size | outcome | message head | max RSS MiB |", "| --- | --- | --- | --- | ---: |"]
    lines += [f"| {n} | {s} | {o} | {m} | {r:.0f} |" for n, s, o, m, r in rows]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.only:
        (args.out / args.name).write_text(text)
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
