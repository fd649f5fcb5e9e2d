"""Several body models of one joint layout in one batch: species with different meshes.

A `BodyModelBank` holds M body models (the same 35 joints and 26 keypoint names; any vertex
and face counts, any templates) padded to the largest: V = max V_m vertices, F = max F_m faces.
A padded vertex has a zero template, zero blend shapes, zero joint-regressor column and zero
skinning weights, so it changes no joint or keypoint, and the skinned padding vertices are
exactly 0 with no dependence on betas or pose: no gradient can flow from padding.
`vertex_mask [M, V]` marks real vertices.

Two ways to skin a mixed batch, with identical results:
    smal_forward_mixed    any order: `body_index [B]` picks each example's model at run time.
                          Every model skins the whole batch and each row keeps its own, so the
                          skinning costs M times one model's (the ViT still dominates).
    smal_forward_grouped  rows already grouped by model in static runs ((m, count), ...): each
                          run is skinned once by its own model, at its own vertex count, and
                          padded after. No wasted work; one compile per grouping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from animax.smal.io import load_smal
from animax.smal.model import SMALModel, _smal_forward, smal_forward

STANDIN = "standin"     # in a list of body-model files: the built-in stand-in quadruped

# The per-model (static) layout every model of a bank must share.
_SHARED_LAYOUT = ("parents", "joint_names", "keypoint_names")


@struct.dataclass
class BodyModelBank:
    """M body models padded to common sizes; `models` is a SMALModel whose arrays lead with [M]."""
    models: SMALModel
    vertex_mask: jax.Array                                    # [M, V] 1 = a real vertex
    vertex_counts: tuple[int, ...] = struct.field(pytree_node=False)
    face_counts: tuple[int, ...] = struct.field(pytree_node=False)
    names: tuple[str, ...] = struct.field(pytree_node=False)

    @property
    def num_models(self) -> int:
        return len(self.names)

    @property
    def num_vertices(self) -> int:
        return self.vertex_mask.shape[1]

    @property
    def num_joints(self) -> int:
        return self.models.num_joints

    @property
    def num_betas(self) -> int:
        return self.models.shape_basis.shape[1]      # [M, NB, 3V]

    @property
    def num_keypoints(self) -> int:
        return self.models.num_keypoints

    def padded(self, m: int) -> SMALModel:
        """Model m at the bank's padded sizes (its padding vertices skin to the origin)."""
        return jax.tree.map(lambda a: a[m], self.models)

    def own(self, m: int) -> SMALModel:
        """Model m at its own vertex and face counts, as `smal_forward` takes it."""
        model, v = self.padded(m), self.vertex_counts[m]
        planar = lambda basis: basis.reshape(basis.shape[0], 3, -1)[:, :, :v].reshape(basis.shape[0], -1)
        return model.replace(v_template=model.v_template[:v], shape_basis=planar(model.shape_basis),
                             pose_basis=planar(model.pose_basis), j_regressor=model.j_regressor[:, :v],
                             lbs_weights=model.lbs_weights[:v], faces=model.faces[:self.face_counts[m]],
                             name=self.names[m])


def _pad_model(model: SMALModel, num_vertices: int, num_faces: int, num_betas: int, set_width: int) -> SMALModel:
    """One model at common sizes, in the layout every bank member shares."""
    pad_v = num_vertices - model.num_vertices

    def planar(basis, rows):
        basis = basis.reshape(basis.shape[0], 3, -1)
        return jnp.pad(basis, [(0, rows - basis.shape[0]), (0, 0), (0, pad_v)]).reshape(rows, -1)

    pad_k = set_width - model.keypoint_index.shape[1]
    return SMALModel(
        v_template=jnp.pad(model.v_template, [(0, pad_v), (0, 0)]),
        shape_basis=planar(model.shape_basis, num_betas),
        pose_basis=planar(model.pose_basis, model.pose_basis.shape[0]),
        j_regressor=jnp.pad(model.j_regressor, [(0, 0), (0, pad_v)]),
        lbs_weights=jnp.pad(model.lbs_weights, [(0, pad_v), (0, 0)]),
        # Padding faces are degenerate triangles on vertex 0; renderers take the first F_m only.
        faces=jnp.pad(model.faces, [(0, num_faces - model.faces.shape[0]), (0, 0)]),
        j_template=model.j_template,
        j_shapedirs=jnp.pad(model.j_shapedirs, [(0, 0), (0, 0), (0, num_betas - model.num_betas)]),
        keypoint_index=jnp.pad(model.keypoint_index, [(0, 0), (0, pad_k)]),
        keypoint_weight=jnp.pad(model.keypoint_weight, [(0, 0), (0, pad_k)]),
        parents=model.parents, joint_names=model.joint_names, keypoint_names=model.keypoint_names,
        keypoint_vertex_sets=(), name="bank")


