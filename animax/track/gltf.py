"""An animated SMAL track as glTF 2.0 binary (.glb): the shaped mesh skinned to the SMAL skeleton,
with per-frame joint rotations and root motion, as Blender and three.js import it.

- skeleton: one node per joint, parented as the kinematic tree, each at its rest offset from its
  parent (the shaped rest joints of the track's one shape);
- skin: inverse bind matrices (translations to each rest joint: SMAL's rest pose has no
  rotation), and per vertex the four largest skinning weights, renormalised (glTF's JOINTS_0 /
  WEIGHTS_0 hold four);
- animation: per joint a rotation channel (the local rotation of every frame), and the root's
  translation channel (rest root + the track's translation), sampled at `fps`, LINEAR.

glTF skinning is linear blend skinning without SMAL's pose-dependent corrective offsets, so the
file reproduces `smal_forward` (to float32 rounding) for a body model without pose blend shapes
and with at most four weights per vertex, the built-in stand-in among them; otherwise it
differs from it by those offsets and the dropped weights (tests/test_track_gltf.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from animax.files import atomic_write
from animax.geometry import rotmat_to_quaternion, sign_continuous

# glTF constants
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
GLB_MAGIC, GLB_JSON, GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
INFLUENCES = 4
# A camera frame (x right, y down, z forward) to glTF's (y up, the viewer looking down -z): a half
# turn about x puts what the camera saw upright and in front of a glTF camera at the origin.
CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


def top_weights(lbs_weights, count=INFLUENCES):
    """(joints [V, count] uint16, weights [V, count] float32 summing to 1): each vertex's largest
    skinning weights. A slot of zero weight names joint 0, as glTF requires of unused slots."""
    w = np.asarray(lbs_weights, np.float64)
    joints = np.argsort(-w, axis=1, kind="stable")[:, :count]
    weights = np.take_along_axis(w, joints, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    weights = weights.astype(np.float32)
    return np.where(weights > 0, joints, 0).astype(np.uint16), weights


def continuous_quaternions(rotations):
    """[T, J, 3, 3] -> glTF quaternions (x, y, z, w) [T, J, 4], each frame's sign chosen nearest
    the previous frame's, so that interpolation takes the short way."""
    q = sign_continuous(rotmat_to_quaternion(np.asarray(rotations, np.float64), xp=np))
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1).astype(np.float32)


