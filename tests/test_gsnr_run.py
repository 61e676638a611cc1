"""GSNR over a whole run: the trainer's gsnr.csv columns, the plot, and bench/scripts/gsnr_run.py."""
import csv
import io
import json
import math
import zipfile

import pytest
import torch
from PIL import Image

from faceedit.training import gsnr
from faceedit.training.loop import Trainer, TrainConfig
from faceedit.training.plots import gsnr_plot_png

from test_training import TINY, _images  # the training tests' tiny setup

OLD_COLS = ["step", "kimg", "net", "group", "gsnr", "params", "samples"]
NEW_COLS = OLD_COLS + ["gsnr_c", "gsnr_c_se", "gsnr_pool", "gsnr_pool_se"]


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("gsnr_run")


def _run_rows(steps, d_gsnr, g_gsnr, gap, *, new=True, m=32, net_d="D"):
    """gsnr.csv rows of a synthetic run: group ``all`` and one more per net, plus the gap rows."""
    rows = []
    for s, dg, gg, gp in zip(steps, d_gsnr, g_gsnr, gap):
        kimg = s * 0.5
        for net, v in (("G", gg), (net_d, dg)):
            for group, val in (("all", v), ("b8" if net != "G" else "syn8", v * 1.5)):
                r = {"step": s, "kimg": kimg, "net": net, "group": group, "params": 10, "samples": m}
                if new:
                    r.update(gsnr=val + 1 / m, gsnr_c=val, gsnr_c_se=abs(val) * 0.1 + 1e-4,
                             gsnr_pool=val * 0.8, gsnr_pool_se=1e-4)
                else:  # old log: plain figure only; derived gsnr_c will be (m-3)/(m-1) * plain - 1/m
                    r.update(gsnr=val)
                rows.append(r)
        for group, val in (("logit_train", 0.1 + gp), ("logit_heldout", 0.1), ("gap", gp)):
            rows.append({"step": s, "kimg": kimg, "net": "D", "group": group, "gsnr": val, "params": "",
                         "samples": 1000})
    return rows


def _write_csv(path, rows, cols):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _kid_rows(steps, kid):
    return [{"step": s, "kimg": s * 0.5, "kid": k, "ci_low": k - 0.01, "ci_high": k + 0.01, "n": 100}
            for s, k in zip(steps, kid)]


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


# --------------------------------------------------------------------------- the trainer's rows


def test_measure_gsnr_writes_corrected_columns_and_real_only_rows(tmp_path):
    tr = Trainer(TrainConfig(**{**TINY, "holdout": 6, "gsnr_samples": 8}), _images(24), "cpu", run_dir=tmp_path)
    rows = tr.measure_gsnr()
    nets = {r["net"] for r in rows}
    assert nets == {"G", "D", "D_real"}
    for r in rows:
        if r["group"] in gsnr.GAP_GROUPS:
            continue
        plain, corr = float(r["gsnr"]), float(r["gsnr_c"])
        assert corr == pytest.approx(gsnr.corrected_from_plain(plain, 8), rel=1e-4, abs=1e-6)
        assert math.isfinite(float(r["gsnr_c_se"])) and float(r["gsnr_c_se"]) > 0
        assert math.isfinite(float(r["gsnr_pool"]))
    d_all = {r["net"]: float(r["gsnr"]) for r in rows if r["group"] == "all"}
    assert d_all["D"] != pytest.approx(d_all["D_real"], rel=1e-3)
    with open(tmp_path / "gsnr.csv", newline="") as f:
        back = gsnr.read_log_rows(csv.DictReader(f))
    assert len(back) == len(rows) and not any(r["derived"] for r in back)
    assert _png_size(gsnr_plot_png(tmp_path / "gsnr.csv", "tiny"))[0] > 0


# --------------------------------------------------------------------------- the plot


