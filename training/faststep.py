"""The fast training step: the same losses as :meth:`Trainer.step`, shaped for a GPU.

At 64 px the reference step is launch-bound: every phase is a few hundred small kernels,
each waiting on Python. This step keeps the mathematics of the reference (same losses,
same regularisers at the same lazy intervals, same EMA) and changes how it runs:

* **Explicit draws.** Every random input of a phase (z, the mixing z and crossover layer,
  the noise maps, the augmentation parameters, the real indices and flips) is drawn first
  into a :class:`Draws`; the phase itself is then a pure function of weights and draws, which
  is what lets ``torch.compile`` capture it whole and what makes it testable against the
  reference path on the same inputs (``tests/test_training.py``). In a step both paths take
  their draws from :meth:`Trainer.step_draws` (seeded per step and phase, each rank's share of
  the global batch under ``torchrun``); the gradient all-reduce between a phase's backward and
  its Adam step runs outside the compiled functions.
* **Polyphase synthesis** (``path="poly"``, :mod:`networks.fastsynth`) instead of the
  shared-conv path: dense low-resolution convolutions instead of transposed ones plus a blur.
* **``torch.compile``** of the G-main loss, the fake generation of D-main and the D-main
  loss (forward and backward through AOTAutograd), each compiled once: a phase always sees
  the same ``requires_grad`` state, so no guard forces a recompile. The regularisers (R1,
  path length) need double backward, which ``torch.compile`` does not capture; they stay
  eager and run every ``r1_every`` / ``pl_every`` steps, as in the reference, but under the
  same bf16 autocast as the main phases (the reference runs them in fp32: on an H100 the fp32
  path-length pass alone took a third of an eager fast step's GPU time); the lengths and the
  penalties are summed in fp32.
* **Down-sampling by strided slices** in the discriminator (``Discriminator.set_down_impl("taps")``,
  :func:`networks.stylegan2.downsample2d_taps`) instead of depthwise FIR convolutions, which took
  another quarter of that GPU time. The next profile (eager, batch 512, H100: 106 ms of GPU time per
  step, convolutions ~15 ms of it; ``bench/results/training_speed/profile_eager_b512_h100.md``) put
  ~23 ms in copy and fill kernels, most of them those slices' backward. Their replacement by
  three 2x2 average pools with the gains folded into the weights was built, tried on an H100
  and removed: 3,616 against 4,851 img/s at batch 1024 in the same run, and input gradients
  1.19 from the float32 reference under bf16 against the slices' 0.115
  (``bench/results/training_speed/pool_attempt_h100.md``).
* **CUDA graphs** (``TrainConfig.compile_mode="reduce-overhead"``): each compiled phase is
  replayed as one graph, so that a step's cost is its kernels' and not their launches'.
* **Fused Adam** on CUDA (one kernel per parameter group instead of one per tensor; the
  trainer builds its optimisers so when ``TrainConfig.fast`` is set).
* bf16 autocast on CUDA as the reference; the discriminator runs ``channels_last`` on CUDA.

A larger batch is what makes the step fast: ``TrainConfig.batch``. The learning rate, R1
weight and EMA half-life are per image, not per step, in this loop (Adam's update does not
grow with the batch; R1 is a mean over the batch; the EMA half-life is counted in images),
so they keep their values at any batch. The path-length mean's decay is per step: the fast
step scales it by ``batch / 128`` so that it averages over the same number of images.

The trainer compiles only on CUDA and only with ``TrainConfig.compile`` (on by default); on the
CPU the same step runs eagerly. ``FastStep(trainer, compile=True)`` compiles on the CPU too (a C++
compiler is needed, and it takes minutes).

Measured (``bench/results/training_speed/``, one H100, one run): eagerly (``compile=False``) 3.32x
the reference step's images/s for faces64 (4,864 at batch 1024 vs 1,466 at 192) and 3.40x for
faces64-wpp (4,794 vs 1,410); compiled, before the bf16 regularisers and the strided down-sampling,
1.71x after a 173 s compile (that table is in git history, ``training_speed_h100.md`` at b8a50ad; not
re-measured since: compiling at batch 1024 took over 250 s).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import augment as _augment

PL_DECAY_BATCH = 128  # the batch at which ``TrainConfig.pl_decay`` is meant
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class Draws:
    """The random inputs of one generator pass: ``G(z, z2, cut, noise)`` then ``aug``.

    Attributes:
        z: ``[B, *z_shape]`` latents.
        z2: mixing latents (same shape) or None when the run does not mix.
        cut: ``[B, 1]`` int64 crossover layer (``num_ws`` = no mixing for that sample) or None.
        noise: one ``[B, 1, r, r]`` map per styled conv, in layer order.
        aug: augmentation parameters (:func:`training.augment.sample_params`) for the fakes.
    """

    z: torch.Tensor
    z2: torch.Tensor | None
    cut: torch.Tensor | None
    noise: list
    aug: dict

    def rows(self, take) -> "Draws":
        """The same draws with ``take`` (a function of a ``[B, ...]`` tensor) applied to every tensor."""
        opt = lambda t: None if t is None else take(t)  # noqa: E731
        return Draws(take(self.z), opt(self.z2), opt(self.cut), [take(x) for x in self.noise],
                     {k: take(v) for k, v in self.aug.items()})


def draw_fakes(G, n: int, mixing_prob: float, policy: tuple, device, generator: torch.Generator | None = None
               ) -> Draws:
    """Draw everything one generator pass of ``n`` samples needs (see :class:`Draws`), from
    ``generator`` (on ``device``) or, without one, from torch's global generator."""
    kw = dict(device=device, generator=generator)
    z = torch.randn((n, *G.z_shape), **kw)
    z2 = cut = None
    if mixing_prob > 0:
        z2 = torch.randn((n, *G.z_shape), **kw)
        cut = torch.randint(1, G.num_ws, (n, 1), **kw)
        cut = torch.where(torch.rand(n, 1, **kw) < mixing_prob, cut, torch.full_like(cut, G.num_ws))
    noise = [torch.randn(n, 1, b.shape[-2], b.shape[-1], **kw) for b in G.synthesis.noise_buffers()]
    aug = _augment.sample_params(n, G.resolution, policy=policy, **kw) if policy else {}
    return Draws(z, z2, cut, noise, aug)


