"""Photo in, photo out: Pipeline and `faceedit edit` on a tiny random generator and real photos."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.alignment.types import FACES64
from faceedit.checkpoints.native import save_native
from faceedit.cli.edit import parse_attr, parse_sweep
from faceedit.core.images import load_image
from faceedit.defaults import DEFAULT_STRENGTH
from faceedit.editing.fit import ganspace, sample_codes
from faceedit.networks import Generator

PHOTO = "datasets/photos/face_recognition__obama.jpg"
TWO = "datasets/photos/face_recognition__two_people.jpg"
FAST = dict(steps=3, prior="none", perceptual="none")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random generator saved natively, and two 'directions' (GANSpace axes renamed)."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=128, channel_max=16)
    path = save_native(root / "tiny", G, name="tiny", recipe=FACES64.to_dict())
    from faceedit.checkpoints.registry import load_model

    m = load_model(path)
    pcs = ganspace(sample_codes(m.G, 2000), model_id=m.model_id, num_ws=m.G.num_ws, k=2)
    for d, name in zip(pcs, ("smile", "age")):
        replace(d, attribute=name, method="manual").save(root / "dirs")
    return {"path": str(path), "dirs": str(root / "dirs"), "model_id": m.model_id, "root": root}


@pytest.fixture(scope="module")
def pipe(tiny):
    from faceedit.pipeline import Pipeline

    return Pipeline(tiny["path"], device="cpu", directions=tiny["dirs"], invert_options=FAST)


@pytest.fixture(scope="module")
def edited(pipe, shared_dir):
    photo = load_image(os.path.join(shared_dir, PHOTO))
    return photo, pipe.edit_photo(photo, {"smile": 3})


def test_parse_attr_and_sweep():
    assert parse_attr("smile", 2.0) == ("smile", 2.0)
    assert parse_attr("age|male=-1.5", 2.0) == ("age|male", -1.5)
    assert parse_sweep("-3:3:7") == [-3, -2, -1, 0, 1, 2, 3]
    import click

    for bad in ("smile=lots", "rm -rf", "a|"):
        with pytest.raises(click.BadParameter):
            parse_attr(bad, 1.0)
    with pytest.raises(click.BadParameter):
        parse_sweep("3")


def test_pipeline_end_to_end(edited, tiny):
    photo, r = edited
    assert r.photo.shape == photo.shape and r.photo.dtype == np.uint8
    assert len(r.faces) == 1
    f = r.faces[0]
    assert f.crop.shape == (16, 16, 3) and f.reconstruction.shape == (16, 16, 3)
    assert f.latent.model_id == tiny["model_id"] and f.edited.meta["edits"][0]["attribute"] == "smile"
    changed = np.any(r.photo != photo, axis=2)
    assert changed.any()  # the edit shows
    assert not (changed & (r.mask == 0)).any()  # only inside the face mask
    assert 0 < (r.mask > 0).mean() < 0.5
    assert set(r.timings) >= {"align", "invert", "edit", "synthesize", "paste"}


@pytest.mark.parametrize("method", ["optim", "pti"])
def test_edit_photo_resolves_the_model_once(tiny, shared_dir, monkeypatch, method):
    """A name given to the front door is resolved and loaded once; every stage after takes the LoadedModel."""
    from faceedit.checkpoints import registry
    from faceedit.pipeline import Pipeline

    calls = {"resolve": 0, "load_model": 0}

    def counting(fn):
        def wrapper(*a, **kw):
            calls[fn.__name__] += 1
            return fn(*a, **kw)
        return wrapper

    monkeypatch.setattr(registry, "resolve", counting(registry.resolve))
    monkeypatch.setattr(registry, "load_model", counting(registry.load_model))
    photo = load_image(os.path.join(shared_dir, PHOTO))
    # force: PTI's pivot (the optimiser's default steps) on this untrained generator lies far outside its
    # distribution, which the edit would otherwise refuse; this test is about loading the model once.
    pipe = Pipeline(tiny["path"], device="cpu", method=method, directions=tiny["dirs"],
                    invert_options=dict(FAST, steps=1), force=True)
    r = pipe.edit_photo(photo, {"smile": 2})
    assert len(r.faces) == 1 and r.faces[0].latent.meta["method"] == method
    assert calls == {"resolve": 1, "load_model": 1}


def test_strength_zero_returns_the_input(edited, pipe):
    photo, r = edited
    r0 = pipe.edit_photo(photo, {"smile": 0, "age": 0}, faces=[f.face for f in r.faces],
                         latents=[f.latent for f in r.faces])
    assert np.abs(r0.photo.astype(int) - photo).max() <= 1
    # opposite strengths move the crop in opposite directions along the direction
    up = pipe.edit_photo(photo, {"smile": 2}, faces=[r.faces[0].face], latents=[r.faces[0].latent])
    dn = pipe.edit_photo(photo, {"smile": -2}, faces=[r.faces[0].face], latents=[r.faces[0].latent])
    d = up.faces[0].edited.codes - dn.faces[0].edited.codes
    assert torch.allclose(d, 2 * (up.faces[0].edited.codes - r.faces[0].latent.codes), atol=1e-5)


def test_wrong_model_latent_refused(edited, pipe):
    from faceedit.editing import DirectionError
    from faceedit.inversion.latent import LatentFileError

    photo, r = edited
    other = replace(r.faces[0].latent, model_id="someone-else@123")
    with pytest.raises((DirectionError, LatentFileError), match="someone-else"):
        pipe.edit_photo(photo, {"smile": 1}, faces=[r.faces[0].face], latents=[other])


@pytest.mark.slow
def test_cli_photo_latent_and_last_inversion(tiny, shared_dir, tmp_path, monkeypatch):
    from faceedit.cli import cli
    from faceedit.inversion.latent import Latent

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    src = os.path.join(shared_dir, TWO)
    photo = load_image(src)
    out = tmp_path / "out"
    res = runner.invoke(cli, ["--device", "cpu", "edit", src, "--model", tiny["path"], "--directions", tiny["dirs"],
                              "--attr", "smile", "--attr", "age=-1", "--face", "all", "--steps", "2",
                              "--sweep", "-2:2:3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stem = "face_recognition__two_people"
    big = load_image(out / f"{stem}_edit.png")
    assert big.shape == photo.shape and (big != photo).any()
    rec = json.loads((out / f"{stem}_edit.json").read_text())
    assert rec["edits"] == {"smile": DEFAULT_STRENGTH, "age": -1.0} and len(rec["faces"]) == 2
    assert (out / f"{stem}_0_sweep.png").is_file() and (out / f"{stem}_sweep_smile.gif").is_file()
    assert load_image(out / f"{stem}_1_edit.png").shape == (16, 16, 3)

    # the last inversion, in the format `faceedit invert` writes (cache_dir()/last_inversion.json)
    from faceedit.pipeline import Pipeline

    pipe = Pipeline(tiny["path"], device="cpu", invert_options=FAST)
    faces = pipe.align(photo, face="all")
    lat = pipe.invert(faces)
    entries = []
    for i, f in enumerate(faces):
        one = lat[i]
        one = replace(one, meta={**one.meta, "source": src, "face_index": f.index, "alignment": f.metadata()})
        p = one.save(tmp_path / "inv" / f"{stem}_{f.index}.latent.safetensors")
        entries.append({"photo": src, "face": f.index, "latent": str(p), "json": ""})
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "last_inversion.json").write_text(json.dumps(
        {"model": tiny["path"], "model_id": tiny["model_id"], "space": "w+", "faces": entries}))
    out2 = tmp_path / "out2"
    res = runner.invoke(cli, ["--device", "cpu", "edit", "--attr", "smile", "--strength", "0",
                              "--directions", tiny["dirs"], "--out", str(out2)])
    assert res.exit_code == 0, res.output
    same = load_image(out2 / f"{stem}_edit.png")
    assert np.abs(same.astype(int) - photo).max() <= 1  # strength 0: the input photo back
    res = runner.invoke(cli, ["--device", "cpu", "edit", "--latent", entries[0]["latent"], "--model", tiny["path"],
                              "--directions", tiny["dirs"], "--attr", "smile=3", "--out", str(tmp_path / "out3")])
    assert res.exit_code == 0, res.output
    one = load_image(tmp_path / "out3" / f"{stem}_edit.png")
    assert one.shape == photo.shape and (one != photo).any()
    edited_lat = Latent.load(tmp_path / "out3" / f"{stem}_{entries[0]['face']}_edit.latent.safetensors")
    assert edited_lat.meta["edits"][-1]["strength"] == 3.0


def test_edit_files_aligned_in_the_background_writes_the_same_files(tiny, shared_dir, tmp_path):
    """edit_files with the photos read and aligned in a worker process (the default on two cores)
    and without: the same edited photo, crops and alignment records; the worker's times recorded,
    and the time the pipeline spent meanwhile reading its files (``preload``)."""
    from faceedit.pipeline import edit_files

    photos = [os.path.join(shared_dir, TWO)]
    kw = dict(photos=photos, model=tiny["path"], face="all", device="cpu", directions=tiny["dirs"],
              invert_options=FAST)
    bg = edit_files(tmp_path / "bg", {"smile": 2}, background=True, **kw).records
    here = edit_files(tmp_path / "here", {"smile": 2}, background=False, **kw).records
    assert [len(r["faces"]) for r in bg] == [len(r["faces"]) for r in here] == [2]
    for a, b in zip(bg, here):
        assert load_image(a["photo_out"]).tobytes() == load_image(b["photo_out"]).tobytes()
        assert [f["alignment"] for f in a["faces"]] == [f["alignment"] for f in b["faces"]]
        assert {"read", "align", "align_wait", "preload"} <= set(a["timings"])
        assert not {"align_wait", "preload"} & set(b["timings"])
    for name in os.listdir(tmp_path / "here"):
        if name.endswith(".png"):
            assert load_image(tmp_path / "bg" / name).tobytes() == load_image(tmp_path / "here" / name).tobytes()


def _group_run(tiny, shared_dir, tmp_path, monkeypatch, batch_size, *, fail_batches=False):
    """edit_files over three photos with faces (one of them with two) and a blank one, in groups of
    ``batch_size``; returns the run and the face counts Pipeline.invert was called with."""
    from faceedit.core.errors import InversionError
    from faceedit.core.images import save_image
    from faceedit.pipeline import Pipeline, edit_files

    calls = []
    invert = getattr(Pipeline.invert, "__wrapped__", Pipeline.invert)  # not an earlier run's counter

    def counted(self, faces, **kw):
        calls.append(len(faces))
        if fail_batches and len(faces) > 1:
            raise InversionError("made to fail for the test")
        return invert(self, faces, **kw)

    counted.__wrapped__ = invert
    monkeypatch.setattr(Pipeline, "invert", counted)
    save_image(tmp_path / "blank.png", np.full((96, 96, 3), 128, np.uint8))
    photos = [os.path.join(shared_dir, PHOTO), os.path.join(shared_dir, TWO), str(tmp_path / "blank.png"),
              os.path.join(shared_dir, "datasets/photos/face_recognition__biden.jpg")]
    run = edit_files(tmp_path / f"b{batch_size}{'f' if fail_batches else ''}", {"smile": 2}, photos=photos,
                     model=tiny["path"], face="all", device="cpu", directions=tiny["dirs"],
                     invert_options={**FAST, "noise_factor": 0.0},  # no latent noise: nothing drawn per batch
                     background=False, batch_size=batch_size)
    return run, calls


def test_edit_folder_in_groups_inverts_each_group_once_and_matches_one_photo_at_a_time(tiny, shared_dir, tmp_path,
                                                                                        monkeypatch):
    """Groups of 4: the 4 faces of the group's three photos with faces go through one inversion (the
    blank photo fails alone), the outputs are written by the writer threads, and they are the
    one-at-a-time run's up to the last bits of a batched inversion; a photo's recorded inversion
    time is its share of the group's, by its faces."""
    one, calls1 = _group_run(tiny, shared_dir, tmp_path, monkeypatch, 1)
    four, calls4 = _group_run(tiny, shared_dir, tmp_path, monkeypatch, 4)
    assert calls1 == [1, 2, 1] and calls4 == [4]
    for run in (one, four):
        assert len(run.records) == 3 and [os.path.basename(p) for p, _ in run.failures] == ["blank.png"]
        assert "FaceNotFoundError" in run.failures[0][1]
    by_photo = {r["photo"]: r for r in one.records}
    for r in four.records:
        a, b = load_image(r["photo_out"]), load_image(by_photo[r["photo"]]["photo_out"])
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2
        assert r["inversion"] == by_photo[r["photo"]]["inversion"] and len(r["faces"]) == len(
            by_photo[r["photo"]]["faces"])
        for f in r["faces"]:
            assert os.path.isfile(f["latent"]) and os.path.isfile(f["crop"])
    for r in four.records:  # read and aligned in this process here: the wait for a photo is its alignment
        assert r["timings"]["align_wait"] >= 0.01 and r["timings"]["align_wait"] >= r["timings"]["align"]
    shares = {len(r["faces"]): r["timings"]["invert"] for r in four.records}
    assert shares[2] == pytest.approx(2 * shares[1], abs=2e-3)
    states = [json.loads(line) for line in open(os.path.join(os.path.dirname(four.records[0]["photo_out"]),
                                                             ".faceedit-outputs.jsonl"))]
    done = [s for s in states if s.get("state") == "done"]
    assert sorted(os.path.basename(str(s["input"])) for s in done) == sorted(
        os.path.basename(r["photo"]) for r in four.records)


