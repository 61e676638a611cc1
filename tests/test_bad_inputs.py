"""A bad-input corpus, generated here: every input gives a correct result or a clear error.

Images: empty and truncated JPEG/PNG, a text file named ``.jpg``, a PNG named ``.jpg``,
all eight EXIF orientations (pixels checked against an independent numpy model of the
EXIF spec), CMYK, 16-bit grey and 48-bit RGB, palette with transparency, greyscale,
LA/RGBA (composited on white), 1x1, 50000x50000 header claims (refused before any
decoding: time and peak memory checked), huge but valid photos, other formats; no face,
30 faces pasted into one canvas, tiny faces.

Latents and directions: files from another model, NaN/Inf, pickles (which must not run:
a marker file checks it), wrong shapes and dtypes, damaged headers.

Each case goes through the Python API and, where a command exists, through the CLI with
click's ``CliRunner``: exit code 1 for a failed job (2 for usage errors) and a one-line
``Error:`` naming the fix; never a traceback. ``CORPUS_STATS`` counts cases for the
report (``python -m pytest tests/test_bad_inputs.py -s`` prints it).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import resource
import struct
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from faceedit.core.images import ImageLoadError, decode_image, load_image

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "celeba10k"
CORPUS_STATS = Counter()


# --------------------------------------------------------------------------- helpers
def cli(args, env=None):
    from faceedit.cli import cli as group

    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=True, env=env)


def assert_clean_failure(result, *patterns, code=1):
    out = result.output
    assert result.exit_code == code, (result.exit_code, out[-2000:], repr(result.exception))
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and "Error" in out, out[-2000:]
    for p in patterns:
        assert re.search(p, out, re.I | re.S), (p, out[-2000:])
    CORPUS_STATS["cli clear error"] += 1


def encode(arr, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def blocks(h=24, w=36) -> tuple:
    """An image of 2x3 coloured blocks (no symmetry) and the colours, row-major."""
    colours = np.array([[230, 20, 20], [20, 200, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [40, 40, 40]],
                       np.uint8)
    img = np.zeros((h, w, 3), np.uint8)
    for i in range(2):
        for j in range(3):
            img[i * h // 2:(i + 1) * h // 2, j * w // 3:(j + 1) * w // 3] = colours[3 * i + j]
    return img, colours


def block_means(img, h=24, w=36):
    return np.array([img[i * h // 2 + 2:(i + 1) * h // 2 - 2, j * w // 3 + 2:(j + 1) * w // 3 - 2].reshape(-1, 3)
                     .mean(0) for i in range(2) for j in range(3)])


# The EXIF spec, written independently of Pillow: the stored pixels S for a displayed image O.
#   1 identity, 2 mirrored, 3 rotated 180, 4 flipped vertically, 5 transposed,
#   6 "row 0 is the right side" (display = S turned 90 clockwise), 7 transverse,
#   8 "row 0 is the left side" (display = S turned 90 counter-clockwise).
STORED_FROM_DISPLAY = {
    1: lambda o: o, 2: lambda o: o[:, ::-1], 3: lambda o: o[::-1, ::-1], 4: lambda o: o[::-1],
    5: lambda o: o.transpose(1, 0, 2), 6: lambda o: np.rot90(o, 1), 7: lambda o: np.rot90(o.transpose(1, 0, 2), 2),
    8: lambda o: np.rot90(o, -1),
}


def png_header_bomb(w: int, h: int) -> bytes:
    """A 100-byte PNG claiming ``w x h`` RGB pixels (IHDR + a tiny IDAT)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_header_bomb(w: int, h: int) -> bytes:
    data = bytearray(encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


# --------------------------------------------------------------------------- the image corpus
def image_corpus(tmp: Path) -> list:
    """``[(name, path, expect)]`` with ``expect`` a regex for the error or a checker of the array."""
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64] / 8.0  # a smooth photo-like image (JPEG-friendly)
    photo = np.stack([128 + 90 * np.sin(xx), 128 + 90 * np.cos(yy), 128 + 60 * np.sin(xx + yy)], -1)
    photo = np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    jpg, png = encode(photo, "JPEG", quality=90), encode(photo, "PNG")
    cases = []

    def add(name, data, expect):
        p = tmp / name
        p.write_bytes(data)
        cases.append((name, p, expect))

    def same_as(ref, tol):
        def check(a):
            assert a.shape == ref.shape, (a.shape, ref.shape)
            assert np.abs(a.astype(int) - ref.astype(int)).mean() <= tol
        return check

    def shape(h, w):
        def check(a):
            assert a.shape == (h, w, 3) and a.dtype == np.uint8
        return check

    broken = r"truncated|corrupt|decoded|not an image"
    add("empty.jpg", b"", r"empty")
    add("empty.png", b"", r"empty")
    for frac in (0.1, 0.5, 0.9):
        add(f"truncated{int(frac * 100)}.jpg", jpg[: int(len(jpg) * frac)], broken)
        add(f"truncated{int(frac * 100)}.png", png[: int(len(png) * frac)], broken)
    add("header_only.jpg", jpg[:20], broken)
    add("text.jpg", b"this is not a photo, it is a text file\n" * 10, r"not an image.*JPEG or PNG")
    add("html.png", b"<html><body>hello</body></html>", r"not an image")
    add("zeros.jpg", b"\x00" * 4096, r"not an image")
    add("png_named.jpg", png, same_as(photo, 0))
    add("jpg_named.png", jpg, same_as(photo, 12))
    for fmt, ext, tol in (("GIF", "gif", 60), ("WEBP", "webp", 20), ("BMP", "bmp", 0), ("TIFF", "tif", 0)):
        add(f"valid.{ext}", encode(photo, fmt), same_as(photo, tol))
    # a corrupt scan (bytes flipped mid-stream) may decode to garbage but must not crash
    bad = bytearray(jpg)
    bad[len(bad) // 2: len(bad) // 2 + 16] = b"\xff\x00" * 8
    add("flipped_bytes.jpg", bytes(bad), lambda a: a.shape == (48, 64, 3) or None)
    # EXIF orientations
    disp, colours = blocks()
    for k, fn in STORED_FROM_DISPLAY.items():
        exif = Image.Exif()
        exif[0x0112] = k
        stored = np.ascontiguousarray(fn(disp))
        buf = io.BytesIO()
        Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif.tobytes())

        def check(a, k=k):
            assert a.shape == disp.shape, (k, a.shape)
            assert np.abs(block_means(a) - colours).max() < 25, (k, block_means(a).round())
        add(f"exif_orientation_{k}.jpg", buf.getvalue(), check)
    # modes
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    cmyk = io.BytesIO()
    Image.fromarray(red).convert("CMYK").save(cmyk, "JPEG", quality=95)
    add("cmyk.jpg", cmyk.getvalue(), same_as(red, 8))
    ramp16 = (np.arange(256, dtype=np.uint16)[None].repeat(4, 0) * 257)
    buf = io.BytesIO()
    Image.frombytes("I;16", (256, 4), ramp16.astype("<u2").tobytes()).save(buf, "PNG")
    add("grey16.png", buf.getvalue(), same_as(np.repeat((ramp16 // 257).astype(np.uint8)[..., None], 3, 2), 1))
    import cv2

    rgb48 = (photo.astype(np.uint16) * 257)
    ok, enc = cv2.imencode(".png", rgb48[..., ::-1])
    assert ok
    add("rgb48.png", enc.tobytes(), same_as(photo, 1))
    pal = Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE, colors=16)
    pa = np.asarray(pal).copy()
    pa[:8, :8] = 0
    pal2 = Image.frombytes("P", (64, 48), np.ascontiguousarray(pa).tobytes())
    pal2.putpalette(pal.getpalette())
    buf = io.BytesIO()
    pal2.save(buf, "PNG", transparency=0)

    def check_pal(a):
        assert a.shape == (48, 64, 3) and (a[:8, :8] == 255).all()  # transparent -> white
    add("palette_transparent.png", buf.getvalue(), check_pal)
    grey = photo[..., 0]
    add("grey.png", encode(grey), same_as(np.repeat(grey[..., None], 3, 2), 0))
    add("grey.jpg", encode(grey, "JPEG", quality=95), same_as(np.repeat(grey[..., None], 3, 2), 6))
    alpha = np.zeros((48, 64), np.uint8)
    alpha[:, 32:] = 255
    alpha[:24, :32] = 128
    la = np.stack([grey, alpha], -1)
    rgba = np.concatenate([photo, alpha[..., None]], -1)

    def composited(rgb):
        a = alpha[..., None].astype(float) / 255
        return np.clip(rgb * a + 255 * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    add("la.png", encode(la), same_as(composited(np.repeat(grey[..., None], 3, 2).astype(float)), 1))
    add("rgba.png", encode(rgba), same_as(composited(photo.astype(float)), 1))
    add("rgba_named.jpg", encode(rgba), same_as(composited(photo.astype(float)), 1))
    add("1x1.png", encode(np.full((1, 1, 3), 7, np.uint8)), shape(1, 1))
    add("1x1.jpg", encode(np.full((1, 1, 3), 7, np.uint8), "JPEG"), shape(1, 1))
    add("1x1_rgba.png", encode(np.zeros((1, 1, 4), np.uint8)), shape(1, 1))
    # decompression bombs: header claims far beyond the pixel limit
    too_big = r"over the limit.*--max-pixels"
    add("bomb_50000.png", png_header_bomb(50000, 50000), too_big)
    add("bomb_50000.jpg", jpeg_header_bomb(50000, 50000), too_big)
    add("bomb_wide.png", png_header_bomb(2 ** 31 - 1, 1), too_big)
    add("bomb_9000.png", png_header_bomb(9000, 9000), too_big)
    add("zero_size.png", png_header_bomb(0, 0), broken + "|no pixels")
    # huge but valid: 20 MP
    big = np.zeros((4000, 5000, 3), np.uint8)
    big[::50] = 200
    add("huge_valid.jpg", encode(big, "JPEG", quality=75), shape(4000, 5000))
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return image_corpus(tmp_path_factory.mktemp("images"))


def test_image_corpus_api(corpus):
    for name, path, expect in corpus:
        CORPUS_STATS["image inputs"] += 1
        if isinstance(expect, str):
            with pytest.raises(ImageLoadError, match=re.compile(expect, re.I | re.S)):
                load_image(path)
            CORPUS_STATS["image clear error"] += 1
        else:
            arr = load_image(path)
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
            expect(arr)
            CORPUS_STATS["image correct result"] += 1


def test_missing_and_directory_inputs(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    for p in (tmp_path / "dir.jpg", tmp_path / "missing.jpg"):
        with pytest.raises(ImageLoadError, match="no such file"):
            load_image(p)


def test_bombs_refused_before_decoding():
    """Peak memory must not grow and the refusal must be instant (a decode would need 7.5 GB)."""
    data = {"png": png_header_bomb(50000, 50000), "jpg": jpeg_header_bomb(50000, 50000)}
    for fmt, raw in data.items():
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with pytest.raises(ImageLoadError, match="over the limit"):
            decode_image(raw, name=f"bomb.{fmt}")
        assert time.perf_counter() - t < 1.0
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 100_000  # KiB
    # raising our limit does not disable Pillow's own bomb guard, and the message still says why
    with pytest.raises(ImageLoadError, match="too large|over the limit"):
        decode_image(data["png"], name="bomb.png", max_pixels=10 ** 12)


def test_max_pixels_knob(tmp_path):
    p = tmp_path / "p.png"
    p.write_bytes(encode(np.zeros((100, 100, 3), np.uint8)))
    assert load_image(p, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(p, max_pixels=9_999)


def test_image_corpus_through_align_cli(corpus, tmp_path):
    """Every corpus file through ``faceedit align FILE``: exit 1 with the loader's or the
    detector's message (none of these synthetic images holds a face), never a traceback."""
    for name, path, expect in corpus:
        if name.startswith("huge"):
            continue  # covered by the API test; detection on 20 MP is slow on CI
        out = tmp_path / name.replace(".", "_")
        r = cli(["align", path, "--out", out, "--workers", "1"])
        if isinstance(expect, str):
            assert_clean_failure(r, "ImageLoadError")
        else:
            assert_clean_failure(r, "no face|too small|FaceNotFound")
        js = json.loads((out / (Path(name).stem + ".json")).read_text())
        assert js["faces"] == [] and js["error"]


# --------------------------------------------------------------------------- faces
def _face(i: int) -> np.ndarray:
    if not CELEBA.is_dir():
        pytest.skip("../shared/datasets/celeba10k is not beside the checkout")
    return load_image(CELEBA / f"{i:06d}.jpg")


def test_no_face(tmp_path):
    yy, xx = np.mgrid[0:200, 0:300]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    p = tmp_path / "landscape.png"
    p.write_bytes(encode(img))
    r = cli(["align", p, "--out", tmp_path / "out"])
    assert_clean_failure(r, r"no face in .*landscape\.png", r"try --detector")


@pytest.mark.slow
def test_thirty_faces_in_one_photo(tmp_path):
    """30 CelebA faces pasted on a 6x5 grid: most are found, each gets its own crop, left to right."""
    ids = [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
           30, 31, 32]
    canvas = np.full((5 * 120, 6 * 100, 3), 235, np.uint8)
    for n, i in enumerate(ids):
        r, c = divmod(n, 6)
        canvas[r * 120 + 5: r * 120 + 114, c * 100 + 5: c * 100 + 94] = _face(i)
    p = tmp_path / "crowd.jpg"
    p.write_bytes(encode(canvas, "JPEG", quality=95))
    r = cli(["align", p, "--out", tmp_path / "out", "--upsample", "1"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "out" / "crowd.json").read_text())
    assert rec["num_detected"] >= 24, rec["num_detected"]
    assert len(rec["faces"]) >= 24
    for f in rec["faces"]:
        assert load_image(tmp_path / "out" / f["file"]).shape == (64, 64, 3)
    CORPUS_STATS["face inputs"] += 1
    CORPUS_STATS["face correct result"] += 1


def test_tiny_faces(tmp_path):
    """A face of ~14 px in a 400 px photo: refused with a message naming the fix, not aligned into mush."""
    from faceedit.alignment import AlignmentError, align

    face = np.asarray(Image.fromarray(_face(1)).resize((12, 15), Image.BILINEAR))
    canvas = np.full((400, 400, 3), 200, np.uint8)
    canvas[200:215, 200:212] = face
    with pytest.raises(AlignmentError, match=r"--upsample|--min-face|--detector"):
        align(canvas)
    p = tmp_path / "tiny.png"
    p.write_bytes(encode(canvas))
    assert_clean_failure(cli(["align", p, "--out", tmp_path / "o"]), r"--upsample|--min-face|--detector")
    # a face detected but below --min-face is skipped with the reason
    big = np.full((300, 300, 3), 200, np.uint8)
    big[100:209, 100:189] = _face(1)
    p2 = tmp_path / "small.png"
    p2.write_bytes(encode(big))
    assert_clean_failure(cli(["align", p2, "--out", tmp_path / "o2", "--min-face", "200", "--upsample", "1"]),
                         r"below the minimum face size.*--min-face")
    CORPUS_STATS["face inputs"] += 3
    CORPUS_STATS["face clear error"] += 3


# --------------------------------------------------------------------------- latents and directions
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 16 px model, a latent of it, and a valid direction folder for it."""
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def make_tiny(root: Path) -> dict:
    """The body of the ``tiny`` fixture (also run by ``bench/scripts/bad_input_table.py``)."""
    from faceedit.checkpoints import load_model, save_native
    from faceedit.editing.direction import Direction
    from faceedit.inversion.latent import Latent
    from faceedit.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=64, channel_max=16, mapping_layers=2)
    save_native(root / "model", G, name="tiny16")
    m = load_model(root / "model")
    with torch.no_grad():
        codes = m.G.mapping(torch.randn(1, 16))
    lat = Latent("w+", codes, m.model_id, meta={"source": "none.png"})
    lat.save(root / "good.latent.safetensors")
    d = Direction.from_vector(torch.randn(16), space="w", attribute="smile", model_id=m.model_id,
                              num_ws=G.num_ws, method="manual")
    (root / "dirs").mkdir()
    d.save(root / "dirs")
    return {"root": root, "model": root / "model", "model_id": m.model_id, "G": m.G, "latent": lat,
            "direction": d}


def _latent_bytes(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=meta)


class Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def bad_latents(tiny, marker: Path) -> dict:
    """name -> (bytes, error regex)."""
    codes = tiny["latent"].codes
    meta = {"format": "faceedit.latent", "version": "1", "space": "w+", "model_id": tiny["model_id"], "meta": "{}"}
    nan, inf = codes.clone(), codes.clone()
    nan[0, 0, 0] = float("nan")
    inf[0, 1, 2] = float("-inf")
    evil = pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2)
    tsave = io.BytesIO()
    torch.save({"codes": codes, "x": Reduce(os.system, f"touch {marker}")}, tsave)
    return {
        "other model": (_latent_bytes({"codes": codes}, {**meta, "model_id": "ffhq@0123456789ab"}), r"belongs to"),
        "nan": (_latent_bytes({"codes": nan}, meta), r"NaN or Inf"),
        "inf": (_latent_bytes({"codes": inf}, meta), r"NaN or Inf"),
        "nan noise": (_latent_bytes({"codes": codes, "noise.0": torch.full((1, 1, 4, 4), float("nan"))}, meta),
                      r"NaN or Inf"),
        "pickle": (evil, r"pickle"),
        "pickle protocol 0": (pickle.dumps({"codes": 1}, protocol=0), r"not a valid|pickle"),
        "torch.save": (tsave.getvalue(), r"pickle|torch"),
        "numpy .npy": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }" + b" " * 60
                       + b"\n\x00\x00\x00\x00", r"not a valid"),
        "empty": (b"", r"not a valid|too short"),
        "truncated": (_latent_bytes({"codes": codes}, meta)[:-7], r"not a valid"),
        "foreign safetensors": (_latent_bytes({"codes": codes}, {"format": "pt"}), r"not a faceedit latent"),
        "no metadata": (_latent_bytes({"codes": codes}, None), r"not a faceedit latent"),
        "2-D codes": (_latent_bytes({"codes": codes[0]}, meta), r"\[B, num_ws, w_dim\]"),
        "int codes": (_latent_bytes({"codes": codes.long()}, meta), r"floating|dtype"),
        "unknown space": (_latent_bytes({"codes": codes}, {**meta, "space": "q"}), r"unknown latent space"),
        "meta not json": (_latent_bytes({"codes": codes}, {**meta, "meta": "{oops"}), r"metadata"),
        "meta not a dict": (_latent_bytes({"codes": codes}, {**meta, "meta": "[1, 2]"}), r"metadata"),
        "wrong num_ws": (_latent_bytes({"codes": codes[:, :3]}, meta), r"num_ws|shape|layers"),
        "wrong w_dim": (_latent_bytes({"codes": torch.zeros(1, codes.shape[1], 7)}, meta), r"w_dim|shape"),
        "noise gap": (_latent_bytes({"codes": codes, "noise.1": torch.zeros(1, 1, 4, 4)}, meta), r"noise"),
    }


def test_bad_latents_api(tiny, tmp_path):
    from faceedit.inversion.latent import Latent, LatentFileError

    marker = tmp_path / "PWNED"
    G = tiny["G"]
    for name, (data, pattern) in bad_latents(tiny, marker).items():
        CORPUS_STATS["latent inputs"] += 1
        p = tmp_path / "bad.latent.safetensors"
        p.write_bytes(data)
        with pytest.raises(LatentFileError, match=re.compile(pattern, re.I)):
            lat = Latent.load(p)
            lat.check_model(tiny["model_id"])
            lat.check_generator(G)
        assert not marker.exists(), name
        CORPUS_STATS["latent clear error"] += 1


@pytest.mark.slow
def test_bad_latents_cli(tiny, tmp_path):
    """``faceedit edit LATENT --attr smile``: exit 1 and the reason, for each bad latent."""
    marker = tmp_path / "PWNED"
    for name, (data, pattern) in bad_latents(tiny, marker).items():
        p = tmp_path / "bad.latent.safetensors"
        p.write_bytes(data)
        r = cli(["--device", "cpu", "edit", p, "--attr", "smile", "--model", tiny["model"],
                 "--directions", tiny["root"] / "dirs", "--out", tmp_path / "out"],
                env={"FACEEDIT_HOME": str(tmp_path / "home")})
        assert_clean_failure(r, pattern)
        assert not marker.exists(), name
    # and the good latent works end to end
    r = cli(["--device", "cpu", "edit", tiny["root"] / "good.latent.safetensors", "--attr", "smile", "--model",
             tiny["model"], "--directions", tiny["root"] / "dirs", "--out", tmp_path / "out"],
            env={"FACEEDIT_HOME": str(tmp_path / "home")})
    assert r.exit_code == 0, r.output


def bad_directions(tiny, marker: Path) -> dict:
    """name -> (file name, bytes, error regex)."""
    from safetensors.torch import save

    d = tiny["direction"]
    info = d.metadata()
    head = {"format": "faceedit.direction", "version": "1"}

    def st(v, **changes):
        return save({"vector": v}, metadata={**head, "direction": json.dumps({**info, **changes})})

    v = d.vector
    unit = lambda t: t / t.norm()  # noqa: E731
    evil = pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2)
    tsave = io.BytesIO()
    torch.save(Reduce(os.system, f"touch {marker}"), tsave)
    npy = io.BytesIO()
    np.save(npy, v.numpy())
    return {
        "pickle .pkl": ("b.pkl", evil, r"pickle"),
        "pickle named .safetensors": ("b.safetensors", evil, r"pickle"),
        "torch.save .pt": ("b.pt", tsave.getvalue(), r"pickle"),
        "numpy boundary .npy": ("b.npy", npy.getvalue(), r"numpy.*from_vector"),
        "1-D vector": ("b.safetensors", st(v[0]), r"shape"),
        "3-D vector": ("b.safetensors", st(v[None]), r"shape"),
        "rows != num_ws": ("b.safetensors", st(unit(torch.randn(3, 16))), r"rows|num_ws"),
        "w_dim mismatch": ("b.safetensors", st(unit(torch.randn(1, 12))), r"w_dim"),
        "nan": ("b.safetensors", st(torch.full((1, 16), float("nan"))), r"NaN"),
        "zero": ("b.safetensors", st(torch.zeros(1, 16)), r"norm"),
        "not unit": ("b.safetensors", st(v * 3), r"norm"),
        "int vector": ("b.safetensors", st((v * 100).long()), r"float|shape|dtype|norm"),
        "layers out of range": ("b.safetensors", st(v, layers=[0, 99]), r"out of range"),
        "negative std": ("b.safetensors", st(v, latent_std=-1), r"latent_std"),
        "no metadata": ("b.safetensors", save({"vector": v}), r"not a faceedit direction"),
        "metadata junk": ("b.safetensors", save({"vector": v}, metadata={**head, "direction": "{no"}),
                          r"not a valid"),
        "missing keys": ("b.safetensors", save({"vector": v}, metadata={**head, "direction": "{}"}),
                         r"incomplete|malformed"),
        "empty": ("b.safetensors", b"", r"not a valid|too short"),
        "truncated": ("b.safetensors", st(v)[:-5], r"not a valid"),
    }


def test_bad_directions_api_and_cli(tiny, tmp_path):
    from faceedit.editing.direction import Direction, DirectionFileError

    marker = tmp_path / "PWNED"
    for name, (fname, data, pattern) in bad_directions(tiny, marker).items():
        CORPUS_STATS["direction inputs"] += 1
        p = tmp_path / fname
        p.write_bytes(data)
        with pytest.raises(DirectionFileError, match=re.compile(pattern, re.I | re.S)):
            Direction.load(p)
        assert_clean_failure(cli(["directions", "show", p]), pattern)
        assert not marker.exists(), name
        CORPUS_STATS["direction clear error"] += 1
        p.unlink()


@pytest.mark.slow
def test_wrong_shaped_direction_in_edit(tiny, tmp_path):
    """A readable direction of another shape, claiming this model, is refused by edit (exit 1)."""
    from faceedit.editing.direction import Direction

    d = Direction.from_vector(torch.randn(12), space="w", attribute="smile", model_id=tiny["model_id"],
                              num_ws=tiny["G"].num_ws, method="manual")
    (tmp_path / "dirs").mkdir()
    d.save(tmp_path / "dirs")
    r = cli(["--device", "cpu", "edit", tiny["root"] / "good.latent.safetensors", "--attr", "smile", "--model",
             tiny["model"], "--directions", tmp_path / "dirs", "--out", tmp_path / "out"],
            env={"FACEEDIT_HOME": str(tmp_path / "home")})
    assert_clean_failure(r, r"shape|w_dim")
    CORPUS_STATS["direction inputs"] += 1
    CORPUS_STATS["direction clear error"] += 1


def test_usage_errors_exit_2(tiny, tmp_path):
    assert_clean_failure(cli(["edit", tiny["root"] / "good.latent.safetensors", "--model", tiny["model"]]),
                         r"--attr", code=2)
    assert_clean_failure(cli(["align", tmp_path / "missing.jpg", "--out", tmp_path]), r"does not exist", code=2)
    assert_clean_failure(cli(["edit", "--attr", "smile=abc", "--latent", tiny["root"] / "good.latent.safetensors"]),
                         r"not a number", code=2)
    CORPUS_STATS["usage inputs"] += 3


# --------------------------------------------------------------------------- runs: outputs, batches, resume, limits
# Each case is one way a run can destroy a file, lose a result, end in a traceback or give a
# silently wrong result (issue #23). A case runs the real command on a 16 px model and returns
# "correct result" or "clear error"; it asserts what "correct" means. RUN_CASES is the list the
# README's bad-input table counts (bench/scripts/bad_input_table.py runs the same functions).
REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"
CORRECT, CLEAR = "correct result", "clear error"
RUN_CASES = []


def run_case(item: str):
    """Register a case function ``fn(ctx) -> CORRECT | CLEAR`` covering an item of issue #23."""
    def add(fn):
        fn.item = item
        RUN_CASES.append(fn)
        return fn
    return add


def make_run_model(root: Path) -> dict:
    """A 16 px generator with its prior, and a 'smile' direction (its first GANSpace axis) for it."""
    from dataclasses import replace

    from faceedit.alignment.types import FACES64
    from faceedit.checkpoints import load_model, save_native
    from faceedit.editing.fit import ganspace, sample_codes
    from faceedit.inversion.prior import fit_prior
    from faceedit.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=64, channel_max=16, mapping_layers=2)
    path = save_native(root / "model", G, name="tiny16", recipe=FACES64.to_dict(), prior=fit_prior(G, 20000))
    m = load_model(path)
    pc = ganspace(sample_codes(m.G, 2000), model_id=m.model_id, num_ws=m.G.num_ws, k=1)[0]
    replace(pc, attribute="smile", method="manual").save(root / "dirs")
    return {"model": path, "dirs": root / "dirs", "model_id": m.model_id}


class RunCtx:
    """One case's folder, with the 16 px model, the example photo and helpers to run commands."""

    def __init__(self, base: dict, tmp: Path):
        self.base, self.tmp = base, tmp
        self.home = tmp / "home"
        self.env = {"FACEEDIT_HOME": str(self.home)}

    def cli(self, *args, env=None):
        return cli([str(a) for a in args], env={**self.env, **(env or {})})

    def invert(self, *args, aligned=True, env=None):
        return self.cli("--device", "cpu", "invert", "--model", self.base["model"], "--steps", "1", "--prior", "none",
                        "--perceptual", "none", *(["--aligned"] if aligned else []), *args, env=env)

    def edit(self, *args, env=None):
        return self.cli("--device", "cpu", "edit", "--model", self.base["model"], "--directions", self.base["dirs"],
                        "--steps", "1", *args, env=env)

    def photo(self, path: Path, fmt: str | None = None) -> Path:
        """A copy of examples/astronaut.jpg (re-encoded as ``fmt``: PNG, GIF, ...)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt is None:
            path.write_bytes(ASTRONAUT.read_bytes())
        else:
            path.write_bytes(encode(load_image(ASTRONAUT), fmt))
        return path

    def crop(self, path: Path, seed: int = 0) -> Path:
        """A 16 px 'aligned crop' of noise (for `invert --aligned`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        path.write_bytes(encode(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
        return path


def ok(result):
    assert result.exit_code == 0 and "Traceback" not in result.output, (result.exit_code, result.output[-2000:],
                                                                         repr(result.exception))
    return result


def clear(result, *patterns, code=1):
    assert_clean_failure(result, *patterns, code=code)
    return CLEAR


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: mode 0555, and immutable where permission bits
    do not bind (root); skips when neither works here."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    immutable = _can_write(folder) and subprocess.run(["chattr", "+i", str(folder)],
                                                      capture_output=True).returncode == 0
    try:
        if _can_write(folder):
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        os.chmod(folder, 0o755)


@contextlib.contextmanager
def no_model_loads():
    """Fail if any model is loaded inside (checks that come before the slow part)."""
    import faceedit.checkpoints.registry as registry

    real = registry.load_model

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")

    registry.load_model = refuse
    try:
        yield
    finally:
        registry.load_model = real


def _bytes_of(*paths) -> dict:
    return {p: p.read_bytes() for p in paths}


# -- inputs destroyed or results lost
@run_case("no output lands on an input: `edit a.jpg a_edit.png` (a_edit.png another photo)")
def case_edit_input_named_like_an_output(ctx):
    d = ctx.tmp / "d"
    a, b = ctx.photo(d / "a.jpg"), ctx.photo(d / "a_edit.png", "PNG")
    before = _bytes_of(a, b)
    ok(ctx.edit(a, b, "--attr", "smile=1", "--out", d))
    assert _bytes_of(a, b) == before
    recs = [json.loads(p.read_text()) for p in d.glob("*_edit.json")]
    assert sorted(r["photo"] for r in recs) == sorted(str(p.resolve()) for p in (a, b))
    assert len({r["photo_out"] for r in recs}) == 2 and all(Path(r["photo_out"]).is_file() for r in recs)
    return CORRECT


@run_case("no output lands on an input: `invert a.png a_0.png` (a_0.png another photo)")
def case_invert_input_named_like_an_output(ctx):
    d = ctx.tmp / "d"
    a, b = ctx.crop(d / "a.png", 0), ctx.crop(d / "a_0.png", 1)
    before = _bytes_of(a, b)
    r = ok(ctx.invert(a, b, "--out", d))
    assert _bytes_of(a, b) == before
    recs = [json.loads(p.read_text()) for p in d.glob("*.json")]
    assert sorted(x["photo"] for x in recs) == sorted(str(p.resolve()) for p in (a, b)), r.output
    return CORRECT


@run_case("no output lands on a file the run did not create (a user's a_0.png in --out)")
def case_someone_elses_file_in_out(ctx):
    d = ctx.tmp / "d"
    mine = ctx.crop(d / "a_0.png", 7)  # the user's own file, not an input of the run
    before = mine.read_bytes()
    ok(ctx.invert(ctx.crop(ctx.tmp / "in" / "a.png"), "--out", d))
    assert mine.read_bytes() == before
    (rec,) = [json.loads(p.read_text()) for p in d.glob("*.json")]
    assert Path(rec["latent"]).is_file() and Path(rec["latent"]).name.startswith("a_png_0")
    return CORRECT


@run_case("two inputs with one stem (same.jpg, same.png) get distinct outputs; the summary counts right")
def case_two_inputs_one_stem(ctx):
    from faceedit.inversion.latent import Latent

    a = ctx.crop(ctx.tmp / "in" / "same.png", 0)
    b = ctx.tmp / "in" / "same.jpg"
    b.write_bytes(encode(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8), "JPEG"))
    r = ok(ctx.invert(ctx.tmp / "in", "--out", ctx.tmp / "d"))
    assert "inverted 2 face(s) from 2 photo(s)" in r.output
    recs = [json.loads(p.read_text()) for p in (ctx.tmp / "d").glob("*.json")]
    assert sorted(x["photo"] for x in recs) == sorted(str(p.resolve()) for p in (a, b))
    assert sorted(Latent.load(x["latent"]).meta["source"] for x in recs) == sorted(x["photo"] for x in recs)
    last = json.loads((ctx.home / "last_inversion.json").read_text())
    assert sorted(f["latent"] for f in last["faces"]) == sorted(x["latent"] for x in recs)
    return CORRECT


@run_case("two inputs with one stem through `align`: both aligned, each its own record")
def case_align_two_inputs_one_stem(ctx):
    a, b = ctx.photo(ctx.tmp / "in" / "same.jpg"), ctx.photo(ctx.tmp / "in" / "same.png", "PNG")
    r = ok(ctx.cli("align", a, b, "--out", ctx.tmp / "d", "--workers", "1"))
    assert "aligned 2 face(s) from 2 photo(s)" in r.output
    recs = [json.loads(p.read_text()) for p in (ctx.tmp / "d").glob("*.json")]
    assert sorted(x["source"] for x in recs) == sorted(map(str, (a, b))) and all(x["faces"] for x in recs)
    return CORRECT


@run_case("`generate` never replaces a file it did not write (a user's grid.png in --out)")
def case_generate_over_a_users_file(ctx):
    d = ctx.tmp / "d"
    d.mkdir()
    (d / "grid.png").write_bytes(b"my grid")
    with no_model_loads():
        r = ctx.cli("generate", "--model", ctx.base["model"], "--seeds", "0-1", "--out", d)
    clear(r, r"refusing to replace .*grid\.png", r"another --out")
    assert (d / "grid.png").read_bytes() == b"my grid" and not list(d.glob("seed*.png"))
    return CLEAR


@run_case("outputs get the umask's permissions, not the temporary file's 0600")
def case_outputs_follow_the_umask(ctx):
    old = os.umask(0o027)
    try:
        ok(ctx.invert(ctx.crop(ctx.tmp / "in" / "a.png"), "--out", ctx.tmp / "d"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (ctx.tmp / "d").iterdir()}
    assert modes and set(modes.values()) == {0o640}, modes
    assert (ctx.home / "last_inversion.json").stat().st_mode & 0o777 == 0o640
    return CORRECT


# -- one batch behaviour
@run_case("`edit` goes on past a bad photo, lists it, exits 1")
def case_edit_batch_goes_on(ctx):
    src = ctx.tmp / "in"
    ctx.photo(src / "b.jpg")
    (src / "a_broken.jpg").write_bytes(b"not a photo")  # sorts first
    r = ctx.edit(src, "--attr", "smile=1", "--out", ctx.tmp / "d")
    assert (ctx.tmp / "d" / "b_edit.png").is_file(), r.output
    return clear(r, r"a_broken\.jpg.*not an image", r"1 of 2 input\(s\) failed")


@run_case("`invert` goes on past a bad photo, lists it, exits 1")
def case_invert_batch_exit_code(ctx):
    src = ctx.tmp / "in"
    ctx.crop(src / "b.png")
    (src / "a_empty.png").write_bytes(b"")
    r = ctx.invert(src, "--out", ctx.tmp / "d")
    assert (ctx.tmp / "d" / "b_0.json").is_file(), r.output
    return clear(r, r"a_empty\.png.*empty", r"1 of 2 photo\(s\) failed")


@run_case("`align` goes on past a bad photo, lists it, exits 1")
def case_align_batch_exit_code(ctx):
    src = ctx.tmp / "in"
    ctx.photo(src / "b.jpg")
    (src / "a_text.jpg").write_bytes(b"text " * 50)
    r = ctx.cli("align", src, "--out", ctx.tmp / "d", "--workers", "1")
    assert json.loads((ctx.tmp / "d" / "b.json").read_text())["faces"], r.output
    return clear(r, r"a_text\.jpg.*not an image", r"1 of 2 photo\(s\) failed")


@run_case("`score` goes on past a bad photo, lists it, exits 1")
def case_score_batch(ctx):
    bad = ctx.tmp / "a_text.jpg"
    bad.write_bytes(b"text " * 50)
    r = ctx.cli("score", bad, ctx.photo(ctx.tmp / "b.jpg"), "--hide-landmarks")
    assert "b.jpg (512x512): 1 face(s)" in r.output and "detector score 1.21" in r.output, r.output
    return clear(r, r"a_text\.jpg.*not an image", r"1 of 2 photo\(s\) failed")


# -- resume keyed by settings
@run_case("`invert` again with another --space: refused before the work, naming what differs and the fix")
def case_resume_other_space(ctx):
    a, d = ctx.crop(ctx.tmp / "in" / "a.png"), ctx.tmp / "d"
    ok(ctx.invert(a, "--out", d))
    clear(ctx.invert(a, "--space", "w", "--out", d), r"other settings", r"space: 'w' here, 'w\+' there",
          r"--out ANOTHER_FOLDER", r"--overwrite")
    assert json.loads((d / "a_0.json").read_text())["space"] == "w+"
    r = ok(ctx.invert(a, "--space", "w", "--out", d, "--overwrite"))
    assert "replacing 1 face(s)" in r.output and json.loads((d / "a_0.json").read_text())["space"] == "w"
    assert "nothing to do" in ok(ctx.invert(a, "--space", "w", "--out", d)).output  # same settings: done
    return CLEAR


@run_case("`invert` again with other --steps: refused, naming steps")
def case_resume_other_steps(ctx):
    a, d = ctx.crop(ctx.tmp / "in" / "a.png"), ctx.tmp / "d"
    ok(ctx.invert(a, "--out", d))
    return clear(ctx.invert(a, "--steps", "2", "--out", d), r"steps: 2 here, 1 there", r"--overwrite")


@run_case("`align` does not take a failed photo as done: the re-run with --detector tries it")
def case_align_failed_photo_not_done(ctx):
    blank = ctx.tmp / "blank.png"
    blank.write_bytes(encode(np.full((120, 120, 3), 128, np.uint8)))
    clear(ctx.cli("align", blank, "--out", ctx.tmp / "d"), r"no face")
    r = ctx.cli("align", blank, "--out", ctx.tmp / "d", "--detector", "dlib-cnn")
    assert "nothing to do" not in r.output
    return clear(r, r"no face.*tried dlib-cnn")


@run_case("`align` again with other settings: refused before the work, naming what differs")
def case_align_other_settings(ctx):
    a, d = ctx.photo(ctx.tmp / "in" / "a.jpg"), ctx.tmp / "d"
    ok(ctx.cli("align", a, "--out", d))
    return clear(ctx.cli("align", a, "--out", d, "--ext", "jpg"), r"other settings", r"ext: 'jpg' here, 'png' there",
                 r"--overwrite")


@run_case("last_inversion.json after a resumed run lists every face of the folder")
def case_last_inversion_after_resume(ctx):
    src, d = ctx.tmp / "in", ctx.tmp / "d"
    ok(ctx.invert(ctx.crop(src / "a.png", 0), "--out", d))
    r = ok(ctx.invert(ctx.crop(src / "a.png", 0), ctx.crop(src / "b.png", 1), "--out", d))
    assert "resuming: 1 face(s) already done" in r.output
    last = json.loads((ctx.home / "last_inversion.json").read_text())
    assert sorted(Path(f["photo"]).name for f in last["faces"]) == ["a.png", "b.png"]
    return CORRECT


# -- tracebacks and wrong advice
@run_case("--out in a read-only folder: a usage error before any work")
def case_out_read_only(ctx):
    with read_only(ctx.tmp / "ro") as ro, no_model_loads():
        return clear(ctx.invert(ctx.crop(ctx.tmp / "a.png"), "--out", ro / "sub"), r"cannot write into", code=2)


@run_case("--out under a file: a usage error before any work")
def case_out_under_a_file(ctx):
    a = ctx.crop(ctx.tmp / "a.png")
    with no_model_loads():
        clear(ctx.invert(a, "--out", a / "sub"), r"lies under .*a\.png, which is a file", code=2)
        return clear(ctx.cli("generate", "--out", a / "x"), r"which is a file", code=2)


@run_case("a read-only FACEEDIT_HOME: a clear error before any work")
def case_read_only_home(ctx):
    with read_only(ctx.tmp / "home_ro") as home, no_model_loads():
        return clear(ctx.invert(ctx.crop(ctx.tmp / "a.png"), "--out", ctx.tmp / "d", env={"FACEEDIT_HOME": str(home)}),
                     r"FACEEDIT_HOME .*cannot write", r"set FACEEDIT_HOME")


@run_case("the pixel limit's message names an option the command has (--max-pixels of edit and invert)")
def case_pixel_limit_option(ctx):
    a = ctx.crop(ctx.tmp / "a.png")
    with no_model_loads():
        clear(ctx.invert(a, "--max-pixels", "100", "--out", ctx.tmp / "d"), r"over the limit.*--max-pixels")
        clear(ctx.edit(ctx.photo(ctx.tmp / "p.jpg"), "--attr", "smile", "--max-pixels", "1000", "--out",
                       ctx.tmp / "e"), r"over the limit.*--max-pixels")
    ok(ctx.invert(a, "--max-pixels", "256", "--out", ctx.tmp / "d"))  # 16x16 = 256: at the limit, taken
    return CLEAR


@run_case("empty and unreadable inputs are reported before any model loads")
def case_bad_inputs_before_the_model(ctx):
    empty, text = ctx.tmp / "empty.jpg", ctx.tmp / "text.png"
    empty.write_bytes(b"")
    text.write_bytes(b"hello " * 20)
    with no_model_loads():
        clear(ctx.invert(empty, text, "--out", ctx.tmp / "d"), r"empty\.jpg is empty", r"text\.png is not an image")
        return clear(ctx.edit(empty, "--attr", "smile", "--out", ctx.tmp / "e"), r"empty\.jpg is empty")


@run_case("one rule for input formats: `edit` and `invert` both take a GIF, by name and in a folder")
def case_gif_one_rule(ctx):
    g = ctx.photo(ctx.tmp / "in" / "a.gif", "GIF")
    ok(ctx.edit(g, "--attr", "smile=1", "--out", ctx.tmp / "e"))
    assert load_image(ctx.tmp / "e" / "a_edit.png").shape == (512, 512, 3)
    ok(ctx.invert(ctx.tmp / "in", "--out", ctx.tmp / "i", aligned=False))
    assert json.loads((ctx.tmp / "i" / "a_0.json").read_text())["photo"] == str(g.resolve())
    return CORRECT


# -- silently wrong
@run_case("--strength beyond the range the directions were measured on: refused without --force")
def case_strength_beyond_measured(ctx):
    p = ctx.photo(ctx.tmp / "a.jpg")
    clear(ctx.edit(p, "--attr", "smile=1e9", "--out", ctx.tmp / "e"), r"beyond the range .*measured",
          r"--force")
    assert not (ctx.tmp / "e" / "a_edit.png").exists()
    ok(ctx.edit(p, "--attr", "smile=1e9", "--force", "--out", ctx.tmp / "e"))
    return CLEAR


@run_case("a latent far outside the model's distribution (codes x 1e6): refused without --force")
def case_latent_far_outside(ctx):
    from dataclasses import replace

    from faceedit.inversion.latent import Latent

    from faceedit.checkpoints import load_model

    ok(ctx.invert(ctx.photo(ctx.tmp / "a.jpg"), "--out", ctx.tmp / "i", aligned=False))
    lat = Latent.load(ctx.tmp / "i" / "a_0.latent.safetensors")
    with torch.no_grad():  # a code of the model's own distribution, placed on the inverted face
        w = load_model(ctx.base["model"]).G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(3)))
    near = replace(lat, codes=w).save(ctx.tmp / "near.latent.safetensors")
    far = replace(lat, codes=w * 1e6).save(ctx.tmp / "far.latent.safetensors")
    clear(ctx.edit("--latent", far, "--attr", "smile=1", "--out", ctx.tmp / "e"), r"far outside .*distribution",
          r"--force")
    ok(ctx.edit("--latent", near, "--attr", "smile=1", "--out", ctx.tmp / "e"))
    return CLEAR


@run_case("a badge beside a face is not a face: skipped, saying so; each face's detector score reported")
def case_badge_beside_a_face(ctx):
    r = ok(ctx.invert(ctx.photo(ctx.tmp / "astronaut.jpg"), "--face", "all", "--out", ctx.tmp / "i",
                      aligned=False))
    assert "inverted 1 face(s)" in r.output and "face 0 (detector score 1.21)" in r.output, r.output
    assert re.search(r"detector score 0\.16 is below 0\.3.*--min-score 0 keeps it", r.output), r.output
    r = ok(ctx.invert(ctx.photo(ctx.tmp / "astronaut.jpg"), "--face", "all", "--min-score", "0", "--out",
                      ctx.tmp / "j", aligned=False))
    assert "inverted 2 face(s)" in r.output and "(detector score 0.16)" in r.output
    return CORRECT


@run_case("the default --out replaces the previous run's results: said before the work")
def case_default_out_replaced_says_so(ctx):
    p = ctx.photo(ctx.tmp / "a.jpg")
    assert "replacing" not in ok(ctx.edit(p, "--attr", "smile=1", "--out", ctx.tmp / "e")).output
    r = ok(ctx.edit(p, "--attr", "smile=2", "--out", ctx.tmp / "e"))
    assert re.search(r"holds results of an earlier `faceedit edit` of 1 of these input\(s\): replacing", r.output)
    return CORRECT


@pytest.fixture(scope="module")
def run_model(tmp_path_factory):
    return make_run_model(tmp_path_factory.mktemp("run_model"))


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.__name__[5:] for c in RUN_CASES])
def test_run_case(case, run_model, tmp_path):
    CORPUS_STATS["run inputs"] += 1
    outcome = case(RunCtx(run_model, tmp_path))
    assert outcome in (CORRECT, CLEAR), outcome
    CORPUS_STATS[f"run {outcome}"] += 1


def test_readme_table_counts_these_cases(tmp_path, tiny):
    """README's bad-input table (bench/scripts/bad_input_table.py --write) is this suite's: as many cases
    per suite as its lists hold, all handled (the tests above check each). A case added here without
    regenerating the table fails this."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (images|latent files|direction files|runs) [^|]*\| (\d+)[^|]*\| (\d+) \|", text, re.M)
    got = {name: (int(tried), int(handled)) for name, tried, handled in rows}
    marker = tmp_path / "PWNED"
    want = {"images": len(image_corpus(tmp_path / "images")), "latent files": len(bad_latents(tiny, marker)),
            "direction files": len(bad_directions(tiny, marker)), "runs": len(RUN_CASES)}
    assert got == {k: (n, n) for k, n in want.items()}, (got, want)


def test_zz_report():
    """Prints the corpus table (run with ``-s``); also checks that the corpus is not empty."""
    assert CORPUS_STATS["image inputs"] >= 40
    print("\nbad-input corpus:", dict(sorted(CORPUS_STATS.items())))
