"""Batch sources of a training config, per process.

Each process reads `batch_size / process_count` examples of every global batch (sharding.py
assembles the global arrays). The training source is a checkpointable iterator
(`get_state` / `set_state`); the evaluation set is read afresh, and in the same order, at
every evaluation, its last batch padded and marked by `valid`.
"""

from __future__ import annotations

import jax
import numpy as np

from animax.smal import BodyModelBank, SMALModel
from animax.train.prefetch import Prefetch
from animax.train.synthetic import SyntheticQuadrupeds

# What the steps read (everything else a dataset yields stays on the host).
TRAIN_KEYS = ("image", "keypoints_2d", "keypoints_3d", "betas", "pose", "has_betas", "has_pose", "family",
              "identity")
EVAL_KEYS = ("image", "keypoints_2d", "keypoints_3d", "mask", "has_mask", "betas", "pose", "has_betas", "has_pose",
             "family", "identity", "valid")
# Read by the steps when a source yields them: each row's body model in a bank (several meshes),
# a dataset's own PCK length (Horse-10's nose-to-eye distance), its own keypoints (data.source_keypoints).
OPTIONAL_KEYS = ("body_model", "pck_scale", "source_keypoints")
# With data.device_crop the loader sends these in place of image and mask, which the steps make
# (`animax.train.step.with_image`, reading has_mask too).
WINDOW_KEYS = ("window", "window_affine", "window_edges", "gain")
INLINE = "synthetic_inline"


def step_keys(keys, batch) -> list:
    """`keys` as a step reads them from `batch`: the crop's windows in place of image and mask
    when the batch has them (data.device_crop)."""
    if "window" not in batch:
        return list(keys)
    keys = [k for k in keys if k not in ("image", "mask")]
    return keys + [k for k in (*WINDOW_KEYS, "has_mask") if k not in keys]


def per_process(global_size: int) -> int:
    """This process's share of a global batch."""
    count = jax.process_count()
    if global_size % count:
        raise ValueError(f"global batch {global_size} does not split over {count} processes")
    return global_size // count


def train_source(config, body: SMALModel | BodyModelBank):
    """The endless training iterator of this process (yields dicts of numpy arrays), read
    `config.data.prefetch` batches ahead on a background thread."""
    local = per_process(config.batch_size)
    if config.data.name == INLINE:
        source = SyntheticQuadrupeds(body, local, seed=config.seed, shard_index=jax.process_index(),
                                     shard_count=jax.process_count(), gt_fraction=config.data.gt_fraction,
                                     num_examples=config.data.get("train_examples"),
                                     max_yaw=np.radians(config.data.max_yaw_degrees))
    else:
        source = _dataset_source(config, split=config.data.train_split, batch_size=local, train=True)
    return Prefetch(source, config.data.prefetch) if config.data.prefetch else source


def close_train_source(source) -> None:
    """Stops the reader thread of a `train_source` read ahead (data.prefetch); else nothing."""
    if isinstance(source, Prefetch):
        source.close()


