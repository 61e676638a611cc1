"""The shipped StyleGAN v1 model ``faces64-sg1``, tested on its real weights.

The other StyleGAN v1 tests (``test_stylegan1.py``) use toy generators with random weights;
these load the fp16 files in ``checkpoints/weights/faces64-sg1`` through the registry and
check that they synthesize the faces they were shipped with (golden values computed from
the fp16 file on the CPU), that W and W+ inversion reconstruct one of the model's own
faces, and that the shipped smile direction moves the shipped attribute scorer's smile
logit, as ``bench/editing.py`` measures it.
"""
import copy

import pytest
import torch
from safetensors import safe_open

from faceedit.checkpoints.registry import REGISTRY, WEIGHTS_DIR, list_models, load_model
from faceedit.editing.direction import list_directions
from faceedit.inversion.latent import Latent
from faceedit.networks import Generator1

NAME = "faces64-sg1"
CORE = ("smile", "age", "male", "eyeglasses", "young")


@pytest.fixture(scope="module")
def sg1():
    return load_model(NAME, with_discriminator=True)


@pytest.fixture(scope="module")
def own_faces(sg1):
    """Two of the model's own faces (seed 3, constant noise) and the mean code's face, the
    point W and W+ inversion start from."""
    G = sg1.G
    with torch.no_grad():
        target = G(G.sample_z(2, seed=3), noise_mode="const")
        start = G.synthesis(G.mapping.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1), noise_mode="const")
    return target, start


def _psnr(a, b):
    return -10 * torch.log10(((a - b) ** 2).mean(dim=(1, 2, 3)) / 4)  # images in [-1, 1]: peak-to-peak 2


