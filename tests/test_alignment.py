"""Tests of faceedit.alignment: detectors, landmarks, the FFHQ recipe and its matrix."""
import glob
import json
import os

import numpy as np
import pytest

from faceedit.alignment import (FACES64, FFHQ, AlignmentError, AlignmentRecipe, FaceNotFoundError, FaceTooSmallError,
                                ModelFileError, align, align_landmarks, align_photo, default_upsample, detect_faces,
                                ffhq_quad, landmarks68, model_file)
from faceedit.alignment.ffhq import apply_matrix
from faceedit.core.images import load_image


def photo(shared_dir, name):
    return load_image(os.path.join(shared_dir, "datasets", "photos", name))


def psnr(a, b):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * np.log10(255.0 ** 2 / max(np.mean(d ** 2), 1e-12))


def synthetic_landmarks68(el, er, ml, mr):
    """68 points whose eye contours average to el/er and whose mouth corners are ml/mr."""
    lm = np.zeros((68, 2))
    ring = np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]], float)
    lm[36:42] = np.asarray(el) + ring
    lm[42:48] = np.asarray(er) + ring
    lm[48], lm[54] = ml, mr
    lm[49:54] = np.linspace(ml, mr, 7)[1:-1] + [0, -2]
    lm[55:60] = np.linspace(mr, ml, 7)[1:-1] + [0, 2]
    lm[0:17] = np.linspace(np.asarray(el) + [-15, 0], np.asarray(er) + [15, 0], 17) + [0, 30]
    lm[17:36] = np.asarray(el) + [10, -8]
    return lm


# --- the recipe's geometry (golden values worked out by hand) ---------------------------------

def test_quad_golden():
    lm = synthetic_landmarks68((40, 50), (60, 50), (42, 70), (58, 70))
    quad, qsize = ffhq_quad(lm)
    # eye_to_eye (20, 0), eye_to_mouth (0, 20): x = (40, 0) scaled to max(2*20, 1.8*20) = 40,
    # centre (50, 50) + 0.1 * (0, 20) = (50, 52).
    np.testing.assert_allclose(quad, [[10, 12], [10, 92], [90, 92], [90, 12]], atol=1e-9)
    assert qsize == pytest.approx(80)
    q2, s2 = ffhq_quad(lm, scale=0.6)
    np.testing.assert_allclose(q2.mean(0), [50, 52])
    assert s2 == pytest.approx(48)


def test_quad_rotates_with_face():
    lm = synthetic_landmarks68((40, 50), (60, 50), (42, 70), (58, 70))
    th = np.deg2rad(30)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    quad, _ = ffhq_quad(lm)
    quad_r, _ = ffhq_quad(lm @ R.T)
    np.testing.assert_allclose(quad_r, quad @ R.T, atol=1e-9)


def test_mouth_distance_sets_scale_when_larger():
    # eye_to_mouth 40 > eye_to_eye 20: size = 1.8 * 40 = 72 per half side.
    lm = synthetic_landmarks68((40, 50), (60, 50), (42, 90), (58, 90))
    _, qsize = ffhq_quad(lm)
    assert qsize == pytest.approx(2 * 1.8 * 40)


def test_matrix_maps_quad_to_crop_corners():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    lm = synthetic_landmarks68((110, 120), (150, 128), (112, 170), (146, 176))
    for recipe in (FACES64, FFHQ.with_size(128), AlignmentRecipe(size=96, scale=0.8, supersample=2,
                                                                 pad_mode="constant")):
        f = align_landmarks(img, lm, recipe)
        s = recipe.size
        np.testing.assert_allclose(apply_matrix(f.matrix, f.quad), [[0, 0], [0, s], [s, s], [s, 0]], atol=1e-6)
        assert f.crop.shape == (s, s, 3) and f.crop.dtype == np.uint8
        assert f.source_size == (260, 300)


