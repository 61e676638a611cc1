"""Pure-PyTorch networks: StyleGAN2 synthesis, MLP (W) and transformer (W++) mappings,
the residual discriminator. Knows nothing of files (that is ``faceedit.checkpoints``)."""
from .mapping import MappingMLP, MappingTransformer
from .stylegan2 import Discriminator, Generator, SynthesisNetwork, channels_for

__all__ = ["Generator", "SynthesisNetwork", "Discriminator", "MappingMLP", "MappingTransformer",
           "channels_for"]
