"""StyleGAN v1: the generator's properties, its TF-layout reader, native files, and W / W+
inversion and editing through the same stages as StyleGAN2.

TensorFlow is not installed here, so NVIDIA's own graph cannot run: the TF parity below is
against ``_tf_reference``, a plain transcription (in torch ops, on the TF-layout variables)
of what ``training/networks_stylegan.py`` computes; the fused up-sampling is taken there as
the adjoint of TF's strided SAME conv (autograd), not as ``conv_transpose2d``.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceedit.checkpoints.native import CheckpointError, load_native, save_native
from faceedit.checkpoints.tf_pickle import TFNetwork
from faceedit.checkpoints.tf_stylegan1 import stylegan1_from_tf
from faceedit.editing.direction import Direction, DirectionError
from faceedit.inversion.latent import Latent, LatentFileError
from faceedit.networks import Generator, Generator1
from faceedit.networks.stylegan1 import StyledLayer, style_mix

TINY = dict(z_dim=16, w_dim=16, mapping_layers=3, channel_base=256, channel_max=16)


def _randomised(G, seed=0, scale=0.3):
    """Give every weight (biases, noise strengths, styles, a generator's w_avg too) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in G.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
        if hasattr(G, "mapping"):
            G.mapping.w_avg.copy_(torch.randn(G.w_dim, generator=g) * 0.2)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G1():
    torch.manual_seed(0)
    return _randomised(Generator1(resolution=32, **TINY))


# -- the module --------------------------------------------------------------------------
def test_layout_and_seam(G1):
    assert (G1.arch, G1.mapping_kind, G1.num_ws, G1.z_shape) == ("stylegan1", "mlp", 8, (16,))
    assert G1.w_avg.shape == (8, 16) and Generator.arch == "stylegan2"
    assert [b.shape[-1] for b in G1.synthesis.noise_buffers()] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert [layer.up for layer in G1.synthesis.layers][::2] == [None, "nearest", "nearest", "nearest"]
    z = G1.sample_z(2, seed=1)
    assert torch.equal(z, G1.sample_z(2, seed=1)) and G1(z).shape == (2, 3, 32, 32)
    ws = G1.mapping(z)
    assert ws.shape == (2, 8, 16) and torch.equal(ws[:, 0], ws[:, 7])


def test_ffhq_configuration_has_nvidias_parameter_count():
    """NVIDIA's README prints ``Total 26219627`` for the FFHQ 1024 Gs; its count includes the
    lower-resolution toRGBs of progressive growing, which faceedit reads but does not keep."""
    G = Generator1()  # 0.3 s on the CPU (the meta device's first use costs more)
    ch = G.synthesis.channels
    unused_torgbs = sum(3 * ch[r] + 3 for r in ch if r < G.resolution)
    assert sum(p.numel() for p in G.parameters()) + unused_torgbs == 26219627
    assert (G.num_ws, ch[4], ch[64], ch[1024]) == (18, 512, 256, 16)


@pytest.mark.parametrize("call, match", [
    (lambda G: G.synthesis(torch.zeros(1, 7, 16)), r"ws of shape \[N, 8, 16\]"),
    (lambda G: G.synthesis(torch.zeros(1, 8, 16), noise_mode="fixed"), "noise_mode"),
    (lambda G: G.synthesis(torch.zeros(1, 8, 16), noise=[torch.zeros(1, 1, 4, 4)]), "expected 8 noise maps"),
    (lambda G: G.synthesis(torch.zeros(1, 8, 16), path="fast"), "synthesis path must be"),
    (lambda G: G.mapping(torch.zeros(2, 8, 16)), r"z of shape \[N, 16\]"),
    (lambda G: Generator1(resolution=48, **TINY), "power of two"),
    (lambda G: Generator1(resolution=32, fused_scale="yes", **TINY), "fused_scale"),
    (lambda G: style_mix(torch.zeros(1, 8, 16), torch.zeros(1, 6, 16), 3), "one shape"),
    (lambda G: style_mix(torch.zeros(1, 8, 16), torch.zeros(1, 8, 16), 9), "crossover"),
])
def test_bad_inputs_are_refused(G1, call, match):
    with pytest.raises(ValueError, match=match):
        call(G1)


def test_truncation_moves_only_layers_below_the_cutoff():
    G = _randomised(Generator1(resolution=64, **TINY), seed=2)  # 10 layers: the v1 default cutoff 8 shows
    z = G.sample_z(3, seed=4)
    ws, avg = G.mapping(z), G.mapping.w_avg
    for psi, cutoff, got in [(0.5, 3, G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)),
                             (0.7, 8, G.mapping(z, truncation_psi=0.7)),
                             (-0.4, 10, G.mapping(z, truncation_psi=-0.4, truncation_cutoff=None))]:
        torch.testing.assert_close(got[:, :cutoff], avg + psi * (ws[:, :cutoff] - avg))
        assert torch.equal(got[:, cutoff:], ws[:, cutoff:])
        assert (got[:, :cutoff] - ws[:, :cutoff]).abs().max() > 1e-3