def test_crop_samples_photo_where_matrix_says():
    """Inside the photo, crop pixel = photo at the inverse-mapped point (smooth image, big face)."""
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float64)
    img = np.stack([127 + 100 * np.sin(xx / 23.0), 127 + 100 * np.cos(yy / 31.0),
                    127 + 100 * np.sin((xx + yy) / 41.0)], -1).round().astype(np.uint8)
    lm = synthetic_landmarks68((170, 180), (230, 186), (176, 240), (226, 244))
    f = align_landmarks(img, lm, AlignmentRecipe(size=64, scale=0.8))
    inv = np.linalg.inv(f.matrix)
    g = np.stack(np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5), -1).reshape(-1, 2)
    p = apply_matrix(inv, g) - 0.5  # pixel-centre coordinates
    x0, y0 = np.floor(p[:, 0]).astype(int), np.floor(p[:, 1]).astype(int)
    ax, ay = (p[:, 0] - x0)[:, None], (p[:, 1] - y0)[:, None]
    im = img.astype(np.float64)
    ref = (im[y0, x0] * (1 - ax) * (1 - ay) + im[y0, x0 + 1] * ax * (1 - ay)
           + im[y0 + 1, x0] * (1 - ax) * ay + im[y0 + 1, x0 + 1] * ax * ay)
    assert np.abs(f.crop.reshape(-1, 3) - ref).max() < 4  # area filter over 4x4 subsamples of a smooth image


def _reference_ffhq_pil(img, lm, size, scale=1.0):
    """The published FFHQ procedure, written independently with PIL + scipy (the test's reference)."""
    import PIL.Image
    import scipy.ndimage

    quad, qsize = ffhq_quad(lm - 0.5, scale)  # the script works in pixel-centre coordinates
    pil = PIL.Image.fromarray(img)
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        pil = pil.resize((int(round(pil.size[0] / shrink)), int(round(pil.size[1] / shrink))), PIL.Image.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    box = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, pil.size[0]), min(hi[1] + border,
                                                                                                 pil.size[1]))
    if box[2] - box[0] < pil.size[0] or box[3] - box[1] < pil.size[1]:
        pil = pil.crop(box)
        quad = quad - box[:2]
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - pil.size[0] + border, 0),
                    max(hi[1] - pil.size[1] + border, 0)])
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        a = np.pad(np.float32(pil), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        m = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                       1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        a += (scipy.ndimage.gaussian_filter(a, [qsize * 0.02, qsize * 0.02, 0]) - a) * np.clip(m * 3 + 1, 0, 1)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(m, 0, 1)
        pil = PIL.Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)))
        quad = quad + pad[:2]
    pil = pil.transform((4 * size, 4 * size), PIL.Image.QUAD, (quad + 0.5).flatten(), PIL.Image.BILINEAR)
    return np.asarray(pil.resize((size, size), PIL.Image.LANCZOS))


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("name,size,scale", [("face_recognition__two_people.jpg", 128, 1.0),
                                             ("facenet__angelina_jolie_1.jpg", 64, 0.6)])
def test_parity_with_pil_reference(shared_dir, name, size, scale, path):
    img = photo(shared_dir, name)
    d = detect_faces(img)[0]
    lm = landmarks68(img, d.box)
    ours = align_landmarks(img, lm, AlignmentRecipe(size=size, scale=scale), path=path).crop
    ref = _reference_ffhq_pil(img, lm, size, scale)
    assert psnr(ours, ref) > 30, psnr(ours, ref)


