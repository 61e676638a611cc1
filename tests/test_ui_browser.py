"""`faceedit ui` end to end: the real server in a subprocess, driven by headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``) run under Selenium;
nothing is downloaded. Screenshots of each state are written to a temporary folder (or to
``$FACEEDIT_UI_SCREENSHOTS``), whose path is printed. The browser helpers are those of
``bench/scripts/ui_latency.py``, which measures the slider latency with them.
"""
import importlib.util
import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "astronaut.jpg"
MAX_FILE_MB = 1


def _helpers():
    spec = importlib.util.spec_from_file_location("ui_latency", REPO / "bench" / "scripts" / "ui_latency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


U = _helpers()


def _missing() -> str:
    for mod in ("gradio", "selenium"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install -e '.[test]')"
    for exe in (U.CHROMIUM, U.CHROMEDRIVER):
        if not Path(exe).is_file():
            return f"{exe} is missing (apt-get install chromium chromium-driver)"
    return ""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {why}; .ci/run installs it")
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ui")
    shots = Path(os.environ.get("FACEEDIT_UI_SCREENSHOTS") or work / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nfaceedit ui screenshots: {shots}")
    tmp = work / "tmp"
    tmp.mkdir()
    port = U.free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "server.log", "wb")
    proc = U.start_server(port, "--model", "faces64", "--steps", "5", "--max-file-mb", str(MAX_FILE_MB),
                          env={"FACEEDIT_HOME": str(work / "home"), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"},
                          log=log)
    driver = None
    try:
        U.wait_ready(url, proc)
        downloads = work / "downloads"
        downloads.mkdir()
        driver = U.chrome(downloads)
        page = U.Page(driver, url)
        page.open()
        yield {"page": page, "url": url, "shots": shots, "downloads": downloads, "work": work, "tmp": tmp,
               "proc": proc}
    finally:
        if driver is not None:
            driver.quit()
        code = U.stop_server(proc)
        log.close()
    assert code in (0, 1, 130), (code, (work / "server.log").read_text()[-3000:])
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("faceedit-ui-"))
    assert not left, f"the server left its temporary folder behind: {left}"


def test_edit_a_photo_in_the_browser(served):
    import faceedit

    page, shots = served["page"], served["shots"]
    page.upload(PHOTO)
    status = page.wait_status("inverted", "Error", timeout=120)
    assert "inverted" in status, status
    page.wait(lambda: page.img_src("fe-edited") and page.img_src("fe-crop"), 30, "the first edit")
    faces = [e.text for e in page.d.find_elements("css selector", "#fe-face label")]
    assert faces == ["face 0"], faces                              # her face; the mission patch (0.16) is not one
    assert "PSNR" in page.text("fe-quality") and "identity" in page.text("fe-quality")
    assert "here" in page.text("fe-method")                        # the measured time of the method used
    page.screenshot(shots / "1_inverted.png")

    before = page.img_src("fe-edited")
    page.move_slider("smile", 0.9)
    page.wait(lambda: page.img_src("fe-edited") != before, 30, "the edited photo")
    smile = page.slider_value("smile")
    assert smile > 5, smile
    page.screenshot(shots / "2_smile.png")

    page.click("fe-save")
    page.wait(lambda: len(page.download_links()) >= 3, 30, "the download links")
    names = sorted(page.download_links())
    assert any(n.endswith(".latent.safetensors") for n in names) and any(n.endswith(".json") for n in names), names
    got = page.download("_edit.png", served["downloads"])
    rec = json.loads(page.download("_edit.json", served["downloads"]).read_text())
    lat = faceedit.Latent.load(page.download(".latent.safetensors", served["downloads"]))
    page.screenshot(shots / "3_downloads.png")

    edited, photo = faceedit.load_image(got), faceedit.load_image(PHOTO)
    assert edited.shape == photo.shape
    assert rec["edits"] == {"smile": smile}
    assert lat.model_id.startswith("faces64@")
    import cv2

    from faceedit.alignment.paste import face_polygon

    # the face region: the hull of the face's landmarks, found again here (the paste-back's mask)
    rec_face = rec["faces"][0]["alignment"]
    found = faceedit.align(photo, recipe=faceedit.AlignmentRecipe.from_dict(rec_face["recipe"]), face="all")
    face = [f for f in found if np.allclose(f.quad, rec_face["quad"], atol=0.5)]
    assert len(face) == 1, [f.quad for f in found]
    inside = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(face_polygon(face[0])).astype(np.int32)], 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8))           # rounding of the polygon's edge
    changed = np.abs(edited.astype(int) - photo.astype(int)).max(axis=2) > 0
    assert changed.sum() > 0.05 * inside.sum(), changed.sum()      # the face did change
    assert not changed[inside == 0].any(), int(changed[inside == 0].sum())   # and nothing outside it


def test_errors_show_in_the_page_and_the_app_goes_on(served, tmp_path):
    from PIL import Image

    page, shots = served["page"], served["shots"]
    blank = tmp_path / "sky.png"
    yy, xx = np.mgrid[0:240, 0:320]
    Image.fromarray(np.dstack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 200)]).astype(np.uint8)).save(blank)
    page.upload(blank)
    status = page.wait_status("FaceNotFoundError", timeout=60)
    assert "sky.png" in status and str(served["tmp"]) not in status, status
    page.screenshot(shots / "4_no_face.png")

    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo\n" * 20)
    page.upload(fake)
    status = page.wait_status("ImageLoadError", timeout=30)
    assert "notes.jpg" in status and "not an image" in status, status

    huge = tmp_path / "huge.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(huge)
    assert huge.stat().st_size > MAX_FILE_MB * 2**20
    page.upload(huge)
    status = page.wait_status(f"over the {MAX_FILE_MB} MiB limit", timeout=30)
    assert "huge.png" in status and "ImageLoadError" in status, status
    page.screenshot(shots / "5_too_large.png")

    page.upload(PHOTO)                                              # the app still works
    assert "inverted" in page.wait_status("inverted", timeout=60)


def test_the_client_cannot_name_a_server_file(served, tmp_path):
    secret = served["tmp"] / "secret.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(secret)
    body = json.dumps({"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "faces64", "w+", None]})
    req = urllib.request.Request(served["url"] + "gradio_api/call/open_photo", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(served["url"] + f"gradio_api/call/open_photo/{event}", timeout=60) as r:
        stream = r.read().decode()
    assert "event: error" in stream, stream
    assert "secret" not in stream.replace(str(secret), "")          # nothing of the file came back
