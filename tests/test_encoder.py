"""Encoder network, its training job, encoder/hybrid inversion (tiny CPU models)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceedit.networks import Discriminator, Generator
from faceedit.networks.encoder import Encoder, LatentDiscriminator, encoder_groups

TINY_E = dict(channel_base=256, channel_max=32, channel_min=8, fpn_channels=16, head_channels=16)


def tiny_generator(res=16, kind="mlp", seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=res, mapping_kind=kind, channel_base=128, channel_max=16,
                  mapping_layers=2, mapping_blocks=1, mapping_heads=2).eval().requires_grad_(False)
    with torch.no_grad():  # a trained mapping tracks its mean; do the same
        ws = G.mapping(G.sample_z(2000, seed=1)).mean(0)
        G.mapping.w_avg.copy_(ws if kind == "transformer" else ws[0])
    return G


# -- the network ---------------------------------------------------------------------
@pytest.mark.parametrize("res", [16, 32])
@pytest.mark.parametrize("kind,space", [("mlp", "w"), ("mlp", "w+"), ("transformer", "wpp")])
def test_output_shapes_per_space(res, kind, space):
    G = tiny_generator(res, kind)
    E = Encoder.from_generator(G, space, **TINY_E)
    x = torch.rand(3, 3, res, res) * 2 - 1
    codes, deltas = E(x, return_deltas=True)
    assert codes.shape == (3, G.num_ws, G.w_dim)
    assert deltas.shape == (3, 0 if space == "w" else G.num_ws - 1, G.w_dim)
    if space == "w":  # one code, broadcast
        assert torch.equal(codes, codes[:, :1].expand_as(codes))
    else:  # codes differ per layer and are w_avg + base + delta
        assert not torch.allclose(codes[:, 0], codes[:, -1])
        base = codes[:, :1] - E.w_avg[:1]
        torch.testing.assert_close(codes[:, 1:] - E.w_avg[1:] - base, deltas, rtol=1e-5, atol=1e-5)
    # offsets start small: the untrained encoder's codes lie near the generator's mean
    assert (codes - G.w_avg).norm(dim=-1).mean() < 0.5 * G.w_avg.norm(dim=-1).mean() + 1.0
    G.synthesis(codes)  # the codes are what the synthesis network takes


def test_groups_follow_psp_split():
    assert encoder_groups(18) == {"coarse": [0, 1, 2], "medium": [3, 4, 5, 6], "fine": list(range(7, 18))}
    assert encoder_groups(10)["fine"] == [7, 8, 9]
    assert "fine" not in encoder_groups(6)


def test_any_power_of_two_resolution_and_errors():
    E = Encoder(128, 12, 32, "w+", **TINY_E)
    assert E(torch.zeros(1, 3, 128, 128)).shape == (1, 12, 32)
    big = Encoder(1024, 18, 512, "w+")  # the benchmark architecture builds (random weights)
    assert len(big.blocks) == 7 and big.levels == [8, 16, 32]
    with pytest.raises(ValueError, match="power of two"):
        Encoder(48, 10, 16)
    with pytest.raises(ValueError, match="space"):
        Encoder(64, 10, 16, space="z")
    with pytest.raises(ValueError, match="resize or align"):
        E(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="faces64-wpp"):
        Encoder.from_generator(tiny_generator(16, "mlp"), "wpp")


def test_latent_discriminator_shapes():
    from faceedit.training.encoder import make_latent_discriminator

    G = tiny_generator(16, "transformer")
    for space, rows in (("w+", 3 * G.num_ws), ("wpp", 3)):
        E = Encoder.from_generator(G, space, **TINY_E)
        LD = make_latent_discriminator(E)
        assert isinstance(LD, LatentDiscriminator)
        assert LD(torch.randn(3, G.num_ws, G.w_dim)).shape == (rows, 1)


# -- training ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A tiny generator and an encoder trained on its synthetic pairs (before/after figures)."""
    from faceedit.training.encoder import evaluate, train_encoder

    G = tiny_generator(16)
    torch.manual_seed(1)
    E = Encoder.from_generator(G, "w+", **TINY_E)
    before = evaluate(G, E, n_syn=64)
    res = train_encoder(G, E, torch.zeros(0, 3, 16, 16, dtype=torch.uint8), steps=100, batch=16, lr=1e-2,
                        weights=dict(perc=0.0, adv=0.05), log_every=50)
    after = evaluate(G, E, n_syn=64)
    return G, E, before, after, res