def test_reflect_padding_used_for_tight_chips(shared_dir):
    """A UTKFace chip is smaller than its FFHQ quad: the border must be padded (no black corners)."""
    p = sorted(glob.glob(os.path.join(shared_dir, "datasets", "utkface", "*.jpg")))[1]
    f = align(load_image(p), face="largest")[0]
    corners = f.crop[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert corners.sum(1).min() > 30  # filled with the blurred reflection / median, not black


# --- detection and the many-faces policy -------------------------------------------------------

def test_model_file():
    assert os.path.isfile(model_file("shape_predictor_68_face_landmarks.dat"))
    assert model_file("dlib_face_recognition_resnet_model_v1") .endswith(".dat")
    with pytest.raises(ModelFileError, match="known"):
        model_file("no_such_model.dat")


def test_shipped_hog_detector_is_dlibs_own(tmp_path, shared_dir):
    """The HOG detector read from the shipped file (fast) is the one compiled into dlib (the
    reference): its serialisation byte for byte, and the same faces and scores on photos."""
    import dlib

    from faceedit.alignment import models

    ref = dlib.get_frontal_face_detector()
    ref.save(str(tmp_path / "ref.svm"))
    with open(models.HOG_DETECTOR_FILE, "rb") as f:
        assert f.read() == (tmp_path / "ref.svm").read_bytes()
    fast = models.hog_detector()
    astronaut = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "astronaut.jpg")
    for img in (load_image(astronaut), photo(shared_dir, "facenet__multiface.jpg")):
        a, b = ref.run(img, 1, 0.0), fast.run(img, 1, 0.0)
        assert len(a[0]) >= 1 and list(a[0]) == list(b[0]) and a[1] == b[1]


def test_default_upsample_by_size():
    assert default_upsample(109, 89) == 1      # CelebA
    assert default_upsample(200, 200) == 0     # UTKFace
    assert default_upsample(630, 1200) == 1    # a group photo
    assert default_upsample(3000, 4000) == 0   # a 12 MP photo (detected on a 2.5 MP copy)


def test_coarse_detection_matches_the_full_search(shared_dir):
    """The coarse first pass (HOG on a 0.5 MP copy, the default) against the full search
    (coarse=False, the reference): on 2 MP photos the same faces, boxes within a few percent and
    FFHQ quads (landmarks on the full photo) that agree; the pass runs only on large photos."""
    from faceedit.alignment.detect import COARSE_DETECT_PIXELS
    from faceedit.alignment.ffhq import quad_difference, quads_agree

    img = photo(shared_dir, "face_recognition__knn_examples_obama1.jpg")  # 1480x832
    assert img.shape[0] * img.shape[1] > COARSE_DETECT_PIXELS
    fast, ref = align_photo(img, face="largest"), align_photo(img, face="largest", coarse=False)
    (a,), (b,) = fast.detections, ref.detections
    assert (a.upsample, b.upsample, b.scale) == (0, 1, 1.0) and f"on a {a.scale:.2f}x copy" in fast.tried[0]
    assert a.scale == pytest.approx(np.sqrt(COARSE_DETECT_PIXELS / (1480 * 832)), rel=1e-3)
    # HOG's boxes move and grow with its pyramid level; the landmarks from them agree
    assert np.hypot(*np.subtract(a.center, b.center)) < 0.1 * b.size and abs(a.size / b.size - 1) < 0.2
    assert quads_agree([quad_difference(ref.faces[0].landmarks, fast.faces[0].landmarks)]).all()
    small = photo(shared_dir, "face_recognition__two_people.jpg")  # 0.74 MP: coarse; the faces are large
    assert len(detect_faces(small)) == 2
    chip = load_image(os.path.join(shared_dir, "datasets", "utkface", sorted(os.listdir(
        os.path.join(shared_dir, "datasets", "utkface")))[1]))
    assert [d.box for d in detect_faces(chip)] == [d.box for d in detect_faces(chip, coarse=False)]  # below: as before


def test_faces_too_small_for_the_coarse_pass_are_found_by_the_full_search(shared_dir):
    """Six 90 px faces in a 4.3 MP canvas are 31 px in the coarse copy: that pass finds none, the
    full search that follows finds all six (on the 2.5 MP view)."""
    from faceedit.alignment.detect import COARSE_DETECT_PIXELS, _detection_view, _dlib_run

    group = photo(shared_dir, "facenet__multiface.jpg")  # 1200x630, six faces of about 90 px
    canvas = np.full((1800, 2400, 3), 127, np.uint8)
    canvas[600:1230, 600:1800] = group
    assert _dlib_run(_detection_view(canvas, COARSE_DETECT_PIXELS)[0], "dlib", 0) == []
    dets = detect_faces(canvas)
    assert len(dets) == 6
    want = detect_faces(group)
    np.testing.assert_allclose(sorted(d.center[0] - 600 for d in dets), sorted(d.center[0] for d in want),
                               atol=0.15 * 90)


