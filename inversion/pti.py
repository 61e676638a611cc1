"""Pivotal tuning (PTI, Roich et al. 2022), stored as low-rank weight deltas per image.

PTI first inverts a face to a *pivot* latent (here by ``hybrid`` when the model ships an
encoder, else ``optim``), then tunes the generator so that the pivot reproduces the face
exactly, while a *locality regulariser* keeps the generator unchanged away from the
pivot, so edits still work.

Differences from the paper, and why:

* Instead of a whole tuned generator per image, only low-rank (LoRA-style) deltas of
  the modulated convolution weights are tuned and stored: for a weight ``W [Cout, Cin,
  k, k]`` the delta is ``B @ A`` reshaped, with ``B [Cout, r]`` (starts at 0) and ``A [r,
  Cin k k]`` (starts small and random). At rank 4 this is a few percent of the generator.
* Locality: codes ``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||`` at a fixed distance
  ``alpha`` from the pivot towards random mapping samples ``w_z`` (as in the paper),
  with ``alpha`` given relative to the median pivot-to-sample distance
  (``locality_radius``, default 0.5) so one setting fits every model's latent scale. The
  tuned and the original generator must agree there (MSE + the perceptual loss).
* Edit consistency (not in the paper): the locality ring lies far from the pivot (half
  the typical distance between two faces), while an edit moves a code by one to three
  standard deviations along one direction. Nothing in the paper's losses stops the
  tuning from flattening the generator *near* the pivot, so that every code close to it
  draws the same target face: on the W++ model that is what happened (the smile edit's
  slope fell to 6% of the untuned pivot's). So the tuning also draws codes ``w_n = w_p +
  s sigma_u u`` one edit away (``u``: the unit difference of two mapping samples,
  ``sigma_u``: the latent standard deviation along it, ``|s|`` in ``consistency_strength
  * [0.5, 1]``) and asks the tuned generator to *change* as the original does:
  ``G'(w_n) - G'(w_p) ~ G(w_n) - G(w_p)`` (MSE, weight ``consistency_weight``). An offset
  at the pivot is allowed, a flattened neighbourhood is not. Weight 10 chosen on 5 test
  faces of faces64-wpp (CPU, 100 tuning steps; smile slope after / before tuning): 0.19
  without the term (0.06 at 200 steps on the GPU), 0.88 at weight 10 (PSNR 30.5 dB), 0.59
  at 30 (29.7 dB).

Storage (``Latent.tuning``): ``{"<param>.lora_a": [B, r, Cin*k*k], "<param>.lora_b":
[B, Cout, r]}`` with ``<param>`` the generator parameter name (``synthesis.convs.0.weight``);
the leading dimension is the image, so ``latent[i]`` carries image ``i``'s tuning.
:func:`apply_tuning` is a context manager that adds one image's deltas to the generator's
weights in place and restores the original values bit for bit on exit; a plain
``param.delta`` key (full delta of that parameter) is applied the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

import torch

from faceedit.core.errors import InversionError

from .latent import Latent, LatentFileError
from .options import InversionOptions, StepCallback, resolve_options

log = logging.getLogger(__name__)

PTI_STEPS = {"cpu": 40, "cuda": 200}


def pti_steps(device) -> int:
    """Default tuning steps (40 on CPU, 200 on CUDA; the paper uses 350 for a 1024 px generator)."""
    return PTI_STEPS["cuda" if torch.device(device).type == "cuda" else "cpu"]


def modulated_weights(G) -> dict:
    """``{name: parameter}`` of every modulated conv weight (styled convs and toRGB) of ``G``."""
    out = {}
    for name, mod in G.named_modules():
        if hasattr(mod, "affine") and isinstance(getattr(mod, "weight", None), torch.nn.Parameter):
            if mod.weight.ndim == 4:
                out[f"{name}.weight"] = mod.weight
    if not out:
        raise InversionError("this generator has no modulated convolutions to tune (expected StyledConv/ToRGB "
                             "modules with .affine and a 4-D .weight)")
    return out


def _lora_delta(a: torch.Tensor, b: torch.Tensor, shape) -> torch.Tensor:
    return (b @ a).reshape(shape)


def tuning_deltas(G, tuning: dict, index: int = 0) -> dict:
    """``{param name: full delta tensor}`` of image ``index`` of a tuning dict (validated)."""
    params = dict(G.named_parameters())
    out = {}
    for key in tuning:
        for suffix in (".lora_a", ".lora_b", ".delta"):
            if key.endswith(suffix):
                name = key[: -len(suffix)]
                break
        else:
            raise LatentFileError(f"unknown tuning entry {key!r}; expected <param>.lora_a/.lora_b or <param>.delta")
        if name not in params:
            raise LatentFileError(f"tuning entry {key!r} names no parameter of this generator; the latent belongs "
                                  f"to another architecture")
        p = params[name]
        if key.endswith(".delta"):
            d = tuning[key][index]
        elif key.endswith(".lora_a"):
            bkey = name + ".lora_b"
            if bkey not in tuning:
                raise LatentFileError(f"tuning entry {key!r} has no matching {bkey!r}")
            a, b = tuning[key][index], tuning[bkey][index]
            if b.shape[0] != p.shape[0] or a.shape[1] != p[0].numel() or a.shape[0] != b.shape[1]:
                raise LatentFileError(f"tuning {name}: factors {tuple(b.shape)} x {tuple(a.shape)} do not fit the "
                                      f"weight {tuple(p.shape)}")
            d = _lora_delta(a.float(), b.float(), p.shape)
        else:
            if name + ".lora_a" not in tuning:
                raise LatentFileError(f"tuning entry {key!r} has no matching {name + '.lora_a'!r}")
            continue
        if d.shape != p.shape:
            raise LatentFileError(f"tuning delta for {name} has shape {tuple(d.shape)}, the weight {tuple(p.shape)}")
        if not torch.isfinite(d).all():
            raise LatentFileError(f"tuning delta for {name} holds NaN or Inf")
        out[name] = d
    return out


@contextlib.contextmanager
def apply_tuning(G, latent: Latent | None):
    """Temporarily add a latent's pivotal-tuning deltas to ``G``'s weights (in place).

    A no-op for latents without tuning. On exit (also on an exception) every touched
    parameter is restored to its exact original values.

    Example::

        with apply_tuning(G, latent):
            img = G.synthesis(latent.codes.to(dev))

    Raises:
        LatentFileError: the latent belongs to another model, or its tuning does not fit ``G``.
        ValueError: a batch of several tuned images (apply them one at a time: ``latent[i]``).
    """
    if latent is None or not latent.tuning:
        yield G
        return
    gid = getattr(G, "model_id", None)
    if gid and latent.model_id and gid != "unknown" and latent.model_id != "unknown":
        latent.check_model(gid)
    n = {int(v.shape[0]) for v in latent.tuning.values()}
    if n != {1}:
        raise InversionError(f"this latent holds pivotal tuning for {sorted(n)} images; a generator takes one "
                             f"image's tuning at a time: use `with apply_tuning(G, latent[i])` per image")
    params = dict(G.named_parameters())
    deltas = tuning_deltas(G, latent.tuning, 0)
    saved = {}
    try:
        with torch.no_grad():
            for name, d in deltas.items():
                p = params[name]
                saved[name] = p.detach().clone()
                p.add_(d.to(p.device, p.dtype))
        yield G
    finally:
        with torch.no_grad():
            for name, orig in saved.items():
                params[name].copy_(orig)


@torch.no_grad()
def synthesize(G, latent: Latent, *, codes: torch.Tensor | None = None, noise_mode: str = "const",
               batch_size: int = 32) -> torch.Tensor:
    """Images ``[B, 3, R, R]`` of a latent, with its optimised noise and pivotal tuning if any.

    Args:
        codes: codes to synthesise instead of ``latent.codes`` (e.g. edited ones), same batch.
    Tuned latents are synthesised image by image under :func:`apply_tuning`; others in batches.
    """
    dev = G.synthesis.const.device
    codes = (latent.codes if codes is None else codes).to(dev)
    if codes.shape[0] != latent.batch_size:
        raise InversionError(f"codes batch {codes.shape[0]} does not match the latent's {latent.batch_size}")
    noise = None if latent.noise is None else [n.to(dev) for n in latent.noise]
    if not latent.tuning:
        out = []
        for i in range(0, codes.shape[0], batch_size):
            nz = None if noise is None else [n[i:i + batch_size] for n in noise]
            out.append(G.synthesis(codes[i:i + batch_size], noise_mode=noise_mode, noise=nz))
        return torch.cat(out)
    out = []
    for i in range(codes.shape[0]):
        with apply_tuning(G, latent[i]):
            nz = None if noise is None else [n[i:i + 1] for n in noise]
            out.append(G.synthesis(codes[i:i + 1], noise_mode=noise_mode, noise=nz))
    return torch.cat(out)


def tuning_bytes(tuning: dict | None) -> int:
    """Bytes the tuning occupies in a latent file (float32, as ``Latent.save`` writes it)."""
    return sum(4 * v.numel() for v in (tuning or {}).values())


def _locality_codes(pivot: torch.Tensor, bank: torch.Tensor, n: int, alpha: float, gen: torch.Generator):
    """``n`` codes at distance ``alpha`` from the pivot, towards mapping samples drawn from ``bank``."""
    i = torch.randint(bank.shape[0], (n,), generator=gen).to(bank.device)
    d = bank[i] - pivot
    return pivot + alpha * d / d.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)


def _edit_codes(pivot: torch.Tensor, bank: torch.Tensor, n: int, strength: float, gen: torch.Generator):
    """``n`` codes one edit away from the pivot (see the module docstring), from a bank of mapping samples."""
    m = bank.shape[0]
    i = torch.randint(m, (n,), generator=gen).to(bank.device)
    j = (i + torch.randint(1, m, (n,), generator=gen).to(bank.device)) % m
    u = (bank[i] - bank[j]).flatten(1)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-8)
    sigma = ((bank - bank.mean(0)).flatten(1) @ u.T).std(0)                      # [n]
    s = strength * (0.5 + 0.5 * torch.rand(n, generator=gen))
    s = torch.where(torch.rand(n, generator=gen) < 0.5, -s, s).to(pivot.device)
    return pivot + (s * sigma).view(-1, 1, 1) * u.view(n, *pivot.shape[1:])


def tune(G, pivot: torch.Tensor, target: torch.Tensor, *, steps: int, rank: int = 4, lr: float = 3e-3,
         perceptual=None, mse_weight: float = 1.0, perceptual_weight: float = 1.0,
         locality_weight: float = 0.1, locality_radius: float = 0.5, locality_batch: int = 4,
         consistency_weight: float = 10.0, consistency_strength: float = 2.0, consistency_batch: int = 4,
         seed: int = 0, path: str | None = None, callback: Callable[[int, dict], None] | None = None) -> tuple:
    """Pivotal tuning of one image.

    Args:
        G: the generator (left unchanged: the deltas are applied functionally).
        pivot: ``[1, num_ws, w_dim]`` pivot codes.
        target: ``[1, 3, R, R]`` in [-1, 1].
        steps: Adam steps.
        rank: rank of each weight's delta.
        lr: Adam learning rate of the factors.
        perceptual: a loss object from ``inversion.losses`` (``prepare`` / ``__call__``) or None.
        locality_weight, locality_radius, locality_batch: the locality regulariser (see module).
        consistency_weight, consistency_strength, consistency_batch: the edit-consistency
            regulariser (see module; weight 0 turns it off).
        seed: seeds the regularisers' draws.
        path: synthesis path (``networks.SYNTHESIS_PATHS``; default ``reference`` on CUDA,
            ``shared`` elsewhere).
        callback: optional ``callback(step, losses)`` after each step (``losses``: ``{"total": loss}``).
    Returns:
        ``(tuning dict with a leading batch dim of 1, record dict)``.
    """
    from torch.func import functional_call

    from .losses import PixelMSE

    if pivot.ndim != 3 or pivot.shape[0] != 1 or target.ndim != 4 or target.shape[0] != 1:
        raise InversionError(f"tune() takes one image: pivot [1, num_ws, w_dim] and target [1, 3, R, R], got "
                             f"{tuple(pivot.shape)} and {tuple(target.shape)}")
    if rank < 1:
        raise InversionError(f"tuning rank must be >= 1, got {rank}")
    dev = G.synthesis.const.device
    path = ("reference" if dev.type == "cuda" else "shared") if path is None else path
    gen = torch.Generator().manual_seed(int(seed))
    weights = {k: v for k, v in modulated_weights(G).items()}
    syn_prefix = "synthesis."
    factors = {}
    for name, W in weights.items():
        fan_in = W[0].numel()
        r = min(rank, W.shape[0], fan_in)
        a = (torch.randn((r, fan_in), generator=gen) / fan_in ** 0.5).to(dev).requires_grad_(True)
        b = torch.zeros((W.shape[0], r), device=dev, requires_grad=True)
        factors[name] = (a, b)
    opt = torch.optim.Adam([t for ab in factors.values() for t in ab], lr=lr, betas=(0.9, 0.999))
    mse = PixelMSE()
    prepared = perceptual.prepare(target) if perceptual is not None else None

    def synth(ws):
        over = {name[len(syn_prefix):]: W + _lora_delta(a, b, W.shape)
                for (name, W), (a, b) in zip(weights.items(), factors.values())}
        return functional_call(G.synthesis, over, (ws,), {"noise_mode": "const", "path": path})

    def recon_loss(img, tgt, prep):
        loss = mse_weight * mse(img, tgt)
        if perceptual is not None:
            loss = loss + perceptual_weight * perceptual(img, prep)
        return loss

    n_loc = locality_batch if locality_weight > 0 else 0
    n_con = consistency_batch if consistency_weight > 0 else 0
    with torch.no_grad():
        orig_pivot = G.synthesis(pivot, noise_mode="const", path=path)
        before = float(recon_loss(orig_pivot, target, prepared))
        # one bank of mapping samples serves both regularisers (a step draws from it; no mapping per step)
        bank = G.mapping(torch.randn((256, *G.z_shape), generator=gen).to(dev))  # [256, num_ws, w_dim]
        alpha = locality_radius * float((bank - pivot).flatten(1).norm(dim=1).median())
    t0 = time.perf_counter()
    hist = []
    for step in range(steps):
        # the pivot and every regulariser code go through the tuned generator as ONE batch
        extra = [_locality_codes(pivot, bank, n_loc, alpha, gen)] if n_loc else []
        extra += [_edit_codes(pivot, bank, n_con, consistency_strength, gen)] if n_con else []
        extra = torch.cat(extra) if extra else None
        imgs = synth(pivot if extra is None else torch.cat([pivot, extra]))
        img_p = imgs[:1]
        loss = recon_loss(img_p, target, prepared).sum()
        if extra is not None:
            with torch.no_grad():
                ref = G.synthesis(extra, noise_mode="const", path=path)
        if n_loc:
            ref_r = ref[:n_loc]
            ref_prep = perceptual.prepare(ref_r) if perceptual is not None else None
            loss = loss + locality_weight * recon_loss(imgs[1:1 + n_loc], ref_r, ref_prep).mean()
        if n_con:
            change, ref_change = imgs[1 + n_loc:] - img_p, ref[n_loc:] - orig_pivot
            loss = loss + consistency_weight * (change - ref_change).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
        if callback is not None:
            callback(step, {"total": loss.detach().reshape(1)})
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        after = float(recon_loss(synth(pivot), target, prepared))
    tuning = {}
    for name, (a, b) in factors.items():
        tuning[f"{name}.lora_a"] = a.detach().unsqueeze(0).cpu()
        tuning[f"{name}.lora_b"] = b.detach().unsqueeze(0).cpu()
    record = {"loss_before": before, "loss_after": after, "seconds": seconds, "steps": steps, "rank": rank,
              "lr": lr, "locality_weight": locality_weight, "locality_radius": locality_radius,
              "consistency_weight": consistency_weight, "consistency_strength": consistency_strength,
              "history": hist}
    return tuning, record


def pti_invert(images, model=None, space: str | None = None, steps: int | None = None, *,
               options: InversionOptions | None = None, G=None, D=None, pivot: Latent | None = None,
               pivot_method: str | None = None, pivot_steps: int | None = None, encoder=None, device=None,
               prior=None, progress=None, callback: StepCallback | None = None, rank: int = 4, lr: float = 3e-3,
               locality_weight: float = 0.1,
               locality_radius: float = 0.5, consistency_weight: float = 10.0, consistency_strength: float = 2.0,
               **settings) -> Latent:
    """Invert faces to a pivot, then tune low-rank generator deltas per face.

    Args:
        images, model, space, options, G, D, device, prior, progress, **settings: as
            :func:`faceedit.inversion.invert`; ``options`` drive the pivot inversion (its
            ``steps`` excepted: see ``pivot_steps``), its ``seed`` and ``perceptual`` the tuning too.
        callback: optional :data:`inversion.options.StepCallback`: the pivot's steps, then
            each face's tuning steps, counted as one run.
        steps: tuning steps per face (default ``options.steps``, else :func:`pti_steps`).
        pivot: a ready pivot latent (batch matching the images); else one is computed with
            ``pivot_method`` (default ``hybrid`` when the model ships an encoder, else
            ``optim``) for ``pivot_steps`` steps.
        rank, lr, locality_weight, locality_radius, consistency_weight, consistency_strength:
            the tuning's, see :func:`tune` (``lr`` is the tuning's; the pivot's is ``options.lr``).
    Returns:
        A :class:`Latent` (the pivot codes) whose ``tuning`` holds one delta set per image;
        ``meta['tuning']`` records rank, bytes per image and the losses before/after.

    Raises:
        InversionError: ``optimize_noise`` (PTI keeps the constant noise), ``pivot_method='pti'``,
            a pivot of another batch size, or as ``invert``.
    """
    from .hybrid import default_method, invert_code
    from .losses import make_perceptual
    from .projector import _split_prior, _to_batch, offset_callback, setup

    prior, settings = _split_prior(prior, settings)
    opts = resolve_options(options, space=space, **settings)
    if opts.optimize_noise:
        raise InversionError("pivotal tuning keeps the generator's constant noise; drop --optimize-noise")
    perceptual, seed = opts.perceptual.value, opts.seed
    G, D, mdict, model_id, prior_obj = setup(model, opts.space, G=G, D=D, device=device,
                                             prior=prior if prior is not None else opts.prior, perceptual=perceptual)
    model_ref = mdict if mdict is not None else model
    dev = G.synthesis.const.device
    steps = steps if steps is not None else opts.steps
    steps = int(steps) if steps is not None else pti_steps(dev)
    t_all = time.perf_counter()
    target, faces = _to_batch(images, G.resolution, dev)
    tuning_total = target.shape[0] * steps
    pivot_total = 0  # the pivot's planned steps, as its callback reports them

    def pivot_callback(step, total, losses):
        nonlocal pivot_total
        pivot_total = total
        callback(step, total + tuning_total, losses)

    if pivot is None:
        if pivot_method is None:
            pivot_method = opts.method if opts.method not in (None, "pti") else (
                default_method(model_ref, opts.space) if model_ref is not None else "optim")
        if pivot_method == "pti":
            raise InversionError("the pivot is found by encoder, optim or hybrid, not by pti itself")
        kw = dict(G=G, D=D, prior=prior_obj if prior_obj is not None else "none",
                  options=dataclasses.replace(opts, steps=None, method=None))
        if pivot_method != "optim" and encoder is not None:
            kw["encoder"] = encoder
        if callback is not None:
            kw["callback"] = pivot_callback
        pivot = invert_code(pivot_method, images, model_ref, opts.space, pivot_steps, **kw)
    if pivot.batch_size != target.shape[0]:
        raise InversionError(f"the pivot latent holds {pivot.batch_size} codes for {target.shape[0]} images")
    loss = make_perceptual(perceptual, D=D)
    if isinstance(loss, torch.nn.Module):
        loss.to(dev)
    tunings, records = [], []
    for i in range(target.shape[0]):
        t, rec = tune(G, pivot.codes[i:i + 1].to(dev), target[i:i + 1], steps=steps, rank=rank, lr=lr,
                      perceptual=loss, locality_weight=locality_weight, locality_radius=locality_radius,
                      consistency_weight=consistency_weight, consistency_strength=consistency_strength,
                      seed=seed + i,
                      callback=offset_callback(callback, pivot_total + i * steps, pivot_total + tuning_total))
        tunings.append(t)
        records.append(rec)
        if progress is not None:
            progress(i + 1)
    tuning = {k: torch.cat([t[k] for t in tunings]) for k in tunings[0]}
    per_image = tuning_bytes(tuning) // max(1, target.shape[0])
    g_bytes = sum(4 * p.numel() for p in G.parameters())
    meta = dict(pivot.meta)
    meta.update({
        "method": "pti", "pivot_method": pivot.meta.get("method", pivot_method), "space": pivot.space,
        "pivot_losses": pivot.meta.get("losses"), "seed": seed,
        "losses": {"pti_before": [r["loss_before"] for r in records],
                   "pti_after": [r["loss_after"] for r in records]},
        "tuning": {"kind": "lora", "rank": rank, "steps": steps, "lr": lr, "locality_weight": locality_weight,
                   "locality_radius": locality_radius, "consistency_weight": consistency_weight,
                   "consistency_strength": consistency_strength,
                   "params": sorted({k.rsplit('.', 1)[0] for k in tuning}),
                   "bytes_per_image": per_image, "generator_bytes": g_bytes},
        "seconds": time.perf_counter() - t_all, "tuning_seconds": sum(r["seconds"] for r in records),
        "steps": meta.get("steps", 0), "steps_requested": meta.get("steps_requested", 0),
    })
    for k, default in (("prior", "none"), ("prior_weight", 0.0), ("perceptual", "none"), ("optimize_noise", False)):
        meta.setdefault(k, default)
    if faces and any(f is not None for f in faces):
        meta["faces"] = [None if f is None else f.metadata() for f in faces]
    return Latent(space=pivot.space, codes=pivot.codes.cpu(), model_id=model_id or pivot.model_id,
                  z=pivot.z, noise=None, tuning=tuning, meta=meta, arch=pivot.arch)


__all__ = ["pti_invert", "tune", "apply_tuning", "synthesize", "tuning_deltas", "tuning_bytes", "modulated_weights",
           "pti_steps"]
