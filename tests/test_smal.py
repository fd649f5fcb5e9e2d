"""Skinning (LBS) against a float64 NumPy implementation and smplx, on random SMAL-format models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animax.geometry import rot6d_to_rotmat
from animax.smal import SMALModel, load_smal, save_smal, smal_forward
from animax.smal.io import smal_model_from_arrays
from helpers.nn_reference import f32_tol, lbs_steps, rot6d_tol
from helpers.smal_files import random_smal_arrays

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

NUM_BETAS = 41
# Float32 steps of LBS for f32_tol; random_smal_arrays skins each vertex to 3 joints.
LBS_STEPS = lbs_steps(NUM_BETAS, joints_per_vertex=3)
# The rest pose: only the chain's translation sums and the blend round.
REST_STEPS = (*(1,) * 10, 3, 1)


def lbs_reference(arrays, betas, rotations, transl, num_betas=NUM_BETAS):
    """Textbook SMPL-family LBS in float64, one sample: betas [NB], rotations [J,3,3], transl [3]."""
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[parents == 2**32 - 1] = -1
    v_shaped = arrays["v_template"] + arrays["shapedirs"][..., :num_betas] @ betas
    joints = arrays["J_regressor"].toarray() @ v_shaped
    pose_feature = (rotations[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + arrays["posedirs"] @ pose_feature
    world = np.zeros((len(parents), 4, 4))
    for j, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0)
        world[j] = local if p < 0 else world[p] @ local
    posed_joints = world[:, :3, 3].copy()
    skin = world.copy()
    skin[:, :3, 3] -= np.einsum("jik,jk->ji", world[:, :3, :3], joints)
    per_vertex = np.einsum("vj,jab->vab", arrays["weights"], skin)
    verts = np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3]
    return verts + transl, posed_joints + transl


def random_pose(batch, seed):
    rot = Rotation.random(batch * 35, random_state=seed).as_rotvec() * 0.5
    return Rotation.from_rotvec(rot).as_matrix().reshape(batch, 35, 3, 3)


@pytest.fixture(scope="module")
def arrays():
    return random_smal_arrays(num_vertices=3889)


@pytest.fixture(scope="module")
def model(arrays):
    return smal_model_from_arrays(arrays, NUM_BETAS, "random")


def test_lbs_matches_float64_numpy(arrays, model):
    rng = np.random.default_rng(0)
    betas = rng.normal(size=(3, NUM_BETAS))
    pose = random_pose(3, seed=1)
    transl = rng.normal(size=(3, 3))
    out = smal_forward(model, jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32),
                       jnp.asarray(transl, jnp.float32))
    for b in range(3):
        verts, joints = lbs_reference(arrays, betas[b], pose[b], transl[b])
        scale = np.abs(verts).max()
        assert np.abs(np.asarray(out["vertices"][b]) - verts).max() / scale < f32_tol(*LBS_STEPS)
        assert np.abs(np.asarray(out["joints"][b]) - joints).max() / scale < f32_tol(*LBS_STEPS)
        kp = np.stack([verts[list(s)].mean(0) for s in model.keypoint_vertex_sets])
        width = max(len(s) for s in model.keypoint_vertex_sets)
        assert np.abs(np.asarray(out["keypoints_3d"][b]) - kp).max() / scale < f32_tol(*LBS_STEPS, width)
    assert out["vertices"].dtype == jnp.float32
    assert out["vertices"].shape == (3, 3889, 3) and out["joints"].shape == (3, 35, 3)
    assert out["keypoints_3d"].shape == (3, 26, 3)


def test_lbs_matches_smplx(arrays, model):
    import smplx.lbs as smplx_lbs
    import torch
    rng = np.random.default_rng(5)
    betas = rng.normal(size=(2, NUM_BETAS)).astype(np.float32)
    pose = random_pose(2, seed=6).astype(np.float32)
    parents = torch.tensor(np.array(model.parents))
    verts, joints = smplx_lbs.lbs(
        torch.from_numpy(betas), torch.from_numpy(pose),
        torch.from_numpy(arrays["v_template"].astype(np.float32)),
        torch.from_numpy(arrays["shapedirs"][..., :NUM_BETAS].astype(np.float32)),
        torch.from_numpy(arrays["posedirs"].reshape(-1, 306).T.astype(np.float32)),
        torch.from_numpy(arrays["J_regressor"].toarray().astype(np.float32)),
        parents, torch.from_numpy(arrays["weights"].astype(np.float32)), pose2rot=False)
    out = smal_forward(model, betas, pose)
    atol = f32_tol(*LBS_STEPS, sides=2) * np.abs(verts.numpy()).max()
    np.testing.assert_allclose(out["vertices"], verts.numpy(), rtol=0, atol=atol)
    np.testing.assert_allclose(out["joints"], joints.numpy(), rtol=0, atol=atol)


def test_rest_pose_gives_the_template(arrays, model):
    out = smal_forward(model, jnp.zeros((2, NUM_BETAS)), jnp.tile(jnp.eye(3), (2, 35, 1, 1)))
    joints = arrays["J_regressor"] @ arrays["v_template"]
    np.testing.assert_allclose(out["vertices"][1], arrays["v_template"], rtol=0,
                               atol=f32_tol(*REST_STEPS) * np.abs(arrays["v_template"]).max())
    np.testing.assert_allclose(out["joints"][0], joints, rtol=0, atol=f32_tol(*REST_STEPS) * np.abs(joints).max())


def test_fewer_betas_are_zero_padded_and_more_are_refused(model):
    pose = jnp.tile(jnp.eye(3), (1, 35, 1, 1))
    betas = jnp.asarray(np.random.default_rng(2).normal(size=(1, 10)), jnp.float32)
    padded = jnp.pad(betas, [(0, 0), (0, NUM_BETAS - 10)])
    np.testing.assert_array_equal(smal_forward(model, betas, pose)["vertices"],
                                  smal_forward(model, padded, pose)["vertices"])
    with pytest.raises(ValueError, match="shape directions"):
        smal_forward(model, jnp.zeros((1, NUM_BETAS + 1)), pose)


def test_lbs_under_vmap_jit_and_grad(model):
    rng = np.random.default_rng(3)
    betas = jnp.asarray(rng.normal(size=(4, NUM_BETAS)), jnp.float32)
    rot6d = jnp.asarray(rng.normal(size=(4, 35, 6)), jnp.float32)

    def loss(betas, rot6d):
        out = smal_forward(model, betas, rot6d_to_rotmat(rot6d))
        return jnp.sum(out["vertices"] ** 2) + jnp.sum(out["keypoints_3d"])

    g_betas, g_pose = jax.jit(jax.grad(loss, argnums=(0, 1)))(betas, rot6d)
    assert np.all(np.isfinite(g_betas)) and np.all(np.isfinite(g_pose))
    assert np.abs(g_betas).sum() > 0 and np.abs(g_pose).sum() > 0
    # Per-sample vmap equals the batched call.
    single = jax.vmap(lambda b, r: smal_forward(model, b[None], rot6d_to_rotmat(r)[None])["vertices"][0])
    batched = smal_forward(model, betas, rot6d_to_rotmat(rot6d))["vertices"]
    # Other programs (vmapped batch-1 products, other fusions): LBS's and Gram-Schmidt's rounding, both sides.
    tol = f32_tol(*LBS_STEPS, sides=2) + rot6d_tol(rot6d, sides=2).max()
    np.testing.assert_allclose(single(betas, rot6d), batched, rtol=0, atol=tol * np.abs(batched).max())


def test_model_is_a_pytree_with_static_layout(model):
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert all(isinstance(x, jax.Array) for x in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(rebuilt, SMALModel) and rebuilt.parents == model.parents
    assert model.parents[0] == -1 and len(model.joint_names) == 35


def test_npz_round_trip(tmp_path, model):
    path = tmp_path / "model.npz"
    save_smal(model, path)
    again = load_smal(path, num_betas=NUM_BETAS)
    for name in ("v_template", "shapedirs", "posedirs", "j_regressor", "lbs_weights", "faces",
                 "keypoint_index", "keypoint_weight"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name), err_msg=name)
    assert again.keypoint_vertex_sets == model.keypoint_vertex_sets
    assert again.parents == model.parents and again.joint_names == model.joint_names
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left


def test_standin_leg_bend_through_jitted_forward():
    """Bending LLeg1 moves front-left-leg vertices only; the nose leads, the paws are lowest."""
    model = load_smal()
    rest = jnp.tile(jnp.eye(3), (1, 35, 1, 1))
    bent = rest.at[0, model.joint_names.index("LLeg1")].set(
        jnp.asarray(Rotation.from_euler("y", 30, degrees=True).as_matrix(), jnp.float32))
    zeros = jnp.zeros((1, NUM_BETAS))
    before, after = smal_forward(model, zeros, rest), smal_forward(model, zeros, bent)
    moved = np.linalg.norm(np.asarray(after["vertices"] - before["vertices"])[0], axis=-1) > 1e-6
    leg_weight = np.asarray(model.lbs_weights)[:, 7:11].sum(1)
    np.testing.assert_array_equal(moved, leg_weight > 1e-6)
    assert moved.sum() > 50 and np.all(np.asarray(before["vertices"])[0, moved, 1] > 0)  # left side (+y)
    kp = np.asarray(before["keypoints_3d"][0])
    names = model.keypoint_names
    assert np.argmax(kp[:, 0]) == names.index("nose")
    paws = {names.index(n) for n in ("left_front_paw", "right_front_paw", "left_back_paw", "right_back_paw")}
    assert set(np.argsort(kp[:, 2])[:4]) == paws
