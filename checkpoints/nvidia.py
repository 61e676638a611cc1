"""Reader for NVIDIA's PyTorch StyleGAN2 ``.pkl`` files (no NVIDIA code is run or needed).

Both codebases NVIDIA publishes StyleGAN2 pickles for are read: stylegan2-ada-pytorch
(``training.networks``: ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels,
mapping_kwargs, synthesis_kwargs)``) and the stylegan3 repository
(``training.networks_stylegan2``: the synthesis arguments at the top level, plus
``fused_modconv_default``). StyleGAN3 generators are refused by name.

The file is read with :mod:`faceedit.checkpoints.safe_pickle`; the generator's constructor
arguments and tensors are taken from its persistence record and mapped onto
:class:`faceedit.networks.Generator`, and NVIDIA's resnet discriminator ``D``, when there is
one, onto :class:`faceedit.networks.Discriminator` with ``down_conv="strided"`` (see
:func:`nvidia_d_to_native_state`).

Name mapping (NVIDIA -> faceedit), with ``k = log2(res) - 3`` for blocks ``res >= 8``::

    mapping.fc{i}.{weight,bias}          -> mapping.net.{i}.{weight,bias}
    mapping.w_avg                        -> mapping.w_avg
    synthesis.b4.const      [C, 4, 4]    -> synthesis.const [1, C, 4, 4]
    synthesis.b4.conv1.*                 -> synthesis.conv1.*
    synthesis.b4.torgb.*                 -> synthesis.torgb1.*
    synthesis.b{res}.conv0.*             -> synthesis.convs_up.{k}.*
    synthesis.b{res}.conv1.*             -> synthesis.convs.{k}.*
    synthesis.b{res}.torgb.*             -> synthesis.torgbs.{k}.*
    *.affine.{weight,bias}, *.weight, *.bias, *.noise_strength: unchanged
    *.noise_const           [R, R]       -> [1, 1, R, R]
    *.resample_filter (checked to be [1,3,3,1] and dropped)

Conventions line up one to one: both store equalised-lr weights as N(0, 1/lr_mul) and scale
them at run time by ``lr_mul / sqrt(fan_in)`` (biases by ``lr_mul``); NVIDIA applies the
3x3 conv gain ``1/sqrt(fan_in)`` nowhere (demodulation cancels it) and the toRGB gain on
the styles, we apply both on the weight: equal to float rounding. ``conv_clamp`` is
carried over. ``num_fp16_res`` is not: the converted model runs in fp32, which matches
NVIDIA's ``force_fp32=True`` output.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch

from .budget import Budget
from .native import (CheckpointError, _strict_load, as_float, as_int, build_network, check_holds, count_values,
                     new_network, plan_network)
from .safe_pickle import EasyDict, PersistentRecord, load_restricted

log = logging.getLogger(__name__)

_GEN_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
# Settings that change nothing in fp32 inference, or that we reproduce exactly.
_IGNORED_SYNTH = {"num_fp16_res", "fp16_channels_last", "channels_last", "use_fp16", "fused_modconv_default"}
# Synthesis settings the stylegan3 repository's StyleGAN2 Generator takes as its own arguments.
_SG3_REPO_TOP = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
                 "use_noise", "activation", "kernel_size", "fp16_channels_last"}
# Arguments only StyleGAN3's generator (networks_stylegan3) has.
_SG3_ONLY = {"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_layers", "num_critical", "first_cutoff",
             "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "filter_size",
             "lrelu_upsampling"}


def _fir_ok(t: torch.Tensor) -> bool:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    ref2 = torch.outer(k, k) / 64
    return (t.shape == (4, 4) and torch.allclose(t.float(), ref2)) or \
           (t.shape == (4,) and torch.allclose(t.float(), k / 8))


def nvidia_to_native_state(sd: dict, num_blocks: int) -> dict:
    """Map an NVIDIA generator state dict to faceedit names (see the module docstring).

    Args:
        sd: ``{name: tensor}`` as NVIDIA's ``G.state_dict()`` names them.
        num_blocks: number of synthesis blocks after ``b4`` (``log2(resolution) - 2``).
    Raises:
        CheckpointError: an unknown tensor name, or a resampling filter other than [1,3,3,1].
    """
    out = {}
    blocks = {"b4.conv1": "conv1", "b4.torgb": "torgb1"}
    for k in range(num_blocks):
        r = 2 ** (k + 3)
        blocks.update({f"b{r}.conv0": f"convs_up.{k}", f"b{r}.conv1": f"convs.{k}", f"b{r}.torgb": f"torgbs.{k}"})
    for name, t in sd.items():
        parts = name.split(".")
        if name.endswith("resample_filter"):
            if not _fir_ok(t):
                raise CheckpointError(f"{name} is not the [1,3,3,1] filter faceedit implements "
                                      f"(found {t.flatten()[:6].tolist()}...)")
            continue
        if parts[0] == "mapping":
            if parts[1] == "w_avg":
                out["mapping.w_avg"] = t
            elif parts[1].startswith("fc") and parts[1][2:].isdigit() and len(parts) == 3:
                out[f"mapping.net.{int(parts[1][2:])}.{parts[2]}"] = t
            elif parts[1] == "embed":
                raise CheckpointError("this is a class-conditional generator (mapping.embed); faceedit "
                                      "supports unconditional StyleGAN2 generators only")
            else:
                raise CheckpointError(f"unexpected mapping tensor {name}")
            continue
        if parts[0] != "synthesis" or len(parts) < 3:
            raise CheckpointError(f"unexpected generator tensor {name}")
        if parts[1] == "b4" and parts[2] == "const":
            out["synthesis.const"] = t.unsqueeze(0)
            continue
        layer = ".".join(parts[1:3])
        if layer not in blocks:
            raise CheckpointError(f"unexpected synthesis tensor {name}: faceedit reads the 'skip' "
                                  f"architecture of StyleGAN2 (not StyleGAN3, not 'resnet'/'orig')")
        rest = ".".join(parts[3:])
        if rest == "noise_const":
            t = t.reshape(1, 1, *t.shape[-2:])
        out[f"synthesis.{blocks[layer]}.{rest}"] = t
    return out


def native_to_nvidia_state(sd: dict, num_blocks: int) -> dict:
    """Inverse of :func:`nvidia_to_native_state` (without the filter buffers); used by tests
    to lay one of our generators out under NVIDIA's names."""
    inv = {"conv1": "b4.conv1", "torgb1": "b4.torgb"}
    for k in range(num_blocks):
        r = 2 ** (k + 3)
        inv.update({f"convs_up.{k}": f"b{r}.conv0", f"convs.{k}": f"b{r}.conv1", f"torgbs.{k}": f"b{r}.torgb"})
    out = {}
    for name, t in sd.items():
        p = name.split(".")
        if name == "mapping.w_avg":
            out[name] = t
        elif p[:2] == ["mapping", "net"]:
            out[f"mapping.fc{p[2]}.{p[3]}"] = t
        elif name == "synthesis.const":
            out["synthesis.b4.const"] = t[0]
        else:
            layer = p[1] if p[1] in inv else ".".join(p[1:3])
            rest = name[len("synthesis.") + len(layer) + 1:]
            if rest == "noise_const":
                t = t[0, 0]
            out[f"synthesis.{inv[layer]}.{rest}"] = t
    return out


