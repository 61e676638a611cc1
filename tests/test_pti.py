"""Pivotal tuning: better reconstruction, compact low-rank deltas, exact restore, file round trip."""
from __future__ import annotations

import pytest
import torch

from faceedit.inversion.latent import Latent, LatentFileError
from faceedit.inversion.pti import (apply_tuning, modulated_weights, pti_invert, synthesize, tune, tuning_bytes,
                                    tuning_deltas)
from faceedit.networks import Generator


def tiny_generator(res=16, seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=res, channel_base=128, channel_max=16,
                  mapping_layers=2).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(G.sample_z(2000, seed=1))[:, 0].mean(0))
    G.model_id = "tiny@000000000000"
    return G


def _state(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


@pytest.fixture(scope="module")
def tuned():
    """Two faces the generator cannot reproduce exactly, their pivots (optim) and PTI latents."""
    G = tiny_generator()
    gen = torch.Generator().manual_seed(5)
    # targets: generator images plus a structured pattern it has no code for
    base = G.synthesis(G.mapping(G.sample_z(2, seed=11)))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    pattern = 0.4 * torch.sin(6 * xx + 3 * yy)
    target = (base + pattern + 0.05 * torch.randn(base.shape, generator=gen)).clamp(-1, 1)
    before = _state(G)
    lat = pti_invert(target, None, "w+", 40, G=G, prior="none", perceptual="none", pivot_method="optim",
                     pivot_steps=30, rank=2, lr=1e-2, seed=0)
    return G, target, lat, before


def test_pti_improves_reconstruction(tuned):
    G, target, lat, _ = tuned
    assert lat.meta["method"] == "pti" and lat.meta["pivot_method"] == "optim"
    after, before = lat.meta["losses"]["pti_after"], lat.meta["losses"]["pti_before"]
    assert all(a < 0.8 * b for a, b in zip(after, before)), (before, after)
    plain = G.synthesis(lat.codes)
    tuned_img = synthesize(G, lat)
    err_plain = (plain - target).square().mean(dim=(1, 2, 3))
    err_tuned = (tuned_img - target).square().mean(dim=(1, 2, 3))
    assert (err_tuned < 0.8 * err_plain).all()
    torch.testing.assert_close(err_tuned, torch.tensor(after), rtol=1e-4, atol=1e-6)


def test_generator_untouched_and_apply_tuning_restores_exactly(tuned):
    G, target, lat, before = tuned
    for k, v in G.state_dict().items():  # tuning worked on a functional copy
        assert torch.equal(v, before[k]), k
    one = lat[1]
    with apply_tuning(G, one):
        changed = [k for k, v in G.state_dict().items() if not torch.equal(v, before[k])]
        inside = G.synthesis(one.codes)
    assert changed and all(k.endswith(".weight") for k in changed)
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    # also restored when the block raises
    with pytest.raises(RuntimeError, match="boom"):
        with apply_tuning(G, one):
            raise RuntimeError("boom")
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(inside, synthesize(G, one))
    # a latent without tuning is a no-op; a batch of tuned images is refused
    with apply_tuning(G, Latent("w+", one.codes, one.model_id)):
        assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    with pytest.raises(ValueError, match=r"latent\[i\]"):
        with apply_tuning(G, lat):
            pass


def test_tuning_round_trips_through_latent_file(tuned, tmp_path):
    G, target, lat, _ = tuned
    path = lat.save(tmp_path / "face.latent.safetensors")
    back = Latent.load(path)
    assert back.tuning.keys() == lat.tuning.keys()
    for k in lat.tuning:
        assert torch.equal(back.tuning[k], lat.tuning[k].float()), k
    assert back.meta["tuning"]["rank"] == 2
    torch.testing.assert_close(synthesize(G, back), synthesize(G, lat), rtol=0, atol=0)
    # slicing keeps each image's own tuning
    assert all(v.shape[0] == 1 for v in back[1].tuning.values())
    assert torch.equal(back[1].tuning["synthesis.conv1.weight.lora_b"], lat.tuning["synthesis.conv1.weight.lora_b"][1:])
    # another model's generator refuses it
    other = tiny_generator()
    other.model_id = "other@111111111111"
    with pytest.raises(LatentFileError, match="belongs to model"):
        with apply_tuning(other, back[0]):
            pass


def test_delta_is_much_smaller_than_the_generator(tuned, tmp_path):
    G, target, lat, _ = tuned
    per_image = tuning_bytes(lat[0].tuning)
    g_bytes = 4 * sum(p.numel() for p in G.parameters())
    assert per_image == lat.meta["tuning"]["bytes_per_image"]
    assert per_image < 0.15 * g_bytes, (per_image, g_bytes)   # tiny 16 px generator, rank 2
    # the shipped 64 px architecture at the default rank 4, one tuning step: bytes on disk
    big = Generator(z_dim=256, w_dim=256, resolution=64, channel_base=2048, channel_max=256).eval()
    pivot = big.mapping(big.sample_z(1, seed=0))
    tuning, _ = tune(big, pivot, torch.zeros(1, 3, 64, 64), steps=1, rank=4, locality_weight=0.0)
    expected = sum(4 * min(4, W.shape[0]) * (W.shape[0] + W[0].numel()) for W in modulated_weights(big).values())
    assert tuning_bytes(tuning) == expected
    big_bytes = 4 * sum(p.numel() for p in big.parameters())
    f_plain = Latent("w+", pivot.detach(), "faces64@0").save(tmp_path / "plain.safetensors").stat().st_size
    f_tuned = Latent("w+", pivot.detach(), "faces64@0", tuning=tuning).save(tmp_path / "t.safetensors").stat().st_size
    assert f_tuned - f_plain < 0.05 * big_bytes, (f_tuned - f_plain, big_bytes)
    extra = f_tuned - f_plain
    print(f"\nPTI delta per image: tiny G {per_image} B of {g_bytes} B; faces64 at rank 4: "
          f"{extra} B on disk for a {big_bytes} B fp32 generator ({100 * extra / big_bytes:.1f}%)")


def test_locality_keeps_other_codes_closer_than_the_pivot():
    G = tiny_generator(seed=2)
    pivot = G.mapping(G.sample_z(1, seed=3))
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    target = (G.synthesis(pivot) + 0.5 * noise).clamp(-1, 1)
    tuning, rec = tune(G, pivot, target, steps=30, rank=2, lr=1e-2, locality_weight=1.0)
    lat = Latent("w+", pivot, "tiny@000000000000", tuning=tuning)
    others = G.mapping(G.sample_z(8, seed=99))
    ref_p, ref_o = G.synthesis(pivot), G.synthesis(others)
    with apply_tuning(G, lat):
        ch_p = (G.synthesis(pivot) - ref_p).square().mean()
        ch_o = (G.synthesis(others) - ref_o).square().mean()
    assert rec["loss_after"] < rec["loss_before"]
    assert ch_o < 0.5 * ch_p, (float(ch_o), float(ch_p))


def test_bad_tuning_entries_are_refused():
    G = tiny_generator()
    with pytest.raises(LatentFileError, match="names no parameter"):
        tuning_deltas(G, {"synthesis.nope.weight.delta": torch.zeros(1, 3)})
    with pytest.raises(LatentFileError, match="unknown tuning entry"):
        tuning_deltas(G, {"synthesis.conv1.weight.x": torch.zeros(1, 3)})
    W = G.synthesis.conv1.weight
    with pytest.raises(LatentFileError, match="do not fit"):
        tuning_deltas(G, {"synthesis.conv1.weight.lora_a": torch.zeros(1, 2, 5),
                          "synthesis.conv1.weight.lora_b": torch.zeros(1, W.shape[0], 2)})


def _response_error(G, lat, pivot, deltas):
    """Mean squared difference between the tuned and the original generator's change for code moves ``deltas``."""
    ref_p = G.synthesis(pivot)
    ref = G.synthesis(pivot + deltas) - ref_p
    with apply_tuning(G, lat):
        got = G.synthesis(pivot + deltas) - G.synthesis(pivot)
    return float((got - ref).square().mean()), float(ref.square().mean())


def test_edit_consistency_keeps_the_response_to_small_moves():
    """With the edit-consistency term the tuned generator changes like the original one for moves of
    edit size around the pivot (held-out moves, not the ones it was trained on); without it the
    change drifts much further."""
    from faceedit.inversion.pti import _edit_codes

    G = tiny_generator(seed=2)
    pivot = G.mapping(G.sample_z(1, seed=3))
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    target = (G.synthesis(pivot) + 0.5 * noise).clamp(-1, 1)
    bank = G.mapping(G.sample_z(256, seed=50))
    moves = _edit_codes(pivot, bank, 16, 2.0, torch.Generator().manual_seed(123)) - pivot
    errors = {}
    for w in (0.0, 5.0):
        tuning, rec = tune(G, pivot, target, steps=40, rank=2, lr=1e-2, locality_weight=0.0,
                           consistency_weight=w, consistency_batch=4, seed=1)
        assert rec["loss_after"] < 0.8 * rec["loss_before"]  # it still tunes towards the target
        errors[w], scale = _response_error(G, Latent("w+", pivot, "tiny@000000000000", tuning=tuning), pivot, moves)
    assert errors[5.0] < 0.5 * errors[0.0], errors
    assert errors[5.0] < 0.5 * scale, (errors, scale)  # small against the size of the change itself


def test_edit_codes_lie_one_edit_from_the_pivot():
    """Moves are along differences of mapping samples, |s| in strength * [0.5, 1] latent stds along them."""
    from faceedit.inversion.pti import _edit_codes

    G = tiny_generator(seed=4)
    bank = G.mapping(G.sample_z(512, seed=7))
    pivot = G.mapping(G.sample_z(1, seed=8))
    codes = _edit_codes(pivot, bank, 64, 2.0, torch.Generator().manual_seed(0))
    d = (codes - pivot).flatten(1)
    u = d / d.norm(dim=1, keepdim=True)
    sigma = ((bank - bank.mean(0)).flatten(1) @ u.T).std(0)
    s = d.norm(dim=1) / sigma
    assert codes.shape == (64, *pivot.shape[1:])
    assert float(s.min()) >= 1.0 - 1e-4 and float(s.max()) <= 2.0 + 1e-4
    assert 10 < int((d[:, 0] > 0).sum()) < 54  # both signs
