"""Tests of faceedit.alignment.paste_back: round trips and the never-touch-outside guarantee."""
import os

import numpy as np
import pytest

from faceedit.alignment import AlignmentError, AlignmentRecipe, align, align_landmarks, paste_back
from faceedit.alignment.paste import face_polygon
from faceedit.core.images import load_image


def psnr(a, b):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * np.log10(255.0 ** 2 / max(np.mean(d ** 2), 1e-12))


@pytest.fixture(scope="module")
def two_people(shared_dir):
    return load_image(os.path.join(shared_dir, "datasets", "photos", "face_recognition__two_people.jpg"))


def _inside_polygon(poly, h, w):
    """Pixel-centre point-in-polygon test, written independently of paste_back (skimage)."""
    from skimage.measure import points_in_poly

    yy, xx = np.mgrid[0:h, 0:w]
    pts = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    return points_in_poly(pts, poly).reshape(h, w)


def _near_polygon(poly, h, w, margin=1.5):
    """Pixels inside the polygon or within ``margin`` px of it (rasterisation tolerance)."""
    import cv2

    inside = _inside_polygon(poly, h, w).astype(np.uint8)
    k = int(np.ceil(margin)) * 2 + 1
    return cv2.dilate(inside, np.ones((k, k), np.uint8)) > 0


# PSNR reached by `replace` of an unedited crop, inside the mask's full-weight core (measured:
# ~38 dB at 256 px and ~31 dB at 64 px on the right-hand face of two_people.jpg, a ~190 px face).
@pytest.mark.parametrize("size,floor", [(256, 35.0), (64, 27.0)])
def test_replace_roundtrip_psnr(two_people, size, floor):
    f = align(two_people, recipe=AlignmentRecipe(size=size, scale=1.0), face=1)[0]
    out, m = paste_back(two_people, f, f.crop, mode="replace", return_mask=True)
    core = m >= 0.999
    assert core.sum() > 5000
    assert psnr(out[core], two_people[core]) > floor


def test_residual_with_unchanged_crop_is_identity(two_people):
    for f in align(two_people):
        rng = np.random.default_rng(f.index)
        recon = rng.integers(0, 256, f.crop.shape, dtype=np.uint8)  # any reconstruction, edited == unedited
        for mask in ("hull", "quad"):
            out = paste_back(two_people, f, recon, mode="residual", reference=recon.copy(), mask=mask)
            assert np.abs(out.astype(int) - two_people).max() <= 1


@pytest.mark.parametrize("mode", ["replace", "residual"])
@pytest.mark.parametrize("mask", ["hull", "quad"])
def test_outside_mask_never_touched_real_photo(two_people, mode, mask):
    f = align(two_people, face=0)[0]
    rng = np.random.default_rng(1)
    edited = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out, m = paste_back(two_people, f, edited, mode=mode, reference=ref if mode == "residual" else None,
                        mask=mask, color_match=(mode == "replace"), return_mask=True)
    changed = np.any(out != two_people, axis=2)
    assert changed.sum() > 1000  # the edit did land
    assert not np.any(changed & (m == 0))
    H, W = two_people.shape[:2]
    assert not np.any(changed & ~_near_polygon(face_polygon(f, mask), H, W))


