"""Hostile and damaged checkpoints: refused with a clear error, nothing executed, nothing written.

Every hostile payload here tries to create a marker file (through ``os.system``, ``eval``,
``subprocess``, ...). After each load attempt the marker must not exist: a refusal that
happened *after* the payload ran would still fail the test. Files are generated here; no
binary blobs are checked in.

Readers exercised: ``faceedit.checkpoints.load_model`` (native folder/zip, NVIDIA ``.pkl``,
rosinality ``.pt``), ``safe_pickle.load_restricted``, and the CLI ``faceedit convert``
(exit code 1 and a one-line error, never a traceback).
"""
from __future__ import annotations

import builtins
import functools
import importlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from faceedit.checkpoints import CheckpointError, load_model, save_native
from faceedit.networks import Discriminator, Generator

TINY = dict(z_dim=16, w_dim=16, resolution=16, channel_base=64, channel_max=16, mapping_layers=2)


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A valid tiny native checkpoint (G + D) to start damaged copies from."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_native(d, Generator(**TINY), name="tiny", D=Discriminator(16, channel_base=64, channel_max=16))
    return d


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), f"a payload ran: {m} was created"


@pytest.fixture
def fake_nvidia_modules():
    """Importable stand-ins for NVIDIA's ``torch_utils.persistence`` / ``dnnlib.util`` so that
    ``pickle.dumps`` can write the same GLOBAL opcodes their checkpoints contain."""
    made = {}
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        if name not in sys.modules:
            made[name] = sys.modules[name] = types.ModuleType(name)

    def _reconstruct_persistent_obj(meta):  # never called by the code under test
        raise AssertionError("executed")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    yield _reconstruct_persistent_obj
    for name in made:
        sys.modules.pop(name, None)


