"""`faceedit adopt`: reframing, memory-bounded batches, refused directions, and adopt -> edit end to end."""
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.alignment.types import FACES64, FFHQ, AlignmentRecipe
from faceedit.checkpoints.native import save_native
from faceedit.networks import Generator
from faceedit.training import adopt as adopt_mod
from faceedit.training.adopt import AdoptError, adopt, chance_margin, choose_batch, choose_recipe, reframe

PHOTO = "datasets/photos/face_recognition__obama.jpg"


def _tiny(path, res=16, seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, resolution=res, mapping_layers=2, channel_base=128, channel_max=16)
    return save_native(path, G, name="src")  # no recipe recorded, as a converted checkpoint


def brightness_and_noise(img):
    """A scorer with one learnable attribute (mean brightness, a smooth function of w) and one
    that is pure noise (no direction can predict it)."""
    return {"smile": img.mean(dim=(1, 2, 3)), "age": torch.randn(img.shape[0], generator=_NOISE)}


_NOISE = torch.Generator().manual_seed(1)


@pytest.fixture(scope="module")
def adopted(tmp_path_factory):
    root = tmp_path_factory.mktemp("adopt")
    src = _tiny(root / "src")
    old = os.environ.get("FACEEDIT_HOME")
    os.environ["FACEEDIT_HOME"] = str(root / "home")
    try:
        rep = adopt(src, "mine", n=1500, prior_n=2000, unsupervised=2, device="cpu", scorer=brightness_and_noise,
                    attrs=["smile", "age"])
    finally:
        if old is None:
            os.environ.pop("FACEEDIT_HOME")
        else:
            os.environ["FACEEDIT_HOME"] = old
    return {"root": root, "home": root / "home", "src": src, "report": rep}


def test_reframe_is_a_centred_crop_and_round_trips():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 100, 100)
    src = AlignmentRecipe(name="a", size=100, scale=1.0)
    # 0.6x the quad = the centred 60 px of the 100 px crop, exactly (pixel grids coincide)
    out = reframe(img, src, AlignmentRecipe(name="b", size=60, scale=0.6))
    assert torch.allclose(out, img[..., 20:80, 20:80], atol=1e-5)
    # out to a wider frame and back: the original pixels return (interior, bilinear at equal density)
    wide = reframe(img, src, AlignmentRecipe(name="c", size=200, scale=2.0))
    back = reframe(wide, AlignmentRecipe(name="c", size=200, scale=2.0), src)
    assert torch.allclose(back, img, atol=1e-4)
    with pytest.raises(ValueError, match="source recipe's size"):
        reframe(img, AlignmentRecipe(size=64), FACES64)


def test_recipe_choice_never_defaults_to_faces64():
    r, why = choose_recipe(None, 256, None)
    assert (r.name, r.scale, r.size, why) == ("ffhq", 1.0, 256, "default (FFHQ)")
    r, why = choose_recipe("faces64", 256, FFHQ.to_dict())
    assert (r.name, r.scale, r.size, why) == ("faces64", 0.6, 256, "--recipe")
    r, why = choose_recipe(None, 64, FACES64.to_dict())
    assert (r.name, why) == ("faces64", "checkpoint config")
    with pytest.raises(AdoptError, match="unknown recipe"):
        choose_recipe("celeba", 64)


def test_batch_follows_model_size_and_free_memory(monkeypatch):
    torch.manual_seed(0)
    small = Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=128, channel_max=16)
    big = Generator(z_dim=16, w_dim=16, resolution=64, mapping_layers=2, channel_base=512, channel_max=32)
    ps, pb = adopt_mod.per_sample_bytes(small), adopt_mod.per_sample_bytes(big)
    assert pb > 4 * ps > 0
    monkeypatch.setattr(adopt_mod, "available_memory", lambda dev: int(pb * 10 / 0.4))
    assert choose_batch(big, "cpu")[0] == 10
    assert choose_batch(big, "cpu", training=True)[0] == 2
    assert choose_batch(small, "cpu")[0] > 10
    monkeypatch.setattr(adopt_mod, "available_memory", lambda dev: 1)
    assert choose_batch(big, "cpu")[0] == 1
    monkeypatch.undo()
    assert adopt_mod.available_memory("cpu") > 1 << 20


def test_chance_margin():
    assert chance_margin(10_000) == pytest.approx(0.1)
    assert chance_margin(30) == pytest.approx(1.5 / np.sqrt(30))


def test_adopt_keeps_learnable_refuses_chance(adopted):
    rep, home = adopted["report"], adopted["home"]
    d = rep["directions"]
    assert "smile" in d["fitted"] and d["fitted"]["smile"]["accuracy"] >= d["fitted"]["smile"]["needed"]
    assert "age" in d["rejected"] and d["rejected"]["age"]["reason"] == "not better than chance"
    folder = home / "models" / "mine"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["recipe"]["name"] == "ffhq" and cfg["recipe"]["scale"] == 1.0 and cfg["recipe"]["size"] == 16
    assert cfg["provenance"]["adopted"]["recipe_source"] == "default (FFHQ)"
    for f in ("model.safetensors", "prior.safetensors", "MODEL_CARD.md", "samples.png", "adopt_report.json"):
        assert (folder / f).is_file(), f
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| smile |" in card and "refused: not better than chance" in card
    names = sorted(p.name for p in (home / "directions" / "mine").glob("*.safetensors"))
    assert "mine_smile_w.safetensors" in names and not any("_age_" in n for n in names)
    assert sum("pc" in n for n in names) == 2 and sum("sefa" in n for n in names) == 2


