"""Tests of faceedit.checkpoints: native round trips, NVIDIA/rosinality readers, hostile files.

The NVIDIA and rosinality files are built here, from one of our generators with a known
state laid out under their names: NVIDIA pickles through stand-in ``torch_utils.persistence``
and ``dnnlib.util`` modules that exist only while the file is written (so the reader is
shown to need none of them), with the same reconstruction records, module source string,
``EasyDict`` kwargs, numpy scalars and nested-storage tensors NVIDIA's own code writes.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from faceedit.checkpoints import CheckpointError, LoadedModel, load_model, load_native, save_native
from faceedit.checkpoints.convert import convert_file, convert_to_native_in_memory, sniff
from faceedit.checkpoints.native import folder_to_zip_bytes
from faceedit.checkpoints.nvidia import native_to_nvidia_state, read_nvidia
from faceedit.checkpoints.rosinality import native_to_rosinality_state, read_rosinality
from faceedit.checkpoints.safe_pickle import UnsafePickleError, load_restricted
from faceedit.networks import Discriminator, Generator

RES = 32
NUM_BLOCKS = 3  # log2(32) - 2


def make_generator(seed=0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=RES, mapping_layers=2, channel_base=512, channel_max=32, **kw)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.3 * torch.randn_like(p))
        G.mapping.w_avg.copy_(0.5 * torch.randn_like(G.mapping.w_avg))
    return G.eval()


def images(G, n=3, seed=11, psi=0.7):
    with torch.no_grad():
        z = torch.randn(n, *G.z_shape, generator=torch.Generator().manual_seed(seed))
        return G(z, truncation_psi=psi, noise_mode="const")


def assert_same_generator(a: Generator, b: Generator):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(images(a), images(b))


# --- NVIDIA-layout pickles, written without NVIDIA's code ------------------------------------

class FakeNvidia:
    """Stand-ins for ``torch_utils.persistence`` / ``dnnlib.util`` while a test file is written."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch

    def __enter__(self):
        self.ctx = self.mp.context()
        m = self.ctx.__enter__()
        tu, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
        dn, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

        def _reconstruct_persistent_obj(meta):  # never called in these tests
            raise AssertionError("the reader must not call NVIDIA's reconstruction")

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
        tu.persistence = pers

        class EasyDict(dict):
            pass

        EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
        util.EasyDict = EasyDict
        dn.util = util
        for name, mod in [("torch_utils", tu), ("torch_utils.persistence", pers), ("dnnlib", dn),
                          ("dnnlib.util", util)]:
            m.setitem(sys.modules, name, mod)
        self.reconstruct, self.EasyDict = _reconstruct_persistent_obj, EasyDict
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


class Record:
    """Pickles exactly like a ``persistence``-decorated module: a reconstruction call with a meta dict."""

    def __init__(self, fake, class_name, state, module_src):
        self.fake, self.meta = fake, dict(type="class", version=6, module_src=module_src, class_name=class_name,
                                          state=state)

    def __reduce__(self):
        return (self.fake.reconstruct, (self.meta,))


PARAM_LEAVES = {"weight", "bias", "const", "noise_strength"}


def records_from_state(fake, nv_state: dict, init_kwargs: dict, module_src: str, marker_src_ok=True,
                       class_name="Generator") -> Record:
    """Nest NVIDIA-named tensors into module records with ``_parameters`` / ``_buffers`` / ``_modules``."""
    tree = {}
    for name, t in nv_state.items():
        node = tree
        *path, leaf = name.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = t

    def build(node, class_name, kwargs):
        params, bufs, mods = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
        for k, v in node.items():
            if isinstance(v, dict):
                cls = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine": "FullyConnectedLayer",
                       "torgb": "ToRGBLayer"}.get(k, "SynthesisBlock" if k.startswith("b") else
                                                   "FullyConnectedLayer" if k.startswith("fc") else "SynthesisLayer")
                mods[k] = build(v, cls, {})
            elif k in PARAM_LEAVES:
                params[k] = torch.nn.Parameter(v.clone(), requires_grad=False)
            else:
                bufs[k] = v.clone()
        state = dict(training=False, _parameters=params, _buffers=bufs, _non_persistent_buffers_set=set(),
                     _backward_hooks=collections.OrderedDict(), _forward_hooks=collections.OrderedDict(),
                     _modules=mods, _init_args=(), _init_kwargs=kwargs,
                     weight_gain=np.float64(0.25), bias_gain=np.float32(1.0), activation="lrelu")
        return Record(fake, class_name, state, module_src)

    return build(tree, class_name, init_kwargs)


