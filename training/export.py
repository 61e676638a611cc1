"""What a training chunk hands back: a shippable checkpoint, a compact resume state, logs.

Each file stays under ``MAX_FILE_BYTES`` (16 MiB) so that a chunk's results can be carried
off a training machine as a few small files, and the two shipped models train side by
side, so each run exports exactly three files into the export folder (``NAME`` = ``faces64`` or ``faces64-wpp``):

* ``NAME.zip``: a native checkpoint without its discriminator (``config.json`` and
  ``model.safetensors`` holding G_ema in fp16; ``faceedit.checkpoints.load_native``
  reads the zip as is) plus the run's ``loss.csv``, ``gsnr.csv``, ``samples.png``,
  ``gsnr.png`` (where matplotlib exists) and ``train.json`` (summary, profile);
* ``NAME.disc.safetensors``: the discriminator in fp16, byte for byte the native
  ``discriminator.safetensors``;
* ``NAME.resume.safetensors``: the training generator G in fp16, the path-length mean,
  the counters and the config (G_ema and D come from the two files above).

:func:`unpack` turns these into a native checkpoint folder (``checkpoints/weights/NAME``);
:func:`resume_from_export` continues training from them on a fresh machine. Adam's
moments are not exported (they would double the size): a resumed chunk restarts Adam,
which with ``beta1 = 0`` only has to re-estimate the second moment (about 100 steps at
``beta2 = 0.99``; Adam's bias correction covers the start).
"""
from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import torch

from faceedit.core.errors import TrainingError
from faceedit.core.files import atomic_write_bytes

from .loop import STATE_FORMAT, TrainConfig, Trainer, _load_module, read_state_metadata

log = logging.getLogger(__name__)

LICENSE = "non-commercial research only (UTKFace, CelebA terms)"
MAX_FILE_BYTES = 16 * 2 ** 20
LOG_FILES = ("loss.csv", "gsnr.csv", "kid.csv", "samples.png", "gsnr.png", "train.json")


def export_names(name: str) -> dict:
    return {"zip": f"{name}.zip", "disc": f"{name}.disc.safetensors", "resume": f"{name}.resume.safetensors"}


