"""Tests of faceedit.networks: each compares against an independent reference or a property."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from faceedit.networks import Discriminator, Generator, MappingMLP, MappingTransformer, channels_for
from faceedit.networks.ops import downsample2d, make_fir, modulated_conv2d, upfirdn2d, upsample2d


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def tiny_generator(resolution=32, mapping_kind="mlp", seed=0, **kw):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=resolution, mapping_kind=mapping_kind, mapping_layers=2,
                  mapping_blocks=2, mapping_heads=2, channel_base=128 * resolution // 32 * 4, channel_max=32, **kw)
    with torch.no_grad():  # make every parameter matter (noise strengths and biases start at zero)
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.3 * torch.randn_like(p))
        G.mapping.w_avg.copy_(0.5 * torch.randn_like(G.mapping.w_avg))
    return G.eval()


# --- reference implementations, written independently of networks/ops.py ------------------

def fir2d(taps=(1, 3, 3, 1)) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float64)
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def direct_filter(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Valid 2-D *convolution* (flipped kernel) as an explicit sum of shifted slices."""
    kh, kw = k2.shape
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    out = torch.zeros(*x.shape[:-2], h, w, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += k2[kh - 1 - i, kw - 1 - j] * x[..., i:i + h, j:j + w]
    return out


def ref_upsample(x: torch.Tensor) -> torch.Tensor:
    """Zero-stuffing (gain 4), pad (2, 1), convolve with the 4x4 [1,3,3,1] kernel."""
    n, c, h, w = x.shape
    z = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    z[..., ::2, ::2] = x * 4
    z = F.pad(z, [2, 1, 2, 1])
    return direct_filter(z, fir2d().to(x.dtype))


def ref_modconv(x, weight, styles, demodulate=True, up=False):
    """Per-sample loop: modulate, demodulate, convolve one image at a time (float64)."""
    x, weight, styles = x.double(), weight.double(), styles.double()
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if up:
            y = F.conv_transpose2d(x[i:i + 1], w.transpose(0, 1), stride=2)  # 2H+1
            y = direct_filter(F.pad(y, [1, 1, 1, 1]), fir2d() * 4)          # -> 2H
        else:
            y = F.conv2d(x[i:i + 1], w, padding=w.shape[-1] // 2)
        outs.append(y)
    return torch.cat(outs)


# --- ops ------------------------------------------------------------------------------------

@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_matches_per_sample_reference(up, demodulate, fused):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 6, 6, generator=g)
    k = 3 if (demodulate or up) else 1
    weight = torch.randn(5, 8, k, k, generator=g) / math.sqrt(8 * k * k)
    styles = torch.randn(3, 8, generator=g) + 1.0
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, fir=make_fir(), fused=fused)
    ref = ref_modconv(x, weight, styles, demodulate, up)
    assert out.shape == ref.shape == (3, 5, 12 if up else 6, 12 if up else 6)
    assert rel_err(out, ref) < 1e-5


def test_demodulation_keeps_unit_variance():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 64, 48, 48, generator=g)
    weight = torch.randn(32, 64, 3, 3, generator=g) * 3.0           # deliberately badly scaled
    styles = torch.rand(4, 64, generator=g) * 4 + 0.1                 # large, uneven styles
    for fused in (True, False):
        y = modulated_conv2d(x, weight, styles, fused=fused)[:, :, 1:-1, 1:-1]  # drop zero-padded border
        var = y.var(dim=[2, 3])                                        # per sample and channel
        assert 0.9 < var.mean().item() < 1.1
        assert (var - 1).abs().max().item() < 0.25
    # without demodulation the variance follows the (large) weights: the property is not trivial
    y = modulated_conv2d(x, weight, styles, demodulate=False)
    assert y.var().item() > 10


