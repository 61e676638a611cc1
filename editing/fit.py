"""Finding directions: InterFaceGAN (supervised), conditional manipulation, GANSpace, SeFa.

InterFaceGAN, as its paper and genforce's code do it: sample many latents, score their
images, keep the most confident ``fraction`` at each end (2% by default), fit a linear
SVM on a train part, report its accuracy on the held-out part, and keep the unit normal
of the separating hyperplane, oriented towards the positive class.

Per space:

* ``w``: codes from mapping samples, one ``[w_dim]`` code per image.
* ``w+``: mapping samples are identical across layers, so a flattened W+ SVM on them is
  degenerate. Either fit on the codes of inverted (train-split) faces with
  :func:`fit_direction` (codes ``[N, num_ws, w_dim]``), or apply a ``w`` direction to
  chosen layers (``Direction.with_layers``).
* ``wpp``: the transformer mapping's samples differ across layers; the SVM is fitted on
  the flattened ``[num_ws * w_dim]`` codes and the normal reshaped per layer.

Conditional manipulation (InterFaceGAN section 3.3, generalised to any number of
conditions): the primal direction ``n`` is projected off the span of the condition
directions ``C = [c_1 .. c_k]``: ``n' = n - C (C^T C)^-1 C^T n``, then normalised, so
moving along ``n'`` leaves every condition's signed distance unchanged.

Unsupervised: GANSpace (principal components of W samples, applied to a layer range)
and SeFa (eigenvectors of ``A^T A`` for the stacked, column-normalised style-affine
weights ``A`` of the chosen layers).

scikit-learn is imported inside the functions that use it.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from faceedit.core.errors import EditingError

from .direction import Direction, DirectionError, canonical_attribute

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------
def code_space(G) -> str:
    """``w`` for an MLP mapping, ``wpp`` for a transformer mapping."""
    return "wpp" if getattr(G, "mapping_kind", "mlp") == "transformer" else "w"


#: The SVM regularisation of the shipped directions: the one value :func:`fit_svm`,
#: :func:`fit_direction`, ``editing.fit_job`` and ``faceedit adopt`` use unless told otherwise.
#: Not scikit-learn's default of 1: the 2% tails are nearly separable in W, so at C=1 a few
#: support vectors in W's narrowest axes set the normal and two independent 100k fits agree
#: only to cosine 0.33-0.59; at 0.001 they agree to 0.92-0.98 and rank held-out tails as well
#: (``bench/results/previous_release_622kimg/byo/adopt_cosines_cpu.md``, on the previous release).
SVM_C = 0.001
#: Rows drawn together by :func:`z_batches` (see there).
Z_BLOCK = 16


def z_batches(z_shape, n: int, *, seed: int = 0, start: int = 0, batch: int = 1024):
    """Rows ``start .. start + n`` of seed ``seed``'s latent sequence, in batches of ``batch`` rows.

    Every sampler of this module draws its ``z`` here, so the ``i``-th latent of a seed is
    the same whatever the batch size, and a run split in parts (``start``) draws the rows
    of one run. torch's CPU normal sampler transforms its uniform draws in groups of 16
    values, so consecutive pieces of one stream equal a single draw only when every piece
    holds a multiple of 16 values; the rows are therefore drawn in whole blocks of
    :data:`Z_BLOCK` rows (the suite checks the property). For a
    batch whose size is a multiple of 16 values this is the sequence one
    ``torch.randn((batch, *z_shape), generator=torch.Generator().manual_seed(seed))`` per
    batch gives (``directions fit-all`` drew the shipped samples that way, 1000 x 256).

    Args:
        z_shape: shape of one latent (``G.z_shape``).
        n: rows wanted.
        seed: seed of the sequence.
        start: index of the first row wanted.
        batch: rows per yielded tensor (the last may be shorter).
    Yields:
        float32 CPU tensors ``[b, *z_shape]``.
    Raises:
        EditingError: a negative ``n`` or ``start``, or a batch below 1.
    """
    n, start, batch = int(n), int(start), int(batch)
    if n < 0 or start < 0 or batch < 1:
        raise EditingError(f"z rows need n >= 0, start >= 0 and batch >= 1; got n={n}, start={start}, batch={batch}")
    gen = torch.Generator().manual_seed(int(seed))
    skip = start // Z_BLOCK * Z_BLOCK
    while skip:  # whole blocks before the first row wanted, drawn and dropped in bounded pieces
        k = min(skip, Z_BLOCK * 4096)
        torch.randn((k, *z_shape), generator=gen)
        skip -= k
    buf = torch.randn((Z_BLOCK, *z_shape), generator=gen)[start % Z_BLOCK:] if n else None
    done = 0
    while done < n:
        want = min(batch, n - done)
        if len(buf) < want:
            more = -(-(want - len(buf)) // Z_BLOCK) * Z_BLOCK
            buf = torch.cat([buf, torch.randn((more, *z_shape), generator=gen)])
        yield buf[:want]
        buf = buf[want:]
        done += want


@torch.no_grad()
def sample_codes(G, n: int, *, seed: int = 0, batch: int = 1024, device=None, truncation_psi: float = 1.0,
                 start: int = 0):
    """Mapping samples as a float32 array: ``[n, w_dim]`` (MLP) or ``[n, num_ws, w_dim]`` (W++).

    Rows ``start .. start + n`` of the seed's latent sequence (:func:`z_batches`): the codes
    do not depend on ``batch``.
    """
    device = device if device is not None else G.synthesis.const.device
    out = []
    for z in z_batches(G.z_shape, n, seed=seed, start=start, batch=batch):
        ws = G.mapping(z.to(device), truncation_psi=truncation_psi)
        out.append((ws[:, 0] if code_space(G) == "w" else ws).float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def sample_and_score(G, scorer, n: int, *, seed: int = 0, batch: int = 256, device=None,
                     truncation_psi: float = 1.0, noise_mode: str = "const", progress=None, start: int = 0,
                     path: str | None = None):
    """Sample ``n`` latents, synthesise them and score the images.

    Args:
        G: generator.
        scorer: callable ``images [B, 3, R, R] in [-1, 1] -> {attribute: scores [B]}``
            (higher = more of the attribute; NaN where it cannot tell).
        n: number of samples.
        seed: seed of the latent sequence (:func:`z_batches`).
        batch: latents synthesised together (the samples do not depend on it).
        progress: optional callable ``(done, total)``.
        start: index of the first latent of the sequence, so that a run split in two
            (``start=0, n=k`` then ``start=k``) gives the samples of one run.
        path: the synthesis path (``networks.stylegan2.SYNTHESIS_PATHS``; equal to float
            rounding); ``None``: the generator's default.

    Returns:
        ``(codes, scores)``: codes as in :func:`sample_codes`; scores ``{attribute: [n]}``.
    """
    device = device if device is not None else G.synthesis.const.device
    codes, scores = [], {}
    done = 0
    for z in z_batches(G.z_shape, n, seed=seed, start=start, batch=batch):
        ws = G.mapping(z.to(device), truncation_psi=truncation_psi)
        img = G.synthesis(ws, noise_mode=noise_mode) if path is None else G.synthesis(ws, noise_mode=noise_mode,
                                                                                       path=path)
        for k, v in scorer(img).items():
            scores.setdefault(canonical_attribute(k), []).append(torch.as_tensor(v).float().cpu().numpy().reshape(-1))
        codes.append((ws[:, 0] if code_space(G) == "w" else ws).float().cpu().numpy())
        done += len(z)
        if progress is not None:
            progress(done, n)
    return np.concatenate(codes), {k: np.concatenate(v) for k, v in scores.items()}


# ------------------------------------------------------------------------------------
# InterFaceGAN
# ------------------------------------------------------------------------------------
def fit_svm(codes, scores, *, fraction: float = 0.02, val_fraction: float = 0.3, C: float = SVM_C,
            seed: int = 0, max_iter: int = 20000) -> tuple:
    """Fit InterFaceGAN's linear SVM on the most confident samples at each end.

    Args:
        codes: ``[N, D]`` latent codes.
        scores: ``[N]`` attribute scores (NaN = unknown, dropped).
        fraction: fraction of the scored samples kept at the top and at the bottom.
        val_fraction: share of the kept samples held out to measure accuracy.
        C: SVM regularisation.

    Returns:
        ``(normal [D] unit float64, info)``; the normal points to higher scores; info has
        ``accuracy`` (held-out), ``train_accuracy``, ``n_kept``, ``n_train``, ``n_val``,
        ``threshold_low``, ``threshold_high``.
    """
    from sklearn.svm import LinearSVC

    X = np.asarray(codes)  # only the kept rows are converted to float64 below
    y = np.asarray(scores, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or len(X) != len(y):
        raise EditingError(f"codes must be [N, D] and scores [N]; got {X.shape} and {y.shape}")
    if not 0 < fraction <= 0.5:
        raise EditingError(f"fraction must be in (0, 0.5], got {fraction}")
    finite = np.flatnonzero(np.isfinite(y))
    y = y[finite]
    k = int(math.floor(len(y) * fraction))
    if k < 4:
        raise EditingError(f"only {len(y)} scored samples: {fraction:.1%} at each end leaves {k} per class; "
                           f"sample more (--n) or raise the fraction")
    order = np.argsort(y, kind="stable")
    lo, hi = order[:k], order[-k:]
    if y[hi].min() <= y[lo].max():
        raise EditingError("the top and bottom samples have the same scores; the scorer does not separate "
                           "this attribute on these images")
    Xk = np.concatenate([X[finite[hi]], X[finite[lo]]]).astype(np.float64)
    yk = np.concatenate([np.ones(k), np.zeros(k)])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(2 * k)
    n_val = int(round(2 * k * val_fraction))
    val, tr = perm[:n_val], perm[n_val:]
    svm = LinearSVC(C=C, max_iter=max_iter, dual="auto", random_state=seed)
    svm.fit(Xk[tr], yk[tr])
    normal = svm.coef_.reshape(-1).astype(np.float64)
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm < 1e-12:
        raise EditingError("the SVM found no separating direction (zero normal)")
    info = {"train_accuracy": float(svm.score(Xk[tr], yk[tr])),
            "accuracy": float(svm.score(Xk[val], yk[val])) if n_val else None,
            "n_kept": int(2 * k), "n_train": int(len(tr)), "n_val": int(n_val), "n_scored": int(len(y)),
            "threshold_low": float(y[lo].max()), "threshold_high": float(y[hi].min()), "svm_C": float(C)}
    return normal / norm, info


def latent_std(codes, vector, *, chunk: int = 16384) -> float:
    """Standard deviation of ``codes`` projected on ``vector`` (flattened, unit-normalised).

    A ``[w_dim]`` vector against ``[N, num_ws, w_dim]`` codes pools every layer's projection.
    Computed in chunks, so 100k W++ codes need no float64 copy.
    """
    codes = np.asarray(codes)
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    X = codes.reshape(len(codes), -1)
    if X.shape[1] != v.size:
        X = X.reshape(-1, v.size)
    proj = np.concatenate([X[i:i + chunk].astype(np.float32) @ v for i in range(0, len(X), chunk)])
    return float(np.std(proj.astype(np.float64)))


def fit_direction(codes, scores, *, attribute: str, model_id: str, num_ws: int, space: str | None = None,
                  layers=(), fraction: float = 0.02, val_fraction: float = 0.3, C: float = SVM_C, seed: int = 0,
                  scorer: str = "", std_codes=None, meta: dict | None = None, arch: str = "stylegan2") -> Direction:
    """InterFaceGAN direction from scored codes.

    Args:
        codes: ``[N, w_dim]`` (space ``w``) or ``[N, num_ws, w_dim]`` (``w+`` from inverted
            faces, ``wpp`` from transformer samples; fitted flattened).
        scores: ``[N]`` scores of the attribute.
        space: defaults to ``w`` for 2-D codes and ``wpp`` for 3-D codes.
        layers: for a ``w`` direction, the layers it is applied to (default all).
        std_codes: codes whose spread defines strength 1 (default ``codes``).
        arch: the generator's architecture (``G.arch``), recorded in the direction.
    """
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim == 2:
        space = space or "w"
        if space != "w":
            raise EditingError(f"2-D codes give a 'w' direction, not {space!r}")
    elif codes.ndim == 3:
        space = space or "wpp"
        if space not in ("w+", "wpp") or codes.shape[1] != num_ws:
            raise EditingError(f"3-D codes [N, {num_ws}, w_dim] give a 'w+' or 'wpp' direction; got "
                               f"{codes.shape} for space {space!r}")
    else:
        raise EditingError(f"codes must be [N, w_dim] or [N, num_ws, w_dim], got {codes.shape}")
    normal, info = fit_svm(codes.reshape(len(codes), -1), scores, fraction=fraction, val_fraction=val_fraction,
                           C=C, seed=seed)
    vec = normal.reshape(1 if codes.ndim == 2 else num_ws, -1)
    std = latent_std(codes if std_codes is None else std_codes, vec)
    log.info("%s (%s): accuracy %.3f on %d held-out, std %.4g", attribute, space, info["accuracy"] or float("nan"),
             info["n_val"], std)
    return Direction.from_vector(torch.from_numpy(vec), space=space, attribute=attribute, model_id=model_id,
                                 num_ws=num_ws, layers=tuple(layers), method="interfacegan", latent_std=std,
                                 scorer=scorer, samples=int(len(codes)), fraction=fraction,
                                 accuracy=info["accuracy"], meta={**info, **(meta or {})}, arch=arch)


# ------------------------------------------------------------------------------------
# conditional manipulation
# ------------------------------------------------------------------------------------
def project_off(n, conditions) -> torch.Tensor:
    """``n - C (C^T C)^-1 C^T n``, normalised: ``n`` made orthogonal to every condition.

    Args:
        n: ``[D]`` (or any shape, flattened) primal direction.
        conditions: sequence of directions of the same size (need not be orthogonal).
    Raises:
        DirectionError: the conditions are linearly dependent on ``n`` (nothing left).
    """
    v = torch.as_tensor(n).double().reshape(-1)
    if not len(conditions):
        return v / v.norm()
    Cm = torch.stack([torch.as_tensor(c).double().reshape(-1) for c in conditions], dim=1)  # [D, k]
    if Cm.shape[0] != v.numel():
        raise DirectionError(f"condition directions have size {Cm.shape[0]}, the primal {v.numel()}")
    # least squares solves (C^T C) a = C^T n stably even when C^T C is ill-conditioned
    a = torch.linalg.lstsq(Cm, v[:, None]).solution
    r = v - (Cm @ a)[:, 0]
    if float(r.norm()) < 1e-6 * float(v.norm()):
        raise DirectionError("the primal direction lies in the span of the conditions; nothing is left after "
                             "projecting them off")
    return r / r.norm()


def condition(direction: Direction, conditions, *, codes=None) -> Direction:
    """Conditional direction: ``direction`` with the ``conditions`` (Directions) held fixed.

    Args:
        codes: codes to re-measure ``latent_std`` along the new direction (mapping samples
            or the fitting codes); without them the primal direction's value is kept.
    """
    conditions = list(conditions)
    for c in conditions:
        if c.model_id != direction.model_id or c.space != direction.space or c.vector.shape != direction.vector.shape:
            raise DirectionError(f"condition {c.key!r} ({c.model_id}, {c.space}, {tuple(c.vector.shape)}) does not "
                                 f"match {direction.key!r} ({direction.model_id}, {direction.space}, "
                                 f"{tuple(direction.vector.shape)}); condition only on directions of one model and "
                                 f"space")
    v = project_off(direction.vector, [c.vector for c in conditions]).reshape(direction.vector.shape).float()
    cos = float((v.double().reshape(-1) @ direction.vector.double().reshape(-1)))
    std = direction.latent_std if codes is None else latent_std(codes, v)
    meta = {**direction.meta, "primal_cosine": cos,
            "latent_std_from": "parent" if codes is None else "samples"}
    return Direction.from_vector(v, space=direction.space, attribute=direction.attribute,
                                 model_id=direction.model_id, num_ws=direction.num_ws, layers=direction.layers,
                                 conditions=tuple(sorted({*direction.conditions, *(c.attribute for c in conditions)})),
                                 method=direction.method, latent_std=std, scorer=direction.scorer,
                                 samples=direction.samples, fraction=direction.fraction,
                                 accuracy=direction.accuracy, meta=meta, arch=direction.arch)


# ------------------------------------------------------------------------------------
# unsupervised: GANSpace and SeFa
# ------------------------------------------------------------------------------------
def _orient(v: np.ndarray) -> np.ndarray:
    """Fix the arbitrary sign of an eigenvector: its largest-magnitude entry is positive."""
    return v if v[np.argmax(np.abs(v))] >= 0 else -v


def ganspace(codes, *, model_id: str, num_ws: int, k: int = 10, layers=(), space: str = "w",
             seed: int = 0, arch: str = "stylegan2") -> list:
    """GANSpace: principal components of latent samples, applied to a layer range.

    Args:
        codes: ``[N, w_dim]`` W samples (or ``[N, num_ws, w_dim]`` W++ samples, whose PCA is
            taken over the flattened codes and gives per-layer directions).
        k: number of components.
        layers: layers each component is applied to (GANSpace's ranges, e.g. ``range(0, 4)``).
        arch: the generator's architecture (``G.arch``), recorded in the directions.
    Returns:
        ``k`` directions ``pc0..pc{k-1}``; ``latent_std`` is the component's standard
        deviation; ``meta`` records the explained variance ratio. Signs are arbitrary
        (fixed so the largest entry is positive).
    """
    from sklearn.decomposition import PCA

    X = np.asarray(codes, dtype=np.float64)
    per_layer = X.ndim == 3
    pca = PCA(n_components=k, random_state=seed).fit(X.reshape(len(X), -1))
    out = []
    for i in range(k):
        v = _orient(pca.components_[i]).reshape(num_ws if per_layer else 1, -1)
        out.append(Direction.from_vector(torch.from_numpy(v), space="wpp" if per_layer else space,
                                         attribute=f"pc{i}", model_id=model_id, num_ws=num_ws,
                                         layers=tuple(layers), method="ganspace",
                                         latent_std=float(math.sqrt(pca.explained_variance_[i])),
                                         samples=int(len(X)),
                                         meta={"explained_variance_ratio": float(pca.explained_variance_ratio_[i])},
                                         arch=arch))
    return out


def affines_for_layer(synthesis, layer: int) -> list:
    """The style-affine ``EqualLinear`` modules that read ``ws[:, layer]`` (see networks.stylegan2;
    a StyleGAN v1 synthesis has one per layer, its AdaIN's)."""
    n = synthesis.num_ws
    if not 0 <= layer < n:
        raise EditingError(f"layer {layer} out of range 0..{n - 1}")
    if getattr(synthesis, "arch", "stylegan2") == "stylegan1":
        return [synthesis.layers[layer].affine]
    if layer == 0:
        return [synthesis.conv1.affine]
    if layer == 1:
        return [synthesis.torgb1.affine] + ([synthesis.convs_up[0].affine] if len(synthesis.convs_up) else [])
    k = (layer - 2) // 2
    if layer % 2 == 0:
        return [synthesis.convs[k].affine]
    mods = [synthesis.torgbs[k].affine]
    if k + 1 < len(synthesis.convs_up):
        mods.append(synthesis.convs_up[k + 1].affine)
    return mods


def sefa_weights(G, layers=()) -> np.ndarray:
    """Stacked effective affine weights ``[sum of out features, w_dim]`` of the layers (all if empty)."""
    layers = tuple(layers) or tuple(range(G.num_ws))
    mods, seen = [], set()
    for li in layers:
        for m in affines_for_layer(G.synthesis, li):
            if id(m) not in seen:
                seen.add(id(m))
                mods.append(m)
    return np.concatenate([(m.weight.detach().double() * m.scale).cpu().numpy() for m in mods])


def sefa(G, *, model_id: str, k: int = 10, layers=(), codes=None, space: str | None = None) -> list:
    """SeFa: the top eigenvectors of ``A^T A`` for the style-affine weights ``A`` of ``layers``.

    Each row of ``A`` (one output channel's weights) is normalised to unit length first, as
    in the paper's code, so wide layers do not dominate. Returns ``k`` directions
    ``sefa0..`` applied to ``layers``; ``latent_std`` is measured on ``codes`` (mapping
    samples; 10,000 are drawn when not given) at those layers.
    """
    A = sefa_weights(G, layers)
    A = A / np.linalg.norm(A, axis=1, keepdims=True).clip(1e-12)
    vals, vecs = np.linalg.eigh(A.T @ A)
    order = np.argsort(vals)[::-1][:k]
    if codes is None:
        codes = sample_codes(G, 10000, seed=0)
    codes = np.asarray(codes, dtype=np.float64)
    lay = tuple(layers) or tuple(range(G.num_ws))
    pool = codes if codes.ndim == 2 else codes[:, list(lay)].reshape(-1, codes.shape[-1])
    space = space or code_space(G)
    out = []
    for rank, j in enumerate(order):
        v = _orient(vecs[:, j])
        out.append(Direction.from_vector(torch.from_numpy(v[None]), space=space, attribute=f"sefa{rank}",
                                         model_id=model_id, num_ws=G.num_ws, layers=tuple(layers), method="sefa",
                                         latent_std=latent_std(pool, v), samples=int(len(codes)),
                                         meta={"eigenvalue": float(vals[j])}, arch=getattr(G, "arch", "stylegan2")))
    return out
