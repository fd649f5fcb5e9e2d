"""The one stored example format shared by every animax dataset, and how to fill it.

Every builder writes the same features, so datasets mix freely and one pipeline reads them
all. Nothing here needs TensorFlow: images are stored as the source file's encoded bytes
(JPEG, PNG, ...) and masks as PNG bytes written with Pillow; the pipeline decodes them with
Pillow. Stored fields (K = 26 SMAL keypoints, J = 35 SMAL joints):

    image           encoded image bytes, exactly the source file (EXIF orientation honoured
                    at decode time, as `animax.image.io.load_image` does)
    mask            PNG, uint8 [H, W, 1], 255 = animal; a 1x1 black PNG when has_mask is False
    image_id        where the example came from (source-relative path, plus an instance tag)
    bbox            float32 [4] (x1, y1, x2, y2) in image pixels
    keypoints_2d    float32 [K, 3]: x, y in image pixels and confidence (0 = unlabelled)
    keypoints_3d    float32 [K, 4]: x, y, z in the camera's orientation (posed body, no
                    translation; x right, y down, z forward) and confidence
    betas           float32 [41] SMAL shape coefficients
    pose            float32 [J, 3] axis-angle, joint 0 = global orientation in the camera
                    frame, joints 1.. local rotations in the body model's frame
    trans           float32 [3] camera translation of the body model
    family          int32, SMAL shape family index into FAMILY_NAMES, -1 when unknown
    identity        int32, the individual animal within its dataset (Horse-10: one per horse),
                    -1 when unknown
    source_keypoints float32 [S, 3]: every keypoint of the source dataset (x, y in image pixels,
                    confidence) in its keypoint map's order, mapped to SMAL or not (Horse-10: all
                    22 parts); [0, 3] for sources labelled in the SMAL layout
    source_mirror   int32 [S]: each source keypoint's left/right partner (for mirroring)
    pck_scale       float32, the length in image pixels that a dataset's own PCK divides by
                    (Horse-10: its horse's median nose-to-eye distance), 0 when it has none
    has_mask, has_keypoints_3d, has_betas, has_pose, has_trans: bool
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from animax.smal.constants import KEYPOINT_NAMES, NUM_JOINTS

NUM_KEYPOINTS = len(KEYPOINT_NAMES)
NUM_BETAS = 41
# The SMAL shape prior's five clusters, in the order of its `cluster_means`.
FAMILY_NAMES = ("felidae", "canidae", "equidae", "bovidae", "hippopotamidae")
UNKNOWN_FAMILY = -1
UNKNOWN_IDENTITY = -1


def _tensor(*shape):
    return tfds.features.Tensor(shape=shape, dtype=np.float32)


FEATURES = tfds.features.FeaturesDict({
    "image": tfds.features.Image(shape=(None, None, 3)),
    "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
    "image_id": tfds.features.Text(),
    "bbox": _tensor(4),
    "keypoints_2d": _tensor(NUM_KEYPOINTS, 3),
    "keypoints_3d": _tensor(NUM_KEYPOINTS, 4),
    "betas": _tensor(NUM_BETAS),
    "pose": _tensor(NUM_JOINTS, 3),
    "trans": _tensor(3),
    "family": tfds.features.Scalar(dtype=np.int32),
    "identity": tfds.features.Scalar(dtype=np.int32),
    "pck_scale": tfds.features.Scalar(dtype=np.float32),
    "source_keypoints": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
    "source_mirror": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    "has_mask": tfds.features.Scalar(dtype=np.bool_),
    "has_keypoints_3d": tfds.features.Scalar(dtype=np.bool_),
    "has_betas": tfds.features.Scalar(dtype=np.bool_),
    "has_pose": tfds.features.Scalar(dtype=np.bool_),
    "has_trans": tfds.features.Scalar(dtype=np.bool_),
})

# Fields read back as encoded bytes: decoding happens in the input pipeline, with Pillow.
ENCODED_FIELDS = ("image", "mask")


def encode_png(array) -> bytes:
    """uint8 [H, W] or [H, W, C] -> PNG bytes (Pillow; TFDS would need TensorFlow for this)."""
    array = np.asarray(array, np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


_NO_MASK = encode_png(np.zeros((1, 1), np.uint8))


def family_index(family) -> int:
    """A family id (int) or name ('Equidae', 'canidae', ...) -> index into FAMILY_NAMES, or -1."""
    if family is None or isinstance(family, bool):
        return UNKNOWN_FAMILY
    if isinstance(family, (int, np.integer)):
        return int(family) if 0 <= family < len(FAMILY_NAMES) else UNKNOWN_FAMILY
    name = str(family).strip().lower()
    if name.isdigit():
        return family_index(int(name))
    return FAMILY_NAMES.index(name) if name in FAMILY_NAMES else UNKNOWN_FAMILY


def make_example(*, image: bytes, image_id: str, bbox, keypoints_2d, keypoints_3d=None,
                 betas=None, pose=None, trans=None, mask: bytes | None = None,
                 family: int = UNKNOWN_FAMILY, identity: int = UNKNOWN_IDENTITY, pck_scale: float = 0.0,
                 source_keypoints=None, source_mirror=None) -> dict:
    """One stored example; absent annotations become zeros with their has-flag False.

    bbox (x1, y1, x2, y2); keypoints_2d [26, 3]; keypoints_3d [26, 3] (confidence 1) or
    [26, 4]; betas [<= 41] (missing trailing directions are 0); pose [35, 3] or [105].
    """
    if keypoints_3d is not None:
        keypoints_3d = np.asarray(keypoints_3d, np.float32)
        if keypoints_3d.shape[-1] == 3:
            keypoints_3d = np.concatenate([keypoints_3d, np.ones_like(keypoints_3d[:, :1])], -1)
    padded_betas = None
    if betas is not None:
        betas = np.asarray(betas, np.float32).ravel()
        padded_betas = np.zeros(NUM_BETAS, np.float32)
        padded_betas[:min(len(betas), NUM_BETAS)] = betas[:NUM_BETAS]

    def field(value, shape):
        return (np.zeros(shape, np.float32) if value is None
                else np.asarray(value, np.float32).reshape(shape))

    return {
        "image": image,
        "mask": _NO_MASK if mask is None else mask,
        "image_id": image_id,
        "bbox": field(bbox, (4,)),
        "keypoints_2d": field(keypoints_2d, (NUM_KEYPOINTS, 3)),
        "keypoints_3d": field(keypoints_3d, (NUM_KEYPOINTS, 4)),
        "betas": field(padded_betas, (NUM_BETAS,)),
        "pose": field(pose, (NUM_JOINTS, 3)),
        "trans": field(trans, (3,)),
        "family": np.int32(family),
        "identity": np.int32(identity),
        "pck_scale": np.float32(pck_scale),
        "source_keypoints": (np.zeros((0, 3), np.float32) if source_keypoints is None
                             else np.asarray(source_keypoints, np.float32).reshape(-1, 3)),
        "source_mirror": (np.zeros(0, np.int32) if source_mirror is None
                          else np.asarray(source_mirror, np.int32).reshape(-1)),
        "has_mask": mask is not None,
        "has_keypoints_3d": keypoints_3d is not None,
        "has_betas": betas is not None,
        "has_pose": pose is not None,
        "has_trans": trans is not None,
    }
