"""Shape and pose priors against the formulas of REFERENCE.md, computed directly in float64."""

import pickle

import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from animax.smal import load_pose_prior, load_shape_prior, pose_prior, shape_prior
from helpers.nn_reference import U, f32_tol
from helpers.shared_data import shared_file
from helpers.smal_files import chumpy_pickle_bytes


def _random_cov(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def test_shape_prior_equals_direct_formula(tmp_path):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, 41))
    covs = [_random_cov(rng, 41) for _ in range(5)]
    path = tmp_path / "shape.pkl"
    path.write_bytes(pickle.dumps({"cluster_means": means, "cluster_cov": covs}, protocol=2))
    prior = load_shape_prior(path)
    betas = rng.normal(size=(6, 41))
    family = np.array([0, 1, 2, 3, 4, 2])
    expected = []
    for b, c in zip(betas, family):
        precision = np.linalg.cholesky(np.linalg.inv(covs[c] + 1e-5 * np.eye(41)))
        expected.append(np.mean(((b - means[c]) @ precision) ** 2))
    got = shape_prior(prior, jnp.asarray(betas, jnp.float32), jnp.asarray(family))
    # float32: the difference, 41-term products with the precision, squares and their 41-term mean.
    np.testing.assert_allclose(got, expected, rtol=f32_tol(1, 41, 1, 41))


def test_pose_prior_equals_direct_formula(tmp_path):
    rng = np.random.default_rng(1)
    mean = rng.normal(scale=0.2, size=105)
    pic = rng.normal(size=(105, 105))
    path = tmp_path / "pose.pkl"
    path.write_bytes(chumpy_pickle_bytes({"mean_pose": mean, "pic": pic, "cov": np.eye(105)}, {"pic"}))
    prior = load_pose_prior(path)
    rotvecs = Rotation.random(4 * 35, random_state=2).as_rotvec() * 0.8
    rotations = Rotation.from_rotvec(rotvecs).as_matrix().reshape(4, 35, 3, 3)
    mask = np.ones(105)
    mask[:3] = 0
    expected = np.mean((((rotvecs.reshape(4, 105) - mean) @ pic) * mask) ** 2, axis=1)
    got = pose_prior(prior, jnp.asarray(rotations, jnp.float32))
    # float32: rotation -> axis-angle (3-term sums, well conditioned below pi), 105-term products, 105-term mean.
    np.testing.assert_allclose(got, expected, rtol=f32_tol(3, 3, 1, 105, 1, 105))


def test_released_prior_files_load():
    shape = load_shape_prior(shared_file("smal_priors", "my_smpl_data_00781_4_all.pkl"))
    pose = load_pose_prior(shared_file("smal_priors",
                                       "walking_toy_symmetric_pose_prior_with_cov_35parts.pkl"))
    assert shape.means.shape == (5, 41) and shape.precisions.shape == (5, 41, 41)
    assert pose.mean.shape == (105,) and pose.precision.shape == (105, 105)
    # Each family's mean shape costs nothing; the mean pose costs nothing.
    at_mean = shape_prior(shape, shape.means, jnp.arange(5))
    np.testing.assert_allclose(at_mean, 0.0, atol=1e-6)
    mean_rot = Rotation.from_rotvec(np.asarray(pose.mean, np.float64).reshape(35, 3)).as_matrix()
    # The float32 round trip rotation -> axis-angle errs by ~8 U |mean| per component; through the
    # precision's 105-term rows and the square (x4 on the error).
    aa_error = 8 * U * np.abs(np.asarray(pose.mean)).max()
    bound = (4 * aa_error * np.abs(np.asarray(pose.precision)).max() * np.sqrt(105)) ** 2
    assert float(pose_prior(pose, jnp.asarray(mean_rot[None], jnp.float32))[0]) < bound
    rest = pose_prior(pose, jnp.tile(jnp.eye(3), (1, 35, 1, 1)))
    assert float(rest[0]) > 1e-2