def nvidia_d_to_native_state(sd: dict, resolution: int, where: str = "discriminator") -> dict:
    """Map an NVIDIA resnet discriminator state dict onto :class:`faceedit.networks.Discriminator`.

    ``b{R}.fromrgb`` (top block only) -> ``from_rgb``; ``b{r}.{conv0,conv1,skip}`` ->
    ``blocks.{log2(R) - log2(r)}.*``; ``b4.{conv,fc,out}`` -> ``conv``, ``fc``, ``out``;
    ``*.resample_filter`` checked to be [1,3,3,1] and dropped. Layouts are the same.

    Raises:
        CheckpointError: a tensor this table does not cover (e.g. the 'skip' or 'orig'
            discriminator's per-block fromrgb, a conditional mapping), named.
    """
    log_res, out = int(math.log2(resolution)), {}
    for name, t in sd.items():
        if name.endswith("resample_filter"):
            if not _fir_ok(t):
                raise CheckpointError(f"{where}: {name} is not the [1,3,3,1] filter faceedit implements")
            continue
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)", name)
        if not m:
            raise CheckpointError(f"{where}: discriminator tensor {name} is not part of a StyleGAN2 resnet "
                                  f"discriminator faceedit can map")
        r, layer, var = int(m.group(1)), m.group(2), m.group(3)
        if layer == "fromrgb":
            if r != resolution:
                raise CheckpointError(f"{where}: {name}: a fromrgb below the top resolution (the 'skip'/'orig' "
                                      f"discriminator); faceedit maps the 'resnet' discriminator only")
            out[f"from_rgb.{var}"] = t
        elif layer in ("conv0", "conv1", "skip") and 4 < r <= resolution and r & (r - 1) == 0:
            out[f"blocks.{log_res - int(math.log2(r))}.{layer}.{var}"] = t
        elif layer in ("conv", "fc", "out") and r == 4:
            out[f"{layer}.{var}"] = t
        else:
            raise CheckpointError(f"{where}: discriminator tensor {name} does not fit a {resolution} px resnet "
                                  f"discriminator")
    return out


