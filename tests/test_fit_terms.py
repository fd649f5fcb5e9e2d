"""The fit's objective terms against float64 NumPy references, their gradients against finite
differences (float64), and the closed-form camera start."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animax.fit import terms
from animax.fit.evidence import build_evidence, clean_keypoints, mask_arrays
from animax.fit.init import candidate_rotations, weak_perspective
from animax.geometry import axis_angle_to_rotmat

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

RNG = np.random.default_rng(0)


def np_gmof(x, s):
    return s * s * x * x / (s * s + x * x)


def test_keypoint_term_matches_reference_and_ignores_missing():
    pred, target = RNG.normal(size=(26, 2)) * 30, RNG.normal(size=(26, 2)) * 30
    conf = (RNG.random(26) > 0.3).astype(np.float64)
    want = (conf * np_gmof((pred - target) / 200.0, 0.15).sum(-1)).sum() / conf.sum()
    got = terms.keypoint_term(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32),
                              jnp.asarray(conf, jnp.float32), 200.0, 0.15)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # A missing keypoint's position does not matter.
    moved = target.copy()
    moved[conf == 0] += 1000.0
    again = terms.keypoint_term(jnp.asarray(pred, jnp.float32), jnp.asarray(moved, jnp.float32),
                                jnp.asarray(conf, jnp.float32), 200.0, 0.15)
    assert float(again) == pytest.approx(float(got), rel=1e-6)


def test_gmof_is_bounded_by_sigma_squared():
    assert float(terms.gmof(jnp.float32(1e6), 0.1)) == pytest.approx(0.01, rel=1e-4)


def test_silhouette_terms_match_reference():
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:60] = True
    distance, origin, cell, points, weight = mask_arrays(mask, 32, 64)
    vertices = RNG.uniform([25, 15], [65, 45], size=(40, 2))      # inside the grid
    # Reference: bilinear interpolation of the same grid, by hand.
    u = (vertices - origin) / cell
    x0, y0 = np.floor(u[:, 0]).astype(int), np.floor(u[:, 1]).astype(int)
    fx, fy = u[:, 0] - x0, u[:, 1] - y0
    d = (distance[y0, x0] * (1 - fx) * (1 - fy) + distance[y0, x0 + 1] * fx * (1 - fy)
         + distance[y0 + 1, x0] * (1 - fx) * fy + distance[y0 + 1, x0 + 1] * fx * fy)
    want = np.mean((d / 50.0) ** 2)
    got = terms.silhouette_outside_term(jnp.asarray(vertices, jnp.float32), jnp.asarray(distance, jnp.float32),
                                        jnp.asarray(origin, jnp.float32), float(cell), 50.0)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    nearest = np.min(((points[:, None] - vertices[None]) ** 2).sum(-1), axis=1) / 50.0 ** 2
    want_cover = (weight * nearest).sum() / weight.sum()
    got_cover = terms.silhouette_cover_term(jnp.asarray(vertices, jnp.float32), jnp.asarray(points, jnp.float32),
                                            jnp.asarray(weight, jnp.float32), 50.0)
    np.testing.assert_allclose(float(got_cover), want_cover, rtol=1e-5)


def test_distance_grid_is_zero_on_the_mask_and_grows_off_it():
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:60] = True
    distance, origin, cell, _, _ = mask_arrays(mask, 32, 16)
    centre = np.round((np.array([45.0, 30.0]) - origin) / cell).astype(int)
    assert distance[centre[1], centre[0]] < cell
    assert distance[0, 0] > 10.0


def test_smoothness_terms_match_reference():
    rotations = axis_angle_to_rotmat(RNG.normal(size=(6, 4, 3)) * 0.3, xp=np)
    valid = np.array([1, 1, 1, 0, 1, 1], np.float64)
    accel = rotations[2:] - 2 * rotations[1:-1] + rotations[:-2]
    both = valid[2:] * valid[1:-1] * valid[:-2]
    want = (both * (accel ** 2).sum((1, 2, 3))).sum() / both.sum()
    got = terms.rotation_smoothness_term(jnp.asarray(rotations, jnp.float32), jnp.asarray(valid, jnp.float32))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # A constant rotation and a constant-velocity trajectory cost nothing.
    still = jnp.tile(jnp.asarray(rotations[:1], jnp.float32), (6, 1, 1, 1))
    assert float(terms.rotation_smoothness_term(still, jnp.ones(6))) == pytest.approx(0.0, abs=1e-10)
    line = jnp.asarray(np.linspace([0, 0, 10], [1, 0.5, 12], 6), jnp.float32)
    assert float(terms.trajectory_smoothness_term(line, jnp.ones(6))) == pytest.approx(0.0, abs=1e-9)


def test_joint_limit_term_is_zero_inside_and_quadratic_outside():
    lower, upper = -np.ones((3, 3)) * 0.5, np.ones((3, 3)) * 0.5
    inside = jnp.zeros((2, 3, 3))
    assert float(terms.joint_limit_term(inside, lower, upper)) == 0.0
    outside = jnp.zeros((2, 3, 3)).at[:, 1, 2].set(0.7)
    assert float(terms.joint_limit_term(outside, lower, upper)) == pytest.approx(0.04, rel=1e-5)


@pytest.mark.parametrize("term", ["keypoint", "outside", "cover", "rotation", "trajectory"])
def test_gradients_match_finite_differences_in_float64(term):
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:60] = True
    distance, origin, cell, points, weight = mask_arrays(mask, 32, 64)
    target = RNG.uniform([20, 10], [70, 50], size=(12, 2))
    conf = np.ones(12)
    with jax.enable_x64(True):
        functions = {
            "keypoint": (lambda x: terms.keypoint_term(x, jnp.asarray(target), jnp.asarray(conf), 50.0, 0.15),
                         RNG.uniform([20, 10], [70, 50], size=(12, 2))),
            "outside": (lambda x: terms.silhouette_outside_term(x, jnp.asarray(distance), jnp.asarray(origin),
                                                                cell, 50.0),
                        RNG.uniform([5, 5], [25, 55], size=(12, 2))),
            "cover": (lambda x: terms.silhouette_cover_term(x, jnp.asarray(points), jnp.asarray(weight), 50.0),
                      RNG.uniform([20, 10], [70, 50], size=(12, 2))),
            "rotation": (lambda x: terms.rotation_smoothness_term(x.reshape(5, 2, 3, 3), jnp.ones(5)),
                         RNG.normal(size=(5 * 2 * 9,))),
            "trajectory": (lambda x: terms.trajectory_smoothness_term(x.reshape(5, 3), jnp.ones(5)),
                           RNG.normal(size=(15,)) + np.tile([0, 0, 8.0], 5)),
        }
        f, x0 = functions[term]
        x0 = jnp.asarray(x0, jnp.float64)
        grad = np.asarray(jax.grad(f)(x0)).reshape(-1)
        flat = np.asarray(x0).reshape(-1)
        h = 1e-6
        numeric = np.array([(float(f(jnp.asarray(flat + h * e).reshape(x0.shape)))
                             - float(f(jnp.asarray(flat - h * e).reshape(x0.shape)))) / (2 * h)
                            for e in np.eye(len(flat))])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_weak_perspective_recovers_a_known_camera_and_orientation():
    forward, up = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    rotations = candidate_rotations(forward, up)
    model = RNG.normal(size=(26, 3))
    true = 5
    keypoints = 80.0 * (model @ rotations[true].T)[:, :2] + [160.0, 120.0]
    s, u, residual = weak_perspective(np.einsum("cij,kj->cki", rotations, model)[..., :2], keypoints, np.ones(26))
    assert int(np.argmin(residual)) == true
    assert s[true] == pytest.approx(80.0) and np.allclose(u[true], [160.0, 120.0])


def test_nan_keypoints_get_confidence_zero():
    k = np.ones((1, 2, 26, 3)) * 50
    k[0, 0, 3, 0] = np.nan
    k[0, 1, :, 2] = 0.0
    cleaned = clean_keypoints(k)
    assert cleaned[0, 0, 3, 2] == 0 and np.isfinite(cleaned).all()
    evidence = build_evidence(k, (320, 240))
    np.testing.assert_array_equal(np.asarray(evidence.valid), [[1.0, 0.0]])