def mixed_ws(G, d: Draws, update_w_avg: bool = False) -> torch.Tensor:
    """Codes of ``d.z``, with layers from ``d.cut`` on taken from ``d.z2`` (style mixing)."""
    ws = G.mapping(d.z, update_w_avg=update_w_avg)
    if d.z2 is None:
        return ws
    ws2 = G.mapping(d.z2)
    layer = torch.arange(G.num_ws, device=ws.device).view(1, -1)
    return torch.where((layer >= d.cut).unsqueeze(2), ws2, ws)


def _augmented(x: torch.Tensor, params: dict) -> torch.Tensor:
    return _augment.apply(x, params) if params else x


def generate(G, d: Draws, path, update_w_avg: bool = False) -> torch.Tensor:
    """Images of the draws through synthesis path ``path`` (one of ``networks.SYNTHESIS_PATHS``)."""
    return G.synthesis(mixed_ws(G, d, update_w_avg), noise=d.noise, path=path)


def g_main_loss(G, D, d: Draws, path) -> torch.Tensor:
    """Non-saturating generator loss ``mean softplus(-D(aug(G(d))))`` (updates G's ``w_avg``)."""
    fake = generate(G, d, path, update_w_avg=True)
    return F.softplus(-D(_augmented(fake, d.aug)).float()).mean()


def d_main_loss(D, fake: torch.Tensor, fake_aug: dict, real: torch.Tensor, real_aug: dict) -> tuple:
    """Logistic discriminator loss; returns ``(loss, real logits, fake logits)``."""
    lf = D(_augmented(fake, fake_aug)).float()
    lr = D(_augmented(real, real_aug)).float()
    return F.softplus(lf).mean() + F.softplus(-lr).mean(), lr, lf


