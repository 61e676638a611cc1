"""The README's bad-input table, counted from the bad-input suite's own case lists.

Runs every case of ``tests/test_bad_inputs.py`` the way its tests do (the same case lists, the
same checks: ``image_corpus``, ``bad_latents``, ``bad_directions``, ``RUN_CASES``) and counts,
per suite:

* tried: cases run;
* handled: cases that ended in the correct result or in a clear error (the project's exception
  class or a one-line ``Error:`` with exit code 1/2, its message matching what names the fix);
  the rest crashed, gave a traceback, or did the wrong thing;
* clear message / correct result: how the handled ones ended.

A case skipped here (a read-only folder cannot be made on this machine) is counted as skipped,
neither handled nor not. The hostile-checkpoint row and its ``max RSS`` come from
``bench/results/reliability/hostile_rss.md`` (``bench/scripts/hostile_rss.py``, a fresh process
per file); ``max RSS`` reads ``-`` for the other suites.

Usage::

    OMP_NUM_THREADS=1 python bench/scripts/bad_input_table.py            # print the table
    OMP_NUM_THREADS=1 python bench/scripts/bad_input_table.py --write     # and put it in README.md

``--write`` replaces the text between ``<!-- bad-input table -->`` and
``<!-- /bad-input table -->`` in README.md. About 40 s on one CPU core.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bad-input table -->", "<!-- /bad-input table -->"


def _count_errors(cases, check) -> Counter:
    """``cases``: ``[(name, run)]``; ``check(run)`` returns "clear error" / "correct result" or raises."""
    import pytest

    n = Counter()
    for _name, run in cases:
        n["tried"] += 1
        try:
            outcome = check(run)
        except pytest.skip.Exception:
            n["skipped"] += 1
            continue
        except Exception:  # noqa: BLE001 - a case not handled, whatever it raised
            continue
        n["handled"] += 1
        n[outcome] += 1
    return n


def count(tmp: Path) -> dict:
    """``{suite: Counter(tried, handled, clear error, correct result, skipped)}``."""
    sys.path.insert(0, str(REPO / "tests"))
    import test_bad_inputs as tb

    from faceedit.core.images import ImageLoadError, load_image

    rows = {}

    def image(case):
        _, path, expect = case
        if isinstance(expect, str):
            try:
                load_image(path)
            except ImageLoadError as e:
                assert re.search(expect, str(e), re.I | re.S), str(e)
                return tb.CLEAR
            raise AssertionError("loaded a file that should have been refused")
        expect(load_image(path))
        return tb.CORRECT

    rows["images (empty, truncated, mislabelled, EXIF, modes, bombs)"] = _count_errors(
        [(c[0], c) for c in tb.image_corpus(tmp / "images")], image)

    tiny = tb.make_tiny(tmp / "tiny")
    marker = tmp / "PWNED"

    def latent(case):
        from faceedit.inversion.latent import Latent, LatentFileError

        data, pattern = case
        p = tmp / "bad.latent.safetensors"
        p.write_bytes(data)
        try:
            lat = Latent.load(p)
            lat.check_model(tiny["model_id"])
            lat.check_generator(tiny["G"])
        except LatentFileError as e:
            assert re.search(pattern, str(e), re.I) and not marker.exists(), str(e)
            return tb.CLEAR
        raise AssertionError("a bad latent was accepted")

    rows["latent files (other model, NaN, pickles, shapes, damage)"] = _count_errors(
        list(tb.bad_latents(tiny, marker).items()), latent)

    def direction(case):
        from faceedit.editing.direction import Direction, DirectionFileError

        fname, data, pattern = case
        p = tmp / fname
        p.write_bytes(data)
        try:
            Direction.load(p)
        except DirectionFileError as e:
            assert re.search(pattern, str(e), re.I | re.S) and not marker.exists(), str(e)
            return tb.CLEAR
        finally:
            p.unlink()
        raise AssertionError("a bad direction was accepted")

    rows["direction files (pickles, shapes, norms, metadata)"] = _count_errors(
        list(tb.bad_directions(tiny, marker).items()), direction)

    base = tb.make_run_model(tmp / "run_model")

    def run(case):
        folder = tmp / "runs" / case.__name__
        folder.mkdir(parents=True)
        return case(tb.RunCtx(base, folder))

    rows["runs (outputs over inputs, batches, resume, unwritable folders, limits, badges, far latents)"] = (
        _count_errors([(c.__name__, c) for c in tb.RUN_CASES], run))
    return rows


def table(rows: dict) -> str:
    lines = ["| suite | tried | handled | clear message | correct result | max RSS |",
             "| --- | --- | --- | --- | --- | --- |"]
    total = Counter()
    for name, n in rows.items():
        total.update(n)
        skipped = f" ({n['skipped']} skipped)" if n["skipped"] else ""
        lines.append(f"| {name} | {n['tried']}{skipped} | {n['handled']} | {n['clear error']} | "
                     f"{n['correct result']} | - |")
    hostile = hostile_row()
    rss = "-"
    if hostile is not None:
        tried, refused, clear, rss = hostile
        total.update({"tried": tried, "handled": refused, "clear error": clear})
        lines.append(f"| hostile checkpoint files (zip and pickle bombs, absurd configs; {HOSTILE.name}) | {tried} | "
                     f"{refused} | {clear} | 0 | {rss} MiB |")
    lines.append(f"| all | {total['tried']} | {total['handled']} | {total['clear error']} | "
                 f"{total['correct result']} | {rss if rss == '-' else f'{rss} MiB'} |")
    return "\n".join(lines)


HOSTILE = REPO / "bench" / "results" / "reliability" / "hostile_rss.md"


def hostile_row() -> tuple | None:
    """``(tried, refused, clear message, max RSS MiB)`` of the hostile checkpoint files, from the
    summary line ``bench/scripts/hostile_rss.py`` wrote (a fresh process per file; it takes minutes,
    so it is read here rather than re-run)."""
    if not HOSTILE.is_file():
        return None
    m = re.search(r"(\d+) kinds tried, (\d+) refused, (\d+) of them with a clear message.*?max RSS (\d+) MiB",
                  HOSTILE.read_text())
    return tuple(int(g) for g in m.groups()) if m else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="Replace the table in README.md.")
    args = ap.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # the cases' expected warnings
    with tempfile.TemporaryDirectory() as tmp:
        md = table(count(Path(tmp)))
    print(md)
    if args.write:
        readme = REPO / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"README.md has no {BEGIN} ... {END} markers", file=sys.stderr)
            return 1
        a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
        readme.write_text(text[:a] + "\n" + md + "\n" + text[b:])
        print("wrote README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