def test_style_mixing_crossover(G1):
    z1, z2 = G1.sample_z(2, seed=5), G1.sample_z(2, seed=6)
    ws1, ws2 = G1.mapping(z1), G1.mapping(z2)
    for c in (0, 3, 8):
        mixed = G1(z1, mixing_z=z2, mixing_cutoff=c)
        torch.testing.assert_close(mixed, G1.synthesis(torch.cat([ws1[:, :c], ws2[:, c:]], 1)))
    torch.testing.assert_close(G1(z1, mixing_z=z2, mixing_cutoff=0), G1(z2))
    torch.testing.assert_close(G1(z1, mixing_z=z2, mixing_cutoff=8), G1(z1))
    # the coarse styles set the layers up to the crossover: different fine styles keep them
    assert not torch.allclose(G1(z1, mixing_z=z2, mixing_cutoff=4), G1(z1), atol=1e-3)


def test_noise_strengths_zero_make_noise_mode_irrelevant(G1):
    ws = G1.mapping(G1.sample_z(2, seed=7))
    torch.manual_seed(0)
    assert not torch.allclose(G1.synthesis(ws, noise_mode="random"), G1.synthesis(ws, noise_mode="none"))
    G = _randomised(Generator1(resolution=32, **TINY))
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise_strength.zero_()
    ref = G.synthesis(ws, noise_mode="none")
    assert torch.equal(G.synthesis(ws, noise_mode="const"), ref)
    assert torch.equal(G.synthesis(ws, noise_mode="random"), ref)


def test_adain_sets_each_channels_mean_and_std():
    torch.manual_seed(3)
    layer = _randomised(StyledLayer(6, 5, 16, 8, up="nearest"))
    w = torch.randn(2, 16)
    y = layer(torch.randn(2, 6, 4, 4), w)
    ys, yb = layer.affine(w).chunk(2, dim=1)
    torch.testing.assert_close(y.mean((2, 3)), yb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y.std((2, 3), unbiased=False), (1 + ys).abs(), atol=1e-4, rtol=1e-4)


def test_fused_upsampling_is_nearest_then_the_flipped_conv():
    torch.manual_seed(4)
    fused = _randomised(StyledLayer(3, 4, 16, 16, up="transposed"))
    plain = StyledLayer(3, 4, 16, 16, up="nearest")
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():
        plain.weight.copy_(fused.weight.flip(2, 3))
    x, w = torch.randn(2, 3, 8, 8), torch.randn(2, 16)
    torch.testing.assert_close(fused(x, w), plain(x, w), atol=1e-5, rtol=1e-5)


