"""Hybrid inversion: the encoder's code as the optimiser's start, then far fewer steps.

``hybrid_invert`` encodes the faces with the model's encoder (``inversion.encoder``) and
runs the same batched optimiser as ``--method optim`` (``inversion.projector.Projector``:
the same losses and prior, so both minimise the same objective), but starting from the
encoder's codes instead of the mean code, without latent-noise annealing (the start is
already close; the noise only throws it away) and with a higher peak learning rate. It is
the default method when a model ships an encoder for the space.

The settings were chosen on 16 test-split faces of faces64 (W+, discriminator loss, the
prior at the optimiser's weight; CPU, identity by dlib). The 500-step optimiser reached
28.09 dB, identity 0.9980. Hybrid, 50 steps: latent noise 0.01 and lr 0.1 (the first
release) 25.34 dB / 0.9857; no noise 25.88 / 0.9909; no noise and lr 0.05 / 0.2 / 0.3 /
0.5: 25.17 / 26.38 / 26.52 / 26.35 dB. No noise, lr 0.3: 70 steps 27.46 dB / 0.9954, 90
steps 27.96 dB / 0.9979 (a longer cosine ramp-down or none at all did worse). So: no
noise, lr 0.3. Steps on CUDA: in the 100-face table (``bench/results/previous_release_622kimg/methods/``,
H100, the models before issue 17's retraining) 90 steps
left faces64 0.0002 short of the 500-step optimiser's identity (0.9957 vs 0.9959, paired
interval +-0.0009); 110 steps reached 0.9968 in 16.9% of its time (faces64-wpp at 100
steps: 0.9967 vs 0.9956 in 14.8%), so the CUDA default is 110. Per step the hybrid took
0.37 ms against the optimiser's 0.48 ms there (faces64, batch 100; it draws no latent noise).

On the CPU the default is 20 steps, chosen by what a step buys there against what it costs
(``bench/scripts/hybrid_cpu_steps.py``, ``bench/results/photo_path/``): on 100 held-out TRAIN
faces, against 30 steps (the earlier default), 20 steps lose 1.40 dB PSNR (23.13 vs 24.53 dB)
and 0.021 identity (0.951 vs 0.972), 25 steps 0.55 dB and 0.004, 15 steps 2.02 dB and 0.025;
each step cost about 45-75 ms of a one-photo edit on a 2-core CPU on the ``shared`` synthesis path,
and 20 is the count that kept `faceedit edit PHOTO` near 3 s there. On the CPU the step runs the
``poly`` path (``inversion.projector.default_path``): about 35 ms with two threads, the same
reconstructions (``bench/results/photo_path/hybrid_cpu_paths.md``). The photo keeps its own detail
either way (the residual paste-back adds only the edit's change); pass ``steps`` (``--steps``) for more.

Those first picks looked at test faces. Re-chosen on 100 held-out TRAIN faces (the encoders'
validation tail; ``bench/scripts/hybrid_sweep.py``,
``bench/results/previous_release_622kimg/methods/sweep_val.json``), H100, identity
vs the 500-step optimiser at 110 steps: lr 0.1 / 0.2 / 0.3 / 0.5 -0.0022 / -0.0005 / +0.0005 /
-0.0001 (faces64) and -0.0010 / +0.0007 / +0.0020 / +0.0026 (faces64-wpp, 0.3 and 0.5 within
noise); at lr 0.3, 90 steps -0.0009 +- 0.0006 on faces64, 110 steps reach the optimiser on both.
Both defaults stand.

The CUDA default stays at 110 although a step can replay from one CUDA graph (``cuda_graphs``;
``faceedit.Pipeline(cuda_graphs=True)``): on those 100 held-out faces (``sweep_val.json``,
lr 0.3, faces64) 150 / 110 / 90 / 70 / 50 steps gave 27.72 / 27.33 / 27.02 / 26.57 / 25.85 dB
and identity 0.9971 / 0.9963 / 0.9949 / 0.9935 / 0.9889: each 20 steps below 110 costs 0.3-0.7 dB,
and only 110 reaches the 500-step optimiser's identity (0.9958). At batch 1 a 64 px step is bound
by kernel launches (about 15 ms eager on an H100, ``bench/results/photo_path/photo_path_cuda.md``),
so a one-photo edit's 1.7 s of inversion is the step's cost, not the count: dropping to 50 steps
would save less than a graph should and lose 1.5 dB. ``bench/scripts/photo_path.py --device cuda
--variants graphs`` times the graphed step (not yet measured in the pipeline: its first capture
failed, ``bench/results/photo_path/gpu_2026-12-07.md``).

Plumbing: the projector optimises one tensor per image through a ``Space``; here that
tensor is the *offset* from the encoder's code (``_FromCodes``: start 0, ``ws = codes +
offset``), which is the same optimisation as starting Adam at the code itself.

:func:`invert_code` runs one of the methods that find a code (``encoder``, ``optim``,
``hybrid``; PTI's pivot comes from it); :func:`default_method` picks ``hybrid`` when the
model ships an encoder for the space, else ``optim``. The dispatcher over every method,
PTI included, is ``inversion.methods.invert_with`` (it sits above both this module and
``inversion.pti``, so neither imports the other back).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from faceedit.core.errors import InversionError

from .latent import Latent
from .options import METHODS, InversionOptions, StepCallback, resolve_options
from .projector import DEFAULT_PRIOR_WEIGHT, setup
from .spaces import Space, check_space

log = logging.getLogger(__name__)

CODE_METHODS = tuple(m for m in METHODS if m != "pti")  # the methods that find a code
HYBRID_STEPS = {"cpu": 20, "cuda": 110}     # the optimiser alone: 50 / 300 (projector.DEFAULT_STEPS)
HYBRID_LR = 0.3                            # the optimiser alone: 0.1 (NVIDIA's)
HYBRID_NOISE = 0.0                         # latent-noise start in w_std; the optimiser alone: 0.05
HYBRID_PRIOR_WEIGHT = DEFAULT_PRIOR_WEIGHT  # the optimiser's: both minimise the same objective


def hybrid_steps(device) -> int:
    """Default hybrid steps on ``device`` (20 on CPU, 110 on CUDA)."""
    return HYBRID_STEPS["cuda" if torch.device(device).type == "cuda" else "cpu"]


@dataclass
class _FromCodes(Space):
    """A space whose optimised tensor is an offset from given codes ``base [B, num_ws, w_dim]``."""

    base: torch.Tensor | None = None

    def start(self, mean_ws=None, *, seed: int = 0) -> torch.Tensor:
        dev = self.base.device
        return torch.zeros((1 if self.name == "w" else self.G.num_ws, self.G.w_dim), device=dev)

    def to_ws(self, param: torch.Tensor) -> torch.Tensor:
        if self.name == "w":
            return (self.base[:, :1] + param).expand(-1, self.G.num_ws, -1)
        return self.base + param


def hybrid_invert(images, model=None, space: str | None = None, steps: int | None = None, *,
                  options: InversionOptions | None = None, G=None, D=None, encoder=None, device=None, prior=None,
                  progress=None, callback: StepCallback | None = None, **settings) -> Latent:
    """Encoder, then a short optimisation from its codes.

    Args:
        images, model, space, options, G, D, device, prior, progress, callback, **settings: as
            :func:`faceedit.inversion.invert`; the fields left at None take this method's
            defaults: :func:`hybrid_steps` steps after the encoder, ``lr`` 0.3,
            ``noise_factor`` 0 (no latent noise), ``prior_weight`` 0.01.
        steps: optimisation steps after the encoder.
        encoder: an ``Encoder`` or the path of an ``encoder_*.safetensors`` file (default:
            the model's own).
    Returns:
        A :class:`Latent` with ``meta['method'] == 'hybrid'``, the encoder's own losses in
        ``meta['encoder_losses']`` and its time in ``meta['encoder_seconds']``.

    Raises:
        InversionError: the ``wpp-z`` space (the encoder gives codes, not z), or as ``invert``.
    """
    from .encoder import _adapt_codes, _resolve_encoder, encode_tensor
    from .projector import Projector, _split_prior, _to_batch, batch_callback, graph_summary

    prior, settings = _split_prior(prior, settings)
    opts = resolve_options(options, space=space, steps=steps, **settings)
    G, D, mdict, model_id, prior = setup(model, opts.space, G=G, D=D, device=device,
                                         prior=prior if prior is not None else opts.prior,
                                         perceptual=opts.perceptual.value)
    space = check_space(G, opts.space)
    if space == "wpp-z":
        raise InversionError("hybrid inversion starts from the encoder's codes, which are not z: use --space wpp "
                             "with --method hybrid, or --method optim for wpp-z")
    dev = G.synthesis.const.device
    E, espace = _resolve_encoder(encoder, mdict if mdict is not None else model, space, G, dev)
    opts = opts.replace(
        space=space, steps=opts.steps if opts.steps is not None else hybrid_steps(dev),
        lr=opts.lr if opts.lr is not None else HYBRID_LR,
        noise_factor=opts.noise_factor if opts.noise_factor is not None else HYBRID_NOISE,
        prior_weight=(opts.prior_weight if opts.prior_weight is not None else HYBRID_PRIOR_WEIGHT)
        if prior is not None else 0.0)
    proj = Projector(G, opts, D=D, prior=prior)
    steps, lr, noise_factor, seed = opts.steps, opts.lr, opts.noise_factor, opts.seed
    optimize_noise, batch_size = opts.optimize_noise, opts.batch_size
    target, faces = _to_batch(images, G.resolution, dev)
    results, enc_seconds, enc_losses = [], 0.0, {}
    for i in range(0, target.shape[0], batch_size):
        tb = target[i:i + batch_size]
        t0 = time.perf_counter()
        codes = _adapt_codes(encode_tensor(E, tb), espace, space)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        enc_seconds += time.perf_counter() - t0
        with torch.no_grad():
            prepared = proj.perceptual.prepare(tb) if proj.perceptual is not None else None
            el = proj._losses(codes, tb, prepared, None)
        for k, v in el.items():
            enc_losses.setdefault(k, []).extend(v.float().cpu().tolist())
        proj.space = _FromCodes(G, space, base=codes)
        results.append(proj.project(tb, prepared=prepared, callback=batch_callback(
            callback, i // batch_size, steps, target.shape[0], batch_size)))
        if progress is not None:
            progress(min(i + batch_size, target.shape[0]))
    ws = torch.cat([r.ws for r in results]).cpu()
    noise = None
    if optimize_noise:
        noise = tuple(torch.cat([r.noise[k] for r in results]).cpu() for k in range(len(results[0].noise)))
    losses = {k: sum((r.losses[k] for r in results), []) for k in results[0].losses}
    opt_seconds = sum(r.seconds for r in results)
    meta = {"losses": losses, "encoder_losses": enc_losses, "steps": max(r.steps for r in results),
            "steps_requested": steps, "seed": seed, "space": space, "method": "hybrid",
            "encoder_space": espace, "perceptual": proj.perceptual_name,
            "prior": "gaussian" if prior is not None else "none", "prior_weight": proj.prior_weight,
            "optimize_noise": bool(optimize_noise), "encoder_seconds": enc_seconds,
            "seconds": enc_seconds + opt_seconds, "lr": lr, "noise_factor": noise_factor,
            "cuda_graphs": graph_summary(results),
            "history": [float(np.mean([r.history[s] for r in results if s < len(r.history)]))
                        for s in range(max(len(r.history) for r in results))]}
    if mdict is not None:
        meta["model_sha256"] = mdict.sha256
    if any(f is not None for f in faces):
        meta["faces"] = [None if f is None else f.metadata() for f in faces]
    return Latent(space=space, codes=ws, model_id=model_id, noise=noise, meta=meta,
                  arch=getattr(G, "arch", "stylegan2"))


def default_method(model, space: str) -> str:
    """``hybrid`` when ``model`` ships an encoder serving ``space``, else ``optim``."""
    from .encoder import has_encoder

    return "hybrid" if space != "wpp-z" and has_encoder(model, space) else "optim"


def invert_code(method: str | None, images, model=None, space: str | None = None, steps: int | None = None,
                **kwargs) -> Latent:
    """Invert with one of :data:`CODE_METHODS` (``None``: ``options.method``, else :func:`default_method`).

    ``kwargs`` are those of :func:`faceedit.inversion.invert` (``options``, ``G``, ``D``,
    ``prior``, and any ``InversionOptions`` field by name); ``steps`` means the optimisation
    steps for ``optim``/``hybrid``. The returned latent's ``meta`` carries the same keys
    whatever the method.
    """
    options = kwargs.get("options")
    if method is None and options is not None:
        method = options.method
    if method is None:
        method = default_method(model, space or (options.space if options is not None else "w+"))
    if method not in CODE_METHODS:
        raise InversionError(f"a code is found by one of {', '.join(CODE_METHODS)}, got {method!r} "
                             f"(pti: inversion.methods.invert_with)")
    if method == "optim":
        from .projector import invert

        return invert(images, model, space, steps, **kwargs)
    if method == "hybrid":
        return hybrid_invert(images, model, space, steps, **kwargs)
    from .encoder import encode

    keep = {k: kwargs.pop(k) for k in ("G", "encoder", "device") if k in kwargs}
    kwargs.pop("D", None)
    kwargs.pop("progress", None)
    kwargs.pop("callback", None)  # the encoder takes no steps
    prior = kwargs.pop("prior", None)
    opts = resolve_options(kwargs.pop("options", None), space=space, **({"prior": prior} if isinstance(prior, str)
                                                                         else {}), **kwargs)
    lat = encode(images, model, opts.space, batch_size=opts.batch_size, **keep)
    meta = {**lat.meta, "steps_requested": 0, "seed": opts.seed, "prior": "none", "prior_weight": 0.0,
            "perceptual": "none", "optimize_noise": False}
    return Latent(space=lat.space, codes=lat.codes, model_id=lat.model_id, meta=meta, arch=lat.arch)


__all__ = ["hybrid_invert", "invert_code", "default_method", "hybrid_steps", "CODE_METHODS", "HYBRID_STEPS",
           "HYBRID_PRIOR_WEIGHT"]