class FastStep:
    """Runs :meth:`Trainer.step`'s phases the fast way (module docstring) on a trainer's state.

    Args:
        trainer: the :class:`training.loop.Trainer` whose G, D, G_ema, optimisers and
            counters this step advances.
        compile: ``torch.compile`` the main phases (default: on CUDA only).
        mode: ``torch.compile`` mode, one of :data:`COMPILE_MODES`; ``"reduce-overhead"``
            replays each compiled phase as a CUDA graph (one launch instead of hundreds).
        path: synthesis path of the main phases, one of ``networks.SYNTHESIS_PATHS``
            (``"poly"``; ``"shared"`` is the reference step's path, for comparisons).
    """

    def __init__(self, trainer, compile: bool | None = None, path: str = "poly", mode: str = "default"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
        self.t = trainer
        dev = trainer.device
        self.path = path
        self.compiled = dev.type == "cuda" if compile is None else bool(compile)
        self.graphs = self.compiled and mode == "reduce-overhead"
        if dev.type == "cuda":
            trainer.D.to(memory_format=torch.channels_last)
        trainer.D.set_down_impl("taps")
        kw = {} if mode == "default" else {"mode": mode}
        wrap = (lambda f: torch.compile(f, dynamic=False, **kw)) if self.compiled else (lambda f: f)
        self._g_main = wrap(self._g_main_impl)
        self._fakes = wrap(self._fakes_impl)
        self._d_main = wrap(self._d_main_impl)
        self.pl_decay = min(1.0, trainer.cfg.pl_decay * trainer.cfg.batch / PL_DECAY_BATCH)

    # the compiled bodies -------------------------------------------------------------

    # (flat tensor arguments, so that the compiled functions guard on tensors only)

    def _g_main_impl(self, z, z2, cut, noise, aug) -> torch.Tensor:
        with self.t._autocast():
            return g_main_loss(self.t.G, self.t.D, Draws(z, z2, cut, noise, aug), self.path)

    @torch.no_grad()
    def _fakes_impl(self, z, z2, cut, noise) -> torch.Tensor:
        with self.t._autocast():
            return generate(self.t.G, Draws(z, z2, cut, noise, {}), self.path)

    def _d_main_impl(self, fake, fake_aug, real, real_aug):
        with self.t._autocast():
            return d_main_loss(self.t.D, fake, fake_aug, real, real_aug)

    # one step ------------------------------------------------------------------------

    def draws(self, n: int) -> Draws:
        t = self.t
        return draw_fakes(t.G, n, t.cfg.mixing_prob, t.aug.policy, t.device)

    def step(self) -> None:
        """One optimisation step of G and D, the lazy regularisers when due, the EMA."""
        t = self.t
        cfg, G, D = t.cfg, t.G, t.D
        B, k = cfg.batch, t.step_count
        if self.graphs:  # a new iteration: the graphs' outputs of the last step may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        t.timer.on = bool(cfg.profile_every) and (k % cfg.profile_every) < 16
        with t.timer.phase("data"):
            s = t.step_draws()
            g_draws, d_draws = s.g, s.d

        with t.timer.phase("G main"):
            G.requires_grad_(True)
            D.requires_grad_(False)
            t.optG.zero_grad(set_to_none=True)
            loss_G = self._g_main(g_draws.z, g_draws.z2, g_draws.cut, g_draws.noise, g_draws.aug)
            loss_G.backward()
            t.reduce_g_main()
            t.optG.step()
            t._add("loss_G", loss_G)

        if cfg.pl_weight > 0 and cfg.pl_every > 0 and k % cfg.pl_every == 0:
            with t.timer.phase("G pl"):
                t.optG.zero_grad(set_to_none=True)
                with t._autocast():
                    pl = path_length_loss(t, max(B // cfg.pl_batch_shrink, 1), self.pl_decay, self.path)
                (pl * cfg.pl_weight * cfg.pl_every).backward()
                t.reduce_gradients(G)
                t.optG.step()
                t._add("pl", pl)
                t._add("pl_mean", t.pl_mean)

        with t.timer.phase("D main"):
            G.requires_grad_(False)
            D.requires_grad_(True)
            t.optD.zero_grad(set_to_none=True)
            fake = self._fakes(d_draws.z, d_draws.z2, d_draws.cut, d_draws.noise)
            loss_D, lr_, lf = self._d_main(fake, d_draws.aug, s.real, s.real_aug)
            loss_D.backward()
            t.reduce_gradients(D)
            t.optD.step()
            t._add("loss_D", loss_D)
            t._add("D_real", lr_.mean())
            t._add("D_fake", lf.mean())

        t.r1_phase(s, amp=True)
        t.finish_step()


def _lengths(G, d: Draws, y: torch.Tensor | None, path, create_graph: bool) -> torch.Tensor:
    """Path lengths ``|J_w^T y|`` of the draws ``d``; ``y`` image-sized noise (None: drawn here), fp32."""
    ws = mixed_ws(G, d)
    img = G.synthesis(ws, noise=d.noise, path=path)
    y = (torch.randn_like(img) if y is None else y) / math.sqrt(img.shape[2] * img.shape[3])
    (g,) = torch.autograd.grad((img * y).sum(), ws, create_graph=create_graph)
    return g.float().square().sum(2).mean(1).sqrt()


def path_lengths(G, n: int, mixing_prob: float, device, path, create_graph: bool = True) -> torch.Tensor:
    """``[n]`` StyleGAN2 path lengths ``|J_w^T y|`` of ``n`` fresh samples (``y`` image-sized noise), fp32,
    drawn from torch's global generator."""
    return _lengths(G, draw_fakes(G, n, mixing_prob, (), device), None, path, create_graph)


def path_length_loss(t, n: int, decay: float, path) -> torch.Tensor:
    """StyleGAN2's path-length penalty on this rank's part of ``n`` samples drawn for the step
    (:meth:`Trainer.pl_draws`), fp32; updates ``t.pl_mean`` with the mean length over every rank."""
    d, y = t.pl_draws(n)
    lengths = _lengths(t.G, d, y, path, create_graph=True)
    mean = lengths.mean().detach()
    t.rank_mean_(mean)
    t.pl_mean.copy_(t.pl_mean.lerp(mean, decay))
    return (lengths - t.pl_mean).square().mean()
