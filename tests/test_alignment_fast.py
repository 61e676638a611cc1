"""The fast alignment path (``path="fast"``, the default) against the reference path it replaces.

The same detections, landmarks, quads and matrices; crops within resampling noise of the
reference's 4x supersampled transform; detection copies whose scales map boxes back to
full-resolution photo coordinates; the same errors for bad input.
"""
import os

import numpy as np
import pytest

from faceedit.alignment import (ALIGN_PATHS, FFHQ, AlignmentError, AlignmentRecipe, FaceNotFoundError, align,
                                align_landmarks, align_photo, detect_faces, landmarks68_averaged)
from faceedit.alignment.detect import COARSE_DETECT_PIXELS, _detection_view
from faceedit.alignment.ffhq import quad_difference, quads_agree
from faceedit.alignment.resample import shrink
from faceedit.core.images import load_image

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "astronaut.jpg")


def psnr(a, b):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * np.log10(255.0 ** 2 / max(np.mean(d ** 2), 1e-12))


def photo(shared_dir, name):
    return load_image(os.path.join(shared_dir, "datasets", "photos", name))


@pytest.fixture(scope="module")
def astronaut():
    img = load_image(EXAMPLE)
    (d,) = [d for d in detect_faces(img) if d.score > 0.5]
    return img, landmarks68_averaged(img, d.box)


def _textured(h, w, seed=0):
    """A photo-like test image: smooth colour gradients plus fine noise (edges at every scale)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:h if w is None else w].astype(np.float64)
    base = np.stack([127 + 90 * np.sin(xx / 37.0 + yy / 53.0), 127 + 90 * np.cos(yy / 29.0),
                     127 + 90 * np.sin((xx - yy) / 61.0)], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_paths_are_named_and_a_bad_one_is_a_clear_error(astronaut):
    img, lm = astronaut
    assert ALIGN_PATHS == ("fast", "reference")
    for call in (lambda: align(img, path="turbo"), lambda: detect_faces(img, path="turbo"),
                 lambda: align_landmarks(img, lm, path="turbo")):
        with pytest.raises(AlignmentError, match="unknown alignment path 'turbo'; choose one of fast, reference"):
            call()


@pytest.mark.parametrize("size,scale", [(1024, 1.0), (256, 1.0), (64, 0.6)])
def test_fast_warp_agrees_with_the_reference_warp(astronaut, size, scale):
    """Upsampling (1024 px from a ~290 px quad), mild and strong reduction: the same quad and
    matrix, crops within 40 dB of the reference, and the default is the fast path."""
    img, lm = astronaut
    recipe = AlignmentRecipe(size=size, scale=scale)
    ref = align_landmarks(img, lm, recipe, path="reference")
    fast = align_landmarks(img, lm, recipe)
    np.testing.assert_array_equal(fast.quad, ref.quad)
    np.testing.assert_allclose(fast.matrix, ref.matrix, atol=1e-9)
    assert fast.crop.shape == ref.crop.shape == (size, size, 3) and fast.crop.dtype == np.uint8
    assert psnr(fast.crop, ref.crop) > 40, psnr(fast.crop, ref.crop)
    np.testing.assert_array_equal(align_landmarks(img, lm, recipe, path="fast").crop, fast.crop)


@pytest.mark.parametrize("supersample", [1, 2, 8])
def test_a_chosen_supersampling_is_honoured_on_the_default_path(astronaut, supersample):
    """The fast warp has its own supersampling; a recipe that asks for another than the default
    gets the reference warp's crop exactly, not a silently ignored field."""
    img, lm = astronaut
    recipe = AlignmentRecipe(size=64, scale=0.6, supersample=supersample)
    np.testing.assert_array_equal(align_landmarks(img, lm, recipe).crop,
                                  align_landmarks(img, lm, recipe, path="reference").crop)
    default = AlignmentRecipe(size=64, scale=0.6)
    assert not np.array_equal(align_landmarks(img, lm, default).crop,
                              align_landmarks(img, lm, default, path="reference").crop)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_fast_padding_agrees_with_the_reference_padding(astronaut, pad_mode):
    """A face cut so its quad leaves the photo on three sides: the reference pads (reflect, blur,
    fade to the median) at full resolution, the fast path on a coarse grid; the padded crops
    agree, and so do the pixels inside the photo."""
    img, lm = astronaut
    x0, y0 = 150, 120
    cut = np.ascontiguousarray(img[y0:y0 + 260, x0:x0 + 220])
    lm_cut = lm - [x0, y0]
    recipe = AlignmentRecipe(size=256, pad_mode=pad_mode)
    ref = align_landmarks(cut, lm_cut, recipe, path="reference")
    fast = align_landmarks(cut, lm_cut, recipe)
    np.testing.assert_allclose(fast.matrix, ref.matrix, atol=1e-9)
    inv = np.linalg.inv(ref.matrix)
    g = np.arange(256) + 0.5
    X = inv[0, 0] * g[None, :] + inv[0, 1] * g[:, None] + inv[0, 2]
    Y = inv[1, 0] * g[None, :] + inv[1, 1] * g[:, None] + inv[1, 2]
    inside = (X > 1) & (X < cut.shape[1] - 1) & (Y > 1) & (Y < cut.shape[0] - 1)
    assert 0.3 < inside.mean() < 0.8  # a real padding case
    assert psnr(fast.crop, ref.crop) > 45, psnr(fast.crop, ref.crop)
    assert psnr(fast.crop[inside], ref.crop[inside]) > 45
    if pad_mode == "constant":
        assert (fast.crop[~inside & (X < -3)] == 0).all()  # black, as the reference