_DISC_ARGS = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
              "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")


def _discriminator_kwargs(rec: PersistentRecord, where: str) -> dict:
    """faceedit ``Discriminator`` kwargs from NVIDIA's (ada-pytorch, stylegan3-repo StyleGAN2) record."""
    args = rec.init_args
    if len(args) > len(_DISC_ARGS):
        raise CheckpointError(f"{where}: Discriminator built with {len(args)} positional arguments")
    kw = dict(zip(_DISC_ARGS, args))
    kw.update(rec.init_kwargs)
    if "img_resolution" not in kw:
        raise CheckpointError(f"{where}: the discriminator record lacks img_resolution")
    unknown = sorted(set(kw) - set(_DISC_ARGS))
    if unknown:
        raise CheckpointError(f"{where}: unknown Discriminator argument {unknown[0]!r}")
    if kw.get("c_dim", 0):
        raise CheckpointError(f"{where}: a class-conditional discriminator (c_dim={kw['c_dim']})")
    if kw.get("architecture", "resnet") != "resnet":
        raise CheckpointError(f"{where}: discriminator architecture {kw['architecture']!r}; faceedit's is 'resnet'")
    bk, ek = dict(kw.get("block_kwargs") or {}), dict(kw.get("epilogue_kwargs") or {})
    for d, key, ok in ((bk, "activation", "lrelu"), (ek, "activation", "lrelu"), (ek, "mbstd_num_channels", 1)):
        if d.get(key, ok) != ok:
            raise CheckpointError(f"{where}: discriminator {key}={d[key]!r} is not supported (only {ok!r})")
    if list(bk.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1]:
        raise CheckpointError(f"{where}: discriminator resample_filter {bk['resample_filter']} is not [1,3,3,1]")
    unknown = sorted(set(bk) - {"activation", "resample_filter", "freeze_layers", "fp16_channels_last"})
    unknown += sorted(set(ek) - {"mbstd_group_size", "mbstd_num_channels", "activation"})
    if unknown:
        raise CheckpointError(f"{where}: unknown discriminator settings {unknown}")
    group = ek.get("mbstd_group_size", 4)
    cfg = dict(resolution=as_int(kw["img_resolution"], "img_resolution", where),
               channel_base=as_int(kw.get("channel_base", 32768), "channel_base", where),
               channel_max=as_int(kw.get("channel_max", 512), "channel_max", where),
               img_channels=as_int(kw.get("img_channels", 3), "img_channels", where),
               mbstd_group=as_int(4 if group is None else group, "epilogue_kwargs.mbstd_group_size", where),
               down_conv="strided")
    if kw.get("conv_clamp") is not None:
        cfg["conv_clamp"] = as_float(kw["conv_clamp"], "conv_clamp", where)
    return cfg


