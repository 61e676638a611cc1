"""Tests of the polyphase synthesis path (faceedit.networks.fastsynth, ``path="poly"``).

Every check compares against the reference path (``path="reference"``) or the reference ops in
``networks/ops.py``, on random inputs, in fp32 or fp64 on the CPU.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from faceedit.networks import Generator
from faceedit.networks.fastsynth import (blur_phases, phase_matrices, phase_shuffle, synthesis_poly,
                                         upconv_phase2_weight, upconv_poly_weight, upsample2d_poly)
from faceedit.networks.ops import make_fir, modulated_conv2d, upfirdn2d, upsample2d


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def random_generator(resolution, channel_base, channel_max, w_dim=16, seed=0, **kw):
    torch.manual_seed(seed)
    G = Generator(z_dim=w_dim, w_dim=w_dim, resolution=resolution, mapping_layers=2, channel_base=channel_base,
                  channel_max=channel_max, **kw)
    with torch.no_grad():  # noise strengths and biases start at zero: make them matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.3 * torch.randn_like(p))
    return G.eval().requires_grad_(False)


def synth(G, ws, impl, **kw):
    """``impl``: True (the reference), ``poly3`` or ``phase2`` (the polyphase path's two up-convs)."""
    if impl is True:
        return G.synthesis(ws, path="reference", **kw)
    return synthesis_poly(G.synthesis, ws, kw.get("noise_mode", "const"), kw.get("noise"), up_impl=impl)


def transposed_conv_blur(x, weight, fir):
    """The reference up-sampling conv: stride-2 transposed 3x3 conv (2H+1), then the blur (-> 2H)."""
    y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    return upfirdn2d(y, fir, pad=(1, 1, 1, 1), gain=4)


# --- ops ------------------------------------------------------------------------------------

@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3)])   # the second is not symmetric: catches a flip
def test_polyphase_upconv_equals_transposed_conv_and_blur(taps):
    g = torch.Generator().manual_seed(0)
    fir = make_fir(taps).double()
    x = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64)   # non-square, odd size
    weight = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    ref = transposed_conv_blur(x, weight, fir)
    out = phase_shuffle(F.conv2d(x, upconv_poly_weight(weight, fir), padding=1))
    assert out.shape == ref.shape == (2, 4, 14, 12)
    assert rel_err(out, ref) < 1e-12
    # the 2x2 form: the transposed conv's phases, then the blur on the phases (both layouts)
    t4 = F.conv2d(x, upconv_phase2_weight(weight), padding=1)
    tconv = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)             # [.., 15, 13]
    assert rel_err(phase_shuffle(t4)[:, :, :-1, :-1], tconv) < 1e-12
    assert phase_shuffle(t4)[:, :, -1].abs().max() == 0 and phase_shuffle(t4)[..., -1].abs().max() == 0
    t4p = F.conv2d(x, upconv_phase2_weight(weight), padding=2)
    assert rel_err(blur_phases(t4p, fir), ref) < 1e-12
    assert rel_err(blur_phases(t4p.contiguous(memory_format=torch.channels_last), fir), ref) < 1e-12


def test_polyphase_kernel_is_the_filtered_weight():
    """Each phase's 3x3 kernel is a sub-grid of the 6x6 kernel ``weight (*) fir2d``: the four
    phases together hold every tap of it exactly once."""
    g = torch.Generator().manual_seed(1)
    fir = make_fir().double()
    weight = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)
    f2 = torch.outer(fir, fir) * 4
    full = F.conv2d(F.pad(weight, [3, 3, 3, 3]), f2.flip(0, 1).view(1, 1, 4, 4))[0, 0]   # full conv, 6x6
    k = upconv_poly_weight(weight, fir).view(2, 2, 3, 3)
    taps = torch.sort(k.flatten()).values
    assert torch.allclose(taps, torch.sort(full.flatten()).values, rtol=0, atol=1e-12)
    assert torch.allclose(k.sum(dim=(2, 3)), torch.full((2, 2), weight.sum().item(), dtype=torch.float64))
    assert phase_matrices(fir).shape == (2, 3, 3)


def test_phase_shuffle_layouts_agree():
    t = torch.randn(2, 12, 3, 5)
    a = phase_shuffle(t)
    b = phase_shuffle(t.contiguous(memory_format=torch.channels_last))
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :, 1::2, 0::2], t[:, 6:9])   # phase (py=1, px=0) is channels 2C..3C


