"""`faceedit ui` without a browser: the page's handlers (faceedit.ui.Editor) on the shipped faces64 and a
real photo, the Pipeline pieces they rest on, and the command's safety defaults.

The browser drives the same handlers in tests/test_ui_browser.py.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import faceedit
from faceedit.core.errors import ImageLoadError
from faceedit.alignment.errors import FaceNotFoundError

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def editor():
    from faceedit.ui import Editor, UiSettings

    ed = Editor(UiSettings(model="faces64", steps=3, device="cpu"))
    yield ed
    ed.close()
    assert not ed.root.exists()


@pytest.fixture(scope="module")
def inverted(editor):
    s = editor.new_session()
    faces = editor.open_photo(s, PHOTO)
    res = editor.invert(s, None, "faces64", "w+")
    return s, faces, res


def test_photo_faces_and_inversion(inverted, editor):
    from faceedit.ui import largest_face

    s, faces, res = inverted
    assert s.photo.shape == faceedit.load_image(PHOTO).shape
    assert [f.index for f in faces] == list(range(len(faces))) and len(faces) >= 1
    assert s.selected == [largest_face(faces)]
    m = res[0].metrics
    assert 0 < m["psnr"] < 60 and 0 <= m["identity_similarity"] <= 1 and m["identity_distance"] > 0
    assert res[0].latent.meta["steps"] == 3 and res[0].reconstruction.shape == (64, 64, 3)


def test_slider_moves_never_invert_again(inverted, editor, monkeypatch):
    from faceedit.pipeline import Pipeline

    s, faces, res = inverted
    calls = []
    monkeypatch.setattr(Pipeline, "invert", lambda *a, **k: calls.append(1) or pytest.fail("inverted again"))
    synth = Pipeline.synthesize
    monkeypatch.setattr(Pipeline, "synthesize", lambda self, lat: calls.append("synth") or synth(self, lat))
    again = editor.invert(s, None, "faces64", "w+")                 # cached: the same result object
    assert again[0] is res[0]
    r0 = editor.edit(s, {})
    assert np.array_equal(r0.photo, s.photo)                        # strength 0: the photo as given
    assert np.array_equal(r0.faces[0].crop, res[0].reconstruction)
    calls.clear()
    r1 = editor.edit(s, {"smile": 8.0, "age": 0.0})
    assert calls == ["synth"]                                       # one synthesis per move, no inversion
    diff = np.abs(r1.photo.astype(int) - s.photo.astype(int)).max(axis=2)
    assert diff.max() > 0 and not diff[r1.mask == 0].any()         # changed, and only under the face's mask
    r2 = editor.edit(s, {"smile": 8.0}, hold=["male"], layers="coarse")
    key = list(r2.faces[0].edited.meta["edits"][-1:])
    assert key and key[0]["attribute"] == "smile|male" and key[0]["layers"] == [0, 1, 2, 3], key


def test_sweep_and_downloads(inverted, editor):
    import imageio.v2 as imageio

    from faceedit.ui import SWEEP_FRAMES

    s, faces, res = inverted
    gif = editor.sweep(s, "smile", 6)
    frames = imageio.mimread(gif)
    assert len(frames) == 2 * SWEEP_FRAMES - 2                      # there and back
    assert max(frames[0].shape[:2]) <= 512 and gif.parent.parent == s.folder
    files = editor.save(s, {"smile": 4.0}, hold=["male"])
    photo_out, latent, record = files[0], files[1], files[-1]
    assert faceedit.load_image(photo_out).shape == s.photo.shape
    rec = json.loads(record.read_text())
    assert rec["edits"] == {"smile|male": 4.0} and rec["model_id"].startswith("faces64@")
    assert faceedit.Latent.load(latent).meta["edits"][-1]["attribute"] == "smile|male"
    assert all(p.is_relative_to(s.folder) for p in files)
    s.close()
    assert not s.folder.exists()


def test_user_errors_name_the_file_and_the_editor_goes_on(editor, tmp_path):
    from faceedit.ui import UiError

    s = editor.new_session()
    with pytest.raises(UiError, match="no photo yet"):
        editor.edit(s, {"smile": 1})
    fake = tmp_path / "upload" / "notes.jpg"
    fake.parent.mkdir()
    fake.write_text("not a photo")
    with pytest.raises(ImageLoadError, match=r"^notes\.jpg is not an image") as e:
        editor.open_photo(s, fake)
    assert str(tmp_path) not in str(e.value)                         # the server's path is not shown
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(big)
    small = type(editor)(type(editor.settings)(model="faces64", max_file_bytes=100_000, max_pixels=10_000))
    try:
        with pytest.raises(ImageLoadError, match=r"big\.png is 0 MiB, over the 0 MiB limit"):
            small.open_photo(small.new_session(), big)
        Image.new("RGB", (200, 200)).save(big)
        with pytest.raises(ImageLoadError, match=r"big\.png is 200x200 = 0 MP, over the limit"):
            small.open_photo(small.new_session(), big)
    finally:
        small.close()
    sky = tmp_path / "sky.png"
    Image.new("RGB", (160, 120), (120, 160, 220)).save(sky)
    with pytest.raises(FaceNotFoundError, match=r"^sky\.png: no face"):
        editor.open_photo(s, sky)
    assert s.photo is None
    with pytest.raises(UiError, match="no photo yet"):
        editor.invert(s, 0, "faces64", "w+")
    assert editor.open_photo(s, PHOTO)                                # the same session works again
    with pytest.raises(UiError, match="face 9 does not exist"):
        editor.invert(s, 9, "faces64", "w+")


def test_time_estimates_follow_steps_and_become_measured(inverted, editor):
    est = editor.estimates("faces64", "w+", 3)
    assert set(est) == {"encoder", "hybrid", "optim", "pti"}
    assert est["hybrid"][1] == "measured"                             # the fixture inverted one face with hybrid
    assert all(sec > 0 for sec, _ in est.values())
    longer = editor.estimates("faces64", "w+", 300)
    assert longer["optim"][0] > est["optim"][0] + 1 and longer["pti"][0] > est["pti"][0]
    assert editor.estimates("faces64", "w+", 300)["hybrid"][1] == "estimated"   # measured at 3 steps, not 300


def test_pipeline_reconstructions_skip_a_synthesis(inverted, editor):
    """``Pipeline.edit_photo(reconstructions=...)`` gives the same photo and crop with one synthesis less."""
    s, faces, res = inverted
    pipe = editor._current(s)[0]
    face = [faces[i] for i in s.selected]
    a = pipe.edit_photo(s.photo, {"age": 5}, faces=face, latents=[res[0].latent])
    b = pipe.edit_photo(s.photo, {"age": 5}, faces=face, latents=[res[0].latent],
                        reconstructions=[res[0].reconstruction])
    assert np.array_equal(a.photo, b.photo) and np.array_equal(a.faces[0].crop, b.faces[0].crop)
    assert not np.array_equal(a.photo, s.photo)
    from faceedit.core.errors import PipelineError

    with pytest.raises(PipelineError, match="2 reconstructions for 1 latents"):
        pipe.edit_photo(s.photo, {"age": 5}, faces=face, latents=[res[0].latent],
                        reconstructions=[res[0].reconstruction] * 2)


def test_pipeline_direction_holds_attributes(editor):
    """Shipped conditional directions are used as they are; others are projected off the held ones."""
    from faceedit.editing import find_direction

    pipe, _ = editor._pipeline("faces64", "w+", None)
    shipped = pipe.direction("smile", ["male"])
    assert shipped is not None and shipped.key == "smile|male"
    assert torch.equal(shipped.vector, find_direction(pipe.model_id, "smile|male", "w+").vector)
    made = pipe.direction("smile", ["eyeglasses", "yaw", "smile"])   # no such file: made here
    assert made.conditions == ("eyeglasses", "yaw")
    v = made.vector.double().flatten()
    for h in ("eyeglasses", "yaw"):
        assert abs(float(v @ pipe.direction(h).vector.double().flatten())) < 1e-5
    assert float(v @ pipe.direction("smile").vector.double().flatten()) > 0.5
    # made the same way as the shipped one, it matches it: same vector, strength scale within 3%
    pool = [d for d in [find_direction(pipe.model_id, k, "w+") for k in ("smile", "male")]]
    again = type(pipe)(pipe.model, space="w+", directions=pool).direction("smile", ["male"])
    assert float(again.vector.double().flatten() @ shipped.vector.double().flatten()) > 0.9999
    assert abs(again.latent_std / shipped.latent_std - 1) < 0.03


def test_pipeline_identity_metric(inverted, editor):
    from faceedit.metrics.identity import IdentityEncoder

    s, faces, res = inverted
    pipe = editor._current(s)[0]
    enc = IdentityEncoder(recipe_scale=pipe.recipe.scale)
    d = enc.distance(res[0].target[None], res[0].reconstruction[None])[0]
    assert res[0].metrics["identity_distance"] == pytest.approx(d, abs=1e-6)
    plain = pipe.invert_faces([faces[s.selected[0]]])
    assert "identity_distance" not in plain.metrics[0]


def test_safety_helpers_and_the_command(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from faceedit.cli import cli
    from faceedit.ui import example_photos, face_boxes, is_loopback, preview

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    big = np.zeros((3000, 1500, 3), np.uint8)
    view, scale = preview(big)
    assert view.shape == (1024, 512, 3) and scale == pytest.approx(1024 / 3000)
    assert PHOTO in example_photos()

    class F:
        quad = np.array([[10.2, 20.0], [12.0, 80.0], [70.0, 78.0], [68.0, 18.5]])
        index = 3

    assert face_boxes([F()], 0.5) == [((5, 9, 35, 40), "face 3")]
    seen = {}

    class FakeServer:
        url = "http://localhost:1234/"

        def block(self):
            seen["blocked"] = True

    def fake_serve(settings, host, port):
        seen.update(settings=settings, host=host, port=port)
        return FakeServer()

    monkeypatch.setattr("faceedit.ui.serve", fake_serve)
    r = CliRunner().invoke(cli, ["ui", "--port", "1234", "--max-file-mb", "2", "--max-pixels", "1000000"])
    assert r.exit_code == 0, r.output
    assert "http://localhost:1234/" in r.output and seen["blocked"] and seen["host"] == "127.0.0.1"
    assert seen["settings"].max_file_bytes == 2 * 2**20 and seen["settings"].max_pixels == 1_000_000
    assert CliRunner().invoke(cli, ["ui", "--port", "0"]).exit_code == 2


def test_one_photos_inversion_does_not_hold_back_anothers_slider(inverted, editor):
    """Editor holds no lock across sessions (only PTI's generator copy has one): an edit of session B
    finishes while session A's long inversion runs."""
    import threading
    import time

    s, faces, res = inverted
    other = editor.new_session()
    editor.open_photo(other, PHOTO)
    state = {}

    class Stop(Exception):
        pass

    def on_step(fraction, desc):
        if "step" in desc:
            state.setdefault("t0", time.perf_counter())
        if state.get("stop"):
            raise Stop  # the rest of the 400 steps is not needed

    def long_inversion():
        try:
            editor.invert(other, None, "faces64", "w+", "optim", progress=on_step)
            state["t1"] = time.perf_counter()
        except Stop:
            pass

    steps, editor.settings.steps = editor.settings.steps, 400
    t = threading.Thread(target=long_inversion)
    t.start()
    try:
        while "t0" not in state and t.is_alive():
            time.sleep(0.01)
        assert "t0" in state, "the inversion did not start"
        time.sleep(0.3)
        t_edit = time.perf_counter()
        editor.edit(s, {"smile": 3.0})
        t_edit = time.perf_counter() - t_edit
        assert "t1" not in state, "the inversion ended before the edit could be checked against it"
        assert t_edit < 2.0, t_edit
    finally:
        state["stop"] = True
        t.join()
        editor.settings.steps = steps
