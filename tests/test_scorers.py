"""The attribute network, its training job and evaluation, on tiny synthetic packs."""
import json

import numpy as np
import pytest
import torch

from faceedit.metrics.attributes import (CELEBA_ATTRIBUTES, AttributeScorer, AttrNet, ScorerNotFoundError,
                                         celeba_label_matrix, evaluate_scores, gender_targets, save_attrnet, to_input)


def synthetic_pack(path, n=240, seed=0):
    """Faces that are not faces: each label is painted into the image so a tiny net can learn it.

    Smiling: a bright bar low in the image; Eyeglasses: a dark band across; Male (CelebA) /
    gender (UTKFace): a red tint; age (UTKFace half only): the grey level of a corner patch.
    """
    import cv2

    from faceedit.core.pack import write_pack

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
            sign = lambda b: 1 if b else -1  # noqa: E731
            lab["Smiling"][i], lab["Eyeglasses"][i], lab["Male"][i] = sign(s), sign(e), sign(m)
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
    with pytest.raises(ScorerNotFoundError, match="faceedit train-scorers"):
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


def test_train_scorers_command_writes_loadable_weights(tmp_path):
    from click.testing import CliRunner

    from faceedit.cli import cli

    pack = synthetic_pack(tmp_path / "synth_train.npz", n=120)
    r = CliRunner().invoke(cli, ["--device", "cpu", "train-scorers", "--train", str(pack), "--out",
                                 str(tmp_path / "out"), "--max-steps", "3", "--batch-size", "32", "--width", "8",
                                 "--val-fraction", "0.3"])
    assert r.exit_code == 0, r.output
    assert "attrnet.safetensors" in r.output
    assert AttributeScorer.load(tmp_path / "out" / "attrnet.safetensors").feature_dim == 64
    r = CliRunner().invoke(cli, ["train-scorers", "--train", str(tmp_path / "nope.npz"), "--out", str(tmp_path)])
    assert r.exit_code == 2  # click names the missing file


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
    assert len(card["training"]["validation_history"]) >= 2 and card["training"]["weights_kept"]
    on_disk = json.loads((tmp_path / "out" / "attrnet.json").read_text())
    assert on_disk["validation"]["n"] == v["n"]
    sc = AttributeScorer.load(tmp_path / "out" / "attrnet.safetensors")
    assert sc.feature_dim == 64
    with pytest.raises(ValueError, match="test pack"):
        train_attrnet(tmp_path / "faces64_test.npz", tmp_path / "x", max_steps=1)


# --- landmark geometry and identity (dlib; real photos from ../shared) -------------------------

@pytest.fixture(scope="module")
def obama(shared_dir):
    from faceedit.alignment import detect_faces, landmarks68
    from faceedit.core.images import load_image

    img = load_image(f"{shared_dir}/datasets/photos/face_recognition__obama.jpg")
    box = detect_faces(img)[0].box
    return img, box, landmarks68(img, box)


def test_geometry_is_invariant_to_roll_and_mirrors_with_flip(obama):
    from faceedit.metrics.geometry import scores_from_landmarks

    img, _, lm = obama
    W, H = img.shape[1], img.shape[0]
    s0 = scores_from_landmarks(lm, (W, H))
    c, th = np.array([W / 2, H / 2]), np.radians(10)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    s1 = scores_from_landmarks((lm - c) @ R.T + c, (W, H))  # turned clockwise on screen
    for k in ("smile", "mouth_open", "eyes_open", "mouth_width"):
        assert abs(s0[k] - s1[k]) < 1e-6, k
    assert abs((s1["roll"] - s0["roll"]) - 10) < 1.0
    # mirrored landmarks (with left/right point labels swapped) negate yaw and roll
    perm = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, [45, 44, 43, 42, 47, 46], [39, 38, 37, 36, 41, 40],
                 54:47:-1, 59:54:-1, 64:59:-1, 67:64:-1]
    fl = lm[perm].copy()
    fl[:, 0] = W - fl[:, 0]
    s2 = scores_from_landmarks(fl, (W, H))
    assert abs(s2["yaw"] + s0["yaw"]) < 0.5 and abs(s2["roll"] + s0["roll"]) < 0.5
    assert abs(s2["smile"] - s0["smile"]) < 1e-6


def test_mouth_open_and_smile_respond_to_landmark_moves(obama):
    from faceedit.metrics.geometry import scores_from_landmarks

    img, _, lm = obama
    size = (img.shape[1], img.shape[0])
    base = scores_from_landmarks(lm, size)
    opened = lm.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 15          # lower lip down
    assert scores_from_landmarks(opened, size)["mouth_open"] > base["mouth_open"] + 0.05
    lifted = lm.copy()
    lifted[[48, 54], 1] -= 6                            # corners up
    assert scores_from_landmarks(lifted, size)["smile"] > base["smile"] + 0.05


