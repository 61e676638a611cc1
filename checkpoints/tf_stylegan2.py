"""NVIDIA's StyleGAN2 TensorFlow networks (:class:`~.tf_pickle.TFNetwork`) -> faceedit's networks.

The TF variables are renamed to the names of NVIDIA's PyTorch port and laid out as it lays
them out, then :func:`.nvidia.nvidia_to_native_state` (generator) or
:func:`.nvidia.nvidia_d_to_native_state` (discriminator) finishes the job, so there is one
table from NVIDIA's names to ours. The facts (names and layouts) are those of NVIDIA's
``legacy.py`` in stylegan2-ada-pytorch::

    dlatent_avg                               -> mapping.w_avg
    G_mapping/Dense{i}/{weight [in, out], bias}       -> mapping.fc{i}.*  (weight transposed)
    G_synthesis/4x4/Const/const  [1, C, 4, 4]         -> synthesis.b4.const [C, 4, 4]
    G_synthesis/{r}x{r}/{Conv | Conv0_up | Conv1 | ToRGB}/
        weight [kh, kw, in, out]   -> [out, in, kh, kw]   (Conv0_up also flipped in kh, kw:
                                                           TF runs it as a transposed conv)
        mod_weight [w_dim, in]     -> affine.weight [in, w_dim]
        mod_bias                   -> affine.bias + 1      (TF adds the 1 at run time)
        bias, noise_strength       -> unchanged
    G_synthesis/noise{l} [1, 1, R, R] -> noise_const of styled conv l (4x4 conv is l = 0)

    D: {r}x{r}/FromRGB, Conv0, Conv1_down, Skip (no bias), 4x4/Conv, 4x4/Dense0, Output
       -> b{r}.fromrgb, conv0, conv1, skip, b4.conv, b4.fc, b4.out (convs [kh, kw, in, out]
          -> [out, in, kh, kw], dense [in, out] -> [out, in])

TF keyword arguments are those of ``G_main`` / ``G_synthesis_stylegan2`` / ``D_stylegan2``;
``fmap_base`` counts channels at half the resolution of PyTorch's ``channel_base``, so
``channel_base = 2 * fmap_base``. Anything this table does not cover is refused by name.
"""
from __future__ import annotations

import logging
import math
import re

import numpy as np
import torch

from faceedit.networks import Discriminator

from .budget import Budget
from .native import CheckpointError, as_float, as_int, build_network, check_architecture
from .nvidia import nvidia_d_to_native_state, nvidia_to_native_state
from .tf_pickle import TFNetwork

log = logging.getLogger(__name__)

# G_main / G_mapping / G_synthesis_stylegan2 keyword arguments: TF name -> (faceedit key or None, allowed).
_G_IGNORED = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
              "style_mixing_prob", "dlatent_avg_beta", "w_avg_beta", "randomize_noise", "structure",
              "is_training", "is_validation", "return_dlatents", "num_fp16_res", "dtype", "fused_modconv",
              "is_template_graph", "components", "mapping_func", "synthesis_func"}
_D_IGNORED = {"structure", "num_fp16_res", "dtype", "freeze_layers", "is_template_graph", "components"}


def _need(kw: dict, key: str, ok, where: str, default=None):
    v = kw.get(key, default)
    if v is None:
        v = default
    if isinstance(ok, (list, tuple)) and not isinstance(ok, str):
        good = list(v) == list(ok) if isinstance(v, (list, tuple)) else v in ok
    else:
        good = v == ok
    if not good:
        raise CheckpointError(f"{where}: {key}={v!r} is not supported (faceedit reproduces {key}={ok!r})")


#: faceedit's setting -> the TF keyword argument it comes from (for messages).
_TF_NAMES = {"z_dim": "latent_size", "w_dim": "dlatent_size", "mapping_lr_mul": "mapping_lrmul",
             "channel_base": "fmap_base x 2", "channel_max": "fmap_max", "img_channels": "num_channels",
             "mbstd_group": "mbstd_group_size"}


def _channels(kw: dict, where: str) -> tuple:
    base = as_int(kw.get("fmap_base", 16 << 10), "fmap_base", where) * 2
    cmax = as_int(kw.get("fmap_max", 512), "fmap_max", where)
    if as_float(kw.get("fmap_decay", 1.0), "fmap_decay", where) != 1.0:
        raise CheckpointError(f"{where}: fmap_decay={kw['fmap_decay']} is not supported (faceedit's channel rule "
                              f"is fmap_base / res, i.e. fmap_decay 1)")
    return base, cmax


