"""Optimisation inversion: the ``Projector`` loop and the ``invert`` function.

The loop follows NVIDIA's StyleGAN2 projector (``project(G, target, num_steps)``), batched:

* start from the mean code (``w_avg``; for W++ the prior's joint mean when a prior is
  given, else the tracked per-layer mean; ``wpp-z``: see ``inversion.spaces``);
* Adam (betas 0.9, 0.999) with learning rate ``lr * ramp(t)``, ``t = step / steps``:
  linear ramp-up over the first ``lr_rampup`` of the run and cosine ramp-down over the
  last ``lr_rampdown``;
* latent noise annealing: Gaussian noise of std ``w_std * noise_factor * max(0, 1 - t /
  noise_ramp) ** 2`` is added to the optimised tensor before synthesis;
* loss per image = ``mse_weight * MSE + perceptual_weight * perceptual + prior_weight *
  prior.penalty / (num_ws * w_dim) + noise_reg_weight * noise_regularization`` (the
  last only when the noise maps are optimised; they are re-normalised after each step);
  the prior term is normalised so that it is about 1 for a typical latent of the model;
  on a W++ (transformer) model, ``w``/``w+`` use the layer-wise blocks of its joint prior
  (``LayerwisePrior``) and ``wpp`` the joint one, so W+ and W++ differ exactly by the
  cross-layer correlations (without a prior the two are the same free per-layer codes);
* the images of a batch are independent (losses are per image and summed; Adam is
  element-wise), so a batch of 32 gives the same latents as 32 single runs;
* early stop: when ``patience`` is set, the run ends once no image's loss has improved
  by more than ``min_delta`` (relative) for ``patience`` steps after the noise ramp;
* deterministic for a ``seed`` on a given device (noise drawn from a seeded generator).

Speed on CUDA (a batch-1 step is bound by the host's Python and kernel launches, not the
GPU: on an H100, config-f 1024 eager bf16 took 81 ms/step at batch 1 and 346 ms at batch
32): Adam runs ``fused`` and the noise maps
are re-normalised with one ``var_mean`` and ``torch._foreach_*`` ops (the CPU keeps the
reference ops, bit for bit, with Adam as :class:`EagerAdam`: torch's arithmetic without the
``torch._dynamo`` import of ``torch.optim``); ``compile="default"`` compiles the loss, ``compile="reduce-overhead"``
also replays it (forward and backward) from CUDA graphs; ``cuda_graphs=True`` captures the
WHOLE step (latent noise add, synthesis, loss, backward, Adam, noise re-normalisation) in one
CUDA graph after ``GRAPH_WARMUP`` eager steps and replays it; per step the host then only
writes the step's learning rate and noise strength into device buffers, draws the latent
noise into a static buffer and launches the graph. Combine it with ``compile="default"``.
The settings are one :class:`inversion.options.InversionOptions`.

Defaults: ``DEFAULT_STEPS`` = 50 on the CPU (one 64 px face in about 3-4 s on this
project's 2-core CPU with the discriminator loss) and 300 on CUDA.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from faceedit.core.device import resolve_device
from faceedit.checkpoints.loaded import LoadedModel
from faceedit.core.errors import InversionError

from .latent import Latent
from .losses import PixelMSE, make_perceptual, noise_regularization, normalize_noise_
from .options import Compile, InversionOptions, StepCallback, resolve_options
from .prior import prior_on
from .spaces import Space, check_space

log = logging.getLogger(__name__)

DEFAULT_STEPS = {"cpu": 50, "cuda": 300}
GRAPH_WARMUP = 3  # eager steps (compilation, cuDNN autotuning, optimiser state) before the graph capture
DEFAULT_PRIOR_WEIGHT = 0.01
DEFAULT_LR = 0.1            # NVIDIA's peak learning rate
DEFAULT_NOISE_FACTOR = 0.05  # NVIDIA's latent-noise start, in w_std units
_W_STD_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


#: The CPU projector takes ``poly`` up to this many multiply-adds per image in the generator's
#: up-sampling convs (:func:`up_conv_macs`; see :func:`default_path`).
POLY_CPU_MAX_UP_MACS = 300e6


def up_conv_macs(G) -> int:
    """Multiply-adds per image of the synthesis network's up-sampling convs as transposed convs
    (``Cout * Cin * 9`` per input pixel; ``poly`` spends 4x as many); 0 where it has none."""
    return sum(int(m.weight.shape[0] * m.weight.shape[1] * 9 * (m.resolution // 2) ** 2)
               for m in getattr(G.synthesis, "convs_up", ()))


def default_path(G, device) -> str:
    """The synthesis path a projector on ``device`` takes when its options name none.

    ``poly`` on the CPU for a generator up to :data:`POLY_CPU_MAX_UP_MACS` up-conv
    multiply-adds (:func:`up_conv_macs`; the shipped 64 px models have 66M), ``shared`` for
    larger ones, on CUDA, and wherever a filter is not the 4-tap one ``poly`` supports. The
    three paths are one function to float rounding; ``poly`` (``networks.fastsynth``: the frozen
    generator's polyphase kernels and affine weights cached, no up-sampling blur pass) runs fewer,
    larger operations for 4x the up-convs' multiply-adds, which pays on the CPU only where a step
    is bound by the operations, not by the arithmetic.

    Measured on a 2-core CPU: a 64 px hybrid step of one faces64 face (synthesis,
    discriminator-feature loss, prior, backward, Adam) took 34.7 ms on ``poly`` against 41.9 ms
    on ``shared`` and 55.3 ms on ``reference`` (two threads), with the same reconstructions of
    100 held-out faces (23.13 dB each; identity within 0.0002) (``bench/scripts/hybrid_cpu_steps.py
    --paths``, ``bench/results/photo_path/hybrid_cpu_paths.md``). The synthesis step alone
    (forward and backward to the codes, ``bench/scripts/cpu_synthesis_paths.py``,
    ``bench/results/photo_path/cpu_synthesis_paths_{1,2}t.md``) took 0.79-0.95x ``shared``'s time
    on ``poly`` up to 264M up-conv multiply-adds with two threads (0.93-1.07x with one), and
    1.08-1.25x from 793M on (1.20-1.39x with one; FFHQ's widths: 3.2G at 64 px, 12.9G at 256 px).
    """
    synthesis = G.synthesis
    firs = [m.fir for m in synthesis.modules() if isinstance(getattr(m, "fir", None), torch.Tensor)]
    if (torch.device(device).type == "cpu" and firs and all(f.numel() == 4 for f in firs)
            and up_conv_macs(G) <= POLY_CPU_MAX_UP_MACS):
        return "poly"
    return "shared"


def default_steps(device) -> int:
    """Default number of steps on ``device`` (50 on CPU, 300 on CUDA)."""
    return DEFAULT_STEPS["cuda" if torch.device(device).type == "cuda" else "cpu"]


@dataclass
class ProjectionResult:
    """What one batched run produced.

    Attributes:
        ws: ``[B, num_ws, w_dim]`` final codes.
        param: the optimised tensor (codes in its space; z for ``wpp-z``).
        noise: optimised noise maps (``[B, 1, r, r]`` each) or None.
        losses: final loss terms per image, ``{name: [B] list}`` (no latent noise).
        history: mean total loss of the batch at every step.
        steps: steps run (fewer than asked after an early stop).
        seconds: wall time of the loop.
        graph: how the steps ran: ``"off"`` (eager loop), ``"replayed"`` (one captured CUDA graph),
            or ``"eager after a failed capture: <error>"`` (``cuda_graphs`` asked for, the capture
            failed, the same step function ran eagerly instead).
    """

    ws: torch.Tensor
    param: torch.Tensor
    noise: list | None
    losses: dict
    history: list = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    graph: str = "off"


class Projector:
    """Batched optimisation inversion of a generator (see the module docstring).

    Args:
        G: the generator (frozen; its device is used).
        options: the settings (:class:`inversion.options.InversionOptions`; default: its
            defaults). ``options.prior`` is not read here: the prior is the ``prior`` object.
        D: discriminator, for ``perceptual='disc'`` (and ``auto`` without LPIPS).
        prior: a ``GaussianPrior`` or None (no prior term).
        perceptual_loss: a loss object with ``prepare`` and ``__call__`` (see
            ``inversion.losses``), used instead of ``options.perceptual``.
        lpips_pnet_rand: random LPIPS trunk (tests only).

    Raises:
        InversionError: a space the generator lacks, ``prior_weight > 0`` without a prior,
            CUDA-only settings (``cuda_graphs``, ``compile='reduce-overhead'``) off CUDA.
    """

    def __init__(self, G, options: InversionOptions | None = None, *, D=None, prior=None,
                 perceptual_loss=None, lpips_pnet_rand: bool = False):
        if options is None:
            options = InversionOptions()
        elif not isinstance(options, InversionOptions):
            raise InversionError(f"Projector(G, options) takes an InversionOptions, got {type(options).__name__}; "
                                 f"e.g. Projector(G, InversionOptions(space='w+', steps=100))")
        self.options = options
        self.G = G.eval().requires_grad_(False)
        self.device = G.synthesis.const.device
        self.space = Space(G, check_space(G, options.space))
        self.steps = options.steps if options.steps is not None else default_steps(self.device)
        if options.prior_weight is not None and options.prior_weight > 0 and prior is None:
            raise InversionError("prior_weight > 0 needs a prior (load_prior(model, G)); or pass prior_weight=0")
        self.mse = PixelMSE()
        if perceptual_loss is not None:
            self.perceptual, self.perceptual_requested = perceptual_loss, "object"
        else:
            self.perceptual = make_perceptual(options.perceptual.value, D=D, pnet_rand=lpips_pnet_rand)
            self.perceptual_requested = options.perceptual.value
        if isinstance(self.perceptual, torch.nn.Module):
            self.perceptual.to(self.device)
        if prior is not None and getattr(prior, "joint", False) and self.space.name in ("w", "w+"):
            prior = prior.layerwise()  # W+ on a W++ model: per-layer Gaussians, no cross-layer terms
        self.prior = prior_on(prior, self.device)
        weight = options.prior_weight if options.prior_weight is not None else DEFAULT_PRIOR_WEIGHT
        self.prior_weight = float(weight) if prior is not None else 0.0
        self.lr = options.lr if options.lr is not None else DEFAULT_LR
        self.lr_rampup, self.lr_rampdown = options.lr_rampup, options.lr_rampdown
        self.noise_factor = options.noise_factor if options.noise_factor is not None else DEFAULT_NOISE_FACTOR
        self.noise_ramp = options.noise_ramp
        self.optimize_noise, self.noise_reg_weight = options.optimize_noise, options.noise_reg_weight
        self.mse_weight, self.perceptual_weight = options.mse_weight, options.perceptual_weight
        self.patience, self.min_delta = options.patience, options.min_delta
        self.seed = options.seed
        self.path = options.path if options.path is not None else default_path(G, self.device)
        self.amp, self.cuda_graphs = options.amp, options.cuda_graphs
        self._reduce_overhead = options.compile is Compile.REDUCE_OVERHEAD
        if (self.cuda_graphs or self._reduce_overhead) and self.device.type != "cuda":
            what = "cuda_graphs=True" if self.cuda_graphs else "compile='reduce-overhead'"
            raise InversionError(f"{what} needs the generator on a CUDA device (it is on {self.device}); "
                                 f"move G to CUDA or pass cuda_graphs=False and compile='off'/'default'")
        if options.compile is not Compile.OFF:
            mode = "reduce-overhead" if self._reduce_overhead else None
            self._loss_fn = torch.compile(self._losses, dynamic=False, mode=mode)
        else:
            self._loss_fn = self._losses
        # CUDA: fused Adam and the foreach noise re-normalisation; the CPU keeps the reference ops (EagerAdam)
        self._fast_step = self.device.type == "cuda"
        self._static_loop = False  # tests: the CUDA-graph step function, run eagerly (no capture)
        # A failed capture (an op CUDA graphs cannot hold, e.g. a host copy inside a compiled loss) is
        # logged and the run goes on with the same step function, eagerly; False: it raises.
        self.graph_fallback = True
        self._torch_adam = False  # tests: torch.optim.Adam instead of EagerAdam off CUDA (the same numbers)

    # -- set-up ------------------------------------------------------------------------
    @property
    def perceptual_name(self) -> str:
        return "none" if self.perceptual is None else getattr(self.perceptual, "name", type(self.perceptual).__name__)

    def _mean_ws(self):
        if self.prior is not None and self.space.name in ("wpp", "wpp-z") and self.prior.joint:
            return self.prior.mean_ws().to(self.device)
        return None

    def _w_std(self) -> float:
        if self.space.optimizes_z:
            return 1.0
        if self.prior is not None and self.prior.w_std is not None:
            return self.prior.w_std
        if self.G not in _W_STD_CACHE:
            _W_STD_CACHE[self.G] = self.space.noise_scale(seed=self.seed)
        return _W_STD_CACHE[self.G]

    def lr_at(self, t: float) -> float:
        """Learning rate at run fraction ``t`` (NVIDIA's schedule)."""
        ramp = min(1.0, (1.0 - t) / self.lr_rampdown) if self.lr_rampdown > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp *= min(1.0, t / self.lr_rampup) if self.lr_rampup > 0 else 1.0
        return self.lr * ramp

    def _losses(self, ws, target, prepared, noise) -> dict:
        # no autocast weight cache across a CUDA graph capture (PyTorch's advice for captured autocast)
        cache = {"cache_enabled": False} if self.cuda_graphs else {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16", **cache):
            img = self.G.synthesis(ws, noise_mode="const", noise=noise, path=self.path)
            perc = self.perceptual(img, prepared) if self.perceptual is not None else None
        img = img.float()
        out = {"mse": self.mse(img, target)}
        total = self.mse_weight * out["mse"]
        if perc is not None:
            out["perceptual"] = perc.float()
            total = total + self.perceptual_weight * out["perceptual"]
        if self.prior is not None:
            out["prior"] = self.prior.penalty(ws) / self.prior.total_dim
            if self.prior_weight > 0:
                total = total + self.prior_weight * out["prior"]
        if noise is not None:
            out["noise_reg"] = noise_regularization(noise)
            total = total + self.noise_reg_weight * out["noise_reg"]
        out["total"] = total
        return out

    # -- the loop ----------------------------------------------------------------------
    def project(self, target: torch.Tensor, *, callback=None, prepared=None) -> ProjectionResult:
        """Invert a batch of target images.

        Args:
            target: ``[B, 3, R, R]`` in [-1, 1] at the generator's resolution.
            callback: optional ``callback(step, losses_dict)`` after each step.
            prepared: the perceptual loss's ``prepare(target)`` when the caller has it already
                (the target's features, computed once per batch); ``None``: computed here.
        """
        G, dev = self.G, self.device
        R = G.resolution
        if target.ndim != 4 or target.shape[1:] != (3, R, R):
            raise InversionError(f"targets must be [B, 3, {R}, {R}] in [-1, 1] for this {R} px model, got "
                                 f"{tuple(target.shape)}; align/resize the faces to the model's resolution first")
        target = target.to(dev, torch.float32)
        B = target.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        # latent noise drawn on the device: no host round trip per step (deterministic per device)
        dgen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(self.seed)
        start = self.space.start(self._mean_ws(), seed=self.seed)
        param = start.unsqueeze(0).repeat(B, *([1] * start.ndim)).requires_grad_(True)
        noise = None
        if self.optimize_noise:
            noise = [torch.randn((B, 1, b.shape[-2], b.shape[-1]), generator=gen).to(dev).requires_grad_(True)
                     for b in G.synthesis.noise_buffers()]
            normalize_noise_(noise)
        w_std = self._w_std()
        if prepared is None and self.perceptual is not None:
            prepared = self.perceptual.prepare(target)
        stopper = _EarlyStop(self, B)
        t0 = time.perf_counter()
        graph = "off"
        if self.cuda_graphs or self._static_loop:
            history, step, graph = self._loop_static(param, noise, target, prepared, dgen, w_std, stopper,
                                                     callback, capture=self.cuda_graphs)
        else:
            history, step = self._loop(param, noise, target, prepared, dgen, w_std, stopper, callback)
        history = torch.stack(history).cpu().tolist()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            ws = self.space.to_ws(param.detach())
            final = self._losses(ws, target, prepared, None if noise is None else [n.detach() for n in noise])
        return ProjectionResult(ws=ws.detach(), param=param.detach(),
                                noise=None if noise is None else [n.detach() for n in noise],
                                losses={k: v.float().cpu().tolist() for k, v in final.items()},
                                history=history, steps=step + 1, seconds=seconds, graph=graph)

    def _strength(self, t: float, w_std: float) -> float:
        return w_std * self.noise_factor * max(0.0, 1.0 - t / self.noise_ramp) ** 2

    def _loop(self, param, noise, target, prepared, dgen, w_std, stopper, callback):
        """The eager loop (one Python step after another; the default)."""
        dev = self.device
        fast = self._fast_step
        params = [param] + (noise or [])
        if fast:
            opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999), fused=True)
        elif self._torch_adam:
            opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        else:
            opt = EagerAdam(params, lr=self.lr, betas=(0.9, 0.999))
        renorm = _normalize_noise_foreach_ if fast else normalize_noise_
        history = []
        step = 0
        for step in range(self.steps):
            t = step / self.steps
            lr = self.lr_at(t)
            for g in opt.param_groups:
                g["lr"] = lr
            strength = self._strength(t, w_std)
            p = param
            if strength > 0:
                p = param + torch.randn(param.shape, generator=dgen, device=dev) * strength
            if self._reduce_overhead:
                torch.compiler.cudagraph_mark_step_begin()
            losses = self._loss_fn(self.space.to_ws(p), target, prepared, noise)
            opt.zero_grad(set_to_none=True)
            losses["total"].sum().backward()
            opt.step()
            if noise is not None:
                renorm(noise)
            tot = losses["total"].detach().float()
            history.append(tot.mean())  # kept on the device: no sync per step
            if callback is not None:
                callback(step, {k: v.detach() for k, v in losses.items()})
            if stopper(step, t, tot):
                break
        return history, step

    def _loop_static(self, param, noise, target, prepared, dgen, w_std, stopper, callback, *, capture: bool):
        """The loop over one fixed step function whose inputs live in static buffers.

        The step's learning rate and latent-noise strength are device tensors (a schedule
        table copied once to the device), the latent noise is drawn into a static buffer, Adam
        is fused and capturable with a tensor learning rate. With ``capture`` (CUDA) the first
        ``GRAPH_WARMUP`` steps run eagerly on a side stream, the next is captured into one CUDA
        graph and every later step replays it. Without ``capture`` each step runs the same
        function eagerly (the CPU tests check this path against the default loop). A capture that
        fails (with :attr:`graph_fallback`) leaves the state as the last eager step left it (nothing
        captured has run), so the run goes on from there eagerly, and the result says so.
        Returns the eager loop's ``(history, last step)`` and :attr:`ProjectionResult.graph`.
        """
        dev = self.device
        n = self.steps
        sched_host = [(self.lr_at(s / n), self._strength(s / n, w_std)) for s in range(n)]
        sched = torch.tensor(sched_host, dtype=torch.float32).to(dev)  # [steps, (lr, strength)]
        cur = sched[0].clone()  # the current step's (lr, strength): what the graph reads
        lr_t, strength_t = cur[0:1], cur[1]
        eps = torch.zeros_like(param)
        opt = torch.optim.Adam([param] + (noise or []), lr=lr_t, betas=(0.9, 0.999), fused=True, capturable=True)

        def body():
            p = param + eps * strength_t
            out = self._loss_fn(self.space.to_ws(p), target, prepared, noise)
            out["total"].sum().backward()
            with warnings.catch_warnings():  # "capturable=True but not captured": the warm-up steps, on purpose
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                opt.step()
            if noise is not None:
                _normalize_noise_foreach_(noise)
            return out

        graph = static = None
        state = "off"  # how the steps ran, for ProjectionResult.graph
        side = torch.cuda.Stream(dev) if capture else None
        history = []
        step = 0
        for step in range(n):
            t = step / n
            cur.copy_(sched[step])
            if sched_host[step][1] > 0:
                eps.normal_(generator=dgen)  # the same draws as the eager loop's torch.randn
            if graph is None and capture and GRAPH_WARMUP <= step < n - 1:
                try:
                    graph, static = self._capture(body, opt)
                    state = "replayed"
                except RuntimeError as e:
                    if not self.graph_fallback:
                        raise
                    state = f"eager after a failed capture: {e}"
                    log.warning("%s; the remaining %d steps run eagerly", e, n - step)
                    torch.cuda.synchronize(dev)
                    capture = False
            if graph is not None:
                graph.replay()
                losses = static
            else:
                opt.zero_grad(set_to_none=True)
                if capture:  # warm-up off the default stream, as CUDA graph capture wants
                    side.wait_stream(torch.cuda.current_stream(dev))
                    with torch.cuda.stream(side):
                        losses = body()
                    torch.cuda.current_stream(dev).wait_stream(side)
                else:
                    losses = body()
            tot = losses["total"].detach().float()
            history.append(tot.mean())
            if callback is not None:
                callback(step, {k: v.detach() for k, v in losses.items()})
            if stopper(step, t, tot):
                break
        return history, step, state

    @staticmethod
    def _capture(body, opt):
        opt.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph's pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static = body()
        except Exception as e:  # noqa: BLE001 -- re-raised with the way out
            raise RuntimeError(f"CUDA graph capture of the projector step failed ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); run with cuda_graphs=False "
                               f"(compile=True keeps most of the speed)") from e
        return graph, static


class EagerAdam:
    """Adam as ``torch.optim.Adam`` computes it off CUDA (its single-tensor path), step for step.

    Written out because the first use of any ``torch.optim`` optimiser imports ``torch._dynamo``
    (its methods are wrapped by ``torch._disable_dynamo``): about 1.5 s on a 2-core CPU, half of a
    one-photo edit there. The arithmetic is torch's own, op for op, so the parameters come out
    bit-identical (``tests/test_projector_fast.py``); ``Projector`` uses it on the CPU and fused
    ``torch.optim.Adam`` on CUDA. Like torch's, it reads ``param_groups[0]["lr"]`` at every step.

    Args:
        params: the tensors to optimise (leaf tensors with ``requires_grad``).
        lr: learning rate.
        betas: coefficients of the running means of the gradient and its square.
        eps: added to the denominator.
    """

    def __init__(self, params, lr: float, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        params = list(params)
        self.param_groups = [{"params": params, "lr": float(lr)}]
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.steps = [0] * len(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], self.betas, self.eps
        for i, (p, (exp_avg, exp_avg_sq)) in enumerate(zip(group["params"], self.state)):
            if p.grad is None:  # torch's Adam skips a parameter without a gradient, its step count too
                continue
            grad = p.grad
            self.steps[i] += 1
            step = self.steps[i]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = lr / (1 - beta1 ** step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


class _EarlyStop:
    """The plateau test of ``patience``/``min_delta`` (host-side; syncs only when enabled)."""

    def __init__(self, proj, batch: int):
        self.proj = proj
        self.best = torch.full((batch,), float("inf"))
        self.since = 0

    def __call__(self, step: int, t: float, tot: torch.Tensor) -> bool:
        pr = self.proj
        if pr.patience is None or t < pr.noise_ramp:
            return False
        tot = tot.cpu()
        improved = tot < self.best * (1 - pr.min_delta)
        self.best = torch.minimum(self.best, tot)
        self.since = 0 if bool(improved.any()) else self.since + 1
        if self.since >= pr.patience:
            log.info("early stop at step %d of %d (loss plateau)", step + 1, pr.steps)
            return True
        return False


@torch.no_grad()
def _normalize_noise_foreach_(noises) -> None:
    """``normalize_noise_`` in fewer kernels: one ``var_mean`` per map, then foreach ops.

    Same result up to rounding (variance by Welford instead of E[x^2] - mean^2, multiply
    by ``rsqrt`` instead of dividing by ``sqrt``); used on CUDA and inside CUDA graphs.
    """
    if not noises:
        return
    vms = [torch.var_mean(n, dim=(1, 2, 3), correction=0, keepdim=True) for n in noises]
    var = [v for v, _ in vms]
    torch._foreach_clamp_min_(var, 1e-12)
    rstd = torch._foreach_rsqrt(var)
    torch._foreach_sub_(noises, [m for _, m in vms])
    torch._foreach_mul_(noises, rstd)


# -- the one-call API ----------------------------------------------------------------
def _to_batch(images, R: int, device):
    """Targets ``[B, 3, R, R]`` in [-1, 1] and the AlignedFace (or None) of each image."""
    from faceedit.core.images import uint8_to_tensor

    if isinstance(images, torch.Tensor):
        t = images if images.ndim == 4 else images.unsqueeze(0)
        faces = [None] * t.shape[0]
    else:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise InversionError("no images to invert")
        faces, arrays = [], []
        for it in items:
            crop = getattr(it, "crop", None)
            faces.append(it if crop is not None else None)
            a = np.asarray(crop if crop is not None else it)
            if a.ndim != 3 or a.shape[-1] != 3:
                raise InversionError(f"expected an AlignedFace or an aligned RGB crop [H, W, 3], got shape {a.shape}; "
                                     f"align photos with faceedit.align first")
            if a.dtype != np.uint8:
                a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8) if a.max() <= 1.0 else a.astype(np.uint8)
            arrays.append(uint8_to_tensor(a))
        sizes = {tuple(x.shape[-2:]) for x in arrays}
        arrays = [_resize(x, R) for x in arrays] if sizes != {(R, R)} else arrays
        t = torch.cat(arrays)
    if t.ndim != 4 or t.shape[1] != 3:
        raise InversionError(f"expected images [B, 3, H, W] in [-1, 1], got {tuple(t.shape)}")
    if t.shape[-1] != R or t.shape[-2] != R:
        t = _resize(t, R)
    return t.to(device, torch.float32), faces


def target_images(images, resolution: int) -> np.ndarray:
    """The targets an inversion of ``images`` fits, as ``[B, R, R, 3]`` uint8.

    Args:
        images: AlignedFaces or aligned RGB crops, as :func:`invert` takes them.
        resolution: the generator's output side ``R``.
    Returns:
        The crops resized to ``R`` exactly as the optimiser sees them.
    Raises:
        InversionError: an image is not an aligned RGB crop.
    """
    from faceedit.core.images import tensor_to_uint8

    return tensor_to_uint8(_to_batch(images, resolution, "cpu")[0])


def _resize(x: torch.Tensor, R: int) -> torch.Tensor:
    if x.shape[-2] != x.shape[-1]:
        raise InversionError(f"aligned crops must be square, got {tuple(x.shape[-2:])}; align the photo first")
    if x.shape[-1] == R:
        return x
    return torch.nn.functional.interpolate(x.float(), size=(R, R), mode="bilinear", antialias=True,
                                           align_corners=False)


def invert(images, model=None, space: str | None = None, steps: int | None = None, *,
           options: InversionOptions | None = None, G=None, D=None, device=None, prior=None, progress=None,
           callback: StepCallback | None = None, **settings) -> Latent:
    """Invert aligned face(s) into a latent space of a generator.

    Args:
        images: an ``AlignedFace``, an aligned RGB crop ``[H, W, 3]`` uint8 (square; resized
            to the model's resolution), a list of these, or a tensor ``[B, 3, H, W]`` in [-1, 1].
            Photos must be aligned with the model's recipe first (``faceedit.align``).
        model: registry name, checkpoint path or ``LoadedModel`` (default: the registry's
            default model for ``space``); ignored when ``G`` is given.
        space, steps: shortcuts for those fields of ``options``.
        options: the settings (:class:`inversion.options.InversionOptions`; ``space`` ``w``,
            ``w+``, ``wpp`` or ``wpp-z``; steps by default 50 on CPU, 300 on CUDA; prior
            ``gaussian`` with weight 0.01; perceptual ``auto``: LPIPS when its VGG trunk is
            cached, else the discriminator when the model ships one, else none).
        G, D: an already loaded generator / discriminator.
        device: where to run (default: CUDA when available).
        prior: a ``GaussianPrior`` object, or ``gaussian``/``none`` (the ``prior`` field).
        progress: optional callable ``progress(done_images)``.
        callback: optional :data:`inversion.options.StepCallback`, called after every step
            (steps counted over all batches).
        **settings: any other field of ``InversionOptions`` by name (``seed=``, ``lr=``,
            ``optimize_noise=``, ``batch_size=``, ...); a keyword wins over ``options``.
    Returns:
        A :class:`Latent` of batch ``B``; ``meta`` holds per-image ``losses``, ``steps``,
        ``seed``, ``space``, ``prior``, ``perceptual`` and, for AlignedFace inputs, ``faces``
        (index, alignment matrix, quad, recipe).

    Raises:
        InversionError: an unknown setting, a bad value, a space the model lacks, unaligned images.
    """
    prior, settings = _split_prior(prior, settings)
    opts = resolve_options(options, space=space, steps=steps, **settings)
    G, D, mdict, model_id, prior = setup(model, opts.space, G=G, D=D, device=device,
                                         prior=prior if prior is not None else opts.prior,
                                         perceptual=opts.perceptual.value)
    sha = mdict.sha256 if mdict is not None else None
    space = check_space(G, opts.space)
    opts = opts.replace(space=space, prior_weight=opts.prior_weight if prior is not None else 0.0)
    dev = G.synthesis.const.device
    proj = Projector(G, opts, D=D, prior=prior)
    seed, optimize_noise, batch_size = opts.seed, opts.optimize_noise, opts.batch_size
    target, faces = _to_batch(images, G.resolution, dev)
    results = []
    for i in range(0, target.shape[0], batch_size):
        results.append(proj.project(target[i:i + batch_size],
                                    callback=batch_callback(callback, i // batch_size, proj.steps, target.shape[0],
                                                            batch_size)))
        if progress is not None:
            progress(min(i + batch_size, target.shape[0]))
    ws = torch.cat([r.ws for r in results]).cpu()
    z = torch.cat([r.param for r in results]).cpu() if space == "wpp-z" else None
    noise = None
    if optimize_noise:
        noise = tuple(torch.cat([r.noise[k] for r in results]).cpu() for k in range(len(results[0].noise)))
    losses = {k: sum((r.losses[k] for r in results), []) for k in results[0].losses}
    meta = {"losses": losses, "steps": max(r.steps for r in results), "steps_requested": proj.steps,
            "seed": seed, "space": space, "method": "optim", "perceptual": proj.perceptual_name,
            "perceptual_requested": proj.perceptual_requested,
            "prior": "gaussian" if prior is not None else "none", "prior_weight": proj.prior_weight,
            "prior_kind": proj.prior.summary()["kind"] if proj.prior is not None else None,
            "optimize_noise": bool(optimize_noise), "seconds": sum(r.seconds for r in results),
            "cuda_graphs": graph_summary(results),
            "history": [float(np.mean([r.history[s] for r in results if s < len(r.history)]))
                        for s in range(max(len(r.history) for r in results))]}
    if sha is not None:
        meta["model_sha256"] = sha
    if any(f is not None for f in faces):
        meta["faces"] = [None if f is None else f.metadata() for f in faces]
    return Latent(space=space, codes=ws, model_id=model_id, z=z, noise=noise, meta=meta,
                  arch=getattr(G, "arch", "stylegan2"))


__all__ = ["Projector", "ProjectionResult", "EagerAdam", "invert", "default_steps", "default_path", "up_conv_macs",
           "POLY_CPU_MAX_UP_MACS", "DEFAULT_STEPS", "DEFAULT_PRIOR_WEIGHT", "InversionOptions", "graph_summary"]


def graph_summary(results: list) -> str:
    """How the batches' steps ran (:attr:`ProjectionResult.graph`), one line: ``off``, ``replayed``, or the failure."""
    states = list(dict.fromkeys(r.graph for r in results))
    return states[0] if len(states) == 1 else "; ".join(states)


def offset_callback(callback: StepCallback | None, start: int, total: int):
    """``Projector.project``'s ``callback(step, losses)`` reporting to ``callback`` as step
    ``start + step`` of ``total`` (None when ``callback`` is None)."""
    if callback is None:
        return None
    return lambda step, losses: callback(start + step, total, losses)


def batch_callback(callback: StepCallback | None, batch: int, steps: int, n_images: int, batch_size: int):
    """:func:`offset_callback` for batch number ``batch`` of a run of ``steps`` steps per batch."""
    return offset_callback(callback, batch * steps, -(-n_images // batch_size) * steps)


def _split_prior(prior, settings: dict) -> tuple:
    """``prior=`` of the inversion functions: an object stays the prior, a name goes to the settings."""
    if isinstance(prior, str):
        return None, {**settings, "prior": prior}
    return prior, settings


def setup(model, space: str, *, G=None, D=None, device=None, prior="gaussian", perceptual="auto"):
    """Load what an inversion needs: ``(G, D, model dict or None, model_id, prior or None)``.

    ``model``: registry name, checkpoint path or ``LoadedModel`` (default: the
    registry's default model for ``space``); ignored for loading when ``G`` is given.
    """
    from faceedit.checkpoints.registry import default_model

    mdict = model if isinstance(model, LoadedModel) else None
    if G is None:
        device = resolve_device(device)
        if mdict is None:
            name = model if model is not None else default_model("wpp" if str(space).startswith("wpp") else space)
            mdict = load_model_for_loss(name, device, perceptual)
        G = mdict.G.to(device)
        D = D if D is not None else mdict.D
        if D is not None:
            D.to(device)
    model_id = mdict.model_id if mdict is not None else getattr(G, "model_id", "unknown")
    prior = resolve_prior(prior, mdict, model, G)
    return G, D, mdict, model_id, prior


def resolve_prior(prior, mdict, model, G):
    """``'gaussian'`` / ``'none'`` / a prior object -> the prior object or ``None``."""
    if not isinstance(prior, str):
        return prior
    if prior not in ("gaussian", "none"):
        raise InversionError(f"prior must be 'gaussian' or 'none', got {prior!r}")
    if prior == "none":
        return None
    from .prior import load_prior

    if mdict is None and model is None:
        raise InversionError("prior='gaussian' with a bare G needs model= (its file holds or caches the "
                             "prior) or a GaussianPrior object; or pass prior='none'")
    return load_prior(mdict if mdict is not None else model, G)


def load_model_for_loss(name, device, perceptual: str) -> dict:
    """Load a model with its discriminator when the perceptual loss may use it.

    ``perceptual='auto'`` falls back to the model without a discriminator (the loss then
    picks another term); ``'disc'`` re-raises, since the user asked for that loss.
    """
    from faceedit.checkpoints.registry import load_model

    try:
        return load_model(name, device=device, with_discriminator=perceptual in ("disc", "auto"))
    except ValueError:
        if perceptual == "disc":
            raise
        return load_model(name, device=device)
