"""NVIDIA's StyleGAN (v1) TensorFlow generator (a ``TFNetwork`` record) -> :class:`~faceedit.networks.Generator1`.

The record comes from :mod:`faceedit.checkpoints.tf_pickle` (never executed). The facts
(names, layouts, run-time scales) are those of NVIDIA's ``training/networks_stylegan.py``
(``G_style`` / ``G_mapping`` / ``G_synthesis``)::

    dlatent_avg [w_dim]                            -> mapping.w_avg
    G_mapping/Dense{i}/weight [in, out]            -> mapping.net.{i}.weight [out, in]
    G_mapping/Dense{i}/bias                        -> mapping.net.{i}.bias / sqrt 2 (*)
    G_synthesis/4x4/Const/const [1, C, 4, 4]       -> synthesis.const
    G_synthesis/noise{i} [1, 1, r, r]              -> synthesis.layers.{i}.noise_const
    G_synthesis/{scope_i}/weight [3, 3, in, out]   -> synthesis.layers.{i}.weight [out, in, 3, 3]
    G_synthesis/{scope_i}/Noise/weight [C]         -> synthesis.layers.{i}.noise_strength
    G_synthesis/{scope_i}/bias [C]                 -> synthesis.layers.{i}.bias
    G_synthesis/{scope_i}/StyleMod/weight [w, 2C]  -> synthesis.layers.{i}.affine.weight [2C, w]
    G_synthesis/{scope_i}/StyleMod/bias [2C]       -> synthesis.layers.{i}.affine.bias
    G_synthesis/ToRGB_lod0/weight [1, 1, C, 3]     -> synthesis.torgb.weight [3, C, 1, 1]
    G_synthesis/ToRGB_lod0/bias                    -> synthesis.torgb.bias

with ``scope_0 = 4x4/Const``, ``scope_1 = 4x4/Conv``, and for the block at ``r`` px
``scope_{2k+2} = {r}x{r}/Conv0_up``, ``scope_{2k+3} = {r}x{r}/Conv1`` (``r = 2 ** (k + 3)``).
The TF weights are stored unscaled (``use_wscale``): the run-time scale ``gain * lrmul /
sqrt(fan_in)`` (gain sqrt 2 for convs and the mapping, 1 for StyleMod and toRGB; lrmul 0.01
for the mapping) is the one :mod:`faceedit.networks.stylegan1` applies, so weights copy as
they are. ``Conv0_up`` from 128 px on is NVIDIA's fused transposed conv (``fused_scale``);
its weight has the same layout and the module runs the same op.

(*) faceedit's MLP applies leaky ReLU's gain sqrt 2 after the activation, v1 folds it into
the weight before the bias: ``lrelu(sqrt2 a + b) = sqrt2 lrelu(a + b / sqrt2)``.

``ToRGB_lod{k}`` for ``k > 0`` (progressive growing's lower-resolution outputs) and the
level of detail ``lod`` (it must be 0) are read but unused; any other variable is refused
by name, as are keyword arguments that change the network (labels, pixel norm, no styles...).
"""
from __future__ import annotations

import logging
import math
import re

import numpy as np
import torch

from .budget import Budget
from .native import CheckpointError, as_float, as_int, check_architecture, check_holds, new_network, plan_network

log = logging.getLogger(__name__)

# Keyword arguments of G_style / G_mapping / G_synthesis that change nothing at lod 0 with
# the weights given (run-time defaults, training switches, graph construction).
_IGNORED = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
            "dlatent_avg_beta", "style_mixing_prob", "is_training", "is_validation", "is_template_graph",
            "force_clean_graph", "components", "randomize_noise", "structure", "dtype", "dlatent_broadcast"}
# Keyword arguments faceedit reproduces at one value only (NVIDIA's default): name -> that value.
_FIXED = {"label_size": 0, "mapping_nonlinearity": "lrelu", "normalize_latents": True, "use_wscale": True,
          "use_styles": True, "const_input_layer": True, "use_noise": True, "nonlinearity": "lrelu",
          "use_pixel_norm": False, "use_instance_norm": True, "fmap_decay": 1.0, "blur_filter": [1, 2, 1]}
#: faceedit's setting -> the TF keyword argument it comes from (for messages).
_TF_NAMES = {"z_dim": "latent_size", "w_dim": "dlatent_size", "mapping_lr_mul": "mapping_lrmul",
             "channel_base": "fmap_base x 2", "channel_max": "fmap_max", "img_channels": "num_channels"}
