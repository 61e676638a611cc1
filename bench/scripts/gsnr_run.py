"""GSNR over a whole training run beside the generalisation gap it is claimed to predict.

The claim tested (Liu et al. 2020, "Understanding why neural networks generalize well through
GSNR of parameters"; the seed paper's note: "a quantitative relationship between model
parameters' GSNR and the generalization gap ... larger GSNR during training process leads to
better generalization performance"). The paper's relation is per step: one small gradient step
lowers the test loss by ``R`` times what it lowers the training loss, with the one-step
generalisation ratio ``R = r / (r + 1/n)`` (``r`` the pooled GSNR of the parameters, ``n`` the
training-set size; ``faceedit.training.gsnr``), so the gap grows by ``(1 - R)`` times the
train-loss drop: the higher the GSNR at step ``t``, the less gap is added after ``t``. What a
GAN's logs allow us to test, fixed before looking at the run:

* **H1 (the paper's setting)**: the discriminator is the network trained on the real faces, and
  ``logit_train - logit_heldout`` (D's mean logit on 1000 training faces minus 1000 held-out
  faces, the same images at every measurement) is its generalisation gap. Prediction: Spearman
  correlation between D's bias-corrected GSNR (group ``all``; net ``D_real``, D's loss on the
  real faces alone, where the log has it, else ``D``, its real + fake loss) at ``t`` and the
  gap's change per Mimg (1000 kimg) from ``t`` to the next measurement is **negative**.
* **H2 (an analogue)**: G never sees the data, so its "test loss" is taken to be KID-attr of
  G_ema against the held-out faces. Prediction: Spearman correlation between G's corrected GSNR
  (``all``) at ``t`` and KID's change per Mimg after ``t`` is **negative** (higher GSNR, KID
  falls faster).

Each is reported with a percentile bootstrap 95% interval over the (t, change) pairs and an
exact permutation p-value (two-sided); a hypothesis is **supported** when the interval lies
below 0, **contradicted** when it lies above 0, and **not resolved** otherwise. Per-group rows
and the other network are secondary (many comparisons, no correction). The training-loss drop
that the paper's ratio multiplies is not used: a GAN's D loss sits at its equilibrium and does
not fall step after step, so the test is on the ordering, not on the paper's numbers; the
predicted ``1 - R`` is printed beside it where the log has the pooled GSNR.

Inputs: one run's export (folder or ``.zip`` with ``gsnr.csv``, optionally ``kid.csv``,
``train.json``), or several chunk exports in training order: rows are joined, and a row that
comes again (same step, net, group; same step for KID) is taken from the later source
(a resumed chunk rewrites its predecessors' rows; the count of differing repeats is reported).
Logs written before the bias-corrected column existed are read on the corrected scale
(``gsnr.corrected_from_plain``, exact for group means; no pooled figure, no error bars).

    OMP_NUM_THREADS=1 python bench/scripts/gsnr_run.py RUN [RUN ...] --out DIR [--title faces64]

Writes ``gsnr_run.md``, ``gsnr_run.json``, ``gsnr_run.png`` (the relation: GSNR at t against the
change after t), and the joined whole-run ``gsnr.csv`` / ``kid.csv`` with their plot ``gsnr.png``
(``faceedit.training.plots.gsnr_plot_png``, the model card's figure) under ``--out``; prints the
tables last.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from faceedit.core.files import atomic_write_bytes, atomic_write_text
from faceedit.training.gsnr import GAP_GROUPS, float_or_nan, group_order, one_step_generalisation_ratio, \
    read_log_rows

N_BOOT = 2000
EXPECTED_SIGN = -1  # H1 and H2 both predict a negative correlation


# ----------------------------------------------------------------------------- reading and joining

def read_source(path) -> dict:
    """``{"gsnr": rows, "kid": rows, "train": dict | None}`` of one export (folder, ``.zip``) or ``gsnr.csv``.

    Raises:
        FileNotFoundError: the path does not exist or holds no ``gsnr.csv``.
    """
    p = Path(path)
    texts: dict = {}
    if p.is_file() and p.suffix == ".zip":
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                base = Path(info.filename).name
                if base in ("gsnr.csv", "kid.csv", "train.json"):
                    texts[base] = z.read(info).decode("utf-8")
    elif p.is_file():
        texts["gsnr.csv"] = p.read_text()
        for base in ("kid.csv", "train.json"):
            if (p.parent / base).is_file():
                texts[base] = (p.parent / base).read_text()
    elif p.is_dir():
        for base in ("gsnr.csv", "kid.csv", "train.json"):
            if (p / base).is_file():
                texts[base] = (p / base).read_text()
    else:
        raise FileNotFoundError(f"{p}: no such run export (give a run folder, an export .zip or a gsnr.csv)")
    if "gsnr.csv" not in texts:
        raise FileNotFoundError(f"{p} holds no gsnr.csv: train with gsnr_every > 0 (and holdout for the gap)")
    return {"gsnr": list(csv.DictReader(io.StringIO(texts["gsnr.csv"]))),
            "kid": list(csv.DictReader(io.StringIO(texts["kid.csv"]))) if "kid.csv" in texts else [],
            "train": json.loads(texts["train.json"]) if "train.json" in texts else None, "name": str(p)}


def join_sources(sources: list) -> dict:
    """One whole-run log from chunk logs in training order; a later source's row wins a repeat.

    Args:
        sources: dicts of :func:`read_source` (``gsnr`` / ``kid`` raw csv rows).
    Returns:
        ``{"gsnr": normalised rows (gsnr.read_log_rows), "kid": rows with float kid / ci,
        "repeats": rows seen again, "conflicts": repeats whose values differ, "train": the last
        train.json}``, rows sorted by step.
    """
    g_rows: dict = {}
    k_rows: dict = {}
    repeats = conflicts = 0
    train = None
    for src in sources:
        for r in read_log_rows(src["gsnr"]):
            key = (r["step"], r["net"], r["group"])
            if key in g_rows:
                repeats += 1
                conflicts += not _same(g_rows[key], r)
            g_rows[key] = r
        for r in src["kid"]:
            row = {"step": int(float(r["step"])), "kimg": float(r["kimg"]), "kid": float(r["kid"]),
                   "ci_low": float_or_nan(r.get("ci_low")), "ci_high": float_or_nan(r.get("ci_high")), "n": r.get("n", "")}
            if row["step"] in k_rows:
                repeats += 1
                conflicts += not _same(k_rows[row["step"]], row)
            k_rows[row["step"]] = row
        train = src.get("train") or train
    return {"gsnr": [g_rows[k] for k in sorted(g_rows, key=lambda k: (k[0], k[1], k[2]))],
            "kid": [k_rows[s] for s in sorted(k_rows)], "repeats": repeats, "conflicts": conflicts, "train": train}


def _same(a: dict, b: dict) -> bool:
    for k in a:
        x, y = a[k], b.get(k)
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def train_images(train: dict | None) -> int | None:
    """Training-set size ``n`` from a run's ``train.json``: pack images minus the held-out ones."""
    if not train or "images" not in train:
        return None
    return int(train["images"]) - int((train.get("config") or {}).get("holdout", 0) or 0)