def test_background_aligner_gives_align_photos_faces_and_errors(shared_dir, tmp_path):
    """BackgroundAligner (a worker process) against align_photo here: the same photo array, the
    same faces bit for bit, and the same error class and message for a photo without a face."""
    from faceedit.alignment.background import BackgroundAligner
    from faceedit.core.images import save_image

    two = os.path.join(shared_dir, "datasets", "photos", "face_recognition__two_people.jpg")
    grass = str(tmp_path / "grey.png")
    save_image(grass, np.full((120, 160, 3), 90, np.uint8))
    with BackgroundAligner() as bg:
        a = bg.submit(two, recipe=FACES64, face="all", try_rotations=True)
        b = bg.submit(grass, recipe=FACES64)
        photo, report, times = a.result()
        with pytest.raises(FaceNotFoundError) as err:
            b.result()
    assert np.array_equal(photo, load_image(two)) and set(times) == {"read", "align"}
    ref = align_photo(load_image(two), recipe=FACES64, face="all", try_rotations=True)
    assert len(report.faces) == len(ref.faces) == 2 and report.tried == ref.tried
    for f, g in zip(report.faces, ref.faces):
        assert np.array_equal(f.crop, g.crop) and np.array_equal(f.matrix, g.matrix)
        assert np.array_equal(f.landmarks, g.landmarks) and f.index == g.index
    with pytest.raises(FaceNotFoundError) as here:
        align_photo(load_image(grass), recipe=FACES64)
    assert str(err.value) == str(here.value)


def test_two_faces_left_to_right(shared_dir):
    img = photo(shared_dir, "face_recognition__two_people.jpg")
    dets = detect_faces(img)
    assert len(dets) == 2
    assert dets[0].center[0] < dets[1].center[0]
    faces = align(img)
    assert [f.index for f in faces] == [0, 1]
    assert faces[0].quad.mean(0)[0] < faces[1].quad.mean(0)[0]
    one = align(img, face=1)
    assert len(one) == 1 and one[0].index == 1
    np.testing.assert_allclose(one[0].matrix, faces[1].matrix)
    big = align(img, face="largest")[0]
    assert big.index == int(np.argmax([d.size for d in dets]))
    with pytest.raises(FaceNotFoundError, match="has 2 face"):
        align(img, face=2)


def test_no_face_is_a_clear_error(shared_dir):
    img = photo(shared_dir, "face_alignment__grass.jpg")
    with pytest.raises(FaceNotFoundError) as e:
        align(img)
    msg = str(e.value)
    assert "tried dlib at upsample" in msg and "try --detector" in msg
    assert isinstance(e.value, AlignmentError) and isinstance(e.value, ValueError)


def test_small_faces_reported_not_aligned(shared_dir):
    img = photo(shared_dir, "face_recognition__two_people.jpg")
    rep = align_photo(img, min_face=170)
    assert len(rep.faces) == 1 and len(rep.skipped) == 1
    for s in rep.skipped:
        assert s.size < 170 and "minimum face size" in s.reason
    with pytest.raises(FaceTooSmallError, match="--min-face"):
        align(img, min_face=10_000)


def test_bad_arguments():
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(AlignmentError, match="unknown detector"):
        align(img, detector="hog")
    with pytest.raises(AlignmentError, match="face must be"):
        align(img, face="biggest")
    with pytest.raises(AlignmentError, match="uint8"):
        align(img.astype(np.float32))
    with pytest.raises(AlignmentError, match=r"\[68, 2\]"):
        align_landmarks(img, np.zeros((10, 2)))


def test_celeba_and_utkface_defaults_find_faces(shared_dir):
    d = os.path.join(shared_dir, "datasets")
    celeba = [load_image(os.path.join(d, "celeba10k", f"{i:06d}.jpg")) for i in (1, 2, 5, 6)]
    utk = [load_image(p) for p in sorted(glob.glob(os.path.join(d, "utkface", "*.jpg")))[1:5]]
    for img in celeba + utk:
        f = align(img, face="largest")[0]
        assert f.crop.shape == (64, 64, 3)