_D_NAMES = {"resolution": "img_resolution", "mbstd_group": "epilogue_kwargs.mbstd_group_size"}


def discriminator_from_record(rec: PersistentRecord, where: str, *, max_bytes: int | Budget | None = None):
    """A faceedit :class:`Discriminator` from NVIDIA's ``D`` record, or raise :class:`CheckpointError`.

    The discriminator is planned and charged to the size budget (``max_bytes``, see
    :mod:`faceedit.checkpoints.budget`) and its tensors checked against it before it is built.
    """
    if rec.class_name != "Discriminator":
        raise CheckpointError(f"{where}: D is a {rec.class_name}, not a Discriminator")
    budget = Budget.of(max_bytes, where)
    cfg = _discriminator_kwargs(rec, where)
    needed = plan_network("discriminator", cfg, where, budget, _D_NAMES)
    state = nvidia_d_to_native_state(rec.tensors(where=where), cfg["resolution"], where)
    return build_network("discriminator", cfg, where, state, needed=needed)


def _generator_kwargs(rec: PersistentRecord, where: str) -> dict:
    args = rec.init_args
    if len(args) > len(_GEN_ARGS):
        raise CheckpointError(f"{where}: Generator was built with {len(args)} positional arguments; expected "
                              f"at most {len(_GEN_ARGS)}")
    kw = dict(zip(_GEN_ARGS, args))
    kw.update(rec.init_kwargs)
    # The stylegan3 repository's networks_stylegan2.Generator takes the synthesis arguments at
    # the top level (**synthesis_kwargs) and adds fused_modconv_default (an inference speed
    # setting that does not change fp32 results).
    top = {k: kw.pop(k) for k in list(kw) if k in _SG3_REPO_TOP}
    kw.pop("fused_modconv_default", None)
    if top:
        kw["synthesis_kwargs"] = {**dict(kw.get("synthesis_kwargs") or {}), **top}
    missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in kw]
    if missing:
        raise CheckpointError(f"{where}: the generator record lacks constructor arguments {missing}")
    if kw.get("c_dim", 0):
        raise CheckpointError(f"{where}: class-conditional generator (c_dim={kw['c_dim']}); faceedit supports "
                              f"unconditional StyleGAN2 generators only")
    mk = dict(kw.get("mapping_kwargs") or {})
    sk = dict(kw.get("synthesis_kwargs") or {})
    for k in sorted(set(kw) - set(_GEN_ARGS)):
        raise CheckpointError(f"{where}: unknown Generator argument {k!r}={kw[k]!r}; not a StyleGAN2 generator of "
                              f"stylegan2-ada-pytorch or the stylegan3 repository (other variants are not supported)")
    w_dim = as_int(kw["w_dim"], "w_dim", where)
    for key, ok in (("activation", "lrelu"),):
        if mk.get(key, ok) != ok:
            raise CheckpointError(f"{where}: mapping {key}={mk[key]!r} is not supported (only {ok!r})")
    if mk.get("layer_features") not in (None, w_dim):
        raise CheckpointError(f"{where}: mapping layer_features={mk['layer_features']} != w_dim is not supported")
    for key, ok in (("architecture", "skip"), ("resample_filter", [1, 3, 3, 1]), ("activation", "lrelu"),
                    ("kernel_size", 3)):
        found = sk.get(key, ok)
        if (list(found) if isinstance(ok, list) else found) != ok:
            raise CheckpointError(f"{where}: synthesis {key}={sk[key]!r} is not supported (faceedit implements "
                                  f"StyleGAN2 with {key}={ok!r})")
    known = {"channel_base", "channel_max", "conv_clamp", "architecture", "resample_filter", "activation",
             "kernel_size", "use_noise"} | _IGNORED_SYNTH
    unknown = sorted(set(sk) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown synthesis settings {unknown}; not a StyleGAN2 generator "
                              f"faceedit can reproduce")
    known_m = {"num_layers", "lr_multiplier", "w_avg_beta", "embed_features", "layer_features", "activation"}
    unknown = sorted(set(mk) - known_m)
    if unknown:
        raise CheckpointError(f"{where}: unknown mapping settings {unknown}")
    cfg = dict(z_dim=as_int(kw["z_dim"], "z_dim", where), w_dim=w_dim,
               resolution=as_int(kw["img_resolution"], "img_resolution", where), mapping_kind="mlp",
               mapping_layers=as_int(mk.get("num_layers", 8), "mapping_kwargs.num_layers", where),
               mapping_lr_mul=as_float(mk.get("lr_multiplier", 0.01), "mapping_kwargs.lr_multiplier", where),
               channel_base=as_int(sk.get("channel_base", 32768), "channel_base", where),
               channel_max=as_int(sk.get("channel_max", 512), "channel_max", where),
               img_channels=as_int(kw.get("img_channels", 3), "img_channels", where))
    if sk.get("conv_clamp") is not None:
        cfg["conv_clamp"] = as_float(sk["conv_clamp"], "conv_clamp", where)
    if sk.get("num_fp16_res"):
        log.info("%s: NVIDIA ran the top %d resolutions in fp16; the converted model runs in fp32 "
                 "(it matches NVIDIA's force_fp32=True output)", where, sk["num_fp16_res"])
    return cfg


