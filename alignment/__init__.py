"""Face detection, landmarks, the FFHQ alignment recipe, inverse warp and paste-back.

Everything heavy (dlib, OpenCV, facenet-pytorch) is imported inside the functions that
need it, so importing this package is cheap.
"""
from .align import AlignmentReport, SkippedFace, align, align_photo, face_from_dict, face_to_dict
from .detect import Detection, default_upsample, detect_faces
from .errors import AlignmentError, FaceNotFoundError, FaceTooSmallError, ModelFileError
from .ffhq import align_landmarks, ffhq_quad, to_cv
from .landmarks import landmarks68, landmarks68_averaged, landmarks68_on_crop
from .models import model_file
from .mtcnn5 import calibrate_mtcnn5, mtcnn5_refined
from .paste import paste_back
from .resample import ALIGN_PATHS
from .types import FACES64, FFHQ, AlignedFace, AlignmentRecipe

__all__ = ["AlignedFace", "AlignmentRecipe", "FFHQ", "FACES64", "align", "align_photo", "AlignmentReport",
           "SkippedFace", "face_to_dict", "face_from_dict", "align_landmarks", "ffhq_quad", "to_cv", "detect_faces",
           "default_upsample", "Detection", "landmarks68", "landmarks68_averaged", "landmarks68_on_crop",
           "mtcnn5_refined", "calibrate_mtcnn5", "model_file", "paste_back", "AlignmentError", "FaceNotFoundError",
           "FaceTooSmallError", "ModelFileError", "ALIGN_PATHS"]
