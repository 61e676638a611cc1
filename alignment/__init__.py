"""Face detection, landmarks, the FFHQ alignment recipe, inverse warp and paste-back."""
from .types import FACES64, FFHQ, AlignedFace, AlignmentRecipe

__all__ = ["AlignedFace", "AlignmentRecipe", "FFHQ", "FACES64"]
