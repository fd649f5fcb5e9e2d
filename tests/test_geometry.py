"""Rotations and cameras against hand-built cases, scipy, and AniMer's PyTorch formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animax import geometry as g
from helpers.nn_reference import U, assert_within, rot6d_tol

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


def rot6d_reference(x):
    """AniMer's rot6d_to_rotmat, transcribed in float64 NumPy from REFERENCE.md."""
    m = x.reshape(-1, 2, 3).transpose(0, 2, 1)
    a1, a2 = m[:, :, 0], m[:, :, 1]
    norm = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    b1 = norm(a1)
    b2 = norm(a2 - np.sum(b1 * a2, axis=1, keepdims=True) * b1)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def test_rot6d_hand_built_cases():
    # Identity; scaled/skewed inputs that Gram-Schmidt turns into the identity.
    for x in ([1, 0, 0, 0, 1, 0], [2, 0, 0, 1, 3, 0]):
        np.testing.assert_allclose(g.rot6d_to_rotmat(jnp.array(x, jnp.float32)), np.eye(3), atol=1e-7)
    # a1 = e_y, a2 = -e_x: columns (e_y, -e_x, e_z), a +90 degree turn about z.
    r = g.rot6d_to_rotmat(jnp.array([0, 1, 0, -1, 0, 0], jnp.float32))
    np.testing.assert_allclose(r, Rotation.from_euler("z", 90, degrees=True).as_matrix(), atol=1e-7)


def test_rot6d_matches_animer_formula_and_round_trips():
    x = np.random.default_rng(0).normal(size=(64, 6))
    r = np.asarray(g.rot6d_to_rotmat(jnp.asarray(x, jnp.float32)))
    tol = rot6d_tol(x)  # per sample: nearly parallel a1, a2 amplify rounding
    assert_within(r, rot6d_reference(x), tol)
    assert_within(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), tol)
    assert_within(np.linalg.det(r), 1.0, 3 * tol[:, 0, 0])
    assert_within(g.rot6d_to_rotmat(g.rotmat_to_rot6d(r)), r, tol)


def test_torch_rot6d_convention():
    import torch
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    t = torch.from_numpy(x).reshape(-1, 2, 3).permute(0, 2, 1)
    b1 = torch.nn.functional.normalize(t[:, :, 0])
    b2 = torch.nn.functional.normalize(t[:, :, 1] - (b1 * t[:, :, 1]).sum(-1, keepdim=True) * b1)
    expected = torch.stack([b1, b2, torch.cross(b1, b2, dim=1)], dim=-1).numpy()
    assert_within(g.rot6d_to_rotmat(jnp.asarray(x)), expected, rot6d_tol(x, sides=2))


def _awkward_rotvecs():
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(8, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-4, 0.5, 2.0, np.pi - 1e-3, np.pi - 1e-6, np.pi])
    return np.concatenate([axes * angles[:, None], rng.normal(size=(32, 3))])


def test_axis_angle_to_rotmat_matches_scipy():
    aa = _awkward_rotvecs()
    # Entries <= 1 from a few float32 roundings (the input's, sin, cos, K @ K with |aa| <= 4): ~8 U, x4.
    np.testing.assert_allclose(g.axis_angle_to_rotmat(jnp.asarray(aa, jnp.float32)),
                               Rotation.from_rotvec(aa).as_matrix(), atol=32 * U)


def test_rotmat_to_axis_angle_round_trips_at_zero_and_pi():
    aa = _awkward_rotvecs()
    r = Rotation.from_rotvec(aa).as_matrix()
    back = np.asarray(g.rotmat_to_axis_angle(jnp.asarray(r, jnp.float32)))
    # Compare as rotations: at exactly pi, aa and -aa are the same rotation.
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), r, atol=1e-5)
    small = np.linalg.norm(aa, axis=1) < np.pi - 1e-2
    np.testing.assert_allclose(back[small], aa[small], atol=1e-5)
    # Angles to a few U of pi (2 atan2 and the input's rounding), also next to pi: ~8 U pi, x4.
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.minimum(np.linalg.norm(aa, axis=1), np.pi),
                               atol=32 * U * np.pi)


