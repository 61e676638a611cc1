"""Reader for rosinality/stylegan2-pytorch ``.pt`` checkpoints (``torch.load(weights_only=True)``).

Such a file is a dict from ``torch.save``: ``g_ema`` (the generator's state dict), optionally
``latent_avg`` (the mean W of converted official models), ``g``, ``d``, optimizer states and
``args`` (an ``argparse.Namespace``, the one non-tensor class allowed while loading).

Name mapping (rosinality -> faceedit), ``j`` counting rosinality's ``convs`` list::

    style.{i}.{weight,bias}  (i = 1..n_mlp)  -> mapping.net.{i-1}.{weight,bias}
    latent_avg                                -> mapping.w_avg   (else estimated, see below)
    input.input                               -> synthesis.const
    conv1 / convs.{2k} / convs.{2k+1}         -> synthesis.conv1 / convs_up.{k} / convs.{k}
        .conv.weight        [1, O, I, 3, 3]   -> .weight [O, I, 3, 3]
        .conv.modulation.*                    -> .affine.*
        .noise.weight       [1]               -> .noise_strength []
        .activate.bias      [O]               -> .bias
    noises.noise_{l}        [1, 1, R, R]      -> noise_const of styled conv l (conv1 is l = 0)
    to_rgb1 / to_rgbs.{k}                     -> synthesis.torgb1 / torgbs.{k}
        .conv.weight        [1, 3, I, 1, 1]   -> .weight [3, I, 1, 1];  .bias [1, 3, 1, 1] -> [3]
    *.blur.kernel, *.upsample.kernel (checked to be the [1,3,3,1] filter and dropped)

Its discriminator ``d`` (kept when present) maps onto :class:`faceedit.networks.Discriminator`
with ``down_conv="strided"`` (rosinality blurs, then convolves with stride 2, as NVIDIA does)::

    convs.0.{0.weight, 1.bias}                         -> from_rgb.{weight, bias}
    convs.{j}.conv1.{0.weight, 1.bias}                 -> blocks.{j-1}.conv0.*
    convs.{j}.conv2.{1.weight, 2.bias}                 -> blocks.{j-1}.conv1.*
    convs.{j}.skip.1.weight                            -> blocks.{j-1}.skip.weight
    final_conv.{0.weight, 1.bias}                      -> conv.*
    final_linear.0.* / final_linear.1.*                -> fc.* / out.*
    *.kernel (the blur, checked to be [1,3,3,1] and dropped)

rosinality's equalised-lr conventions are NVIDIA's (weights N(0, 1/lr_mul), run-time scale
``lr_mul / sqrt(fan_in)``), so tensors copy over unchanged. Its channel table
(512 up to 32 px, then ``16384 * channel_multiplier / res``) is ``min(base // res, 512)``
with ``base = 16384 * channel_multiplier`` for multipliers 1 and 2; other tables are refused.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch

from faceedit.networks import channels_for

from .budget import Budget, check_tensor_geometry, check_zip_archive, human_bytes
from .native import CheckpointError, build_network, is_zip
from .safe_pickle import torch_refusal_reason

log = logging.getLogger(__name__)

W_AVG_SAMPLES = 10000
W_AVG_SEED = 0


def load_weights_only(path, *, max_bytes: int | Budget | None = None) -> object:
    """``torch.load(path, weights_only=True)`` allowing ``argparse.Namespace`` (rosinality's ``args``).

    The file's size is charged to the size budget first: for a ``torch.save`` zip, every
    entry by its declared size (and refused when it inflates like a bomb: ``torch.load``
    inflates deflated entries whole); for the legacy format, the file itself.

    Args:
        path: the ``.pt`` file.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`).
    Raises:
        CheckpointError: refused by ``weights_only`` (with the finding, never torch's advice to
            load unsafely), or not a readable torch file.
        CheckpointSizeError: over the budget, or a zip entry inflating like a bomb.
    """
    budget = Budget.of(max_bytes, str(path))
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as z:
                check_zip_archive(z, str(path), budget)
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, ValueError, NotImplementedError, OSError) as e:
            raise CheckpointError(f"{path} is a damaged zip ({e}); download or convert it again") from e
    else:
        size = Path(path).stat().st_size
        budget.charge(size, f"the file ({human_bytes(size)})")
    try:
        ctx = torch.serialization.safe_globals([argparse.Namespace])
    except AttributeError:  # torch < 2.5: no context manager; Namespace-free files still load
        ctx = None
    try:
        if ctx is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: torch.load(weights_only=True) found something other "
                              f"than tensors and plain data ({torch_refusal_reason(e)}). The file may be malicious; "
                              f"nothing in it was executed, and faceedit never loads checkpoints unsafely. A "
                              f"rosinality checkpoint holds state dicts of tensors: if this file is one you trust, "
                              f"re-save its 'g_ema' (and 'd') state dicts alone with torch.save and convert that "
                              f"with `faceedit convert`.") from e
    except Exception as e:  # noqa: BLE001 - damaged bytes make torch.load raise many types (AssertionError,
        # IndexError, KeyError, struct.error, ...); weights_only already refused anything unsafe
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: "
                              f"{torch_refusal_reason(e)})") from e


def _fir(scale: float) -> torch.Tensor:
    """rosinality's 4x4 ``[1,3,3,1]`` filter buffer, times ``scale`` (4 for up-sampling, 1 for blur)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 64 * scale


def _kernel_ok(t: torch.Tensor, scale: float) -> bool:
    return t.shape == (4, 4) and torch.allclose(t.float(), _fir(scale))


def _infer_channel_rule(ch: dict, where: str) -> tuple:
    """``(channel_base, channel_max)`` reproducing ``{res: channels}`` with ``min(base // res, max)``."""
    cmax = max(ch.values())
    below = [r for r in ch if ch[r] < cmax]
    base = ch[min(below)] * min(below) if below else cmax * max(ch)
    if channels_for(max(ch), base, cmax) != ch:
        raise CheckpointError(f"{where}: channel table {ch} is not of the form min(base / res, max); "
                              f"faceedit cannot reproduce this generator")
    return base, cmax


def rosinality_to_native_state(sd: dict, where: str = "checkpoint") -> tuple:
    """Map a rosinality ``g_ema`` state dict to faceedit names.

    Returns:
        ``(config, state)``: Generator kwargs and the renamed tensors (``mapping.w_avg`` not included).
    Raises:
        CheckpointError: missing or unexpected tensors, or an unsupported layout (e.g. SWAGAN).
    """
    if any(k.startswith(("dwt", "iwt")) or ".iwt." in k for k in sd):
        raise CheckpointError(f"{where} is a SWAGAN (wavelet) generator; faceedit reads StyleGAN2 only")
    style = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not style or "input.input" not in sd or "to_rgb1.conv.weight" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 generator (need style.*, input.input, "
                              f"to_rgb1.*; found {sorted(sd)[:6]}...)")
    n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    if n_rgbs > 8:
        raise CheckpointError(f"{where}: {n_rgbs} to_rgbs layers describe a {2 ** (n_rgbs + 2)} px generator; "
                              f"faceedit builds 16..1024 px")
    resolution = 2 ** (n_rgbs + 2)
    try:
        z_dim = sd["style.1.weight"].shape[1]
        ch = {4: sd["input.input"].shape[1]}
        for k in range(n_rgbs):
            ch[2 ** (k + 3)] = sd[f"convs.{2 * k}.conv.weight"].shape[1]
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 generator ({e} is missing or has too few "
                              f"dimensions)") from e
    base, cmax = _infer_channel_rule(ch, where)
    cfg = dict(z_dim=z_dim, w_dim=z_dim, resolution=resolution, mapping_kind="mlp", mapping_layers=len(style),
               mapping_lr_mul=0.01, channel_base=base, channel_max=cmax, img_channels=3)
    convs = {"conv1": "conv1", **{f"convs.{j}": (f"convs_up.{j // 2}" if j % 2 == 0 else f"convs.{j // 2}")
                                  for j in range(2 * n_rgbs)}}
    noise_of = {0: "conv1", **{j + 1: convs[f"convs.{j}"] for j in range(2 * n_rgbs)}}
    rgbs = {"to_rgb1": "torgb1", **{f"to_rgbs.{k}": f"torgbs.{k}" for k in range(n_rgbs)}}
    out = {}
    for name, t in sd.items():
        if name.endswith(("blur.kernel", "upsample.kernel")):
            if not _kernel_ok(t, 4.0):
                raise CheckpointError(f"{where}: {name} is not the [1,3,3,1] filter faceedit implements")
            continue
        if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", name):
            out[f"mapping.net.{int(m.group(1)) - 1}.{m.group(2)}"] = t
        elif name == "input.input":
            out["synthesis.const"] = t
        elif m := re.fullmatch(r"noises\.noise_(\d+)", name):
            if int(m.group(1)) not in noise_of:
                raise CheckpointError(f"{where}: unexpected noise buffer {name}")
            out[f"synthesis.{noise_of[int(m.group(1))]}.noise_const"] = t
        elif m := re.fullmatch(r"(conv1|convs\.\d+)\.(conv\.weight|conv\.modulation\.(?:weight|bias)|noise\.weight|"
                               r"activate\.bias)", name):
            if m.group(1) not in convs:
                raise CheckpointError(f"{where}: unexpected tensor {name}")
            dst = {"conv.weight": "weight", "noise.weight": "noise_strength", "activate.bias": "bias"}.get(
                m.group(2), m.group(2).replace("conv.modulation", "affine"))
            t = t[0] if dst == "weight" else (t.reshape([]) if dst == "noise_strength" else t)
            out[f"synthesis.{convs[m.group(1)]}.{dst}"] = t
        elif m := re.fullmatch(r"(to_rgb1|to_rgbs\.\d+)\.(conv\.weight|conv\.modulation\.(?:weight|bias)|bias)", name):
            if m.group(1) not in rgbs:
                raise CheckpointError(f"{where}: unexpected tensor {name}")
            dst = {"conv.weight": "weight", "bias": "bias"}.get(m.group(2), m.group(2).replace("conv.modulation",
                                                                                               "affine"))
            t = t[0] if dst == "weight" else (t.reshape(-1) if dst == "bias" else t)
            out[f"synthesis.{rgbs[m.group(1)]}.{dst}"] = t
        else:
            raise CheckpointError(f"{where}: unexpected tensor {name} for a rosinality StyleGAN2 generator")
    return cfg, out


_D_PATTERNS = [
    (r"convs\.0\.0\.weight", "from_rgb.weight"), (r"convs\.0\.1\.bias", "from_rgb.bias"),
    (r"convs\.(\d+)\.conv1\.0\.weight", "blocks.{}.conv0.weight"),
    (r"convs\.(\d+)\.conv1\.1\.bias", "blocks.{}.conv0.bias"),
    (r"convs\.(\d+)\.conv2\.1\.weight", "blocks.{}.conv1.weight"),
    (r"convs\.(\d+)\.conv2\.2\.bias", "blocks.{}.conv1.bias"),
    (r"convs\.(\d+)\.skip\.1\.weight", "blocks.{}.skip.weight"),
    (r"final_conv\.0\.weight", "conv.weight"), (r"final_conv\.1\.bias", "conv.bias"),
    (r"final_linear\.0\.(weight|bias)", "fc.{}"), (r"final_linear\.1\.(weight|bias)", "out.{}"),
]


def rosinality_d_to_native_state(sd: dict, where: str = "discriminator") -> tuple:
    """Map a rosinality discriminator state dict (``d``) onto faceedit's names (module docstring).

    Returns:
        ``(config, state)``: ``Discriminator`` kwargs (``down_conv='strided'``) and the tensors.
    Raises:
        CheckpointError: an unexpected tensor or channel table, named.
    """
    if "convs.0.0.weight" not in sd or "final_linear.1.weight" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 discriminator (no convs.0 / final_linear)")
    n_blocks = len({k.split(".")[1] for k in sd if re.fullmatch(r"convs\.\d+\.conv1\..*", k)})
    if n_blocks > 8:
        raise CheckpointError(f"{where}: {n_blocks} discriminator blocks describe a {2 ** (n_blocks + 2)} px "
                              f"discriminator; faceedit builds 16..1024 px")
    resolution = 2 ** (n_blocks + 2)
    ch = {resolution: sd["convs.0.0.weight"].shape[0]}
    for j in range(1, n_blocks + 1):
        w = sd.get(f"convs.{j}.conv2.1.weight")
        if w is None:
            raise CheckpointError(f"{where}: discriminator block convs.{j} lacks conv2")
        ch[resolution >> j] = w.shape[0]
    base, cmax = _infer_channel_rule(ch, where)
    out = {}
    for name, t in sd.items():
        if name.endswith(".kernel"):
            if not _kernel_ok(t, 1.0):
                raise CheckpointError(f"{where}: {name} is not the [1,3,3,1] blur faceedit implements")
            continue
        for pat, dst in _D_PATTERNS:
            m = re.fullmatch(pat, name)
            if m:
                if "blocks" in dst:
                    j = int(m.group(1))
                    if not 1 <= j <= n_blocks:
                        raise CheckpointError(f"{where}: unexpected discriminator tensor {name}")
                    out[dst.format(j - 1)] = t
                else:
                    out[dst.format(*m.groups())] = t
                break
        else:
            raise CheckpointError(f"{where}: unexpected tensor {name} for a rosinality StyleGAN2 discriminator")
    cfg = dict(resolution=resolution, channel_base=base, channel_max=cmax, img_channels=sd["convs.0.0.weight"].shape[1],
               mbstd_group=4, down_conv="strided")
    return cfg, out


def native_to_rosinality_state(sd: dict, num_blocks: int, *, filters: bool = False) -> dict:
    """Inverse of :func:`rosinality_to_native_state` (no ``latent_avg``); used by tests and the parity
    benchmark to lay one of our generators out under rosinality's names. ``filters``: also the
    up-sampling filter buffers rosinality's own ``state_dict`` holds."""
    convs = {"conv1": "conv1", **{f"convs_up.{k}": f"convs.{2 * k}" for k in range(num_blocks)},
             **{f"convs.{k}": f"convs.{2 * k + 1}" for k in range(num_blocks)}}
    noise_idx = {"conv1": 0, **{f"convs_up.{k}": 2 * k + 1 for k in range(num_blocks)},
                 **{f"convs.{k}": 2 * k + 2 for k in range(num_blocks)}}
    rgbs = {"torgb1": "to_rgb1", **{f"torgbs.{k}": f"to_rgbs.{k}" for k in range(num_blocks)}}
    out = {}
    for name, t in sd.items():
        p = name.split(".")
        if p[:2] == ["mapping", "net"]:
            out[f"style.{int(p[2]) + 1}.{p[3]}"] = t
        elif name == "mapping.w_avg":
            continue
        elif name == "synthesis.const":
            out["input.input"] = t
        else:
            layer = p[1] if p[1] in ("conv1", "torgb1") else ".".join(p[1:3])
            rest = name[len("synthesis.") + len(layer) + 1:]
            if layer in rgbs:
                dst = {"weight": "conv.weight", "bias": "bias"}.get(rest, rest.replace("affine", "conv.modulation"))
                t = t[None] if rest == "weight" else (t.reshape(1, -1, 1, 1) if rest == "bias" else t)
                out[f"{rgbs[layer]}.{dst}"] = t
            elif rest == "noise_const":
                out[f"noises.noise_{noise_idx[layer]}"] = t
            else:
                dst = {"weight": "conv.weight", "noise_strength": "noise.weight", "bias": "activate.bias"}.get(
                    rest, rest.replace("affine", "conv.modulation"))
                t = t[None] if rest == "weight" else (t.reshape(1) if rest == "noise_strength" else t)
                out[f"{convs[layer]}.{dst}"] = t
    if filters:
        for j in range(0, 2 * num_blocks, 2):
            out[f"convs.{j}.conv.blur.kernel"] = _fir(4.0)
        for j in range(num_blocks):
            out[f"to_rgbs.{j}.upsample.kernel"] = _fir(4.0)
    return out


def _tensor_dict(obj, key: str, where: str) -> dict:
    """``obj[key]`` as ``{name: tensor}``, every tensor's geometry checked before anything copies it."""
    sd = dict(obj[key])
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: {key} entry {k!r} is a {type(v).__name__}, not a tensor")
        check_tensor_geometry(v, k, where)
    return sd


def read_rosinality(path, obj=None, *, max_bytes: int | Budget | None = None) -> dict:
    """Read a rosinality ``.pt`` checkpoint into a faceedit :class:`Generator`.

    Args:
        path: the file.
        obj: the already loaded (``weights_only``) content, to avoid reading twice.
        max_bytes: the size budget (see :mod:`faceedit.checkpoints.budget`): the file, then
            the networks its tensors describe, are charged to it before they are read or built.
    Returns:
        ``{"G": Generator (eval, fp32), "D": Discriminator | None, "provenance": dict}``.
        Without ``latent_avg`` in the file, ``w_avg`` is estimated from ``W_AVG_SAMPLES``
        mapped z (seed ``W_AVG_SEED``) and the provenance says so. ``D`` is the file's ``d``
        when present and mappable (``provenance["discriminator"]`` says which).
    Raises:
        CheckpointError: refused, unreadable, or not a generator faceedit can map (named).
        CheckpointSizeError: over the budget, or a tensor spread over repeated storage.
    """
    path = Path(path)
    budget = Budget.of(max_bytes, str(path))
    obj = load_weights_only(path, max_bytes=budget) if obj is None else obj
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a rosinality checkpoint dict")
    key = "g_ema" if "g_ema" in obj else ("g" if "g" in obj else None)
    if key is None or not isinstance(obj[key], dict):
        raise CheckpointError(f"{path} has no generator state 'g_ema' (keys: {sorted(map(str, obj))[:8]})")
    if key == "g":
        log.warning("%s has no g_ema; using the training generator g", path)
    where = f"{path} ({key})"
    sd = _tensor_dict(obj, key, where)
    cfg, state = rosinality_to_native_state(sd, where)
    args = obj.get("args")
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "lr_mlp", None), (int, float)) \
            and not isinstance(args.lr_mlp, bool):
        cfg["mapping_lr_mul"] = float(args.lr_mlp)
    la = obj.get("latent_avg")
    prov = {"source_format": "rosinality-pt", "source_key": key, "source_file": path.name}
    if isinstance(la, torch.Tensor) and la.numel() == cfg["w_dim"]:
        check_tensor_geometry(la, "latent_avg", str(path))
        state["mapping.w_avg"] = la.reshape(-1)
    else:
        state["mapping.w_avg"] = torch.zeros(cfg["w_dim"])
        prov["w_avg"] = f"estimated from {W_AVG_SAMPLES} mapped z (seed {W_AVG_SEED}); the file has no latent_avg"
    G = build_network("generator", cfg, f"{where}: the generator its tensors describe", state, budget=budget,
                      state_where=where)
    if "w_avg" in prov:
        with torch.no_grad():
            z = torch.randn(W_AVG_SAMPLES, cfg["z_dim"], generator=torch.Generator().manual_seed(W_AVG_SEED))
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    D, prov["discriminator"] = None, "the file has no discriminator"
    if isinstance(obj.get("d"), dict):
        try:
            D = _read_discriminator(obj, f"{path} (d)", budget)
            prov["discriminator"] = "converted"
        except CheckpointError as e:
            prov["discriminator"] = f"not converted: {e}"
            log.warning("%s; the model converts without a discriminator", e)
    return {"G": G, "D": D, "provenance": prov}


def _read_discriminator(obj: dict, where: str, budget: Budget):
    sd = _tensor_dict(obj, "d", where)
    cfg, state = rosinality_d_to_native_state(sd, where)
    return build_network("discriminator", cfg, f"{where}: the discriminator its tensors describe", state,
                         budget=budget, state_where=where)


__all__ = ["read_rosinality", "load_weights_only", "rosinality_to_native_state", "native_to_rosinality_state",
           "rosinality_d_to_native_state"]
