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