# -- NVIDIA's TF layout --------------------------------------------------------------------
def _scope(i):
    if i < 2:
        return ("4x4/Const", "4x4/Conv")[i]
    r = 2 ** ((i - 2) // 2 + 3)
    return f"{r}x{r}/" + ("Conv0_up" if i % 2 == 0 else "Conv1")


def _to_tf(G, *, extra=True) -> TFNetwork:
    """The inverse mapping: a ``Generator1``'s weights as NVIDIA's G_style record lays them out."""
    sd = {k: v.detach().double().numpy() for k, v in G.state_dict().items()}
    conv = lambda a: a.transpose(2, 3, 1, 0)  # noqa: E731  [out, in, kh, kw] -> [kh, kw, in, out]
    mp = {"dlatent_avg": sd["mapping.w_avg"]}
    for i in range(G.config["mapping_layers"]):
        mp[f"G_mapping/Dense{i}/weight"] = sd[f"mapping.net.{i}.weight"].T
        mp[f"G_mapping/Dense{i}/bias"] = sd[f"mapping.net.{i}.bias"] * math.sqrt(2)
    syn = {"4x4/Const/const": sd["synthesis.const"], "lod": np.float32(0),
           "ToRGB_lod0/weight": conv(sd["synthesis.torgb.weight"]), "ToRGB_lod0/bias": sd["synthesis.torgb.bias"]}
    for i in range(G.num_ws):
        p, s = f"synthesis.layers.{i}", _scope(i)
        syn[f"noise{i}"] = sd[f"{p}.noise_const"]
        if i:
            syn[f"{s}/weight"] = conv(sd[f"{p}.weight"])
        syn[f"{s}/Noise/weight"] = sd[f"{p}.noise_strength"]
        syn[f"{s}/bias"] = sd[f"{p}.bias"]
        syn[f"{s}/StyleMod/weight"] = sd[f"{p}.affine.weight"].T
        syn[f"{s}/StyleMod/bias"] = sd[f"{p}.affine.bias"]
    if extra:  # progressive growing's lower-resolution toRGBs: in every official file, unused at lod 0
        rng = np.random.default_rng(0)
        for k in range(1, G.synthesis.log_res - 1):
            c = G.synthesis.channels[G.resolution >> k]
            syn[f"ToRGB_lod{k}/weight"], syn[f"ToRGB_lod{k}/bias"] = rng.normal(size=(1, 1, c, 3)), np.zeros(3)
    f32 = lambda d: {k: np.asarray(v, dtype=np.float32) for k, v in d.items()}  # noqa: E731
    mp_own = {k.split("/", 1)[1]: v for k, v in mp.items() if "/" in k}
    top = dict(num_channels=3, resolution=G.resolution, label_size=0, latent_size=G.z_dim, dlatent_size=G.w_dim,
               mapping_layers=G.config["mapping_layers"], mapping_fmaps=G.w_dim,
               fmap_base=G.config["channel_base"] // 2,
               fmap_max=G.config["channel_max"])
    mapping = TFNetwork("G_mapping", "G_mapping", {**top, "dlatent_broadcast": G.num_ws}, f32(mp_own))
    synthesis = TFNetwork("G_synthesis", "G_synthesis", dict(top), f32(syn))
    flat = {"dlatent_avg": mp["dlatent_avg"], "lod": np.float32(0),
            **{f"G_mapping/{k}": v for k, v in mp_own.items()}, **{f"G_synthesis/{k}": v for k, v in syn.items()}}
    return TFNetwork("Gs", "G_style", top, f32(flat), {"mapping": mapping, "synthesis": synthesis})


def _tf_reference(net, z, psi=0.7, cutoff=8):
    """What NVIDIA's G_style computes at lod 0 with randomize_noise=False, written out on the
    TF-layout variables (fp64): get_weight's run-time scale, dense as x @ W, SAME convs,
    tile up-sampling, the fused conv as the adjoint of a stride-2 SAME conv."""
    v = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)) for k, a in net.variables.items()}
    kw = net.static_kwargs
    lrelu = lambda x: torch.maximum(x, 0.2 * x)  # noqa: E731

    def weight(name, gain, lrmul=1.0):
        w = v[name]
        return w * (gain / math.sqrt(np.prod(w.shape[:-1]))) * lrmul

    def conv_same(x, w):  # [kh, kw, in, out], stride 1, SAME (odd kernel)
        return F.conv2d(x, w.permute(3, 2, 0, 1), padding=w.shape[0] // 2)

    x = z.double()
    x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
    for i in range(kw["mapping_layers"]):
        x = lrelu(x @ weight(f"G_mapping/Dense{i}/weight", math.sqrt(2), 0.01) + v[f"G_mapping/Dense{i}/bias"] * 0.01)
    num_layers = 2 * int(math.log2(kw["resolution"])) - 2
    coefs = torch.tensor([psi if i < cutoff else 1.0 for i in range(num_layers)], dtype=torch.float64)
    dl = v["dlatent_avg"] + (x[:, None] - v["dlatent_avg"]) * coefs[None, :, None]
    f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    f = (f[:, None] * f[None]) / 16

    def epilogue(x, i, scope):
        x = x + v[f"G_synthesis/noise{i}"] * v[f"{scope}/Noise/weight"].view(1, -1, 1, 1)
        x = lrelu(x + v[f"{scope}/bias"].view(1, -1, 1, 1))
        x = x - x.mean((2, 3), keepdim=True)
        x = x * torch.rsqrt(x.square().mean((2, 3), keepdim=True) + 1e-8)
        style = (dl[:, i] @ weight(f"{scope}/StyleMod/weight", 1.0)
                 + v[f"{scope}/StyleMod/bias"]).view(-1, 2, x.shape[1])
        return x * (style[:, 0, :, None, None] + 1) + style[:, 1, :, None, None]

    x = epilogue(v["G_synthesis/4x4/Const/const"].expand(len(z), -1, -1, -1), 0, "G_synthesis/4x4/Const")
    x = epilogue(conv_same(x, weight("G_synthesis/4x4/Conv/weight", math.sqrt(2))), 1, "G_synthesis/4x4/Conv")
    for i in range(2, num_layers, 2):
        scope = f"G_synthesis/{_scope(i)}"
        w = weight(f"{scope}/weight", math.sqrt(2))
        if x.shape[2] * 2 >= 128:  # fused_scale='auto'
            wt = F.pad(w.permute(2, 3, 0, 1), [1, 1, 1, 1]).permute(2, 3, 0, 1)  # pad kh, kw
            wt = (wt[1:, 1:] + wt[:-1, 1:] + wt[1:, :-1] + wt[:-1, :-1]).permute(0, 1, 3, 2)  # [4, 4, out, in]
            hi = torch.zeros(len(z), w.shape[3], 2 * x.shape[2], 2 * x.shape[3], dtype=torch.float64,
                             requires_grad=True)
            down = F.conv2d(hi, wt.permute(3, 2, 0, 1), stride=2, padding=1)  # TF SAME: pad 1 | 1 for 4 taps, stride 2
            x = torch.autograd.grad(down, hi, grad_outputs=x)[0]
        else:
            x = conv_same(x.repeat_interleave(2, 2).repeat_interleave(2, 3), w)
        x = F.conv2d(x, f.expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])
        x = epilogue(x, i, scope)
        scope = f"G_synthesis/{_scope(i + 1)}"
        x = epilogue(conv_same(x, weight(f"{scope}/weight", math.sqrt(2))), i + 1, scope)
    rgb = conv_same(x, weight("G_synthesis/ToRGB_lod0/weight", 1.0))
    return rgb + v["G_synthesis/ToRGB_lod0/bias"].view(1, -1, 1, 1)