def generator_config_from_tf(net: TFNetwork, where: str) -> dict:
    """faceedit ``Generator`` kwargs from a StyleGAN2 TF generator's static kwargs (refuses what differs)."""
    kw = dict(net.static_kwargs)
    for comp in net.components.values():  # G_main forwards its kwargs to both components
        for k, v in comp.static_kwargs.items():
            kw.setdefault(k, v)
    known = {"latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
             "mapping_fmaps", "mapping_lrmul", "mapping_nonlinearity", "normalize_latents", "fmap_base", "fmap_max",
             "fmap_decay", "fmap_min", "architecture", "resample_kernel", "nonlinearity", "use_noise", "conv_clamp",
             "label_fmaps", "fused_modconv", "kernel"} | _G_IGNORED
    unknown = sorted(set(kw) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown StyleGAN2 TF keyword argument {unknown[0]!r}={kw[unknown[0]]!r}; "
                              f"faceedit cannot tell what it changes")
    if kw.get("label_size", 0):
        raise CheckpointError(f"{where}: class-conditional generator (label_size={kw['label_size']}); faceedit "
                              f"supports unconditional StyleGAN2 generators only")
    _need(kw, "architecture", "skip", where, "skip")
    _need(kw, "resample_kernel", [1, 3, 3, 1], where, [1, 3, 3, 1])
    _need(kw, "nonlinearity", "lrelu", where, "lrelu")
    _need(kw, "mapping_nonlinearity", "lrelu", where, "lrelu")
    _need(kw, "normalize_latents", True, where, True)
    _need(kw, "use_noise", True, where, True)
    w_dim = as_int(kw.get("dlatent_size", 512), "dlatent_size", where)
    if kw.get("mapping_fmaps") not in (None, w_dim):
        raise CheckpointError(f"{where}: mapping_fmaps={kw['mapping_fmaps']!r:.40} != dlatent_size is not supported")
    base, cmax = _channels(kw, where)
    cfg = dict(z_dim=as_int(kw.get("latent_size", 512), "latent_size", where), w_dim=w_dim,
               resolution=as_int(kw.get("resolution", 1024), "resolution", where),
               mapping_kind="mlp", mapping_layers=as_int(kw.get("mapping_layers", 8), "mapping_layers", where),
               mapping_lr_mul=as_float(kw.get("mapping_lrmul", 0.01), "mapping_lrmul", where), channel_base=base,
               channel_max=cmax, img_channels=as_int(kw.get("num_channels", 3), "num_channels", where))
    if kw.get("conv_clamp") is not None:
        cfg["conv_clamp"] = as_float(kw["conv_clamp"], "conv_clamp", where)
    check_architecture("generator", cfg, where, _TF_NAMES)
    fmin = as_int(kw.get("fmap_min", 1), "fmap_min", where)
    if fmin > min(base // cfg["resolution"], cmax):
        raise CheckpointError(f"{where}: fmap_min={fmin} raises the channel count at {cfg['resolution']} px; "
                              f"faceedit's channel rule has no floor")
    return cfg


def _conv(a: np.ndarray, flip: bool = False) -> torch.Tensor:
    if a.ndim != 4:
        raise CheckpointError(f"a TF conv weight of shape {a.shape}; expected [kh, kw, in, out]")
    if flip:
        a = a[::-1, ::-1]
    return torch.from_numpy(np.array(a.transpose(3, 2, 0, 1), order="C"))


def _dense(a: np.ndarray) -> torch.Tensor:
    if a.ndim != 2:
        raise CheckpointError(f"a TF dense weight of shape {a.shape}; expected [in, out]")
    return torch.from_numpy(np.array(a.T, order="C"))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, order="C"))  # keeps 0-d arrays 0-d


