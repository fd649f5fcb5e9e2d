"""Fusion of the visual, head and SMAL-parameter streams into one 512-d descriptor."""

import flax.linen as nn
import jax.numpy as jnp


def smal_parameter_vector(betas, pose, cam):
    """betas [B,41], pose [B,35,3,3], cam [B,3] -> [B, 41 + 315 + 3] = [B, 359]."""
    return jnp.concatenate([betas, pose.reshape(pose.shape[0], -1), cam], axis=-1)


class Fusion(nn.Module):
    """LayerNorm over [visual 1280 | head 768 | params 359], then Dense-GELU-Dense to 512.

    The norm puts the three streams, whose scales differ by orders of magnitude, on one footing.
    """
    hidden: int = 1024
    features: int = 512
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, visual, head, params):
        x = jnp.concatenate([visual, head, params], axis=-1)
        x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm")(x)
        x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(self.features, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)