def _pairs(spec, what, key):
    """'a:x,b:y' -> [(a, x), (b, y)]; a ValueError naming `key` otherwise."""
    pairs = [item.strip().split(":") for item in spec.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
        raise ValueError(f"{key}={spec!r}: expected comma-separated {what} pairs")
    return [tuple(p) for p in pairs]


def mixture(config) -> list[tuple[str, float]] | None:
    """`config.data.mixture` ("animal3d:1.0,ctrlani3d:0.5,horse10:0.15") as (dataset, weight)
    pairs, or None: train on `data.name` alone."""
    spec = config.data.get("mixture")
    if not spec:
        return None
    pairs = _pairs(spec, "DATASET:WEIGHT", "config.data.mixture")
    try:
        return [(name, float(weight)) for name, weight in pairs]
    except ValueError:
        raise ValueError(f"config.data.mixture={spec!r}: a weight is not a number") from None


def eval_sets(config) -> list[tuple[str, str]]:
    """(dataset, split) pairs that `--mode eval` reports: `config.data.eval_sets`
    ("animal3d:test,horse10:test_within", all in `data.root`), else the training set's held-out split."""
    spec = config.data.get("eval_sets")
    if not spec:
        return [(config.data.name, config.data.eval_split)]
    return _pairs(spec, "DATASET:SPLIT", "config.data.eval_sets")


def eval_batches(config, body: SMALModel | BodyModelBank, dataset: tuple[str, str] | None = None):
    """This process's evaluation batches of `dataset` (name, split; default the training set's
    held-out split), each with `valid [b]`: 0 marks padding rows."""
    local = per_process(config.eval_batch_size)
    name, split = dataset or (config.data.name, config.data.eval_split)
    if name == INLINE:
        if config.data.eval_examples is None:
            raise ValueError("synthetic_inline needs config.data.eval_examples (its held-out set is generated)")
        num_batches = -(-config.data.eval_examples // config.eval_batch_size)
        source = SyntheticQuadrupeds(body, local, seed=config.seed, split="test",
                                     shard_index=jax.process_index(), shard_count=jax.process_count(),
                                     num_batches=num_batches, max_yaw=np.radians(config.data.max_yaw_degrees))
    else:
        source = _dataset_source(config, split=split, batch_size=local, train=False, name=name)
    limit = config.data.eval_examples
    seen = 0
    for batch in source:
        rows = len(batch["keypoints_2d"])
        # Rows past `eval_examples` (counted globally: batch n covers examples n*B ... on all processes)
        # and rows padding a short last batch do not count.
        first = seen + jax.process_index() * local
        valid = np.ones(rows, np.float32) if limit is None else (first + np.arange(rows) < limit).astype(np.float32)
        seen += config.eval_batch_size
        keys = step_keys([k for k in EVAL_KEYS if k != "valid"], batch) + [k for k in OPTIONAL_KEYS if k in batch]
        yield _pad({**{k: batch[k] for k in keys}, "valid": valid}, local)
        if limit is not None and seen >= limit:
            return


def _pad(batch: dict, size: int) -> dict:
    """Pads every array to `size` rows with zeros (valid = 0 there)."""
    rows = len(batch["valid"])
    if rows == size:
        return batch
    return {k: np.concatenate([v, np.zeros((size - rows, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _dataset_source(config, split, batch_size, train, name=None):
    """A grain iterator over a built animax.data dataset (`name`, default `config.data.name`, in
    `config.data.root`); training reads the weighted `data.mixture` when one is set.

    Training: shuffled, endless, augmented per `config.data.augment`; its state (bytes) is
    checkpointed. Evaluation: one pass in order, the last batch short (padded by the caller).
    Both crop as AniMer's datasets (animax.image.crop.DATASET), not as inference; with
    `data.device_crop` in the jitted steps, from windows of `data.device_crop_window` pixels.
    """
    import grain.python as grain

    from animax import data as data_lib  # TFDS and grain are only needed for real datasets

    weighted = (mixture(config) if train else None) or [(name or config.data.name, 1.0)]
    if not config.data.root:
        raise ValueError(f"config.data.root must name the folder {weighted[0][0]!r} was built into "
                         "(python -m animax.data.build ... --data_dir ROOT)")
    sources = [data_lib.open_source(n, split, config.data.root) for n, _ in weighted]
    sharded = jax.process_count() > 1
    loader = data_lib.make_loader(
        sources, weights=[w for _, w in weighted], batch_size=batch_size, seed=config.seed,
        augment=data_lib.AugmentConfig() if train and config.data.augment else None,
        worker_count=config.data.worker_count, num_epochs=None if train else 1, shuffle=train,
        drop_remainder=train, shard_options=grain.ShardByJaxProcess() if sharded else None,
        source_keypoints=config.data.get("source_keypoints", 0),
        # AniMer's EvaluationDataset never blurs; its TrainDataset only with USE_SKIMAGE_ANTIALIAS.
        antialias=train and config.data.get("antialias", False),
        device_crop_window=config.data.get("device_crop_window", 0) if config.data.get("device_crop") else 0)
    return iter(loader)
