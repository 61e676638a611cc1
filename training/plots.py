"""Plots of a run's CSV logs (matplotlib, optional: where it is not installed the job skips
them and ``faceedit train --plot RUN`` makes them afterwards)."""
from __future__ import annotations

import csv
import io
from pathlib import Path


def _rows(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rows_or_none(csv_path):
    """The CSV's rows, or ``None`` when the file is missing or empty (nothing to plot)."""
    if not Path(csv_path).is_file():
        return None
    return _rows(csv_path) or None


def gsnr_plot_png(csv_path, title: str = "") -> bytes | None:
    """GSNR (mean over each parameter group's parameters) against kimg, one panel per network."""
    rows = _rows_or_none(csv_path)
    if rows is None:
        return None
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    for ax, net in zip(axes, ("G", "D")):
        groups = sorted({r["group"] for r in rows if r["net"] == net}, key=lambda g: (g == "all", g))
        for g in groups:
            pts = [(float(r["kimg"]), float(r["gsnr"])) for r in rows if r["net"] == net and r["group"] == g]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=g, lw=2.5 if g == "all" else 1.2, color="k" if g == "all" else None)
        m = next((int(r["samples"]) for r in rows if r.get("samples")), 0)
        if m:
            ax.axhline(1 / m, ls=":", color="grey", lw=1, label=f"1/m noise floor (m={m})")
        ax.set_yscale("log")
        ax.set_xlabel("kimg")
        ax.set_ylabel("GSNR (group mean over parameters)")
        ax.set_title(f"{title} {net}".strip())
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _fig_png(fig)


def loss_plot_png(csv_path, title: str = "") -> bytes | None:
    """Losses, logits and regularisers against kimg."""
    rows = _rows_or_none(csv_path)
    if rows is None:
        return None
    fig, axes = _pyplot().subplots(1, 3, figsize=(14, 3.8))
    x = [float(r["kimg"]) for r in rows]

    def series(k):
        return [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows]

    for k in ("loss_G", "loss_D"):
        axes[0].plot(x, series(k), label=k)
    for k in ("D_real", "D_fake"):
        axes[1].plot(x, series(k), label=k)
    for k in ("r1", "pl", "pl_mean"):
        axes[2].plot(x, series(k), label=k)
    for ax in axes:
        ax.set_xlabel("kimg")
        ax.legend(fontsize=8)
    axes[0].set_title(f"{title} losses".strip())
    fig.tight_layout()
    return _fig_png(fig)