def _psnr(a, b):
    mse = float((a.double() - b.double()).square().mean())
    return 10 * math.log10(4.0 / max(mse, 1e-30))  # images span [-1, 1]: peak-to-peak 2


def test_tf_layout_round_trip_and_reference_parity():
    torch.manual_seed(1)
    G = _randomised(Generator1(resolution=128, z_dim=16, w_dim=16, mapping_layers=3, channel_base=512,
                               channel_max=8), seed=1)
    assert [layer.up for layer in G.synthesis.layers][-4::2] == ["nearest", "transposed"]  # fused from 128 px
    net = _to_tf(G)
    G2, info = stylegan1_from_tf(net)
    assert info["config"] == G.config and info["arch"] == "stylegan1"
    lower_rgbs = [f"G_synthesis/ToRGB_lod{k}/{p}" for k in range(1, 6) for p in ("weight", "bias")]
    assert sorted(info["unused"]) == sorted(["lod", "G_synthesis/lod"] + lower_rgbs)
    z = G.sample_z(2, seed=3)
    img, img2 = G(z, truncation_psi=0.7), G2(z, truncation_psi=0.7)
    assert torch.equal(img, img2)  # the layouts round-trip exactly
    ref = _tf_reference(net, z, psi=0.7, cutoff=8)
    assert _psnr(img2, ref) >= 40, _psnr(img2, ref)
    assert _psnr(G2(z), _tf_reference(net, z, psi=1.0)) >= 40


