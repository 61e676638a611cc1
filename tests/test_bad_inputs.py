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
    from faceedit.checkpoints import load_model, save_native
    from faceedit.editing.direction import Direction
    from faceedit.inversion.latent import Latent
    from faceedit.networks import Generator

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
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


def test_zz_report():
    """Prints the corpus table (run with ``-s``); also checks that the corpus is not empty."""
    assert CORPUS_STATS["image inputs"] >= 40
    print("\nbad-input corpus:", dict(sorted(CORPUS_STATS.items())))
