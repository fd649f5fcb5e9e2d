"""AniMer's SMAL-parameter discriminator (HMR's adversarial prior), for stage-1 training.

`Discriminator()(pose, betas)` scores how real a predicted pose and shape look:
pose [B, 34, 3, 3] (local rotations of the 34 non-root joints), betas [B, 41] -> [B, 36] =
one score per joint, one for the shape, one for the whole pose:

    per joint   the 9 rotation entries -> 1x1 conv 32, ReLU -> 1x1 conv 32, ReLU (shared over
                joints) -> its own Linear 32 -> 1
    shape       betas -> Linear 10, ReLU -> Linear 5, ReLU -> Linear 1
    whole pose  the 32 x 34 joint features, flattened channel-major as torch's [B, 32, 34, 1]
                reshape does -> Linear 1024, ReLU -> Linear 1024, ReLU -> Linear 1

A 1x1 convolution is a Dense over the 9 (then 32) channels of each joint. Weights start
Xavier-uniform, biases at zero, as AniMer's; module names follow its state dict
(`D_conv1`, `pose_out_{j}`, `betas_fc1`, `D_alljoints_fc1`, ...; animax/convert/keymap.py).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

NUM_JOINTS = 34
# Its parameters' collection in a converted checkpoint directory (not part of the pipeline's).
COLLECTION = "discriminator"


class Discriminator(nn.Module):
    """See the module docstring. Float32 throughout (it is small and trained beside the model)."""

    num_joints: int = NUM_JOINTS

    @nn.compact
    def __call__(self, pose, betas):
        dense = functools.partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
                                  bias_init=nn.initializers.zeros)
        batch = pose.shape[0]
        joints = pose.reshape(batch, self.num_joints, 9).astype(jnp.float32)
        joints = nn.relu(dense(32, name="D_conv1")(joints))
        joints = nn.relu(dense(32, name="D_conv2")(joints))                        # [B, 34, 32]
        per_joint = jnp.concatenate([dense(1, name=f"pose_out_{j}")(joints[:, j]) for j in range(self.num_joints)],
                                    axis=-1)
        shape = nn.relu(dense(10, name="betas_fc1")(betas.astype(jnp.float32)))
        shape = dense(1, name="betas_out")(nn.relu(dense(5, name="betas_fc2")(shape)))
        whole = joints.transpose(0, 2, 1).reshape(batch, -1)                      # channel-major, as torch
        whole = nn.relu(dense(1024, name="D_alljoints_fc1")(whole))
        whole = nn.relu(dense(1024, name="D_alljoints_fc2")(whole))
        whole = dense(1, name="D_alljoints_out")(whole)
        return jnp.concatenate([per_joint, shape, whole], axis=-1)


def init_discriminator(rng, num_betas: int = 41):
    """Fresh discriminator parameters."""
    pose = jnp.zeros((1, NUM_JOINTS, 3, 3), jnp.float32)
    return Discriminator().init(rng, pose, jnp.zeros((1, num_betas), jnp.float32))["params"]
