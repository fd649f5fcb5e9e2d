"""Left/right symmetry of the SMAL layout: whose mirror image each keypoint and joint is,
and what mirroring the image does to a pose.

The body-model frame (SMAL's and the stand-in's): x forward, y to the animal's left,
z up. The sagittal plane is y = 0, so mirroring the body is S = diag(1, -1, 1). For SMAL
this is read off its own data: the released `walking_toy_symmetric` pose prior's mean
satisfies mean[LLeg1] = (-1, 1, -1) * mean[RLeg1] for every left/right pair (tested in
tests/test_data_augment.py when the file is present).

A local joint rotation R of the mirrored body is S R' S, where R' is the rotation of the
joint's mirror partner (left <-> right, other joints themselves). In axis-angle,
S R(w) S = R(det(S) S w), i.e. (x, y, z) -> (-x, y, -z): not the (x, -y, -z) of SMPL,
whose sagittal plane is x = 0.

The global orientation R0 maps the body frame to the camera frame (x right, y down,
z forward). Mirroring the image flips the camera's x (F = diag(-1, 1, 1)); the animal in
it is the mirrored body posed by R0' = F R0 S, a proper rotation again. More generally an
image transform whose camera-frame map is M (a rotation about the optical axis, times F
when mirrored) turns R0 into M R0 (S when mirrored) and camera-frame points X into M X.
"""

from __future__ import annotations

import numpy as np

from animax.smal.constants import JOINT_NAMES, KEYPOINT_NAMES

BODY_REFLECTION = np.diag([1.0, -1.0, 1.0])


def _partner(name: str) -> str:
    """The mirror partner's name: left_x <-> right_x, L_x <-> R_x (Animal-Pose), Nearx <-> Offx
    (Horse-10, horsemanship's sides), L<Upper>... <-> R<Upper>..., else itself."""
    for left, right in (("left_", "right_"), ("right_", "left_"), ("L_", "R_"), ("R_", "L_"),
                        ("Near", "Off"), ("Off", "Near")):
        if name.startswith(left):
            return right + name[len(left):]
    if len(name) > 1 and name[0] in "LR" and name[1].isupper():
        return {"L": "R", "R": "L"}[name[0]] + name[1:]
    return name


def mirror_permutation(names) -> np.ndarray:
    """Index of each name's mirror partner: mirrored[i] = original[perm[i]]. [N] int."""
    return np.array([names.index(_partner(n)) for n in names])


KEYPOINT_MIRROR = mirror_permutation(KEYPOINT_NAMES)
JOINT_MIRROR = mirror_permutation(JOINT_NAMES)


def transform_pose(rotations, camera_map, mirrored: bool) -> np.ndarray:
    """A pose after an image transform. rotations [J, 3, 3] (joint 0 global, camera frame),
    camera_map [3, 3] the transform in the camera frame (det -1 when mirrored). -> [J, 3, 3]."""
    rotations = np.asarray(rotations)
    if mirrored:
        out = BODY_REFLECTION @ rotations[JOINT_MIRROR] @ BODY_REFLECTION
        out[0] = camera_map @ rotations[0] @ BODY_REFLECTION
    else:
        out = rotations.copy()
        out[0] = camera_map @ rotations[0]
    return out
