"""QuadNet: its crop geometry, the mirror algebra, its training data and loop, its file errors."""

import numpy as np
import pytest

from faceedit.alignment.errors import AlignmentError, ModelFileError
from faceedit.alignment.ffhq import apply_matrix, ffhq_quad, quad_difference
from faceedit.alignment.quadnet import CROP, CROP_SCALE, load_quadnet, mirror_targets, quad_crop


def face_points(rng):
    """Plausible [5, 2] points of a face near (150, 170) in a 300x340 photo."""
    c = np.array([150.0, 170.0]) + rng.normal(0, 10, 2)
    e = rng.uniform(40, 60)
    return c + e * np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.4, 1.1], [0.4, 1.1]]) + rng.normal(0, 1, (5, 2))


def test_quad_crop_maps_the_quad_onto_the_crop_and_samples_where_it_says():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (340, 300, 3), dtype=np.uint8)
    for _ in range(3):
        p5 = face_points(rng)
        crop, M = quad_crop(img, p5)
        quad, _ = ffhq_quad(p5, CROP_SCALE)
        np.testing.assert_allclose(apply_matrix(M, quad), [[0, 0], [0, CROP], [CROP, CROP], [CROP, 0]], atol=1e-6)
        # A bright square in the photo shows up where the matrix puts it.
        probe = img.copy()
        at = p5[0].round().astype(int)
        probe[at[1] - 3:at[1] + 4, at[0] - 3:at[0] + 4] = 255
        diff = quad_crop(probe, p5)[0].astype(int).sum(2) - crop.astype(int).sum(2)
        y, x = np.unravel_index(np.argmax(diff), diff.shape)
        np.testing.assert_allclose([x + 0.5, y + 0.5], apply_matrix(M, at[None] + 0.5)[0], atol=1.5)


def test_quad_crop_outside_the_photo_is_a_clear_error():
    with pytest.raises(AlignmentError, match="outside the photo"):
        quad_crop(np.zeros((50, 50, 3), np.uint8), face_points(np.random.default_rng(0)) + 1000)


def test_mirror_targets_is_an_involution_and_fixes_a_symmetric_face():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, (6, 8))
    np.testing.assert_allclose(mirror_targets(mirror_targets(t)), t)
    sym = np.array([0.3, 0.4, 0.7, 0.4, 0.35, 0.8, 0.65, 0.8])
    np.testing.assert_allclose(mirror_targets(sym), sym)
    assert not np.allclose(mirror_targets(t), t)


def test_quad_difference_measures_a_known_move():
    p = np.array([[40.0, 50.0], [80.0, 50.0], [45.0, 92.0], [75.0, 92.0]])
    _, side = ffhq_quad(p)
    c, r = quad_difference(p, p + [0.01 * side, 0.0])
    assert c == pytest.approx(0.01) and r == pytest.approx(1.0)
    centre = p.mean(0)
    c, r = quad_difference(p, centre + 1.05 * (p - centre))
    assert r == pytest.approx(1.05)


def test_missing_or_corrupt_weights_name_the_fix(tmp_path):
    with pytest.raises(ModelFileError, match="mtcnn5-linear"):
        load_quadnet(str(tmp_path / "none.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ModelFileError, match="reinstall"):
        load_quadnet(str(bad))


def test_training_data_refuses_test_faces():
    from faceedit.training.quadnet import extract_samples

    with pytest.raises(ValueError, match="train-split faces only"):
        extract_samples([{"name": "celeba10k/009001.jpg", "path": "x", "split": "test"}])


def test_training_learns_where_the_points_are_on_synthetic_faces():
    """Dark blobs at random places in grey crops, their positions as targets: a short run must
    put the held-out predictions much closer than the framing's own guess (the calibrated points)."""
    import cv2

    from faceedit.training.quadnet import STORE_SIZE, train_quadnet

    rng = np.random.default_rng(0)
    n = 400
    blobs, targets = [], []
    base = np.array([[34, 44], [60, 44], [37, 72], [59, 72]], np.float64)
    for _ in range(n):
        pts = base + rng.normal(0, 2.5, (4, 2))
        im = np.full((STORE_SIZE, STORE_SIZE), 200, np.uint8)
        for q in pts:
            cv2.circle(im, (int(round(q[0] * 16)), int(round(q[1] * 16))), 40, 30, -1, cv2.LINE_AA, shift=4)
        blobs.append(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].ravel())
        targets.append((pts + 0.5 / 16).ravel())
    samples = {"jpeg": np.concatenate(blobs), "offsets": np.cumsum([0] + [len(b) for b in blobs]),
               "targets": np.array(targets, np.float32), "mtcnn": np.tile(base.ravel(), (n, 1)).astype(np.float32),
               "names": np.array([str(i) for i in range(n)])}
    net, rec = train_quadnet(samples, steps=150, batch=32, lr=3e-3, val_frac=0.2, jitter=0.5, width=8, log_every=0)
    assert rec["val_faces"] > 40
    assert rec["val_l1_quadnet"] < 0.5 * rec["val_l1_mtcnn_calibrated"], rec


def test_shipped_quadnet_brings_mtcnn_quads_closer_to_dlib68_on_test_faces(shared_dir):
    """20 TEST faces (never seen in training): the side of the QuadNet quad is closer to dlib's than the
    calibrated MTCNN quad's for most faces, and its median side error is smaller."""
    from test_alignment_quality import split_files

    from faceedit.alignment import calibrate_mtcnn5, detect_faces, landmarks68_averaged, mtcnn5_refined
    from faceedit.alignment.quadnet import quadnet_points
    from faceedit.core.images import load_image

    lin, qn = [], []
    for path in split_files(shared_dir, 10, "test"):
        img = load_image(path)
        d = max(detect_faces(img, "dlib"), key=lambda x: x.size)
        lm = landmarks68_averaged(img, d.box)  # align's dlib68
        m = min(detect_faces(img, "mtcnn"), key=lambda x: np.hypot(*(np.asarray(x.center) - lm.mean(0))))
        p5 = calibrate_mtcnn5(mtcnn5_refined(img, m.box))
        lin.append(abs(quad_difference(lm, p5)[1] - 1))
        qn.append(abs(quad_difference(lm, quadnet_points(img, p5))[1] - 1))
    lin, qn = np.array(lin), np.array(qn)
    assert np.median(qn) < np.median(lin), (np.median(qn), np.median(lin))
    assert (qn < lin).sum() >= 12, (qn, lin)