@pytest.mark.slow
def test_training_reduces_latent_loss_on_synthetic_pairs(trained):
    G, E, before, after, res = trained
    assert res["steps"] == 100 and len(res["history"]) == 2
    assert {"pix", "lat", "delta", "adv", "ld"} <= set(res["history"][-1])
    # held-out synthetic pairs (a fixed seed the training never drew)
    assert after["syn_latent_mse"] < 0.9 * before["syn_latent_mse"]
    assert after["syn_mse"] < 0.7 * before["syn_mse"]


def _tiny_model(tmp_path, G):
    from faceedit.checkpoints import load_model, save_native

    torch.manual_seed(3)
    D = Discriminator(G.resolution, channel_base=128, channel_max=16)
    save_native(tmp_path / "tiny", G, name="tiny", D=D)
    return load_model(tmp_path / "tiny", with_discriminator=True)


@pytest.mark.slow
def test_save_load_encode_and_hybrid(trained, tmp_path):
    from faceedit.inversion.encoder import EncoderError, encode, find_encoder, load_encoder
    from faceedit.inversion.methods import default_method, invert_with
    from faceedit.training.encoder import save_encoder

    G, E, *_ = trained
    m = _tiny_model(tmp_path, G)
    assert default_method(m, "w+") == "optim"  # no encoder shipped yet
    wpath, jpath = save_encoder(tmp_path / "tiny", E, model_id=m.model_id, model_sha256=m.sha256,
                                record={"steps": 100})
    assert wpath.name == "encoder_wplus.safetensors" and json.loads(jpath.read_text())["space"] == "w+"
    assert default_method(m, "w+") == "hybrid" and default_method(m, "w") == "hybrid"
    assert find_encoder(m, "wpp") is None
    # round trip: fp16 weights, so equal to the fp16-rounded encoder's output
    E2 = load_encoder(wpath, G=G, model_sha256=m.sha256)
    ref = Encoder(**E.config)
    ref.load_state_dict({k: (v if k == "w_avg" else v.half().float()) for k, v in E.state_dict().items()})
    x = G.synthesis(G.mapping(G.sample_z(4, seed=77)))
    torch.testing.assert_close(E2(x), ref.eval()(x))
    with pytest.raises(EncoderError, match="trained for generator"):
        load_encoder(wpath, model_sha256="0" * 64)

    # targets the encoder never saw; compare the methods at equal footing (MSE only)
    target = G.synthesis(G.mapping(G.sample_z(6, seed=4321)))
    kw = dict(G=m.G, D=m.D, prior="none", perceptual="none", seed=0)
    enc = invert_with("encoder", target, m, "w+", **kw)
    assert enc.meta["method"] == "encoder" and enc.model_id == m.model_id
    lat_w = encode(target, m, "w", G=m.G)  # a w+ encoder serves w by averaging its layers
    assert torch.equal(lat_w.codes, lat_w.codes[:, :1].expand_as(lat_w.codes))
    k = 10
    # this 16 px toy prefers a peak lr of 0.1 (the shipped 64 px models 0.3: see inversion/hybrid.py)
    hyb = invert_with("hybrid", target, m, "w+", k, lr=0.1, **kw)
    assert hyb.meta["steps"] == k and hyb.meta["lr"] == 0.1
    hyb_mse = np.mean(hyb.meta["losses"]["mse"])
    assert hyb_mse < 0.7 * np.mean(enc.meta["losses"]["mse"])  # hybrid beats the encoder alone
    # the optimiser from the mean code needs more steps for the same loss
    opt_k = invert_with("optim", target, m, "w+", k, **kw)
    assert np.mean(opt_k.meta["losses"]["mse"]) > hyb_mse
    opt_2k = invert_with("optim", target, m, "w+", 2 * k, **kw)
    assert np.mean(opt_2k.meta["losses"]["mse"]) > hyb_mse