def tf_generator_to_nvidia_state(variables: dict, resolution: int, where: str) -> dict:
    """StyleGAN2 TF generator variables (flattened, :class:`TFNetwork` names) -> NVIDIA PyTorch names.

    Raises:
        CheckpointError: a variable the table does not cover, named.
    """
    out = {}
    log_res = int(math.log2(resolution))
    for name, a in variables.items():
        if name == "dlatent_avg":
            out["mapping.w_avg"] = _t(a).reshape(-1)
            continue
        if name in ("lod", "G_synthesis/lod"):
            if np.any(np.asarray(a) != 0):
                raise CheckpointError(f"{where}: {name}={a} (a progressive-growing level of detail other than 0)")
            continue
        m = re.fullmatch(r"G_mapping/Dense(\d+)/(weight|bias)", name)
        if m:
            out[f"mapping.fc{m.group(1)}.{m.group(2)}"] = _dense(a) if m.group(2) == "weight" else _t(a)
            continue
        if name.startswith("G_mapping/LabelConcat") or name.startswith("G_mapping/LabelEmbed"):
            raise CheckpointError(f"{where}: {name}: a class-conditional generator; faceedit supports "
                                  f"unconditional StyleGAN2 generators only")
        m = re.fullmatch(r"G_synthesis/noise(\d+)", name)
        if m:
            i = int(m.group(1))
            if i == 0:
                layer = "b4.conv1"
            elif i <= 2 * (log_res - 2):
                layer = f"b{2 ** ((i + 5) // 2)}.conv{(i + 1) % 2}"
            else:
                raise CheckpointError(f"{where}: {name} has no layer at {resolution} px")
            out[f"synthesis.{layer}.noise_const"] = _t(a).reshape(a.shape[-2:])
            continue
        if name == "G_synthesis/4x4/Const/const":
            out["synthesis.b4.const"] = _t(a)[0]
            continue
        m = re.fullmatch(r"G_synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB)/(weight|bias|mod_weight|mod_bias|"
                         r"noise_strength)", name)
        if not m:
            if re.fullmatch(r"G_synthesis/ToRGB_lod\d+/.*", name):
                raise CheckpointError(f"{where}: {name}: the 'orig' (progressive) StyleGAN2 architecture; faceedit "
                                      f"reads the 'skip' architecture (config-e/f)")
            raise CheckpointError(f"{where}: TF variable {name} (shape {list(np.shape(a))}) is not part of a StyleGAN2 "
                                  f"'skip' generator faceedit can map")
        r, layer, var = int(m.group(1)), m.group(2), m.group(3)
        dst = {(4, "Conv"): "b4.conv1", (4, "ToRGB"): "b4.torgb"}.get((r, layer)) if r == 4 else \
            {"Conv0_up": f"b{r}.conv0", "Conv1": f"b{r}.conv1", "ToRGB": f"b{r}.torgb"}.get(layer)
        if dst is None or r > resolution:
            raise CheckpointError(f"{where}: TF variable {name} does not fit a {resolution} px StyleGAN2 generator")
        if var == "weight":
            t = _conv(a, flip=layer == "Conv0_up")
        elif var == "mod_weight":
            t, var = _dense(a), "affine.weight"
        elif var == "mod_bias":
            t, var = _t(a) + 1, "affine.bias"
        else:
            t = _t(a)
        out[f"synthesis.{dst}.{var}"] = t
    return out


def _tf_nonfinite(variables: dict, where: str) -> None:
    bad = [n for n, a in variables.items() if np.asarray(a).dtype.kind == "f" and not np.isfinite(a).all()]
    if bad:
        raise CheckpointError(f"{where}: TF variable {bad[0]} holds NaN or infinite values")


def stylegan2_from_tf(net: TFNetwork, where: str = "TF generator", *, max_bytes: int | Budget | None = None) -> dict:
    """A faceedit :class:`Generator` from NVIDIA's StyleGAN2 TF generator (``Gs`` as a :class:`TFNetwork`).

    Args:
        net: the record.
        where: the source, for messages.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`): the generator the
            keyword arguments describe is charged to it, and checked against the variables,
            before it is built.
    Returns:
        ``{"G": Generator (eval, fp32), "provenance": dict}``.
    Raises:
        CheckpointError: not a StyleGAN2 'skip' generator; names the setting or variable.
        CheckpointSizeError: over the size budget.
    """
    cfg = generator_config_from_tf(net, where)
    res = cfg["resolution"]
    _tf_nonfinite(net.variables, where)
    nv = tf_generator_to_nvidia_state(net.variables, res, where)
    state = nvidia_to_native_state(nv, int(math.log2(res)) - 2)
    G = build_network("generator", cfg, where, state, budget=Budget.of(max_bytes, where), names=_TF_NAMES)
    prov = {"source_format": "nvidia-stylegan2-tf-pkl", "source_key": net.name,
            "tf_build_func": net.build_func_name,
            "tf_static_kwargs": {k: v for k, v in net.static_kwargs.items()
                                 if isinstance(v, (int, float, str, bool, type(None)))}}
    return {"G": G, "provenance": prov}


