"""The StyleGAN training loop, one for both mapping kinds (W: MLP, W++: transformer) and both
generator architectures (``TrainConfig.arch``: StyleGAN2, StyleGAN v1).

What one step does (the order and the lazy-regularisation bookkeeping follow NVIDIA's
StyleGAN2-ADA loop; the code is our own):

1. ``Gmain``: non-saturating logistic loss ``softplus(-D(aug(G(z))))``; style mixing
   (probability 0.9, per sample, a random crossover layer) for the MLP mapping only; the
   transformer mapping (W++) trains without it, as TransStyleGAN does.
2. ``Greg`` every ``pl_every`` steps: path-length regularisation on ``batch / 2`` samples,
   weight ``pl_weight * pl_every``; run in fp32.
3. ``Dmain``: ``softplus(D(aug(G(z)))) + softplus(-D(aug(x)))``.
4. ``Dreg`` every ``r1_every`` steps: R1 ``gamma / 2 * |grad_x D(aug(x))|^2`` on real
   images, weight ``r1_every``; run in fp32.
5. EMA of G: half-life ``ema_kimg`` thousand images (ramped up over the first
   ``ema_rampup`` of the images seen), buffers copied.

StyleGAN v1 (``arch="stylegan1"``, :class:`networks.Generator1`: 8-layer mapping, learned
constant, AdaIN, per-layer noise, blur up-sampling) trains with SG1's own losses as its FFHQ
configuration has them: the same non-saturating logistic loss with R1, style mixing 0.9, and no
path-length penalty (``pl_weight`` defaults to 0 for it; SG1 has none). Its discriminator is
the same residual StyleGAN2 discriminator, not SG1's progressively grown one: with one D for
both generators a comparison of the two measures the generators alone, and the loop, its
regularisers and its exports stay one code path (progressive growing would be a second loop).

Every main/regulariser phase is its own Adam step; with lazy regularisation every
``c`` steps Adam's learning rate and betas are corrected by ``c / (c + 1)`` (StyleGAN2
paper, appendix B). G and D run under bf16 autocast on CUDA; the regularisers and the
losses are fp32. DiffAugment (``training.augment``) is applied to every image D sees.

Data parallel under ``torchrun`` (``Trainer(dist=...)``, :mod:`faceedit.core.distributed`): every
random input of a step (the real images' indices and flips, z, the mixing draws, the noise maps,
the augmentations, the regularisers' samples) is drawn for the whole ``batch`` from a generator
seeded by the run's seed, the step and the phase alone (:func:`step_seed`), and each rank computes
its share of it (:func:`batch_rows`: whole minibatch-std groups). Before every Adam step the
phase's gradients are averaged over the ranks (:func:`core.distributed.average_gradients`), and
so are the two statistics a step updates from its batch (G's ``w_avg`` and the path-length mean):
N ranks train as one process at the same ``batch`` does, up to float rounding (the order of the
sums). ``batch`` is the global batch; the EMA half-life counts its images. Rank 0 alone writes
the run folder and measures the diagnostics; the state it writes holds nothing of a rank, so a
run continues on any number of ranks.

Run folder (``run_dir``): ``checkpoint.safetensors`` (everything needed to continue
bit-for-bit: G, G_ema, D, both Adam states, counters, the path-length mean, torch's global
RNG states (only the diagnostics draw from them), the config; written atomically),
``loss.csv``, ``gsnr.csv``, ``kid.csv`` (with ``kid_every``), ``samples/kimgNNNNNN.png``
(G_ema on fixed seeds) and ``samples/latest.png``.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from faceedit.core import distributed as _dist
from faceedit.core.distributed import DistContext
from faceedit.core.errors import TrainingError
from faceedit.core.files import atomic_write_bytes, atomic_write_text
from faceedit.networks import GENERATORS, Discriminator, Generator, Generator1
from faceedit.networks.fastsynth import set_weight_cache

from . import augment as _augment
from .faststep import COMPILE_MODES, Draws, FastStep, d_main_loss, draw_fakes, g_main_loss, generate, \
    path_length_loss

log = logging.getLogger(__name__)

STATE_FORMAT = "faceedit.trainstate"
HOLDOUT_SEED = 20261206  # fixes which pack images TrainConfig.holdout keeps out
ARCHS = ("stylegan2", "stylegan1")  # TrainConfig.arch: the generator architectures the loop trains
# The phases of a step that draw random inputs, each from its own seed (step_seed).
PHASE_REAL, PHASE_G, PHASE_D, PHASE_PL, PHASE_R1 = range(5)


@dataclass
class TrainConfig:
    """Every setting of a run (saved in checkpoints; a resumed run keeps the saved ones).

    The defaults are the shipped 64 px models' settings. With ``arch="stylegan1"`` the same
    channel table (``channel_base``, ``channel_max``) gives a v1 generator of about the
    StyleGAN2 one's size (3.6M parameters against 3.4M at 64 px). The fast step runs it too
    (explicit draws, ``torch.compile``, fused Adam); v1 has one synthesis path, so the fast
    step's polyphase synthesis does not apply to it.
    """

    resolution: int = 64              # Image side (power of two).
    arch: str = "stylegan2"           # Generator: 'stylegan2' (modulated convs) or 'stylegan1' (AdaIN; MLP only).
    mapping: str = "mlp"              # 'mlp' (W, W+) or 'transformer' (W++; stylegan2 only).
    z_dim: int = 256                  # Input latent dimensionality (per token for W++).
    w_dim: int = 256                  # Style code dimensionality.
    mapping_layers: int = 8           # FC layers of the MLP mapping.
    mapping_blocks: int = 4           # Attention blocks of the transformer mapping.
    mapping_heads: int = 4            # Attention heads of the transformer mapping.
    channel_base: int = 2048          # Channel multiplier of G and D.
    channel_max: int = 256            # Maximum channels of G and D.
    batch: int = 128                  # Images per step (eager steps are launch-bound on a GPU at 64 px:
                                      # a larger batch costs little extra time per step).
    lr: float = 0.002                 # Adam learning rate of G and D (before the lazy correction).
    beta1: float = 0.0                # Adam beta1.
    beta2: float = 0.99               # Adam beta2.
    r1_gamma: float = 0.2             # R1 weight at 64 px (NVIDIA's heuristic 2e-4 * res^2 / batch gives
                                      # 0.006; we regularise harder for a small set and short runs).
    r1_every: int = 16                # Lazy R1 interval (0 = no R1).
    pl_weight: float | None = None    # Path-length weight (0 = off; None: 2 for stylegan2, 0 for stylegan1).
    pl_every: int = 4                 # Lazy path-length interval.
    pl_decay: float = 0.01            # Decay of the running path-length mean.
    pl_batch_shrink: int = 2          # Path length on batch // shrink samples.
    style_mixing: float | None = None  # Mixing probability (None: 0.9 for mlp, 0 for transformer).
    ema_kimg: float = 20.0            # EMA half-life in thousands of images.
    ema_rampup: float | None = 0.05   # EMA half-life at most this fraction of the images seen (None: off).
    augment: str = "color,translation,cutout"  # DiffAugment policy ('' = none).
    mirror: bool = True               # Random horizontal flips of the real images.
    amp: str = "auto"                 # 'bf16', 'off' or 'auto' (bf16 on CUDA, off on CPU).
    seed: int = 0                     # Seed of the initial weights, data order and noise.
    log_every: int = 100              # Steps between loss-CSV rows.
    console_every: int = 5            # Loss-CSV rows between console log lines.
    sample_every_kimg: float = 100.0  # kimg between sample grids.
    checkpoint_every_min: float = 2.0  # Minutes between checkpoints (and one at the end).
    gsnr_every: int = 1000            # Steps between GSNR measurements (0 = never).
    gsnr_samples: int = 32            # Samples per GSNR measurement.
    profile_every: int = 200          # Time every phase of 16 consecutive steps every N steps (0 = off).
    holdout: int = 0                  # N pack images (a fixed random subset) kept out of training; D's logits
                                      # on them beside train images measure the generalisation gap.
    kid_every: int = 0                # Steps between KID-attr measurements of G_ema against the held-out
                                      # images (needs holdout; 0 = never): the curve that says when to stop.
    kid_samples: int = 2000           # G_ema samples per KID measurement (truncation 1).
    fast: bool = False                # The fast step (training.faststep: explicit draws, polyphase synthesis,
                                      # torch.compile on CUDA, fused Adam); False = the reference step below.
    compile: bool = True              # torch.compile the fast step's main phases on CUDA (never on the CPU).
    compile_mode: str = "default"     # torch.compile mode of the fast step (faststep.COMPILE_MODES);
                                      # "reduce-overhead" replays the compiled phases as CUDA graphs.

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise TrainingError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.mapping not in ("mlp", "transformer"):
            raise TrainingError(f"mapping must be 'mlp' or 'transformer', got {self.mapping!r}")
        if self.kid_every and not self.holdout:
            raise TrainingError("kid_every needs held-out images to compare with: set holdout (e.g. 1000)")
        if self.arch == "stylegan1" and self.mapping != "mlp":
            raise TrainingError("a StyleGAN v1 generator has an MLP mapping only (W, W+); use mapping 'mlp', or "
                                "arch 'stylegan2' for a W++ (transformer) model")
        if self.pl_weight is None:  # SG1 has no path-length penalty
            self.pl_weight = 0.0 if self.arch == "stylegan1" else 2.0
        if self.compile_mode not in COMPILE_MODES:
            raise TrainingError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.batch < 2 or self.batch % 4:
            raise TrainingError(f"batch must be a multiple of 4 (the minibatch-std group), got {self.batch}")
        if self.amp not in ("auto", "bf16", "off"):
            raise TrainingError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        _augment.parse_policy(self.augment)

    @property
    def mixing_prob(self) -> float:
        if self.style_mixing is not None:
            return float(self.style_mixing)
        return 0.9 if self.mapping == "mlp" else 0.0

    def generator_kwargs(self) -> dict:
        """Constructor arguments of the generator class of ``arch`` (``networks.GENERATORS``)."""
        kw = dict(z_dim=self.z_dim, w_dim=self.w_dim, resolution=self.resolution, mapping_layers=self.mapping_layers,
                  channel_base=self.channel_base, channel_max=self.channel_max)
        if self.arch == "stylegan1":
            return kw
        return dict(kw, mapping_kind=self.mapping, mapping_blocks=self.mapping_blocks,
                    mapping_heads=self.mapping_heads)

    def build_generator(self) -> Generator | Generator1:
        """A freshly initialised generator of this config (class by ``arch``)."""
        return GENERATORS[self.arch](**self.generator_kwargs())

    def discriminator_kwargs(self) -> dict:
        return dict(resolution=self.resolution, channel_base=self.channel_base, channel_max=self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- data


def load_images(path, resolution: int | None = None, *, limit: int | None = None) -> torch.Tensor:
    """Decode a data pack into ``[N, 3, R, R]`` uint8 (area-downsampled if ``resolution`` is smaller)."""
    import cv2

    from faceedit.core.pack import Pack

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data pack {path} does not exist; build it with `faceedit dataset build --out DIR`")
    pack = Pack(path)
    n = len(pack) if limit is None else min(limit, len(pack))
    if n == 0:
        raise TrainingError(f"data pack {path} holds no images")
    first = pack.image(0)
    side = first.shape[0]
    r = side if resolution is None else int(resolution)
    if r > side or side % r:
        raise TrainingError(f"data pack {path} holds {side} px images; --resolution must divide it "
                            f"(e.g. {side}), got {r}")
    out = np.empty((n, r, r, 3), np.uint8)
    for i in range(n):
        im = pack.image(i)
        if im.shape[:2] != (side, side):
            raise TrainingError(f"{path}: image {i} is {im.shape[1]}x{im.shape[0]}, expected {side}x{side}")
        out[i] = im if r == side else cv2.resize(im, (r, r), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- helpers


def step_seed(seed: int, step: int, phase: int) -> int:
    """The seed of one phase's draws at one step: a function of the run's seed, the step and the
    phase only (never of the rank or of how many ranks there are), mixed by numpy's SeedSequence
    so that neighbouring steps get unrelated streams."""
    return int(np.random.SeedSequence([int(seed) % 2 ** 64, int(step), int(phase)]).generate_state(1, np.uint64)[0])


def batch_rows(x: torch.Tensor, ctx: DistContext, group: int = 1) -> torch.Tensor:
    """This rank's ``B / world_size`` rows of a global batch ``x`` (``[B, ...]``), in whole groups.

    :class:`networks.stylegan2.MinibatchStd` groups rows ``j, j + B/g, j + 2B/g, ...`` (a stride
    of ``B / group``). Rank ``r`` takes the ``r``-th run of ``B / (world_size * group)`` groups in
    that same strided layout, so its local minibatch-std groups are global groups and the
    discriminator's outputs over the union of the ranks are those of one process on all of ``x``.

    Args:
        x: a global batch, first dimension ``B``.
        ctx: this process's launch (a world of one gets ``x`` itself).
        group: the minibatch-std group size (1: plain contiguous shares).
    Returns:
        ``[B / world_size, ...]`` rows of ``x``.
    Raises:
        TrainingError: ``B`` is not a multiple of ``world_size * group``.
    """
    if ctx.world_size == 1:
        return x
    n, w = x.shape[0], ctx.world_size
    if n % (w * group):
        raise TrainingError(f"a batch of {n} does not split over {w} ranks in whole groups of {group}: "
                            f"use a multiple of {w * group}")
    per = n // (w * group)
    return x.reshape(group, w, per, *x.shape[1:])[:, ctx.rank].reshape(n // w, *x.shape[1:])


@dataclass
class StepDraws:
    """This rank's share of the random inputs of one step's main phases (:meth:`Trainer.step_draws`).

    Attributes:
        real: ``[b, 3, R, R]`` real images in [-1, 1] (mirrored where drawn so).
        real_aug: the augmentation of the reals in D main.
        g: the draws of the G-main fakes.
        d: the draws of the D-main fakes.
    """

    real: torch.Tensor
    real_aug: dict
    g: Draws
    d: Draws


def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images (with ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``p_ema <- beta * p_ema + (1 - beta) * p`` for parameters; buffers copied from ``G``."""
    ema_p = [p for p in G_ema.parameters()]
    src_p = [p.detach() for p in G.parameters()]
    torch._foreach_lerp_(ema_p, src_p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def r1_penalty(D, real: torch.Tensor, augment=None) -> tuple:
    """``|grad_x D(aug(x))|^2`` per image and the logits (``x`` the un-augmented reals)."""
    x = real.detach().requires_grad_(True)
    logits = D(augment(x) if augment is not None else x)
    (g,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    return g.float().square().sum(dim=[1, 2, 3]), logits


def _lazy_adam(params, lr, beta1, beta2, every, active, fused: bool = False):
    ratio = every / (every + 1) if active and every > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(beta1 ** ratio, beta2 ** ratio), eps=1e-8,
                            fused=True if fused else None)


class _PhaseTimer:
    """Wall-clock per training phase on sampled steps (CUDA synchronised only then)."""

    def __init__(self, device):
        self.device, self.on = device, False
        self.total, self.steps = {}, 0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def phase(self, name):
        timer = self

        class _Ctx:
            def __enter__(self_):
                if timer.on:
                    timer.sync()
                    self_.t = time.perf_counter()

            def __exit__(self_, *a):
                if timer.on:
                    timer.sync()
                    timer.total[name] = timer.total.get(name, 0.0) + time.perf_counter() - self_.t

        return _Ctx()

    def table(self) -> list:
        """Rows ``(phase, ms per step amortised, share)`` over the profiled steps."""
        if not self.steps:
            return []
        s = sum(self.total.values())
        return [(k, 1000 * v / self.steps, v / s if s else 0.0) for k, v in self.total.items()]


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Holds G, G_ema, D, their optimisers and counters; ``step()`` is one training step.

    Args:
        cfg: the run's settings (``cfg.batch`` is the global batch, over all ranks).
        images: ``[N, 3, R, R]`` uint8 training images (see :func:`load_images`).
        device: torch device (under ``torchrun`` with CUDA, this rank's GPU is used).
        run_dir: where checkpoints, logs and samples go (None: nowhere). Under ``torchrun`` give every
            rank the same one (the end of a chunk is a collective for those that have one); only
            rank 0 writes there.
        dist: the launch this trainer is one rank of (:func:`core.distributed.context`; default:
            a single process). Every rank builds its trainer alike and calls the same methods.
    Raises:
        TrainingError: the images do not fit ``cfg``, or ``cfg.batch`` does not split over the ranks.
    """

    def __init__(self, cfg: TrainConfig, images: torch.Tensor, device=None, run_dir=None,
                 dist: DistContext | None = None):
        from faceedit.core.device import resolve_device

        self.cfg = cfg
        self.dist = dist if dist is not None else DistContext()
        self.device = _dist.rank_device(self.dist, resolve_device(device or "auto"))
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (cfg.resolution, cfg.resolution):
            raise TrainingError(f"training images must be [N, 3, {cfg.resolution}, {cfg.resolution}] uint8, "
                                f"got {tuple(images.shape)}")
        if cfg.holdout and not 0 < cfg.holdout < len(images) // 2:
            raise TrainingError(f"holdout must leave most of the {len(images)} images for training, got {cfg.holdout}")
        self.heldout = None
        if cfg.holdout:  # a fixed random subset (packs are ordered by source), the same on every resume
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
            self.heldout = images[order[:cfg.holdout].sort().values].to(self.device)
            images = images[order[cfg.holdout:].sort().values]
        self.images = images.to(self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        torch.manual_seed(cfg.seed)
        self.G = cfg.build_generator().to(self.device).train()
        self.D = Discriminator(**cfg.discriminator_kwargs()).to(self.device).train()
        # fused Adam does not advance version counters, which the polyphase path's weight caches rely on
        set_weight_cache(self.G, False)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self._group = self.D.mbstd.group_size  # the share of a rank is whole minibatch-std groups
        world = self.dist.world_size
        if cfg.batch % (world * self._group):
            raise TrainingError(f"batch {cfg.batch} does not split over {world} ranks in whole minibatch-std groups "
                                f"of {self._group}: use a multiple of {world * self._group} (batch is the global "
                                f"batch of all ranks together)")
        if cfg.pl_weight > 0 and max(cfg.batch // cfg.pl_batch_shrink, 1) % world:
            raise TrainingError(f"the path-length batch (batch {cfg.batch} / pl_batch_shrink {cfg.pl_batch_shrink}) "
                                f"does not split over {world} ranks; use a batch that is a multiple of "
                                f"{world * cfg.pl_batch_shrink * self._group}")
        self._gen = torch.Generator(device=self.device)  # reseeded per step and phase (step_seed)
        self._w_avgs = [b for name, b in self.G.named_buffers() if name.endswith("w_avg")]
        fused = cfg.fast and self.device.type == "cuda"
        self.optG = _lazy_adam(self.G.parameters(), cfg.lr, cfg.beta1, cfg.beta2, cfg.pl_every, cfg.pl_weight > 0,
                               fused)
        self.optD = _lazy_adam(self.D.parameters(), cfg.lr, cfg.beta1, cfg.beta2, cfg.r1_every, cfg.r1_gamma > 0,
                               fused)
        self.pl_mean = torch.zeros([], device=self.device)
        self.step_count = 0          # optimisation steps done
        self.nimg = 0                # real images shown to D
        self.train_seconds = 0.0     # wall-clock spent in train() over all chunks
        self.aug = _augment.DiffAugment(cfg.augment)
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "off")
        self.amp_dtype = torch.bfloat16 if amp == "bf16" else None
        self.timer = _PhaseTimer(self.device)
        self.loss_rows: list = []
        self.gsnr_rows: list = []
        self.kid_rows: list = []
        self._kid_scorer = None
        self._acc: dict = {}
        self.sample_z = self.G.sample_z(64, seed=1234).to(self.device)
        self._last_sample_kimg = -1.0
        self._chunk_t0, self._secs_base = None, 0.0
        self.gsnr_seconds = self.kid_seconds = 0.0
        self._gsnr_ok = self._kid_ok = True
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.fast_step = None
        if cfg.fast:
            self.fast_step = FastStep(self, compile=cfg.compile and self.device.type == "cuda",
                                      mode=cfg.compile_mode)

    # ------------------------------------------------------------------ pieces

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def writes(self) -> bool:
        """Whether this trainer writes the run folder: it has one and is rank 0."""
        return self.run_dir is not None and self.dist.is_main

    def _reals(self, idx: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        x = self.images[idx].float() / 127.5 - 1.0
        if flip is not None:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def real_batch(self, n: int) -> torch.Tensor:
        """``n`` random real images (mirrored at random), drawn from torch's global generator (diagnostics)."""
        idx = torch.randint(len(self.images), (n,), device=self.device)
        return self._reals(idx, torch.rand(n, device=self.device) < 0.5 if self.cfg.mirror else None)

    def _generator(self, phase: int) -> torch.Generator:
        return self._gen.manual_seed(step_seed(self.cfg.seed, self.step_count, phase))

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return batch_rows(x, self.dist, self._group)

    def step_draws(self) -> StepDraws:
        """The random inputs of this step's main phases: drawn for the global batch from the step's seeds
        (:func:`step_seed`), this rank's share kept (:func:`batch_rows`)."""
        cfg, B, dev, policy = self.cfg, self.cfg.batch, self.device, self.aug.policy
        gen = self._generator(PHASE_REAL)
        idx = torch.randint(len(self.images), (B,), device=dev, generator=gen)
        flip = torch.rand(B, device=dev, generator=gen) < 0.5 if cfg.mirror else None
        real_aug = self.aug.sample(B, cfg.resolution, dev, gen) if policy else {}
        g = draw_fakes(self.G, B, cfg.mixing_prob, policy, dev, self._generator(PHASE_G))
        d = draw_fakes(self.G, B, cfg.mixing_prob, policy, dev, self._generator(PHASE_D))
        real = self._reals(self._rows(idx), None if flip is None else self._rows(flip))
        return StepDraws(real, {k: self._rows(v) for k, v in real_aug.items()}, g.rows(self._rows),
                         d.rows(self._rows))

    def pl_draws(self, n: int) -> tuple:
        """This rank's share of the step's ``n`` path-length samples: ``(Draws, image-sized noise y)``."""
        gen = self._generator(PHASE_PL)
        d = draw_fakes(self.G, n, self.cfg.mixing_prob, (), self.device, gen)
        y = torch.randn((n, *self.images.shape[1:]), device=self.device, generator=gen)
        take = lambda t: batch_rows(t, self.dist)  # noqa: E731  (no discriminator: any whole share)
        return d.rows(take), take(y)

    def reduce_gradients(self, module: torch.nn.Module) -> None:
        """Average ``module``'s gradients over the ranks (before its optimiser steps; no-op for one process)."""
        _dist.average_gradients(self.dist, module.parameters())

    def reduce_g_main(self) -> None:
        """After G main's backward: G's gradients, and G's ``w_avg`` that each rank moved towards its own
        share's mean (a lerp: the mean over ranks is the move towards the global batch's mean)."""
        self.reduce_gradients(self.G)
        _dist.all_mean_(self.dist, self._w_avgs)

    def rank_mean_(self, t: torch.Tensor) -> None:
        """Replace ``t`` by its mean over the ranks, in place (no-op for one process)."""
        _dist.all_mean_(self.dist, [t])

    def sync_from_main(self) -> None:
        """Give every rank rank 0's G, G_ema, D and path-length mean (after building or loading a state:
        every rank reads the same files, this makes sure they start from one state)."""
        tensors = [self.pl_mean]
        for mod in (self.G, self.G_ema, self.D):
            tensors += list(mod.state_dict().values())
        _dist.broadcast_(self.dist, tensors)

    def mapping(self, G, n: int, update_w_avg: bool = False) -> torch.Tensor:
        """Codes ``ws`` for ``n`` random z, with per-sample style mixing for the MLP mapping."""
        z = torch.randn((n, *G.z_shape), device=self.device)
        ws = G.mapping(z, update_w_avg=update_w_avg)
        p = self.cfg.mixing_prob
        if p > 0:
            z2 = torch.randn((n, *G.z_shape), device=self.device)
            ws2 = G.mapping(z2)
            cut = torch.randint(1, G.num_ws, (n, 1), device=self.device)
            cut = torch.where(torch.rand(n, 1, device=self.device) < p, cut, torch.full_like(cut, G.num_ws))
            layer = torch.arange(G.num_ws, device=self.device).view(1, -1)
            ws = torch.where((layer >= cut).unsqueeze(2), ws2, ws)
        return ws

    def generate(self, G, n: int, update_w_avg: bool = False) -> tuple:
        ws = self.mapping(G, n, update_w_avg)
        return G.synthesis(ws, noise_mode="random", path="shared"), ws

    def _add(self, name, value):
        v = value.detach().float()
        s, c = self._acc.get(name, (torch.zeros([], device=self.device), 0))
        self._acc[name] = (s + v, c + 1)

    # ------------------------------------------------------------------ one step

    def step(self) -> None:
        """One optimisation step of G and D (with the lazy regularisers when due)."""
        if self.fast_step is not None:
            return self.fast_step.step()
        cfg, G, D = self.cfg, self.G, self.D
        B = cfg.batch
        k = self.step_count
        self.timer.on = bool(cfg.profile_every) and (k % cfg.profile_every) < 16
        with self.timer.phase("data"):
            s = self.step_draws()

        # Gmain
        with self.timer.phase("G main"):
            G.requires_grad_(True)
            D.requires_grad_(False)
            self.optG.zero_grad(set_to_none=True)
            with self._autocast():
                loss_G = g_main_loss(G, D, s.g, "shared")
            loss_G.backward()
            self.reduce_g_main()
            self.optG.step()
            self._add("loss_G", loss_G)

        # Greg: path length
        if cfg.pl_weight > 0 and cfg.pl_every > 0 and k % cfg.pl_every == 0:
            with self.timer.phase("G pl"):
                self.optG.zero_grad(set_to_none=True)
                pl = path_length_loss(self, max(B // cfg.pl_batch_shrink, 1), cfg.pl_decay, "shared")
                (pl * cfg.pl_weight * cfg.pl_every).backward()
                self.reduce_gradients(G)
                self.optG.step()
                self._add("pl", pl)
                self._add("pl_mean", self.pl_mean)

        # Dmain
        with self.timer.phase("D main"):
            G.requires_grad_(False)
            D.requires_grad_(True)
            self.optD.zero_grad(set_to_none=True)
            with torch.no_grad(), self._autocast():
                fake = generate(G, s.d, "shared")
            with self._autocast():
                loss_D, lr_, lf = d_main_loss(D, fake.detach(), s.d.aug, s.real, s.real_aug)
            loss_D.backward()
            self.reduce_gradients(D)
            self.optD.step()
            self._add("loss_D", loss_D)
            self._add("D_real", lr_.mean())
            self._add("D_fake", lf.mean())

        self.r1_phase(s)
        self.finish_step()

    def r1_phase(self, s: StepDraws, amp: bool = False) -> None:
        """Dreg: the lazy R1 step on the step's real batch ``s.real``, when due (both steps use it);
        ``amp``: under the run's autocast (the fast step's choice; the reference runs it in fp32)."""
        cfg = self.cfg
        if cfg.r1_gamma > 0 and cfg.r1_every > 0 and self.step_count % cfg.r1_every == 0:
            with self.timer.phase("D r1"):
                self.optD.zero_grad(set_to_none=True)
                aug = None
                if self.aug.policy:
                    params = self.aug.sample(cfg.batch, cfg.resolution, self.device, self._generator(PHASE_R1))
                    params = {k: self._rows(v) for k, v in params.items()}
                    aug = lambda x: _augment.apply(x, params)  # noqa: E731
                with self._autocast() if amp else contextlib.nullcontext():
                    r1, _ = r1_penalty(self.D, s.real, aug)
                (r1.mean() * (cfg.r1_gamma / 2) * cfg.r1_every).backward()
                self.reduce_gradients(self.D)
                self.optD.step()
                self._add("r1", r1.mean())

    def finish_step(self) -> None:
        """Count the step's images and update the EMA of G (both steps use it)."""
        cfg = self.cfg
        with self.timer.phase("ema"):
            self.nimg += cfg.batch
            self.step_count += 1
            update_ema(self.G_ema, self.G, ema_beta(cfg.batch, self.nimg, cfg.ema_kimg, cfg.ema_rampup))
        if self.timer.on:
            self.timer.steps += 1

    # ------------------------------------------------------------------ logging

    @property
    def kimg(self) -> float:
        return self.nimg / 1000

    def flush_log(self, seconds: float, img_per_s: float) -> dict:
        """Average the accumulated losses (over the steps since the last row and over the ranks) into a
        ``loss.csv`` row; every rank calls it at the same steps, rank 0 writes the file."""
        if self.dist.distributed and self._acc:
            keys = sorted(self._acc)
            sums = torch.stack([self._acc[k][0] for k in keys])
            self.rank_mean_(sums)
            self._acc = {k: (sums[i], self._acc[k][1]) for i, k in enumerate(keys)}
        row = {"step": self.step_count, "kimg": round(self.kimg, 3), "minutes": round(seconds / 60, 3),
               "img_per_s": round(img_per_s, 1)}
        for k in ("loss_G", "loss_D", "D_real", "D_fake", "r1", "pl", "pl_mean"):
            s, c = self._acc.get(k, (None, 0))
            row[k] = round(float(s) / c, 5) if c else ""
        self._acc = {}
        self.loss_rows.append(row)
        if self.writes:
            _write_csv(self.run_dir / "loss.csv", self.loss_rows)
        return row

    def measure_gsnr(self) -> list:
        """GSNR of G and D on ``gsnr_samples`` fresh samples (fp32); appends rows to ``gsnr.csv``.

        One row per network and parameter group: ``gsnr`` (plain), ``gsnr_c`` (bias-corrected),
        ``gsnr_pool`` (pooled) and their jackknife errors (:func:`gsnr.group_stats`). With held-out
        images, also net ``D_real`` (D's loss on the real faces alone, the loss whose train /
        held-out gap the ``logit_*`` / ``gap`` rows of :meth:`generalisation_gap` follow)."""
        from . import gsnr

        cfg, m = self.cfg, self.cfg.gsnr_samples
        m -= m % 4
        if m < 4:
            return []
        z = torch.randn((m, *self.G.z_shape), device=self.device)
        ap = _augment.sample_params(m, cfg.resolution, policy=self.aug.policy, device=self.device)
        g = gsnr.generator_gsnr(self.G, self.D, z, aug_params=ap, chunk_size=8)
        with torch.no_grad():
            fake, _ = self.generate(self.G, m)
            real = self.real_batch(m)
            fa, ra = self.aug(fake), self.aug(real)
        nets = [("G", g), ("D", gsnr.discriminator_gsnr(self.D, ra, fa, chunk_size=8))]
        if self.heldout is not None:
            nets.append(("D_real", gsnr.discriminator_gsnr(self.D, ra, None, chunk_size=8)))
        rows = []
        for net, res in nets:
            for group, v in res.items():
                rows.append({"step": self.step_count, "kimg": round(self.kimg, 3), "net": net, "group": group,
                             "gsnr": f"{v['gsnr']:.6g}", "params": v["params"], "samples": m,
                             **{k: f"{v[k]:.6g}" for k in ("gsnr_c", "gsnr_c_se", "gsnr_pool", "gsnr_pool_se")}})
        if self.heldout is not None:
            rows.extend(self.generalisation_gap())
        self.gsnr_rows.extend(rows)
        if self.writes:
            _write_csv(self.run_dir / "gsnr.csv", self.gsnr_rows)
        return rows

    @torch.no_grad()
    def generalisation_gap(self, n: int = 1024) -> list:
        """D's mean logit on ``n`` train images and on the held-out ones (no augmentation), as
        ``gsnr.csv`` rows (net ``D``, groups ``logit_train`` / ``logit_heldout`` / ``gap``)."""
        g = torch.Generator(device="cpu").manual_seed(0)
        pick = lambda imgs: imgs[torch.randperm(len(imgs), generator=g)[:n].to(imgs.device)]  # noqa: E731
        means = {}
        for key, imgs in (("logit_train", pick(self.images)), ("logit_heldout", pick(self.heldout))):
            out = [self.D(x.float() / 127.5 - 1.0).float() for x in imgs.split(256)]
            means[key] = float(torch.cat(out).mean())
        means["gap"] = means["logit_train"] - means["logit_heldout"]
        return [{"step": self.step_count, "kimg": round(self.kimg, 3), "net": "D", "group": k, "gsnr": f"{v:.6g}",
                 "params": "", "samples": min(n, len(self.heldout))} for k, v in means.items()]

    @torch.no_grad()
    def measure_kid(self) -> dict:
        """KID-attr of ``kid_samples`` G_ema samples (truncation 1) against the held-out images, in the
        shipped attribute network's features (the feature space of ``faceedit bench generator``);
        appends a row to ``kid.csv``."""
        from faceedit.metrics.attributes import AttributeScorer
        from faceedit.metrics.distribution import kid

        if self._kid_scorer is None:
            self._kid_scorer = AttributeScorer.load(device=self.device)
            self._kid_real = self._kid_scorer.scores_and_features(self.heldout.float() / 127.5 - 1)[1]
        n, fakes = self.cfg.kid_samples, []
        z = self.G_ema.sample_z(n, seed=4321).to(self.device)
        with self._autocast():
            for i in range(0, n, 256):
                fakes.append(self._kid_scorer.scores_and_features(
                    self.G_ema.synthesis(self.G_ema.mapping(z[i:i + 256]), noise_mode="const").float())[1])
        k = kid(self._kid_real, np.concatenate(fakes), n_boot=100)
        row = {"step": self.step_count, "kimg": round(self.kimg, 3), "kid": f"{k['kid']:.6g}",
               "ci_low": f"{k['ci_low']:.6g}", "ci_high": f"{k['ci_high']:.6g}", "n": k["n"]}
        self.kid_rows.append(row)
        if self.writes:
            _write_csv(self.run_dir / "kid.csv", self.kid_rows)
        log.info("step %d kimg %.1f KID-attr vs held-out %.4f [%.4f, %.4f] (n=%d)", self.step_count, self.kimg,
                 k["kid"], k["ci_low"], k["ci_high"], k["n"])
        return row

    @torch.no_grad()
    def sample_grid(self, n: int = 64) -> np.ndarray:
        from faceedit.core.images import make_grid, tensor_to_uint8

        z = self.sample_z[:n]
        imgs = [self.G_ema.synthesis(self.G_ema.mapping(z[i:i + 16]), noise_mode="const")
                for i in range(0, len(z), 16)]
        return make_grid(tensor_to_uint8(torch.cat(imgs)), cols=int(math.ceil(math.sqrt(n))))

    def save_samples(self) -> None:
        if not self.writes:
            return
        from faceedit.core.images import save_image

        grid = self.sample_grid()
        save_image(self.run_dir / "samples" / f"kimg{int(self.kimg):06d}.png", grid)
        save_image(self.run_dir / "samples" / "latest.png", grid)

    # ------------------------------------------------------------------ state

    def state_tensors(self) -> dict:
        """Everything to continue exactly: weights, optimiser moments, counters, RNG.

        With ``beta1 = 0`` (the default) Adam's first moment is only the last gradient, which
        the next step overwrites before reading it, so it is left out: for faces64 about 29% fewer
        floats to carry between working periods (G's 3.4M and D's 3.5M of the 24.3M in G, G_ema,
        D and both moments; :meth:`load_checkpoint` restores it as zeros).
        """
        t = {}
        for prefix, mod in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            t.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in mod.state_dict().items()})
        for prefix, opt in (("optG", self.optG), ("optD", self.optD)):
            for idx, st in opt.state_dict()["state"].items():
                for name, v in st.items():
                    if name == "exp_avg" and self.cfg.beta1 == 0:
                        continue
                    t[f"{prefix}.{idx}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous().clone()
        t["pl_mean"] = self.pl_mean.detach().cpu().reshape(1).clone()
        t["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return t

    def counters(self) -> dict:
        secs = self.train_seconds
        if self._chunk_t0 is not None:  # inside train(): count the chunk so far
            secs = self._secs_base + time.perf_counter() - self._chunk_t0
        return {"step": self.step_count, "nimg": self.nimg, "train_seconds": secs,
                "last_sample_kimg": self._last_sample_kimg}

    def save_checkpoint(self, path=None) -> Path:
        """Full-precision checkpoint, atomically (default ``run_dir/checkpoint.safetensors``)."""
        from safetensors.torch import save

        path = Path(path) if path is not None else self.run_dir / "checkpoint.safetensors"
        meta = {"format": STATE_FORMAT, "config": json.dumps(self.cfg.to_dict()),
                "counters": json.dumps(self.counters())}
        atomic_write_bytes(path, save(self.state_tensors(), metadata=meta))
        return path

    def load_checkpoint(self, path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint` (weights, Adam, counters, RNG)."""
        from safetensors.torch import load

        raw = Path(path).read_bytes()
        meta = read_state_metadata(raw, path)
        t = load(raw)
        for prefix, mod in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            _load_module(mod, t, prefix, path)
        for prefix, opt in (("optG", self.optG), ("optD", self.optD)):
            sd = opt.state_dict()
            state = {}
            for key, v in t.items():
                if key.startswith(prefix + "."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = v
            for st in state.values():  # left out by state_tensors when beta1 = 0
                if "exp_avg" not in st and "exp_avg_sq" in st:
                    st["exp_avg"] = torch.zeros_like(st["exp_avg_sq"])
            sd["state"] = state
            opt.load_state_dict(sd)
        self.pl_mean.copy_(t["pl_mean"].reshape([]).to(self.device))
        torch.set_rng_state(t["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in t:
            torch.cuda.set_rng_state(t["rng.cuda"], self.device)
        self._set_counters(meta["counters"])

    def _set_counters(self, c: dict) -> None:
        self.step_count, self.nimg = int(c["step"]), int(c["nimg"])
        self.train_seconds = float(c.get("train_seconds", 0.0))
        self._last_sample_kimg = float(c.get("last_sample_kimg", -1.0))

    def load_logs(self) -> None:
        """Read ``loss.csv`` / ``gsnr.csv`` / ``kid.csv`` of the run folder so a resumed run appends to them."""
        if self.run_dir is None:
            return
        for name, rows in (("loss.csv", self.loss_rows), ("gsnr.csv", self.gsnr_rows), ("kid.csv", self.kid_rows)):
            p = self.run_dir / name
            if p.is_file():
                with open(p, newline="") as f:
                    old = [r for r in csv.DictReader(f) if int(float(r["step"])) <= self.step_count]
                rows[:0] = old

    # ------------------------------------------------------------------ the loop

    def _diagnostic(self, what: str, measure, seconds_attr: str) -> bool:
        """Run one diagnostic measurement, its time added to ``seconds_attr``; False (off for the rest of
        the chunk) when it fails: a diagnostic must never end a training chunk."""
        t0 = time.perf_counter()
        ok = True
        try:
            measure()
        except Exception:  # noqa: BLE001 - logged with its traceback, training goes on
            log.exception("%s measurement failed at step %d; %s is off for the rest of this chunk", what,
                          self.step_count, what)
            ok = False
        self.timer.sync()
        setattr(self, seconds_attr, getattr(self, seconds_attr) + time.perf_counter() - t0)
        return ok

    def train(self, *, seconds: float | None = None, max_steps: int | None = None, kimg: float | None = None,
              progress: bool = False) -> dict:
        """Train until a wall-clock budget, a step count or an image count is reached; then checkpoint.

        Non-finite losses stop the chunk without saving (the last good checkpoint stays). Under
        ``torchrun`` every rank calls it alike; rank 0's clock decides when the time budget is spent
        (the ranks stop at the same step), and rank 0 alone shows progress, measures the
        diagnostics and writes the run folder.

        Returns:
            summary dict (steps, kimg, seconds, images/s, whether stopped on NaN).
        """
        if seconds is None and max_steps is None and kimg is None:
            raise TrainingError("train() needs a budget: seconds, max_steps or kimg")
        cfg = self.cfg
        t0 = time.perf_counter()
        last_ckpt = t0
        self._chunk_t0, self._secs_base = t0, self.train_seconds
        start_step, start_nimg = self.step_count, self.nimg
        log_t, log_nimg = t0, self.nimg
        bar = None
        main = self.dist.is_main
        if progress and main:
            from tqdm import tqdm

            bar = tqdm(total=max_steps, unit="step", disable=None)
        nan = False
        while True:
            done = self.step_count - start_step
            out_of_time = seconds is not None and time.perf_counter() - t0 >= seconds
            if seconds is not None:  # a clock of its own on every rank: take rank 0's decision
                out_of_time = bool(_dist.main_value(self.dist, out_of_time))
            if (max_steps is not None and done >= max_steps) or out_of_time or \
                    (kimg is not None and self.kimg >= kimg):
                break
            self.step()
            if bar is not None:
                bar.update(1)
            if self.step_count % cfg.log_every == 0:
                now = time.perf_counter()
                row = self.flush_log(self._secs_base + now - t0, (self.nimg - log_nimg) / max(now - log_t, 1e-9))
                log_t, log_nimg = now, self.nimg
                if not all(math.isfinite(float(row[k])) for k in ("loss_G", "loss_D") if row[k] != ""):
                    # the row is the ranks' mean: every rank sees the same and stops at the same step
                    if main:
                        log.error("non-finite loss at step %d (%s); stopping this chunk without saving",
                                  self.step_count, row)
                    nan = True
                    break
                if main and self.step_count % (cfg.log_every * cfg.console_every) == 0:
                    log.info("step %d kimg %.1f G %.3f D %.3f %.0f img/s", row["step"], row["kimg"], row["loss_G"],
                             row["loss_D"], row["img_per_s"])
            if main and cfg.gsnr_every and self._gsnr_ok and self.step_count % cfg.gsnr_every == 0:
                self._gsnr_ok = self._diagnostic("GSNR", self.measure_gsnr, "gsnr_seconds")
            if main and cfg.kid_every and self._kid_ok and self.step_count % cfg.kid_every == 0:
                self._kid_ok = self._diagnostic("KID", self.measure_kid, "kid_seconds")
            if self.kimg - self._last_sample_kimg >= cfg.sample_every_kimg:
                self._last_sample_kimg = self.kimg
                try:
                    self.save_samples()
                except OSError:
                    log.exception("could not write the sample grid at step %d", self.step_count)
            if self.writes and time.perf_counter() - last_ckpt > cfg.checkpoint_every_min * 60:
                self.save_checkpoint()
                last_ckpt = time.perf_counter()
        if bar is not None:
            bar.close()
        el = time.perf_counter() - t0
        if not nan and self.run_dir is not None:
            if self._acc:  # a collective under torchrun: every rank has the run folder's path
                self.flush_log(self._secs_base + el, (self.nimg - log_nimg) / max(time.perf_counter() - log_t, 1e-9))
            if self.writes:
                self.save_samples()
                self.save_checkpoint()
        self.train_seconds = self._secs_base + (time.perf_counter() - t0)
        self._chunk_t0 = None
        return {"steps": self.step_count - start_step, "kimg": round(self.kimg, 3),
                "chunk_kimg": (self.nimg - start_nimg) / 1000, "seconds": el,
                "img_per_s": (self.nimg - start_nimg) / max(el, 1e-9), "stopped_on_nan": nan,
                "total_steps": self.step_count}


# --------------------------------------------------------------------------- files


def read_state_metadata(raw: bytes, where="") -> dict:
    """Parse the JSON metadata of a training-state safetensors file."""
    from safetensors import safe_open  # noqa: F401  (import check)

    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > len(raw) - 8:
        raise TrainingError(f"{where} is not a safetensors file")
    header = json.loads(raw[8:8 + n])
    meta = header.get("__metadata__") or {}
    if meta.get("format") != STATE_FORMAT:
        raise TrainingError(f"{where} is not a faceedit training state (format {meta.get('format')!r})")
    return {"config": json.loads(meta["config"]), "counters": json.loads(meta["counters"]),
            **{k: v for k, v in meta.items() if k not in ("config", "counters")}}


def _load_module(mod: torch.nn.Module, tensors: dict, prefix: str, where) -> None:
    own = mod.state_dict()
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, extra = sorted(set(own) - set(sub)), sorted(set(sub) - set(own))
    if missing or extra:
        raise TrainingError(f"{where}: {prefix} does not match the architecture (missing {missing[:4]}, "
                            f"unexpected {extra[:4]})")
    mod.load_state_dict({k: v.to(own[k].dtype) for k, v in sub.items()}, strict=True)


def _write_csv(path: Path, rows: list) -> None:
    if not rows:
        return
    keys = list(rows[0].keys())
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
