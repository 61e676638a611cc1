"""MTCNN on a 1024 px copy first (``coarse``, the default) against the reference search on the
2.5 MP view, the landmarks refined on the photo itself either way; and the device argument."""
import os

import numpy as np
import pytest

from faceedit.alignment import align_photo, detect_faces
from faceedit.alignment import detect as detect_mod
from faceedit.alignment.detect import MTCNN_COARSE_LONG_SIDE
from faceedit.alignment.ffhq import quad_difference, quads_agree
from faceedit.core.images import load_image

pytest.importorskip("facenet_pytorch")


def test_mtcnn_coarse_copy_gives_the_reference_quads(shared_dir):
    img = load_image(os.path.join(shared_dir, "datasets", "photos", "face_recognition__knn_examples_obama1.jpg"))
    assert max(img.shape[:2]) == 1480 > MTCNN_COARSE_LONG_SIDE
    fast = align_photo(img, detector="mtcnn", face="largest")
    ref = align_photo(img, detector="mtcnn", face="largest", coarse=False)
    (a,), (b,) = fast.detections, ref.detections
    assert a.scale == pytest.approx(MTCNN_COARSE_LONG_SIDE / 1480, rel=1e-3) and b.scale == 1.0
    assert np.hypot(*np.subtract(a.center, b.center)) < 0.05 * b.size and abs(a.size / b.size - 1) < 0.1
    # the landmarks are refined on the photo from either box: the quads agree, the points within 1.5% of the face
    assert quads_agree([quad_difference(ref.faces[0].landmarks, fast.faces[0].landmarks)]).all()
    assert np.abs(fast.faces[0].landmarks - ref.faces[0].landmarks).max() < 0.015 * b.size
    on_cpu = align_photo(img, detector="mtcnn", face="largest", device="cpu")  # the device named: the same numbers
    np.testing.assert_array_equal(on_cpu.faces[0].quad, fast.faces[0].quad)


def test_mtcnn_full_view_searched_when_the_copy_keeps_no_face(monkeypatch):
    calls = []

    def run(view, s, device, keep):  # s: the copy's scales (x, y)
        calls.append((view.shape[:2], round(s[0], 4), device))
        return [] if len(calls) == 1 else keep([detect_mod.Detection((10.0, 10.0, 60.0, 60.0), 0.99, None,
                                                                     "mtcnn", None, s[0])])

    monkeypatch.setattr(detect_mod, "_mtcnn_run", run)
    img = np.zeros((1000, 2000, 3), np.uint8)
    dets = detect_faces(img, "mtcnn", device="cuda:1")
    assert [c[0] for c in calls] == [(512, 1024), (1000, 2000)] and calls[0][1] == 0.512 and calls[1][1] == 1.0
    assert all(c[2] == "cuda:1" for c in calls) and len(dets) == 1 and dets[0].scale == 1.0
    calls.clear()
    detect_faces(img, "mtcnn", coarse=False)  # the reference: the full view alone
    assert [c[0] for c in calls] == [(1000, 2000)]
    calls.clear()
    detect_faces(img[:, :1000], "mtcnn")  # no larger than the copy: searched once as it is
    assert [c[0] for c in calls] == [(1000, 1000)]
