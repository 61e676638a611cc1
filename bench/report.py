"""What every benchmark writes beside its figures: provenance, a text table, CSV/JSON/Markdown, a chart.

Every output records what produced it (:func:`provenance`): the faceedit version, package
versions, the git commit when run from a checkout, the command line, and the sha256 of
every model and scorer used, so each figure in a README or model card can be traced.
"""
from __future__ import annotations

import csv
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def versions(packages=("faceedit", "torch", "torchvision", "numpy", "scikit-learn", "scipy", "opencv-python-headless",
                       "opencv-python", "pytorch-msssim", "lpips", "dlib-bin", "dlib", "facenet-pytorch")) -> dict:
    """Installed versions of the packages that can change a figure (missing ones left out)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def provenance(models: dict | None = None, **extra) -> dict:
    """``{"versions", "git", "command", "time", "device", "models": {name: sha256...}, ...}``."""
    import torch

    return {"faceedit_bench": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv), "git": git_commit(), "versions": versions(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "models": models or {}, **extra}


def file_sha256(path) -> str:
    from faceedit.core.files import sha256_file

    p = Path(path)
    if p.is_dir():
        import hashlib

        h = hashlib.sha256()
        for f in sorted(p.rglob("*")):
            if f.is_file():
                h.update(f.relative_to(p).as_posix().encode())
                h.update(bytes.fromhex(sha256_file(f)))
        return h.hexdigest()
    return sha256_file(p)


# --------------------------------------------------------------------------------------------- tables and files


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "nan"
        a = abs(float(v))
        if a != 0 and (a >= 1e5 or a < 10 ** -(digits - 1)):
            return f"{float(v):.{digits - 1}e}"
        return f"{float(v):.{digits}f}".rstrip("0").rstrip(".") if a < 1e3 else f"{float(v):.1f}"
    return str(v)


def format_table(rows: list, columns: list | None = None) -> str:
    """Rows (dicts) as a Markdown table; ``columns`` picks and orders keys (default: all, first row's order)."""
    if not rows:
        return "(no rows)"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    w = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w[i]) for i, v in enumerate(vals)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(c) for c in cells])


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    return o


def write_outputs(out, stem: str, rows: list, result: dict, *, columns=None, images: dict | None = None,
                  title: str = "") -> dict:
    """Write ``{stem}.md`` (table + provenance), ``{stem}.csv`` (rows), ``{stem}.json`` (everything) and
    PNGs (``images``: name -> uint8 image) into ``out`` atomically. Returns ``{kind: path}``."""
    from faceedit.core.files import atomic_write_text
    from faceedit.core.images import save_image

    out = Path(out)
    paths = {}
    table = format_table(rows, columns)
    prov = result.get("provenance", {})
    md = [f"# {title or stem}", "", table, "", "```", json.dumps(_jsonable(prov), indent=1), "```", ""]
    paths["md"] = atomic_write_text(out / f"{stem}.md", "\n".join(md))
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k), 6) for k in cols})
    paths["csv"] = atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    paths["json"] = atomic_write_text(out / f"{stem}.json", json.dumps(_jsonable({**result, "rows": rows}), indent=1))
    for name, im in (images or {}).items():
        paths[name] = save_image(out / f"{stem}_{name}.png", im)
    return paths


def bar_chart(groups: dict, labels: list, *, width: int = 900, bar_h: int = 9, colors=None) -> np.ndarray:
    """A plain horizontal bar chart (values in [0, 1]) drawn with OpenCV, no plotting package needed.

    Args:
        groups: ``{series name: [value per label]}``.
        labels: one label per bar group.
    """
    import cv2

    colors = colors or [(40, 90, 200), (220, 120, 30), (60, 160, 60), (150, 60, 160)]
    left, top = 190, 30
    n, k = len(labels), len(groups)
    h = top + n * (k * bar_h + 8) + 10
    img = np.full((h, width, 3), 255, np.uint8)
    scale = width - left - 20
    for si, name in enumerate(groups):
        cv2.rectangle(img, (left + 150 * si, 8), (left + 150 * si + 12, 20), colors[si % len(colors)], -1)
        cv2.putText(img, str(name)[:18], (left + 150 * si + 16, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, lab in enumerate(labels):
        y = top + i * (k * bar_h + 8)
        cv2.putText(img, str(lab)[:26], (5, y + k * bar_h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
        for si, vals in enumerate(groups.values()):
            v = float(np.clip(vals[i], 0, 1)) if np.isfinite(vals[i]) else 0.0
            cv2.rectangle(img, (left, y + si * bar_h), (left + int(v * scale), y + (si + 1) * bar_h - 1),
                          colors[si % len(colors)], -1)
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + int(t * scale)
        cv2.line(img, (x, top - 4), (x, h - 6), (200, 200, 200), 1)
    return img
