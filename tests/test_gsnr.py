"""GSNR diagnostics: torch.func per-sample gradients against direct per-sample loops."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faceedit.networks import Discriminator, Generator
from faceedit.training import augment, gsnr


def _tiny_gd(kind="mlp"):
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, resolution=16, mapping_kind=kind, mapping_layers=2, mapping_blocks=1,
                  mapping_heads=2, channel_base=64, channel_max=8)
    D = Discriminator(16, channel_base=64, channel_max=8)
    return G, D


def _loop_grads(loss_of_sample, params, m):
    """Reference: one autograd.grad call per sample."""
    out = {k: [] for k in params}
    for i in range(m):
        gs = torch.autograd.grad(loss_of_sample(i), list(params.values()), allow_unused=True)
        for (k, p), g in zip(params.items(), gs):
            out[k].append(torch.zeros_like(p) if g is None else g)
    return {k: torch.stack(v) for k, v in out.items()}


def test_per_sample_grads_match_loop_small_mlp():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))
    x, y = torch.randn(12, 5), torch.randn(12, 1)
    params = dict(net.named_parameters())

    def loss_fn(p, xb, yb):
        return F.mse_loss(torch.func.functional_call(net, p, (xb,)), yb)

    got = gsnr.per_sample_grads(loss_fn, params, (x, y))
    ref = _loop_grads(lambda i: F.mse_loss(net(x[i:i + 1]), y[i:i + 1]), params, 12)
    for k in params:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
    # micro-batches of 3: each gradient is the mean-loss gradient of its micro-batch
    got3 = gsnr.per_sample_grads(loss_fn, params, (x, y), micro=3)
    ref3 = _loop_grads(lambda i: F.mse_loss(net(x[3 * i:3 * i + 3]), y[3 * i:3 * i + 3]), params, 4)
    for k in params:
        torch.testing.assert_close(got3[k], ref3[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        gsnr.per_sample_grads(loss_fn, params, (x, y), micro=5)


def test_gsnr_formula_and_group_means():
    g = {"a": torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]]), "b": torch.tensor([[1.0], [-1.0], [0.0]])}
    r = gsnr.gsnr_from_grads(g)
    # a[:, 0]: mean 3, unbiased var 4 -> 9/4; a[:, 1]: zero variance -> undefined (NaN)
    assert r["a"][0].item() == pytest.approx(9 / 4)
    assert math.isnan(r["a"][1].item())
    assert r["b"][0].item() == pytest.approx(0.0)
    rk = gsnr.gsnr_from_grads(g, micro=4)  # variance of a k-mean is var/k: multiplied back
    assert rk["a"][0].item() == pytest.approx(9 / 16)
    gm = gsnr.group_means(r, {"a": "G1", "b": "G2"})
    assert gm["G1"] == {"gsnr": pytest.approx(9 / 4), "params": 1, "undefined": 1}
    assert gm["all"]["gsnr"] == pytest.approx((9 / 4 + 0) / 2) and gm["all"]["params"] == 2


def test_gsnr_converges_to_known_value_and_micro_correction():
    # loss_i = w * a_i with a_i ~ N(mu, sigma^2): per-sample gradient a_i, true GSNR mu^2 / sigma^2 = 0.25
    torch.manual_seed(3)
    m, mu, sigma = 8000, 1.0, 2.0
    a = mu + sigma * torch.randn(m)
    w = {"w": torch.zeros([])}

    def loss_fn(p, ab):
        return (p["w"] * ab).mean()

    for k in (1, 8):
        g = gsnr.per_sample_grads(loss_fn, w, (a,), micro=k)
        est = gsnr.gsnr_from_grads(g, micro=k)["w"].item()
        assert est == pytest.approx(0.25, rel=0.12), (k, est)


def test_mbstd_stat_reproduces_discriminator_forward():
    _, D = _tiny_gd()
    for n in (8, 6, 3):  # divisible by the group of 4, by 2 only (group falls back to 1), odd
        x = torch.randn(n, 3, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(gsnr.d_logits_with_stat(D, x, gsnr.mbstd_stats(D, x)), D(x))


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_generator_gsnr_matches_direct_loop(kind):
    G, D = _tiny_gd(kind)
    m = 6
    z = G.sample_z(m, seed=4)
    noise = [torch.randn(m, 1, b.shape[-2], b.shape[-1]) for b in G.synthesis.noise_buffers()]
    ap = augment.sample_params(m, 16)
    got, grads = gsnr.generator_gsnr(G, D, z, noise=noise, aug_params=ap, return_grads=True)

    with torch.no_grad():
        fake = G.synthesis(G.mapping(z), noise=noise, path="shared")
        stat = gsnr.mbstd_stats(D, augment.apply(fake, ap))
    params = dict(G.named_parameters())

    def loss_i(i):
        sl = lambda t: t[i:i + 1]  # noqa: E731
        x = G.synthesis(G.mapping(sl(z)), noise=[sl(n) for n in noise], path="shared")
        x = augment.apply(x, {k: sl(v) for k, v in ap.items()})
        return F.softplus(-gsnr.d_logits_with_stat(D, x, sl(stat))).mean()

    ref_grads = _loop_grads(loss_i, params, m)
    for k in params:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)
    ref = gsnr.group_means(gsnr.gsnr_from_grads(ref_grads), gsnr.param_groups(G))
    assert set(got) == set(ref) and {"mapping", "syn4", "syn8", "syn16", "all"} <= set(got)
    for k in ref:
        assert got[k]["params"] == ref[k]["params"]
        # elementwise mean^2/var amplifies float rounding where var is tiny: compare loosely
        assert got[k]["gsnr"] == pytest.approx(ref[k]["gsnr"], rel=2e-2, abs=1e-6), k


def test_discriminator_gsnr_matches_direct_loop_and_modes():
    _, D = _tiny_gd()
    torch.manual_seed(5)
    m = 8
    real, fake = torch.randn(m, 3, 16, 16), torch.randn(m, 3, 16, 16)
    got, grads = gsnr.discriminator_gsnr(D, real, fake, return_grads=True)
    sr, sf = gsnr.mbstd_stats(D, real), gsnr.mbstd_stats(D, fake)
    params = dict(D.named_parameters())

    def loss_i(i):
        s = slice(i, i + 1)
        return (F.softplus(gsnr.d_logits_with_stat(D, fake[s], sf[s]))
                + F.softplus(-gsnr.d_logits_with_stat(D, real[s], sr[s]))).mean()

    ref_grads = _loop_grads(loss_i, params, m)
    for k in params:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)
    ref = gsnr.group_means(gsnr.gsnr_from_grads(ref_grads), gsnr.param_groups(D))
    assert {"rgb", "b16", "b8", "epilogue", "all"} == set(got)
    for k in ref:
        assert got[k]["gsnr"] == pytest.approx(ref[k]["gsnr"], rel=2e-2, abs=1e-6), k
    # group1 mode: exactly the per-sample gradients of a mbstd_group=1 discriminator
    D1 = Discriminator(16, channel_base=64, channel_max=8, mbstd_group=1)
    D1.load_state_dict(D.state_dict())
    g1 = gsnr.discriminator_gsnr(D, real, fake, mbstd="group1", micro=2)
    p1 = dict(D1.named_parameters())
    ref1 = _loop_grads(lambda i: (F.softplus(D1(fake[2 * i:2 * i + 2])).mean()
                                  + F.softplus(-D1(real[2 * i:2 * i + 2])).mean()) / 1, p1, m // 2)
    # D1 sees micro-batches of 2 with group 1 (each its own group): same function as "group1"
    ref1 = gsnr.group_means(gsnr.gsnr_from_grads(ref1, micro=2), gsnr.param_groups(D1))
    for k in ref1:
        assert g1[k]["gsnr"] == pytest.approx(ref1[k]["gsnr"], rel=2e-2, abs=1e-6), k
    with pytest.raises(ValueError, match="mbstd"):
        gsnr.discriminator_gsnr(D, real, fake, mbstd="nope")


# --------------------------------------------------------------------------- bias-corrected estimates


def _draws(m, reps, mu, sigma, seed=0):
    """``reps`` independent replicates of ``m`` per-sample gradients ~ N(mu, sigma^2), one per element."""
    g = torch.Generator().manual_seed(seed)
    return {"w": mu + sigma * torch.randn(m, reps, generator=g, dtype=torch.float64)}


@pytest.mark.parametrize("mu,sigma", [(0.3, 1.5), (0.0, 2.0)])
def test_corrected_gsnr_is_unbiased_where_the_plain_one_is_not(mu, sigma):
    m, reps = 16, 200_000
    r = mu ** 2 / sigma ** 2
    g = _draws(m, reps, mu, sigma)
    corr = gsnr.gsnr_from_grads(g, corrected=True)["w"]
    plain = gsnr.gsnr_from_grads(g)["w"]
    se = float(corr.std()) / reps ** 0.5
    assert abs(float(corr.mean()) - r) < 4 * se, (float(corr.mean()), r, se)
    # the plain figure: E = (r + 1/m)(m-1)/(m-3), i.e. about 1/m too high (the no-signal floor)
    want_plain = (r + 1 / m) * (m - 1) / (m - 3)
    assert abs(float(plain.mean()) - want_plain) < 4 * float(plain.std()) / reps ** 0.5
    assert float(plain.mean()) - r > 1 / m
    # the shorter (mean^2 - var/m) / var keeps a bias of 2r/(m-3) + 2/(m(m-3)): detectably off
    naive = float((plain - 1 / m).mean())
    assert naive - r == pytest.approx(2 * r / (m - 3) + 2 / (m * (m - 3)), abs=4 * se)
    assert naive - r > 8 * se


def test_corrected_gsnr_with_micro_batches_is_unbiased():
    # micro-batch gradients of k samples are means of k draws: N(mu, sigma^2 / k)
    m, k, reps, mu, sigma = 32, 4, 100_000, 0.5, 2.0
    g = _draws(m // k, reps, mu, sigma / k ** 0.5, seed=1)
    corr = gsnr.gsnr_from_grads(g, micro=k, corrected=True)["w"]
    assert abs(float(corr.mean()) - mu ** 2 / sigma ** 2) < 4 * float(corr.std()) / reps ** 0.5
    with pytest.raises(ValueError, match="at least 4"):
        gsnr.gsnr_from_grads({"w": torch.randn(3, 2)}, corrected=True)


def test_group_stats_figures_and_the_exact_plain_to_corrected_map():
    torch.manual_seed(7)
    m = 12
    grads = {"a": torch.randn(m, 3, 4) + 0.4, "b": torch.randn(m, 5) * torch.tensor([1.0, 2, 3, 4, 5]),
             "c": torch.ones(m, 2)}  # c: equal for every sample -> undefined
    groups = {"a": "G1", "b": "G1", "c": "G2"}
    st = gsnr.group_stats(grads, groups)
    ref = gsnr.group_means(gsnr.gsnr_from_grads(grads), groups)
    refc = gsnr.group_means(gsnr.gsnr_from_grads(grads, corrected=True), groups)
    for key in ("G1", "all"):
        assert st[key]["gsnr"] == pytest.approx(ref[key]["gsnr"], rel=1e-12)
        assert st[key]["gsnr_c"] == pytest.approx(refc[key]["gsnr"], rel=1e-10)
        # group means of the corrected figure are an exact affine map of the plain ones
        assert st[key]["gsnr_c"] == pytest.approx(gsnr.corrected_from_plain(st[key]["gsnr"], m), rel=1e-10)
        assert st[key]["params"] == 17 and math.isfinite(st[key]["gsnr_c_se"]) and st[key]["gsnr_c_se"] > 0
    assert st["G2"]["params"] == 0 and st["G2"]["undefined"] == 2 and math.isnan(st["G2"]["gsnr_c"])
    g = torch.cat([grads["a"].reshape(m, -1), grads["b"]], 1).double()
    mean, var = g.mean(0), g.var(0)
    assert st["G1"]["gsnr_pool"] == pytest.approx(float((mean ** 2 - var / m).sum() / var.sum()), rel=1e-10)
    # too few samples for the corrected figure: NaN, the plain one still there
    few = gsnr.group_stats({"a": grads["a"][:3]})
    assert math.isnan(few["all"]["gsnr_c"]) and math.isnan(few["all"]["gsnr_c_se"]) and few["all"]["gsnr"] > 0
    with pytest.raises(ValueError, match="same number"):
        gsnr.group_stats({"a": torch.randn(5, 2), "b": torch.randn(6, 2)})


def test_pooled_gsnr_is_unbiased_over_unequal_parameters():
    # a ratio of two unbiased sums: unbiased once the group is large enough for its denominator to settle
    torch.manual_seed(2)
    m, p, reps = 8, 2000, 200
    mu = torch.randn(p, dtype=torch.float64) * 0.3
    sigma = torch.rand(p, dtype=torch.float64) * 2 + 0.2
    want = float((mu ** 2).sum() / (sigma ** 2).sum())
    v = torch.tensor([gsnr.group_stats({"w": mu + sigma * torch.randn(m, p, dtype=torch.float64)})["all"]["gsnr_pool"]
                      for _ in range(reps)])
    se = float(v.std()) / reps ** 0.5
    assert abs(float(v.mean()) - want) < 4 * se, (float(v.mean()), want, se)
    assert 1 / m > 20 * se  # resolution: the uncorrected sum ratio, ~1/m higher, would fail the check above


def test_jackknife_error_matches_the_spread_over_repeated_measurements():
    # parameters share a noise component (as a layer's do): the group mean's spread is far above
    # the independent-parameter figure, and the jackknife must see it
    torch.manual_seed(4)
    m, p, reps = 16, 40, 300
    mu = torch.linspace(0.0, 0.6, p, dtype=torch.float64)
    est, se = [], []
    for _ in range(reps):
        g = mu + 0.8 * torch.randn(m, 1, dtype=torch.float64) + 0.6 * torch.randn(m, p, dtype=torch.float64)
        s = gsnr.group_stats({"w": g})["all"]
        est.append(s["gsnr_c"])
        se.append(s["gsnr_c_se"])
    spread, mean_se = float(torch.tensor(est).std()), float(torch.tensor(se).mean())
    assert 0.8 < mean_se / spread < 1.5, (mean_se, spread)


def test_one_step_ratio_equals_the_papers_weighted_form():
    torch.manual_seed(6)
    mu, sigma, n = torch.randn(50, dtype=torch.float64) * 0.1, torch.rand(50, dtype=torch.float64) + 0.1, 300
    r = mu ** 2 / sigma ** 2
    e_g2 = mu ** 2 + sigma ** 2 / n   # E over training sets of the squared full-batch gradient
    w = e_g2 / e_g2.sum()
    paper = 1 - float((w / (r + 1 / n)).sum()) / n
    pooled = float((mu ** 2).sum() / (sigma ** 2).sum())
    assert gsnr.one_step_generalisation_ratio(pooled, n) == pytest.approx(paper, rel=1e-12)
    assert gsnr.one_step_generalisation_ratio(-0.01, n) == 0.0
    with pytest.raises(ValueError, match="positive"):
        gsnr.one_step_generalisation_ratio(0.1, 0)


def test_discriminator_gsnr_on_real_faces_alone_matches_direct_loop():
    _, D = _tiny_gd()
    torch.manual_seed(8)
    m = 6
    real = torch.randn(m, 3, 16, 16)
    got, grads = gsnr.discriminator_gsnr(D, real, None, return_grads=True)
    sr = gsnr.mbstd_stats(D, real)
    params = dict(D.named_parameters())
    ref = _loop_grads(lambda i: F.softplus(-gsnr.d_logits_with_stat(D, real[i:i + 1], sr[i:i + 1])).mean(), params, m)
    for k in params:
        torch.testing.assert_close(grads[k], ref[k], rtol=1e-4, atol=1e-6)
    pair = gsnr.discriminator_gsnr(D, real, torch.randn(m, 3, 16, 16))
    assert got["all"]["gsnr"] != pytest.approx(pair["all"]["gsnr"], rel=1e-3)  # a different loss


def test_read_log_rows_brings_old_logs_to_the_corrected_scale():
    old = [{"step": "10", "kimg": "1.5", "net": "G", "group": "all", "gsnr": "0.05", "params": "7", "samples": "32"},
           {"step": "10", "kimg": "1.5", "net": "D", "group": "gap", "gsnr": "-0.002", "params": "", "samples": "1000"}]
    new = [{**old[0], "gsnr_c": "0.0123", "gsnr_c_se": "0.001", "gsnr_pool": "0.01", "gsnr_pool_se": "nan"}]
    a, gap = gsnr.read_log_rows(old)
    assert a["derived"] and a["gsnr_c"] == pytest.approx(29 / 31 * 0.05 - 1 / 32) and math.isnan(a["gsnr_c_se"])
    assert a["params"] == 7 and a["step"] == 10
    assert not gap["derived"] and gap["gsnr"] == -0.002 and math.isnan(gap["gsnr_c"])
    (b,) = gsnr.read_log_rows(new)
    assert not b["derived"] and b["gsnr_c"] == 0.0123 and b["gsnr_c_se"] == 0.001 and math.isnan(b["gsnr_pool_se"])
    with pytest.raises(ValueError, match="not a gsnr.csv row"):
        gsnr.read_log_rows([{"step": "1", "net": "G"}])