def nvidia_state_of(G: Generator) -> dict:
    sd = native_to_nvidia_state(G.state_dict(), NUM_BLOCKS)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    filt = torch.outer(k, k) / 64
    for name in list(sd):  # NVIDIA keeps a resample_filter buffer in every block and styled layer
        if name.endswith(".affine.weight") and ".torgb." not in name:
            sd[name.replace("affine.weight", "resample_filter")] = filt
    for r in [4, 8, 16, 32]:
        sd[f"synthesis.b{r}.resample_filter"] = filt
    return sd


def nvidia_d_state_of(D: Discriminator) -> dict:
    """``D``'s tensors under NVIDIA's resnet discriminator names, with its filter buffers."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    out, R = {}, D.resolution
    for name, t in D.state_dict().items():
        p = name.split(".")
        if p[0] == "from_rgb":
            out[f"b{R}.fromrgb.{p[1]}"] = t
        elif p[0] == "blocks":
            out[f"b{R >> int(p[1])}.{p[2]}.{p[3]}"] = t
            out[f"b{R >> int(p[1])}.resample_filter"] = torch.outer(k, k) / 64
        else:
            out[f"b4.{p[0]}.{p[1]}"] = t
    return out


def make_strided_discriminator(seed=0, **kw) -> Discriminator:
    torch.manual_seed(seed)
    D = Discriminator(RES, channel_base=512, channel_max=32, down_conv="strided", **kw)
    with torch.no_grad():
        for name, prm in D.named_parameters():
            if name.endswith(".bias"):
                prm.add_(0.3 * torch.randn_like(prm))
    return D.eval()


def write_nvidia_pkl(monkeypatch, path, G, *, synthesis_kwargs=None, torch_zip=False, module_src="# source",
                     extra=None, edit_state=None, layout="ada", D=None, d_kwargs=None):
    """``layout="ada"``: stylegan2-ada-pytorch's Generator kwargs; ``"sg3"``: the stylegan3
    repository's networks_stylegan2 (synthesis kwargs at the top level, fused_modconv_default).
    ``D``: a faceedit strided discriminator laid out as NVIDIA's resnet D (else a dummy record)."""
    sd = nvidia_state_of(G)
    if edit_state:
        edit_state(sd)
    with FakeNvidia(monkeypatch) as fake:
        E = fake.EasyDict
        sk = E(channel_base=512, channel_max=32, num_fp16_res=0, conv_clamp=None)
        sk.update(synthesis_kwargs or {})
        kw = E(z_dim=G.z_dim, c_dim=0, w_dim=G.w_dim, img_resolution=G.resolution, img_channels=3,
               mapping_kwargs=E(num_layers=2))
        if layout == "sg3":
            kw.update(sk, fused_modconv_default="inference_only")
        else:
            kw.update(synthesis_kwargs=sk)
        G_ema = records_from_state(fake, sd, kw, module_src)
        if D is None:
            D = Record(fake, "Discriminator", dict(_parameters=collections.OrderedDict(w=torch.ones(2)),
                                                   _buffers={}, _modules={}, _init_kwargs=E(c_dim=0)), module_src)
        else:
            dkw = E(c_dim=0, img_resolution=D.resolution, img_channels=3, architecture="resnet", channel_base=512,
                    channel_max=32, num_fp16_res=0, conv_clamp=D.conv_clamp, cmap_dim=None,
                    block_kwargs=E(freeze_layers=0), mapping_kwargs=E(), epilogue_kwargs=E(mbstd_group_size=4))
            dkw.update(d_kwargs or {})
            D = records_from_state(fake, nvidia_d_state_of(D), dkw, module_src, class_name="Discriminator")
        data = dict(G=G_ema, D=D, G_ema=G_ema, augment_pipe=None,
                    training_set_kwargs=E(path="x.zip", resolution=G.resolution), **(extra or {}))
        if torch_zip:
            torch.save(data, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(data, f)
    return path


def test_nvidia_pickle_converts_to_the_same_generator(tmp_path, monkeypatch):
    marker = tmp_path / "source_was_executed"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass Generator: pass\n"
    G = make_generator()
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, module_src=src)
    raw = p.read_bytes()
    assert b"torch_utils.persistence" in raw and b"_load_from_bytes" in raw and b"_rebuild_tensor_v2" in raw
    out = read_nvidia(p)
    assert_same_generator(out["G"], G)
    assert not marker.exists(), "the pickled module source was executed"
    assert out["G"].config == G.config
    assert sniff(p) == "nvidia"