@pytest.mark.parametrize("new", [True, False])
def test_gsnr_plot_with_and_without_new_columns_and_kid(tmp_path, new):
    steps = [100, 200, 300, 400]
    rows = _run_rows(steps, [0.01, 0.02, -0.003, 0.015], [0.002, 0.004, 0.003, 0.001], [0.0, -0.01, 0.02, 0.0],
                     new=new, net_d="D_real" if new else "D")
    if new:  # D (pair loss) rows too, so three GSNR panels
        rows += [{**r, "net": "D"} for r in rows if r["net"] == "D_real"]
    _write_csv(tmp_path / "gsnr.csv", rows, NEW_COLS if new else OLD_COLS)
    no_kid = gsnr_plot_png(tmp_path / "gsnr.csv", "toy")
    _write_csv(tmp_path / "kid.csv", _kid_rows(steps, [0.08, 0.07, 0.05, 0.05]),
               ["step", "kimg", "kid", "ci_low", "ci_high", "n"])
    with_kid = gsnr_plot_png(tmp_path / "gsnr.csv", "toy")  # kid.csv beside gsnr.csv is found
    w0, h0 = _png_size(no_kid)
    w1, h1 = _png_size(with_kid)
    assert h1 == h0 and w1 >= w0  # the KID panel joins the bottom row
    assert with_kid != no_kid
    # only GSNR rows (no gap, no KID): one row of panels, half the height
    _write_csv(tmp_path / "g_only.csv", [r for r in rows if r["group"] not in gsnr.GAP_GROUPS],
               NEW_COLS if new else OLD_COLS)
    _, h2 = _png_size(gsnr_plot_png(tmp_path / "g_only.csv", kid_csv=tmp_path / "missing.csv"))
    assert h2 < 0.7 * h0
    assert gsnr_plot_png(tmp_path / "absent.csv") is None


# --------------------------------------------------------------------------- bench/scripts/gsnr_run.py


def test_relation_finds_a_planted_ordering_and_its_opposite(bench):
    steps = [0, 100, 200, 300, 400, 500, 600, 700]
    d = [0.02, 0.005, 0.03, 0.01, 0.04, 0.0, 0.025, 0.015]
    # gap grows less after a high D GSNR: change after t = -GSNR(t) (ordering planted), cumulated
    gap = [0.0]
    for v in d[:-1]:
        gap.append(gap[-1] + 0.05 * (0.02 - v))
    g = [0.001, 0.004, 0.002, 0.006, 0.003, 0.005, 0.0, 0.007]
    kid = [0.1]
    for v in g[:-1]:  # KID falls *less* after a high G GSNR: the opposite of H2
        kid.append(kid[-1] - 0.001 + 0.5 * v)
    rows = gsnr.read_log_rows([{k: str(v) for k, v in r.items()} for r in _run_rows(steps, d, g, gap)])
    res = bench.analyse({"gsnr": rows, "kid": [{**r, "kimg": float(r["kimg"])} for r in _kid_rows(steps, kid)]},
                        n_train=1000, n_boot=300)
    h1, h2 = res["primary"]["H1"], res["primary"]["H2"]
    assert h1["n"] == h2["n"] == 7
    assert h1["rho"] == pytest.approx(-1.0) and h1["verdict"] == "supported" and h1["ci_high"] < 0
    assert h1["p"] == pytest.approx(2 / math.factorial(7))  # exact: only the two extreme pairings
    assert h2["rho"] == pytest.approx(1.0) and h2["verdict"] == "contradicted"
    # change per Mimg: 100 steps = 50 kimg here
    assert h1["y"][0] == pytest.approx(1000 * (gap[1] - gap[0]) / 50)
    assert [o["one_minus_R"] for o in res["osgr"]] == pytest.approx(
        [1 / (1 + 1000 * max(0.8 * v, 0)) for v in d])
    assert "secondary" in res and any(s["group"] == "b8" for s in res["secondary"])


def test_noise_is_not_resolved(bench):
    torch.manual_seed(0)
    steps = list(range(0, 600, 100))
    d = torch.rand(6).tolist()
    gap = torch.randn(6).tolist()
    rows = gsnr.read_log_rows([{k: str(v) for k, v in r.items()} for r in _run_rows(steps, d, d, gap)])
    res = bench.analyse({"gsnr": rows, "kid": []}, n_boot=300)
    assert res["primary"]["H1"]["verdict"] == "not resolved"
    assert res["primary"]["H2"]["n"] == 0 and any("kid.csv" in n for n in res["notes"])