def test_upsample_filter_matches_direct_convolution():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 5, generator=g)
    up = upsample2d(x, make_fir())
    assert up.shape == (2, 3, 14, 10)
    assert rel_err(up, ref_upsample(x.double())) < 1e-6
    # upfirdn2d itself, with asymmetric padding and a non-symmetric filter (catches a missing flip)
    taps = torch.tensor([1.0, 2.0, 4.0])
    y = upfirdn2d(x, taps / taps.sum(), pad=(2, 0, 1, 1))
    k2 = torch.outer(taps.double(), taps.double()) / taps.sum().double() ** 2
    ref = direct_filter(F.pad(x.double(), [2, 0, 1, 1]), k2)
    assert rel_err(y, ref) < 1e-6
    # the up-sampler is centred and preserves a constant (away from the zero-padded border)
    c = upsample2d(torch.ones(1, 1, 8, 8), make_fir())
    assert torch.allclose(c[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12), atol=1e-6)


def test_downsample_matches_direct_convolution():
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    d = downsample2d(x, make_fir())
    ref = direct_filter(F.pad(x.double(), [1, 1, 1, 1]), fir2d())[..., ::2, ::2]
    assert d.shape == (1, 2, 4, 4) and rel_err(d, ref) < 1e-6


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 4, 3, 1, 5), (2, 1, 7)])
def test_downsample_taps_matches_the_reference_downsampler(taps):
    """The fast discriminator's strided-slice down-sampler equals ops.downsample2d, for
    symmetric, asymmetric and odd-length filters (the flip and the split padding matter)."""
    from faceedit.networks.stylegan2 import downsample2d_taps

    x = torch.randn(3, 5, 12, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fir = make_fir(taps).double()
    ref = downsample2d(x, fir)
    fast = downsample2d_taps(x, fir)
    assert fast.shape == ref.shape == (3, 5, 6, 4) and rel_err(fast, ref) < 1e-12
    with pytest.raises(ValueError, match="even H and W"):
        downsample2d_taps(torch.randn(1, 1, 5, 4), make_fir())


def test_discriminator_with_taps_downsampling_matches_reference_forward_and_backward():
    """Discriminator.set_down_impl('taps') changes kernels, not values: logits, input gradients
    and weight gradients agree with the reference; an unknown name is refused."""
    from faceedit.networks import Discriminator

    torch.manual_seed(0)
    D = Discriminator(32, channel_base=256, channel_max=32)
    x = torch.randn(8, 3, 32, 32)
    outs = []
    for impl in ("reference", "taps"):
        D.set_down_impl(impl)
        D.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = D(xi)
        y.square().sum().backward()
        outs.append((y.detach(), xi.grad, [p.grad.clone() for p in D.parameters()]))
    (ya, ga, pa), (yb, gb, pb) = outs
    assert torch.allclose(ya, yb, rtol=1e-5, atol=1e-5) and rel_err(gb, ga) < 1e-5
    assert max(rel_err(b, a) for a, b in zip(pa, pb)) < 1e-5
    with pytest.raises(ValueError, match="must be one of"):
        D.set_down_impl("fast")


def test_bad_shapes_raise_value_error_with_message():
    x, w, s = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(2, 4)
    with pytest.raises(ValueError, match="do not agree"):
        modulated_conv2d(x, w, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\[N, Cin, H, W\]"):
        modulated_conv2d(x[0], w, s)
    with pytest.raises(ValueError, match="fir"):
        modulated_conv2d(x, w, s, up=True)
    with pytest.raises(ValueError, match="NCHW|N, C, H, W"):
        upfirdn2d(torch.randn(4, 5), make_fir())
    G = tiny_generator(16)
    with pytest.raises(ValueError, match=r"ws of shape \[N, 6, 16\]"):
        G.synthesis(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match=r"z of shape \[N, 16\]"):
        G.mapping(torch.randn(1, 17))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.randn(1, 6, 16), noise_mode="loud")
    with pytest.raises(ValueError, match="noise maps"):
        G.synthesis(torch.randn(1, 6, 16), noise=[torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="power of two"):
        Generator(resolution=48, channel_base=64, channel_max=8)
    with pytest.raises(ValueError, match="mapping_kind"):
        Generator(resolution=16, mapping_kind="rnn", channel_base=64, channel_max=8)
    Gt = tiny_generator(16, "transformer")
    with pytest.raises(ValueError, match="one z per synthesis layer"):
        Gt.mapping(torch.randn(2, 16))
    D = Discriminator(16, channel_base=64, channel_max=8)
    with pytest.raises(ValueError, match="16, 16"):
        D(torch.randn(1, 3, 32, 32))


# --- generator ----------------------------------------------------------------------------

def test_reference_and_shared_synthesis_paths_agree():
    G = tiny_generator(32)
    ws = G.mapping(G.sample_z(3, seed=5))
    a = G.synthesis(ws, path="reference")
    b = G.synthesis(ws, path="shared")
    assert rel_err(b, a) < 1e-5
    assert a.std() > 0.05  # a real image, not a constant


def test_synthesis_path_is_validated_and_fused_is_a_deprecated_alias():
    """An unknown path is a NetworkError naming the choices; the old ``fused=`` keyword still
    picks the same path (True = reference, False = shared) and warns."""
    from faceedit.core.errors import NetworkError
    from faceedit.networks import SYNTHESIS_PATHS

    assert SYNTHESIS_PATHS == ("reference", "shared", "poly")
    G = tiny_generator(16)
    ws = G.mapping(G.sample_z(2, seed=6))
    for bad in ("fast", True, None):
        with pytest.raises(NetworkError, match="reference, shared, poly"):
            G.synthesis(ws, path=bad)
    with pytest.raises(NetworkError, match="pass path="):
        G.synthesis(ws, fused="fast")
    for old, new in ((True, "reference"), (False, "shared")):
        with pytest.warns(DeprecationWarning, match=f"path='{new}'") as seen:
            out = G.synthesis(ws, fused=old)
        assert seen[0].filename == __file__  # points at the caller, not at torch's module wrappers
        torch.testing.assert_close(out, G.synthesis(ws, path=new), rtol=0, atol=0)


@pytest.mark.parametrize("resolution", [16, 32, 64, 128, 256, 512, 1024])
def test_output_shapes_and_layer_counts(resolution):
    base = 4 * resolution  # few channels at every scale keeps 1024 px fast on a CPU
    G = Generator(z_dim=8, w_dim=8, resolution=resolution, mapping_layers=1, channel_base=base, channel_max=8)
    log = int(math.log2(resolution))
    assert G.num_ws == 2 * log - 2 and G.synthesis.num_ws == G.num_ws
    assert len(G.synthesis.noise_buffers()) == 2 * log - 3
    assert [b.shape[-1] for b in G.synthesis.noise_buffers()] == [4] + [2 ** i for i in range(3, log + 1)
                                                                        for _ in range(2)]
    assert G.synthesis.channels == channels_for(resolution, base, 8)
    with torch.no_grad():
        img = G(G.sample_z(1, seed=0), noise_mode="none")
    assert img.shape == (1, 3, resolution, resolution)
    assert torch.isfinite(img).all()


def test_channel_rule_is_nvidias():
    assert channels_for(1024, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                              512: 64, 1024: 32}


def test_same_seed_same_image_and_seeds_differ():
    G = tiny_generator(32)
    with torch.no_grad():
        a = G(G.sample_z(2, seed=7))
        b = G(G.sample_z(2, seed=7))
        c = G(G.sample_z(2, seed=8))
        r1 = G(G.sample_z(1, seed=7), noise_mode="random")
        r2 = G(G.sample_z(1, seed=7), noise_mode="random")
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    assert (r1 - r2).abs().mean() > 1e-4  # random noise does change the image


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_truncation_psi_zero_gives_w_avg_image(kind):
    G = tiny_generator(16, kind)
    with torch.no_grad():
        ws = G.mapping(G.sample_z(3, seed=1), truncation_psi=0.0)
        assert torch.allclose(ws, G.w_avg.expand(3, -1, -1), atol=1e-6)
        img = G.synthesis(ws)
        ref = G.synthesis(G.w_avg.unsqueeze(0).expand(3, -1, -1).contiguous())
        assert torch.allclose(img, ref, atol=1e-6)
        # psi=0.5 is half-way and the cutoff leaves later layers untouched
        w1 = G.mapping(G.sample_z(3, seed=1))
        wh = G.mapping(G.sample_z(3, seed=1), truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(wh[:, :2], 0.5 * (w1[:, :2] + G.w_avg[:2]), atol=1e-6)
    assert torch.equal(wh[:, 2:], w1[:, 2:])


def test_mlp_codes_identical_across_layers():
    G = tiny_generator(32, "mlp")
    ws = G.mapping(G.sample_z(4, seed=0))
    assert ws.shape == (4, G.num_ws, G.w_dim)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))


def test_wpp_mapping_one_code_per_layer_and_coupled():
    G = tiny_generator(32, "transformer")
    assert isinstance(G.mapping, MappingTransformer) and G.z_shape == (G.num_ws, G.z_dim)
    z = G.sample_z(2, seed=0)
    with torch.no_grad():
        ws = G.mapping(z)
        assert ws.shape == (2, G.num_ws, G.w_dim)
        assert (ws[:, 0] - ws[:, 1]).abs().max() > 1e-3        # layers get different codes
        z2 = z.clone()
        z2[:, 3] = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(9))
        ws2 = G.mapping(z2)
    moved = (ws2 - ws).abs().amax(dim=(0, 2))                   # per layer
    assert moved[3] > 1e-3
    others = torch.cat([moved[:3], moved[4:]])
    assert (others > 1e-4).all(), f"changing token 3 left other layers unchanged: {others}"
    # the layer norm spans tokens and channels together, as in the reference
    assert tuple(G.mapping.blocks[0].norm1.normalized_shape) == (G.num_ws, G.w_dim)


