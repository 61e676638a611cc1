"""Applying edits: move a ``Latent`` along one or several attribute directions.

Convention (strength): with ``strength_unit='std'`` (the default) strength 1 moves the
code by one standard deviation of the latent distribution along the direction (the
``latent_std`` recorded in the direction file), so 1 means a comparable change on every
model and space. ``strength_unit='distance'`` is InterFaceGAN's absolute distance: the
code moves by ``strength`` along the unit normal, in the latent space's own units.

Convention (sign): positive strength means more of the attribute as its scorer defines
it (more smile, older, more of CelebA's ``Male``, glasses on, turned to the subject's
left); ``faceedit.editing.direction.SIGNS`` lists them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from faceedit.core.errors import EditingError

from .direction import EDITABLE, Direction, DirectionError, find_direction, list_directions, parse_key

log = logging.getLogger(__name__)

STRENGTH_UNITS = ("std", "distance")


def resolve_directions(model_id: str, attributes, directions=None, latent_space: str | None = None) -> list:
    """Turn ``{"smile": 2, "age|male": -1, Direction: 1}`` into ``[(Direction, strength)]``.

    Args:
        model_id: the latent's model id.
        attributes: mapping (or sequence of pairs) from a key (``smile``, ``age|male``)
            or a :class:`Direction` to a strength.
        directions: where to look keys up: ``None`` (shipped, then cached, directions of
            the model), a folder, a list of :class:`Direction`, or a dict key -> Direction.
        latent_space: the latent's space, to pick a direction that can edit it.
    """
    items = list(attributes.items()) if hasattr(attributes, "items") else list(attributes)
    if not items:
        raise DirectionError("no attribute given; pass e.g. {'smile': 2} (CLI: --attr smile)")
    if isinstance(directions, (str, Path)):
        candidates = [d for _, d in list_directions(folder=directions)]
    elif isinstance(directions, dict):
        candidates = None
        lookup = {parse_key(k): d for k, d in directions.items()}
    elif directions is not None:
        candidates = list(directions)
    else:
        candidates = None
    out = []
    for key, strength in items:
        try:
            s = float(strength)
        except (TypeError, ValueError) as e:
            raise DirectionError(f"strength for {key!r} must be a number, got {strength!r}") from e
        if not torch.isfinite(torch.tensor(s)):
            raise DirectionError(f"strength for {key!r} must be finite, got {strength!r}")
        if isinstance(key, Direction):
            d = key
        elif isinstance(directions, dict):
            k = parse_key(key)
            if k not in lookup:
                raise DirectionError(f"no direction {key!r} among the ones given "
                                     f"({', '.join(d.key for d in directions.values())})")
            d = lookup[k]
        else:
            d = find_direction(model_id, key, latent_space, candidates=candidates)
        out.append((d, s))
    return out


def check_compatible(direction: Direction, model_id: str, space: str, num_ws: int, w_dim: int) -> None:
    """Raise :class:`DirectionError` unless ``direction`` can edit such a latent."""
    if direction.model_id != model_id:
        raise DirectionError(
            f"direction {direction.key!r} was fitted for model {direction.model_id!r}, but the latent belongs to "
            f"{model_id!r}; directions do not transfer between generators. Fit one for this model with "
            f"`faceedit directions fit --model {model_id.split('@')[0]} --attr {direction.attribute}`")
    if space not in EDITABLE[direction.space]:
        raise DirectionError(
            f"direction {direction.key!r} lives in space {direction.space!r} and cannot edit a {space!r} latent "
            f"(it edits {', '.join(EDITABLE[direction.space])}); invert in a matching space or fit a direction "
            f"in {space!r}")
    if direction.num_ws != num_ws or direction.w_dim != w_dim:
        raise DirectionError(f"direction {direction.key!r} has shape [{direction.num_ws}, {direction.w_dim}], the "
                             f"latent [{num_ws}, {w_dim}]; it belongs to another architecture")


def displacement(direction: Direction, strength: float, strength_unit: str = "std", layers=None) -> torch.Tensor:
    """The ``[num_ws, w_dim]`` offset that ``strength`` of ``direction`` adds to a code."""
    if strength_unit not in STRENGTH_UNITS:
        raise EditingError(f"strength_unit must be one of {', '.join(STRENGTH_UNITS)}, got {strength_unit!r}")
    d = direction.with_layers(layers) if layers is not None else direction
    scale = float(strength) * (d.latent_std if strength_unit == "std" else 1.0)
    return d.full() * scale


def edit(latent, attributes, *, directions=None, strength_unit: str = "std", layers=None):
    """Move a latent along attribute directions.

    Args:
        latent: a :class:`faceedit.inversion.latent.Latent` (any batch size).
        attributes: ``{"smile": 2, "age|male": -1}`` (``age|male``: age with ``male`` held,
            a conditional direction) or ``{Direction: strength}``; strengths add up.
        directions: where names are looked up (see :func:`resolve_directions`); default
            the shipped and cached directions of the latent's model.
        strength_unit: ``std`` (1 = one standard deviation of the latent distribution along
            the direction) or ``distance`` (InterFaceGAN's distance to the hyperplane).
        layers: restrict every edit to these layer indices (e.g. ``range(0, 4)`` for the
            coarse layers), or a dict ``{key: layers}`` per attribute.

    Returns:
        A new ``Latent`` (same model; ``w`` stays ``w`` when every edit moves all layers
        with one code direction, otherwise it becomes ``w+``; ``z`` / ``wpp-z`` latents
        become ``w``/``w+`` / ``wpp`` since their inputs no longer match the codes). Its
        ``meta["edits"]`` lists what was applied.

    Raises:
        DirectionError: unknown attribute, a direction of another model or space, bad strength.
    """
    from faceedit.inversion.latent import Latent

    if not isinstance(latent, Latent):
        raise TypeError(f"edit() takes a faceedit Latent, got {type(latent).__name__}; "
                        f"load one with Latent.load(path)")
    pairs = resolve_directions(latent.model_id, attributes, directions, latent.space)
    B, num_ws, w_dim = latent.codes.shape
    total = torch.zeros(num_ws, w_dim, dtype=torch.float64)
    record, all_layers_uniform = [], True
    for d, s in pairs:
        check_compatible(d, latent.model_id, latent.space, num_ws, w_dim)
        d.check_arch(latent.arch)
        lay = layers.get(d.key, layers.get(d.attribute)) if isinstance(layers, dict) else layers
        delta = displacement(d, s, strength_unit, lay)
        total += delta.double()
        moved = d.with_layers(lay) if lay is not None else d
        if s != 0 and (moved.per_layer or len(moved.applied_layers) != num_ws):
            all_layers_uniform = False
        record.append({"attribute": d.key, "strength": s, "unit": strength_unit, "space": d.space,
                       "layers": list(moved.applied_layers), "latent_std": d.latent_std,
                       "distance": abs(s) * (d.latent_std if strength_unit == "std" else 1.0),
                       "file": d.filename()})
        log.info("edit %s by %+g %s (%s)", d.key, s, strength_unit, d.sign_meaning())
    codes = latent.codes + total.to(latent.codes.dtype).to(latent.codes.device)
    space = latent.space
    if space in ("z", "w"):
        space = "w" if all_layers_uniform else "w+"
    elif space == "wpp-z":
        space = "wpp"
    edits = list(latent.meta.get("edits", [])) + record
    return Latent(space=space, codes=codes, model_id=latent.model_id,
                  z=None if latent.space in ("z", "wpp-z") else latent.z,
                  noise=latent.noise, tuning=latent.tuning, meta={**latent.meta, "edits": edits}, arch=latent.arch)


def sweep(latent, key, strengths, **kw) -> list:
    """``[edit(latent, {key: s}) for s in strengths]`` (for strips and GIFs)."""
    return [edit(latent, {key: s}, **kw) for s in strengths]