def test_nvidia_torch_save_zip_with_persistent_ids(tmp_path, monkeypatch):
    G = make_generator(seed=1)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pt", G, torch_zip=True)
    assert zipfile.is_zipfile(p) and sniff(p) == "nvidia"
    assert_same_generator(convert_to_native_in_memory(p).G, G)


def test_nvidia_conv_clamp_is_carried_over(tmp_path, monkeypatch):
    G = make_generator(seed=2, conv_clamp=256.0)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, synthesis_kwargs=dict(conv_clamp=256))
    H = read_nvidia(p)["G"]
    assert H.config["conv_clamp"] == 256.0
    assert_same_generator(H, G)


def test_nvidia_unsupported_variants_are_named(tmp_path, monkeypatch):
    G = make_generator()
    p = write_nvidia_pkl(monkeypatch, tmp_path / "a.pkl", G, synthesis_kwargs=dict(architecture="resnet"))
    with pytest.raises(CheckpointError, match="architecture"):
        read_nvidia(p)

    def bad_filter(sd):
        sd["synthesis.b8.resample_filter"] = torch.ones(4, 4) / 16

    p = write_nvidia_pkl(monkeypatch, tmp_path / "b.pkl", G, edit_state=bad_filter)
    with pytest.raises(CheckpointError, match=r"\[1,3,3,1\]"):
        read_nvidia(p)

    def drop(sd):
        del sd["synthesis.b16.conv1.weight"]

    p = write_nvidia_pkl(monkeypatch, tmp_path / "c.pkl", G, edit_state=drop)
    with pytest.raises(CheckpointError, match="missing"):
        read_nvidia(p)


def test_nvidia_layers_without_noise_convert_exactly(tmp_path, monkeypatch):
    G = make_generator(seed=3)
    with torch.no_grad():  # what use_noise=False means for our generator
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.zero_()
                m.noise_const.zero_()

    def no_noise(sd):
        for k in [k for k in sd if k.endswith(("noise_strength", "noise_const"))]:
            del sd[k]

    p = write_nvidia_pkl(monkeypatch, tmp_path / "n.pkl", G, synthesis_kwargs=dict(use_noise=False),
                         edit_state=no_noise)
    assert_same_generator(read_nvidia(p)["G"], G)


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_stylegan3_repo_stylegan2_pickle_converts(tmp_path, monkeypatch, psi):
    G = make_generator(seed=8, conv_clamp=256.0)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "sg3.pkl", G, layout="sg3",
                         synthesis_kwargs=dict(conv_clamp=256, num_fp16_res=4))
    out = read_nvidia(p)
    assert out["G"].config == G.config
    assert torch.equal(images(out["G"], psi=psi), images(G, psi=psi))
    assert out["provenance"]["source_format"] == "nvidia-stylegan3-repo-stylegan2-pkl"