def test_edit_folder_group_whose_batch_fails_inverts_its_photos_one_by_one(tiny, shared_dir, tmp_path, monkeypatch):
    """A user's error from a group's batched inversion does not fail the group: its photos are
    inverted one by one, and each photo's own result decides."""
    run, calls = _group_run(tiny, shared_dir, tmp_path, monkeypatch, 4, fail_batches=True)
    assert calls == [4, 1, 2, 1] and len(run.records) == 2  # the two-face photo fails by itself too
    assert sorted(os.path.basename(p) for p, _ in run.failures) == ["blank.png", "face_recognition__two_people.jpg"]


def test_cli_errors(tiny, tmp_path, monkeypatch, shared_dir):
    from faceedit.cli import cli

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "empty"))
    runner = CliRunner()
    res = runner.invoke(cli, ["edit", "--attr", "smile"])
    assert res.exit_code == 2 and "faceedit invert" in res.output
    res = runner.invoke(cli, ["edit", os.path.join(shared_dir, PHOTO)])
    assert res.exit_code == 2 and "--attr" in res.output
    res = runner.invoke(cli, ["--device", "cpu", "edit", os.path.join(shared_dir, PHOTO), "--model", tiny["path"],
                              "--directions", tiny["dirs"], "--attr", "eyeglasses", "--steps", "1",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no direction 'eyeglasses'" in res.output and "available: age, smile" in res.output


def test_cli_directions_list_show_fit(tiny, tmp_path):
    from faceedit.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["directions", "list", "--folder", tiny["dirs"]])
    assert res.exit_code == 0 and "tiny_smile_w.safetensors" in res.output
    res = runner.invoke(cli, ["directions", "show", os.path.join(tiny["dirs"], "tiny_age_w.safetensors")])
    assert res.exit_code == 0 and json.loads(res.output)["attribute"] == "age"
    res = runner.invoke(cli, ["--device", "cpu", "directions", "fit", "--model", tiny["path"], "--method", "sefa",
                              "--k", "2", "--layers", "0-1", "--n", "500", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["tiny_sefa0_w_l0-1.safetensors",
                                                                   "tiny_sefa1_w_l0-1.safetensors"]


@pytest.mark.slow
def test_bench_editing_tiny(tiny, shared_dir, tmp_path):
    from faceedit import Pipeline
    from faceedit.bench import editing as bench_editing
    from faceedit.metrics.attributes import AttributeScorer, AttrNet

    torch.manual_seed(0)
    sc = AttributeScorer(AttrNet(width=4))
    clf = (lambda imgs: {k.lower().replace("smiling", "smile"): v for k, v in sc.scores(imgs).items()}, "stub")
    rng = np.random.default_rng(0)
    faces = {"images": rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)}
    rows = bench_editing.bench_model(tiny["path"], faces, strengths=(-2, 0, 2), steps=2, device="cpu",
                                     classifier=clf, independent={}, directions=tiny["dirs"], perceptual="none")
    assert [r["direction"] for r in rows] == ["age", "smile"]
    smile = rows[1]
    assert smile["target_by"].startswith("stub logit") and np.isfinite(smile["d_target"])
    assert 0 <= smile["flip"] <= 1 and smile["drift"] >= 0 and "male" in smile["held"]
    assert rows[0]["target_by"].startswith("stub age")
    md = bench_editing.table(rows)
    assert md.count("\n| tiny |") == 2
    # Invert on one machine (--save-latents --invert-only), score on another (--latents): same rows.
    kw = dict(strengths=(-2, 0, 2), steps=2, device="cpu", classifier=clf, independent={}, directions=tiny["dirs"],
              perceptual="none")
    assert bench_editing.bench_model(tiny["path"], faces, save_latents=tmp_path / "lat", invert_only=True, **kw) == []
    again = bench_editing.bench_model(tiny["path"], faces, latents_dir=tmp_path / "lat", **kw)
    assert [r["d_target"] for r in again] == pytest.approx([r["d_target"] for r in rows])
    other = {"images": faces["images"][:2]}
    with pytest.raises(ValueError, match="other faces"):
        bench_editing.bench_model(tiny["path"], other, latents_dir=tmp_path / "lat", **kw)

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("face_alignment__grass.jpg", "face_recognition__two_people.jpg"):
        (photos / name).write_bytes(open(os.path.join(shared_dir, "datasets/photos", name), "rb").read())
    pipe = Pipeline(tiny["path"], space="w+", method="optim", device="cpu", directions=tiny["dirs"],
                    invert_options=dict(steps=1, prior="none", perceptual="none"))
    chk = bench_editing.photo_check(pipe, photos, directions=tiny["dirs"])
    assert chk["passed"] and chk["checked_photos"] == 1 and chk["faces"] == 2 and len(chk["no_face"]) == 1
    assert chk["zero_max_diff"] <= 1 and chk["outside_mask_changed_px"] == 0 and chk["inside_changed"] == 1


def test_cli_invert_folder_then_edit_folder(tiny, shared_dir, tmp_path, monkeypatch):
    """invert and edit take the same inputs; invert's files match the Pipeline API's results."""
    import shutil

    from faceedit.cli import cli
    from faceedit.inversion.latent import Latent
    from faceedit.pipeline import Pipeline

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(os.path.join(shared_dir, PHOTO), photos / "obama.jpg")
    bars = _record_step_bars(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(cli, ["--device", "cpu", "invert", str(photos), "--model", tiny["path"], "--steps", "2",
                              "--prior", "none", "--perceptual", "none", "--out", str(tmp_path / "inv")])
    assert res.exit_code == 0, res.output
    assert "aligning" in res.output and "inverting 1 face(s)" in res.output  # stage lines for one photo
    rec = json.loads((tmp_path / "inv" / "obama_0.json").read_text())
    pipe = Pipeline(tiny["path"], device="cpu", invert_options=FAST | {"steps": 2})
    inv = pipe.invert_faces(pipe.align(load_image(photos / "obama.jpg")))
    assert np.array_equal(load_image(tmp_path / "inv" / "obama_0.png"), inv.reconstructions[0])
    assert torch.equal(Latent.load(rec["latent"]).codes, inv.latents[0].codes)
    assert rec["metrics"] == inv.metrics[0]
    assert bars == [("optim steps", [(0, 2), (1, 2)])]  # a single photo's steps reach the bar
    side = load_image(tmp_path / "inv" / "obama_0_side.png")
    assert side.shape[0] >= 256 and side.shape[1] >= 512  # two 16 px tiles upscaled for viewing

    res = runner.invoke(cli, ["--device", "cpu", "edit", str(photos), "--model", tiny["path"], "--directions",
                              tiny["dirs"], "--attr", "smile", "--steps", "1", "--out", str(tmp_path / "ed")])
    assert res.exit_code == 0, res.output
    assert load_image(tmp_path / "ed" / "obama_edit.png").shape == load_image(photos / "obama.jpg").shape
    assert bars[1:] == [("optim steps", [(0, 1)])]


def _record_step_bars(monkeypatch) -> list:
    """Replace ``faceedit.pipeline.step_bar`` by one that records ``(desc, [(step, total)])`` per bar."""
    import contextlib

    import faceedit.pipeline

    bars = []

    @contextlib.contextmanager
    def recording(desc, *, disable=None):
        seen = []
        bars.append((desc, seen))
        yield lambda step, total, losses: seen.append((step, total))

    monkeypatch.setattr(faceedit.pipeline, "step_bar", recording)
    return bars


def test_step_bar_follows_the_steps(capsys):
    from faceedit.pipeline import step_bar

    with step_bar("optim steps", disable=False) as on_step:
        for s in range(3):
            on_step(s, 5, {})
        on_step(0, 4, {})  # a restart (out-of-memory retry) with another plan
        on_step(3, 4, {})
    err = capsys.readouterr().err
    assert "optim steps" in err and "0/5" in err and err.rstrip().split("\r")[-1].count("4/4") == 1  # not 5/4
    with step_bar("none", disable=False):
        pass
    assert capsys.readouterr().err == ""  # no step, no bar (the encoder method)


def test_cli_invert_no_face_names_the_file(tiny, tmp_path, monkeypatch):
    from faceedit.cli import cli
    from faceedit.core.images import save_image

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    blank = tmp_path / "blank.png"
    save_image(blank, np.full((96, 96, 3), 128, np.uint8))
    res = CliRunner().invoke(cli, ["--device", "cpu", "invert", str(blank), "--model", tiny["path"],
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and str(blank) in res.output, res.output


def test_cli_edit_latent_of_an_aligned_crop_with_photo(tiny, edited, tmp_path, monkeypatch):
    from faceedit.cli import cli
    from faceedit.core.images import save_image

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    crop = tmp_path / "crop.png"
    save_image(crop, edited[1].faces[0].face.crop)
    runner = CliRunner()
    res = runner.invoke(cli, ["--device", "cpu", "invert", str(crop), "--aligned", "--model", tiny["path"],
                              "--steps", "1", "--prior", "none", "--perceptual", "none", "--out", str(tmp_path / "i")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["--device", "cpu", "edit", "--latent", str(tmp_path / "i" / "crop_0.latent.safetensors"),
                              "--photo", str(crop), "--directions", tiny["dirs"], "--model", tiny["path"],
                              "--attr", "smile=3", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    out = load_image(tmp_path / "e" / "crop_edit.png")
    assert out.shape == load_image(crop).shape and (out != load_image(crop)).any()


def test_cli_attr_typo_caught_before_loading(tiny, shared_dir, tmp_path, monkeypatch):
    import faceedit.checkpoints.registry as registry
    from faceedit.cli import cli

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the attribute names were checked")

    monkeypatch.setattr(registry, "load_model", no_load)
    res = CliRunner().invoke(cli, ["--device", "cpu", "edit", os.path.join(shared_dir, PHOTO), "--model",
                                   tiny["path"], "--directions", tiny["dirs"], "--attr", "smiel",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "did you mean smile?" in res.output, res.output


def test_check_attributes_says_what_an_alias_maps_to(tiny, caplog):
    from faceedit.pipeline import check_attributes

    with caplog.at_level("WARNING"):
        check_attributes(tiny["path"], ["Smiling", "age"], tiny["dirs"])
    assert "'Smiling' maps to the 'smile' direction" in caplog.text and "age" not in caplog.text


def test_pti_summary_reports_tuning_steps():
    from faceedit.pipeline import InversionRun

    rec = {"steps": 30, "method": "pti", "tuning_steps": 40, "metrics": {"mse": 0.01}}
    run = InversionRun(records=[rec], failures=[], photos=1, skipped=0, model_id="m@1", space="w+", out="o")
    assert "40 tuning steps after a 30-step pivot" in run.summary()
    rec = {"steps": 30, "method": "optim", "metrics": {"mse": 0.01}}
    assert "(30 steps" in replace(run, records=[rec]).summary()


# --------------------------------------------------------------------------- edits past what was measured
def test_edit_refuses_past_the_measured_strength(edited, pipe, tiny):
    from faceedit.defaults import MAX_STRENGTH
    from faceedit.pipeline import OutOfDistributionError, Pipeline

    lat = edited[1].faces[0].latent
    assert pipe.edit(lat, {"smile": MAX_STRENGTH}).meta["edits"][-1]["strength"] == MAX_STRENGTH
    for s in (MAX_STRENGTH * 1.01, -1e9):
        with pytest.raises(OutOfDistributionError, match=r"beyond the range .*force"):
            pipe.edit(lat, {"smile": s})
    # the distance unit is converted with the direction's latent_std before the comparison
    from faceedit.editing import resolve_directions

    (d, _), = resolve_directions(tiny["model_id"], {"smile": 1}, tiny["dirs"])
    dist = Pipeline(tiny["path"], device="cpu", directions=tiny["dirs"], strength_unit="distance")
    dist.edit(lat, {"smile": 0.99 * MAX_STRENGTH * d.latent_std})
    with pytest.raises(OutOfDistributionError, match=r"std\)"):
        dist.edit(lat, {"smile": 1.01 * MAX_STRENGTH * d.latent_std})
    forced = Pipeline(tiny["path"], device="cpu", directions=tiny["dirs"], force=True)
    assert forced.edit(lat, {"smile": 1e9}).codes.abs().max() > 1e6


@pytest.mark.parametrize("name", ["faces64", "faces64-wpp", "tiny"])
def test_distance_from_prior_reads_one_on_the_models_samples(name, tiny):
    """Fresh mapping samples read about 1 per dimension (the prior's, or the diagonal fallback of a model
    without one); the same codes x 1e6 read past FAR_FROM_PRIOR, and are refused."""
    from faceedit.defaults import FAR_FROM_PRIOR
    from faceedit.inversion.latent import Latent
    from faceedit.pipeline import OutOfDistributionError, Pipeline

    pipe = Pipeline(tiny["path"] if name == "tiny" else name, space="wpp" if name.endswith("wpp") else "w+",
                    device="cpu", invert_options={"perceptual": "none"})
    with torch.no_grad():
        z = torch.randn(256, *pipe.G.z_shape, generator=torch.Generator().manual_seed(123))
        ws = pipe.G.mapping(z)
    d = pipe.distance_from_prior(Latent("w+", ws, pipe.model_id))
    assert 0.7 < float(d.mean()) < 1.3 and float(d.max()) < 10, (name, float(d.mean()), float(d.max()))
    far = Latent("w+", ws[:1] * 1e6, pipe.model_id)
    assert float(pipe.distance_from_prior(far)) > FAR_FROM_PRIOR
    with pytest.raises(OutOfDistributionError, match="far outside"):
        pipe._check_distribution(far, "the latent")


# --------------------------------------------------------------------------- the output folder guard
def test_output_folder_plans_distinct_stems_and_refuses_what_is_not_its_own(tmp_path):
    from faceedit.core.errors import OutputError
    from faceedit.outputs import INVERT_NAMES, MANIFEST, OutputFolder, names

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    inputs = [tmp_path / "x" / "same.jpg", tmp_path / "y" / "same.jpg", tmp_path / "x" / "same.png"]
    for p in inputs:
        p.write_bytes(b"photo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine_0.png").write_bytes(b"the user's")  # not faceedit's: no stem may write it
    folder = OutputFolder(out, inputs + [tmp_path / "x" / "mine.jpg"], command="invert")
    stems = folder.plan_stems(inputs + [tmp_path / "x" / "mine.jpg"], names(INVERT_NAMES))
    assert list(stems.values()) == ["same", "same_jpg", "same_png", "mine_jpg"]
    assert OutputFolder(out, inputs, command="invert").plan_stems(inputs, names(INVERT_NAMES)) == dict(
        list(stems.items())[:3])  # the same inputs, the same names on a re-run
    folder.claim(out / "same_0.png", inputs[0])
    (out / "same_0.png").write_bytes(b"result")
    folder.claim(out / "same_0.png", inputs[0])  # its own output again: fine, listed once
    assert (out / MANIFEST).read_text().count('"same_0.png"') == 1
    with pytest.raises(OutputError, match="twice in one run"):
        folder.claim(out / "same_0.png", inputs[1])
    with pytest.raises(OutputError, match="did not write it"):
        OutputFolder(out, inputs, command="edit").claim(out / "same_0.png", inputs[0])  # another command's
    with pytest.raises(OutputError, match="did not write it"):
        folder.claim(out / "mine_0.png", inputs[0])
    os.link(inputs[2], out / "linked.png")  # another name of an input
    with pytest.raises(OutputError, match="input of this run"):
        folder.claim(out / "linked.png", inputs[0])
    assert (out / "mine_0.png").read_bytes() == b"the user's" and inputs[2].read_bytes() == b"photo"


def test_output_folder_reads_a_list_cut_short_by_a_kill(tmp_path):
    """A line half-written by a killed run is skipped until it is complete; the rest of the list counts."""
    from faceedit.outputs import MANIFEST, OutputFolder

    src = tmp_path / "a.jpg"
    src.write_bytes(b"photo")
    out = tmp_path / "out"
    folder = OutputFolder(out, [src], command="edit")
    folder.write_bytes(out / "a_edit.png", b"1", src)
    with open(out / MANIFEST, "a") as f:
        f.write('{"file": "a_0_edit.png", "command": "ed')
    other = OutputFolder(out, [src], command="edit")
    assert other.owns(out / "a_edit.png", src) and not other.owns(out / "a_0_edit.png", src)
    with open(out / MANIFEST, "a") as f:
        f.write('it", "source": "%s"}\n' % src.resolve())
    assert other.owns(out / "a_0_edit.png", src)


def test_output_folder_forgets_a_deleted_folder(tmp_path):
    """A folder deleted and written again in one process starts a new list (nothing stale is taken as listed)."""
    import shutil

    from faceedit.outputs import OutputFolder

    src = tmp_path / "a.jpg"
    src.write_bytes(b"photo")
    out = tmp_path / "out"
    OutputFolder(out, [src], command="edit").write_bytes(out / "a_edit.png", b"1", src)
    shutil.rmtree(out)
    OutputFolder(out, [src], command="edit").write_bytes(out / "a_edit.png", b"2", src)
    assert "a_edit.png" in (out / ".faceedit-outputs.jsonl").read_text()


def test_pipeline_reads_the_encoder_once_and_preload_changes_nothing_but_when(tmp_path, shared_dir, monkeypatch):
    """A hybrid pipeline loads its encoder file once for all its inversions (``preload`` or the first
    ``invert``), and inverting after ``preload`` gives the latents a pipeline without it gives."""
    from faceedit.checkpoints.registry import load_model
    from faceedit.inversion import encoder as enc
    from faceedit.networks import Discriminator
    from faceedit.networks.encoder import Encoder
    from faceedit.pipeline import Pipeline
    from faceedit.training.encoder import save_encoder

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=128, channel_max=16)
    D = Discriminator(16, channel_base=128, channel_max=16)
    path = save_native(tmp_path / "m", G, name="tiny-hybrid", D=D, recipe=FACES64.to_dict())
    m = load_model(path)
    E = Encoder(16, G.num_ws, 16, "w+", channel_base=256, channel_max=32, channel_min=8, fpn_channels=16,
                head_channels=16)
    save_encoder(path, E, model_id=m.model_id, model_sha256=m.sha256)
    loads = []
    load_encoder = enc.load_encoder
    monkeypatch.setattr(enc, "load_encoder", lambda *a, **k: loads.append(a) or load_encoder(*a, **k))
    faces = Pipeline(str(path), device="cpu").align(load_image(os.path.join(shared_dir, TWO)), face="all")
    opts = dict(steps=2, prior="none", perceptual="disc")

    cold = Pipeline(str(path), device="cpu", invert_options=opts)
    assert cold.method == "hybrid"
    first = [cold.invert([f]) for f in faces]
    assert len(loads) == 1  # two inversions, one read of the encoder

    warm = Pipeline(str(path), device="cpu", invert_options=opts)
    warm.preload()
    assert len(loads) == 2
    again = [warm.invert([f]) for f in faces]
    assert len(loads) == 2  # preload's encoder served both
    for a, b in zip(first, again):
        assert torch.equal(a.codes, b.codes) and a.meta["losses"] == b.meta["losses"]
    assert not torch.equal(first[0].codes, first[1].codes)  # two faces, two latents


def test_preload_reads_the_directions_and_fails_as_the_edit_would(pipe, monkeypatch):
    """``preload`` resolves the edit's directions (their files read now, not at the edit) and raises
    the edit's own error for a direction that is not there."""
    import faceedit.editing as editing
    from faceedit.editing import DirectionError

    seen = []
    resolve = editing.resolve_directions
    monkeypatch.setattr(editing, "resolve_directions", lambda *a, **k: seen.append(a[1]) or resolve(*a, **k))
    pipe.preload({"smile": 2})
    assert seen == [{"smile": 2.0}]
    pipe.preload(["age"])
    assert seen[-1] == {"age": DEFAULT_STRENGTH}
    with pytest.raises(DirectionError, match="frown"):
        pipe.preload({"frown": 1})



def test_cuda_graphs_default_follows_the_device_and_an_explicit_choice_wins(tiny):
    """``cuda_graphs=None`` means on for a CUDA pipeline only; True/False are kept as given."""
    from faceedit.pipeline import Pipeline, _want_graphs

    assert Pipeline(tiny["path"], device="cpu").cuda_graphs is False
    assert [_want_graphs(c, torch.device("cuda")) for c in (None, True, False)] == [True, True, False]
    assert [_want_graphs(c, torch.device("cpu")) for c in (None, True, False)] == [False, True, False]