def make_bank(models) -> BodyModelBank:
    """Stacks body models of one joint and keypoint layout (a sequence of SMALModel)."""
    models = list(models)
    first = models[0]
    for model in models[1:]:
        for field in _SHARED_LAYOUT:
            if getattr(model, field) != getattr(first, field):
                raise ValueError(f"body models '{first.name}' and '{model.name}' differ in {field}; "
                                 "a bank holds models of one joint and keypoint layout")
    names = tuple(m.name for m in models)
    if len(set(names)) != len(names):
        raise ValueError(f"body model names repeat in {names}; each model of a bank needs its own name")
    sizes = (max(m.num_vertices for m in models), max(m.faces.shape[0] for m in models),
             max(m.num_betas for m in models), max(m.keypoint_index.shape[1] for m in models))
    padded = [_pad_model(m, *sizes) for m in models]
    mask = np.zeros((len(models), sizes[0]), np.float32)
    for i, m in enumerate(models):
        mask[i, :m.num_vertices] = 1.0
    return BodyModelBank(models=jax.tree.map(lambda *a: jnp.stack(a), *padded), vertex_mask=jnp.asarray(mask),
                         vertex_counts=tuple(m.num_vertices for m in models),
                         face_counts=tuple(int(m.faces.shape[0]) for m in models), names=names)


def load_body_file(file) -> SMALModel:
    """One body model: a SMAL file, or None / 'standin' for the built-in stand-in."""
    return load_smal(None if file == STANDIN else file)


def load_body(spec):
    """A body-model spec -> SMALModel or BodyModelBank: None (the stand-in), one file, or several
    comma-separated files ('standin' names the built-in one) as a bank."""
    if spec and "," in spec:
        return make_bank([load_body_file(f.strip()) for f in spec.split(",")])
    return load_body_file(spec)


def _pad_betas(betas, num_betas):
    if betas.shape[-1] > num_betas:
        raise ValueError(f"betas has {betas.shape[-1]} entries but the bank's models have {num_betas}")
    return jnp.pad(betas, [(0, 0), (0, num_betas - betas.shape[-1])])


def smal_forward_mixed(bank: BodyModelBank, body_index, betas, pose, transl=None):
    """Each row skinned by model `body_index[b]` (any order). betas [B, NB'], pose [B, J, 3, 3],
    body_index [B] int. Returns `smal_forward`'s dict at the padded vertex count, plus
    `vertex_mask [B, V]`."""
    betas = _pad_betas(betas, bank.num_betas)
    out = None
    for m in range(bank.num_models):
        skinned = _smal_forward(bank.padded(m), betas, pose, transl)
        mine = body_index == m
        out = skinned if out is None else jax.tree.map(
            lambda new, old: jnp.where(mine.reshape(-1, *[1] * (new.ndim - 1)), new, old), skinned, out)
    mask = bank.vertex_mask[body_index]
    # Zero weights already zero the padding; this also drops the translation there.
    return {**out, "vertices": out["vertices"] * mask[..., None], "vertex_mask": mask}


def smal_forward_grouped(bank: BodyModelBank, groups, betas, pose, transl=None):
    """Rows in static runs: groups ((m, count), ...) covers the batch in order, run i skinned by
    model m at its own vertex count. Same results as `smal_forward_mixed`."""
    if sum(count for _, count in groups) != betas.shape[0]:
        raise ValueError(f"groups {groups} do not cover the batch of {betas.shape[0]}")
    betas = _pad_betas(betas, bank.num_betas)
    parts, start = [], 0
    for m, count in groups:
        rows = slice(start, start + count)
        skinned = _smal_forward(bank.own(m), betas[rows], pose[rows], None if transl is None else transl[rows])
        pad = bank.num_vertices - bank.vertex_counts[m]
        skinned["vertices"] = jnp.pad(skinned["vertices"], [(0, 0), (0, pad), (0, 0)])
        skinned["vertex_mask"] = jnp.broadcast_to(bank.vertex_mask[m], (count, bank.num_vertices))
        parts.append(skinned)
        start += count
    return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


def skin(body, betas, pose, body_index=None, groups=None):
    """One entry for both kinds of body model: a SMALModel skins every row (`smal_forward`); a
    bank skins row b with model body_index[b] (default 0), or by static `groups` when given."""
    if isinstance(body, SMALModel):
        return smal_forward(body, betas, pose)
    if groups is not None:
        return smal_forward_grouped(body, groups, betas, pose)
    if body_index is None:
        body_index = jnp.zeros(betas.shape[0], jnp.int32)
    return smal_forward_mixed(body, body_index, betas, pose)