def test_stylegan3_generator_is_refused_by_name(tmp_path, monkeypatch):
    G = make_generator()

    def sg3_layers(sd):
        sd["synthesis.input.weight"] = torch.zeros(4, 2)

    p = write_nvidia_pkl(monkeypatch, tmp_path / "a.pkl", G, layout="sg3", edit_state=sg3_layers)
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        read_nvidia(p)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "b.pkl", G, layout="sg3",
                         synthesis_kwargs=dict(magnitude_ema_beta=0.999))
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        read_nvidia(p)


@pytest.mark.parametrize("layout", ["ada", "sg3"])
def test_nvidia_discriminator_is_kept_with_the_same_logits(tmp_path, monkeypatch, layout):
    G, D = make_generator(seed=9), make_strided_discriminator(seed=10, conv_clamp=256.0)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, D=D, layout=layout)
    out = read_nvidia(p)
    assert out["provenance"]["discriminator"] == "converted"
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(out["D"](x), D(x))
    dst = convert_file(p, tmp_path / "conv")
    assert (dst / "discriminator.safetensors").is_file()
    m = load_native(dst, with_discriminator=True)
    with torch.no_grad():
        assert torch.equal(m.D(x), D(x))
        assert torch.equal(m.D.features(x)[-1], D.features(x)[-1])


def test_nvidia_discriminator_it_cannot_map_is_dropped_with_the_reason(tmp_path, monkeypatch):
    G, D = make_generator(), make_strided_discriminator()
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, D=D, d_kwargs=dict(architecture="skip"))
    out = read_nvidia(p)
    assert out["D"] is None and "'skip'" in out["provenance"]["discriminator"]
    assert_same_generator(out["G"], G)


# --- hostile files -------------------------------------------------------------------------

class Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('x')",))


class Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


class NestedStorage:
    """Pickles as ``torch.storage._load_from_bytes(b)`` with hostile bytes inside."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


@pytest.mark.parametrize("evil", [Shell, Eval, Popen])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, evil):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"G_ema": evil(marker)}))
    with pytest.raises(UnsafePickleError, match=r"refused to load: the pickle references (posix|builtins|subprocess)"):
        load_restricted(p)
    with pytest.raises(CheckpointError):
        convert_to_native_in_memory(p)
    assert not marker.exists()


def test_the_hostile_file_is_live(tmp_path):
    """Control: plain pickle.load of the same bytes does run the payload (so the test above can fail)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Eval(marker)))
    assert marker.exists()


def test_hostile_code_inside_a_valid_record_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    G = make_generator()
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, extra=dict(progress=Eval(marker)))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_nvidia(p)
    assert not marker.exists()


@pytest.mark.parametrize("container", ["raw", "torch_legacy"])
def test_hostile_nested_storage_bytes_are_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    if container == "raw":
        payload = pickle.dumps(Shell(marker), protocol=2)
    else:
        buf = io.BytesIO()
        torch.save(Shell(marker), buf, _use_new_zipfile_serialization=False)
        payload = buf.getvalue()
    p = tmp_path / "nested.pkl"
    p.write_bytes(pickle.dumps({"G_ema": NestedStorage(payload)}))
    with pytest.raises(UnsafePickleError, match="nested tensor storage"):
        load_restricted(p)
    assert not marker.exists()


def test_hostile_rosinality_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "args": Shell(marker)}, p)
    assert sniff(p) == "rosinality"
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_to_native_in_memory(p)
    assert not marker.exists()


def test_garbage_and_truncated_files(tmp_path, monkeypatch):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"hello, not a pickle")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        convert_to_native_in_memory(p)
    G = make_generator()
    good = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G).read_bytes()
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError):
        convert_to_native_in_memory(p)


# --- rosinality ----------------------------------------------------------------------------

def rosinality_state_of(G: Generator) -> dict:
    return native_to_rosinality_state(G.state_dict(), NUM_BLOCKS, filters=True)


