"""How many loader workers a batch run starts for its detector, which photos the process aligns
itself (on its GPU) while they start, and that the workers align on the CPU."""
import sys
import types

import pytest

from faceedit import batchrun
from faceedit.batchrun import in_process_photos, prepared_photos, worker_photos


def test_a_worker_must_be_paid_for_by_its_photos():
    assert worker_photos("mtcnn") == round(3.6 / 0.25) == 14
    assert worker_photos("dlib") == 20 and worker_photos("dlib-cnn") == batchrun.PHOTOS_PER_WORKER
    # the process aligns while the workers start (3.6 s at 80 ms a photo: 45 photos), all of a small folder
    assert in_process_photos(200, "mtcnn", 0.08) == 45
    assert in_process_photos(58, "mtcnn", 0.08) == 58 and in_process_photos(59, "mtcnn", 0.08) == 45
    assert in_process_photos(100, "mtcnn", 10.0) == 0  # a slow process: the workers do it all


class _Loader:
    """Stands in for torch's DataLoader: records what the workers would get, yields their items."""
    made = []

    def __init__(self, dataset, *, num_workers, **kw):
        self.dataset, self.num_workers = dataset, num_workers
        _Loader.made.append(self)

    def __iter__(self):
        return (self.dataset[i] for i in range(len(self.dataset)))


def test_workers_get_the_photos_after_the_process_and_no_gpu(monkeypatch):
    seen = []

    def prepare(path, *, align_options, **kw):
        seen.append((path, align_options.get("device")))
        return path

    monkeypatch.setattr(batchrun, "prepare_photo", prepare)
    fake = types.ModuleType("torch.utils.data")
    fake.DataLoader = _Loader
    monkeypatch.setitem(sys.modules, "torch.utils.data", fake)
    monkeypatch.setattr("faceedit.alignment.background.worker_context", lambda: None)
    paths = [f"p{i}.jpg" for i in range(40)]
    opts = {"detector": "mtcnn", "device": "cuda"}
    got = list(prepared_photos(paths, workers=8, in_process=5, align_options=opts))
    assert got == paths  # in order
    (loader,) = _Loader.made
    assert loader.num_workers == 35 // 14 == 2 and loader.dataset.paths == paths[5:]
    assert seen == [(p, "cuda") for p in paths[:5]] + [(p, None) for p in paths[5:]]
    assert opts == {"detector": "mtcnn", "device": "cuda"}  # the caller's options untouched
    _Loader.made.clear()
    seen.clear()
    assert list(prepared_photos(paths[:18], workers=8, in_process=5, align_options=opts)) == paths[:18]
    assert _Loader.made == [] and seen == [(p, "cuda") for p in paths[:18]]  # 13 photos pay for no worker


def test_pipeline_aligns_on_its_gpu_only_with_mtcnn():
    import torch

    from faceedit.pipeline import _align_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _align_device("auto", cuda, "mtcnn") == cuda and _align_device("auto", cuda, "dlib") is None
    assert _align_device("auto", cpu, "mtcnn") is None and _align_device(None, cuda, "mtcnn") == cuda
    assert _align_device("cpu", cuda, "mtcnn") is None
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="(?i)cuda"):
            _align_device("cuda", cpu, "mtcnn")
