"""The Gaussianized latent prior (Wulff & Torralba) and log-compression.

Two models of the distribution of a generator's codes, picked by its mapping:

* **MLP mapping (W).** The last layer ends in a leaky ReLU (slope 0.2, gain sqrt 2), so
  undoing its negative slope, ``v = where(w >= 0, w, 5 * w)``, makes the codes close to
  Gaussian. One Gaussian ``N(mean, cov)`` over ``v`` (``w_dim`` dimensions) is fitted
  and applied to every layer: the penalty of a W+ latent is the squared Mahalanobis
  distance of each layer's ``v`` summed over the layers.
* **Transformer mapping (W++).** The mapping ends in a residual sum, not a leaky ReLU,
  and its layers' codes are correlated, so ``v = ws`` flattened and one *joint*
  Gaussian over all layers (``num_ws * w_dim`` dimensions) is fitted.

Both are fitted from ``n >= 100_000`` mapping samples with Ledoit-Wolf shrinkage,
computed in one streaming pass from chunked moments (no sample matrix is kept), and
checked: for fresh samples the squared Mahalanobis distance should follow chi-square
with ``D`` degrees of freedom (mean ``D``, variance ``2D``); ``fit_prior`` stores the
mean and variance ratios and the Kolmogorov-Smirnov statistic of that check.

Storage: ``fit_prior`` returns a dict of tensors that ``save_native(..., prior=)``
writes into the checkpoint's ``prior.safetensors``; ``load_prior`` reads them from there
or, for a model file without them, fits once and caches the result in
``cache_dir()/priors/<sha256 of model.safetensors>.safetensors`` (written atomically).

Keys of the dict: ``mean [D]``, ``cov [D, D]`` (shrunk), ``slope`` (5.0 for the MLP
transform, 1.0 = identity for W++), ``joint`` (0 per-layer / 1 joint), ``n``,
``shrinkage``, ``w_std`` (RMS distance of mapping samples from ``w_avg`` over
``[num_ws, w_dim]`` codes, used by the projector's latent noise), ``num_ws``, ``w_dim``,
``check_n``, ``check_mean_ratio``, ``check_var_ratio``, ``check_ks``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from faceedit.checkpoints.loaded import LoadedModel
from faceedit.core.errors import InversionError

log = logging.getLogger(__name__)

LEAKY_INV_SLOPE = 5.0  # 1 / 0.2, the inverse of the mapping's last leaky ReLU on negatives
DEFAULT_N = 100_000


# -- the Gaussianizing transform ----------------------------------------------------
def gaussianize(w: torch.Tensor, slope: float = LEAKY_INV_SLOPE) -> torch.Tensor:
    """``v = where(w >= 0, w, slope * w)`` (the leaky ReLU's inverse on negatives)."""
    return torch.where(w >= 0, w, w * slope) if slope != 1 else w


def degaussianize(v: torch.Tensor, slope: float = LEAKY_INV_SLOPE) -> torch.Tensor:
    """Inverse of :func:`gaussianize`: ``w = where(v >= 0, v, v / slope)``."""
    return torch.where(v >= 0, v, v / slope) if slope != 1 else v


# -- streaming Ledoit-Wolf ----------------------------------------------------------
class LedoitWolfAccumulator:
    """Mean and Ledoit-Wolf-shrunk covariance from chunks of samples, in one pass.

    Accumulates, in float64 and about a shift ``c`` (the first chunk's mean, for
    numerical safety), ``sum x``, ``sum x x^T``, ``sum |x|^2``, ``sum |x|^2 x`` and
    ``sum |x|^4``; these give the centred fourth-moment term Ledoit-Wolf's shrinkage
    intensity needs. The result equals ``sklearn.covariance.ledoit_wolf`` on the
    stacked samples (tested), without holding them: for W++ at 64 px that matrix
    would be 100k x 2560.
    """

    def __init__(self):
        self.n = 0
        self.shift = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).flatten(1)
        if self.shift is None:
            self.shift = x.mean(0)
            p = x.shape[1]
            z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=x.device)  # noqa: E731
            self.s1, self.s2, self.q1, self.qx, self.q2 = z(p), z(p, p), z(()), z(p), z(())
        x = x - self.shift
        q = x.square().sum(1)
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += x.T @ x
        self.q1 += q.sum()
        self.qx += q @ x
        self.q2 += q.square().sum()

    def finalize(self) -> dict:
        """Returns ``{mean, cov (shrunk), emp_cov, shrinkage, n}`` (float64)."""
        n = self.n
        if n < 2:
            raise InversionError("Ledoit-Wolf needs at least 2 samples")
        p = self.s1.numel()
        m = self.s1 / n                                  # mean about the shift
        emp = self.s2 / n - torch.outer(m, m)            # biased covariance, as sklearn
        mm = m @ m
        # sum_k |x_k - m|^4, expanded in the accumulated moments
        sum4 = (self.q2 + 4 * (m @ self.s2 @ m) + n * mm ** 2 - 4 * (self.qx @ m)
                + 2 * mm * self.q1 - 4 * mm * (self.s1 @ m))
        mu = torch.trace(emp) / p
        fro2 = emp.square().sum()
        delta = (fro2 - 2 * mu * torch.trace(emp) + p * mu ** 2) / p
        beta = (sum4 / n - fro2) / (p * n)
        beta = torch.minimum(beta.clamp_min(0), delta)
        shrink = float(beta / delta) if float(delta) > 0 else 0.0
        cov = (1 - shrink) * emp + shrink * mu * torch.eye(p, dtype=emp.dtype, device=emp.device)
        return {"mean": m + self.shift, "cov": cov, "emp_cov": emp, "shrinkage": shrink, "n": n}


