"""Training job for the pSp/e4e-family encoder (``networks.encoder.Encoder``).

Needs no dlib, lpips or facenet, so it runs on a bare CUDA machine::

    faceedit --device cuda train-encoder --model checkpoints/weights/faces64 \\
        --data packs/faces64_train.npz --space w+ --minutes 3 --out runs/enc_faces64

Each step draws a batch of real faces from the packed *train* split and a batch of
synthetic pairs ``z -> ws -> image`` from the frozen generator, encodes both, re-synthesises
them and minimises

    L = pix * MSE(G(E(x)), x) + perc * Dfeat(G(E(x)), x)           (real and synthetic)
      + lat * MSE(E(x_syn), ws_syn)                                 (synthetic pairs)
      + delta * sum_i ||r_i||_2                                     (e4e delta penalty)
      + adv * softplus(-LD(E(x)))                                   (e4e latent discriminator)

``Dfeat`` is the offline perceptual distance on the shipped discriminator's per-scale
features (``inversion.losses.DiscFeatureLoss``; LPIPS backbones cannot be downloaded here). The latent
discriminator ``LD`` learns to tell mapping outputs from encoder outputs (logistic loss,
R1 penalty on the real codes). Mixed precision (bf16 autocast) is used on CUDA.

Outputs in ``--out``: ``encoder_<space>.safetensors`` (fp16 weights, the mean code in fp32)
and ``encoder_<space>.json`` (architecture, the generator it belongs to, training record),
ready to be copied into ``checkpoints/weights/<model>/``; and ``encoder_<space>.train.pt``
(fp32 weights and optimiser state; a later run with the same ``--out`` resumes from it).

Only the held-out tail of the *train* pack (``--val``) is used for the figures printed
at the end; the test split is never touched here.

Under ``torchrun`` (``torchrun --nproc_per_node N -m faceedit --device cuda train-encoder ...``) each
process is one rank of a data-parallel run: ``--batch`` is the global batch, every step's draws
(real indices and flips, synthetic z) are made for the whole batch from a seed of (seed, step)
alone and each rank encodes its share, the encoder's and the latent discriminator's gradients are
averaged over the ranks before each Adam step, and rank 0 alone evaluates and writes ``--out``.
The training state holds nothing of a rank: it resumes on any number of ranks.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from faceedit.core import distributed as _dist
from faceedit.core.device import resolve_device
from faceedit.core.distributed import DistContext
from faceedit.core.errors import TrainingError
from faceedit.inversion.encoder import ENCODER_FORMAT, encoder_files
from faceedit.inversion.losses import DiscFeatureLoss
from faceedit.networks.encoder import Encoder, LatentDiscriminator

from .loop import step_seed

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = dict(pix=1.0, perc=0.8, lat=1.0, delta=2e-4, adv=0.1)


# -- data ----------------------------------------------------------------------------
def load_pack_images(path, resolution: int, *, max_images: int | None = None) -> torch.Tensor:
    """Decode a training pack to a uint8 tensor ``[N, 3, resolution, resolution]``.

    Images whose size differs from ``resolution`` are resized with area filtering.

    Raises:
        FileNotFoundError: the pack does not exist (it names the command that builds it).
    """
    import numpy as np

    from faceedit.core.pack import Pack

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data pack {path} does not exist; build it with `faceedit dataset` "
                                f"(by default it writes <faceedit cache>/data/faces64_train.npz)")
    pack = Pack(path)
    if "split" in pack.meta and str(pack.meta["split"]).lower() == "test":
        raise TrainingError(f"{path} is the test split; encoders are trained on the train split only")
    n = len(pack) if max_images is None else min(len(pack), int(max_images))
    imgs = pack.images(range(n))
    if imgs.shape[1] != resolution or imgs.shape[2] != resolution:
        import cv2

        imgs = np.stack([cv2.resize(a, (resolution, resolution), interpolation=cv2.INTER_AREA) for a in imgs])
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous()


def _to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    return batch_u8.float() / 127.5 - 1.0


# -- losses --------------------------------------------------------------------------
def disc_feature_distance(D, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample perceptual distance in discriminator ``D``'s features (``inversion.losses.DiscFeatureLoss``)."""
    loss = DiscFeatureLoss(D)
    return loss(a, loss.prepare(b))