class Reduce:
    """Pickles as ``fn(*args)``: the classic code-execution payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def cli(args):
    from faceedit.cli import cli as group

    return CliRunner().invoke(group, args, catch_exceptions=True)


def assert_clean_failure(result, *needles):
    """Exit code 1, an ``Error:`` line, no traceback, and the expected words."""
    out = result.output
    assert result.exit_code == 1, (result.exit_code, out, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and "Error:" in out, out
    for n in needles:
        assert n.lower() in out.lower(), (n, out)


def _u(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


# --------------------------------------------------------------------------- payloads
def payloads(marker: Path) -> dict:
    """name -> pickle bytes; each would create ``marker`` if executed."""
    m = str(marker)
    touch = f"touch {m}"
    py = f"open({m!r}, 'w').close()"
    out = {
        "os.system": pickle.dumps(Reduce(os.system, touch), protocol=2),
        "builtins.eval": pickle.dumps(Reduce(builtins.eval, py), protocol=4),
        "builtins.exec": pickle.dumps(Reduce(builtins.exec, py), protocol=2),
        "subprocess.Popen": pickle.dumps(Reduce(subprocess.Popen, ["touch", m]), protocol=4),
        "subprocess.check_call": pickle.dumps(Reduce(subprocess.check_call, ["touch", m]), protocol=3),
        "importlib.import_module": pickle.dumps(Reduce(importlib.import_module, "os"), protocol=2),
        "functools.partial": pickle.dumps(Reduce(functools.partial(os.system, touch)), protocol=2),
        # getattr(__import__('os'), 'system')('touch M'), spelled with raw opcodes
        "getattr chain": (b"\x80\x02" + _glob("builtins", "getattr") + _glob("builtins", "__import__")
                          + _u("os") + b"\x85R" + _u("system") + b"\x86R" + _u(touch) + b"\x85R."),
        # protocol 0 INST opcode, no REDUCE at all
        "INST os.system": b"(S'" + touch.encode() + b"'\nios\nsystem\n.",
        # protocol 0 name that fix_imports maps to builtins
        "__builtin__.eval": b"c__builtin__\neval\n(S\"" + py.encode() + b"\"\ntR.",
        # STACK_GLOBAL with computed names
        "STACK_GLOBAL posix.system": (b"\x80\x04" + b"\x8c\x05posix" + b"\x8c\x06system" + b"\x93"
                                      + b"\x8c" + bytes([len(touch)]) + touch.encode() + b"\x85R."),
        # an allowed name used as a springboard: BUILD on a persistence record
        "copyreg._reconstructor": (b"\x80\x02" + _glob("copyreg", "_reconstructor") + _glob("os", "system")
                                   + _glob("builtins", "object") + b"N\x87R."),
        # EXT opcode: extension registry lookups must not bypass find_class
        "EXT1": b"\x80\x02\x82\x01.",
        "numpy object dtype": b"\x80\x02" + _glob("numpy", "dtype") + _u("O") + b"\x85R.",
        "torch.load": pickle.dumps(Reduce(torch.load, m), protocol=2),
    }
    return out


def nested_storage_payload(marker: Path, fake_modules, kind: str) -> bytes:
    """An NVIDIA-shaped pickle whose tensor storage is ``torch.storage._load_from_bytes(B)`` and
    B is itself a hostile pickle (``kind='torch.save'``: a torch zip; ``'raw'``: a plain pickle)."""
    if kind == "torch.save":
        buf = io.BytesIO()
        torch.save(Reduce(os.system, f"touch {marker}"), buf)
        inner = buf.getvalue()
    elif kind == "legacy":
        buf = io.BytesIO()
        torch.save(Reduce(os.system, f"touch {marker}"), buf, _use_new_zipfile_serialization=False)
        inner = buf.getvalue()
    else:
        inner = pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2)
    storage = Reduce(torch.storage._load_from_bytes, inner)
    tensor = Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1,), (1,), False, None)
    meta = {"type": "class", "version": 6, "class_name": "Generator", "module_src": "import os",
            "state": {"_parameters": {"w": tensor}, "_buffers": {}, "_modules": {},
                      "_init_args": (), "_init_kwargs": {"z_dim": 16, "w_dim": 16, "img_resolution": 16}}}
    return pickle.dumps({"G_ema": Reduce(fake_modules, meta)}, protocol=2)


def deep_record_payload(depth: int) -> bytes:
    """A generator record whose sub-module chain is ``depth`` records deep (built with raw
    opcodes: no pickler could write it). Tests recursion limits in the readers."""
    rec = _glob("torch_utils.persistence", "_reconstruct_persistent_obj")
    head = b"\x80\x02" + _u("G_ema")
    kw = (b"}(" + _u("z_dim") + b"K\x10" + _u("w_dim") + b"K\x10" + _u("img_resolution") + b"K\x10"
          + _u("synthesis_kwargs") + b"}(" + _u("channel_base") + b"K@" + _u("channel_max") + b"K\x10uu")
    level = rec + b"}(" + _u("type") + _u("class") + _u("class_name") + _u("Generator") + _u("module_src") + _u("")
    open_ = level + _u("state") + b"}(" + _u("_init_kwargs") + kw + _u("_modules") + b"}(" + _u("m")
    close = b"uuu\x85R"
    body = open_ * depth + b"N" + close * depth
    return b"\x80\x02}(" + head[2:] + body + b"u."


# --------------------------------------------------------------------------- pickles
@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_hostile_pickles_refused_nothing_runs(tmp_path, marker, suffix):
    for name, data in payloads(marker).items():
        f = tmp_path / f"evil_{len(name)}{suffix}"
        f.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load_model(f)
        msg = str(e.value)
        assert "refused" in msg.lower() or "not a" in msg.lower() or "not readable" in msg.lower() \
            or "cannot" in msg.lower(), (name, msg)
        assert not marker.exists(), name


def test_hostile_pickle_message_names_culprit(tmp_path, marker):
    f = tmp_path / "evil.pkl"
    f.write_bytes(payloads(marker)["os.system"])
    with pytest.raises(CheckpointError, match=r"(posix|os)\.system.*nothing in it was executed"):
        load_model(f)


@pytest.mark.parametrize("kind", ["torch.save", "legacy", "raw"])
def test_nested_storage_bytes_are_not_unpickled_unsafely(tmp_path, marker, fake_nvidia_modules, kind):
    f = tmp_path / "nested.pkl"
    f.write_bytes(nested_storage_payload(marker, fake_nvidia_modules, kind))
    with pytest.raises(CheckpointError, match="nested tensor storage"):
        load_model(f)


def test_torch_save_archives_with_payloads(tmp_path, marker, fake_nvidia_modules):
    evil = Reduce(os.system, f"touch {marker}")
    # rosinality-looking .pt (weights_only path), new and legacy containers
    for i, kw in enumerate([{}, {"_use_new_zipfile_serialization": False}]):
        f = tmp_path / f"evil{i}.pt"
        torch.save({"g_ema": {"style.1.weight": evil}}, f, **kw)
        with pytest.raises(CheckpointError, match="refused|not a readable|not a checkpoint"):
            load_model(f)
    # torch.save zip that names torch_utils.persistence (restricted-unpickler path)
    f = tmp_path / "nv_in_zip.pt"
    torch.save({"G_ema": Reduce(fake_nvidia_modules, {"type": "class"}), "x": evil}, f)
    with pytest.raises(CheckpointError):
        load_model(f)


def test_torch_zip_storage_key_traversal(tmp_path, fake_nvidia_modules):
    """A persistent id whose storage key is ``../../x`` must not read outside ``data/``."""
    from faceedit.checkpoints.safe_pickle import load_restricted

    buf = io.BytesIO()
    torch.save({"t": torch.zeros(2), "G_ema": Reduce(fake_nvidia_modules, {"type": "class"})}, buf)
    z_in = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = tmp_path / "trav.pt"
    with zipfile.ZipFile(out, "w") as z:
        for n in z_in.namelist():
            data = z_in.read(n)
            if n.endswith("data.pkl"):
                data = data.replace(b"\x8c\x010", b"\x8c\x07../../x") if b"\x8c\x010" in data else \
                    data.replace(b"X\x01\x00\x00\x000", b"X\x07\x00\x00\x00../../x")
                assert b"../../x" in data
            z.writestr(n, data)
    with pytest.raises(CheckpointError, match="missing|refused|unexpected"):
        load_restricted(out)


def test_deeply_nested_records_do_not_crash(tmp_path, fake_nvidia_modules):
    f = tmp_path / "deep.pkl"
    f.write_bytes(deep_record_payload(20000))
    with pytest.raises(CheckpointError, match="nested far deeper"):
        load_model(f)


def test_pickle_length_bombs(tmp_path):
    cases = {
        "BINBYTES8 2^62": b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 62) + b"abc",
        "BINUNICODE 2^31": b"\x80\x02X" + struct.pack("<I", 2 ** 31) + b"abc",
        "LONG4 huge": b"\x80\x02\x8b" + struct.pack("<i", 2 ** 31 - 1) + b"\x01",
        # found by fuzzing: the C unpickler grows its memo to 2x the index (GBs for a 300-byte file)
        "LONG_BINPUT memo bomb": b"\x80\x02}r" + struct.pack("<I", 0x08000000) + b".",
        "LONG_BINGET memo bomb": b"\x80\x02}h\x00j" + struct.pack("<I", 0x40000000) + b".",
        "truncated": pickle.dumps({"G_ema": 1}, protocol=2)[:-3],
        "empty": b"",
        "one byte": b"\x80",
    }
    import resource
    import time

    for name, data in cases.items():
        f = tmp_path / "bomb.pkl"
        f.write_bytes(data)
        rss0, t = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        with pytest.raises(CheckpointError):
            load_model(f)
        assert time.perf_counter() - t < 5, name
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000, name  # KiB


def test_convert_cli_refuses_and_writes_nothing(tmp_path, marker):
    src = tmp_path / "in"
    src.mkdir()
    before = set(os.listdir(tmp_path))
    for i, (name, data) in enumerate(payloads(marker).items()):
        f = src / f"evil{i}.pkl"
        f.write_bytes(data)
        dst = tmp_path / f"out{i}"
        r = cli(["convert", str(f), str(dst)])
        assert_clean_failure(r)
        assert not dst.exists() or not any(dst.iterdir()), name
    assert set(os.listdir(tmp_path)) - before <= {"PWNED"} - {"PWNED"}, os.listdir(tmp_path)


# --------------------------------------------------------------------------- safetensors
def _st(header: dict, data: bytes, *, pad=True) -> bytes:
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def _copy_ckpt(src: Path, dst: Path, model_bytes: bytes | None = None, config: bytes | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_bytes(config if config is not None else (src / "config.json").read_bytes())
    (dst / "model.safetensors").write_bytes(model_bytes if model_bytes is not None
                                            else (src / "model.safetensors").read_bytes())
    return dst


def _state(tiny_dir):
    from safetensors.torch import load_file

    return load_file(tiny_dir / "model.safetensors")


def test_tiny_checkpoint_loads(tiny_dir):
    m = load_model(tiny_dir, with_discriminator=True)
    assert m.G.resolution == 16 and m.D is not None


@pytest.mark.parametrize("damage", ["shape", "dtype_int", "dtype_bool", "missing", "extra", "nan", "inf"])
def test_safetensors_wrong_content(tmp_path, tiny_dir, damage):
    from safetensors.torch import save

    st = _state(tiny_dir)
    k = "G_ema.mapping.net.0.weight"
    if damage == "shape":
        st[k] = torch.zeros(3, 5)
    elif damage == "dtype_int":
        st[k] = st[k].to(torch.int32)
    elif damage == "dtype_bool":
        st[k] = st[k] > 0
    elif damage == "missing":
        del st[k]
    elif damage == "extra":
        st["G_ema.backdoor"] = torch.zeros(1)
    elif damage == "nan":
        st[k][0, 0] = float("nan")
    elif damage == "inf":
        st[k][0, 0] = float("inf")
    d = _copy_ckpt(tiny_dir, tmp_path / damage, save(st))
    with pytest.raises(CheckpointError, match="shape|dtype|missing|unexpected|NaN"):
        load_model(d)
    assert_clean_failure(cli(["convert", str(d), str(tmp_path / "o")]))


def _raw_headers():
    f32 = b"\x00" * 64
    return {
        "overlapping offsets": _st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                    "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, f32[:24]),
        "offset past end": _st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, f32),
        "negative offset": _st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, f32),
        "offsets reversed": _st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, f32),
        "shape/size mismatch": _st({"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 16]}}, f32[:16]),
        "huge shape": _st({"a": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 16]}}, f32[:16]),
        "unknown dtype": _st({"a": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}, f32[:16]),
        "gap": _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32[:16]),
        "header not json": struct.pack("<Q", 8) + b"not json" + f32,
        "header is a list": _st([1, 2, 3], f32),  # type: ignore[arg-type]
        "header len past end": struct.pack("<Q", 1 << 40) + b"{}",
        "header len 2^64-1": struct.pack("<Q", (1 << 64) - 1) + b"{}",
        "truncated": b"\x10\x00",
        "empty": b"",
        "a pickle": pickle.dumps({"G_ema.x": 1}, protocol=2),
    }


@pytest.mark.parametrize("name", list(_raw_headers()))
def test_safetensors_malformed_container(tmp_path, tiny_dir, name):
    d = _copy_ckpt(tiny_dir, tmp_path / "c", _raw_headers()[name])
    with pytest.raises(CheckpointError):
        load_model(d)


def test_safetensors_truncated_real_file(tmp_path, tiny_dir):
    raw = (tiny_dir / "model.safetensors").read_bytes()
    for cut in (7, 8, 100, len(raw) // 2, len(raw) - 1):
        d = _copy_ckpt(tiny_dir, tmp_path / f"t{cut}", raw[:cut])
        with pytest.raises(CheckpointError, match="safetensors|truncated"):
            load_model(d)


# --------------------------------------------------------------------------- config.json
def _cfg(tiny_dir, **gen_changes) -> bytes:
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["generator"].update(gen_changes)
    return json.dumps(cfg).encode()


def bad_configs(tiny_dir) -> dict:
    good = json.loads((tiny_dir / "config.json").read_text())
    return {
        "oversized": json.dumps({**good, "pad": "x" * (2 << 20)}).encode(),
        "not json": b"{format: faceedit",
        "not utf8": b"\xff\xfe\x00{",
        "a list": b"[1, 2]",
        "deeply nested": b"[" * 200_000 + b"]" * 200_000,
        "wrong format": json.dumps({**good, "format": "other"}).encode(),
        "no generator": json.dumps({k: v for k, v in good.items() if k != "generator"}).encode(),
        "generator is a string": json.dumps({**good, "generator": "Generator()"}).encode(),
        "unknown setting": _cfg(tiny_dir, __class__="os.system"),
        "string for int": _cfg(tiny_dir, z_dim="16"),
        "bool for int": _cfg(tiny_dir, z_dim=True),
        "float for int": _cfg(tiny_dir, w_dim=16.5),
        "negative": _cfg(tiny_dir, z_dim=-1),
        "zero": _cfg(tiny_dir, w_dim=0),
        "NaN lr": _cfg(tiny_dir, mapping_lr_mul=float("nan")),
        "resolution not 2^k": _cfg(tiny_dir, resolution=48),
        "resolution huge": _cfg(tiny_dir, resolution=1 << 20),
        "channels huge": _cfg(tiny_dir, channel_base=1 << 22, channel_max=4096, resolution=1024),
        "z_dim 1e9": _cfg(tiny_dir, z_dim=10 ** 9),
        "mapping_kind evil": _cfg(tiny_dir, mapping_kind="__import__('os')"),
        "no channels": _cfg(tiny_dir, channel_base=8),
        "discriminator not a table": json.dumps({**good, "discriminator": [1]}).encode(),
        "discriminator huge": json.dumps({**good, "discriminator": {"resolution": 1024, "channel_base": 1 << 22,
                                                                      "channel_max": 4096}}).encode(),
    }


def test_bad_configs_refused_quickly(tmp_path, tiny_dir):
    import time

    for name, raw in bad_configs(tiny_dir).items():
        d = _copy_ckpt(tiny_dir, tmp_path / "c", config=raw)
        t = time.perf_counter()
        with pytest.raises(CheckpointError):
            load_model(d, with_discriminator=name.startswith("discriminator"))
        assert time.perf_counter() - t < 5, name  # refused before allocating anything big


def test_bad_config_cli_exit_code(tmp_path, tiny_dir):
    d = _copy_ckpt(tiny_dir, tmp_path / "c", config=bad_configs(tiny_dir)["deeply nested"])
    assert_clean_failure(cli(["convert", str(d), str(tmp_path / "out")]), "config.json")


# --------------------------------------------------------------------------- zips
def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "tiny/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt",
                                  "C:/evil.txt"])
def test_zip_traversal_refused_nothing_written(tmp_path, tiny_dir, evil):
    work = tmp_path / "work"
    work.mkdir()
    z = _zip(work / "ckpt.zip", {"config.json": (tiny_dir / "config.json").read_bytes(),
                                 "model.safetensors": (tiny_dir / "model.safetensors").read_bytes(),
                                 evil: b"pwned"})
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError, match="outside the archive"):
        load_model(z)
    r = cli(["convert", str(z), str(work / "out")])
    assert_clean_failure(r, "outside the archive")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"pwned"


def test_zip_valid_roundtrip_and_damage(tmp_path, tiny_dir):
    entries = {"config.json": (tiny_dir / "config.json").read_bytes(),
               "model.safetensors": (tiny_dir / "model.safetensors").read_bytes()}
    good = _zip(tmp_path / "good.zip", entries)
    ref = load_model(tiny_dir)
    m = load_model(good)
    assert m.sha256 == ref.sha256
    # flip bytes inside the stored safetensors: CRC error -> CheckpointError, not BadZipFile
    raw = bytearray(good.read_bytes())
    i = raw.find(b"G_ema.") + 4000
    raw[i:i + 8] = b"\x00\xff" * 4
    bad = tmp_path / "crc.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_model(bad)
    # truncated zip
    (tmp_path / "cut.zip").write_bytes(good.read_bytes()[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "cut.zip")


def test_zip_entry_size_limit(tmp_path, tiny_dir):
    """Entries are charged to the size budget by their declared size, before they are inflated."""
    from faceedit.checkpoints.budget import CheckpointSizeError

    z = _zip(tmp_path / "ckpt.zip", {"config.json": (tiny_dir / "config.json").read_bytes(),
                                     "model.safetensors": (tiny_dir / "model.safetensors").read_bytes()})
    g_bytes = 4 * sum(Generator.size(**TINY))
    with pytest.raises(CheckpointSizeError, match=r"zip entry model\.safetensors .* above the .* limit.*max_bytes="):
        load_model(z, max_bytes=g_bytes + 1000)
    assert load_model(z, max_bytes=g_bytes + (tiny_dir / "model.safetensors").stat().st_size).G.resolution == 16


def test_zip_with_oversized_config(tmp_path, tiny_dir):
    z = _zip(tmp_path / "ckpt.zip", {"config.json": b" " * (2 << 20),
                                     "model.safetensors": (tiny_dir / "model.safetensors").read_bytes()})
    with pytest.raises(CheckpointError, match="over"):
        load_model(z)


@pytest.mark.parametrize("suffix", [".pt", ".zip"])
def test_zip_with_undecodable_entry_name(tmp_path, suffix):
    """Found by fuzzing: an entry flagged UTF-8 whose name is not UTF-8 made ``zipfile`` raise
    ``UnicodeDecodeError`` while sniffing the file kind."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("arch/data\u00e9.pkl", b"x")
    raw = buf.getvalue().replace("\u00e9".encode(), b"\x85\x85")
    f = tmp_path / f"bad{suffix}"
    f.write_bytes(raw)
    with pytest.raises(CheckpointError):
        load_model(f)


