"""Priors of a fit: AniMer's shape and pose priors (the released files, through
animax.smal.priors) or the stand-in's own, and joint limits derived from the pose prior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from animax.smal.priors import PosePrior, ShapePrior, load_pose_prior, load_shape_prior
from animax.smal.standin import SHAPE_PARAMETERS, walking_pose

# Joint limits sit this many prior standard deviations from the prior's mean.
LIMIT_SIGMAS = 4.0
NO_LIMIT = 2 * np.pi


@struct.dataclass
class FitPriors:
    """shape: ShapePrior, pose: PosePrior, lower/upper [J, 3]: axis-angle joint limits (radians)."""
    shape: ShapePrior
    pose: PosePrior
    lower: jax.Array
    upper: jax.Array


def limits_from_pose_prior(pose: PosePrior, num_joints: int, sigmas: float = LIMIT_SIGMAS):
    """(lower, upper) [J, 3]: the prior's mean -/+ `sigmas` of its marginal standard deviations,
    the prior's precision being pic pic^T (z = (aa - mean) @ pic); the root is not limited."""
    pic = np.asarray(pose.precision, np.float64)
    std = np.sqrt(np.diag(np.linalg.inv(pic @ pic.T + 1e-9 * np.eye(len(pic))))).reshape(num_joints, 3)
    mean = np.asarray(pose.mean, np.float64).reshape(num_joints, 3)
    lower, upper = mean - sigmas * std, mean + sigmas * std
    lower[0], upper[0] = -NO_LIMIT, NO_LIMIT
    return jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32)


def animer_priors(shape_path, pose_path, num_joints: int = 35) -> FitPriors:
    """AniMer's priors from the released files (my_smpl_data_00781_4_all.pkl and
    walking_toy_symmetric_pose_prior_with_cov_35parts.pkl)."""
    pose = load_pose_prior(pose_path)
    return FitPriors(load_shape_prior(shape_path), pose, *limits_from_pose_prior(pose, num_joints))


def standin_priors(body) -> FitPriors:
    """The stand-in's priors: Gaussians as wide as the stand-in's synthetic animals vary.

    Shape: one family, mean 0; each named direction (SHAPE_PARAMETERS, one unit = one typical
    variation) with standard deviation 1, the small random thickness directions beyond them 0.3.
    Pose: mean 0; per joint the spread of a relaxed animal (`animax.data.scenes.joint_sigmas`:
    a stiff spine, legs swinging fore and aft, a loose head and tail) plus the walk's swing
    (`walking_pose`, the stride uniform in [-1, 1]).
    """
    from animax.data.scenes import joint_sigmas  # the stand-in's pose spread, defined once there

    num_betas, num_joints = body.num_betas, body.num_joints
    beta_std = np.where(np.arange(num_betas) < len(SHAPE_PARAMETERS), 1.0, 0.3)
    shape = ShapePrior(jnp.zeros((1, num_betas), jnp.float32),
                       jnp.asarray(np.diag(1.0 / beta_std)[None], jnp.float32))
    spread = np.sqrt(joint_sigmas(body.joint_names) ** 2 + walking_pose(num_joints) ** 2 / 3.0)
    spread[0] = 1.0           # the root's orientation is the camera's business, not the prior's
    precision = np.diag(1.0 / spread.reshape(-1))
    pose = PosePrior(jnp.zeros(3 * num_joints, jnp.float32), jnp.asarray(precision, jnp.float32))
    return FitPriors(shape, pose, *limits_from_pose_prior(pose, num_joints))


def default_priors(body, shape_path=None, pose_path=None) -> FitPriors:
    """AniMer's priors when their files are given, else the stand-in's (for the stand-in body)."""
    if shape_path is not None and pose_path is not None:
        return animer_priors(shape_path, pose_path, body.num_joints)
    return standin_priors(body)