def test_try_rotations_maps_back_to_the_photo(shared_dir):
    up = photo(shared_dir, "face_recognition__obama.jpg")
    rot = np.ascontiguousarray(np.rot90(up, 1))  # turned 90 degrees counter-clockwise
    with pytest.raises(FaceNotFoundError, match="--try-rotations"):
        align(rot, face="largest")
    rep = align_photo(rot, face="largest", try_rotations=True)
    assert rep.rotation == 270  # turning the photo back finds the face
    f_rot, f_up = rep.faces[0], align(up, face="largest")[0]
    assert psnr(f_rot.crop, f_up.crop) > 25
    # The matrix refers to the photo as given: its quad maps to the crop's corners.
    np.testing.assert_allclose(apply_matrix(f_rot.matrix, f_rot.quad), [[0, 0], [0, 64], [64, 64], [64, 0]], atol=1e-6)


def test_mtcnn_five_points(shared_dir):
    img = photo(shared_dir, "face_recognition__two_people.jpg")
    dets = detect_faces(img, "mtcnn")
    assert len(dets) == 2 and all(d.landmarks5.shape == (5, 2) for d in dets)
    fm = align(img, detector="mtcnn")
    fd = align(img)
    for a, b in zip(fm, fd):
        assert a.landmarks.shape == (5, 2)
        side = np.hypot(*(b.quad[1] - b.quad[0]))
        assert np.hypot(*(a.quad.mean(0) - b.quad.mean(0))) < 0.05 * side


def test_landmarks_redetected_on_crop_land_on_template(shared_dir):
    """Aligning twice is idempotent: landmarks found on a crop give back (nearly) the identity quad."""
    img = photo(shared_dir, "facenet__angelina_jolie_1.jpg")
    f = align(img, recipe=FFHQ.with_size(256), face="largest")[0]
    f2 = align(f.crop, recipe=FFHQ.with_size(256), face="largest")[0]
    np.testing.assert_allclose(f2.quad, [[0, 0], [0, 256], [256, 256], [256, 0]], atol=0.03 * 256)


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_align_files_folder_resume_and_failures(shared_dir, tmp_path):
    from click.testing import CliRunner

    from faceedit.alignment import face_from_dict, paste_back
    from faceedit.cli import cli

    photos = os.path.join(shared_dir, "datasets", "photos")
    src = tmp_path / "in"
    src.mkdir()
    for n in ("face_recognition__two_people.jpg", "face_alignment__grass.jpg"):
        os.symlink(os.path.join(photos, n), src / n)
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["align", str(src), "--out", str(out), "--workers", "1"])
    assert r.exit_code == 1, r.output  # the batch goes on past bad photos, and the exit code says some failed
    assert "aligned 2 face(s) from 1 photo(s)" in r.output and "2 failed" in r.output
    assert "2 of 3 photo(s) failed" in r.output
    rec = json.loads((out / "face_recognition__two_people.json").read_text())
    assert [f["index"] for f in rec["faces"]] == [0,
                                                  1] and rec["faces"][0]["file"] == "face_recognition__two_people_0.png"
    assert "FaceNotFoundError" in json.loads((out / "face_alignment__grass.json").read_text())["error"]
    assert "ImageLoadError" in json.loads((out / "broken.json").read_text())["error"]
    # The JSON is enough to paste a crop back: the unedited crop reproduces the photo in the face.
    img = load_image(src / "face_recognition__two_people.jpg")
    crop = load_image(out / "face_recognition__two_people_1.png")
    face = face_from_dict(rec["faces"][1], crop)
    pasted, m = paste_back(img, face, crop, return_mask=True)
    assert psnr(pasted[m > 0.999], img[m > 0.999]) > 27
    # Resume: what was done is skipped; the failed photos are listed again (tried with --retry-failed).
    r2 = CliRunner().invoke(cli, ["align", str(src), "--out", str(out)])
    assert r2.exit_code == 1 and "1 already done" in r2.output and "2 failed" in r2.output
    # One photo with no face, alone: the job fails with exit code 1 and a one-line reason.
    r3 = CliRunner().invoke(cli, ["align", str(src / "face_alignment__grass.jpg"), "--out", str(tmp_path / "o3")])
    assert r3.exit_code == 1 and "FaceNotFoundError" in r3.output
    r4 = CliRunner().invoke(cli, ["align", str(src), "--out", str(out), "--face", "biggest"])
    assert r4.exit_code == 2
    assert rec["landmarks"] == "dlib68"
    # --landmarks: one pass records its kind; a kind of the other detector is refused before any photo is read.
    one = src / "face_recognition__two_people.jpg"
    r5 = CliRunner().invoke(cli, ["align", str(one), "--out", str(tmp_path / "o5"), "--landmarks", "dlib68-single"])
    rec5 = json.loads((tmp_path / "o5" / "face_recognition__two_people.json").read_text())
    assert r5.exit_code == 0 and rec5["landmarks"] == "dlib68-single"
    assert rec5["faces"][1]["landmarks"] != rec["faces"][1]["landmarks"]
    r6 = CliRunner().invoke(cli, ["align", str(one), "--out", str(tmp_path / "o6"), "--landmarks", "mtcnn5"])
    assert r6.exit_code == 2 and "--detector mtcnn" in r6.output and not (tmp_path / "o6").exists()