def _edited(net, variables=None, **kwargs):
    return TFNetwork(net.name, kwargs.pop("build", net.build_func_name), {**net.static_kwargs, **kwargs},
                     net.variables if variables is None else variables, net.components)


@pytest.mark.parametrize("change, match", [
    (lambda n: _edited(n, {**n.variables, "G_synthesis/4x4/Conv/Extra/weight": np.zeros(3, np.float32)}),
     "G_synthesis/4x4/Conv/Extra/weight"),
    (lambda n: _edited(n, {k: v for k, v in n.variables.items() if k != "G_synthesis/8x8/Conv1/bias"}),
     "G_synthesis/8x8/Conv1/bias missing"),
    (lambda n: _edited(n, {**n.variables, "G_synthesis/8x8/Conv1/weight": np.zeros((3, 3, 8, 9), np.float32)}),
     r"G_synthesis/8x8/Conv1/weight has shape \[3, 3, 8, 9\]"),
    (lambda n: _edited(n, {**n.variables, "lod": np.float32(1.0)}), "progressive"),
    (lambda n: _edited(n, {**n.variables, "G_synthesis/noise3": np.full((1, 1, 8, 8), np.nan, np.float32)}),
     "noise3 holds NaN"),
    (lambda n: _edited(n, label_size=10), "label_size=10"),
    (lambda n: _edited(n, use_pixel_norm=True), "use_pixel_norm=True"),
    (lambda n: _edited(n, blur_filter=None), "blur_filter"),
    (lambda n: _edited(n, new_switch=1), "unknown StyleGAN keyword argument 'new_switch'"),
    (lambda n: _edited(n, build="G_main"), "StyleGAN2"),
])
def test_tf_reader_refuses_what_it_cannot_map(G1, change, match):
    with pytest.raises(CheckpointError, match=match):
        stylegan1_from_tf(change(_to_tf(G1)))


# -- native files, latents and directions carry the arch -----------------------------------------
def test_native_round_trip_records_the_arch(G1, tmp_path):
    save_native(tmp_path / "m1", G1, name="tiny-sg1")
    cfg = json.loads((tmp_path / "m1" / "config.json").read_text())
    assert cfg["generator"]["arch"] == "stylegan1"
    m = load_native(tmp_path / "m1")
    assert isinstance(m.G, Generator1)
    z = G1.sample_z(2, seed=8)
    assert torch.equal(m.G(z), G1(z))
    G2 = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=256, channel_max=16)
    save_native(tmp_path / "m2", G2, name="tiny-sg2")
    assert "arch" not in json.loads((tmp_path / "m2" / "config.json").read_text())["generator"]
    assert type(load_native(tmp_path / "m2").G) is Generator
    for key, value, match in [("arch", "stylegan9", "arch 'stylegan9'"), ("arch", ["stylegan1"], "arch"),
                              ("fused_scale", "sometimes", "fused_scale"), ("mapping_kind", "mlp", "unknown")]:
        (tmp_path / "m1" / "config.json").write_text(json.dumps({**cfg, "generator": {**cfg["generator"], key: value}}))
        with pytest.raises(CheckpointError, match=match):
            load_native(tmp_path / "m1")


