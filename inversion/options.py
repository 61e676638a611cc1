"""The settings of one inversion as one typed, frozen value: :class:`InversionOptions`.

``Projector(G, options)`` runs with them; ``invert``, ``hybrid_invert``, ``pti_invert`` and
``invert_with`` take ``options=`` and/or the same settings by keyword (a keyword wins over
the field of ``options``). Fields left at ``None`` take the method's default: the
optimiser's (``lr`` 0.1, ``noise_factor`` 0.05, ``prior_weight`` 0.01, steps 50 on the CPU
and 300 on CUDA) or the hybrid method's (``inversion.hybrid``).
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass

from faceedit.core.errors import InversionError

#: Every inversion method (``inversion.methods.invert_with``).
METHODS = ("encoder", "optim", "hybrid", "pti")

#: ``callback(step, total, losses)``, the ``callback=`` of the inversion functions: called after
#: every optimisation step of a run (the optimiser's, then for PTI each face's tuning steps), with
#: ``step`` counting from 0 over the whole run, ``total`` the run's planned steps (early stopping
#: may end it sooner) and ``losses`` the step's loss tensors by name. A function, not a setting:
#: it goes next to ``options=``, never into :class:`InversionOptions`.
StepCallback = Callable[[int, int, dict], None]


class Perceptual(str, enum.Enum):
    """The perceptual loss term by name (a loss object goes to ``Projector(perceptual_loss=)``).

    ``AUTO``: LPIPS when its VGG trunk is cached, else the discriminator's features when the
    model ships one, else none; ``LPIPS``; ``DISC``: the discriminator's features; ``NONE``.
    """

    AUTO = "auto"
    LPIPS = "lpips"
    DISC = "disc"
    NONE = "none"


class Compile(str, enum.Enum):
    """``torch.compile`` of the projector's synthesis + loss function.

    ``OFF``; ``DEFAULT`` (CUDA speed; the first steps compile); ``REDUCE_OVERHEAD`` (CUDA
    only) also replays it, forward and backward, from CUDA graphs (the loss tensors handed to
    a callback are then overwritten by the next step).
    """

    OFF = "off"
    DEFAULT = "default"
    REDUCE_OVERHEAD = "reduce-overhead"


def _enum(cls, value, field: str):
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise InversionError(f"{field} must be one of {', '.join(m.value for m in cls)}, got {value!r}") from None


@dataclass(frozen=True)
class InversionOptions:
    """Optimisation settings of one inversion (see ``inversion.projector`` for the loop).

    Attributes:
        space: ``w``, ``w+``, ``wpp`` or ``wpp-z`` (checked against the generator when used).
        method: one of :data:`METHODS`, or None (``invert_with``: ``hybrid`` when the model
            ships an encoder for the space, else ``optim``).
        steps: optimisation steps (None: the method's default for the device).
        lr: peak Adam learning rate (None: the method's; the optimiser's is NVIDIA's 0.1).
        lr_rampup, lr_rampdown: fractions of the run for the learning-rate ramps.
        noise_factor: latent-noise start in ``w_std`` units (None: the method's; 0.05).
        noise_ramp: fraction of the run over which the latent noise decays.
        optimize_noise: also optimise the per-layer noise maps.
        noise_reg_weight: weight of the noise-map regulariser (NVIDIA: 1e5).
        mse_weight, perceptual_weight: weights of the image losses.
        perceptual: a :class:`Perceptual` (or its name).
        prior: ``gaussian`` (load the model's Gaussianized prior) or ``none``.
        prior_weight: weight of the normalised prior penalty (None: the method's, 0.01 with a
            prior; 0 disables it).
        patience, min_delta: early stop (``patience`` None: off).
        seed: seeds the latent noise, the noise maps and the ``wpp-z`` start.
        path: synthesis path, one of ``networks.SYNTHESIS_PATHS`` (``shared``: faster for
            batches; ``reference``: NVIDIA's grouped convs; ``poly``: the polyphase path), or
            None: the projector's choice for its device (``inversion.projector.default_path``).
        amp: None (float32) or ``bf16``: synthesis and the perceptual loss under bf16
            autocast on CUDA (losses and the optimiser stay float32).
        compile: a :class:`Compile` (or its name; ``True``/``False`` mean ``default``/``off``).
        cuda_graphs: (CUDA only) capture the whole optimisation step in one CUDA graph.
        batch_size: images per optimisation batch.

    Raises:
        InversionError: a value out of its range or not one of its names (on construction).
    """

    space: str = "w+"
    method: str | None = None
    steps: int | None = None
    lr: float | None = None
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise_factor: float | None = None
    noise_ramp: float = 0.75
    optimize_noise: bool = False
    noise_reg_weight: float = 1e5
    mse_weight: float = 1.0
    perceptual: Perceptual = Perceptual.AUTO
    perceptual_weight: float = 1.0
    prior: str = "gaussian"
    prior_weight: float | None = None
    patience: int | None = None
    min_delta: float = 1e-3
    seed: int = 0
    path: str | None = None
    amp: str | None = None
    compile: Compile = Compile.OFF
    cuda_graphs: bool = False
    batch_size: int = 32

    def __post_init__(self):
        put = object.__setattr__
        if not isinstance(self.space, str):
            raise InversionError(f"space must be a name (w, w+, wpp, wpp-z), got {self.space!r}")
        put(self, "space", self.space.lower())
        if self.method is not None and self.method not in METHODS:
            raise InversionError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.steps is not None:
            if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
                raise InversionError(f"steps must be an integer >= 1, got {self.steps!r}")
            put(self, "steps", int(self.steps))
        if self.prior_weight is not None and not self.prior_weight >= 0:
            raise InversionError(f"prior weight must be >= 0, got {self.prior_weight}")
        if self.prior not in ("gaussian", "none"):
            raise InversionError(f"prior must be 'gaussian' or 'none', got {self.prior!r}")
        put(self, "perceptual", _enum(Perceptual, "none" if self.perceptual is None else self.perceptual,
                                      "perceptual"))
        compile_ = self.compile
        if isinstance(compile_, bool) or compile_ is None:
            compile_ = Compile.DEFAULT if compile_ else Compile.OFF
        put(self, "compile", _enum(Compile, compile_, "compile"))
        from faceedit.networks import SYNTHESIS_PATHS  # here, so the names above load without torch (the CLI)

        if self.path is not None and self.path not in SYNTHESIS_PATHS:
            raise InversionError(f"path must be one of {', '.join(SYNTHESIS_PATHS)}, got {self.path!r}")
        if self.amp == "none":
            put(self, "amp", None)
        if self.amp not in (None, "bf16"):
            raise InversionError(f"amp must be None or 'bf16', got {self.amp!r}")
        if self.cuda_graphs and self.compile is Compile.REDUCE_OVERHEAD:
            raise InversionError("cuda_graphs=True already captures the whole step in one CUDA graph; combine it "
                                 "with compile='default', not compile='reduce-overhead'")
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise InversionError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            raise InversionError(f"patience must be None or an integer >= 1, got {self.patience!r}")

    def replace(self, **changes) -> InversionOptions:
        """A copy with ``changes`` (field names) applied; a ``None`` value leaves the field as it is.

        Raises:
            InversionError: a name that is not a field (the message lists the fields).
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InversionError(f"unknown inversion setting(s) {', '.join(unknown)}; the settings are "
                                 f"{', '.join(sorted(names))}")
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self


def resolve_options(options: InversionOptions | None, **settings) -> InversionOptions:
    """``options`` (default :class:`InversionOptions`) with the keyword ``settings`` applied.

    Raises:
        InversionError: ``options`` of another type, an unknown setting or a bad value.
    """
    if options is None:
        options = InversionOptions()
    elif not isinstance(options, InversionOptions):
        raise InversionError(f"options must be an InversionOptions, got {type(options).__name__}")
    return options.replace(**settings)


__all__ = ["InversionOptions", "Perceptual", "Compile", "METHODS", "StepCallback", "resolve_options"]