@pytest.mark.parametrize("legacy", [False, True])
def test_rosinality_checkpoint_converts_to_the_same_generator(tmp_path, legacy):
    G = make_generator(seed=4)
    sd = rosinality_state_of(G)
    assert sd["conv1.conv.weight"].shape == (1, 32, 32, 3, 3) and sd["noises.noise_6"].shape == (1, 1, 32, 32)
    p = tmp_path / "ros.pt"
    torch.save({"g_ema": sd, "g": sd, "latent_avg": G.mapping.w_avg.clone(),
                "args": argparse.Namespace(size=RES, latent=16, n_mlp=2, lr_mlp=0.01)}, p,
               _use_new_zipfile_serialization=not legacy)
    assert sniff(p) == "rosinality"
    out = read_rosinality(p)
    assert_same_generator(out["G"], G)


def rosinality_d_state_of(D: Discriminator) -> dict:
    """``D``'s tensors under rosinality's discriminator names, with its blur kernels."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    out = {}
    for name, t in D.state_dict().items():
        p = name.split(".")
        if p[0] == "from_rgb":
            out[f"convs.0.{0 if p[1] == 'weight' else 1}.{p[1]}"] = t
        elif p[0] == "blocks":
            j = int(p[1]) + 1
            sub = {("conv0", "weight"): "conv1.0.weight", ("conv0", "bias"): "conv1.1.bias",
                   ("conv1", "weight"): "conv2.1.weight", ("conv1", "bias"): "conv2.2.bias",
                   ("skip", "weight"): "skip.1.weight"}[(p[2], p[3])]
            out[f"convs.{j}.{sub}"] = t
            out[f"convs.{j}.conv2.0.kernel"] = out[f"convs.{j}.skip.0.kernel"] = torch.outer(k, k) / 64
        elif p[0] == "conv":
            out[f"final_conv.{0 if p[1] == 'weight' else 1}.{p[1]}"] = t
        else:
            out[f"final_linear.{0 if p[0] == 'fc' else 1}.{p[1]}"] = t
    return out


@pytest.mark.parametrize("with_avg", [True, False])
def test_rosinality_discriminator_is_kept_with_the_same_logits(tmp_path, with_avg):
    G, D = make_generator(seed=11), make_strided_discriminator(seed=12)
    p = tmp_path / "ros.pt"
    obj = {"g_ema": rosinality_state_of(G), "d": rosinality_d_state_of(D)}
    if with_avg:
        obj["latent_avg"] = G.mapping.w_avg.clone()
    torch.save(obj, p)
    out = read_rosinality(p)
    assert out["provenance"]["discriminator"] == "converted"
    assert ("w_avg" in out["provenance"]) is not with_avg
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(out["D"](x), D(x))
    for psi in (1.0, 0.7):
        a, b = images(out["G"], psi=psi), images(G, psi=psi)
        assert torch.equal(a, b) if with_avg else (psi == 0.7 or torch.equal(a, b))
    assert (convert_file(p, tmp_path / "conv") / "discriminator.safetensors").is_file()


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    G = make_generator(seed=5)
    p = tmp_path / "ros.pt"
    torch.save({"g_ema": rosinality_state_of(G)}, p)
    out = read_rosinality(p)
    assert "estimated" in out["provenance"]["w_avg"]
    with torch.no_grad():
        mean = G.mapping(torch.randn(20000, 16, generator=torch.Generator().manual_seed(1)))[:, 0].mean(0)
    assert torch.allclose(out["G"].mapping.w_avg, mean, atol=0.05)


def test_rosinality_channel_table_is_inferred(tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, resolution=64, mapping_layers=1, channel_base=512, channel_max=16).eval()
    p = tmp_path / "r.pt"
    torch.save({"g_ema": native_to_rosinality_state(G.state_dict(), 4), "latent_avg": torch.zeros(8)}, p)
    H = read_rosinality(p)["G"]
    assert H.synthesis.channels == G.synthesis.channels == {4: 16, 8: 16, 16: 16, 32: 16, 64: 8}


# --- native format and conversion ----------------------------------------------------------

def test_native_save_load_bit_exact_folder_and_zip(tmp_path):
    G = make_generator(seed=6)
    D = Discriminator(RES, channel_base=512, channel_max=32)
    prior = {"mean": torch.randn(16), "cov": torch.eye(16)}
    save_native(tmp_path / "m", G, name="tiny", D=D, prior=prior, license="test", provenance={"why": "test"})
    out = load_native(tmp_path / "m", with_discriminator=True)
    assert_same_generator(out.G, G)
    assert all(torch.equal(out.D.state_dict()[k], v) for k, v in D.state_dict().items())
    assert torch.equal(out.prior["mean"], prior["mean"])
    (tmp_path / "m.zip").write_bytes(folder_to_zip_bytes(tmp_path / "m"))
    z = load_native(tmp_path / "m.zip")
    assert_same_generator(z.G, G) and z.sha256 == out.sha256
    # fp16 storage: exactly the fp16-rounded weights come back
    save_native(tmp_path / "h", G, name="half", dtype=torch.float16)
    H = load_native(tmp_path / "h").G
    assert all(torch.equal(H.state_dict()[k], v.half().float()) for k, v in G.state_dict().items())


def test_native_zip_with_parent_entries_is_refused(tmp_path):
    G = make_generator()
    save_native(tmp_path / "m", G, name="tiny")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        for f in (tmp_path / "m").iterdir():
            z.write(f, f.name)
        z.writestr("../escaped.txt", "x")
    with pytest.raises(CheckpointError, match="outside the archive"):
        load_native(tmp_path / "evil.zip")
    assert not (tmp_path / "escaped.txt").exists()


def test_convert_file_round_trip_keeps_image_and_model_id(tmp_path, monkeypatch):
    G = make_generator(seed=7)
    pkl = write_nvidia_pkl(monkeypatch, tmp_path / "ffhq-tiny.pkl", G)
    mem = convert_to_native_in_memory(pkl)
    assert isinstance(mem, LoadedModel) and mem.prior == {} and mem.name == "ffhq-tiny" and mem.source == pkl
    before = pkl.read_bytes()
    out = convert_file(pkl, tmp_path / "native")
    assert pkl.read_bytes() == before
    loaded = load_native(out)
    assert_same_generator(loaded.G, G)
    assert loaded.sha256 == mem.sha256  # same model id whether loaded from .pkl or converted
    assert loaded.config["provenance"]["source_format"] == "nvidia-stylegan2-ada-pkl"
    zipped = convert_file(pkl, tmp_path / "native.zip")
    assert_same_generator(load_native(zipped).G, G)
    m = load_model(pkl)
    assert m.model_id == f"ffhq-tiny@{mem.sha256[:12]}"
    with pytest.raises(CheckpointError, match="overwrite the input"):
        convert_file(pkl, pkl)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="non-empty folder"):
        convert_file(pkl, tmp_path / "busy")


# --- download -----------------------------------------------------------------------------

def test_download_checks_sha256_and_explains_offline(tmp_path, monkeypatch):
    import hashlib

    from faceedit.checkpoints import registry
    from faceedit.checkpoints.download import download_model
    from faceedit.checkpoints.registry import REGISTRY, ModelEntry

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "cache"))
    payload = tmp_path / "remote.pkl"
    payload.write_bytes(b"some weights")
    good = hashlib.sha256(b"some weights").hexdigest()
    entry = lambda src, sha: ModelEntry("t", 16, ("w",), "test", src, "t.pkl", sha256=sha)  # noqa: E731
    monkeypatch.setitem(REGISTRY, "t", entry(payload.as_uri(), "0" * 64))
    with pytest.raises(CheckpointError, match="sha256"):
        download_model("t")
    assert registry.locate("t") is None  # the bad download was deleted
    monkeypatch.setitem(REGISTRY, "t", entry(payload.as_uri(), good))
    path = download_model("t")
    assert path == tmp_path / "cache" / "t.pkl" and path.read_bytes() == b"some weights"
    monkeypatch.setitem(REGISTRY, "u", ModelEntry("u", 16, ("w",), "test", "http://127.0.0.1:9/u.pkl", "u.pkl"))
    with pytest.raises(CheckpointError, match=r"no network.*place it at .*cache/u\.pkl"):
        download_model("u", timeout=5)
    with pytest.raises(CheckpointError, match="unknown model"):
        download_model("no-such-model")


# --- once, against NVIDIA's own code (opt-in: FACEEDIT_NVIDIA_SRC=/path/to/stylegan2-ada-pytorch) --

@pytest.fixture
def nvidia_src(monkeypatch):
    """NVIDIA's checkout on ``sys.path`` for one test, its ``training``/``dnnlib``/``torch_utils``
    packages imported afresh (faceedit has a same-named ``training`` folder); returns
    ``(dnnlib, training.networks)``."""
    if not os.environ.get("FACEEDIT_NVIDIA_SRC"):
        pytest.skip("set FACEEDIT_NVIDIA_SRC to NVIDIA's stylegan2-ada-pytorch checkout")
    monkeypatch.syspath_prepend(os.environ["FACEEDIT_NVIDIA_SRC"])
    for name in [n for n in sys.modules if n.split(".")[0] in ("training", "legacy", "dnnlib", "torch_utils")]:
        monkeypatch.delitem(sys.modules, name)
    import dnnlib
    import training.networks

    return dnnlib, training.networks


def test_against_a_generator_pickled_by_nvidias_code(tmp_path, nvidia_src):
    """Runs NVIDIA's code (only in this opt-in test) to build and pickle a generator."""
    import copy

    dnnlib, nvnet = nvidia_src
    NVGenerator = nvnet.Generator
    torch.manual_seed(0)
    G = NVGenerator(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3,
                    mapping_kwargs=dnnlib.EasyDict(num_layers=3),
                    synthesis_kwargs=dnnlib.EasyDict(channel_base=1024, channel_max=32, num_fp16_res=2,
                                                     conv_clamp=256))
    with torch.no_grad():
        for n, p in G.named_parameters():
            if "noise_strength" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(32) * 0.5)
    G.eval()  # in training mode NVIDIA's mapping would move w_avg on every call
    p = tmp_path / "nv.pkl"
    with open(p, "wb") as f:
        pickle.dump(dict(G_ema=copy.deepcopy(G).eval().requires_grad_(False)), f)
    ours = read_nvidia(p)["G"]
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for mode in ("const", "none"):
            ref = G(z, None, truncation_psi=0.7, noise_mode=mode, force_fp32=True)
            img = ours(z, truncation_psi=0.7, noise_mode=mode)
            assert (img - ref).abs().max() < 1e-4 * ref.abs().max()


