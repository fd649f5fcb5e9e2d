"""AniMer's SMAL priors: a family-aware Gaussian on betas and a Gaussian on the joint angles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from animax.geometry import rotmat_to_axis_angle
from animax.smal.io import load_pickle


@struct.dataclass
class ShapePrior:
    """One Gaussian per animal family over the leading shape coefficients."""
    means: jax.Array       # [C, NB]
    precisions: jax.Array  # [C, NB, NB]: P_c = chol(inv(cov_c + 1e-5 I)) (lower Cholesky factor)


@struct.dataclass
class PosePrior:
    """A Gaussian over the axis-angles of all joints, flattened (35 x 3 = 105)."""
    mean: jax.Array        # [105]
    precision: jax.Array   # [105, 105] ('pic' in the released file)


def load_shape_prior(path) -> ShapePrior:
    """Reads `my_smpl_data_00781_4_all.pkl` (cluster_means [5,41], cluster_cov 5 x [41,41])."""
    data = load_pickle(path)
    means = np.asarray(data["cluster_means"], np.float64)
    covs = np.stack([np.asarray(c, np.float64) for c in data["cluster_cov"]])
    eye = np.eye(covs.shape[-1])
    precisions = np.stack([np.linalg.cholesky(np.linalg.inv(c + 1e-5 * eye)) for c in covs])
    return ShapePrior(jnp.asarray(means, jnp.float32), jnp.asarray(precisions, jnp.float32))


def load_pose_prior(path) -> PosePrior:
    """Reads `walking_toy_symmetric_pose_prior_with_cov_35parts.pkl` (mean_pose [105], pic [105,105])."""
    data = load_pickle(path)
    return PosePrior(jnp.asarray(data["mean_pose"], jnp.float32), jnp.asarray(data["pic"], jnp.float32))


def shape_prior(prior: ShapePrior, betas, family):
    """Per-sample penalty mean(((betas - mean_c) @ P_c)^2). betas [B, NB'], family [B] int -> [B]."""
    nb = prior.means.shape[-1]
    d = betas[:, :nb] - prior.means[family]
    z = jnp.einsum("bi,bij->bj", d, prior.precisions[family])
    return jnp.mean(z * z, axis=-1)


def pose_prior(prior: PosePrior, pose):
    """Per-sample penalty mean(((aa - mean) @ pic * mask)^2), as AniMer computes it.

    The mask zeroes the first 3 outputs of the product (the global-rotation rows), so the
    global rotation still enters through pic's off-diagonal entries, exactly as in AniMer.

    pose [B, 35, 3, 3] rotation matrices -> [B].
    """
    aa = rotmat_to_axis_angle(pose).reshape(pose.shape[0], -1)
    z = (aa - prior.mean) @ prior.precision
    mask = jnp.ones(z.shape[-1], z.dtype).at[:3].set(0.0)
    return jnp.mean((z * mask) ** 2, axis=-1)