def delta_penalty(deltas: torch.Tensor) -> torch.Tensor:
    """e4e's delta penalty: sum over layers of the L2 norm of each delta, mean over the batch."""
    if deltas.shape[1] == 0:
        return deltas.new_zeros(())
    return deltas.float().norm(dim=-1).sum(1).mean()


def _latent_d_input(E: Encoder, codes: torch.Tensor) -> torch.Tensor:
    return codes[:, :1] if E.space == "w" else codes


def make_latent_discriminator(E: Encoder) -> LatentDiscriminator:
    """Per-layer MLP for W/W+; one joint MLP over all layers for W++ (whose layers are coupled)."""
    return LatentDiscriminator(E.w_dim * (E.num_ws if E.space == "wpp" else 1))


# -- evaluation ----------------------------------------------------------------------
@torch.no_grad()
def evaluate(G, E: Encoder, *, real: torch.Tensor | None = None, n_syn: int = 128, seed: int = 12345,
             batch: int = 64, D=None) -> dict:
    """Reconstruction and latent errors of ``E`` (model in eval mode, fp32).

    Args:
        real: uint8 ``[N, 3, R, R]`` held-out faces (train split tail), or ``None``.
        n_syn: synthetic pairs from a fixed seed (latent MSE against the true codes).
    Returns:
        ``{'syn_latent_mse', 'syn_mse', 'real_mse', 'real_psnr', 'real_perc'}`` (absent keys
        when no data for them).
    """
    dev = G.synthesis.const.device
    was = E.training
    E.eval()
    out = {}
    z = G.sample_z(n_syn, seed=seed, device=dev)
    lat, mse = [], []
    for zc in z.split(batch):
        ws = G.mapping(zc)
        x = G.synthesis(ws, noise_mode="const")
        codes = E(x)
        lat.append((codes - ws).square().mean(dim=(1, 2)))
        mse.append((G.synthesis(codes, noise_mode="const") - x).square().mean(dim=(1, 2, 3)))
    out["syn_latent_mse"] = float(torch.cat(lat).mean())
    out["syn_mse"] = float(torch.cat(mse).mean())
    if real is not None and len(real):
        mse, perc = [], []
        for xc in real.split(batch):
            x = _to_float(xc.to(dev))
            rec = G.synthesis(E(x), noise_mode="const")
            mse.append((rec - x).square().mean(dim=(1, 2, 3)))
            if D is not None:
                perc.append(disc_feature_distance(D, rec, x))
        m = torch.cat(mse)
        out["real_mse"] = float(m.mean())
        # images span [-1, 1] (peak-to-peak 2): PSNR = 10 log10(4 / MSE), per image then averaged
        out["real_psnr"] = float((10 * torch.log10(4.0 / m.clamp_min(1e-12))).mean())
        if perc:
            out["real_perc"] = float(torch.cat(perc).mean())
    E.train(was)
    return out