def _fp16(module: torch.nn.Module, prefix: str) -> dict:
    return {f"{prefix}.{k}": (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in module.state_dict().items()}


def export_run(trainer: Trainer, out_dir, name: str, *, recipe: dict | None, provenance: dict,
               extra_files: dict | None = None) -> dict:
    """Write the three export files of ``trainer`` into ``out_dir`` (see module docstring).

    Args:
        trainer: the trained state.
        out_dir: export folder.
        name: model name (``faces64`` / ``faces64-wpp``).
        recipe: alignment recipe dict of the training data.
        provenance: facts recorded in ``config.json`` (kimg, steps, minutes, data, ...).
        extra_files: ``{file name: bytes}`` added to the zip (logs, plots, summary).
    Returns:
        ``{kind: path}`` of the written files.
    Raises:
        TrainingError: a file would exceed ``MAX_FILE_BYTES``.
    """
    import tempfile

    from safetensors.torch import save

    from faceedit.checkpoints.native import save_native

    out_dir = Path(out_dir)
    names = export_names(name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_native(Path(tmp) / name, trainer.G_ema, name=name, D=trainer.D, recipe=recipe,
                             license=LICENSE, provenance=provenance, dtype=torch.float16)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("config.json", (folder / "config.json").read_bytes())
            z.writestr(zipfile.ZipInfo("model.safetensors"), (folder / "model.safetensors").read_bytes(),
                       compress_type=zipfile.ZIP_STORED)
            for fname, data in (extra_files or {}).items():
                z.writestr(fname, data)
        blobs = {"zip": buf.getvalue(), "disc": (folder / "discriminator.safetensors").read_bytes()}
    t = _fp16(trainer.G, "G")
    t["pl_mean"] = trainer.pl_mean.detach().float().cpu().reshape(1)
    meta = {"format": STATE_FORMAT, "kind": "resume-fp16", "name": name,
            "config": json.dumps(trainer.cfg.to_dict()), "counters": json.dumps(trainer.counters())}
    blobs["resume"] = save(t, metadata=meta)
    for kind, data in blobs.items():
        if len(data) > MAX_FILE_BYTES:
            raise TrainingError(f"export file {names[kind]} is {len(data) / 2**20:.1f} MiB, over the 16 MiB "
                                f"limit for one export file; use a smaller architecture")
    return {kind: atomic_write_bytes(out_dir / names[kind], data) for kind, data in blobs.items()}


def find_export(src_dir, name: str) -> dict | None:
    """Paths of ``name``'s three export files in ``src_dir`` (None if any is missing)."""
    src = Path(src_dir)
    paths = {k: src / v for k, v in export_names(name).items()}
    return paths if all(p.is_file() for p in paths.values()) else None


def read_export_config(src_dir, name: str) -> TrainConfig:
    paths = find_export(src_dir, name)
    if paths is None:
        raise FileNotFoundError(f"{src_dir} lacks one of {sorted(export_names(name).values())}")
    meta = read_state_metadata(paths["resume"].read_bytes(), paths["resume"])
    return TrainConfig.from_dict(meta["config"])


def resume_from_export(trainer: Trainer, src_dir, name: str) -> None:
    """Load G, G_ema, D, the path-length mean and the counters from an export (fresh Adam).

    The trainer must have been built with the exported config (:func:`read_export_config`).
    The export's ``loss.csv`` / ``gsnr.csv`` are copied into the trainer's run folder.
    """
    from safetensors.torch import load

    from faceedit.checkpoints.native import load_native

    paths = find_export(src_dir, name)
    if paths is None:
        raise FileNotFoundError(f"cannot resume: {src_dir} lacks one of {sorted(export_names(name).values())}; "
                                f"copy all three files a chunk exported there")
    raw = paths["resume"].read_bytes()
    meta = read_state_metadata(raw, paths["resume"])
    t = load(raw)
    _load_module(trainer.G, t, "G", paths["resume"])
    nat = load_native(paths["zip"])
    trainer.G_ema.load_state_dict(nat.G.state_dict())
    d = load(paths["disc"].read_bytes())
    _load_module(trainer.D, d, "D", paths["disc"])
    trainer.pl_mean.copy_(t["pl_mean"].reshape([]).to(trainer.pl_mean.device))
    trainer._set_counters(meta["counters"])
    torch.manual_seed(trainer.cfg.seed + trainer.step_count)
    if trainer.writes:  # rank 0 under torchrun
        with zipfile.ZipFile(paths["zip"]) as z:
            for fname in ("loss.csv", "gsnr.csv", "kid.csv"):
                if fname in z.namelist():
                    atomic_write_bytes(trainer.run_dir / fname, z.read(fname))
        trainer.load_logs()
    if trainer.dist.is_main:
        log.info("resumed %s from the export in %s at step %d (%.1f kimg); Adam restarted",
                 name, src_dir, trainer.step_count, trainer.kimg)


NATIVE_ARCH_KEYS = {"arch": "arch", "z_dim": "z_dim", "w_dim": "w_dim", "resolution": "resolution",
                    "mapping_kind": "mapping", "mapping_layers": "mapping_layers", "mapping_blocks": "mapping_blocks",
                    "mapping_heads": "mapping_heads", "channel_base": "channel_base", "channel_max": "channel_max"}


def native_train_config(folder, overrides: dict | None = None) -> TrainConfig:
    """A :class:`TrainConfig` for continuing a native checkpoint: its architecture (``arch``
    included: a StyleGAN v1 folder continues as ``stylegan1``), the training settings its
    provenance records, then ``overrides`` (which may not change the architecture).

    Raises:
        TrainingError: an override would change the architecture (another ``arch`` among them),
            or the generator has settings the loop does not build (mapping_lr_mul, colour
            channels, a v1 ``fused_scale`` other than the loop's ``'auto'``).
    """
    from faceedit.checkpoints.native import read_config

    cfg = read_config(Path(folder))
    gen = cfg["generator"]
    arch = {"arch": "stylegan2", **{NATIVE_ARCH_KEYS[k]: v for k, v in gen.items() if k in NATIVE_ARCH_KEYS}}
    if gen.get("mapping_lr_mul", 0.01) != 0.01 or gen.get("img_channels", 3) != 3:
        raise TrainingError(f"{folder}: only generators with mapping_lr_mul 0.01 and 3 colour channels can be "
                         f"trained further here")
    fused = gen.get("fused_scale", "auto")
    if fused != "auto" and not (fused is False and arch["resolution"] < 128):  # False == 'auto' below 128 px
        raise TrainingError(f"{folder}: a StyleGAN v1 generator with fused_scale={fused!r} cannot be trained "
                            f"further here (the loop builds fused_scale 'auto')")
    want = (overrides or {}).get("arch", arch["arch"])
    if want != arch["arch"]:
        raise TrainingError(f"{folder} holds a {arch['arch']} generator; it cannot be continued as {want} "
                            f"(leave out --arch to continue it, or start a fresh {want} run without --init-from)")
    clash = sorted(k for k in (overrides or {}) if k in arch and overrides[k] != arch[k])
    if clash:
        raise TrainingError(f"{folder}: --set {', '.join(clash)} would change the architecture of the checkpoint "
                         f"being continued; start a fresh run for another architecture")
    trained = (cfg.get("provenance") or {}).get("training") or {}
    return TrainConfig.from_dict({**trained, **arch, **(overrides or {})})


def init_from_native(trainer: Trainer, folder) -> None:
    """Continue from a native checkpoint holding only G_ema and D (no optimiser state, no G).

    G and G_ema both start from the checkpoint's G_ema (the training G is not shipped; the
    EMA is the better estimate of it), D from ``discriminator.safetensors``; the image and
    step counters from the checkpoint's provenance, so the EMA ramp-up continues where it
    was; the path-length mean is re-estimated on one batch (starting it at 0 would pull
    every path length to 0 for the first hundred steps); Adam restarts.

    Raises:
        CheckpointError / TrainingError: no discriminator, or an architecture (``arch``
            included) that does not match ``trainer.cfg`` (build the trainer with
            :func:`native_train_config`).
    """
    from faceedit.checkpoints.native import load_native

    folder = Path(folder)
    nat = load_native(folder, with_discriminator=True)
    if nat.G.arch != trainer.cfg.arch:
        raise TrainingError(f"{folder} holds a {nat.G.arch} generator and this run trains a {trainer.cfg.arch} one; "
                            f"build the trainer with native_train_config({str(folder)!r})")
    sd = nat.G.state_dict()
    for mod in (trainer.G, trainer.G_ema):
        own = mod.state_dict()
        if set(own) != set(sd) or any(own[k].shape != sd[k].shape for k in own):
            raise TrainingError(f"{folder}: its generator does not match the training config "
                             f"(build the trainer with native_train_config)")
        mod.load_state_dict(sd)
    trainer.D.load_state_dict(nat.D.state_dict())
    prov = nat.config.get("provenance") or {}
    trainer._set_counters({"step": int(prov.get("steps", 0)), "nimg": int(prov.get("images_seen", 0)),
                           "train_seconds": 60.0 * float(prov.get("minutes", 0.0))})
    trainer.G.requires_grad_(True)
    trainer.D.requires_grad_(True)
    n = max(trainer.cfg.batch // trainer.cfg.pl_batch_shrink, 1)
    if trainer.cfg.pl_weight > 0:
        from .faststep import path_lengths

        lengths = path_lengths(trainer.G, n, trainer.cfg.mixing_prob, trainer.device, "shared", create_graph=False)
        trainer.pl_mean.copy_(lengths.mean().detach())
    torch.manual_seed(trainer.cfg.seed + trainer.step_count)
    if trainer.dist.is_main:
        log.info("continuing %s from G_ema and D at step %d (%.1f kimg); G := G_ema, Adam restarted",
                 folder, trainer.step_count, trainer.kimg)


def unpack(src_dir, name: str, dest) -> Path:
    """Assemble a native checkpoint folder ``dest/name`` from the three export files.

    Writes ``config.json``, ``model.safetensors``, ``discriminator.safetensors`` and the
    logs/plots found in the zip.
    """
    paths = find_export(src_dir, name)
    if paths is None:
        raise FileNotFoundError(f"{src_dir} lacks one of {sorted(export_names(name).values())}")
    folder = Path(dest) / name
    with zipfile.ZipFile(paths["zip"]) as z:
        for fname in z.namelist():
            if "/" in fname or fname.startswith("."):
                raise TrainingError(f"{paths['zip']}: unexpected entry {fname!r}")
            atomic_write_bytes(folder / fname, z.read(fname))
    atomic_write_bytes(folder / "discriminator.safetensors", paths["disc"].read_bytes())
    return folder