def test_shipped_registry_entries_carry_their_sha256():
    """Each shipped model's registry sha256 is that of its model.safetensors, so the model id
    (``name@sha256[:12]``) of a loaded shipped model can be checked against the registry."""
    from faceedit.checkpoints.registry import REGISTRY, WEIGHTS_DIR
    from faceedit.core.files import sha256_file

    shipped = [e for e in REGISTRY.values() if e.source == "shipped"]
    assert shipped
    for e in shipped:
        assert len(e.sha256) == 64, e.name
        assert sha256_file(WEIGHTS_DIR / e.filename / "model.safetensors") == e.sha256, e.name


def test_against_a_discriminator_pickled_by_nvidias_code(tmp_path, nvidia_src):
    """NVIDIA's resnet D (built and pickled by NVIDIA's code, opt-in) gives the same logits as ours."""
    import copy

    dnnlib, nvnet = nvidia_src
    NVGenerator, NVDiscriminator = nvnet.Generator, nvnet.Discriminator
    torch.manual_seed(0)
    G = NVGenerator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                    mapping_kwargs=dnnlib.EasyDict(num_layers=2),
                    synthesis_kwargs=dnnlib.EasyDict(channel_base=512, channel_max=32))
    D = NVDiscriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=32,
                        num_fp16_res=2, conv_clamp=256, epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4))
    with torch.no_grad():
        for n, prm in D.named_parameters():
            if n.endswith("bias"):
                prm.add_(torch.randn_like(prm) * 0.3)
    p = tmp_path / "nv.pkl"
    with open(p, "wb") as f:
        pickle.dump(dict(G_ema=copy.deepcopy(G).eval(), D=copy.deepcopy(D).eval().requires_grad_(False)), f)
    ours = read_nvidia(p)["D"]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        ref = D(x, None, force_fp32=True)
        assert (ours(x) - ref).abs().max() < 1e-4 * ref.abs().max()