def test_rotation_gradients_are_finite_and_exact_at_zero():
    # d R / d aa_i at aa = 0 is skew(e_i), whose column k is e_i x e_k.
    jac = jax.jacfwd(g.axis_angle_to_rotmat)(jnp.zeros(3))
    for i in range(3):
        np.testing.assert_allclose(jac[..., i], np.cross(np.eye(3)[i], np.eye(3), axis=0), atol=1e-6)
    for rotvec in ([0.0, 0.0, 0.0], [0.0, 0.0, np.pi - 1e-4], [1e-8, 0, 0]):
        r = jnp.asarray(Rotation.from_rotvec(rotvec).as_matrix(), jnp.float32)
        grad = jax.grad(lambda m: jnp.sum(g.rotmat_to_axis_angle(m) ** 2))(r)
        assert np.all(np.isfinite(grad))
        grad = jax.grad(lambda a: jnp.sum(g.axis_angle_to_rotmat(a) * r))(jnp.asarray(rotvec, jnp.float32))
        assert np.all(np.isfinite(grad))


def test_weak_camera_and_projection_formulas():
    cam = jnp.array([[0.9, 0.1, -0.2], [1.5, 0.0, 0.3]])
    t = g.weak_cam_to_translation(cam)
    np.testing.assert_allclose(t[:, 2], 2 * 1000 / (256 * np.array([0.9, 1.5]) + 1e-9), rtol=1e-6)
    np.testing.assert_allclose(t[:, :2], cam[:, 1:])
    # A point 0.1 to the side at depth 10 lands at 1000/256 * 0.01 crop units.
    p = g.project_to_crop(jnp.array([[[0.1, 0.0, 0.0]]]), jnp.array([[0.0, 0.0, 10.0]]))
    np.testing.assert_allclose(p, [[[1000 / 256 * 0.01, 0.0]]], rtol=1e-6)
    pp = g.perspective_projection(jnp.array([[[1.0, 2.0, 4.0]]]), jnp.zeros((1, 3)),
                                  jnp.array([[100.0, 200.0]]), jnp.array([[5.0, 6.0]]))
    np.testing.assert_allclose(pp, [[[30.0, 106.0]]])


def test_cam_crop_to_full_matches_animer_formula():
    rng = np.random.default_rng(3)
    cam = rng.uniform([0.5, -0.3, -0.3], [1.5, 0.3, 0.3], size=(5, 3))
    center = rng.uniform(0, 600, size=(5, 2))
    size = rng.uniform(50, 400, size=5)
    img = np.array([[640.0, 480.0]] * 5)
    focal = 1000 / 256 * img.max(1)
    bs = size * cam[:, 0] + 1e-9
    expected = np.stack([2 * (center[:, 0] - 320) / bs + cam[:, 1],
                         2 * (center[:, 1] - 240) / bs + cam[:, 2], 2 * focal / bs], -1)
    np.testing.assert_allclose(g.cam_crop_to_full(cam, center, size, img), expected, rtol=1e-6)


def test_geometry_under_jit_and_vmap():
    aa = jnp.asarray(np.random.default_rng(4).normal(size=(3, 7, 3)), jnp.float32)
    direct = g.rotmat_to_axis_angle(g.axis_angle_to_rotmat(aa))
    mapped = jax.jit(jax.vmap(lambda a: g.rotmat_to_axis_angle(g.axis_angle_to_rotmat(a))))(aa)
    # jit fuses the ops (other roundings) but both round-trip to ~8 U |aa|; two sides, x4.
    np.testing.assert_allclose(mapped, direct, atol=2 * 32 * U * np.abs(aa).max())