def _refuse_stylegan3(rec: PersistentRecord, where: str) -> None:
    kw = rec.init_kwargs
    sk = dict(kw.get("synthesis_kwargs") or {}) if isinstance(kw.get("synthesis_kwargs"), dict) else {}
    try:
        names = rec.child("synthesis").state.get("_modules") or {}
    except CheckpointError:
        names = {}
    if "input" in names or any(str(k).startswith("L0_") for k in names) or (_SG3_ONLY & (set(kw) | set(sk))):
        raise CheckpointError(f"{where} is a StyleGAN3 generator (networks_stylegan3: Fourier-feature input, "
                              f"alias-free layers); faceedit reads StyleGAN2 generators only")


def pick_generator(obj, where: str) -> tuple:
    """From an unpickled NVIDIA file, the generator record and which key it came from."""
    if isinstance(obj, PersistentRecord):
        return obj, "(top level)"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a stylegan2-ada-pytorch network dict")
    for key in ("G_ema", "G"):
        rec = obj.get(key)
        if isinstance(rec, PersistentRecord):
            if key == "G":
                log.warning("%s has no G_ema; using the training generator G", where)
            return rec, key
    raise CheckpointError(f"{where} has no generator (keys: {sorted(map(str, obj))}); expected 'G_ema' "
                          f"as stylegan2-ada-pytorch writes it")


_G_NAMES = {"resolution": "img_resolution", "mapping_layers": "mapping_kwargs.num_layers",
            "mapping_lr_mul": "mapping_kwargs.lr_multiplier"}