@pytest.mark.slow
def test_cli_train_encoder_then_invert_methods(tmp_path, monkeypatch):
    """`faceedit train-encoder` writes shippable files; `faceedit invert` then defaults to hybrid and runs pti."""
    import shutil

    import cv2
    from click.testing import CliRunner

    from faceedit.cli import cli
    from faceedit.core.images import save_image, tensor_to_uint8
    from faceedit.core.pack import write_pack
    from faceedit.inversion.latent import Latent

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    G = tiny_generator(16)
    _tiny_model(tmp_path, G)
    faces = tensor_to_uint8(G.synthesis(G.mapping(G.sample_z(12, seed=8))))
    jpegs = [cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes() for f in faces]
    write_pack(tmp_path / "pack.npz", jpegs, {}, [f"{i}.jpg" for i in range(12)], {"split": "train"})
    run = CliRunner().invoke(cli, ["--device", "cpu", "train-encoder", "--model", str(tmp_path / "tiny"),
                                   "--data", str(tmp_path / "pack.npz"), "--steps", "3", "--batch", "4",
                                   "--channels", "8", "--val", "4", "--out", str(tmp_path / "enc")])
    assert run.exit_code == 0, run.output
    assert "val real MSE" in run.output and "latency" in run.output
    rec = json.loads((tmp_path / "enc" / "encoder_wplus.json").read_text())
    assert rec["train"]["steps"] == 3 and rec["train"]["train_images"] == 8 and rec["space"] == "w+"
    for f in ("encoder_wplus.safetensors", "encoder_wplus.json"):
        shutil.copy(tmp_path / "enc" / f, tmp_path / "tiny" / f)
    # a second run resumes from the training state left in --out
    run = CliRunner().invoke(cli, ["--device", "cpu", "train-encoder", "--model", str(tmp_path / "tiny"),
                                   "--data", str(tmp_path / "pack.npz"), "--steps", "2", "--batch", "4",
                                   "--channels", "8", "--val", "4", "--out", str(tmp_path / "enc")])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "enc" / "encoder_wplus.json").read_text())["train"]["steps"] == 5

    save_image(tmp_path / "crops" / "a.png", faces[-1])
    base = ["--device", "cpu", "invert", str(tmp_path / "crops"), "--aligned", "--model", str(tmp_path / "tiny"),
            "--prior", "none", "--perceptual", "none"]
    run = CliRunner().invoke(cli, base + ["--steps", "2", "--out", str(tmp_path / "inv")])
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "inv" / "a_0.json").read_text())["method"] == "hybrid"
    run = CliRunner().invoke(cli, base + ["--method", "pti", "--steps", "2", "--out", str(tmp_path / "pti")])
    assert run.exit_code == 0, run.output
    lat = Latent.load(tmp_path / "pti" / "a_0.latent.safetensors")
    assert lat.tuning and lat.meta["method"] == "pti" and lat.meta["pivot_method"] == "hybrid"
    run = CliRunner().invoke(cli, base + ["--space", "wpp", "--method", "encoder", "--out", str(tmp_path / "x")])
    assert run.exit_code != 0 and "W++" in run.output


