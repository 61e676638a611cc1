"""Tests of the TensorFlow network pickle reader (checkpoints.tf_pickle, checkpoints.tf_stylegan2).

The files are built here in NVIDIA's layout from faceedit networks with known weights: a
stand-in ``dnnlib.tflib.network.Network`` class (present only while a file is written)
pickles to the same state ``Network.__getstate__`` writes, with TF's variable names and
layouts (conv ``[kh, kw, in, out]``, dense ``[in, out]``, the up-sampling conv flipped,
``mod_bias`` without its +1). The reader then needs neither TensorFlow nor the stand-in.
"""
from __future__ import annotations

import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceedit.checkpoints import CheckpointError
from faceedit.checkpoints.convert import convert_file, convert_to_native_in_memory, read_tf, sniff
from faceedit.checkpoints.native import load_native
from faceedit.checkpoints.nvidia import native_to_nvidia_state
from faceedit.checkpoints.tf_pickle import TFNetwork, read_tf_pickle, sniff_generation
from faceedit.networks import Discriminator, Generator

from test_checkpoints import NUM_BLOCKS, RES, make_generator, nvidia_src  # noqa: F401 - shared toys, fixture
from test_checkpoints import make_strided_discriminator as make_discriminator


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def images(G, psi, n=3, seed=11):
    with torch.no_grad():
        z = torch.randn(n, *G.z_shape, generator=torch.Generator().manual_seed(seed))
        return G(z, truncation_psi=psi, noise_mode="const")


# --- TF layout, written the way tflib's Network.__getstate__ writes it -----------------------

