"""Optimisation inversion: spaces, losses, the projector, invert(), latent files and the CLI."""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.inversion import InversionOptions, Latent, Projector, invert
from faceedit.inversion.losses import (DiscFeatureLoss, LPIPSLoss, MissingWeightsError, noise_regularization,
                                       normalize_noise_)
from faceedit.inversion.prior import GaussianPrior, fit_prior
from faceedit.inversion.spaces import Space, check_space
from faceedit.networks import Discriminator, Generator


def _tiny(kind="mlp", seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_kind=kind,
                  mapping_layers=2, mapping_blocks=1, mapping_heads=2).eval()
    with torch.no_grad():  # a trained model tracks its mean code; give the random one the same
        s = G.mapping(G.sample_z(2000, seed=1))
        G.mapping.w_avg.copy_(s.mean(0) if kind == "transformer" else s.mean((0, 1)))
    return G


@pytest.fixture(scope="module")
def G():
    return _tiny("mlp")


@pytest.fixture(scope="module")
def Gt():
    return _tiny("transformer")


def _target(G, seed=3, n=2):
    with torch.no_grad():
        ws = G.mapping(G.sample_z(n, seed=seed))
        return ws, G.synthesis(ws)


def test_wpp_on_mlp_generator_raises_and_lists_models(G):
    with pytest.raises(ValueError, match="faces64-wpp"):
        check_space(G, "wpp")
    with pytest.raises(ValueError, match="transformer"):
        Projector(G, InversionOptions(space="wpp-z", perceptual="none"))
    with pytest.raises(ValueError, match="unknown inversion space"):
        check_space(G, "q")


def test_space_parameterisations(G, Gt):
    w = Space(G, "w")
    p = w.start().unsqueeze(0).repeat(2, 1, 1)
    ws = w.to_ws(p)
    assert ws.shape == (2, G.num_ws, G.w_dim) and torch.equal(ws[:, 0], ws[:, -1])
    torch.testing.assert_close(Space(G, "w+").start(), G.w_avg)
    z = Space(Gt, "wpp-z").start(seed=1)
    assert z.shape == Gt.z_shape
    torch.testing.assert_close(Space(Gt, "wpp-z").to_ws(z[None]), Gt.mapping(z[None]))


@pytest.mark.parametrize("space", ["w", "w+"])
def test_inversion_recovers_generated_image(G, space):
    ws_true, target = _target(G)
    start = ((G.synthesis(G.w_avg[None].expand(2, -1, -1)) - target).square().flatten(1).mean(1))
    r = Projector(G, InversionOptions(space=space, steps=120, seed=0, perceptual="none")).project(target)
    final = torch.tensor(r.losses["mse"])
    assert (final < start / 20).all(), (start, final)
    assert r.history[-1] < r.history[0] / 10
    if space == "w":  # W is small enough to recover the code itself
        assert (r.ws - ws_true).square().mean() < 0.05 * ws_true.var()


def test_wpp_and_wpp_z_reduce_loss(Gt):
    _, target = _target(Gt)
    for space in ("wpp", "wpp-z"):
        r = Projector(Gt, InversionOptions(space=space, steps=40, seed=0, perceptual="none")).project(target)
        assert r.history[-1] < r.history[0] / 3, space


def test_determinism_with_seed_and_batch_independence(G):
    _, target = _target(G, n=3)
    kw = dict(steps=12, perceptual="none", optimize_noise=True)
    a = Projector(G, InversionOptions(space="w+", seed=5, **kw)).project(target)
    b = Projector(G, InversionOptions(space="w+", seed=5, **kw)).project(target)
    c = Projector(G, InversionOptions(space="w+", seed=6, **kw)).project(target)
    assert torch.equal(a.ws, b.ws) and all(torch.equal(x, y) for x, y in zip(a.noise, b.noise))
    assert not torch.equal(a.ws, c.ws)
    # without random terms, a batch is exactly its images run one by one
    kw = dict(steps=10, noise_factor=0.0)
    batch = Projector(G, InversionOptions(space="w+", **kw, perceptual="none")).project(target)
    single = Projector(G, InversionOptions(space="w+", **kw, perceptual="none")).project(target[1:2])
    torch.testing.assert_close(batch.ws[1:2], single.ws, atol=1e-5, rtol=1e-5)