def test_bench_methods_table_gpu_pass_then_cpu_pass(trained, tmp_path, monkeypatch, fake_identity):
    """`faceedit bench inversion --methods ...` (= `faceedit bench methods`): one row per method with its
    time and bytes, the prior-comparison rows, then the CPU pass fills identity (a stand-in encoder) and
    CPU seconds."""
    from faceedit.core.images import encode_image, tensor_to_uint8
    from faceedit.core.pack import write_pack
    from faceedit.metrics import identity as identity_mod
    from faceedit.training.encoder import save_encoder

    G, E, *_ = trained
    m = _tiny_model(tmp_path, G)
    save_encoder(tmp_path / "tiny", E, model_id=m.model_id, model_sha256=m.sha256, record={"steps": 100})
    ims = tensor_to_uint8(G.synthesis(G.mapping(G.sample_z(3, seed=9))))
    pack = write_pack(tmp_path / "t.npz", [encode_image(i, "PNG") for i in ims], {}, ["a", "b", "c"], {})
    out = tmp_path / "m"
    args = ["--methods", "encoder,optim,hybrid", "--runs", f"{tmp_path / 'tiny'}:w+", "--pack", str(pack),
            "--n", "3", "--optim-steps", "4", "--hybrid-steps", "2", "--perceptual", "none", "--device", "cpu",
            "--compare-prior", "--save-recon", "--out", str(out)]
    from click.testing import CliRunner

    from faceedit.cli import cli

    r = CliRunner().invoke(cli, ["bench", "inversion", *args])  # --methods: the methods table
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "methods.json").read_text())["rows"]
    # no prior ships with this tiny model: the comparison rows run without one too
    assert [r["method"] for r in rows][:3] == ["encoder", "optim", "hybrid"]
    by = {r["method"]: r for r in rows[:3]}
    assert by["optim"]["steps"] == 4 and by["hybrid"]["steps"] == 2
    assert all(r["s_per_img"] > 0 and r["bytes_per_img"] > 0 and r["n"] == 3 for r in rows)
    assert by["hybrid"]["psnr"] > by["encoder"]["psnr"]

    monkeypatch.setattr(identity_mod, "IdentityEncoder", fake_identity)
    r = CliRunner().invoke(cli, ["bench", "methods", "--add-identity", "--cpu-n", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "methods.json").read_text())["rows"]
    for r in rows:
        assert 0 < r["id_sim"] <= 1 and r["s_per_img_cpu"] > 0 and r["n_cpu"] == 2
    md = (out / "methods.md").read_text()
    assert "s_per_img_cpu" in md and "hybrid (2 steps) identity" in md and "(CPU:" in md
    assert "paired difference" in md and len(rows[0]["id_per_face"]) == 3
    r = CliRunner().invoke(cli, ["bench", "methods", "--methods", "encoder,magic", "--out", str(out)])
    assert r.exit_code == 2 and "magic" in r.output and "encoder, optim" in r.output


def test_bench_methods_verdicts():
    """The target sentence: hybrid must reach optim's identity in under 20% of its time (defaults and like-for-like)."""
    from faceedit.bench.methods import targets

    def row(method, id_sim, s, pw=None, steps=10):
        r = {"model": "m@1", "method": method, "id_sim": id_sim, "s_per_img": s, "steps": steps,
             "prior_weight": 0.01 if pw is None else pw, "settings": {} if pw is None else {"prior_weight": pw}}
        return r

    lines = targets([row("optim", 0.99, 1.0, steps=500), row("hybrid", 0.991, 0.19, steps=90)])
    assert len(lines) == 1 and lines[0].endswith("target met") and "19.0%" in lines[0]
    assert targets([row("optim", 0.99, 1.0), row("hybrid", 0.989, 0.1)])[0].endswith("NOT met")
    assert targets([row("optim", 0.99, 1.0), row("hybrid", 0.995, 0.25)])[0].endswith("NOT met")
    both = targets([row("optim", 0.99, 1.0), row("hybrid", 0.995, 0.1),
                    row("optim", 0.999, 1.0, pw=0.0), row("hybrid", 0.99, 0.1, pw=0.0)])
    assert len(both) == 2 and both[0].endswith("target met") and "prior weight 0" in both[1]
    assert both[1].endswith("NOT met")