def test_yaw5_sign_and_symmetry():
    from faceedit.metrics.geometry import yaw_from_5points

    pts = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    assert abs(yaw_from_5points(pts)) < 1e-9
    right = pts.copy()
    right[2, 0] += 8                                    # nose towards the image's right
    assert yaw_from_5points(right) > 10
    left = right.copy()
    left[:, 0] = 100 - left[:, 0]
    left = left[[1, 0, 2, 4, 3]]
    assert abs(yaw_from_5points(left) + yaw_from_5points(right)) < 1e-9


@pytest.mark.slow
def test_crop_geometry_and_failure_report(obama):
    from faceedit.alignment import FACES64, align
    from faceedit.metrics.geometry import crop_geometry, geometry_for_box

    img, box, _ = obama
    crop = align(img, recipe=FACES64)[0].crop
    g = crop_geometry(crop, with_yaw5=True)
    assert g.ok and g.landmarks.shape == (68, 2)
    assert np.all((g.landmarks[36:48] > 0) & (g.landmarks[36:48] < 64))  # eyes inside (the chin may be cut off)
    full = geometry_for_box(img, box)
    assert abs(g.yaw - full.yaw) < 10 and abs(g.smile - full.smile) < 0.15
    assert np.isfinite(g.yaw5) and np.sign(g.yaw5) == np.sign(g.yaw) or abs(g.yaw) < 3
    blank = crop_geometry(np.full((64, 64, 3), 128, np.uint8), with_yaw5=False)
    assert not blank.ok and "no face" in blank.reason and np.isnan(blank.smile)
    assert blank.to_dict()["smile"] is None


@pytest.mark.slow
def test_identity_separates_people_and_keeps_a_face(shared_dir, tmp_path):
    from faceedit.alignment import FACES64, align
    from faceedit.core.images import load_image
    from faceedit.metrics.identity import IdentityEncoder, calibrate, chip_matrix, perturbations

    m = chip_matrix(64)
    assert np.allclose(m @ [32, 32 + 10, 1], [75, 75])       # chip centre from the FACES64 crop
    photos = ["face_recognition__obama.jpg", "face_recognition__obama2.jpg", "face_recognition__biden.jpg",
              "facenet__angelina_jolie_1.jpg", "facenet__paul_rudd_1.jpg", "face_recognition__lin-manuel-miranda.png",
              "facenet__kate_siegel_1.jpg", "facenet__shea_whigham_1.jpg"]
    crops = np.stack([align(load_image(f"{shared_dir}/datasets/photos/{p}"), recipe=FACES64, face="largest")[0].crop
                      for p in photos])
    enc = IdentityEncoder(calibration=False)
    e = enc.embed(crops)
    assert e.shape == (8, 128)
    assert np.allclose(enc.distance(crops[:2], crops[:2]), 0)
    same_person = np.linalg.norm(e[0] - e[1])                 # two photos of Obama
    strangers = [np.linalg.norm(e[i] - e[j]) for i in range(2, 8) for j in range(i + 1, 8)]
    assert same_person < 0.6 < np.median(strangers)
    flips = enc.distance(crops[:3], perturbations(crops[:3])["flip"])
    assert np.median(flips) < np.median(strangers) / 2
    cal = calibrate(crops, n_pairs=200)
    assert np.all(np.diff(cal["different"]["quantiles"]) >= 0) and cal["same"]["mean"] < cal["different"]["mean"]
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(cal))
    enc2 = IdentityEncoder(calibration=p)
    sim = enc2.similarity_from_distance(np.array([0.0, 0.5, 2.0]))
    assert sim[0] == 1.0 and sim[2] == 0.0 and 0 <= sim[1] <= 1
    s = enc2.similarity(crops[:2], crops[[1, 0]])
    assert s.shape == (2,) and s[0] == s[1]


# --- faceedit bench / faceedit score ------------------------------------------------------------

def test_format_table_and_write_outputs(tmp_path):
    from faceedit.bench.report import format_table, provenance, write_outputs

    rows = [{"a": 1, "b": 0.123456789}, {"a": "x", "c": float("nan")}]
    t = format_table(rows)
    assert t.splitlines()[0].split("|")[1].strip() == "a" and "0.1235" in t and "nan" in t
    res = {"provenance": provenance({"m": "abc"})}
    paths = write_outputs(tmp_path, "demo", rows, res, images={"img": np.zeros((4, 4, 3), np.uint8)})
    j = json.loads(paths["json"].read_text())
    assert j["rows"][1]["c"] is None and j["provenance"]["models"] == {"m": "abc"}
    assert "torch" in j["provenance"]["versions"]
    assert paths["csv"].read_text().splitlines()[0] == "a,b,c"
    assert (tmp_path / "demo_img.png").is_file()