def test_chunks_are_joined_by_step_later_wins_and_old_logs_are_read(bench, tmp_path):
    steps = [100, 200, 300, 400]
    rows = _run_rows(steps, [0.01, 0.02, 0.03, 0.04], [0.01] * 4, [0.0] * 4, new=False)
    a, b = tmp_path / "chunk1", tmp_path / "chunk2"
    a.mkdir()
    b.mkdir()
    _write_csv(a / "gsnr.csv", [r for r in rows if r["step"] <= 300], OLD_COLS)
    # the second chunk re-logs step 300 (a resume rewrote it) and one value differs
    second = [dict(r) for r in rows if r["step"] >= 300]
    second[0]["gsnr"] = 0.5
    with zipfile.ZipFile(b / "export.zip", "w") as z:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=OLD_COLS)
        w.writeheader()
        w.writerows(second)
        z.writestr("run/gsnr.csv", buf.getvalue())
        z.writestr("run/train.json", json.dumps({"images": 1200, "config": {"holdout": 200}}))
    joined = bench.join_sources([bench.read_source(a), bench.read_source(b / "export.zip")])
    assert sorted({r["step"] for r in joined["gsnr"]}) == steps
    per_key = {(r["step"], r["net"], r["group"]) for r in joined["gsnr"]}
    assert len(per_key) == len(joined["gsnr"])
    first = next(r for r in joined["gsnr"] if r["step"] == 300 and r["net"] == second[0]["net"]
                 and r["group"] == second[0]["group"])
    assert first["gsnr"] == 0.5 and first["derived"]
    assert first["gsnr_c"] == pytest.approx(29 / 31 * 0.5 - 1 / 32)
    n_rows_300 = sum(1 for r in rows if r["step"] == 300)
    assert joined["repeats"] == n_rows_300 and joined["conflicts"] == 1
    assert bench.train_images(joined["train"]) == 1000
    with pytest.raises(FileNotFoundError, match="gsnr.csv"):
        bench.read_source(tmp_path)


def test_main_writes_markdown_json_and_pngs(bench, tmp_path):
    steps = [0, 100, 200, 300, 400, 500]
    run = tmp_path / "run"
    run.mkdir()
    _write_csv(run / "gsnr.csv", _run_rows(steps, [0.01, 0.03, 0.02, 0.0, 0.04, 0.01], [0.01] * 6,
                                           [0.0, 0.01, -0.01, 0.0, 0.02, 0.01]), NEW_COLS)
    _write_csv(run / "kid.csv", _kid_rows(steps, [0.09, 0.08, 0.08, 0.07, 0.06, 0.06]),
               ["step", "kimg", "kid", "ci_low", "ci_high", "n"])
    out = tmp_path / "out"
    assert bench.main([str(run), "--out", str(out), "--n-boot", "200", "--train-images", "500"]) == 0
    data = json.loads((out / "gsnr_run.json").read_text())
    assert data["primary"]["H1"]["n"] == 5 and data["n_train"] == 500
    md = (out / "gsnr_run.md").read_text()
    assert "**Result:** H1" in md and "| H2 |" in md
    for name in ("gsnr_run.png", "gsnr.png"):
        _png_size((out / name).read_bytes())
    assert {r["step"] for r in csv.DictReader(open(out / "kid.csv"))} == {str(s) for s in steps}
    with_kid = _png_size((out / "gsnr.png").read_bytes())
    # the same --out again for a run without KID: the earlier kid.csv must not reach the new plot
    (run / "kid.csv").unlink()
    assert bench.main([str(run), "--out", str(out), "--n-boot", "200", "--train-images", "500"]) == 0
    assert not (out / "kid.csv").exists() and _png_size((out / "gsnr.png").read_bytes()) != with_kid
    assert bench.main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_correlate_agrees_with_scipy_and_handles_ties(bench):
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 5, (12,), generator=g).double().numpy()  # ties
    y = (torch.from_numpy(x) + torch.randn(12, generator=g, dtype=torch.float64)).numpy()
    c = bench.correlate(x, y, n_boot=400)
    assert c["rho"] == pytest.approx(spearmanr(x, y).statistic, rel=1e-12)
    assert c["ci_low"] <= c["rho"] <= c["ci_high"] and 0 < c["p"] < 0.05 and c["boot_valid"] == 400
    assert math.isnan(bench.correlate([1.0, 2.0], [2.0, 1.0])["rho"])  # fewer than 3 pairs
    assert math.isnan(bench.correlate([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["rho"])  # a constant side