_SIZES = {"latent_size", "dlatent_size", "mapping_layers", "mapping_fmaps", "mapping_lrmul", "num_channels",
          "resolution", "fmap_base", "fmap_max", "fused_scale"}


def _kwargs(net) -> dict:
    """The static kwargs of the network and its components (``G_style`` forwards its own to both)."""
    kw = dict(net.static_kwargs)
    for comp in getattr(net, "components", {}).values():
        for k, v in comp.static_kwargs.items():
            kw.setdefault(k, v)
    return kw


def generator1_config_from_tf(net, where: str = "TF generator") -> dict:
    """``Generator1`` keyword arguments from a v1 ``G_style`` record's static kwargs.

    Raises:
        CheckpointError: not a ``G_style`` network, an unknown keyword argument, or one set
            to a value faceedit does not reproduce (named).
    """
    if net.build_func_name != "G_style":
        hint = (" (a StyleGAN2 network: read it with the StyleGAN2 TF reader)" if net.build_func_name == "G_main"
                else "")
        raise CheckpointError(f"{where}: build function {net.build_func_name!r} is not StyleGAN v1's G_style{hint}")
    kw = _kwargs(net)
    unknown = sorted(set(kw) - _IGNORED - set(_FIXED) - _SIZES)
    if unknown:
        raise CheckpointError(f"{where}: unknown StyleGAN keyword argument {unknown[0]!r}={kw[unknown[0]]!r}; "
                              f"faceedit cannot tell what it changes")
    for k, want in _FIXED.items():
        v = kw.get(k, want)
        same = list(v) == want if isinstance(want, list) and isinstance(v, (list, tuple)) else v == want
        if not same:
            raise CheckpointError(f"{where}: {k}={v!r} is not supported (faceedit's StyleGAN v1 is the paper's "
                                  f"network, {k}={want!r})")
    w_dim = as_int(kw.get("dlatent_size", 512), "dlatent_size", where)
    hidden = as_int(kw.get("mapping_fmaps", 512), "mapping_fmaps", where)  # NVIDIA's default, whatever dlatent_size is
    if hidden != w_dim:
        raise CheckpointError(f"{where}: mapping_fmaps={hidden} differs from dlatent_size={w_dim}; "
                              f"faceedit's mapping keeps one width")
    fused = kw.get("fused_scale", "auto")
    if not (fused == "auto" or isinstance(fused, bool)):
        raise CheckpointError(f"{where}: fused_scale={fused!r} is not True, False or 'auto'")
    cfg = dict(arch="stylegan1", z_dim=as_int(kw.get("latent_size", 512), "latent_size", where), w_dim=w_dim,
               resolution=as_int(kw.get("resolution", 1024), "resolution", where),
               mapping_layers=as_int(kw.get("mapping_layers", 8), "mapping_layers", where),
               mapping_lr_mul=as_float(kw.get("mapping_lrmul", 0.01), "mapping_lrmul", where),
               channel_base=2 * as_int(kw.get("fmap_base", 8192), "fmap_base", where),
               channel_max=as_int(kw.get("fmap_max", 512), "fmap_max", where),
               img_channels=as_int(kw.get("num_channels", 3), "num_channels", where), fused_scale=fused)
    check_architecture("generator", cfg, where, _TF_NAMES)
    return cfg