# --------------------------------------------------------------------------- TensorFlow pickles
@pytest.fixture
def fake_tflib():
    """An importable stand-in for ``dnnlib.tflib.network.Network`` that pickles to whatever
    state it is given, so hostile TF-shaped files can be written with ``pickle.dumps``."""
    made = {}
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        if name not in sys.modules:
            made[name] = sys.modules[name] = types.ModuleType(name)

    class Network:
        def __init__(self, **state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    sys.modules["dnnlib.tflib.network"].Network = Network
    yield Network
    for name in made:
        sys.modules.pop(name, None)


class RawArray:
    """Pickles as numpy does (``_reconstruct(ndarray, (0,), b'b')`` + BUILD) with any state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        import numpy as np

        core = np._core if hasattr(np, "_core") else np.core
        return core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state


def _tf_state(**over):
    import numpy as np

    st = dict(version=4, name="Gs", static_kwargs={"resolution": 16}, components={}, build_module_src="",
              build_func_name="G_main", variables=[("dlatent_avg", np.zeros(16, np.float32))])
    st.update(over)
    return st


def tf_payloads(Network, marker: Path) -> dict:
    """name -> TF-shaped pickle bytes (each names dnnlib.tflib.network first, so it reaches the TF reader)."""
    import numpy as np

    touch = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').close()"
    f4 = np.dtype("f4")
    return {
        "os.system as a variable": pickle.dumps(Network(**_tf_state(variables=[("x", Reduce(os.system, touch))])), 2),
        "eval in static_kwargs": pickle.dumps(Network(**_tf_state(static_kwargs={"a": Reduce(builtins.eval, py)})),
                                              4),
        "exec as a component": pickle.dumps(Network(**_tf_state(components={"m": Reduce(builtins.exec, py)})), 3),
        "unknown global": pickle.dumps((Network(**_tf_state()), Reduce(types.SimpleNamespace), None), 3),
        "torch tensor variable": pickle.dumps(Network(**_tf_state(variables=[("x", torch.zeros(2))])), 2),
        "oversized array claim": pickle.dumps(Network(**_tf_state(
            variables=[("x", RawArray((1, (1 << 40,), f4, False, b"\0" * 16)))])), 3),
        "negative shape": pickle.dumps(Network(**_tf_state(variables=[("x", RawArray((1, (-4,), f4, False,
                                                                                     b"")))])), 4),
        "object dtype": pickle.dumps(Network(**_tf_state(variables=[("x", RawArray(
            (1, (1,), np.dtype("O"), False, [Reduce(os.system, touch)])))])), 2),
        "complex dtype": pickle.dumps(Network(**_tf_state(variables=[("x", RawArray(
            (1, (1,), np.dtype("c8"), False, b"\0" * 8)))])), 3),
        "string dtype": pickle.dumps(Network(**_tf_state(variables=[("x", np.array(["ab"]))])), 3),
        "Network with arguments": (b"\x80\x02" + _glob("dnnlib.tflib.network", "Network") + _u(touch)
                                   + b"\x85R."),
        "Network state twice": (b"\x80\x02" + _glob("dnnlib.tflib.network", "Network") + b")\x81"
                                + b"}b}b."),
        "not a Network state": pickle.dumps(Network(**_tf_state(version="4")), 3),
    }


def test_hostile_tf_pickles_refused_nothing_runs(tmp_path, marker, fake_tflib):
    from faceedit.checkpoints.convert import sniff
    from faceedit.checkpoints.tf_pickle import read_tf_pickle

    for name, data in tf_payloads(fake_tflib, marker).items():
        f = tmp_path / "evil.pkl"
        f.write_bytes(data)
        assert sniff(f) == "nvidia-tf", name
        for reader in (read_tf_pickle, load_model):
            with pytest.raises(CheckpointError):
                reader(f)
            assert not marker.exists(), name


def test_hostile_tf_messages_name_what_was_found(tmp_path, marker, fake_tflib):
    from faceedit.checkpoints.tf_pickle import read_tf_pickle

    p = tf_payloads(fake_tflib, marker)
    expect = {"os.system as a variable": r"(posix|os)\.system.*nothing in it was executed",
              "oversized array claim": r"claims shape \(1099511627776,\)",
              "object dtype": r"numpy.dtype\('O", "complex dtype": "complex64",
              "Network with arguments": "constructed with arguments", "Network state twice": "state twice",
              "not a Network state": "version"}
    for name, pattern in expect.items():
        f = tmp_path / "evil.pkl"
        f.write_bytes(p[name])
        with pytest.raises(CheckpointError, match=pattern):
            read_tf_pickle(f)


def test_tf_build_module_src_never_runs_and_cycles_are_refused(tmp_path, marker, fake_tflib):
    import numpy as np

    from faceedit.checkpoints.tf_pickle import read_tf_pickle

    src = f"import os\nos.system('touch {marker}')\nexec('raise SystemExit')\n"
    f = tmp_path / "ok.pkl"
    f.write_bytes(pickle.dumps(fake_tflib(**_tf_state(build_module_src=src)), protocol=3))
    net = read_tf_pickle(f)["Gs"]
    assert not marker.exists() and not hasattr(net, "build_module_src")
    np.testing.assert_array_equal(net.variables["dlatent_avg"], np.zeros(16, np.float32))
    a = fake_tflib(**_tf_state())
    a._state["components"] = {"self": a}
    f.write_bytes(pickle.dumps(a, protocol=3))
    with pytest.raises(CheckpointError, match="cycle"):
        read_tf_pickle(f)