def test_latents_and_directions_refuse_the_other_arch(G1, tmp_path):
    G2 = Generator(z_dim=16, w_dim=16, resolution=32, channel_base=256, channel_max=16)
    lat = Latent(space="w", codes=G1.mapping(G1.sample_z(1, seed=0)), model_id="tiny-sg1@0", arch="stylegan1")
    back = Latent.load(lat.save(tmp_path / "a.safetensors"))
    assert back.arch == "stylegan1"
    back.check_generator(G1)
    with pytest.raises(LatentFileError, match="stylegan1 code; the generator is a stylegan2"):
        back.check_generator(G2)  # same num_ws and w_dim: only the arch tells them apart
    old = Latent(space="w", codes=lat.codes, model_id="m@0")
    assert Latent.load(old.save(tmp_path / "b.safetensors")).arch == "stylegan2"  # files without the key
    d = Direction.from_vector(torch.randn(16), space="w", attribute="smile", model_id="tiny-sg1@0", num_ws=8,
                              arch="stylegan1")
    assert Direction.load(d.save(tmp_path)).arch == "stylegan1"
    d2 = Direction.from_vector(torch.randn(16), space="w", attribute="smile", model_id="tiny-sg1@0", num_ws=8)
    assert "arch" not in d2.metadata() and Direction.load(d2.save(tmp_path / "d2.safetensors")).arch == "stylegan2"
    from faceedit.editing import edit
    from faceedit.editing.fit import affines_for_layer, sefa

    assert edit(lat, {d: 1.0}).arch == "stylegan1"
    assert affines_for_layer(G1.synthesis, 3) == [G1.synthesis.layers[3].affine]
    assert [s.arch for s in sefa(G1, model_id="tiny-sg1@0", k=2, layers=(0, 1), codes=torch.randn(50, 16).numpy())] \
        == ["stylegan1", "stylegan1"]
    with pytest.raises(DirectionError, match="fitted on a stylegan2 generator and cannot edit a stylegan1"):
        edit(lat, {d2: 1.0})


# -- W / W+ inversion and editing through the stages -------------------------------------------
def test_invert_edit_synthesise_an_sg1_model(tmp_path):
    from faceedit import Pipeline, invert
    from faceedit.editing import edit

    torch.manual_seed(5)
    G = _randomised(Generator1(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128,
                               channel_max=8), seed=5, scale=0.1)
    save_native(tmp_path / "sg1", G, name="tiny-sg1")
    with torch.no_grad():
        target = G(G.sample_z(1, seed=11), noise_mode="const")
    pipe = Pipeline(model=str(tmp_path / "sg1"), space="w", device="cpu")
    assert isinstance(pipe.G, Generator1) and pipe.model_id.startswith("tiny-sg1@")
    for space in ("w", "w+"):
        lat = invert(target, model=str(tmp_path / "sg1"), space=space, steps=12, prior="none", perceptual="none",
                     device="cpu", seed=0)
        hist = lat.meta["history"]
        assert lat.arch == "stylegan1" and lat.space == space and hist[-1] < hist[0]
    d = Direction.from_vector(torch.randn(16, generator=torch.Generator().manual_seed(0)), space="w",
                              attribute="smile", model_id=lat.model_id, num_ws=G.num_ws, latent_std=0.5,
                              arch="stylegan1")
    moved = edit(lat, {d: 2.0})
    torch.testing.assert_close(moved.codes - lat.codes, d.full()[None] * 1.0)
    a, b = pipe.synthesize(lat), pipe.synthesize(moved)
    assert a.shape == (1, 16, 16, 3) and a.dtype == np.uint8 and np.abs(a.astype(int) - b).max() > 0
    with pytest.raises(ValueError, match="transformer mapping"):
        invert(target, model=str(tmp_path / "sg1"), space="wpp", steps=2, prior="none", perceptual="none")