def discriminator_config_from_tf(net: TFNetwork, where: str) -> dict:
    """faceedit ``Discriminator`` kwargs from a ``D_stylegan2`` network (resnet only)."""
    kw = dict(net.static_kwargs)
    known = {"label_size", "resolution", "num_channels", "fmap_base", "fmap_max", "fmap_decay", "fmap_min",
             "architecture", "nonlinearity", "mbstd_group_size", "mbstd_num_features", "resample_kernel",
             "conv_clamp", "mapping_layers", "mapping_fmaps", "mapping_lrmul"} | _D_IGNORED
    unknown = sorted(set(kw) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown D_stylegan2 keyword argument {unknown[0]!r}")
    if net.build_func_name != "D_stylegan2":
        raise CheckpointError(f"{where}: discriminator {net.build_func_name} is not D_stylegan2")
    if kw.get("label_size", 0):
        raise CheckpointError(f"{where}: a class-conditional discriminator (label_size={kw['label_size']})")
    _need(kw, "architecture", "resnet", where, "resnet")
    _need(kw, "nonlinearity", "lrelu", where, "lrelu")
    _need(kw, "resample_kernel", [1, 3, 3, 1], where, [1, 3, 3, 1])
    _need(kw, "mbstd_num_features", 1, where, 1)
    base, cmax = _channels(kw, where)
    cfg = dict(resolution=as_int(kw.get("resolution", 1024), "resolution", where), channel_base=base,
               channel_max=cmax, img_channels=as_int(kw.get("num_channels", 3), "num_channels", where),
               mbstd_group=as_int(kw.get("mbstd_group_size", 4), "mbstd_group_size", where), down_conv="strided")
    if kw.get("conv_clamp") is not None:
        cfg["conv_clamp"] = as_float(kw["conv_clamp"], "conv_clamp", where)
    check_architecture("discriminator", cfg, where, _TF_NAMES)
    return cfg


def tf_discriminator_to_nvidia_state(variables: dict, where: str) -> dict:
    """``D_stylegan2`` (resnet) TF variables -> NVIDIA PyTorch discriminator names."""
    out = {}
    for name, a in variables.items():
        if name == "Output/weight":
            out["b4.out.weight"] = _dense(a)
            continue
        if name == "Output/bias":
            out["b4.out.bias"] = _t(a)
            continue
        m = re.fullmatch(r"(\d+)x\1/(FromRGB|Conv0|Conv1_down|Skip|Conv|Dense0)/(weight|bias)", name)
        if not m:
            raise CheckpointError(f"{where}: TF variable {name} (shape {list(np.shape(a))}) is not part of a "
                                  f"StyleGAN2 resnet discriminator faceedit can map")
        r, layer, var = m.group(1), m.group(2), m.group(3)
        dst = {"FromRGB": "fromrgb", "Conv0": "conv0", "Conv1_down": "conv1", "Skip": "skip", "Conv": "conv",
               "Dense0": "fc"}[layer]
        if layer == "Skip" and var == "bias":
            raise CheckpointError(f"{where}: {name}: a skip connection with a bias is not StyleGAN2's")
        t = (_dense(a) if layer == "Dense0" else _conv(a)) if var == "weight" else _t(a)
        out[f"b{r}.{dst}.{var}"] = t
    return out


def discriminator_from_tf(net: TFNetwork, where: str = "TF discriminator", *,
                          max_bytes: int | Budget | None = None) -> Discriminator:
    """A faceedit :class:`Discriminator` (``down_conv='strided'``) from NVIDIA's ``D_stylegan2`` (resnet).

    Args:
        net: the record.
        where: the source, for messages.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`).
    Raises:
        CheckpointError: another architecture or an unmapped variable, named.
        CheckpointSizeError: over the size budget.
    """
    cfg = discriminator_config_from_tf(net, where)
    _tf_nonfinite(net.variables, where)
    state = nvidia_d_to_native_state(tf_discriminator_to_nvidia_state(net.variables, where), cfg["resolution"], where)
    return build_network("discriminator", cfg, where, state, budget=Budget.of(max_bytes, where), names=_TF_NAMES)


__all__ = ["stylegan2_from_tf", "discriminator_from_tf", "generator_config_from_tf", "discriminator_config_from_tf",
           "tf_generator_to_nvidia_state", "tf_discriminator_to_nvidia_state"]
