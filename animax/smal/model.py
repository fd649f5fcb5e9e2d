"""The SMAL body model as a pytree, and its skinning (LBS) as pure jitted functions.

Skinning follows the SMPL family (smplx `lbs` with rotation matrices as input), one small
function per step of the SMPL paper (Loper et al. 2015, eq. 1-4):

    blend_shapes        T + B_S(betas) + B_P(pose)   shape and pose corrective offsets
    shaped_joints       J(betas)                     joints regressed from the shaped template
    rigid_transforms    G_k(pose, J)                 the kinematic chain, root to leaves
    blend_transforms    sum_k w_k G_k                per-vertex blend of the joint transforms
    apply_transforms    W(...) applied to v_posed    the posed vertices
    regress_keypoints                                means of the keypoint vertex sets

Vertices stay planar ([B, 3, V]) until the last step so that XLA fuses long rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from animax.runtime import exact_matmuls


@struct.dataclass
class SMALModel:
    """Arrays of one body model (leaves) plus its static layout (hashable metadata).

    V vertices, J joints, F faces, K keypoints, NB shape directions, M longest keypoint set.
    """
    v_template: jax.Array        # [V, 3]
    # Blend shapes in planar layout: row l is direction l's x offsets of all V vertices, then
    # its y, then z. Skinning keeps vertices planar ([B, 3, V]) until its last step, where
    # XLA then fuses long contiguous rows instead of looping over 3-vectors.
    shape_basis: jax.Array       # [NB, 3*V]
    pose_basis: jax.Array        # [(J-1)*9, 3*V]
    j_regressor: jax.Array       # [J, V]
    lbs_weights: jax.Array       # [V, J]
    faces: jax.Array             # [F, 3] int32
    # Joints regressed from the shaped template are linear in betas: J = j_template + j_shapedirs @ betas.
    # Precomputing them skips a [J, V] x [B, V, 3] product per call.
    j_template: jax.Array        # [J, 3]
    j_shapedirs: jax.Array       # [J, 3, NB]
    # Keypoint k = sum_m weight[k, m] * vertex[index[k, m]]: the mean of its vertex set, padded.
    keypoint_index: jax.Array    # [K, M] int32
    keypoint_weight: jax.Array   # [K, M]
    parents: tuple[int, ...] = struct.field(pytree_node=False)
    joint_names: tuple[str, ...] = struct.field(pytree_node=False)
    keypoint_names: tuple[str, ...] = struct.field(pytree_node=False)
    keypoint_vertex_sets: tuple[tuple[int, ...], ...] = struct.field(pytree_node=False)
    name: str = struct.field(pytree_node=False, default="smal")

    @property
    def shapedirs(self) -> jax.Array:
        """[V, 3, NB]: the released file's layout."""
        return self.shape_basis.reshape(-1, 3, self.num_vertices).transpose(2, 1, 0)

    @property
    def posedirs(self) -> jax.Array:
        """[(J-1)*9, V*3]: smplx's layout (pose feature @ posedirs)."""
        return self.pose_basis.reshape(-1, 3, self.num_vertices).transpose(0, 2, 1).reshape(-1, 3 * self.num_vertices)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_betas(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


def make_smal_model(v_template, shapedirs, posedirs, j_regressor, lbs_weights, faces, parents,
                    joint_names, keypoint_names, keypoint_vertex_sets, name="smal") -> SMALModel:
    """Builds a SMALModel from arrays in the released file's layout (float64 numpy is fine).

    v_template [V,3], shapedirs [V,3,NB], posedirs [V,3,(J-1)*9], j_regressor dense [J,V],
    lbs_weights [V,J], faces [F,3], parents with -1 for the root.
    """
    v_template = np.asarray(v_template, np.float64)
    shapedirs = np.asarray(shapedirs, np.float64)
    j_regressor = np.asarray(j_regressor, np.float64)
    num_vertices = v_template.shape[0]
    posedirs = np.asarray(posedirs, np.float64).reshape(num_vertices, 3, -1)
    sets = tuple(tuple(int(i) for i in s) for s in keypoint_vertex_sets)
    width = max(len(s) for s in sets)
    index = np.zeros((len(sets), width), np.int32)
    weight = np.zeros((len(sets), width), np.float64)
    for k, s in enumerate(sets):
        index[k, :len(s)] = s
        weight[k, :len(s)] = 1.0 / len(s)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return SMALModel(
        v_template=f32(v_template),
        shape_basis=f32(shapedirs.transpose(2, 1, 0).reshape(-1, 3 * num_vertices)),
        pose_basis=f32(posedirs.transpose(2, 1, 0).reshape(-1, 3 * num_vertices)),
        j_regressor=f32(j_regressor), lbs_weights=f32(lbs_weights),
        faces=jnp.asarray(faces, jnp.int32),
        j_template=f32(j_regressor @ v_template),
        j_shapedirs=f32(np.einsum("jv,vcl->jcl", j_regressor, shapedirs)),
        keypoint_index=jnp.asarray(index), keypoint_weight=f32(weight),
        parents=tuple(int(p) for p in parents), joint_names=tuple(joint_names),
        keypoint_names=tuple(keypoint_names), keypoint_vertex_sets=sets, name=name)


def _chain_levels(parents):
    """Joints grouped by depth in the tree, so the chain runs one batched product per level."""
    depth = []
    for j, p in enumerate(parents):
        depth.append(0 if p < 0 else depth[p] + 1)
    return [np.flatnonzero(np.array(depth) == d) for d in range(max(depth) + 1)]


def rigid_transforms(rotations, joints, parents):
    """The kinematic chain (SMPL's G_k). rotations [B,J,3,3] (local), joints [B,J,3] (rest positions).

    Returns (posed_joints [B,J,3], world_rotations [B,J,3,3], world_translations [B,J,3]),
    where world_rotations/translations map a rest-pose point around joint j to its posed place.
    The chain runs one batched product per tree level; each level's parents are a gather
    from the level above, and one permutation restores joint order at the end.
    """
    parents = np.array(parents)
    levels = _chain_levels(parents)
    rel_joints = joints - jnp.where(parents[:, None] < 0, 0.0, joints[:, np.maximum(parents, 0)])
    world_r, world_t = [rotations[:, levels[0]]], [rel_joints[:, levels[0]]]
    for above, level in zip(levels, levels[1:]):
        slot = np.searchsorted(above, parents[level])  # each parent's place in the level above
        pr, pt = world_r[-1][:, slot], world_t[-1][:, slot]
        world_r.append(pr @ rotations[:, level])
        world_t.append(pt + jnp.einsum("bjik,bjk->bji", pr, rel_joints[:, level]))
    joint_order = np.argsort(np.concatenate(levels))
    world_r = jnp.concatenate(world_r, axis=1)[:, joint_order]
    posed_joints = jnp.concatenate(world_t, axis=1)[:, joint_order]
    # Express each transform relative to the rest joint: x -> R (x - j_rest) + j_posed.
    offsets = posed_joints - jnp.einsum("bjik,bjk->bji", world_r, joints)
    return posed_joints, world_r, offsets


def shaped_joints(model: SMALModel, betas):
    """Joint regression on the shaped template, J(betas) = J_reg (T + S betas), precomputed as
    linear in betas. betas [B, NB] -> rest joints [B, J, 3]."""
    return model.j_template + jnp.einsum("bl,jcl->bjc", betas, model.j_shapedirs)


def blend_shapes(model: SMALModel, betas, pose):
    """Shape and pose blend shapes (SMPL's T + B_S(betas) + B_P(pose)), planar.

    betas [B, NB], pose [B, J, 3, 3] -> v_posed [B, 3, V]: the template with the shape offsets
    and the pose corrective offsets, driven by (R_j - I) of the non-root joints.
    """
    batch = pose.shape[0]
    pose_feature = (pose[:, 1:] - jnp.eye(3, dtype=pose.dtype)).reshape(batch, -1)
    return (model.v_template.T.reshape(-1) + betas @ model.shape_basis
            + pose_feature @ model.pose_basis).reshape(batch, 3, -1)


def blend_transforms(model: SMALModel, world_r, world_t):
    """Linear blend of the joint transforms per vertex (SMPL's W), planar.

    world_r [B, J, 3, 3], world_t [B, J, 3] -> [12, B, V]: rows 0..8 the blended rotation part
    (row-major), rows 9..11 the translation. One [12B, J] x [J, V] product gives entry k of
    every vertex's blended transform as a [B, V] row.
    """
    batch = world_r.shape[0]
    transforms = jnp.concatenate([world_r.reshape(batch, -1, 9), world_t], axis=-1)
    return (transforms.transpose(2, 0, 1).reshape(-1, model.num_joints)
            @ model.lbs_weights.T).reshape(12, batch, -1)


def apply_transforms(blended, v_posed):
    """Each vertex through its blended transform: x_i = sum_k R[i, k] v_k + t_i.

    blended [12, B, V], v_posed [B, 3, V] -> vertices [B, V, 3]. Written out so that XLA fuses
    it into one elementwise loop (as an einsum it becomes V x B tiny matrix products).
    """
    return jnp.stack([blended[3 * i] * v_posed[:, 0] + blended[3 * i + 1] * v_posed[:, 1]
                      + blended[3 * i + 2] * v_posed[:, 2] + blended[9 + i] for i in range(3)], axis=-1)


def regress_keypoints(model: SMALModel, vertices):
    """Keypoint k = mean of its vertex set. vertices [B, V, 3] -> keypoints [B, K, 3]."""
    return jnp.einsum("bkmc,km->bkc", vertices[:, model.keypoint_index], model.keypoint_weight)


def _smal_forward(model: SMALModel, betas, pose, transl=None):
    """See `smal_forward`: blend shapes, joint regression, kinematic chain, blend transforms, apply.
    Float32 at matmul precision HIGHEST on every backend (the precision policy, animax.runtime)."""
    with exact_matmuls():
        betas = betas.astype(jnp.float32)
        pose = pose.astype(jnp.float32)
        v_posed = blend_shapes(model, betas, pose)
        joints, world_r, world_t = rigid_transforms(pose, shaped_joints(model, betas), model.parents)
        vertices = apply_transforms(blend_transforms(model, world_r, world_t), v_posed)
        if transl is not None:
            transl = transl.astype(jnp.float32)[:, None, :]
            vertices = vertices + transl
            joints = joints + transl
        return {"vertices": vertices, "joints": joints, "keypoints_3d": regress_keypoints(model, vertices)}


_smal_forward_jit = jax.jit(_smal_forward)


def smal_forward(model: SMALModel, betas, pose, transl=None):
    """Poses and shapes the body model.

    betas [B, NB'] (NB' <= NB; missing directions count as 0), pose [B, J, 3, 3] local rotation
    matrices with joint 0 the global orientation, transl [B, 3] or None.
    Returns float32 `vertices [B,V,3]`, `joints [B,J,3]`, `keypoints_3d [B,K,3]`.
    Jitted when called eagerly; traces inline under an outer jit, vmap or grad.
    """
    nb = betas.shape[-1]
    if nb < model.num_betas:
        betas = jnp.pad(betas, [(0, 0), (0, model.num_betas - nb)])
    elif nb > model.num_betas:
        raise ValueError(f"betas has {nb} entries but the body model has {model.num_betas} shape directions")
    return _smal_forward_jit(model, betas, pose, transl)