# ----------------------------------------------------------------------------- statistics

def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorised for the bootstrap); NaN where a side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=axis), rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=axis) * (ry ** 2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=axis) / np.where(den > 0, den, 1.0), np.nan)


def correlate(x, y, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Spearman rho of paired ``x``, ``y`` with a percentile bootstrap 95% interval and a permutation p.

    The bootstrap resamples pairs. It is done here rather than with ``scipy.stats.bootstrap``
    because with a handful of pairs many resamples repeat one point and have no rho, and scipy's
    interval is NaN as soon as one resample is; those resamples are left out here (``boot_valid``
    counts the rest). The p-value is two-sided, exact over all ``n!`` pairings up to ``n = 8``
    (``scipy.stats.permutation_test``), from 9,999 random pairings above.

    Returns:
        ``{"n", "rho", "ci_low", "ci_high", "p", "boot_valid"}``; NaN figures below 3 pairs.
    """
    from scipy.stats import permutation_test

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"n": n, "rho": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan"),
           "boot_valid": 0}
    if n < 3:
        return out
    out["rho"] = float(_spearman(x, y))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = _spearman(x[idx], y[idx], axis=-1)
    boot = boot[np.isfinite(boot)]
    out["boot_valid"] = int(boot.size)
    if boot.size:
        out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    if math.isfinite(out["rho"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant permutations of tied data
            kw = {} if n <= 8 else _rng_kwarg(permutation_test, seed)
            res = permutation_test((x,), lambda a, axis=-1: _spearman(a, y, axis=axis), permutation_type="pairings",
                                   n_resamples=np.inf if n <= 8 else 9999, alternative="two-sided",
                                   vectorized=True, **kw)
        out["p"] = float(res.pvalue)
    return out


def interval_side(c: dict) -> str:
    """Where the 95% interval lies: ``below 0``, ``above 0`` or ``spans 0`` (``-`` without one)."""
    lo, hi = c["ci_low"], c["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return "below 0" if hi < 0 else ("above 0" if lo > 0 else "spans 0")


def _rng_kwarg(fn, seed: int) -> dict:
    """The seed argument of a scipy.stats resampling function (``rng`` from scipy 1.15, ``random_state`` before)."""
    import inspect

    name = "rng" if "rng" in inspect.signature(fn).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def verdict(c: dict, expected: int = EXPECTED_SIGN) -> str:
    """``supported`` (the interval on the expected side of 0), ``contradicted`` (on the other), else
    ``not resolved``."""
    lo, hi = c["ci_low"], c["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not resolved"
    if (hi < 0 and expected < 0) or (lo > 0 and expected > 0):
        return "supported"
    if (lo > 0 and expected < 0) or (hi < 0 and expected > 0):
        return "contradicted"
    return "not resolved"


# ----------------------------------------------------------------------------- the analysis

def series(rows: list, net: str, group: str, key: str = "gsnr_c") -> dict:
    """``{step: (kimg, value)}`` of one net / group / column of normalised gsnr rows."""
    return {r["step"]: (r["kimg"], r[key]) for r in rows if r["net"] == net and r["group"] == group}


def changes_after(outcome: dict) -> dict:
    """``{step t: change per Mimg (1000 kimg) from t to the next step of the outcome}`` of ``{step: (kimg, value)}``."""
    steps = sorted(outcome)
    out = {}
    for a, b in zip(steps, steps[1:]):
        (ka, va), (kb, vb) = outcome[a], outcome[b]
        if kb > ka:
            out[a] = 1000.0 * (vb - va) / (kb - ka)
    return out


def relation(predictor: dict, outcome: dict, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Correlation of the predictor at ``t`` with the outcome's change after ``t``, on the steps both have.

    The outcome's changes are taken between consecutive steps that the predictor also has, so
    every pair covers the same stretch of training.
    """
    common = {s: outcome[s] for s in outcome if s in predictor}
    d = changes_after(common)
    steps = sorted(d)
    res = correlate([predictor[s][1] for s in steps], [d[s] for s in steps], n_boot=n_boot, seed=seed)
    res["steps"] = steps
    res["x"] = [predictor[s][1] for s in steps]
    res["y"] = [d[s] for s in steps]
    res["verdict"] = verdict(res)
    return res


def analyse(log_: dict, *, n_train: int | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The whole-run table and the tests of the module docstring on a joined log (:func:`join_sources`).

    Returns:
        ``{"table": per-step rows, "primary": {"H1", "H2"}, "secondary": [...], "osgr": [...],
        "notes": [...]}``.
    """
    rows, kid_rows = log_["gsnr"], log_["kid"]
    gsnr_rows = [r for r in rows if not (r["net"] == "D" and r["group"] in GAP_GROUPS)]
    nets = sorted({r["net"] for r in gsnr_rows})
    d_net = "D_real" if "D_real" in nets else "D"
    gap = {g: series(rows, "D", g, "gsnr") for g in GAP_GROUPS}
    kid = {r["step"]: (r["kimg"], r["kid"]) for r in kid_rows}
    outcomes = {"gap": gap["gap"], "kid": kid}
    notes = []
    if any(r["derived"] for r in gsnr_rows):
        notes.append("gsnr_c derived from the plain figure (the log predates the corrected column): no error bars")
    if d_net == "D":
        notes.append("no D_real rows: H1 uses D's real + fake loss, not the loss on real faces alone")
    if not gap["gap"]:
        notes.append("no logit_train / logit_heldout rows (train with holdout): H1 not testable")
    if not kid:
        notes.append("no kid.csv rows (train with kid_every): H2 not testable")

    primary = {}
    for name, net, outcome in (("H1", d_net, "gap"), ("H2", "G", "kid")):
        pred = series(gsnr_rows, net, "all")
        res = relation(pred, outcomes[outcome], n_boot=n_boot, seed=seed)
        primary[name] = {"predictor": f"{net} all gsnr_c", "outcome": f"{outcome} change per Mimg after t", **res}
    secondary = []
    for net in nets:
        groups = {r["group"] for r in gsnr_rows if r["net"] == net}
        for group in sorted(groups, key=lambda g: (g != "all", *group_order(g))):  # "all" first
            for outcome in ("gap", "kid"):
                if not outcomes[outcome]:
                    continue
                res = relation(series(gsnr_rows, net, group), outcomes[outcome], n_boot=n_boot, seed=seed)
                secondary.append({"net": net, "group": group, "outcome": f"{outcome} change per Mimg after t",
                                  **{k: res[k] for k in ("n", "rho", "ci_low", "ci_high", "p")},
                                  "interval": interval_side(res)})
        trend = series(gsnr_rows, net, "all")
        steps = sorted(trend)
        tr = correlate([trend[s][0] for s in steps], [trend[s][1] for s in steps], n_boot=n_boot, seed=seed)
        secondary.append({"net": net, "group": "all", "outcome": "kimg (does GSNR rise during training?)",
                          **{k: tr[k] for k in ("n", "rho", "ci_low", "ci_high", "p")}, "interval": interval_side(tr)})

    osgr = []
    pool = series(gsnr_rows, d_net, "all", "gsnr_pool")
    if n_train:
        for s in sorted(pool):
            k, r = pool[s]
            if math.isfinite(r):
                osgr.append({"step": s, "kimg": k, "gsnr_pool": r, "one_minus_R": 1 - one_step_generalisation_ratio(r, n_train)})
    if not osgr:
        notes.append("no pooled GSNR (or no training-set size): the paper's 1 - R not computed")

    steps = sorted({r["step"] for r in rows} | set(kid))
    table = []
    for s in steps:
        row = {"step": s}
        for r in rows:
            if r["step"] == s:
                row["kimg"] = r["kimg"]
                break
        else:
            row["kimg"] = kid[s][0]
        for net in nets:
            g = series(gsnr_rows, net, "all")
            se = series(gsnr_rows, net, "all", "gsnr_c_se")
            row[f"{net}_gsnr_c"] = g.get(s, (0, float("nan")))[1]
            row[f"{net}_gsnr_c_se"] = se.get(s, (0, float("nan")))[1]
            row[f"{net}_gsnr"] = series(gsnr_rows, net, "all", "gsnr").get(s, (0, float("nan")))[1]
        for g in GAP_GROUPS:
            row[g] = gap[g].get(s, (0, float("nan")))[1]
        row["kid"] = kid.get(s, (0, float("nan")))[1]
        table.append(row)
    return {"table": table, "nets": nets, "d_net": d_net, "primary": primary, "secondary": secondary,
            "osgr": osgr, "n_train": n_train, "notes": notes}


# ----------------------------------------------------------------------------- writing

def _fmt(v, spec: str = ".4g") -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, spec)
    return str(v)


def summary_sentence(res: dict) -> str:
    """One sentence on the primary tests (the rule of the module docstring)."""
    parts = []
    for name in ("H1", "H2"):
        h = res["primary"][name]
        if h["n"] < 3:
            parts.append(f"{name} ({h['predictor']} vs {h['outcome']}) could not be tested ({h['n']} pairs)")
            continue
        parts.append(f"{name} ({h['predictor']} vs {h['outcome']}) is {h['verdict']}: Spearman rho "
                     f"{h['rho']:+.2f}, 95% bootstrap [{h['ci_low']:+.2f}, {h['ci_high']:+.2f}], "
                     f"permutation p = {h['p']:.2f}, n = {h['n']} pairs")
    return "; ".join(parts) + "."


def markdown(res: dict, meta: dict) -> str:
    nets = res["nets"]
    lines = ["# GSNR over the run and the generalisation gap", "",
             f"`{meta['command']}`", "",
             f"Sources: {', '.join(meta['sources'])}; {meta['repeats']} repeated rows "
             f"({meta['conflicts']} with different values, later source kept). Training-set size n = "
             f"{res['n_train'] if res['n_train'] else 'unknown'}. What is tested and the verdict rule: the docstring "
             "of `bench/scripts/gsnr_run.py`.", "",
             "**Result:** " + summary_sentence(res), "",
             "![GSNR per group, gap and KID over the run](gsnr.png)", "",
             "![GSNR at t against the change after t](gsnr_run.png)", ""]
    if res["notes"]:
        lines += ["Notes: " + "; ".join(res["notes"]) + ".", ""]
    lines += ["## Primary tests", "",
              "| test | predictor at t | outcome after t | n | rho | 95% CI | p | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, h in res["primary"].items():
        lines.append(f"| {name} | {h['predictor']} | {h['outcome']} | {h['n']} | {_fmt(h['rho'], '+.3f')} | "
                     f"[{_fmt(h['ci_low'], '+.2f')}, {_fmt(h['ci_high'], '+.2f')}] | {_fmt(h['p'], '.3f')} | "
                     f"{h['verdict']} |")
    lines += ["", "## Whole-run table (group `all`; gsnr_c bias-corrected, +- jackknife SE where logged)", ""]
    cols = ["step", "kimg"] + [f"{n}_gsnr_c" for n in nets] + [f"{n}_gsnr" for n in nets] + list(GAP_GROUPS) + ["kid"]
    lines += ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in res["table"]:
        cells = []
        for c in cols:
            v = row.get(c, float("nan"))
            if c.endswith("_gsnr_c") and math.isfinite(row.get(c + "_se", float("nan"))):
                cells.append(f"{v:.4f} +- {row[c + '_se']:.4f}")
            else:
                cells.append(_fmt(v, ".2f" if c == "kimg" else ".4g"))
        lines.append("| " + " | ".join(cells) + " |")
    if res["osgr"]:
        lines += ["", f"## The paper's one-step ratio for {res['d_net']}: 1 - R = 1 / (1 + n r_pool)", "",
                  "| step | kimg | r_pool | 1 - R |", "| --- | --- | --- | --- |"]
        lines += [f"| {o['step']} | {o['kimg']:.2f} | {o['gsnr_pool']:.4g} | {o['one_minus_R']:.4g} |" for o in res["osgr"]]
    lines += ["", "## Secondary (per group, other network, trend; uncorrected for many comparisons)", "",
              "| net | group | against | n | rho | 95% CI | p | interval |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in res["secondary"]:
        lines.append(f"| {s['net']} | {s['group']} | {s['outcome']} | {s['n']} | {_fmt(s['rho'], '+.3f')} | "
                     f"[{_fmt(s['ci_low'], '+.2f')}, {_fmt(s['ci_high'], '+.2f')}] | {_fmt(s['p'], '.3f')} | "
                     f"{s['interval']} |")
    return "\n".join(lines) + "\n"


def relation_png(res: dict) -> bytes:
    """Scatter of the two primary tests: GSNR at t against the outcome's change per Mimg after t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for ax, (name, h) in zip(axes, res["primary"].items()):
        if h["n"]:
            sc = ax.scatter(h["x"], h["y"], c=h["steps"], cmap="viridis", zorder=3)
            fig.colorbar(sc, ax=ax, label="step t")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel(f"{h['predictor']} at t")
        ax.set_ylabel(f"{h['outcome']}")
        ax.set_title(f"{name}: rho {_fmt(h['rho'], '+.2f')} [{_fmt(h['ci_low'], '+.2f')}, "
                     f"{_fmt(h['ci_high'], '+.2f')}], {h['verdict']}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _csv_text(rows: list, cols: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _json_safe(o):
    if isinstance(o, float):
        return None if math.isnan(o) else o
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    return o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders, export .zip files or gsnr.csv files, in training order")
    ap.add_argument("--out", type=Path, required=True, help="folder for the markdown, json, png and joined csvs")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training-set size n for the paper's ratio (default: from train.json)")
    ap.add_argument("--title", default="", help="model name for the plot titles")
    ap.add_argument("--n-boot", type=int, default=N_BOOT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out
    for p in args.runs:
        src = Path(p).resolve()
        if (src if src.is_dir() else src.parent) == out.resolve():
            print(f"error: {p} is inside --out {out}: the joined gsnr.csv / kid.csv would overwrite it; "
                  "give another --out", file=sys.stderr)
            return 2
    try:
        sources = [read_source(p) for p in args.runs]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    joined = join_sources(sources)
    n_train = args.train_images or train_images(joined["train"])
    res = analyse(joined, n_train=n_train, n_boot=args.n_boot, seed=args.seed)
    meta = {"command": "python bench/scripts/gsnr_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "sources": [Path(s["name"]).name for s in sources], "repeats": joined["repeats"],
            "conflicts": joined["conflicts"], "n_boot": args.n_boot, "seed": args.seed}
    out.mkdir(parents=True, exist_ok=True)
    gcols = ["step", "kimg", "net", "group", "gsnr", "gsnr_c", "gsnr_c_se", "gsnr_pool", "gsnr_pool_se", "params",
             "samples"]
    grows = [{**r, "gsnr_c": ("" if r["derived"] else r["gsnr_c"])} for r in joined["gsnr"]]
    atomic_write_text(out / "gsnr.csv", _csv_text(grows, gcols))
    if joined["kid"]:
        atomic_write_text(out / "kid.csv", _csv_text(joined["kid"], ["step", "kimg", "kid", "ci_low", "ci_high", "n"]))
    else:  # an earlier run's kid.csv in --out would be plotted beside this run's GSNR (gsnr_plot_png reads it)
        (out / "kid.csv").unlink(missing_ok=True)
    from faceedit.training.plots import gsnr_plot_png

    png = gsnr_plot_png(out / "gsnr.csv", args.title, kid_csv=out / "kid.csv" if joined["kid"] else None)
    if png is not None:
        atomic_write_bytes(out / "gsnr.png", png)
    atomic_write_bytes(out / "gsnr_run.png", relation_png(res))
    md = markdown(res, meta)
    atomic_write_text(out / "gsnr_run.md", md)
    atomic_write_text(out / "gsnr_run.json", json.dumps(_json_safe({"meta": meta, **res}), indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