def chi2_check(d2: torch.Tensor, dof: int) -> dict:
    """Compare squared Mahalanobis distances with chi-square(``dof``).

    Returns ``{mean_ratio: mean/dof, var_ratio: var/(2 dof), ks: KS statistic, p_value}``;
    a Gaussian fit gives ratios near 1 and a small KS statistic.
    """
    from scipy import stats

    d = d2.detach().double().cpu().numpy()
    ks = stats.kstest(d, "chi2", args=(dof,))
    return {"mean_ratio": float(d.mean() / dof), "var_ratio": float(d.var(ddof=1) / (2 * dof)),
            "ks": float(ks.statistic), "p_value": float(ks.pvalue), "n": int(d.size), "dof": int(dof)}


# -- the prior object ----------------------------------------------------------------
def prior_on(prior, device):
    """A copy of ``prior`` whose penalty tensors (``mean``, ``whiten``) live on ``device``.

    The projector takes one before its loop: the penalty would otherwise copy them from the
    host at every step, which costs a transfer per step and is refused inside a CUDA graph
    capture (a pageable host copy). Statistics and covariances stay where they are; a prior
    already there (or ``None``) is returned as it is.
    """
    import copy

    device = torch.device(device)
    if prior is None or (prior.mean.device == device and prior.whiten.device == device):
        return prior
    view = copy.copy(prior)
    view.mean, view.whiten = prior.mean.to(device), prior.whiten.to(device)
    return view