# --- the CLI: convert records a recipe, generate draws z as NVIDIA does -----------------------

def test_convert_cli_records_ffhq_recipe_and_keeps_d(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from faceedit.cli import cli
    from faceedit.pipeline import model_recipe

    G, D = make_generator(seed=13), make_strided_discriminator(seed=14)
    p = write_nvidia_pkl(monkeypatch, tmp_path / "g.pkl", G, D=D)
    r = CliRunner().invoke(cli, ["convert", str(p), str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "recipe ffhq at 32 px, scale 1.0" in r.output and "discriminator: converted" in r.output
    cfg = load_native(tmp_path / "a").config
    assert cfg["recipe"]["name"] == "ffhq" and cfg["recipe"]["scale"] == 1.0 and cfg["recipe"]["size"] == RES
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "a"), str(tmp_path / "b.zip"), "--recipe", "faces64"])
    assert r.exit_code == 0, r.output
    assert load_native(tmp_path / "b.zip").config["recipe"]["scale"] == 0.6
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "b.zip"), str(tmp_path / "c")])  # auto keeps it
    assert load_native(tmp_path / "c").config["recipe"]["scale"] == 0.6, r.output
    bare = save_native(tmp_path / "bare", G, name="bare")  # no recipe: FFHQ's, never faces64's
    rec = model_recipe(load_native(bare).config, RES)
    assert rec.name == "ffhq" and rec.scale == 1.0 and rec.size == RES