def write_glb(path, body, betas, rotations, translation=None, fps=30.0, name="animal", world=None) -> None:
    """Writes the track (betas [NB'] one shape, rotations [T, J, 3, 3] local rotations with joint 0
    the global orientation, translation [T, 3] or None) as PATH (.glb), atomically.

    world [3, 3]: a rotation of the whole animal about the origin, e.g. from a camera frame
    (y down) to glTF's y-up (`CAMERA_TO_GLTF`)."""
    rotations = np.array(rotations, np.float32)
    frames = len(rotations)
    betas = np.zeros(body.num_betas, np.float32) if betas is None else np.asarray(betas, np.float32)
    shape = np.pad(betas, (0, body.num_betas - len(betas)))
    vertices = (np.asarray(body.v_template) + np.einsum("l,lcv->vc", shape,
                np.asarray(body.shape_basis).reshape(body.num_betas, 3, -1))).astype(np.float32)
    rest = (np.asarray(body.j_template) + np.einsum("l,jcl->jc", shape, np.asarray(body.j_shapedirs))
            ).astype(np.float32)
    parents = list(body.parents)
    offsets = np.array([rest[j] - (rest[p] if p >= 0 else 0.0) for j, p in enumerate(parents)], np.float32)
    translation = np.zeros((frames, 3), np.float32) if translation is None else np.asarray(translation, np.float32)
    joints, weights = top_weights(body.lbs_weights)
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (len(parents), 1, 1))
    inverse_bind[:, :3, 3] = -rest
    times = (np.arange(frames) / fps).astype(np.float32)
    root_translation = offsets[0] + translation
    if world is not None:       # v' = W (R (v - j0) + j0 + t): the root turns by W, its path too
        world = np.asarray(world, np.float32)
        rotations[:, 0] = world @ rotations[:, 0]
        root_translation = root_translation @ world.T
    quaternions = continuous_quaternions(rotations)

    blob = _Buffer()
    attributes = {"POSITION": blob.add(vertices, ARRAY_BUFFER, bounds=True),
                  "JOINTS_0": blob.add(joints, ARRAY_BUFFER), "WEIGHTS_0": blob.add(weights, ARRAY_BUFFER)}
    indices = blob.add(np.asarray(body.faces, np.uint32).reshape(-1), ELEMENT_ARRAY_BUFFER, kind="SCALAR")
    bind = blob.add(inverse_bind.transpose(0, 2, 1).reshape(-1, 16), kind="MAT4")   # column-major
    time_accessor = blob.add(times, kind="SCALAR", bounds=True)
    samplers = [{"input": time_accessor, "output": blob.add(quaternions[:, j]), "interpolation": "LINEAR"}
                for j in range(len(parents))]
    samplers.append({"input": time_accessor, "output": blob.add(root_translation.astype(np.float32)),
                     "interpolation": "LINEAR"})
    channels = [{"sampler": j, "target": {"node": 1 + j, "path": "rotation"}} for j in range(len(parents))]
    channels.append({"sampler": len(parents), "target": {"node": 1, "path": "translation"}})

    joint_nodes = [{"name": body.joint_names[j], "translation": offsets[j].tolist(),
                    **({"children": [1 + c for c, p in enumerate(parents) if p == j]}
                       if j in parents else {})} for j in range(len(parents))]
    roots = [1 + j for j, p in enumerate(parents) if p < 0]
    document = {
        "asset": {"version": "2.0", "generator": "animax"},
        "scene": 0, "scenes": [{"nodes": [0, *roots]}],
        "nodes": [{"name": name, "mesh": 0, "skin": 0}, *joint_nodes],
        "meshes": [{"name": name, "primitives": [{"attributes": attributes, "indices": indices}]}],
        "skins": [{"joints": [1 + j for j in range(len(parents))], "inverseBindMatrices": bind,
                   "skeleton": roots[0]}],
        "animations": [{"name": "track", "samplers": samplers, "channels": channels}],
        "buffers": [{"byteLength": blob.size}], "bufferViews": blob.views, "accessors": blob.accessors,
    }
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(_glb(document, blob.data())))


class _Buffer:
    """One binary buffer of 4-byte-aligned views, an accessor each."""

    KINDS = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
    TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint16): UNSIGNED_SHORT, np.dtype(np.uint32): UNSIGNED_INT}

    def __init__(self):
        self.chunks, self.views, self.accessors, self.size = [], [], [], 0

    def add(self, array, target=None, kind=None, bounds=False) -> int:
        array = np.ascontiguousarray(array)
        width = 1 if array.ndim == 1 else array.shape[1]
        data = array.tobytes()
        view = {"buffer": 0, "byteOffset": self.size, "byteLength": len(data), **({"target": target} if target else {})}
        self.chunks.append(data + b"\0" * (-len(data) % 4))
        self.size += len(self.chunks[-1])
        self.views.append(view)
        accessor = {"bufferView": len(self.views) - 1, "componentType": self.TYPES[array.dtype],
                    "count": len(array), "type": kind or self.KINDS[width]}
        if bounds:      # required for POSITION and animation inputs
            accessor.update(min=np.atleast_1d(array.min(0)).tolist(), max=np.atleast_1d(array.max(0)).tolist())
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def data(self) -> bytes:
        return b"".join(self.chunks)


def _glb(document, binary) -> bytes:
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), GLB_JSON) + text + struct.pack("<II", len(binary), GLB_BIN) + binary
    return struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks
