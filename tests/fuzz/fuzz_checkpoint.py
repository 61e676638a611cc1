"""Fuzz target: the checkpoint readers on arbitrary bytes.

The first input byte picks the reader, the rest is the file:
0: an NVIDIA ``.pkl`` (restricted unpickler, ``read_nvidia``) through ``load_model``;
1: a ``.pt`` (sniffing, ``torch.load(weights_only=True)``, rosinality mapping) through ``load_model``;
2: a native ``.zip`` through ``load_model``;
3: ``model.safetensors`` of a native folder (valid tiny config) through ``load_native``;
4: ``config.json`` text (``native._parse_config`` and the architecture checks).
Documented errors: ``CheckpointError`` (``UnsafePickleError`` included). A payload that
runs creates a marker file, which is a finding too.
"""
import io
import os
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atheris  # noqa: E402

with atheris.instrument_imports(include=["faceedit"]):
    import torch

    from faceedit.checkpoints import CheckpointError, load_model, native, save_native
    from faceedit.networks import Generator

ALLOWED = (CheckpointError,)
WORK = tempfile.mkdtemp(prefix="fuzz-ckpt-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
MARKER = os.path.join(WORK, "PWNED")
TINY = dict(z_dim=8, w_dim=8, resolution=16, channel_base=32, channel_max=8, mapping_layers=1)
torch.manual_seed(0)
_G = Generator(**TINY)
FOLDER = os.path.join(WORK, "native")
save_native(FOLDER, _G, name="tiny")
GOOD_MODEL = open(os.path.join(FOLDER, "model.safetensors"), "rb").read()
GOOD_CONFIG = open(os.path.join(FOLDER, "config.json"), "rb").read()


KINDS = ("pkl", "pt", "zip", "safetensors", "config")
FIXED = os.environ.get("FACEEDIT_FUZZ_KIND")  # run_fuzz.py pins one reader per target


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = (KINDS.index(FIXED), data) if FIXED else (data[0] % 5, data[1:])
    try:
        if kind in (0, 1, 2):
            p = os.path.join(WORK, "f" + (".pkl", ".pt", ".zip")[kind])
            with open(p, "wb") as f:
                f.write(body)
            load_model(p)
        elif kind == 3:
            with open(os.path.join(FOLDER, "model.safetensors"), "wb") as f:
                f.write(body)
            native.load_native(FOLDER)
        else:
            native._parse_config(body, "fuzz")
    finally:
        if os.path.exists(MARKER):
            os.unlink(MARKER)
            raise AssertionError("a payload in the file was executed")


def seeds() -> list:
    import pickle

    out = [b"\x03" + GOOD_MODEL, b"\x04" + GOOD_CONFIG]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", GOOD_CONFIG)
        z.writestr("model.safetensors", GOOD_MODEL)
    out.append(b"\x02" + buf.getvalue())
    # rosinality-like .pt: a dict of tensors, new and legacy containers
    sd = {"g_ema": {"style.1.weight": torch.zeros(8, 8), "input.input": torch.zeros(1, 8, 4, 4)},
          "latent_avg": torch.zeros(8)}
    for legacy in (False, True):
        b = io.BytesIO()
        torch.save(sd, b, _use_new_zipfile_serialization=not legacy)
        out.append(b"\x01" + b.getvalue())
    # NVIDIA-like pickles (raw opcodes: the GLOBALs such files contain)
    def g(m, n):
        return b"c" + m.encode() + b"\n" + n.encode() + b"\n"
    nested = io.BytesIO()
    torch.save(torch.zeros(4).untyped_storage(), nested)
    meta = pickle.dumps({"type": "class", "version": 6, "class_name": "Generator", "module_src": "",
                         "state": {"_init_kwargs": {"z_dim": 8, "w_dim": 8, "img_resolution": 16},
                                   "_parameters": {}, "_buffers": {}, "_modules": {}}}, protocol=2)[2:-1]
    rec = g("torch_utils.persistence", "_reconstruct_persistent_obj") + meta + b"\x85R"
    out.append(b"\x00\x80\x02}X\x05\x00\x00\x00G_emaq\x00" + rec + b"s.")
    st = (g("torch._utils", "_rebuild_tensor_v2") + b"(" + g("torch.storage", "_load_from_bytes")
          + pickle.dumps(nested.getvalue(), protocol=3)[2:-1] + b"\x85RK\x00K\x04\x85K\x01\x85\x89Nt R")
    out.append(b"\x00\x80\x03" + st + b".")
    out.append(b"\x00" + pickle.dumps({"G_ema": None, "x": [1, 2.0, "s", (3,)]}, protocol=2))
    return out


def seeds_for_kind() -> list:
    all_ = seeds()
    if not FIXED:
        return all_
    return [s[1:] for s in all_ if s[0] % 5 == KINDS.index(FIXED)]


if __name__ == "__main__":
    from _harness import main

    main(FIXED or "checkpoint", one_input, ALLOWED, seeds_for_kind)