def read_nvidia(path, *, max_bytes: int | Budget | None = None) -> dict:
    """Read an NVIDIA stylegan2-ada-pytorch pickle into a faceedit :class:`Generator`.

    Nothing from the file is executed (see :mod:`faceedit.checkpoints.safe_pickle`). Sizes
    are checked before anything is built: the file against the size budget, every tensor
    against its storage, and the generator (and discriminator) its record describes is sized
    from its constructor arguments, charged to the budget and counted against the file's tensors.

    Args:
        path: the ``.pkl`` (or a ``torch.save`` zip of NVIDIA's objects).
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`).
    Returns:
        ``{"G": Generator (eval, fp32), "D": Discriminator | None, "provenance": dict}``; ``D`` is
        NVIDIA's resnet discriminator when the file holds one faceedit can map (the provenance's
        ``discriminator`` entry says why not otherwise).
    Raises:
        UnsafePickleError: the pickle references anything outside the allow-list.
        CheckpointError: not a StyleGAN2 generator faceedit can reproduce; the message says why.
        CheckpointSizeError: over the size budget, or a tensor spread over repeated storage.
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    obj = load_restricted(path, max_bytes=budget)
    rec, key = pick_generator(obj, str(path))
    if rec.class_name != "Generator":
        raise CheckpointError(f"{path}: {key} is a {rec.class_name}, not a Generator")
    _refuse_stylegan3(rec, str(path))
    cfg = _generator_kwargs(rec, str(path))
    where = f"{path} ({key})"
    needed = plan_network("generator", cfg, where, budget, _G_NAMES)
    res = cfg["resolution"]
    try:
        nv = rec.tensors(where=where)
    except RecursionError as e:
        raise CheckpointError(f"{path}: sub-networks nested far deeper than any StyleGAN2; the file is damaged "
                              f"or hostile") from e
    if any(k.startswith("synthesis.input") or ".L0_" in k for k in nv):
        raise CheckpointError(f"{path} is a StyleGAN3 generator; faceedit reads StyleGAN2 only")
    num_blocks = int(math.log2(res)) - 2
    noise_free = [k[: -len(".affine.weight")] for k in nv if k.endswith(".affine.weight") and ".torgb" not in k
                  and k.replace(".affine.weight", ".noise_strength") not in nv]
    state = nvidia_to_native_state(nv, num_blocks)
    check_holds(needed, count_values(state, where), where)
    G = new_network("generator", cfg, where)
    own = G.state_dict()
    for layer in noise_free:  # use_noise=False layers: zero strength reproduces them exactly
        base = next(iter(nvidia_to_native_state({layer + ".bias": torch.zeros(1)}, num_blocks)))[: -len(".bias")]
        if f"{base}.noise_const" not in own:
            raise CheckpointError(f"{where}: layer {layer} is not part of a {res} px StyleGAN2 generator")
        state[f"{base}.noise_strength"] = torch.zeros([])
        state[f"{base}.noise_const"] = torch.zeros_like(own[f"{base}.noise_const"])
    _strict_load(G, state, where)
    G.eval().requires_grad_(False)
    fmt = "nvidia-stylegan3-repo-stylegan2-pkl" if "fused_modconv_default" in rec.init_kwargs or \
        "channel_base" in rec.init_kwargs else "nvidia-stylegan2-ada-pkl"
    prov = {"source_format": fmt, "source_key": key, "source_file": path.name,
            "nvidia_synthesis_kwargs": {k: v for k, v in {**dict(rec.init_kwargs.get("synthesis_kwargs") or {}),
                                                            **{k: rec.init_kwargs[k] for k in _SG3_REPO_TOP
                                                               if k in rec.init_kwargs}}.items()
                                        if isinstance(v, (int, float, str, bool, type(None)))}}
    D, note = None, "the file has no discriminator"
    if isinstance(obj, dict) and isinstance(obj.get("D"), PersistentRecord):
        try:
            D = discriminator_from_record(obj["D"], f"{path} (D)", max_bytes=budget)
            note = "converted"
        except CheckpointError as e:
            note = f"not converted: {e}"
            log.warning("%s; the model converts without a discriminator", e)
    prov["discriminator"] = note
    return {"G": G, "D": D, "provenance": prov}


__all__ = ["read_nvidia", "nvidia_d_to_native_state", "discriminator_from_record", "nvidia_to_native_state",
           "native_to_nvidia_state", "pick_generator", "EasyDict"]