class FakeTflib:
    """``dnnlib.tflib.network.Network`` that pickles to tflib's state dict, only while a file is written."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch

    def __enter__(self):
        self.ctx = self.mp.context()
        m = self.ctx.__enter__()
        dn, tl, nw = (types.ModuleType(n) for n in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"))

        class Network:
            def __init__(self, name, func, static_kwargs, variables, components=None, src="# source", version=4):
                self._state = dict(version=version, name=name, static_kwargs=dict(static_kwargs),
                                   components=dict(components or {}), build_module_src=src, build_func_name=func,
                                   variables=[(k, np.array(v, order="C")) for k, v in variables.items()])
                if version == 5:
                    self._state.update(input_shapes=[[None, 16]], output_shapes=[[None, 3, RES, RES]],
                                       input_names=["latents_in"], output_names=["images_out"])

            def __getstate__(self):
                return self._state

            def __setstate__(self, state):
                raise AssertionError("the reader must not use NVIDIA's Network class")

        Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
        nw.Network, tl.network, dn.tflib = Network, nw, tl
        for name, mod in (("dnnlib", dn), ("dnnlib.tflib", tl), ("dnnlib.tflib.network", nw)):
            m.setitem(sys.modules, name, mod)
        self.Network = Network
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def _tf_conv(w: torch.Tensor, flip=False) -> np.ndarray:
    a = w.numpy().transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
    return a[::-1, ::-1] if flip else a


def tf_generator_vars(G: Generator) -> tuple:
    """``(own, mapping, synthesis)`` TF variable dicts of ``G`` (tflib's names and layouts)."""
    nv = native_to_nvidia_state(G.state_dict(), NUM_BLOCKS)
    own, mapping, synth = {"dlatent_avg": nv["mapping.w_avg"].numpy()}, {}, {}
    for name, t in nv.items():
        p = name.split(".")
        if p[0] == "mapping" and p[1] != "w_avg":
            mapping[f"Dense{p[1][2:]}/{p[2]}"] = t.numpy().T if p[2] == "weight" else t.numpy()
        elif name == "synthesis.b4.const":
            synth["4x4/Const/const"] = t.numpy()[None]
        elif p[0] == "synthesis":
            r, layer, var = int(p[1][1:]), p[2], ".".join(p[3:])
            if var == "noise_const":
                idx = 0 if r == 4 else 2 * int(math.log2(r)) - (5 if layer == "conv0" else 4)
                synth[f"noise{idx}"] = t.numpy()[None, None]
                continue
            tf_layer = {"conv0": "Conv0_up", "conv1": "Conv" if r == 4 else "Conv1", "torgb": "ToRGB"}[layer]
            key = f"{r}x{r}/{tf_layer}/"
            if var == "weight":
                synth[key + "weight"] = _tf_conv(t, flip=tf_layer == "Conv0_up")
            elif var == "affine.weight":
                synth[key + "mod_weight"] = t.numpy().T
            elif var == "affine.bias":
                synth[key + "mod_bias"] = t.numpy() - 1
            else:
                synth[key + var] = t.numpy()
    return own, mapping, synth


def tf_discriminator_vars(D: Discriminator) -> dict:
    out = {}
    for name, t in D.state_dict().items():
        p = name.split(".")
        if p[0] == "from_rgb":
            key = f"{RES}x{RES}/FromRGB/{p[1]}"
        elif p[0] == "blocks":
            r = RES >> int(p[1])
            key = f"{r}x{r}/{ {'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip'}[p[2]] }/{p[3]}"
        else:
            key = {"conv": "4x4/Conv", "fc": "4x4/Dense0", "out": "Output"}[p[0]] + "/" + p[1]
        a = t.numpy()
        out[key] = (a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T) if p[-1] == "weight" else a
    return out


G_KWARGS = dict(latent_size=16, dlatent_size=16, resolution=RES, num_channels=3, label_size=0, mapping_layers=2,
                fmap_base=256, fmap_max=32)
D_KWARGS = dict(resolution=RES, num_channels=3, label_size=0, fmap_base=256, fmap_max=32, mbstd_group_size=4)


def write_tf_pkl(monkeypatch, path, G, D=None, *, protocol=3, src="# source", edit=None, g_kwargs=None,
                 version=4, single=False):
    own, mapping, synth = tf_generator_vars(G)
    if edit:
        edit(own, mapping, synth)
    kw = {**G_KWARGS, **(g_kwargs or {})}
    with FakeTflib(monkeypatch) as tf:
        def gen(name):
            comps = {"mapping": tf.Network("G_mapping", "G_mapping", kw, mapping, src=src, version=version),
                     "synthesis": tf.Network("G_synthesis", "G_synthesis_stylegan2", kw, synth, src=src,
                                             version=version)}
            return tf.Network(name, "G_main", kw, own, comps, src=src, version=version)

        d = tf.Network("D", "D_stylegan2", D_KWARGS, tf_discriminator_vars(D) if D is not None else {}, src=src,
                       version=version)
        obj = gen("Gs") if single else (gen("G"), d, gen("Gs"))
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --- the reader -----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_tf_pickle_reads_as_plain_records(tmp_path, monkeypatch, protocol):
    G = make_generator()
    p = write_tf_pkl(monkeypatch, tmp_path / "g.pkl", G, make_discriminator(), protocol=protocol)
    nets = read_tf_pickle(p)
    gs = nets["Gs"]
    assert isinstance(gs, TFNetwork) and gs.name == "Gs" and gs.build_func_name == "G_main"
    assert set(gs.components) == {"mapping", "synthesis"}
    assert gs.components["synthesis"].name == "G_synthesis"
    assert gs.static_kwargs["fmap_base"] == 256
    v = gs.variables
    np.testing.assert_array_equal(v["dlatent_avg"], G.mapping.w_avg.numpy())
    np.testing.assert_array_equal(v["G_mapping/Dense0/weight"], G.mapping.net[0].weight.detach().numpy().T)
    assert v["G_synthesis/8x8/Conv0_up/weight"].shape == (3, 3, 32, 32)
    assert "Dense0/weight" in gs.components["mapping"].variables  # unprefixed inside the component
    assert nets["D"].build_func_name == "D_stylegan2" and nets["G"].name == "G"
    assert sniff_generation(gs) == "stylegan2" and sniff_generation(nets["D"]) == "stylegan2"
    assert sniff(p) == "nvidia-tf"
    raw = p.read_bytes()
    if protocol == 2 and b"cnumpy._core.multiarray\n" in raw:  # numpy 1.x writes numpy.core.multiarray
        p.write_bytes(raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
        np.testing.assert_array_equal(read_tf_pickle(p)["Gs"].variables["dlatent_avg"], v["dlatent_avg"])


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_tf_stylegan2_converts_to_the_same_images(tmp_path, monkeypatch, psi, version):
    marker = tmp_path / "build_module_src_ran"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\ndef G_main(): pass\n"
    G, D = make_generator(seed=3, conv_clamp=256.0), make_discriminator(seed=4)
    p = write_tf_pkl(monkeypatch, tmp_path / "g.pkl", G, D, src=src, version=version,
                     g_kwargs=dict(conv_clamp=256))
    out = read_tf(p)
    assert not marker.exists(), "build_module_src was executed"
    Gc = out["G"]
    assert Gc.config == G.config
    a, b = images(G, psi), images(Gc, psi)
    assert psnr(a, b) >= 40 and torch.allclose(a, b, atol=1e-5)
    assert out["provenance"]["source_format"] == "nvidia-stylegan2-tf-pkl"
    assert out["provenance"]["discriminator"] == "converted"
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(out["D"](x), D(x), atol=1e-6)


def test_tf_single_network_and_convert_file_keep_d_and_recipe(tmp_path, monkeypatch):
    G, D = make_generator(seed=5), make_discriminator(seed=6)
    p = write_tf_pkl(monkeypatch, tmp_path / "g.pkl", G, D)
    recipe = {"name": "ffhq", "size": 1024, "scale": 1.0, "supersample": 4, "pad_mode": "reflect",
              "landmarks": "dlib68"}
    dst = convert_file(p, tmp_path / "conv", recipe=recipe)
    m = load_native(dst, with_discriminator=True)
    assert m.config["recipe"] == {**recipe, "size": RES}
    assert (dst / "discriminator.safetensors").is_file() and m.config["discriminator"]["down_conv"] == "strided"
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(m.D(x), D(x), atol=1e-6)
    assert torch.equal(images(m.G, 0.7), images(convert_to_native_in_memory(p).G, 0.7))
    single = write_tf_pkl(monkeypatch, tmp_path / "gs.pkl", G, single=True)
    nets = read_tf_pickle(single)
    assert nets["G"] is None and nets["D"] is None
    assert torch.allclose(images(read_tf(single)["G"], 1.0), images(G, 1.0), atol=1e-5)


def nvidia_style_d(D: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """NVIDIA's resnet D written out from its definition (blur + stride-2 conv, 1x1 skip after
    blur-decimate, sqrt(1/2) residual gain, minibatch std, conv, fc, out), independently of
    faceedit's modules, from ``D``'s raw weights."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = (torch.outer(k, k) / 64)[None, None]

    def blur(h, pad):
        c = h.shape[1]
        return F.conv2d(F.pad(h, [pad] * 4), k2.repeat(c, 1, 1, 1), groups=c)

    def conv(h, layer, stride=1, pad=None, act=True):
        w = layer.weight * (1 / math.sqrt(layer.weight[0].numel()))
        h = F.conv2d(h, w, layer.bias, stride=stride, padding=w.shape[-1] // 2 if pad is None else pad)
        return F.leaky_relu(h, 0.2) * math.sqrt(2) if act else h

    def dense(h, layer, act):
        h = F.linear(h, layer.weight / math.sqrt(layer.weight.shape[1]), layer.bias)
        return F.leaky_relu(h, 0.2) * math.sqrt(2) if act else h

    h = conv(x, D.from_rgb)
    for b in D.blocks:
        skip = conv(blur(h, 1)[:, :, ::2, ::2], b.skip, act=False)
        h = conv(blur(conv(h, b.conv0), 2), b.conv1, stride=2, pad=0)
        h = (skip + h) * math.sqrt(0.5)
    n, c, hh, ww = h.shape
    g = h.reshape(4, -1, c, hh, ww)
    std = (g - g.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])
    h = torch.cat([h, std.reshape(-1, 1, 1, 1).repeat(4, 1, hh, ww)], 1)
    h = conv(h, D.conv)
    return dense(dense(h.flatten(1), D.fc, True), D.out, False)


def test_strided_discriminator_is_nvidias_architecture():
    D = make_discriminator(seed=7)
    x = torch.randn(8, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, ours = nvidia_style_d(D, x), D(x)
        assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
        D_own = Discriminator(RES, channel_base=512, channel_max=32)
        D_own.load_state_dict(D.state_dict())
        assert not torch.allclose(D_own(x), ref, atol=1e-3)  # faceedit's own layout is another network


def test_unmapped_variables_and_settings_are_named(tmp_path, monkeypatch):
    G = make_generator()

    def extra(own, mapping, synth):
        synth["16x16/Extra/weight"] = np.zeros((3, 3, 4, 4), np.float32)

    with pytest.raises(CheckpointError, match="16x16/Extra/weight"):
        read_tf(write_tf_pkl(monkeypatch, tmp_path / "a.pkl", G, edit=extra))
    with pytest.raises(CheckpointError, match="architecture='resnet'"):
        read_tf(write_tf_pkl(monkeypatch, tmp_path / "b.pkl", G, g_kwargs=dict(architecture="resnet")))
    with pytest.raises(CheckpointError, match="mystery_knob"):
        read_tf(write_tf_pkl(monkeypatch, tmp_path / "c.pkl", G, g_kwargs=dict(mystery_knob=3)))

    def drop(own, mapping, synth):
        del synth["8x8/Conv1/mod_bias"]

    with pytest.raises(CheckpointError, match="convs.0.affine.bias"):
        read_tf(write_tf_pkl(monkeypatch, tmp_path / "d.pkl", G, edit=drop))


def test_a_tf_discriminator_it_cannot_map_is_dropped_with_the_reason(tmp_path, monkeypatch, caplog):
    G, D = make_generator(), make_discriminator()
    p = write_tf_pkl(monkeypatch, tmp_path / "g.pkl", G, D)
    monkeypatch.setitem(D_KWARGS, "architecture", "skip")
    p2 = write_tf_pkl(monkeypatch, tmp_path / "g2.pkl", G, D)
    assert read_tf(p)["D"] is not None
    out = read_tf(p2)
    assert out["D"] is None and "architecture='skip'" in out["provenance"]["discriminator"]
    assert torch.allclose(images(out["G"], 1.0), images(G, 1.0), atol=1e-5)


def _v1_network() -> TFNetwork:
    synth = TFNetwork("G_synthesis", "G_synthesis", {}, {"4x4/Const/Noise/weight": np.zeros(8, np.float32),
                                                          "ToRGB_lod0/weight": np.zeros((1, 1, 8, 3), np.float32)})
    mapping = TFNetwork("G_mapping", "G_mapping", {}, {"Dense0/weight": np.zeros((4, 4), np.float32)})
    flat = {"dlatent_avg": np.zeros(4, np.float32), **{f"G_synthesis/{k}": v for k, v in synth.variables.items()},
            **{f"G_mapping/{k}": v for k, v in mapping.variables.items()}}
    return TFNetwork("Gs", "G_style", {}, flat, {"mapping": mapping, "synthesis": synth}, 3)


def test_sniff_generation_tells_v1_from_v2_and_names_the_rest():
    assert sniff_generation(_v1_network()) == "stylegan1"
    assert sniff_generation(TFNetwork("D", "D_basic", {}, {"FromRGB_lod0/weight": np.zeros(1)})) == "stylegan1"
    with pytest.raises(CheckpointError, match="G_pggan"):
        sniff_generation(TFNetwork("Gs", "G_pggan", {}, {"4x4/Dense/weight": np.zeros(1)}))


def test_stylegan1_tf_pickle_converts_end_to_end(tmp_path, monkeypatch):
    """A StyleGAN v1 generator written as NVIDIA's TF pickle (protocol 3) is read, sniffed as v1,
    mapped by tf_stylegan1 and gives the source generator's images."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("sg1_tests", Path(__file__).with_name("test_stylegan1.py"))
    sg1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sg1)
    from faceedit.networks import Generator1

    G = sg1._randomised(Generator1(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=128,
                                   channel_max=8), seed=3).eval()
    with FakeTflib(monkeypatch) as tf:
        def net(n: TFNetwork):
            comps = {k: net(c) for k, c in n.components.items()}
            own = {k: v for k, v in n.variables.items() if "/" not in k or k.split("/")[0] not in
                   {c.name for c in n.components.values()}}
            return tf.Network(n.name, n.build_func_name, n.static_kwargs, own, comps, version=n.version)

        p = tmp_path / "v1.pkl"
        p.write_bytes(pickle.dumps(net(sg1._to_tf(G)), protocol=3))
    out = read_tf(p)
    assert isinstance(out["G"], Generator1) and out["D"] is None
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for psi in (1.0, 0.7):
            a = out["G"].synthesis(out["G"].mapping(z, truncation_psi=psi))
            b = G.synthesis(G.mapping(z, truncation_psi=psi))
            assert torch.allclose(a, b, atol=1e-5), psi


def test_against_nvidias_own_tf_conversion(tmp_path, monkeypatch, nvidia_src):  # noqa: F811 - the fixture
    """The same TF-layout file, converted by NVIDIA's legacy.py (opt-in) and by faceedit: same
    images (truncation 1 and 0.7) and the same discriminator logits."""
    G, D = make_generator(seed=21), make_discriminator(seed=22)
    p = write_tf_pkl(monkeypatch, tmp_path / "g.pkl", G, D)
    import legacy  # NVIDIA's, on the path while nvidia_src holds

    with open(p, "rb") as f:
        nv = legacy.load_network_pkl(f)
    ours = read_tf(p)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for psi in (1.0, 0.7):
            ref = nv["G_ema"](z, None, truncation_psi=psi, noise_mode="const", force_fp32=True)
            img = ours["G"](z, truncation_psi=psi, noise_mode="const")
            assert psnr(img, ref) >= 40 and (img - ref).abs().max() < 1e-4
        ref_d = nv["D"](x, None, force_fp32=True)
        assert (ours["D"](x) - ref_d).abs().max() < 1e-4 * ref_d.abs().max()
