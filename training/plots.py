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


def _gsnr_panel(ax, rows: list, net: str, title: str) -> None:
    """The corrected GSNR of each group of ``net`` against kimg, a +-2 SE band where the log has the
    jackknife error, and the zero line (the corrected figure's no-signal level)."""
    import math

    from .gsnr import group_order

    sel = [r for r in rows if r["net"] == net and math.isfinite(r["gsnr_c"])]
    groups = sorted({r["group"] for r in sel}, key=lambda g: (g == "all", *group_order(g)))  # "all" last
    derived = any(r["derived"] for r in sel)
    peak = 0.0
    for g in groups:
        pts = sorted((r["kimg"], r["gsnr_c"], r["gsnr_c_se"]) for r in sel if r["group"] == g)
        x, y, se = (list(v) for v in zip(*pts))
        line, = ax.plot(x, y, marker="o", ms=3, label=g, lw=2.5 if g == "all" else 1.2,
                        color="k" if g == "all" else None, zorder=3 if g == "all" else 2)
        peak = max([peak] + [abs(v) for v in y])
        if all(math.isfinite(v) for v in se):
            ax.fill_between(x, [a - 2 * b for a, b in zip(y, se)], [a + 2 * b for a, b in zip(y, se)],
                            color=line.get_color(), alpha=0.25 if g == "all" else 0.12, lw=0)
    ax.axhline(0.0, color="grey", lw=1, ls=":", label="0: no signal")
    m = next((r["samples"] for r in sel if r["samples"]), 0)
    if m and peak > 10.0 / m:  # GSNR that grows by decades reads better on a log scale past 1/m
        ax.set_yscale("symlog", linthresh=1.0 / m)
    ax.set_xlabel("kimg")
    ax.set_ylabel("GSNR, bias-corrected (group mean)")
    note = "from the plain figure; this log has no error bars" if derived else "band: +-2 jackknife SE"
    ax.set_title(f"{title}\n({note}{f', m={m}' if m else ''})", fontsize=9)
    ax.legend(fontsize=6, ncol=2, framealpha=0.6)


def gsnr_plot_png(csv_path, title: str = "", kid_csv=None) -> bytes | None:
    """GSNR per parameter group against kimg beside the generalisation gap and KID.

    Top row: one panel per network (``G``, ``D``, and ``D_real`` where the log has it) with the
    bias-corrected GSNR of each group (older logs: derived from the plain figure with
    :func:`gsnr.corrected_from_plain`). Bottom row, where the log has them: D's mean logit on
    train and held-out real faces, their gap (train - held-out), and KID-attr of G_ema against
    the held-out faces with its interval, all on linear axes.

    Args:
        csv_path: the run's ``gsnr.csv``.
        title: prefix of the panel titles (the model name).
        kid_csv: the run's ``kid.csv``; default: ``kid.csv`` beside ``csv_path`` where it exists.
    Returns:
        PNG bytes, or None when ``gsnr.csv`` is missing or empty.
    """
    import math

    from .gsnr import GAP_GROUPS, float_or_nan, read_log_rows

    raw = _rows_or_none(csv_path)
    if raw is None:
        return None
    rows = read_log_rows(raw)
    kid_path = Path(kid_csv) if kid_csv is not None else Path(csv_path).with_name("kid.csv")
    kid_rows = _rows_or_none(kid_path) or []
    gap = {g: sorted((r["kimg"], r["gsnr"]) for r in rows if r["net"] == "D" and r["group"] == g) for g in GAP_GROUPS}
    rows = [r for r in rows if not (r["net"] == "D" and r["group"] in GAP_GROUPS)]
    nets = [n for n in ("G", "D", "D_real") if any(r["net"] == n for r in rows)]
    nets += sorted({r["net"] for r in rows} - set(nets))
    bottom = (2 if any(gap.values()) else 0) + (1 if kid_rows else 0)
    ntop = max(len(nets), 1)
    cols = math.lcm(ntop, bottom or 1)
    fig = _pyplot().figure(figsize=(5.0 * max(ntop, bottom), 4.2 * (2 if bottom else 1)), layout="constrained")
    grid = fig.add_gridspec(2 if bottom else 1, cols)
    names = {"G": "G", "D": "D (real + fake loss)", "D_real": "D on real faces alone"}
    w = cols // ntop
    for i, net in enumerate(nets):
        _gsnr_panel(fig.add_subplot(grid[0, i * w:(i + 1) * w]), rows, net, f"{title} {names.get(net, net)}".strip())
    if bottom:
        w = cols // bottom
        bax = [fig.add_subplot(grid[1, i * w:(i + 1) * w]) for i in range(bottom)]
        if any(gap.values()):
            ax = bax.pop(0)
            for g, label in (("logit_train", "train faces"), ("logit_heldout", "held-out faces")):
                if gap[g]:
                    ax.plot(*zip(*gap[g]), marker="o", ms=3, label=label)
            ax.set_title(f"{title} D mean logit on real faces".strip(), fontsize=9)
            ax.set_xlabel("kimg")
            ax.set_ylabel("mean D logit")
            ax.legend(fontsize=7)
            ax = bax.pop(0)
            if gap["gap"]:
                ax.plot(*zip(*gap["gap"]), marker="o", ms=3, color="C3", label="train - held-out")
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_title(f"{title} generalisation gap of D".strip(), fontsize=9)
            ax.set_xlabel("kimg")
            ax.set_ylabel("logit gap (train - held-out)")
            ax.legend(fontsize=7)
        if kid_rows:
            ax = bax.pop(0)
            cells = (tuple(float_or_nan(r.get(k)) for k in ("kimg", "kid", "ci_low", "ci_high")) for r in kid_rows)
            pts = sorted(p for p in cells if math.isfinite(p[0] + p[1]))
            x, y, lo, hi = (list(v) for v in zip(*pts)) if pts else ([], [], [], [])
            ax.plot(x, y, marker="o", ms=3, color="C2", label="KID-attr, G_ema vs held-out")
            if all(math.isfinite(v) for v in lo + hi):
                ax.fill_between(x, lo, hi, color="C2", alpha=0.2, lw=0, label="bootstrap interval")
            ax.set_title(f"{title} KID vs held-out faces".strip(), fontsize=9)
            ax.set_xlabel("kimg")
            ax.set_ylabel("KID-attr")
            ax.legend(fontsize=7)
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