class GaussianPrior:
    """A fitted Gaussianized prior for one generator (see the module docstring).

    Args:
        stats: the dict of :func:`fit_prior` (or read back from a file).
        num_ws, w_dim: the generator's code layout (checked against the statistics).
    """

    def __init__(self, stats: dict, num_ws: int, w_dim: int):
        missing = {"mean", "cov", "slope", "joint"} - set(stats)
        if missing:
            raise InversionError(f"prior statistics lack {sorted(missing)}; refit with "
                                 f"`faceedit fit-prior MODEL --out DIR`")
        self.stats = {k: v.detach().float().cpu() for k, v in stats.items()}
        self.joint = bool(float(stats["joint"]))
        self.slope = float(stats["slope"])
        self.num_ws, self.w_dim = int(num_ws), int(w_dim)
        self.dim = self.num_ws * self.w_dim if self.joint else self.w_dim
        mean = stats["mean"].double().flatten()
        if mean.numel() != self.dim:
            raise InversionError(f"prior statistics have {mean.numel()} dimensions, but this generator needs "
                                 f"{self.dim} ({'joint over ' + str(num_ws) + ' layers x ' if self.joint else ''}"
                                 f"w_dim {w_dim}); the prior belongs to another model, refit it")
        cov = stats["cov"].double().reshape(self.dim, self.dim)
        cov = 0.5 * (cov + cov.T)
        L = torch.linalg.cholesky(cov)
        eye = torch.eye(self.dim, dtype=torch.float64)
        self.mean = mean.float()
        self.whiten = torch.linalg.solve_triangular(L, eye, upper=False).float()  # L^-1
        self._cov = cov
        self._pca = None
        self.w_std = float(stats["w_std"]) if "w_std" in stats else None

    @property
    def layers(self) -> int:
        """Number of independent Gaussian terms per image (num_ws, or 1 when joint)."""
        return 1 if self.joint else self.num_ws

    @property
    def total_dim(self) -> int:
        """Degrees of freedom of :meth:`penalty` for one W+ latent (``num_ws * w_dim``)."""
        return self.num_ws * self.w_dim

    def mean_ws(self) -> torch.Tensor:
        """The prior's mean mapped back to codes, ``[num_ws, w_dim]``."""
        v = self.mean.reshape(-1, self.w_dim)
        w = degaussianize(v, self.slope)
        return w.expand(self.num_ws, -1) if not self.joint else w

    def _v(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise InversionError(f"prior expects ws [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        v = gaussianize(ws.float(), self.slope)
        return v.reshape(ws.shape[0], 1, -1) if self.joint else v

    def mahalanobis(self, ws: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance per image ``[B]``, summed over layers when per-layer."""
        v = self._v(ws)
        d = (v - self.mean.to(v.device)) @ self.whiten.to(v.device).T
        return d.square().sum(dim=(1, 2))

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """The prior's loss term per image ``[B]``: :meth:`mahalanobis` (differentiable).

        Its expected value under the model is ``num_ws * w_dim``; the projector divides it
        by that so that ``prior_weight`` reads the same on every model.
        """
        return self.mahalanobis(ws)

    def layerwise(self) -> "LayerwisePrior":
        """The W+ view of a joint (W++) prior: one Gaussian per layer, cross-layer terms dropped."""
        if not self.joint:
            return self
        return LayerwisePrior(self)

    def _pca_basis(self):
        if self._pca is None:
            lam, U = torch.linalg.eigh(self._cov)
            self._pca = (lam.clamp_min(0).sqrt().float(), U.float())
        return self._pca

    def compress(self, ws: torch.Tensor, tau: float = 2.0) -> torch.Tensor:
        """Wulff & Torralba's log-compression instead of truncation.

        In the Gaussianized space each code's PCA coefficients ``c_i`` (std ``sigma_i``)
        beyond ``t_i = tau * sigma_i`` are compressed to ``sign(c_i) t_i (1 + log(|c_i| / t_i))``
        (continuous with slope 1 at the threshold), then mapped back to W.

        Args:
            ws: ``[B, num_ws, w_dim]``.
            tau: threshold in standard deviations (> 0); smaller compresses more.
        """
        if not tau > 0:
            raise InversionError(f"compression threshold tau must be > 0, got {tau}")
        sigma, U = self._pca_basis()
        v = self._v(ws)
        dev = v.device
        mean, sigma, U = self.mean.to(dev), sigma.to(dev), U.to(dev)
        c = (v - mean) @ U
        t = (tau * sigma).clamp_min(1e-12)
        a = c.abs()
        c = torch.where(a > t, torch.sign(c) * t * (1 + torch.log(a.clamp_min(1e-30) / t)), c)
        v = c @ U.T + mean
        return degaussianize(v.reshape(ws.shape), self.slope).to(ws.dtype)

    def check(self, G, n: int = 10_000, *, seed: int = 12345, batch: int = 2048) -> dict:
        """Chi-square check on ``n`` fresh mapping samples (see :func:`chi2_check`)."""
        d2 = []
        for ws in _mapping_chunks(G, n, seed, batch):
            v = self._v(ws)
            v = v if self.joint else v[:, :1]  # an MLP mapping repeats one code on every layer
            d = (v - self.mean.to(v.device)) @ self.whiten.to(v.device).T
            d2.append(d.square().sum(-1).flatten().cpu())
        return chi2_check(torch.cat(d2), self.dim)

    def summary(self) -> dict:
        out = {"kind": "joint W++" if self.joint else "per-layer leaky-ReLU-inverse", "dim": self.dim}
        for k in ("n", "shrinkage", "w_std", "check_n", "check_mean_ratio", "check_var_ratio", "check_ks"):
            if k in self.stats:
                out[k] = float(self.stats[k])
        return out


class LayerwisePrior:
    """One Gaussian per layer: the diagonal blocks ``(mean_l, cov_ll)`` of a joint W++ fit.

    This is how W+ sees a W++ generator's codes: every layer in its own distribution, the
    correlations between layers (what makes W++ W++) ignored. The projector uses it for
    ``w``/``w+`` on a transformer-mapping model, so that W+ and W++ differ by exactly that.
    Same interface as :class:`GaussianPrior` for the projector (no ``compress``).
    """

    joint = False

    def __init__(self, joint_prior: GaussianPrior):
        P = joint_prior
        L, d = P.num_ws, P.w_dim
        self.num_ws, self.w_dim, self.slope, self.w_std, self.stats = L, d, P.slope, P.w_std, P.stats
        self.dim, self.layers, self.total_dim = d, L, L * d
        self.mean = P.mean.reshape(L, d)
        cov = P._cov.reshape(L, d, L, d)
        blocks = torch.stack([cov[i, :, i, :] for i in range(L)])
        chol = torch.linalg.cholesky(blocks)
        eye = torch.eye(d, dtype=torch.float64).expand(L, d, d)
        self.whiten = torch.linalg.solve_triangular(chol, eye, upper=False).float()  # [L, d, d]
        self._cov = blocks

    def mean_ws(self) -> torch.Tensor:
        return degaussianize(self.mean, self.slope).clone()

    def mahalanobis(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise InversionError(f"prior expects ws [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        d = gaussianize(ws.float(), self.slope) - self.mean.to(ws.device)
        return torch.einsum("bld,lkd->blk", d, self.whiten.to(ws.device)).square().sum(dim=(1, 2))

    penalty = mahalanobis

    def layerwise(self) -> "LayerwisePrior":
        return self

    def summary(self) -> dict:
        return {"kind": "layer-wise blocks of the joint W++ fit", "dim": self.dim, "layers": self.layers}


def _mapping_chunks(G, n: int, seed: int, batch: int):
    dev = G.synthesis.const.device
    gen = torch.Generator().manual_seed(int(seed))
    done = 0
    with torch.no_grad():
        while done < n:
            b = min(batch, n - done)
            z = torch.randn((b, *G.z_shape), generator=gen).to(dev)
            yield G.mapping(z).float()
            done += b


def fit_prior(G, n: int = DEFAULT_N, *, batch: int = 4096, seed: int = 0, check_n: int = 10_000) -> dict:
    """Fit the Gaussianized prior of generator ``G`` from ``n`` mapping samples.

    Args:
        G: a generator (``mapping_kind`` picks the per-layer or joint model).
        n: mapping samples (the method wants at least 100k; fewer only for tests).
        batch: samples per chunk.
        seed: seeds the z samples; the check uses fresh samples from another seed.
        check_n: fresh samples for the chi-square check (0 skips it).
    Returns:
        Dict of float32 tensors (keys in the module docstring), for ``save_native(prior=)``.
    """
    if n < 2:
        raise InversionError(f"fit_prior needs n >= 2 samples, got {n}")
    if n < DEFAULT_N:
        log.info("fitting the prior from %d samples (the method wants >= %d)", n, DEFAULT_N)
    joint = G.mapping_kind == "transformer"
    slope = 1.0 if joint else LEAKY_INV_SLOPE
    acc = LedoitWolfAccumulator()
    w_avg = G.w_avg.detach().float()
    sq = 0.0
    for ws in _mapping_chunks(G, n, seed, batch):
        sq += float((ws - w_avg).square().sum(-1).mean(1).sum())
        v = ws.flatten(1) if joint else ws[:, 0]
        acc.update(gaussianize(v, slope))
    res = acc.finalize()
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    stats = {"mean": res["mean"].float().cpu(), "cov": res["cov"].float().cpu(), "slope": f(slope),
             "joint": f(1.0 if joint else 0.0), "n": f(n), "shrinkage": f(res["shrinkage"]),
             "w_std": f(math.sqrt(sq / n)), "num_ws": f(G.num_ws), "w_dim": f(G.w_dim)}
    if check_n:
        chk = GaussianPrior(stats, G.num_ws, G.w_dim).check(G, check_n, seed=seed + 1_000_003)
        stats.update(check_n=f(chk["n"]), check_mean_ratio=f(chk["mean_ratio"]),
                     check_var_ratio=f(chk["var_ratio"]), check_ks=f(chk["ks"]))
        log.info("prior fit check: mean ratio %.3f, var ratio %.3f, KS %.4f (dof %d)",
                 chk["mean_ratio"], chk["var_ratio"], chk["ks"], chk["dof"])
    return stats


# -- loading and caching -------------------------------------------------------------
def _prior_from_file(path: Path) -> tuple:
    """``(prior tensors, sha256 of model.safetensors)`` from a native folder (its
    ``prior.safetensors``, or ``prior.*`` tensors inside older ``model.safetensors`` files)."""
    from safetensors import safe_open

    from faceedit.core.files import sha256_file

    f = path / "model.safetensors"
    with safe_open(str(f), framework="pt") as sf:
        prior = {k[6:]: sf.get_tensor(k).float() for k in sf.keys() if k.startswith("prior.")}
    if (path / "prior.safetensors").is_file():
        from faceedit.checkpoints.native import _unpack_prior

        with safe_open(str(path / "prior.safetensors"), framework="pt") as sf:
            prior.update(_unpack_prior({k: sf.get_tensor(k) for k in sf.keys()}, path / "prior.safetensors"))
    return prior, sha256_file(f)


def prior_cache_path(sha256: str) -> Path:
    """Where the prior of a model without stored statistics is cached."""
    from faceedit.checkpoints.registry import cache_dir

    return cache_dir() / "priors" / f"{sha256[:32]}.safetensors"


def load_prior(model, G=None, *, n: int = DEFAULT_N, fit: bool = True) -> GaussianPrior:
    """The prior of a model: from its file, else from the cache, else fitted and cached.

    Args:
        model: registry name, checkpoint path, or a ``LoadedModel``.
        G: the generator (saves loading it again; needed to fit).
        n: samples when fitting.
        fit: fit (and cache) when no statistics are found; ``False`` raises instead.
    Raises:
        ValueError: no statistics and ``fit=False``, or statistics for another architecture.
    """
    from safetensors.torch import load_file

    from faceedit.core.tensorfile import write_tensor_file

    if isinstance(model, LoadedModel):
        stats, sha = model.prior or {}, model.sha256
        G = G if G is not None else model.G
    else:
        from faceedit.checkpoints.registry import load_model, resolve

        path, _ = resolve(model)
        if path.is_dir() and (path / "model.safetensors").is_file():
            stats, sha = _prior_from_file(path)
        else:
            m = load_model(model)
            stats, sha = m.prior, m.sha256
            G = G if G is not None else m.G
    if G is None:
        from faceedit.checkpoints.registry import load_generator

        G = load_generator(model)
    if stats:
        return GaussianPrior(stats, G.num_ws, G.w_dim)
    cache = prior_cache_path(sha)
    if cache.is_file():
        return GaussianPrior(load_file(str(cache)), G.num_ws, G.w_dim)
    if not fit:
        raise InversionError(f"the model has no prior statistics and none are cached at {cache}; embed them with "
                             f"`faceedit fit-prior MODEL --out DIR`")
    log.warning("the model file has no prior statistics: fitting them from %d samples once (cached in %s)",
                n, cache)
    stats = fit_prior(G, n)
    write_tensor_file(cache, {k: v.contiguous() for k, v in stats.items()})
    return GaussianPrior(stats, G.num_ws, G.w_dim)


def compression_vs_truncation(G, prior: GaussianPrior, taus=(1.0, 1.5, 2.0, 3.0), *, n: int = 512, seed: int = 0,
                              outlier_quantile: float = 0.9, features=None, feature_name: str = "pixels") -> list:
    """Compare log-compression with truncation at equal reduction of the outliers' norm.

    Samples ``n`` codes. The outliers are the codes whose Mahalanobis distance under the
    prior lies above ``outlier_quantile``; their norm is ``|ws - w_avg|`` (over all layers,
    the quantity truncation scales). For every tau, the outliers' mean norm after
    compression, as a fraction of before, is the truncation psi that reduces it equally
    (truncation scales every norm by psi exactly). Then the diversity of all ``n``
    generated images is measured for both as the mean pairwise Euclidean distance of
    ``features(images)`` (default the pixels; ``feature_name`` says which).

    Returns:
        one dict per tau: ``tau, psi, div_compress, div_truncate, div_none, maha_compress,
        maha_truncate`` (mean Mahalanobis norm of the outliers after each), ``features``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    dev = G.synthesis.const.device
    with torch.no_grad():
        z = torch.randn((n, *G.z_shape), generator=gen).to(dev)
        ws = G.mapping(z)
        maha = prior.mahalanobis(ws).clamp_min(0).sqrt()
        out = maha >= torch.quantile(maha, outlier_quantile)
        w_avg = G.w_avg.to(dev)
        norm = lambda x: (x - w_avg).flatten(1).norm(dim=1)  # noqa: E731
        feat = features or (lambda im: im.flatten(1))

        def diversity(codes):
            f = torch.cat([feat(G.synthesis(c)).float() for c in codes.split(64)])
            return float(torch.pdist(f).mean())

        rows = []
        div_none = diversity(ws)
        for tau in taus:
            c = prior.compress(ws, tau=tau)
            psi = float(norm(c)[out].mean() / norm(ws)[out].mean())
            t = w_avg + psi * (ws - w_avg)
            rows.append({"tau": float(tau), "psi": psi, "div_compress": diversity(c), "div_truncate": diversity(t),
                         "div_none": div_none,
                         "maha_compress": float(prior.mahalanobis(c).clamp_min(0).sqrt()[out].mean()),
                         "maha_truncate": float(prior.mahalanobis(t).clamp_min(0).sqrt()[out].mean()),
                         "maha_none": float(maha[out].mean()), "features": feature_name})
    return rows


def embed_prior(model, out, *, device, n: int = DEFAULT_N, dtype=torch.float32) -> dict:
    """Fit the prior of ``model`` and write a native copy of it, with ``prior.safetensors``, to ``out``.

    ``model`` is a registry name or checkpoint path (its discriminator, if any, is copied too);
    ``device`` is where the prior is fitted (``faceedit.core.device.resolve_device`` picks it for the CLI).
    Returns ``{"path", "model_id", "stats", "seconds", "device"}``; the fit check is in ``stats``.
    """
    import time

    from faceedit.checkpoints.native import save_native
    from faceedit.checkpoints.registry import load_model

    dev = torch.device(device)
    try:
        m = load_model(model, device=dev, with_discriminator=True)
    except ValueError:  # no discriminator in that checkpoint
        m = load_model(model, device=dev)
    t = time.time()
    stats = fit_prior(m.G, n)
    secs = time.time() - t
    cfg = m.config
    path = save_native(out, m.G.cpu(), name=cfg.get("name") or m.name,
                       D=None if m.D is None else m.D.cpu(), recipe=cfg.get("recipe"),
                       license=cfg.get("license", ""), provenance=cfg.get("provenance"), prior=stats, dtype=dtype)
    return {"path": path, "model_id": m.model_id, "stats": stats, "seconds": secs, "device": str(dev)}


__all__ = ["GaussianPrior", "LayerwisePrior", "LedoitWolfAccumulator", "chi2_check", "compression_vs_truncation",
           "degaussianize", "embed_prior", "fit_prior", "gaussianize", "prior_on",
           "load_prior", "prior_cache_path", "LEAKY_INV_SLOPE"]