# -- the files and the registry ------------------------------------------------------------------------
def test_loads_through_the_registry_as_a_v1_generator(sg1):
    e = REGISTRY[NAME]
    assert e.source == "shipped" and e.default_for == () and e.spaces == ("w", "w+")
    assert dict((m.name, p) for m, p in list_models())[NAME] == WEIGHTS_DIR / NAME
    assert type(sg1.G) is Generator1 and sg1.arch == "stylegan1"
    assert sg1.config["generator"]["arch"] == "stylegan1" and sg1.config["recipe"]["name"] == "faces64"
    assert sg1.model_id == f"{NAME}@{e.sha256[:12]}" == "faces64-sg1@baa51f534719"
    assert (sg1.G.resolution, sg1.G.num_ws, sg1.G.w_dim) == (64, 10, 256)
    assert sg1.D is not None and sg1.D.config["resolution"] == 64
    assert int(sg1.prior["n"]) == 100_000 and float(sg1.prior["joint"]) == 0.0
    for fname in ("model.safetensors", "discriminator.safetensors"):  # shipped in fp16, as the other models
        with safe_open(str(WEIGHTS_DIR / NAME / fname), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, fname
    assert not (WEIGHTS_DIR / NAME / "adopt_report.json").exists()  # no training or adoption state shipped


def test_shipped_directions_belong_to_the_shipped_weights(sg1):
    dirs = [d for _, d in list_directions(sg1.model_id)]
    assert len(dirs) == 28 and {d.model_id for d in dirs} == {sg1.model_id} and {d.arch for d in dirs} == {"stylegan1"}
    fitted = {d.attribute: d for d in dirs if d.method == "interfacegan" and not d.conditions}
    assert sorted(fitted) == sorted(CORE)
    assert all(0.93 < d.accuracy < 0.98 and d.samples == 100_000 and d.meta["svm_C"] == 0.001 for d in fitted.values())
    assert sorted(d.key for d in dirs if d.conditions) == sorted(
        ["age|male", "male|age", "eyeglasses|age", "eyeglasses|age,male", "smile|male", "age|eyeglasses,male",
         "young|male"])
    assert sum(d.method == "ganspace" for d in dirs) == 8 and sum(d.method == "sefa" for d in dirs) == 8


# -- golden synthesis: what the fp16 file gives ---------------------------------------------------------
# Computed once from checkpoints/weights/faces64-sg1 (torch 2.14.1, CPU fp32). A wrong key
# mapping, a lost noise strength or constant-noise buffer, a bad fp16 cast, or a w_avg left
# at zero (the psi 0.7 row) moves these far beyond the tolerance. The means agree across psi:
# AdaIN sets each channel's mean from the style alone, so the image's channel means (a 1x1
# to-RGB of the last layer) come from layer 9's code, past the truncation cutoff of 8.
GOLDEN = {  # psi: (mean, std, image 0 at (32, 32), image 1 at (10, 50), D logits)
    1.0: (-0.062797, 0.577001, (0.865470, 0.637658, 0.493769), (0.059475, -0.500894, -0.758907), (0.971529, 0.674403)),
    0.7: (-0.062797, 0.576870, (0.967988, 0.767842, 0.570056), (-0.009989, -0.538170, -0.780360), (0.920368, 0.663603)),
}


def _golden_error(G, D, psi):
    """Largest deviation of ``G``'s seed-0 faces (and ``D``'s logits of them) from :data:`GOLDEN`."""
    z = G.sample_z(2, seed=0)
    with torch.no_grad():
        img = G(z, truncation_psi=psi, noise_mode="const")
        logits = D(img).flatten()
    mean, std, px0, px1, d = GOLDEN[psi]
    got = torch.tensor([img.double().mean(), img.double().std(), *img[0, :, 32, 32], *img[1, :, 10, 50], *logits])
    return float((got - torch.tensor([mean, std, *px0, *px1, *d], dtype=got.dtype)).abs().max())


@pytest.mark.parametrize("psi", sorted(GOLDEN))
def test_fixed_seed_synthesis_matches_the_golden_values(sg1, psi):
    z = sg1.G.sample_z(2, seed=0)
    torch.testing.assert_close(z[0, :3], torch.tensor([-1.125840, -1.152360, -0.250579]), atol=1e-5, rtol=0)
    assert _golden_error(sg1.G, sg1.D, psi) < 2e-4


def test_the_golden_values_see_a_broken_load(sg1):
    """What a loader could get wrong moves the golden values 10x past their tolerance or more
    (measured: w_avg at zero 0.12, noise strengths at zero 0.073, weights through bf16 0.015 for G and
    0.0024 for D)."""
    G, D = copy.deepcopy(sg1.G), copy.deepcopy(sg1.D)
    G.mapping.w_avg.zero_()
    assert _golden_error(G, sg1.D, 1.0) < 2e-4 < 2e-3 < _golden_error(G, sg1.D, 0.7)  # psi 1 never reads w_avg
    G = copy.deepcopy(sg1.G)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if "noise_strength" in name:
                p.zero_()
    assert _golden_error(G, sg1.D, 1.0) > 2e-3
    with torch.no_grad():
        for p in D.parameters():
            p.copy_(p.bfloat16().float())
    assert _golden_error(sg1.G, D, 1.0) > 2e-3


# -- inversion of the model's own faces --------------------------------------------------------------
@pytest.mark.parametrize("space, min_gain_db", [("w", 2.5), ("w+", 4.5)])
def test_inversion_reconstructs_its_own_face_better_than_the_start(sg1, own_faces, space, min_gain_db):
    """20 steps from the mean code, with the model's prior and its discriminator's features
    (both shipped), raise the PSNR of each face by at least the margin (measured: W +3.2 and
    +7.0 dB, W+ +5.7 and +8.4 dB)."""
    from faceedit.inversion import invert

    target, start = own_faces
    lat = invert(target, sg1, space=space, steps=20, device="cpu", seed=0, perceptual="disc", G=sg1.G, D=sg1.D)
    assert lat.arch == "stylegan1" and lat.space == space and lat.model_id == sg1.model_id
    assert lat.meta["perceptual"] == "disc" and lat.meta["prior"] == "gaussian"  # nothing downgraded
    with torch.no_grad():
        rec = sg1.G.synthesis(lat.codes, noise_mode="const")
    gain = _psnr(rec, target) - _psnr(start.expand_as(target), target)
    assert (gain > min_gain_db).all(), gain


# -- editing --------------------------------------------------------------------------------------
def test_pipeline_edit_moves_the_code_along_smile_and_the_image(sg1):
    from faceedit.defaults import DEFAULT_STRENGTH
    from faceedit.pipeline import Pipeline

    pipe = Pipeline(sg1, space="w", device="cpu")
    assert pipe.model_id == sg1.model_id
    with torch.no_grad():
        w = sg1.G.mapping(sg1.G.sample_z(2, seed=1))
    lat = Latent("w", w, pipe.model_id, arch="stylegan1")
    moved = pipe.edit(lat, "smile")
    (d,) = [d for _, d in list_directions(sg1.model_id) if d.key == "smile"]
    torch.testing.assert_close(moved.codes - lat.codes, (DEFAULT_STRENGTH * d.latent_std * d.full())[None].expand_as(w))
    a, b = pipe.synthesize(lat), pipe.synthesize(moved)
    assert a.shape == (2, 64, 64, 3) and (abs(a.astype(int) - b).mean(axis=(1, 2, 3)) > 5).all()


def test_smile_direction_raises_the_scorers_smile_logit(sg1):
    """Strength 2 (std units) on 16 samples: the shipped attribute network's smile logit goes up
    for at least 15 of them and by at least 2 on average (measured: all 16, +3.97 mean, +1.4 least);
    strength -2 lowers it on average."""
    from faceedit.editing import edit
    from faceedit.editing.fit_job import classifier_scorer

    score, _, _ = classifier_scorer(None, "cpu")
    G = sg1.G
    with torch.no_grad():
        w = G.mapping(G.sample_z(16, seed=0))
    lat = Latent("w", w, sg1.model_id, arch="stylegan1")
    (d,) = [d for _, d in list_directions(sg1.model_id) if d.key == "smile"]

    def smile(latent):
        with torch.no_grad():
            return score(G.synthesis(latent.codes, noise_mode="const"))["smile"]

    s0 = smile(lat)
    up, down = smile(edit(lat, {d: 2.0})) - s0, smile(edit(lat, {d: -2.0})) - s0
    assert float(up.mean()) > 2.0 and int((up > 0).sum()) >= 15, up
    assert float(down.mean()) < -2.0, down


def test_fresh_samples_read_about_one_under_its_prior(sg1):
    from faceedit.pipeline import Pipeline

    pipe = Pipeline(sg1, space="w+", device="cpu")
    with torch.no_grad():
        ws = sg1.G.mapping(sg1.G.sample_z(256, seed=123))
    dist = pipe.distance_from_prior(Latent("w+", ws, pipe.model_id, arch="stylegan1"))
    assert 0.7 < float(dist.mean()) < 1.3 and float(dist.max()) < 10, dist