def _scope(i: int) -> str:
    if i < 2:
        return ("4x4/Const", "4x4/Conv")[i]
    r = 2 ** ((i - 2) // 2 + 3)
    return f"{r}x{r}/{'Conv0_up' if i % 2 == 0 else 'Conv1'}"


def _tf_to_native_names(num_ws: int, mapping_layers: int) -> dict:
    """``{tf name: (native name, layout)}``, layout one of ``copy``, ``dense``, ``conv``, ``bias_lrelu``."""
    names = {"dlatent_avg": ("mapping.w_avg", "copy"),
             "G_synthesis/4x4/Const/const": ("synthesis.const", "copy"),
             "G_synthesis/ToRGB_lod0/weight": ("synthesis.torgb.weight", "conv"),
             "G_synthesis/ToRGB_lod0/bias": ("synthesis.torgb.bias", "copy")}
    for i in range(mapping_layers):
        names[f"G_mapping/Dense{i}/weight"] = (f"mapping.net.{i}.weight", "dense")
        names[f"G_mapping/Dense{i}/bias"] = (f"mapping.net.{i}.bias", "bias_lrelu")
    for i in range(num_ws):
        s, t = f"G_synthesis/{_scope(i)}", f"synthesis.layers.{i}"
        names[f"G_synthesis/noise{i}"] = (f"{t}.noise_const", "copy")
        if i > 0:
            names[f"{s}/weight"] = (f"{t}.weight", "conv")
        names[f"{s}/Noise/weight"] = (f"{t}.noise_strength", "copy")
        names[f"{s}/bias"] = (f"{t}.bias", "copy")
        names[f"{s}/StyleMod/weight"] = (f"{t}.affine.weight", "dense")
        names[f"{s}/StyleMod/bias"] = (f"{t}.affine.bias", "copy")
    return names


def _convert(a: np.ndarray, layout: str) -> torch.Tensor:
    a = np.asarray(a, dtype=np.float32)
    if layout == "dense":
        a = a.T if a.ndim == 2 else a
    elif layout == "conv":
        a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a
    elif layout == "bias_lrelu":
        a = a / math.sqrt(2)
    return torch.from_numpy(np.ascontiguousarray(a))


def stylegan1_from_tf(net, where: str = "TF generator", *, max_bytes: int | Budget | None = None) -> tuple:
    """Build a :class:`~faceedit.networks.Generator1` holding a v1 TF generator's weights.

    Args:
        net: a ``TFNetwork`` record of NVIDIA's ``G_style`` (``G`` or ``Gs`` of a StyleGAN
            pickle), read by :mod:`faceedit.checkpoints.tf_pickle`.
        where: how errors name the source.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`): the generator is
            sized from the keyword arguments, charged to it and counted against the variables
            before it is built.

    Returns:
        ``(G, info)``: ``G`` in eval mode; ``info`` holds ``arch``, the ``config``, the TF
        run-time truncation defaults (``tf_truncation_psi`` / ``tf_truncation_cutoff``:
        NVIDIA's scripts render with them) and ``unused`` (variables read but not needed).

    Raises:
        CheckpointError: a keyword argument or variable it cannot map (named), a wrong shape,
            a missing variable, NaN/Inf weights, or a level of detail other than 0.
        CheckpointSizeError: over the size budget.
    """
    cfg = generator1_config_from_tf(net, where)
    needed = plan_network("generator", cfg, where, Budget.of(max_bytes, where), _TF_NAMES)
    check_holds(needed, sum(int(np.size(a)) for a in net.variables.values()), where)
    G = new_network("generator", cfg, where)
    table = _tf_to_native_names(G.num_ws, cfg["mapping_layers"])
    own = G.state_dict()
    state, unused = {}, []
    for name, a in sorted(net.variables.items()):  # the record's flattened names, components' included
        if name in ("lod", "G_synthesis/lod"):
            if np.any(np.asarray(a) != 0):
                raise CheckpointError(f"{where}: {name}={np.asarray(a).tolist()}: the network is mid progressive "
                                      f"growing (level of detail 0 is the full resolution); use a finished model")
            unused.append(name)
            continue
        m = re.fullmatch(r"G_synthesis/ToRGB_lod(\d+)/(weight|bias)", name)
        if m and 0 < int(m.group(1)) <= G.synthesis.log_res - 2:
            unused.append(name)
            continue
        if name not in table:
            raise CheckpointError(f"{where}: TF variable {name} (shape {list(np.shape(a))}) is not part of a "
                                  f"{cfg['resolution']} px StyleGAN v1 generator faceedit can map")
        native, layout = table[name]
        t = _convert(a, layout)
        if tuple(t.shape) != tuple(own[native].shape):
            raise CheckpointError(f"{where}: TF variable {name} has shape {list(np.shape(a))}; a generator with "
                                  f"the file's keyword arguments needs {list(own[native].shape)} ({layout} layout)")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: TF variable {name} holds NaN or infinite values")
        state[native] = t
    missing = sorted(tf for tf, (native, _) in table.items() if native not in state)
    if missing:
        raise CheckpointError(f"{where}: TF variable{'s' if len(missing) > 1 else ''} {', '.join(missing[:3])}"
                              f"{'...' if len(missing) > 3 else ''} missing; the file is damaged or not a "
                              f"StyleGAN v1 generator")
    G.load_state_dict(state, strict=True)
    G.eval().requires_grad_(False)
    kw = _kwargs(net)
    info = {"arch": "stylegan1", "config": cfg, "build_func_name": net.build_func_name,
            "tf_truncation_psi": kw.get("truncation_psi", 0.7), "tf_truncation_cutoff": kw.get("truncation_cutoff", 8),
            "unused": unused}
    log.info("StyleGAN v1 TF generator: %d px, %d variables mapped, %d unused", cfg["resolution"], len(state),
             len(unused))
    return G, info