# -- training ------------------------------------------------------------------------
def train_encoder(G, E: Encoder, images: torch.Tensor, *, D=None, LD: LatentDiscriminator | None = None,
                  minutes: float | None = None, steps: int | None = None, batch: int = 32,
                  lr: float = 2e-3, ld_lr: float = 2e-4, weights: dict | None = None, r1_gamma: float = 10.0,
                  opt_state: dict | None = None, seed: int = 0, log_every: int = 100,
                  amp: bool | None = None, dist: DistContext | None = None) -> dict:
    """Train ``E`` for ``steps`` steps or ``minutes`` of wall time, whichever ends first.

    Args:
        G: frozen generator (its device is used for everything).
        E: the encoder (``Encoder.from_generator(G, space)``), trained in place.
        images: uint8 ``[N, 3, R, R]`` real training faces (may be empty: synthetic pairs only).
        D: frozen discriminator for the perceptual term (``None`` drops that term).
        LD: latent discriminator (made when ``weights['adv'] > 0`` and none is given).
        weights: loss weights, keys as :data:`DEFAULT_WEIGHTS`.
        batch: real faces per step, over all ranks (plus as many synthetic pairs).
        opt_state: ``{'E': ..., 'LD': ..., 'step': int}`` to resume optimisers from.
        seed: seed of the draws; step ``k``'s come from ``(seed, k)`` alone, so a resumed run
            continues with the batches an uninterrupted one would have drawn.
        amp: bf16 autocast (default: on for CUDA).
        dist: the launch this is one rank of (default: a single process); every rank calls this alike
            with the same ``E``, ``LD`` and ``opt_state``.
    Returns:
        ``{'steps', 'seconds', 'history': [{step, seconds, loss terms...}], 'opt_state', 'LD'}``
        (the history's losses are the means over the ranks).
    Raises:
        TrainingError: no budget, unknown loss weights, or a ``batch`` that does not split over the ranks.
    """
    if minutes is None and steps is None:
        raise TrainingError("give --minutes or --steps to bound the training run")
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(w) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise TrainingError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
    if w["perc"] > 0 and D is None:
        w["perc"] = 0.0
    ctx = dist if dist is not None else DistContext()
    if batch % ctx.world_size:
        raise TrainingError(f"--batch {batch} does not split over {ctx.world_size} ranks; use a multiple of "
                            f"{ctx.world_size} (it is the global batch of all ranks together)")
    per = batch // ctx.world_size

    def share(t: torch.Tensor) -> torch.Tensor:  # this rank's rows of a global batch (no cross-sample layer here)
        return t[ctx.rank * per:(ctx.rank + 1) * per]
    dev = G.synthesis.const.device
    amp = (dev.type == "cuda") if amp is None else amp
    G.requires_grad_(False)
    E.to(dev).train()
    if w["adv"] > 0 and LD is None:
        LD = make_latent_discriminator(E)
    if LD is not None:
        LD.to(dev).train()
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.9, 0.99))
    opt_ld = torch.optim.Adam(LD.parameters(), lr=ld_lr, betas=(0.9, 0.99)) if LD is not None else None
    start_step = 0
    if opt_state:
        opt.load_state_dict(opt_state["E"])
        if opt_ld is not None and opt_state.get("LD"):
            opt_ld.load_state_dict(opt_state["LD"])
        start_step = int(opt_state.get("step", 0))
    images = images.to(dev)
    gen = torch.Generator(device="cpu")
    budget = None if minutes is None else minutes * 60.0
    t0 = time.time()
    history, step, acc = [], 0, {}
    n_real = len(images)
    while True:
        # one clock for all ranks (rank 0's): the same learning rate and the same last step everywhere
        elapsed = time.time() - t0 if budget is None else _dist.main_value(ctx, time.time() - t0)
        if (steps is not None and step >= steps) or (budget is not None and elapsed >= budget):
            break
        frac = step / steps if steps is not None else elapsed / budget
        if steps is not None and budget is not None:
            frac = max(step / steps, elapsed / budget)
        for g in opt.param_groups:   # cosine decay to 10% over the run
            g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))
        # batch: real faces (random flips) + synthetic pairs, drawn for the global batch, this rank's share kept
        gen.manual_seed(step_seed(seed, start_step + step, 0))
        with torch.no_grad():
            z = share(G.sample_z(batch, generator=gen, device=dev))
            ws_syn = G.mapping(z)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                x_syn = G.synthesis(ws_syn, noise_mode="const", path="shared").float()
            if n_real:
                idx = share(torch.randint(n_real, (batch,), generator=gen)).to(dev)
                x_real = _to_float(images[idx])
                flip = share(torch.rand(batch, generator=gen) < 0.5).to(dev)
                x_real = torch.where(flip.view(-1, 1, 1, 1), x_real.flip(3), x_real)
                x = torch.cat([x_real, x_syn])
            else:
                x = x_syn
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            codes, deltas = E(x, return_deltas=True)
            rec = G.synthesis(codes, noise_mode="const", path="shared")
            terms = {"pix": (rec.float() - x).square().mean()}
            if w["perc"] > 0:
                terms["perc"] = disc_feature_distance(D, rec, x).mean()
        codes = codes.float()
        terms["lat"] = (codes[-len(z):] - ws_syn).square().mean()
        terms["delta"] = delta_penalty(deltas)
        if LD is not None and w["adv"] > 0:
            terms["adv"] = F.softplus(-LD(_latent_d_input(E, codes))).mean()
        loss = sum(w[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _dist.average_gradients(ctx, E.parameters())
        opt.step()
        if LD is not None and w["adv"] > 0:
            real_codes = _latent_d_input(E, ws_syn).detach().requires_grad_(True)
            fake = LD(_latent_d_input(E, codes.detach()))
            real = LD(real_codes)
            ld_loss = F.softplus(fake).mean() + F.softplus(-real).mean()
            if r1_gamma > 0:
                (g,) = torch.autograd.grad(real.sum(), real_codes, create_graph=True)
                ld_loss = ld_loss + r1_gamma / 2 * g.square().flatten(1).sum(1).mean()
            opt_ld.zero_grad(set_to_none=True)
            ld_loss.backward()
            _dist.average_gradients(ctx, LD.parameters())
            opt_ld.step()
            terms["ld"] = ld_loss.detach()
        for k, v in terms.items():
            acc[k] = acc.get(k, 0.0) + v.detach()
        acc["n"] = acc.get("n", 0) + 1
        step += 1
        if step % log_every == 0:
            history.append(_history_row(ctx, acc, start_step + step, time.time() - t0))
            if ctx.is_main:
                log.info("step %d  %s", history[-1]["step"], "  ".join(
                    f"{k} {v:.4g}" for k, v in history[-1].items() if k not in ("step",)))
            acc = {}
    if acc.get("n"):
        history.append(_history_row(ctx, acc, start_step + step, time.time() - t0))
    E.eval()
    state = {"E": opt.state_dict(), "LD": opt_ld.state_dict() if opt_ld is not None else None,
             "step": start_step + step}
    return {"steps": step, "total_steps": start_step + step, "seconds": time.time() - t0,
            "history": history, "opt_state": state, "LD": LD}


def _history_row(ctx: DistContext, acc: dict, step: int, seconds: float) -> dict:
    """The mean of each accumulated loss term over the steps since the last row and over the ranks."""
    n = acc.pop("n")
    keys = list(acc)  # the same order on every rank
    means = torch.stack([torch.as_tensor(acc[k], dtype=torch.float32) for k in keys]) / n
    _dist.all_mean_(ctx, [means])
    return {"step": step, "seconds": round(seconds, 2), **{k: float(v) for k, v in zip(keys, means)}}


# -- export --------------------------------------------------------------------------
def save_encoder(folder, E: Encoder, *, model_id: str, model_sha256: str, record: dict | None = None,
                 dtype: torch.dtype = torch.float16) -> tuple:
    """Write ``encoder_<space>.safetensors`` (weights in ``dtype``, the mean code fp32) and its JSON.

    The file name uses ``wplus`` for ``w+`` (``encoder_wplus.safetensors``).
    """
    from faceedit.core.files import atomic_write_text
    from faceedit.core.tensorfile import write_tensor_file

    wpath, jpath = encoder_files(folder, E.space)
    tensors = {}
    for k, v in E.state_dict().items():
        v = v.detach().cpu()
        tensors[k] = (v.float() if k == "w_avg" else v.to(dtype)).contiguous()
    write_tensor_file(wpath, tensors, {"format": ENCODER_FORMAT, "space": E.space})
    cfg = {"format": ENCODER_FORMAT, "version": 1, "space": E.space, "encoder": E.config,
           "model_id": model_id, "model_sha256": model_sha256,
           "params": sum(p.numel() for p in E.parameters()), "dtype": str(dtype).replace("torch.", ""),
           "train": record or {}}
    atomic_write_text(jpath, json.dumps(cfg, indent=2, default=float))
    return wpath, jpath


def encoder_width(channels: int) -> dict:
    """Encoder kwargs scaled from one width (256 = the default architecture, ~4M parameters at 64 px)."""
    if channels < 8 or channels & (channels - 1):
        raise TrainingError(f"--channels must be a power of two >= 8, got {channels}")
    return dict(channel_base=16 * channels, channel_max=channels, channel_min=max(4, channels // 8),
                fpn_channels=max(4, channels // 2), head_channels=max(4, channels // 2))


def _state_path(out: Path, space: str) -> Path:
    return encoder_files(out, space)[0].with_suffix(".train.pt")


def run(model, data, *, space: str = "w+", minutes: float = 3.0, out, batch: int = 32, lr: float = 2e-3,
        max_images: int | None = None, val: int = 256, perceptual: str = "disc", weights: dict | None = None,
        device=None, seed: int = 0, resume: bool = True, encoder_kwargs: dict | None = None,
        steps: int | None = None, log_every: int = 100, state_dir=None, init_from=None) -> dict:
    """The whole job: load model and data, train, evaluate before/after, export. Returns a summary.

    Args:
        model: registry name or checkpoint path of the generator (and its discriminator).
        data: the training pack (``.npz``, train split).
        space: ``w``, ``w+`` or ``wpp``.
        minutes: wall-time budget of the training loop (loading and evaluation come on top).
        out: output folder.
        perceptual: ``disc`` (discriminator features; the model must ship a discriminator) or ``none``.
        val: faces at the end of the pack held out for the figures.
        resume: continue from ``<state_dir>/encoder_<space>.train.pt`` when it exists.
        state_dir: where the resumable training state goes (default ``out``; it is ~12x the
            encoder's size, so keep it out of a folder that has to travel back).
        init_from: an exported encoder (``encoder_<space>.safetensors``, e.g. the shipped one)
            to start from when there is no training state: fine-tuning an encoder whose
            state was not kept (its optimiser and latent discriminator start fresh).
    Returns:
        The summary (the training record, the files written); under ``torchrun`` rank 0's, while the
        other ranks get ``rank``, ``world_size``, ``steps`` and ``space`` only (they write nothing).
    Raises:
        TrainingError: a bad option or data set, or a training state of another model.
        DeviceError: under ``torchrun``, the ranks do not see the same training state.
    """
    if perceptual not in ("disc", "none"):
        raise TrainingError(f"perceptual must be 'disc' or 'none', got {perceptual!r}")
    dev = resolve_device(device)
    with _dist.launch(dev) as ctx:
        return _run(ctx, _dist.rank_device(ctx, dev), model, data, space=space, minutes=minutes, out=out, batch=batch,
                    lr=lr, max_images=max_images, val=val, perceptual=perceptual, weights=weights, seed=seed,
                    resume=resume, encoder_kwargs=encoder_kwargs, steps=steps, log_every=log_every,
                    state_dir=state_dir, init_from=init_from)


def _run(ctx: DistContext, dev: torch.device, model, data, *, space, minutes, out, batch, lr, max_images, val,
         perceptual, weights, seed, resume, encoder_kwargs, steps, log_every, state_dir, init_from) -> dict:
    from faceedit.checkpoints.registry import load_model

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    out = Path(out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    t_load = time.time()
    m = load_model(model, device=dev, with_discriminator=(perceptual == "disc"))
    G, D = m.G, m.D
    imgs = load_pack_images(data, G.resolution, max_images=max_images)
    if len(imgs) <= val:
        raise TrainingError(f"{data} holds {len(imgs)} faces, too few to hold out --val {val}")
    train_imgs, val_imgs = imgs[:-val] if val else imgs, imgs[-val:] if val else imgs[:0]
    E = Encoder.from_generator(G, space, **(encoder_kwargs or {})).to(dev)
    LD = make_latent_discriminator(E).to(dev)
    state_file = _state_path(Path(state_dir) if state_dir is not None else out, space)
    opt_state = None
    _dist.check_same(ctx, bool(resume and state_file.is_file()), f"whether {state_file} exists")
    if resume and state_file.is_file():
        st = torch.load(state_file, map_location=dev, weights_only=True)
        if st.get("model_sha256") != m.sha256 or st.get("config") != E.config:
            raise TrainingError(f"{state_file} belongs to another model or encoder architecture; "
                                f"delete it or pass another --out")
        E.load_state_dict(st["E_weights"])
        LD.load_state_dict(st["LD_weights"])
        opt_state = st["opt"]
        if ctx.is_main:
            log.info("resuming from %s at step %d", state_file, opt_state["step"])
    elif init_from is not None:
        from faceedit.inversion.encoder import load_encoder

        init = load_encoder(init_from, G=G, model_sha256=m.sha256, device=dev)
        if init.config != E.config:
            raise TrainingError(f"{init_from} has another encoder architecture ({init.config}); "
                                f"pass a matching --channels or drop --init-from")
        E.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
        if ctx.is_main:
            log.info("starting from the weights of %s", init_from)
    _dist.broadcast_(ctx, list(E.state_dict().values()) + list(LD.state_dict().values()))  # one start for all
    load_s = time.time() - t_load
    before = evaluate(G, E, real=val_imgs, D=D) if ctx.is_main else {}
    res = train_encoder(G, E, train_imgs, D=D, LD=LD, minutes=minutes, steps=steps, batch=batch, lr=lr,
                        weights=weights, opt_state=opt_state, seed=seed, log_every=log_every, dist=ctx)
    if not ctx.is_main:
        _dist.barrier(ctx)  # until rank 0 has written the files
        return {"rank": ctx.rank, "world_size": ctx.world_size, "steps": res["total_steps"], "space": space}
    after = evaluate(G, E, real=val_imgs, D=D)
    # latency of the encoder alone, batch 32, the device and precision used for inference
    lat_ms = encoder_latency(E, batch=32, device=dev)
    record = {"steps": res["total_steps"], "train_seconds": res["seconds"], "batch": batch, "lr": lr,
              "ranks": ctx.world_size, "loss_weights": {**DEFAULT_WEIGHTS, **(weights or {})}, "perceptual": perceptual,
              "train_images": len(train_imgs), "val_images": len(val_imgs), "data": str(data),
              "before": before, "after": after, "device": str(dev),
              "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
              "latency_ms_per_image_b32": lat_ms, "history": res["history"][-20:]}
    wpath, jpath = save_encoder(out, E, model_id=m.model_id, model_sha256=m.sha256, record=record)
    import io

    from faceedit.core.files import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"model_sha256": m.sha256, "config": E.config, "E_weights": E.state_dict(),
                "LD_weights": res["LD"].state_dict(), "opt": res["opt_state"]}, buf)
    atomic_write_bytes(state_file, buf.getvalue())
    _dist.barrier(ctx)
    return {"weights": str(wpath), "json": str(jpath), "state": str(state_file), "load_seconds": load_s,
            "model_id": m.model_id, "space": space, "rank": ctx.rank, "world_size": ctx.world_size, **record}


@torch.no_grad()
def encoder_latency(E: Encoder, *, batch: int = 32, device=None, iters: int = 20, warmup: int = 5,
                    amp: bool | None = None) -> float:
    """Milliseconds per image of ``E`` at ``batch`` (bf16 autocast on CUDA by default)."""
    dev = torch.device(device) if device is not None else next(E.parameters()).device
    amp = (dev.type == "cuda") if amp is None else amp
    was = E.training
    E.eval()
    x = torch.randn(batch, E.config["img_channels"], E.resolution, E.resolution, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        for _ in range(warmup):
            E(x)
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            E(x)
        sync()
    E.train(was)
    return (time.perf_counter() - t) / iters / batch * 1000


def format_summary(s: dict) -> str:
    """A short table of a :func:`run` summary."""
    b, a = s["before"], s["after"]
    rows = [("syn latent MSE", "syn_latent_mse"), ("syn image MSE", "syn_mse"), ("val real MSE", "real_mse"),
            ("val real PSNR dB", "real_psnr"), ("val real Dfeat", "real_perc")]
    lines = [f"encoder {s['space']} for {s['model_id']}: {s['steps']} steps in {s['train_seconds']:.0f} s "
             f"on {s['gpu'] or s['device']} (+{s['load_seconds']:.0f} s loading)",
             f"{'metric':<18}{'before':>12}{'after':>12}"]
    for name, k in rows:
        if k in a:
            lines.append(f"{name:<18}{b.get(k, float('nan')):>12.4f}{a[k]:>12.4f}")
    lines.append(f"{'latency ms/img b32':<18}{'':>12}{s['latency_ms_per_image_b32']:>12.4f}")
    lines.append(f"wrote {s['weights']} and {s['json']}")
    return "\n".join(lines)
