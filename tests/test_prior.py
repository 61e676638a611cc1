"""The Gaussianized prior: Ledoit-Wolf, the leaky-ReLU inverse, chi-square fit checks, compression, caching."""
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.inversion.prior import (GaussianPrior, LedoitWolfAccumulator, chi2_check, degaussianize, fit_prior,
                                      gaussianize, load_prior, prior_cache_path)
from faceedit.networks import Generator
from faceedit.networks.ops import lrelu_gain


class _GaussMapping(torch.nn.Module):
    """A stand-in mapping whose Gaussianized output is exactly N(b, A A^T) (for known answers)."""

    def __init__(self, A, b, num_ws, kind):
        super().__init__()
        self.A, self.b, self.num_ws, self.kind = A, b, num_ws, kind
        self.z_dim = A.shape[0] if kind == "mlp" else A.shape[0] // num_ws
        self.w_avg = torch.zeros(num_ws, A.shape[1] // (1 if kind == "mlp" else num_ws))

    def forward(self, z):
        if self.kind == "mlp":
            x = z @ self.A + self.b                              # Gaussian pre-activation
            w = lrelu_gain(x)                                    # leaky ReLU 0.2, gain sqrt 2
            return w.unsqueeze(1).repeat(1, self.num_ws, 1)
        x = z.flatten(1) @ self.A + self.b                       # joint Gaussian over layers
        return x.reshape(len(z), self.num_ws, -1)


class _FakeG(torch.nn.Module):
    def __init__(self, kind, w_dim=6, num_ws=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        D = w_dim if kind == "mlp" else w_dim * num_ws
        A = 0.4 * torch.randn(D, D, generator=g) / math.sqrt(D) + torch.eye(D)  # well conditioned
        b = torch.randn(D, generator=g) * 0.3
        self.mapping = _GaussMapping(A, b, num_ws, kind)
        self.mapping_kind, self.num_ws, self.w_dim = kind, num_ws, w_dim
        self.synthesis = torch.nn.Module()
        self.synthesis.const = torch.nn.Parameter(torch.zeros(1))
        self.true_cov = A.T @ A
        self.true_mean = b

    @property
    def z_shape(self):
        return (self.mapping.z_dim,) if self.mapping_kind == "mlp" else (self.num_ws, self.mapping.z_dim)

    @property
    def w_avg(self):
        return self.mapping.w_avg


def test_ledoit_wolf_streaming_matches_sklearn():
    from sklearn.covariance import ledoit_wolf

    g = torch.Generator().manual_seed(1)
    X = (torch.randn(700, 15, generator=g) @ torch.randn(15, 15, generator=g)) + 5.0
    acc = LedoitWolfAccumulator()
    for chunk in X.split(64):
        acc.update(chunk)
    r = acc.finalize()
    cov, shrink = ledoit_wolf(X.double().numpy())
    assert r["shrinkage"] == pytest.approx(shrink, rel=1e-8)
    np.testing.assert_allclose(r["cov"].numpy(), cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r["mean"].numpy(), X.double().mean(0).numpy(), atol=1e-10)


def test_leaky_relu_inverse_round_trip():
    x = torch.randn(1000, 8, dtype=torch.float64)
    w = lrelu_gain(x)
    v = gaussianize(w)
    torch.testing.assert_close(v, math.sqrt(2) * x)             # undoes the negative slope exactly
    torch.testing.assert_close(degaussianize(v), w)
    torch.testing.assert_close(gaussianize(degaussianize(x)), x)


def test_chi2_check_known_gaussian_and_misfit():
    g = torch.Generator().manual_seed(2)
    dof = 20
    good = torch.randn(20000, dof, generator=g).square().sum(1)
    chk = chi2_check(good, dof)
    assert abs(chk["mean_ratio"] - 1) < 0.02 and abs(chk["var_ratio"] - 1) < 0.06 and chk["ks"] < 0.015
    bad = (1.3 * torch.randn(20000, dof, generator=g)).square().sum(1)  # wrong scale
    assert chi2_check(bad, dof)["ks"] > 0.3


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_fit_prior_recovers_known_gaussian(kind):
    G = _FakeG(kind)
    stats = fit_prior(G, 30000, batch=4096, check_n=8000)
    # the Gaussianized codes are sqrt(2) * (z A + b) for the MLP, z A + b for the joint model
    s = math.sqrt(2) if kind == "mlp" else 1.0
    torch.testing.assert_close(stats["mean"], (s * G.true_mean).float(), atol=0.05, rtol=0)
    torch.testing.assert_close(stats["cov"], (s * s * G.true_cov).float(), atol=0.12, rtol=0.05)
    assert float(stats["joint"]) == (1.0 if kind == "transformer" else 0.0)
    assert abs(float(stats["check_mean_ratio"]) - 1) < 0.03
    assert abs(float(stats["check_var_ratio"]) - 1) < 0.1
    assert float(stats["check_ks"]) < 0.03


def test_penalty_sums_over_layers_and_joint_is_one_gaussian():
    G = _FakeG("mlp", w_dim=4, num_ws=3)
    prior = GaussianPrior(fit_prior(G, 5000, check_n=0), 3, 4)
    ws = torch.randn(5, 3, 4)
    per_layer = [prior.mahalanobis(ws[:, i:i + 1].expand(-1, 3, -1)) / 3 for i in range(3)]
    torch.testing.assert_close(prior.penalty(ws), sum(per_layer))
    # the Mahalanobis distance matches a direct computation with the inverse covariance
    v = gaussianize(ws[:, 0])
    d = v - prior.mean
    direct = torch.einsum("bi,ij,bj->b", d.double(), torch.linalg.inv(prior._cov), d.double())
    torch.testing.assert_close(prior.mahalanobis(ws[:, :1].expand(-1, 3, -1)).double() / 3, direct, rtol=1e-4,
                               atol=1e-4)
    Gj = _FakeG("transformer", w_dim=4, num_ws=3)
    pj = GaussianPrior(fit_prior(Gj, 5000, check_n=0), 3, 4)
    assert pj.dim == 12 and pj.layers == 1
    assert pj.penalty(ws).shape == (5,)
    with pytest.raises(ValueError, match="another model"):
        GaussianPrior(fit_prior(Gj, 500, check_n=0), 3, 5)


def test_compression_keeps_inliers_and_shrinks_outliers():
    G = _FakeG("transformer", w_dim=4, num_ws=3)
    prior = GaussianPrior(fit_prior(G, 5000, check_n=0), 3, 4)
    mean = prior.mean_ws()[None]
    torch.testing.assert_close(prior.compress(mean, tau=1.0), mean, atol=1e-5, rtol=0)
    sigma, U = prior._pca_basis()
    # an outlier 10 sigma along the first principal axis comes back at tau*(1 + log(10/tau)) sigma
    c = torch.zeros(12)
    c[-1] = 10 * sigma[-1]
    ws = (prior.mean + U @ c).reshape(1, 3, 4)
    out = prior.compress(ws, tau=2.0)
    cc = (out.reshape(12) - prior.mean) @ U
    assert float(cc[-1] / sigma[-1]) == pytest.approx(2 * (1 + math.log(5)), rel=1e-4)
    assert prior.mahalanobis(out) < prior.mahalanobis(ws)
    # huge tau: nothing to compress
    torch.testing.assert_close(prior.compress(ws, tau=100.0), ws, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        prior.compress(ws, tau=0)


def test_compress_on_mlp_generator_keeps_w_broadcast():
    G = _FakeG("mlp", w_dim=5, num_ws=4)
    prior = GaussianPrior(fit_prior(G, 5000, check_n=0), 4, 5)
    ws = G.mapping(torch.randn(16, 5) * 3)
    out = prior.compress(ws, tau=1.0)
    torch.testing.assert_close(out, out[:, :1].expand_as(out))
    assert (out - prior.mean_ws()).norm() < (ws - prior.mean_ws()).norm()


def _tiny(kind):
    torch.manual_seed(0)
    return Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_kind=kind,
                     mapping_layers=2, mapping_blocks=1, mapping_heads=2).eval()


def test_load_prior_fits_once_caches_and_prefers_the_model_file(tmp_path, monkeypatch):
    import faceedit.inversion.prior as prior_mod
    from faceedit.checkpoints import save_native

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    G = _tiny("mlp")
    path = save_native(tmp_path / "m", G, name="tiny")
    p1 = load_prior(str(path), G, n=3000)
    from faceedit.core.files import sha256_file

    cache = prior_cache_path(sha256_file(path / "model.safetensors"))
    assert cache.is_file() and not any(cache.parent.glob("*.part"))
    monkeypatch.setattr(prior_mod, "fit_prior", lambda *a, **k: pytest.fail("refitted despite the cache"))
    p2 = load_prior(str(path), G)
    torch.testing.assert_close(p1.mean, p2.mean)
    # statistics stored in the model file win, with no cache needed
    stats = {k: v * 1 for k, v in p1.stats.items()}
    stats["mean"] = stats["mean"] + 1.0
    path2 = save_native(tmp_path / "m2", G, name="tiny", prior=stats)
    p3 = load_prior(str(path2), G)
    torch.testing.assert_close(p3.mean, p1.mean + 1.0)
    from faceedit.checkpoints import load_model

    assert set(load_model(path2).prior) >= {"mean", "cov", "slope", "joint"}
    with pytest.raises(ValueError, match="embed"):
        load_prior(str(save_native(tmp_path / "m3", _tiny("transformer"), name="t")), fit=False)


def test_generate_compress_cli(tmp_path, monkeypatch):
    from faceedit.checkpoints import save_native
    from faceedit.cli import cli

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    G = _tiny("transformer")
    stats = fit_prior(G, 2000, check_n=0)
    path = save_native(tmp_path / "w", G, name="tinyw", prior=stats)
    r = CliRunner().invoke(cli, ["--device", "cpu", "generate", "--model", str(path), "--seeds", "0-1",
                                 "--compress", "1.5", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g" / "seed0001.png").is_file()


def test_fit_prior_command_embeds_statistics(tmp_path):
    from faceedit.checkpoints import load_model, save_native
    from faceedit.cli import cli

    src = save_native(tmp_path / "src", _tiny("mlp"), name="tiny")
    r = CliRunner().invoke(cli, ["--device", "cpu", "fit-prior", str(src), "--out", str(tmp_path / "dst"),
                                 "--n", "2000"])
    assert r.exit_code == 0, r.output
    assert "chi2 mean ratio" in r.output and "n 2000" in r.output
    m = load_model(tmp_path / "dst")
    assert m.prior["mean"].shape == (16,)
    assert float(m.prior["n"]) == 2000
    assert m.model_id == load_model(src).model_id  # same weights, same id
    r = CliRunner().invoke(cli, ["--device", "cpu", "fit-prior", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "Error" in r.output


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_compression_keeps_more_diversity_than_truncation(kind):
    from faceedit.inversion.prior import compression_vs_truncation

    G = _tiny(kind)
    with torch.no_grad():
        s = G.mapping(G.sample_z(2000, seed=1))
        G.mapping.w_avg.copy_(s.mean(0) if kind == "transformer" else s.mean((0, 1)))
    prior = GaussianPrior(fit_prior(G, 5000, check_n=0), G.num_ws, G.w_dim)
    rows = compression_vs_truncation(G, prior, taus=(1.0, 2.0), n=128)
    for r in rows:
        assert 0 < r["psi"] < 1 and r["maha_compress"] < r["maha_none"]
        # equal outlier-norm reduction, yet compression leaves the bulk alone: more pixel diversity
        assert r["div_truncate"] < r["div_compress"] <= r["div_none"] * 1.01, r


def test_layerwise_view_of_a_joint_prior():
    G = _FakeG("transformer", w_dim=4, num_ws=3)
    joint = GaussianPrior(fit_prior(G, 6000, check_n=0), 3, 4)
    lw = joint.layerwise()
    assert lw.layers == 3 and lw.total_dim == 12 and lw.layerwise() is lw
    ws = torch.randn(5, 3, 4)
    # each layer's term equals a direct Mahalanobis distance with that layer's block of the joint covariance
    cov = joint._cov.reshape(3, 4, 3, 4)
    direct = 0
    for i in range(3):
        d = (ws[:, i].double() - joint.mean.reshape(3, 4)[i].double())
        direct = direct + torch.einsum("bi,ij,bj->b", d, torch.linalg.inv(cov[i, :, i, :]), d)
    torch.testing.assert_close(lw.penalty(ws).double(), direct, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lw.mean_ws(), joint.mean_ws())
    # correlated layers: the joint distance of a typical code differs from the layer-wise one
    assert not torch.allclose(lw.penalty(ws), joint.penalty(ws), rtol=0.05)


def test_compression_keeps_more_diversity_than_truncation_on_the_shipped_model():
    """#6: at equal reduction of the outliers' norm |w - w_avg|, log-compression under the
    prior leaves the generated faces more diverse than truncation does. Diversity: mean
    pairwise distance in the attribute network's pooled features (a paired comparison:
    the same 300 samples, the same outliers)."""
    from faceedit.checkpoints.registry import load_model
    from faceedit.inversion.prior import compression_vs_truncation
    from faceedit.metrics.attributes import AttributeScorer

    m = load_model("faces64")
    G = m.G
    sc = AttributeScorer.load()
    feats = lambda im: torch.from_numpy(sc.features(im.clamp(-1, 1)))  # noqa: E731
    (row,) = compression_vs_truncation(G, load_prior(m, G), (1.0,), n=300, features=feats,
                                       feature_name="attribute-net features")
    assert 0.5 < row["psi"] < 0.99  # the outliers' norm really shrank (by the same factor for both)
    assert row["div_compress"] > row["div_truncate"]
    assert row["maha_compress"] < row["maha_truncate"]  # and the outliers end up nearer the distribution