@pytest.mark.slow
def test_bench_generator_and_scorers_end_to_end(tmp_path):
    from faceedit.bench.quality import bench_generator, bench_scorers
    from faceedit.checkpoints.native import save_native
    from faceedit.networks import Generator

    torch.manual_seed(0)
    save_native(tmp_path / "g", Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=64,
                                          channel_max=16), name="tiny")
    save_native(tmp_path / "g2", Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=64,
                                           channel_max=16), name="tiny")  # the same name, other weights
    train = synthetic_pack(tmp_path / "train.npz", n=60, seed=1)
    test = synthetic_pack(tmp_path / "test.npz", n=60, seed=2)
    w, _ = save_attrnet(tmp_path / "attrnet.safetensors", AttrNet(width=8).eval(), {})
    sc = AttributeScorer.load(w)
    from faceedit.core.images import save_image
    from faceedit.core.pack import Pack

    for i, im in enumerate(Pack(train).images(range(12))):
        save_image(tmp_path / "imgs" / f"{i:03d}.png", im)
    res = bench_generator([str(tmp_path / "g"), str(tmp_path / "g2")], test_pack=test, train_pack=train, n=120,
                          ppl_samples=8, ls_samples=0, scorer=sc, device="cpu", out=tmp_path / "out",
                          images_dirs=[tmp_path / "imgs"])
    assert any(r["model"] == "images:imgs" and r["metric"] == "KID-attr" and r["n"] == 12 for r in res["rows"])
    metrics = {(r["model"], r["metric"]) for r in res["rows"]}
    assert ("real-train", "KID-attr") in metrics and any(m[1] == "ppl_w_end[attr]" for m in metrics)
    kid = [r for r in res["rows"] if r["metric"] == "KID-attr" and r["model"] != "real-train"][0]
    assert kid["n"] == 60 and kid["ci_low"] <= kid["value"] <= kid["ci_high"]
    rec = {r["model"]: r for r in res["rows"] if r["metric"] == "recall-attr"}
    ids = [m for m in rec if m.startswith("tiny")]
    assert len(ids) == 2 and all("2 disjoint draws of 60" in rec[m]["note"] for m in ids)
    assert all(rec[m]["ci_low"] <= rec[m]["value"] <= rec[m]["ci_high"] for m in ids)
    diff = [r for r in res["rows"] if r["metric"] == "recall-attr difference"]
    assert len(diff) == 1 and diff[0]["value"] == pytest.approx(rec[ids[1]]["value"] - rec[ids[0]]["value"])
    out = json.loads((tmp_path / "out" / "generator.json").read_text())
    assert out["provenance"]["models"]["attrnet"] == sc.sha256 and out["provenance"]["test_pack_sha256"]
    sheets = sorted(p.name for p in (tmp_path / "out").glob("generator_samples_tiny*.png"))
    assert len(sheets) == 2 and "generator_samples_tiny.png" in sheets  # one sheet each, none overwritten
    assert (tmp_path / "out" / "generator_nearest_tiny.png").is_file()
    card = tmp_path / "card.json"
    card.write_text("{}")
    r2 = bench_scorers(test, weights=w, geometry=0, out=tmp_path / "s", card=card)
    assert "Smiling" in r2["test"]["attributes"] and json.loads(card.read_text())["test"]["n"] == 60


def test_cli_bench_lists_commands_and_refuses_missing_pack(tmp_path):
    from click.testing import CliRunner

    from faceedit.cli import cli

    r = CliRunner().invoke(cli, ["bench", "--help"])
    assert r.exit_code == 0 and all(k in r.output for k in ("inversion", "editing", "generator", "methods"))
    r = CliRunner().invoke(cli, ["bench", "scorers", "--test-pack", str(tmp_path / "none.npz")])
    assert r.exit_code == 2 and "does not exist" in r.output


@pytest.mark.slow
def test_cli_score_prints_pose_and_landmarks(shared_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from faceedit.cli import cli

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    w, _ = save_attrnet(tmp_path / "home" / "scorers" / "attrnet.safetensors", AttrNet(width=8).eval(), {})
    photo = f"{shared_dir}/datasets/photos/face_recognition__obama_small.jpg"
    r = CliRunner().invoke(cli, ["--device", "cpu", "score", photo, "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "1 face(s)" in r.output and "yaw" in r.output and "landmarks68" in r.output and "Smiling" in r.output
    j = json.loads((tmp_path / "s.json").read_text())
    f = j[0]["faces"][0]
    assert len(f["geometry"]["landmarks"]) == 68 and set(CELEBA_ATTRIBUTES) <= set(f["attributes"])
    r = CliRunner().invoke(cli, ["score", f"{shared_dir}/datasets/photos/face_alignment__grass.jpg"])
    assert r.exit_code == 1 and "no face" in r.output.lower()
