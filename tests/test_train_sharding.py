"""FSDP placement (animax.train.sharding): the largest divisible axis is split."""

import jax

from animax.train.sharding import fsdp_spec


def test_fsdp_splits_the_largest_divisible_axis():
    assert fsdp_spec((3, 1280, 3840), 4) == jax.sharding.PartitionSpec(None, None, "fsdp")
    assert fsdp_spec((32, 1280, 5), 4) == jax.sharding.PartitionSpec(None, "fsdp")
    assert fsdp_spec((3, 5), 4) == jax.sharding.PartitionSpec()
    assert fsdp_spec((1280,), 1) == jax.sharding.PartitionSpec()
    # Leaves under the size threshold stay replicated (a ViT-H bias, 5 KiB, against 4 MiB).
    assert fsdp_spec((1280,), 4, nbytes=5120, min_bytes=4 * 2**20) == jax.sharding.PartitionSpec()
    assert fsdp_spec((1280, 3840), 4, nbytes=4 * 1280 * 3840, min_bytes=4 * 2**20) == jax.sharding.PartitionSpec(
        None, "fsdp")