def test_prior_weight_pulls_toward_the_distribution(G):
    prior = GaussianPrior(fit_prior(G, 4000, check_n=0), G.num_ws, G.w_dim)
    _, target = _target(G, seed=11)
    target = (target + 0.5 * torch.randn_like(target)).clamp(-1, 1)  # off the model: codes wander
    opts = InversionOptions(space="w+", steps=60, perceptual="none")
    free = Projector(G, opts.replace(prior_weight=0.0), prior=prior).project(target)
    held = Projector(G, opts.replace(prior_weight=1.0), prior=prior).project(target)
    assert np.mean(held.losses["prior"]) < 0.7 * np.mean(free.losses["prior"])
    with pytest.raises(ValueError, match="needs a prior"):
        Projector(G, InversionOptions(space="w+", prior_weight=1.0, perceptual="none"))


def test_lr_schedule_ramps(G):
    p = Projector(G, InversionOptions(space="w", steps=100, perceptual="none"))
    assert p.lr_at(0.0) == 0.0
    assert p.lr_at(0.5) == pytest.approx(0.1)
    assert p.lr_at(0.875) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.5 * math.pi)))
    assert p.lr_at(0.999) < 1e-3


def test_early_stop_on_plateau(G):
    _, target = _target(G)
    # a learning rate too small to make progress: the loss plateaus at once
    opts = InversionOptions(space="w", steps=400, patience=5, min_delta=1e-3, noise_ramp=0.01, lr=1e-6,
                            perceptual="none")
    r = Projector(G, opts).project(target)
    assert r.steps <= 4 + 5 + 1
    opts = InversionOptions(space="w", steps=15, lr=1e-6, perceptual="none")
    assert Projector(G, opts).project(target).steps == 15  # off by default


def test_noise_regulariser_and_renormalisation():
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(2, 1, 32, 32, generator=g)]
    smooth = [torch.nn.functional.interpolate(torch.randn(2, 1, 4, 4, generator=g), size=32, mode="bilinear")]
    normalize_noise_(white)
    normalize_noise_(smooth)
    assert float(smooth[0].mean()) == pytest.approx(0, abs=1e-5) and float(smooth[0].std()) == pytest.approx(1,
                                                                                                             abs=0.02)
    assert (noise_regularization(smooth) > 50 * noise_regularization(white)).all()
    assert noise_regularization(white).shape == (2,)


def test_disc_feature_loss():
    D = Discriminator(16, channel_base=128, channel_max=16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = DiscFeatureLoss(D)
    assert torch.allclose(loss(x, loss.prepare(x)), torch.zeros(2), atol=1e-6)
    assert (loss(x, loss.prepare(y)) > 0).all()


@pytest.mark.slow
def test_lpips_loss_names_missing_file_and_runs_with_random_trunk(tmp_path, monkeypatch):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "hub" / "checkpoints") + ".*vgg16-397923af.pth"):
        LPIPSLoss("vgg")
    lp = LPIPSLoss("vgg", pnet_rand=True)
    big = torch.rand(1, 3, 512, 512) * 2 - 1
    assert lp._feats(big)[0].shape[-1] == 256  # area-downsampled to 256 first
    assert torch.allclose(lp(x, lp.prepare(x)), torch.zeros(2), atol=1e-6)
    r = Projector(_tiny(), InversionOptions(space="w", steps=3), perceptual_loss=lp).project(x)  # runs through the loop
    assert r.losses["perceptual"][0] >= 0


