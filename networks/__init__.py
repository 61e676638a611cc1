"""Pure-PyTorch networks: StyleGAN2 synthesis, MLP (W) and transformer (W++) mappings,
the residual discriminator, the StyleGAN v1 generator. Knows nothing of files (that is ``faceedit.checkpoints``)."""
from .mapping import MappingMLP, MappingTransformer
from .stylegan1 import Generator1, SynthesisNetwork1
from .stylegan2 import SYNTHESIS_PATHS, Discriminator, Generator, SynthesisNetwork, channels_for

#: Generator architectures by the name native checkpoints, latents and directions record.
GENERATORS = {"stylegan2": Generator, "stylegan1": Generator1}

__all__ = ["Generator", "SynthesisNetwork", "Discriminator", "MappingMLP", "MappingTransformer",
           "channels_for", "SYNTHESIS_PATHS", "Generator1", "SynthesisNetwork1", "GENERATORS"]
