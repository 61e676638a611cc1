"""Model registry, safe readers for every weight format, the native writer, shipped weights."""
from .budget import CheckpointSizeError
from .loaded import LoadedModel
from .native import CheckpointError, load_native, save_native
from .registry import REGISTRY, default_model, list_models, load_generator, load_model, locate, resolve

__all__ = ["CheckpointError", "CheckpointSizeError", "LoadedModel", "load_native", "save_native", "REGISTRY",
           "default_model", "list_models", "load_generator", "load_model", "locate", "resolve"]
