"""Fuzz target: the latent and direction file readers (``Latent.load``, ``Direction.load``).

The first input byte picks the reader and the file suffix; the rest is the file.
Documented errors: ``LatentFileError`` and ``DirectionFileError``.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atheris  # noqa: E402

with atheris.instrument_imports(include=["faceedit"]):
    import torch

    from faceedit.editing.direction import Direction, DirectionFileError
    from faceedit.inversion.latent import Latent, LatentFileError

ALLOWED = (LatentFileError, DirectionFileError)
WORK = tempfile.mkdtemp(prefix="fuzz-lat-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
SUFFIXES = (".safetensors", ".pt", ".pkl", ".npy")


FIXED = os.environ.get("FACEEDIT_FUZZ_KIND")  # "latent" or "direction": run_fuzz.py pins one reader


def one_input(data: bytes) -> None:
    if not data:
        return
    which, suffix, body = data[0] & 1, SUFFIXES[(data[0] >> 1) % 4], data[1:]
    if FIXED:
        which = ("latent", "direction").index(FIXED)
    p = os.path.join(WORK, "f" + suffix)
    with open(p, "wb") as f:
        f.write(body)
    if which == 0:
        lat = Latent.load(p)
        lat.check_model("tiny@000000000000")
    else:
        d = Direction.load(p)
        d.full()


def seeds() -> list:
    torch.manual_seed(0)
    codes = torch.randn(1, 6, 8)
    lat = Latent("w+", codes, "tiny@000000000000", noise=(torch.randn(1, 1, 4, 4),), meta={"a": [1, 2]})
    lat.save(os.path.join(WORK, "s.safetensors"))
    d = Direction.from_vector(torch.randn(6, 8), space="w+", attribute="smile", model_id="tiny@000000000000",
                              num_ws=6, layers=(0, 1, 2), method="manual")
    d.save(os.path.join(WORK, "d.safetensors"))
    a = open(os.path.join(WORK, "s.safetensors"), "rb").read()
    b = open(os.path.join(WORK, "d.safetensors"), "rb").read()
    return [b"\x00" + a, b"\x01" + b, b"\x00" + b, b"\x01" + a]


if __name__ == "__main__":
    from _harness import main

    main(FIXED or "latent", one_input, ALLOWED, seeds)