def test_generate_draws_z_as_nvidia_by_default(tmp_path):
    import json

    from click.testing import CliRunner

    from faceedit.cli import cli
    from faceedit.core.images import load_image
    from faceedit.sampling import seed_z

    G = make_generator(seed=15)
    path = save_native(tmp_path / "m", G, name="m")
    z = seed_z(G, [0, 3])
    assert torch.equal(z[1], torch.from_numpy(np.random.RandomState(3).randn(1, 16)).float()[0])
    assert torch.equal(seed_z(G, [0, 3], "torch"), torch.cat([G.sample_z(1, seed=s) for s in (0, 3)]))
    outs = {}
    for src in ("numpy", "torch"):
        r = CliRunner().invoke(cli, ["--device", "cpu", "generate", "--model", str(path), "--seeds", "0,3",
                                     "--z-source", src, "--out", str(tmp_path / src)])
        assert r.exit_code == 0, r.output
        rec = json.loads((tmp_path / src / "generate.json").read_text())
        assert rec["z_source"] == src and rec["seeds"] == [0, 3]
        outs[src] = load_image(tmp_path / src / "seed0003.png")
    with torch.no_grad():
        from faceedit.core.images import tensor_to_uint8

        want = tensor_to_uint8(G(seed_z(G, [3]), noise_mode="const"))[0]
    assert np.array_equal(outs["numpy"], want) and not np.array_equal(outs["numpy"], outs["torch"])
    with pytest.raises(ValueError, match="2\\*\\*32"):
        seed_z(G, [2 ** 32])


def test_load_model_returns_a_frozen_loaded_model(tmp_path):
    G = make_generator(seed=8)
    save_native(tmp_path / "m", G, name="tiny", recipe={"scale": 0.6, "size": RES})
    m = load_model(tmp_path / "m")
    sha = hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest()
    assert isinstance(m, LoadedModel) and m.sha256 == sha and m.model_id == f"tiny@{sha[:12]}"
    assert m.source == tmp_path / "m" and m.folder == tmp_path / "m" and m.D is None
    assert m.recipe == {"scale": 0.6, "size": RES} and m.arch == "stylegan2" and m.resolution == RES
    assert_same_generator(m.G, G)
    assert not hasattr(m.G, "model_id")  # the id lives on the LoadedModel, not bolted onto the module
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"
    with pytest.raises(TypeError):
        m["G"]  # no dict-style access: fields only
