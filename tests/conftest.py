import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir():
    if not os.path.isdir(SHARED):
        pytest.skip("../shared is not beside the checkout")
    return SHARED


class _MeanAbsIdentity:
    """A stand-in for ``metrics.identity.IdentityEncoder`` (dlib): distance = mean absolute pixel difference."""

    def distance(self, a, b):
        import numpy as np

        return np.abs(a.astype(float) - b.astype(float)).mean(axis=(1, 2, 3)) / 255

    def similarity_from_distance(self, d):
        return 1 - d


@pytest.fixture
def fake_identity():
    """The stand-in identity encoder's class (benches' CPU identity passes without dlib)."""
    return _MeanAbsIdentity


def load_bench_script(name: str):
    """``bench/scripts/NAME.py`` imported as a module of that name (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "bench", "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def bench_script():
    """:func:`load_bench_script`, for tests of the benchmark scripts' own logic."""
    return load_bench_script