def test_invert_returns_latent_that_round_trips(G, tmp_path):
    _, target = _target(G)
    crops = [((t.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy() for t in target]
    prior = GaussianPrior(fit_prior(G, 3000, check_n=0), G.num_ws, G.w_dim)
    lat = invert(crops, G=G, space="w", steps=8, prior=prior, perceptual="none", optimize_noise=True, seed=3)
    assert isinstance(lat, Latent) and lat.codes.shape == (2, G.num_ws, G.w_dim)
    assert lat.meta["steps"] == 8 and lat.meta["seed"] == 3 and len(lat.meta["losses"]["mse"]) == 2
    lat.save(tmp_path / "a.latent.safetensors")
    back = Latent.load(tmp_path / "a.latent.safetensors")
    assert back.space == "w" and torch.equal(back.codes, lat.codes)
    assert all(torch.equal(a, b) for a, b in zip(back.noise, lat.noise))
    assert back.meta["losses"] == lat.meta["losses"]


def test_invert_wpp_z_stores_z_and_aligned_face_matrix(Gt, tmp_path):
    from faceedit.alignment.types import FACES64, AlignedFace

    _, target = _target(Gt, n=1)
    crop = ((target[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    m = np.array([[0.5, 0, -3], [0, 0.5, -4], [0, 0, 1.0]])
    face = AlignedFace(crop=crop, matrix=m, quad=np.zeros((4, 2)), landmarks=np.zeros((68, 2)), score=1.0,
                       source_size=(40, 40), recipe=FACES64.with_size(16))
    lat = invert(face, G=Gt, space="wpp-z", steps=5, prior="none", perceptual="none")
    assert lat.z.shape == (1, *Gt.z_shape)
    torch.testing.assert_close(lat.codes, Gt.mapping(lat.z))
    assert lat.meta["faces"][0]["matrix"] == m.tolist()
    lat.save(tmp_path / "z.latent.safetensors")
    assert torch.equal(Latent.load(tmp_path / "z.latent.safetensors").z, lat.z)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from faceedit.alignment.types import FACES64
    from faceedit.checkpoints import save_native

    d = tmp_path_factory.mktemp("models")
    G = _tiny("mlp")
    D = Discriminator(16, channel_base=128, channel_max=16)
    prior = fit_prior(G, 3000, check_n=0)
    return save_native(d / "tiny", G, name="tiny", D=D, recipe=FACES64.with_size(16).to_dict(), prior=prior), G


def test_cli_invert_aligned_folder(tiny_model, tmp_path, monkeypatch):
    from faceedit.cli import cli
    from faceedit.core.images import save_image, tensor_to_uint8

    path, G = tiny_model
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    _, target = _target(G, n=2)
    src = tmp_path / "in"
    for i, im in enumerate(tensor_to_uint8(target)):
        save_image(src / f"face{i}.png", np.kron(im, np.ones((2, 2, 1), np.uint8)))  # 32 px: resized to 16
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["--device", "cpu", "invert", str(src), "--aligned", "--model", str(path),
                                 "--space", "w+", "--steps", "6", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for i in range(2):
        for suffix in (".latent.safetensors", ".png", "_side.png", ".json"):
            assert (out / f"face{i}_0{suffix}").is_file()
    rec = json.loads((out / "face1_0.json").read_text())
    assert rec["space"] == "w+" and rec["steps"] == 6 and rec["perceptual"] == "disc"
    assert rec["prior"] == "gaussian" and 0 < rec["metrics"]["psnr"] and "mse" in rec["losses"]
    lat = Latent.load(out / "face1_0.latent.safetensors")
    assert lat.model_id == rec["model_id"] and lat.meta["source"].endswith("face1.png")
    last = json.loads((tmp_path / "home" / "last_inversion.json").read_text())
    assert [f["latent"] for f in last["faces"]] == [str((out / f"face{i}_0.latent.safetensors").resolve())
                                                    for i in range(2)]
    # W++ on this MLP model: a usage error naming the W++ models, exit code 1
    r = CliRunner().invoke(cli, ["--device", "cpu", "invert", str(src), "--aligned", "--model", str(path),
                                 "--space", "wpp", "--out", str(out)])
    assert r.exit_code == 1 and "faces64-wpp" in r.output


@pytest.mark.slow
def test_cli_invert_photo_with_alignment(tiny_model, tmp_path, monkeypatch, shared_dir):
    import os

    from faceedit.cli import cli

    path, _ = tiny_model
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    photo = os.path.join(shared_dir, "datasets", "photos", "face_recognition__obama.jpg")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["--device", "cpu", "invert", photo, "--model", str(path), "--steps", "4",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "face_recognition__obama_0.json").read_text())
    assert len(rec["alignment"]["matrix"]) == 3 and rec["alignment"]["recipe"]["size"] == 16
    lat = Latent.load(out / "face_recognition__obama_0.latent.safetensors")
    assert lat.meta["alignment"]["matrix"] == rec["alignment"]["matrix"]
    none = os.path.join(shared_dir, "datasets", "photos", "face_alignment__grass.jpg")
    r = CliRunner().invoke(cli, ["--device", "cpu", "invert", none, "--model", str(path), "--out", str(out)])
    assert r.exit_code == 1 and "FaceNotFoundError" in r.output


def test_bench_inversion_rows_on_a_tiny_model(tiny_model, tmp_path, monkeypatch):
    from faceedit.bench import inversion as bench_inversion
    from faceedit.core.images import encode_image, tensor_to_uint8
    from faceedit.core.pack import write_pack

    path, G = tiny_model
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    _, target = _target(G, n=4)
    jpegs = [encode_image(im, "JPEG") for im in tensor_to_uint8(target)]
    labels = {"source": np.array([1, 1, 1, 0], np.int8), "race": np.array([0, 1, 0, -1], np.int8),
              "gender": np.array([0, 1, 1, -1], np.int8), "age": np.array([25, 70, 5, np.nan], np.float32)}
    pack = write_pack(tmp_path / "test.npz", jpegs, labels, [f"f{i}.jpg" for i in range(4)], {})
    res = bench_inversion.run([str(path)], pack=pack, n=4, steps=3, identity=False, out=tmp_path / "b",
                              perceptual="disc", compression=False)
    rows = res["rows"]
    assert [(r["space"], r["prior"]) for r in rows] == [("w", "none"), ("w", "gaussian@0.01"), ("w+", "none"),
                                                        ("w+", "gaussian@0.01")]
    for r in rows:
        assert r["n"] == 4 and r["steps"] == 3 and 0 < r["psnr"] < 100 and -1 <= r["ssim"] <= 1
        assert all(np.isfinite(r[k]) for k in ("realism_D", "real_D", "interp_D", "perturb_D", "prior_dist"))
    assert (tmp_path / "b" / "inversion.md").read_text().count("\n") >= 6
    comp = bench_inversion.compression_table(str(path), taus=(2.0,), n=16, device=torch.device("cpu"))
    assert comp[0]["tau"] == 2.0 and "psi" in comp[0] and "diversity" in bench_inversion.compression_md(comp)
    assert bench_inversion._groups(np.array([0.9, 0.5, 0.7, 0.1]), {k: v.astype(float) for k, v in labels.items()},
                                   np.ones(4, bool)) == {"race=white": (pytest.approx(0.8), 2),
                                                         "race=black": (0.5, 1), "gender=male": (0.9, 1),
                                                         "gender=female": (pytest.approx(0.6), 2),
                                                         "age=0-19": (0.7, 1), "age=20-39": (0.9, 1),
                                                         "age=60-": (0.5, 1)}


def test_cli_bench_inversion_and_editing_are_click_commands(tiny_model, tmp_path, monkeypatch):
    """`faceedit bench inversion` parses its own options (no pass-through): a run writes its rows, bad
    input is a usage error, and neither command's help points at a `python -m` module."""
    import json

    from click.testing import CliRunner

    from faceedit.cli import cli
    from faceedit.core.images import encode_image, tensor_to_uint8
    from faceedit.core.pack import write_pack

    path, G = tiny_model
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    _, target = _target(G, n=2)
    pack = write_pack(tmp_path / "test.npz", [encode_image(im, "PNG") for im in tensor_to_uint8(target)], {},
                      ["a.png", "b.png"], {})
    out = tmp_path / "b"
    r = CliRunner().invoke(cli, ["--device", "cpu", "bench", "inversion", "--model", str(path), "--pack", str(pack),
                                 "--n", "2", "--steps", "2", "--perceptual", "none", "--prior-weight", "0.5",
                                 "--no-identity", "--no-compression", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "inversion.json").read_text())["rows"]
    assert [(x["space"], x["prior"], x["steps"], x["n"]) for x in rows] == [
        ("w", "none", 2, 2), ("w", "gaussian@0.5", 2, 2), ("w+", "none", 2, 2), ("w+", "gaussian@0.5", 2, 2)]
    r = CliRunner().invoke(cli, ["bench", "inversion", "--prior-weight", "a,b", "--out", str(out)])
    assert r.exit_code == 2 and "--prior-weight" in r.output
    r = CliRunner().invoke(cli, ["bench", "inversion", "--align-photos", str(tmp_path / "p.npz")])
    assert r.exit_code == 2 and "--photos" in r.output
    for kind in ("inversion", "editing", "methods"):
        r = CliRunner().invoke(cli, ["bench", kind, "--help"], prog_name="faceedit")
        assert r.exit_code == 0 and f"Usage: faceedit bench {kind} [OPTIONS]" in r.output
        assert "python -m" not in r.output


def test_bench_inversion_identity_pass_and_photo_pack(tiny_model, tmp_path, monkeypatch, fake_identity):
    """GPU run saves reconstructions; a later CPU pass fills identity (a stand-in encoder here)."""
    from faceedit.bench import inversion as bench_inversion
    from faceedit.core.images import encode_image, tensor_to_uint8
    from faceedit.core.pack import write_pack

    path, G = tiny_model
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    _, target = _target(G, n=3)
    ims = tensor_to_uint8(target)
    labels = {"source": np.array([1, 1, 0], np.int8), "race": np.array([2, 2, -1], np.int8),
              "gender": np.array([0, 0, -1], np.int8), "age": np.array([30, 33, np.nan], np.float32)}
    pack = write_pack(tmp_path / "t.npz", [encode_image(i, "PNG") for i in ims], labels, ["a", "b", "c"], {})
    photos = write_pack(tmp_path / "p.npz", [encode_image(ims[0], "PNG")], {}, ["p.jpg"], {})
    out = tmp_path / "b"
    bench_inversion.run([str(path)], pack=pack, photos=photos, n=3, steps=2, identity=False, out=out,
                        perceptual="none", compression=False)

    monkeypatch.setattr(bench_inversion, "_identity", lambda: fake_identity())
    res = bench_inversion.add_identity(out)
    assert {r["set"] for r in res["rows"]} == {"test", "photos"}
    for r in res["rows"]:
        assert 0 < r["id_sim"] <= 1
        if r["set"] == "test":
            assert set(r["id_groups"]) == {"race=asian", "gender=male", "age=20-39"}
    assert "race=asian" in (out / "inversion.md").read_text()


def test_w_plus_on_a_wpp_model_uses_the_layerwise_prior(Gt):
    from faceedit.inversion.prior import LayerwisePrior

    prior = GaussianPrior(fit_prior(Gt, 3000, check_n=0), Gt.num_ws, Gt.w_dim)
    opts = InversionOptions(space="w+", prior_weight=0.1, perceptual="none")
    assert isinstance(Projector(Gt, opts, prior=prior).prior, LayerwisePrior)
    assert Projector(Gt, InversionOptions(space="wpp", prior_weight=0.1, perceptual="none"), prior=prior).prior is prior
    _, target = _target(Gt, n=1)
    lat = invert(target, G=Gt, space="w+", steps=3, prior=prior, perceptual="none")
    assert lat.meta["prior_kind"].startswith("layer-wise")


def test_inversion_gradients_through_a_conv_clamp_model():
    """NVIDIA ADA models clamp conv outputs; the projector's default (shared-conv) path must backprop."""
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_layers=2,
                  conv_clamp=256).eval()
    _, target = _target(G, n=1)
    r = Projector(G, InversionOptions(space="w+", steps=4, seed=0, perceptual="none")).project(target)
    assert np.isfinite(r.history).all()


def test_bench_faces_refuse_the_train_split(tmp_path):
    """Every bench takes its faces through ``load_faces``: a train pack is refused, a test pack read."""
    from faceedit.bench.inversion import load_faces
    from faceedit.core.images import encode_image
    from faceedit.core.pack import write_pack

    im = [encode_image(np.full((16, 16, 3), 90 + i, np.uint8), "PNG") for i in range(3)]
    train = write_pack(tmp_path / "train.npz", im, {}, ["a", "b", "c"], {"split": "train"})
    with pytest.raises(ValueError, match="train split"):
        load_faces(train, 3)
    test = write_pack(tmp_path / "test.npz", im, {}, ["a", "b", "c"], {"split": "test"})
    assert load_faces(test, 2)["images"].shape == (2, 16, 16, 3)


def _steps_seen(run):
    seen = []
    run(lambda step, total, losses: seen.append((step, total, float(losses["total"].float().mean()))))
    return seen


@pytest.mark.parametrize("method", ["optim", "hybrid", "pti"])
def test_step_callback_once_per_step_in_order(G, method):
    """``callback=`` sees every step of a run once, numbered 0.. over batches (and PTI's tuning)."""
    from faceedit.inversion.methods import invert_with
    from faceedit.networks.encoder import Encoder

    _, target = _target(G, n=3)
    kw = dict(G=G, prior="none", perceptual="none", batch_size=2)  # two batches: 2 + 1 faces
    if method == "hybrid":
        torch.manual_seed(0)
        kw["encoder"] = Encoder(16, G.num_ws, 16, "w+", channel_base=256, channel_max=32, channel_min=8,
                                fpn_channels=16, head_channels=16)
    if method == "pti":
        kw.update(pivot_method="optim", pivot_steps=4, rank=1)
    seen = _steps_seen(lambda cb: invert_with(method, target, None, "w+", 5, callback=cb, **kw))
    # optim/hybrid: 5 steps per batch of 2 faces; pti: its optim pivot (4 x 2 batches), then 5 per face
    total = 3 * 5 + 2 * 4 if method == "pti" else 2 * 5
    assert [s for s, _, _ in seen] == list(range(total))
    assert {n for _, n, _ in seen} == {total}
    assert all(math.isfinite(v) for _, _, v in seen)
