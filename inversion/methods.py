"""Every inversion method behind one call: ``invert_with(method, images, model, space, steps, ...)``.

``encoder``, ``optim`` and ``hybrid`` find a code (``inversion.hybrid.invert_code``);
``pti`` finds one the same way and then tunes the generator around it
(``inversion.pti.pti_invert``). This module sits above both, so that PTI can take its
pivot from the code methods without the code methods importing PTI back.
"""
from __future__ import annotations

from faceedit.core.errors import InversionError

from .hybrid import default_method, invert_code
from .latent import Latent
from .options import METHODS


def invert_with(method: str | None, images, model=None, space: str | None = None, steps: int | None = None,
                **kwargs) -> Latent:
    """Invert with one of :data:`METHODS` (``None``: ``options.method``, else :func:`default_method`:
    ``hybrid`` when the model ships an encoder for the space, else ``optim``).

    ``kwargs`` are those of :func:`faceedit.inversion.invert` (``options``, ``G``, ``D``,
    ``prior``, and any ``InversionOptions`` field by name: ``prior_weight``, ``perceptual``,
    ``seed``, ``optimize_noise``, ``batch_size``, ...);
    ``steps`` means the optimisation steps for ``optim``/``hybrid`` and the tuning steps for
    ``pti``. The returned latent's ``meta`` carries the same keys whatever the method.
    """
    options = kwargs.get("options")
    if method is None and options is not None:
        method = options.method
    if method is None:
        method = default_method(model, space or (options.space if options is not None else "w+"))
    if method not in METHODS:
        raise InversionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "pti":
        from .pti import pti_invert

        return pti_invert(images, model, space, steps, **kwargs)
    return invert_code(method, images, model, space, steps, **kwargs)


__all__ = ["invert_with", "default_method", "METHODS"]
