"""`faceedit directions import`: InterFaceGAN .npy, e4e/pSp .pt and GANSpace .npz files built here."""
import io
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.checkpoints.native import save_native
from faceedit.editing.apply import resolve_directions
from faceedit.editing.importers import DirectionImportError, guess_attribute, import_directions, sniff_format
from faceedit.networks import Generator

W = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    torch.manual_seed(0)
    G = Generator(z_dim=W, w_dim=W, resolution=16, mapping_layers=2, channel_base=128, channel_max=16)
    from faceedit.checkpoints.registry import load_model

    path = save_native(root / "m", G, name="m")
    return {"path": str(path), "m": load_model(path), "root": root}


def _vec(seed=0, shape=(1, W)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_guess_attribute():
    assert guess_attribute("stylegan_ffhq_smile_w_boundary.npy") == "smile"
    assert guess_attribute("stylegan_celebahq_age_c_gender_boundary.npy") == "age"
    assert guess_attribute("stylegan_ffhq_eyeglasses_w_boundary.npy") == "eyeglasses"
    assert guess_attribute("age.pt") == "age"
    assert guess_attribute("stylegan_ffhq_w_boundary.npy") is None


def test_interfacegan_npy_round_trip_and_used_by_edit(model, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    v = _vec(1) * 3.0
    f = tmp_path / "stylegan_ffhq_smile_w_boundary.npy"
    np.save(f, v)
    assert sniff_format(f) == "interfacegan-npy"
    with caplog.at_level("WARNING"):
        (d, p), = import_directions(f, model["m"])
    assert "guessed" in caplog.text
    assert d.attribute == "smile" and d.space == "w" and p.parent == tmp_path / "home" / "directions" / "m"
    assert np.allclose(d.vector.numpy(), v / np.linalg.norm(v), atol=1e-6)
    imp = d.meta["imported"]
    import hashlib

    assert imp["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() and imp["format"] == "interfacegan-npy"
    assert imp["attribute_guessed"] is True and imp["source_norm"] == pytest.approx(np.linalg.norm(v), rel=1e-6)
    # strength 1 = the spread of the model's own W samples along it
    from faceedit.editing.fit import sample_codes

    proj = sample_codes(model["m"].G, 5000) @ (v / np.linalg.norm(v)).reshape(-1)
    assert d.latent_std == pytest.approx(float(np.std(proj)), rel=1e-3)
    # found as the model's smile, like a shipped one
    ((found, strength),) = resolve_directions(model["m"].model_id, {"smile": 2}, latent_space="w+")
    assert np.allclose(found.vector.numpy(), d.vector.numpy())


def test_e4e_pt_and_cli_list(model, tmp_path, monkeypatch):
    from faceedit.cli import cli

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    f = tmp_path / "age.pt"
    t = torch.from_numpy(_vec(2))
    torch.save(t, f)
    runner = CliRunner()
    res = runner.invoke(cli, ["directions", "import", str(f), "--model", model["path"], "--attr", "age"])
    assert res.exit_code == 0, res.output
    assert "e4e-pt" in res.output and "guessed" not in res.output
    res = runner.invoke(cli, ["directions", "list", "--model", "m"])
    assert res.exit_code == 0 and "m_age_w_import-" in res.output
    # the name guess is said on the command line
    f2 = tmp_path / "smile.pt"
    torch.save(torch.from_numpy(_vec(3)[0]), f2)
    res = runner.invoke(cli, ["directions", "import", str(f2), "--model", model["path"]])
    assert res.exit_code == 0 and "guessed from the file name" in res.output


def test_ganspace_npz(model, tmp_path):
    comp = np.stack([_vec(i)[None] / np.linalg.norm(_vec(i)) for i in range(3)])  # [3, 1, W]
    f = tmp_path / "ganspace.npz"
    np.savez(f, lat_comp=comp, lat_mean=np.zeros((1, W), np.float32), lat_stdev=np.array([3.0, 2.0, 1.0]),
             act_comp=np.zeros((3, 4)))
    assert sniff_format(f) == "ganspace-npz"
    out = import_directions(f, model["m"], layers=(0, 1), out=tmp_path / "d")
    assert [d.attribute for d, _ in out] == ["pc0", "pc1", "pc2"]
    assert all(d.method == "ganspace" and d.layers == (0, 1) for d, _ in out)
    assert out[1][0].meta["imported"]["ganspace_stdev"] == 2.0
    assert np.allclose(out[2][0].vector.numpy(), comp[2], atol=1e-6)
    (d, _), = import_directions(f, model["m"], components=[1], attr="hair", out=tmp_path / "d2")
    assert d.attribute == "hair" and np.allclose(d.vector.numpy(), comp[1], atol=1e-6)
    with pytest.raises(DirectionImportError, match="--component"):
        import_directions(f, model["m"], attr="pose", out=tmp_path / "d3")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_refusals(model, tmp_path):
    m = model["m"]
    np.save(tmp_path / "wrong.npy", _vec(0, (1, 512)))
    with pytest.raises(DirectionImportError, match="w_dim 16"):
        import_directions(tmp_path / "wrong.npy", m, attr="smile", out=tmp_path / "d")
    bad = _vec(0)
    bad[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DirectionImportError, match="NaN"):
        import_directions(tmp_path / "nan.npy", m, attr="smile", out=tmp_path / "d")
    np.save(tmp_path / "zero.npy", np.zeros((1, W)))
    with pytest.raises(DirectionImportError, match="zero"):
        import_directions(tmp_path / "zero.npy", m, attr="smile", out=tmp_path / "d")
    # a .pt whose pickle would call os.system: weights_only refuses it, nothing runs
    buf = io.BytesIO()
    torch.save({"v": torch.zeros(W), "x": Evil()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(DirectionImportError, match="weights_only") as err:
        import_directions(tmp_path / "evil.pt", m, attr="smile", out=tmp_path / "d")
    assert "weights_only=False" not in str(err.value) and "False will likely" not in str(err.value)
    # a plain pickle stream with code
    (tmp_path / "evil2.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DirectionImportError, match="refused"):
        import_directions(tmp_path / "evil2.pt", m, attr="smile", out=tmp_path / "d")
    # a .npy of pickled objects
    np.save(tmp_path / "obj.npy", np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionImportError, match="pickled"):
        import_directions(tmp_path / "obj.npy", m, attr="smile", out=tmp_path / "d")
    # a dict of tensors is not an e4e direction
    torch.save({"v": torch.zeros(W)}, tmp_path / "dict.pt")
    with pytest.raises(DirectionImportError, match="dict"):
        import_directions(tmp_path / "dict.pt", m, attr="smile", out=tmp_path / "d")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DirectionImportError, match="not a direction file"):
        import_directions(tmp_path / "x.txt", m, attr="smile", out=tmp_path / "d")
    np.save(tmp_path / "stylegan_ffhq_w_boundary.npy", _vec(0))
    with pytest.raises(DirectionImportError, match="--attr"):
        import_directions(tmp_path / "stylegan_ffhq_w_boundary.npy", m, out=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_per_layer_boundary_becomes_wplus(model, tmp_path):
    m = model["m"]
    nws = m.G.num_ws
    np.save(tmp_path / "b.npy", _vec(5, (1, nws, W)))
    (d, _), = import_directions(tmp_path / "b.npy", m, attr="smile", out=tmp_path / "d")
    assert d.space == "w+" and tuple(d.vector.shape) == (nws, W)
