"""InversionOptions: validation, normalisation, and that every entry point reads the same settings."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from faceedit.core.errors import InversionError
from faceedit.inversion import Compile, InversionOptions, Perceptual, Projector, invert
from faceedit.inversion.methods import invert_with
from faceedit.networks import Generator


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=256, channel_max=16).eval()


def _target(G, n=2):
    with torch.no_grad():
        return G.synthesis(G.mapping(G.sample_z(n, seed=4))).clamp(-1, 1)


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=2.5), "steps must be an integer >= 1"),
    (dict(prior_weight=-1.0), "prior weight must be >= 0"),
    (dict(prior="uniform"), "prior must be 'gaussian' or 'none'"),
    (dict(perceptual="vgg"), "perceptual must be one of auto, lpips, disc, none"),
    (dict(compile="max-speed"), "compile must be one of off, default, reduce-overhead"),
    (dict(path="fast"), "path must be one of reference, shared, poly"),
    (dict(amp="fp16"), "amp must be None or 'bf16'"),
    (dict(method="gradient"), "method must be one of encoder, optim, hybrid, pti"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(cuda_graphs=True, compile="reduce-overhead"), "already captures the whole step"),
])
def test_bad_values_are_refused_on_construction(kw, match):
    with pytest.raises(InversionError, match=match):
        InversionOptions(**kw)


def test_names_become_enums_and_the_value_is_frozen():
    o = InversionOptions(space="W+", perceptual="lpips", compile=True, amp="none")
    assert o.space == "w+" and o.perceptual is Perceptual.LPIPS and o.compile is Compile.DEFAULT and o.amp is None
    assert InversionOptions(compile=False).compile is Compile.OFF
    assert InversionOptions(compile="reduce-overhead").compile is Compile.REDUCE_OVERHEAD
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 3
    # replace: None keeps a field, an unknown name lists the settings
    assert o.replace(steps=7, lr=None).steps == 7 and o.replace(steps=7).lr is None
    with pytest.raises(InversionError, match="unknown inversion setting.*stepz.*the settings are.*steps"):
        o.replace(stepz=3)


def test_projector_takes_options_and_names_the_fix(G):
    with pytest.raises(InversionError, match=r"InversionOptions\(space='w\+', steps=100\)"):
        Projector(G, "w+")
    p = Projector(G, InversionOptions(space="w", steps=4, perceptual="none", lr=0.2, noise_factor=0.0))
    assert (p.steps, p.lr, p.noise_factor, p.prior_weight, p.perceptual) == (4, 0.2, 0.0, 0.0, None)
    p = Projector(G, InversionOptions(space="w", perceptual="none"))  # None fields: the optimiser's defaults
    assert (p.steps, p.lr, p.noise_factor) == (50, 0.1, 0.05)


def test_invert_options_and_keywords_give_the_same_latent(G):
    """``invert(options=...)`` and the same settings by keyword run the same optimisation; a
    keyword wins over the field of ``options``; a misspelt keyword is refused by name."""
    target = _target(G)
    opts = InversionOptions(space="w", steps=3, prior="none", perceptual="none", seed=2, batch_size=1)
    a = invert(target, G=G, options=opts)
    b = invert(target, G=G, space="w", steps=3, prior="none", perceptual="none", seed=2, batch_size=1)
    assert torch.equal(a.codes, b.codes) and a.meta["steps_requested"] == 3 and a.meta["seed"] == 2
    c = invert(target, G=G, options=opts, steps=2, seed=5)
    assert c.meta["steps_requested"] == 2 and c.meta["seed"] == 5 and not torch.equal(c.codes, a.codes)
    d = invert_with(None, target, G=G, options=opts.replace(method="optim"))
    assert torch.equal(d.codes, a.codes) and d.meta["method"] == "optim"
    with pytest.raises(InversionError, match="unknown inversion setting.*optimise_noise"):
        invert(target, G=G, options=opts, optimise_noise=True)
