"""The attribute network, its training job and evaluation, on tiny synthetic packs."""
import json

import numpy as np
import pytest
import torch

from faceedit.metrics.attributes import (CELEBA_ATTRIBUTES, AttributeScorer, AttrNet, ScorerNotFoundError,
                                         celeba_label_matrix, evaluate_scores, gender_targets, load_attrnet,
                                         save_attrnet, to_input)


def synthetic_pack(path, n=240, seed=0):
    """Faces that are not faces: each label is painted into the image so a tiny net can learn it.

    Smiling: a bright bar low in the image; Eyeglasses: a dark band across; Male (CelebA) /
    gender (UTKFace): a red tint; age (UTKFace half only): the grey level of a corner patch.
    """
    import cv2

    from faceedit.training.pack import write_pack

    rng = np.random.default_rng(seed)
    jpegs = []
    lab = {a: np.zeros(n, np.int8) for a in ("Smiling", "Eyeglasses", "Male")}
    age = np.full(n, np.nan, np.float32)
    gender = np.full(n, -1, np.int8)
    race = np.full(n, -1, np.int8)
    source = np.zeros(n, np.int8)
    for i in range(n):
        im = (rng.random((64, 64, 3)) * 60 + 60).astype(np.uint8)
        s, e, m = rng.random() < 0.5, rng.random() < 0.4, rng.random() < 0.5
        if s:
            im[44:50, 16:48] = 230
        if e:
            im[22:28, 8:56] = 10
        if m:
            im[..., 0] = np.clip(im[..., 0].astype(int) + 70, 0, 255)
        if i % 2 == 0:
            lab["Smiling"][i], lab["Eyeglasses"][i], lab["Male"][i] = (1 if s else -1), (1 if e else -1), (1 if m else -1)
        else:
            a = rng.uniform(1, 80)
            im[0:12, 0:12] = int(a * 3)
            age[i], gender[i], race[i], source[i] = a, 0 if m else 1, rng.integers(0, 5), 1
        jpegs.append(cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    lab.update(age=age, gender=gender, race=race, source=source)
    return write_pack(path, jpegs, lab, [f"{i:05d}.jpg" for i in range(n)], {"split": "train", "synthetic": True})


def test_attrnet_shapes_and_input_conversion():
    net = AttrNet(width=8).eval()
    x = to_input(np.zeros((2, 64, 64, 3), np.uint8))
    assert x.shape == (2, 3, 64, 64) and float(x.min()) == -1.0
    a, g, age, f = net(x)
    assert a.shape == (2, 40) and g.shape == (2,) and age.shape == (2,) and f.shape == (2, 64)
    # other sizes are resized; floats must come as tensors
    assert to_input(torch.zeros(1, 3, 128, 128)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="uint8"):
        to_input(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        to_input(np.zeros((1, 64, 64), np.uint8))


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = AttrNet(width=8).eval()
    with torch.no_grad():  # non-trivial BN statistics so that buffers matter
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    w, c = save_attrnet(tmp_path / "attrnet.safetensors", net, {"hello": 1})
    s1 = AttributeScorer(net)
    s2 = AttributeScorer.load(w)
    assert s2.card == {"hello": 1} and len(s2.sha256) == 64
    imgs = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    a, b = s1.scores(imgs), s2.scores(imgs)
    assert set(a) == set(CELEBA_ATTRIBUTES) | {"female", "age"}
    for k in a:  # fp16 storage: close, not equal
        assert np.allclose(a[k], b[k], atol=2e-2 if k != "age" else 0.2), k
    f = s2.features(imgs)
    sc, f2 = s2.scores_and_features(imgs)
    assert f.shape == (5, 64) and np.allclose(f, f2) and np.allclose(sc["Smiling"], b["Smiling"])
    assert s2.scores(imgs[0])["Smiling"].shape == (1,)


def test_missing_weights_error_names_the_fix(tmp_path):
    with pytest.raises(ScorerNotFoundError, match="faceedit.training.attributes"):
        AttributeScorer.load(tmp_path / "nope.safetensors")


def test_label_helpers():
    labels = {"Smiling": np.array([1, -1, 0]), "Male": np.array([1, -1, 0]), "gender": np.array([-1, -1, 1])}
    m = celeba_label_matrix(labels, 3)
    assert m.shape == (3, 40) and m[0, CELEBA_ATTRIBUTES.index("Smiling")] == 1
    g = gender_targets(labels, m)
    assert g[0] == 0 and g[1] == 1 and g[2] == 1


def test_evaluate_scores_perfect_and_random():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.random(n) < 0.3
    labels = {"Smiling": np.where(y, 1, -1).astype(np.int8), "age": rng.uniform(1, 90, n).astype(np.float32),
              "gender": rng.integers(0, 2, n).astype(np.int8), "race": rng.integers(0, 5, n).astype(np.int8)}
    scores = {a: rng.random(n) for a in CELEBA_ATTRIBUTES}
    scores["Smiling"] = y.astype(float)
    scores["female"] = labels["gender"].astype(float)
    scores["age"] = labels["age"] + 2.0
    r = evaluate_scores(scores, labels)
    assert r["attributes"]["Smiling"]["auc"] == 1.0
    assert np.isnan(r["attributes"]["Bald"]["auc"])  # no labels
    assert r["gender"]["auc"] == 1.0 and abs(r["age"]["mae"] - 2.0) < 1e-5
    assert "race=White" in r["groups"] and abs(r["groups"]["age=20-30"]["age_mae"] - 2.0) < 1e-5
    scores["Smiling"] = rng.random(n)
    assert 0.35 < evaluate_scores(scores, labels)["attributes"]["Smiling"]["auc"] < 0.65


@pytest.mark.slow
def test_training_job_learns_synthetic_attributes(tmp_path):
    from faceedit.training.attributes import summary_table, train_attrnet

    pack = synthetic_pack(tmp_path / "synth_train.npz", n=240)
    card = train_attrnet(pack, tmp_path / "out", minutes=5, max_steps=70, batch_size=32, width=8,
                         val_fraction=0.3, device="cpu", lr=3e-3)
    v = card["validation"]
    assert v["attributes"]["Male"]["auc"] > 0.9
    assert v["attributes"]["Smiling"]["auc"] > 0.8
    assert v["gender"]["auc"] > 0.9
    assert card["training"]["steps"] == 70 and "Smiling" in summary_table(card)
    on_disk = json.loads((tmp_path / "out" / "attrnet.json").read_text())
    assert on_disk["validation"]["n"] == v["n"]
    sc = AttributeScorer.load(tmp_path / "out" / "attrnet.safetensors")
    assert sc.feature_dim == 64
    with pytest.raises(ValueError, match="test pack"):
        train_attrnet(tmp_path / "faces64_test.npz", tmp_path / "x", max_steps=1)