def test_every_no_face_photo_gives_face_not_found(shared_dir):
    """The photos a person counted 0 faces in (tests/data/photo_face_counts.json) end in a clear error."""
    here = os.path.dirname(os.path.abspath(__file__))
    counts = json.load(open(os.path.join(here, "data", "photo_face_counts.json")))["counts"]
    empty = [n for n, c in counts.items() if c == 0]
    assert len(empty) == 7 and len(counts) == 95
    for n in empty:
        with pytest.raises(FaceNotFoundError, match="tried dlib"):
            align(photo(shared_dir, n))


def test_landmark_kind_defaults_per_detector_and_refuses_the_other_family():
    from faceedit.alignment.align import landmark_kind

    assert [landmark_kind(d) for d in ("dlib", "dlib-cnn", "mtcnn")] == ["dlib68", "dlib68", "mtcnn5"]
    assert landmark_kind("dlib", "dlib68-single") == "dlib68-single"
    assert landmark_kind("mtcnn", "mtcnn5-raw") == "mtcnn5-raw"
    with pytest.raises(AlignmentError, match="--detector mtcnn"):
        landmark_kind("dlib", "mtcnn5-linear")
    with pytest.raises(AlignmentError, match="--detector dlib"):
        landmark_kind("mtcnn", "dlib68")
    with pytest.raises(AlignmentError, match="choose one of"):
        landmark_kind("dlib", "dlib5")
    with pytest.raises(AlignmentError, match="unknown detector"):
        landmark_kind("haar")


def test_mtcnn_detections_below_its_default_cut_are_named_not_a_crash(monkeypatch):
    """MTCNN drops detections under its own 0.95 when no --min-score is given; a photo whose only
    detections were dropped so says which cut applied (it formatted None before)."""
    import importlib

    from faceedit.alignment.detect import Detection

    align_mod = importlib.import_module("faceedit.alignment.align")  # the package's `align` is the function

    def fake_detect(image, detector, upsample, *, min_score=None, coarse=True, dropped=None, device=None, path="fast"):
        assert min_score is None and detector == "mtcnn"
        dropped.append(Detection((10.0, 10.0, 60.0, 60.0), 0.81, None, "mtcnn", None))
        return []

    monkeypatch.setattr(align_mod, "detect_faces", fake_detect)
    with pytest.raises(FaceNotFoundError, match=r"scoring 0\.95 or more: 1 detection\(s\) scored 0\.81"):
        align_mod.align_photo(np.full((96, 96, 3), 127, np.uint8), detector="mtcnn")