def test_mlp_mapping_has_no_cross_layer_state():
    m = MappingMLP(8, 8, num_ws=4, num_layers=2)
    z = torch.randn(3, 8)
    assert torch.allclose(m(z)[1], m(z[1:2])[0], atol=1e-6)  # each sample independent of the batch


def test_conv_clamp_bounds_activations_and_is_recorded():
    G = tiny_generator(16, conv_clamp=0.05)
    assert G.config["conv_clamp"] == 0.05 and "conv_clamp" not in tiny_generator(16).config
    with torch.no_grad():
        img = G(G.sample_z(2, seed=0))
    # toRGB outputs are clamped, and the image is the sum of 3 up-sampled toRGB outputs
    assert img.abs().max() <= 3 * 0.05 + 1e-6


def test_bf16_autocast_fast_path_close_to_fp32():
    G = tiny_generator(32)
    ws = G.mapping(G.sample_z(2, seed=3))
    with torch.no_grad():
        ref = G.synthesis(ws)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = G.synthesis(ws, path="shared").float()
    mse = (out - ref).pow(2).mean()
    psnr = 10 * torch.log10(ref.abs().max() ** 2 / mse)
    assert psnr > 30, psnr


def test_discriminator_shapes():
    D = Discriminator(32, channel_base=256, channel_max=16, mbstd_group=2)
    x = torch.randn(4, 3, 32, 32)
    assert D(x).shape == (4, 1)
    feats = D.features(x)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]


def test_fast_path_gradients_match_reference():
    G = tiny_generator(16)
    ws = G.mapping(G.sample_z(2, seed=4)).detach()
    grads = []
    for path in ("reference", "shared"):
        G.zero_grad()
        w = ws.clone().requires_grad_(True)
        G.synthesis(w, path=path).square().mean().backward()
        grads.append((w.grad.clone(), G.synthesis.convs_up[0].weight.grad.clone()))
    for a, b in zip(*grads):
        assert rel_err(b, a) < 1e-4


def test_fast_upsample_equals_reference():
    from faceedit.networks.ops import upsample2d_fast

    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(6))
    assert rel_err(upsample2d_fast(x, make_fir()), ref_upsample(x.double())) < 1e-6
    assert rel_err(upsample2d_fast(x, make_fir((1, 2, 1))), upsample2d(x, make_fir((1, 2, 1)))) < 1e-6


def test_uint8_tensor_round_trip_is_exact():
    import numpy as np

    from faceedit.core.images import tensor_to_uint8, uint8_to_tensor

    a = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    t = uint8_to_tensor(a)
    assert t.shape == (3, 3, 5, 7) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert (tensor_to_uint8(t) == a).all()