def test_fast_warp_reduces_a_large_face_without_aliasing():
    """A face larger than twice the output (the fast path area-reduces the region first) on a
    textured photo: within 40 dB of the reference, whose 4x supersampling filters it."""
    img = _textured(1400, 1300, seed=1)
    from tests.test_alignment import synthetic_landmarks68

    lm = synthetic_landmarks68((480, 600), (820, 610), (500, 900), (800, 905))
    for size in (64, 200):
        recipe = AlignmentRecipe(size=size, scale=1.0, pad_mode="constant")
        ref, fast = (align_landmarks(img, lm, recipe, path=p) for p in ("reference", "fast"))
        np.testing.assert_allclose(fast.matrix, ref.matrix, atol=1e-9)
        assert psnr(fast.crop, ref.crop) > 40, (size, psnr(fast.crop, ref.crop))


@pytest.mark.parametrize("h,w,nw,nh", [(1080, 1920, 943, 530), (1203, 2001, 700, 421), (999, 998, 331, 332),
                                       (600, 900, 500, 333)])
def test_shrink_scales_map_photo_points_into_the_copy(h, w, nw, nh):
    """A bright dot at a random photo point lands where the returned scales say, on both paths,
    also when the fast path drops edge rows and columns (sizes not a multiple of the block)."""
    rng = np.random.default_rng(h + w)
    for _ in range(3):
        x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        yy, xx = np.mgrid[0:h, 0:w]
        img = (250 * np.exp(-((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) / (2 * 6.0 ** 2)))[..., None]
        img = np.repeat(img.round().astype(np.uint8), 3, 2)
        for path in ALIGN_PATHS:
            small, (sx, sy) = shrink(img, nw, nh, path=path)
            assert small.shape == (nh, nw, 3)
            m = small[..., 0].astype(np.float64)
            gy, gx = np.mgrid[0:nh, 0:nw] + 0.5
            cx, cy = (m * gx).sum() / m.sum(), (m * gy).sum() / m.sum()
            assert abs(cx - x * sx) < 0.3 and abs(cy - y * sy) < 0.3, (path, cx, x * sx, cy, y * sy)
    with pytest.raises(AlignmentError, match="cannot shrink"):
        shrink(np.zeros((10, 10, 3), np.uint8), 20, 5)


def test_fast_detection_copy_gives_the_reference_faces_in_photo_coordinates(astronaut):
    """A 2.4 MP canvas (not a multiple of the block size) holding the astronaut at a known offset
    and 2x: the coarse copies of both paths give the same face, its box in full-resolution photo
    coordinates (within a HOG cell), and the averaged landmarks from it land on the face's."""
    import cv2

    img, lm = astronaut
    canvas = np.full((1203, 2001, 3), 90, np.uint8)
    big = cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    canvas[101:1125, 677:1701] = big
    assert canvas.shape[0] * canvas.shape[1] > 4 * COARSE_DETECT_PIXELS  # a 2x block reduction, then the rest
    fast_view, s = _detection_view(canvas, COARSE_DETECT_PIXELS)
    ref_view, r = _detection_view(canvas, COARSE_DETECT_PIXELS, path="reference")
    assert fast_view.shape == ref_view.shape and s != r and abs(s[0] / r[0] - 1) < 1e-3
    (a,), (b,) = ([d for d in detect_faces(canvas, path=p) if d.score > 0.5] for p in ALIGN_PATHS)
    assert a.scale < 1 and np.hypot(*np.subtract(a.center, b.center)) < 0.03 * b.size
    assert abs(a.size / b.size - 1) < 0.03
    want = lm * 2 + [677, 101]  # the example's points, mapped into the canvas (2x about the origin, then moved)
    got = landmarks68_averaged(canvas, a.box)
    assert np.median(np.hypot(*(got - want).T)) < 0.03 * a.size


def test_fast_path_finds_the_reference_faces_and_quads(shared_dir):
    """A 2 MP photo and a two-face photo: align's default (fast) finds the reference path's
    faces, with quads that agree (centre within 0.2% of the side, side within 0.3%) and the
    same messages; for a photo without a face, the same FaceNotFoundError."""
    for name in ("face_recognition__obama-1080p.jpg", "face_recognition__two_people.jpg"):
        img = photo(shared_dir, name)
        fast, ref = (align_photo(img, recipe=FFHQ.with_size(256), path=p) for p in ALIGN_PATHS)
        assert len(fast.faces) == len(ref.faces) >= 1 and fast.tried == ref.tried
        for f, g in zip(fast.faces, ref.faces):
            c, r = quad_difference(g.landmarks, f.landmarks)
            assert c < 0.002 and abs(r - 1) < 0.003 and quads_agree([[c, r]]).all()
            assert psnr(f.crop, g.crop) > 35
    blank = photo(shared_dir, "face_alignment__grass.jpg")
    msgs = []
    for p in ALIGN_PATHS:
        with pytest.raises(FaceNotFoundError) as e:
            align(blank, path=p)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]