def test_outside_mask_never_touched_random_geometry():
    """Property on random photos, face positions, rotations, sizes and crop sizes."""
    rng = np.random.default_rng(0)
    for trial in range(12):
        H, W = rng.integers(60, 240, 2)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        c = rng.uniform([0, 0], [W, H])
        th = rng.uniform(-np.pi, np.pi)
        s = rng.uniform(8, 60)
        R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        base = np.zeros((68, 2))
        base[:17] = np.stack([np.linspace(-1.2, 1.2, 17), 0.9 + 0.6 * np.cos(np.linspace(-1.4, 1.4, 17))], 1)
        base[17:36] = rng.normal([0, -0.7], 0.3, (19, 2))
        base[36:42] = [-0.5, -0.3] + rng.normal(0, 0.05, (6, 2))
        base[42:48] = [0.5, -0.3] + rng.normal(0, 0.05, (6, 2))
        base[48:60] = np.stack([np.linspace(-0.4, 0.4, 12), 0.7 + rng.normal(0, 0.05, 12)], 1)
        base[48], base[54] = [-0.4, 0.7], [0.4, 0.7]
        base[60:68] = rng.normal([0, 0.7], 0.05, (8, 2))
        lm = base * s @ R.T + c
        recipe = AlignmentRecipe(size=int(rng.choice([16, 32, 64])), scale=float(rng.uniform(0.5, 1.2)),
                                 supersample=int(rng.choice([1, 2, 4])))
        f = align_landmarks(img, lm, recipe)
        S = int(rng.choice([16, 48, 64]))
        edited = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
        mode = ("replace", "residual")[trial % 2]
        mask = ("hull", "quad")[(trial // 2) % 2]
        out, m = paste_back(img, f, edited, mode=mode, mask=mask, feather=float(rng.uniform(0, 0.2)),
                            reference=np.zeros_like(edited) if mode == "residual" else None, return_mask=True)
        changed = np.any(out != img, axis=2)
        assert not np.any(changed & (m == 0))
        assert not np.any(changed & ~_near_polygon(face_polygon(f, mask), H, W))
        assert out.dtype == np.uint8 and out.shape == img.shape


def test_residual_adds_the_difference(two_people):
    f = align(two_people, face=1)[0]
    ref = np.full((64, 64, 3), 100, np.uint8)
    edited = ref + 20
    out, m = paste_back(two_people, f, edited, mode="residual", reference=ref, return_mask=True)
    core = (m >= 0.999) & np.all(two_people < 235, axis=2)
    d = out.astype(int) - two_people
    assert np.all(d[core] == 20)
    half = (m > 0.4) & (m < 0.6) & np.all(two_people < 235, axis=2)
    assert np.all(np.abs(d[half] - 10) <= 2)


def test_crop_of_another_size_lands_in_the_same_place(two_people):
    """A 1024 px alignment's face accepts a 64 px crop: the matrix is rescaled, not misplaced."""
    f256 = align(two_people, recipe=AlignmentRecipe(size=256), face=1)[0]
    import cv2

    small = cv2.resize(f256.crop, (64, 64), interpolation=cv2.INTER_AREA)
    a, m = paste_back(two_people, f256, small, return_mask=True)
    core = m >= 0.999
    assert psnr(a[core], two_people[core]) > 25


def test_input_not_modified_and_errors(two_people):
    f = align(two_people, face=0)[0]
    before = two_people.copy()
    paste_back(two_people, f, f.crop)
    np.testing.assert_array_equal(before, two_people)
    with pytest.raises(AlignmentError, match="reference="):
        paste_back(two_people, f, f.crop, mode="residual")
    with pytest.raises(AlignmentError, match="paste back into the photo it came from"):
        paste_back(two_people[:100], f, f.crop)
    with pytest.raises(AlignmentError, match="mode"):
        paste_back(two_people, f, f.crop, mode="add")
    with pytest.raises(AlignmentError, match="square"):
        paste_back(two_people, f, f.crop[:, :10])
    with pytest.raises(AlignmentError, match="tensor_to_uint8"):
        paste_back(two_people, f, f.crop.astype(np.float32) * 1000)


def test_color_match_moves_statistics(two_people):
    f = align(two_people, face=1)[0]
    tinted = np.clip(f.crop.astype(int) + [60, -40, 0], 0, 255).astype(np.uint8)
    plain, m = paste_back(two_people, f, tinted, return_mask=True)
    matched = paste_back(two_people, f, tinted, color_match=True)
    core = m >= 0.999
    err_plain = np.abs(plain[core].astype(float).mean(0) - two_people[core].mean(0)).max()
    err_matched = np.abs(matched[core].astype(float).mean(0) - two_people[core].mean(0)).max()
    assert err_matched < err_plain / 4