def test_upsample2d_poly_equals_upsample2d():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 9, 4, generator=g, dtype=torch.float64)
    for taps in ((1, 3, 3, 1), (1, 2, 5, 3)):
        fir = make_fir(taps).double()
        assert rel_err(upsample2d_poly(x, fir), upsample2d(x, fir)) < 1e-13
    with pytest.raises(ValueError, match="4-tap"):
        upsample2d_poly(x, make_fir((1, 2, 1)))
    # the form used under torch.compile (a zero-stuffed 16-tap stencil)
    fir = make_fir((1, 2, 5, 3)).double()
    fn = torch.compile(upsample2d_poly, backend="eager", fullgraph=True)
    torch._dynamo.reset()
    assert rel_err(fn(x, fir), upsample2d(x, fir)) < 1e-13
    torch._dynamo.reset()


def test_modulated_up_conv_with_demodulation_matches_reference():
    """Polyphase conv + StyleGAN2 demodulation applied after the conv = the grouped reference."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 5, 5, generator=g)
    weight = torch.randn(7, 6, 3, 3, generator=g) / 6
    styles = torch.randn(3, 6, generator=g) + 1
    fir = make_fir()
    ref = modulated_conv2d(x, weight, styles, up=True, fir=fir, fused=True)
    d = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    out = phase_shuffle(F.conv2d(x * styles.view(3, 6, 1, 1), upconv_poly_weight(weight, fir), padding=1))
    out = out * d.view(3, 7, 1, 1)
    assert rel_err(out, ref) < 1e-5


# --- the whole synthesis network ------------------------------------------------------------

CONFIGS = {
    "res32": dict(resolution=32, channel_base=512, channel_max=32),
    "res64-clamp": dict(resolution=64, channel_base=1024, channel_max=24, conv_clamp=0.6),
    "1024-like": dict(resolution=1024, channel_base=2048, channel_max=8),   # 2 channels at 1024 px
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_synthesis_poly_matches_reference(name):
    G = random_generator(**CONFIGS[name])
    batch = 1 if name == "1024-like" else 3
    ws = G.mapping(torch.randn(batch, 16, generator=torch.Generator().manual_seed(5)), truncation_psi=0.8)
    with torch.no_grad():
        for mode in ("const", "none") if name != "1024-like" else ("const",):
            ref = G.synthesis(ws, noise_mode=mode, path="reference")
            out = G.synthesis(ws, noise_mode=mode, path="poly")
            assert out.shape == ref.shape and out.dtype == torch.float32
            assert rel_err(out, ref) < 1e-4, (name, mode)
            assert rel_err(synth(G, ws, "phase2", noise_mode=mode), ref) < 1e-4, (name, mode)
    if "conv_clamp" in CONFIGS[name]:  # the clamp must actually bite for the test to mean anything
        with torch.no_grad():
            G2 = random_generator(**{k: v for k, v in CONFIGS[name].items() if k != "conv_clamp"})
            assert rel_err(G2.synthesis(ws, path="reference"), ref) > 1e-2


def _grads(G, ws0, noise0, probe, impl, dtype):
    ws = ws0.to(dtype).clone().requires_grad_(True)
    noise = [n.to(dtype).clone().requires_grad_(True) for n in noise0]
    (synth(G.to(dtype), ws, impl, noise=noise) * probe.to(dtype)).sum().backward()
    return ws.grad, torch.cat([n.grad.flatten() for n in noise])


@pytest.mark.parametrize("name", ["res32", "1024-like"])
def test_synthesis_poly_gradients_match_reference(name):
    """d(loss)/d(ws) and d(loss)/d(noise maps) through the polyphase path (the projector's use).

    fp32 against the fp32 reference at 32 px. At 1024 px with 2 channels the paths are compared
    with an fp64 reference: the new path must be exact in fp64 (that is the correctness check) and
    within fp32 rounding in fp32. How far fp32 lands from fp64 there depends on the CPU's
    convolution kernels and reduction order (the reference path measured 5e-6 on one machine and
    1.2e-4 on another, the polyphase path 1.2e-4 to 1.4e-4), so the fp32 bound is a rounding bound
    (5e-4, or 1.5x the reference's own error where that is larger), not a ranking of the two paths;
    a real error in the path (blur, demodulation, noise placement) is off by 1e-2 or more.
    """
    G = random_generator(**CONFIGS[name])
    batch = 1 if name == "1024-like" else 2
    ws0 = G.mapping(torch.randn(batch, 16, generator=torch.Generator().manual_seed(6)))
    noise0 = [torch.randn(batch, 1, b.shape[-2], b.shape[-1], generator=torch.Generator().manual_seed(i))
              for i, b in enumerate(G.synthesis.noise_buffers())]
    probe = torch.randn(batch, 3, G.resolution, G.resolution, generator=torch.Generator().manual_seed(7))
    ref32 = _grads(G, ws0, noise0, probe, True, torch.float32)
    assert ref32[0].abs().sum() > 0
    ref64 = _grads(G, ws0, noise0, probe, True, torch.float64) if name == "1024-like" else None
    for impl in ("poly3", "phase2"):
        new32 = _grads(G, ws0, noise0, probe, impl, torch.float32)
        if ref64 is None:
            assert rel_err(new32[0], ref32[0]) < 1e-4, impl
            assert rel_err(new32[1], ref32[1]) < 1e-4, impl
            continue
        new64 = _grads(G, ws0, noise0, probe, impl, torch.float64)
        for i in range(2):
            assert rel_err(new64[i], ref64[i]) < 1e-10, impl
            assert rel_err(new32[i], ref64[i]) < max(5e-4, 1.5 * rel_err(ref32[i], ref64[i])), impl


def test_synthesis_poly_weight_gradients_and_cache():
    """Gradients reach the conv weights (training), and the no-grad cache follows weight updates."""
    G = random_generator(**CONFIGS["res32"])
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(8)))
    layer = G.synthesis.convs_up[1]
    layer.weight.requires_grad_(True)
    grads = {}
    for impl in (True, "poly3", "phase2"):
        layer.weight.grad = None
        synth(G, ws, impl).square().mean().backward()
        grads[impl] = layer.weight.grad.clone()
    assert rel_err(grads["poly3"], grads[True]) < 1e-4
    assert rel_err(grads["phase2"], grads[True]) < 1e-4
    layer.weight.requires_grad_(False)
    with torch.no_grad():
        a = G.synthesis(ws, path="poly")
        assert hasattr(layer, "_poly_cache")
        layer.weight.mul_(1.5).add_(0.1)            # in-place updates: the caches must not serve stale kernels
        G.synthesis.convs[0].affine.weight.mul_(1.2)
        G.synthesis.torgbs[1].affine.bias.add_(0.3)
        b = G.synthesis(ws, path="poly")
        assert rel_err(b, G.synthesis(ws, path="reference")) < 1e-4
        assert rel_err(a, b) > 1e-3


def test_synthesis_poly_channels_last_and_random_noise():
    G = random_generator(**CONFIGS["res32"]).to(memory_format=torch.channels_last)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        # run the NHWC branches on the CPU by feeding a channels_last constant
        ref = G.synthesis(ws, path="reference")
        out = G.synthesis(ws, path="poly")
        assert rel_err(out, ref) < 1e-4
        torch.manual_seed(1)
        r1 = G.synthesis(ws, noise_mode="random", path="poly")
        torch.manual_seed(1)
        r2 = G.synthesis(ws, noise_mode="random", path="reference")
        assert rel_err(r1, r2) < 1e-4                # same draws in the same order as the reference


def test_synthesis_poly_nhwc_helpers_match():
    """The channels_last branches of toRGB and the shuffle, forced on the CPU."""
    from faceedit.networks import fastsynth

    G = random_generator(**CONFIGS["res32"])
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(10)))
    rgb = G.synthesis.torgbs[0]
    x = torch.randn(2, rgb.weight.shape[1], 8, 8)
    skip = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        a = fastsynth.torgb_poly(rgb, x, rgb.affine(ws[:, 3]), skip)
        b = fastsynth.torgb_poly(rgb, x.contiguous(memory_format=torch.channels_last), rgb.affine(ws[:, 3]), skip)
        ref = rgb(x, ws[:, 3], skip, fused_modconv=True)
    assert rel_err(a, ref) < 1e-5 and rel_err(b, ref) < 1e-5
    # channels_last activations stay channels_last through every kind of layer (the epilogue's
    # addcmul would otherwise hand NCHW to the next conv)
    for layer in (G.synthesis.convs_up[1], G.synthesis.convs[1]):
        res = layer.resolution
        x = torch.randn(2, layer.weight.shape[1], res // 2 if layer.up else res, res // 2 if layer.up else res)
        x = x.contiguous(memory_format=torch.channels_last)
        for impl in ("poly3", "phase2"):
            with torch.no_grad():
                y = fastsynth.styled_conv_poly(layer, x, layer.affine(ws[:, 4]), layer.noise_const, impl)
            assert y.shape[-1] == res and y.is_contiguous(memory_format=torch.channels_last), (impl, layer.up)


def test_synthesis_poly_traces_as_one_graph():
    """No graph breaks (no .item(), no data-dependent Python branch): torch.compile can fuse it."""
    G = random_generator(resolution=16, channel_base=256, channel_max=16)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(11)))
    ref = G.synthesis(ws, path="reference")
    for impl in (None, "poly3"):   # None picks phase2 while compiling
        torch._dynamo.reset()
        fn = torch.compile(lambda w: synthesis_poly(G.synthesis, w, "const", None, impl), backend="eager",
                           fullgraph=True)
        with torch.no_grad():
            assert rel_err(fn(ws), ref) < 1e-4
    torch._dynamo.reset()


def test_bad_path_value_is_refused():
    G = random_generator(**CONFIGS["res32"])
    with pytest.raises(ValueError, match="synthesis path must be one of reference, shared, poly"):
        G.synthesis(torch.zeros(1, G.num_ws, 16), path="fast")


def test_projector_runs_on_the_polyphase_path():
    """``Projector(path="poly")`` (what bench/scripts/inversion.py's ours-poly rows use) follows
    the same optimisation trajectory as the reference path, noise maps included."""
    from faceedit.inversion.projector import InversionOptions, Projector

    G = random_generator(**CONFIGS["res32"])
    with torch.no_grad():
        target = G.synthesis(G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(12))))
    res = {}
    for path in ("reference", "poly"):
        p = Projector(G, InversionOptions(space="w+", steps=3, path=path, optimize_noise=True, noise_factor=0.0,
                                          perceptual="none"))
        assert p.path == path
        res[path] = p.project(target.clamp(-1, 1))
    ref = res["reference"]
    assert rel_err(res["poly"].ws, ref.ws) < 1e-4
    assert abs(res["poly"].history[-1] - ref.history[-1]) <= 1e-4 * abs(ref.history[-1])


def test_fused_adam_updates_reach_the_polyphase_path_once_its_cache_is_off():
    """Fused Adam does not advance version counters: with the weight caches on, a no-gradient
    polyphase pass after a fused step would reuse the old kernels (the stale-fakes bug of the
    eager fast training step); with them off (what the trainer sets) it matches the reference
    path on the updated weights, and the trainer's generators have them off."""
    from faceedit.networks.fastsynth import set_weight_cache
    from faceedit.training.loop import Trainer, TrainConfig

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=64, channel_max=16)
    ws = G.mapping(torch.randn(3, 16)).detach()
    opt = torch.optim.Adam(G.synthesis.parameters(), lr=0.05, fused=True)
    with torch.no_grad():
        before = G.synthesis(ws, noise_mode="const", path="poly")  # fills the caches
    G.synthesis(ws, noise_mode="const", path="reference").square().mean().backward()
    opt.step()
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const", path="reference")
        stale = G.synthesis(ws, noise_mode="const", path="poly")
        set_weight_cache(G, False)
        fresh = G.synthesis(ws, noise_mode="const", path="poly")
    assert (ref - before).abs().max() > 1e-2  # the step moved the images
    assert (stale - ref).abs().max() > 1e-3  # the trap: the cached kernels are the old weights'
    assert torch.allclose(fresh, ref, atol=1e-4)
    tr = Trainer(TrainConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=16,
                             batch=8), torch.zeros(8, 3, 16, 16, dtype=torch.uint8), "cpu")
    assert not any(getattr(m, "_poly_cache_on", True) for g in (tr.G, tr.G_ema) for m in g.modules())