def test_adopted_prior_matches_a_direct_fit(adopted, monkeypatch):
    from faceedit.checkpoints.registry import load_model
    from faceedit.inversion.prior import fit_prior

    monkeypatch.setenv("FACEEDIT_HOME", str(adopted["home"]))
    m = load_model("mine")
    assert m.model_id == adopted["report"]["model_id"]
    ref = fit_prior(load_model(adopted["src"]).G, 2000, check_n=0)
    assert torch.allclose(m.prior["mean"], ref["mean"], atol=1e-5)
    assert torch.allclose(m.prior["cov"], ref["cov"], atol=1e-5)


def two_attributes(img):
    """Two learnable stand-in attributes: brightness and redness."""
    return {"smile": img.mean(dim=(1, 2, 3)), "male": img[:, 0].mean(dim=(1, 2)) - img[:, 1:].mean(dim=(1, 2, 3))}


def test_adopt_fits_what_the_shipped_job_fits(tmp_path, monkeypatch):
    """One fitting path: adopt and ``fit_model`` (which made the shipped directions) give the same
    directions, conditional ones included, on the same samples and seed."""
    from faceedit.editing.direction import list_directions
    from faceedit.editing.fit_job import fit_model

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    src = _tiny(tmp_path / "src")
    frame = FACES64.with_size(16)  # the model's own framing is the scorer's: reframing is the identity
    img = torch.rand(2, 3, 16, 16)
    assert torch.equal(reframe(img, frame, frame), img)
    kw = dict(n=900, fraction=0.1, batch=64, seed=3, attrs=["smile", "male"])
    rep = adopt(src, "twin", recipe="faces64", scorer_recipe=frame, prior_n=300, unsupervised=0, device="cpu",
                scorer=two_attributes, **kw)
    fit_model(src, two_attributes, {}, "two_attributes", out=tmp_path / "job", device="cpu", min_auc=0.9,
              unsupervised=0, **kw)
    mine = {d.key: d for _, d in list_directions(folder=tmp_path / "home" / "directions" / "twin")}
    ref = {d.key: d for _, d in list_directions(folder=tmp_path / "job")}
    assert set(mine) == set(ref) == {"smile", "male", "smile|male"} and not rep["directions"]["rejected"]
    for k, d in ref.items():
        assert torch.allclose(mine[k].vector, d.vector, atol=1e-5), k
        assert mine[k].accuracy == d.accuracy and mine[k].samples == d.samples == 900
        assert mine[k].latent_std == pytest.approx(d.latent_std, rel=1e-5)


def test_adopt_refuses_bad_names_and_existing(adopted, monkeypatch):
    monkeypatch.setenv("FACEEDIT_HOME", str(adopted["home"]))
    with pytest.raises(AdoptError, match="already adopted"):
        adopt(adopted["src"], "mine", n=200, device="cpu", scorer=brightness_and_noise)
    with pytest.raises(AdoptError, match="registered model"):
        adopt(adopted["src"], "faces64", n=200, device="cpu", scorer=brightness_and_noise)
    with pytest.raises(AdoptError, match="letters, digits"):
        adopt(adopted["src"], "../evil", n=200, device="cpu", scorer=brightness_and_noise)


@pytest.mark.slow
def test_edit_with_the_adopted_model(adopted, shared_dir, tmp_path, monkeypatch):
    from faceedit.cli import cli
    from faceedit.core.images import load_image

    monkeypatch.setenv("FACEEDIT_HOME", str(adopted["home"]))
    runner = CliRunner()
    photo = os.path.join(shared_dir, PHOTO)
    out = tmp_path / "out"
    res = runner.invoke(cli, ["--device", "cpu", "edit", photo, "--model", "mine", "--attr", "smile=3", "--steps", "1",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    stem = os.path.splitext(os.path.basename(PHOTO))[0]
    rec = json.loads((out / f"{stem}_edit.json").read_text())
    assert rec["model_id"] == adopted["report"]["model_id"]
    assert rec["faces"][0]["alignment"]["recipe"]["name"] == "ffhq"  # the model's recipe, not faces64
    assert (load_image(out / f"{stem}_edit.png") != load_image(photo)).any()
    # the refused direction is not there to use
    res = runner.invoke(cli, ["--device", "cpu", "edit", photo, "--model", "mine", "--attr", "age", "--steps", "1",
                              "--out", str(tmp_path / "out2")])
    assert res.exit_code == 1 and "no direction 'age'" in res.output


def test_cli_adopt_shipped_scorer(tmp_path, monkeypatch):
    from faceedit.cli import cli

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    src = _tiny(tmp_path / "src")
    runner = CliRunner()
    args = ["--device", "cpu", "adopt", str(src), "--name", "t", "--recipe", "faces64", "--n", "200",
            "--prior-n", "300", "--unsupervised", "0"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "home" / "models" / "t" / "adopt_report.json").read_text())
    assert rep["recipe"]["name"] == "faces64" and rep["recipe_source"] == "--recipe"
    # 200 samples leave 6 held out per attribute: no accuracy can beat chance by 3 standard errors
    assert not rep["directions"]["fitted"] and "refused" in res.output
    res = runner.invoke(cli, args)
    assert res.exit_code == 1 and "--force" in res.output
