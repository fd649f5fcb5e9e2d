"""The training input pipeline: TFDS array_record sources -> grain -> fixed-shape numpy batches.

    sources = [open_source("animal3d", "train", data_dir), open_source("horse10", "train", data_dir)]
    loader = make_loader(sources, weights=[1.0, 0.2], batch_size=16, seed=0, worker_count=4)
    iterator = iter(loader)
    batch = next(iterator)
    state = iterator.get_state()     # bytes; `iter(loader).set_state(state)` resumes on the next batch

Batches (B = batch_size, S = out_size, 256 by default):
    image             float32 [B,S,S,3]  ImageNet-normalised RGB crop, made as AniMer's datasets make
                                         theirs (animax.image.crop.DATASET)
    mask              float32 [B,S,S]    animal mask in 0..1 (zeros where has_mask is 0; all ones
                                         where the crop's mask is everywhere below 0.5, as AniMer)
    keypoints_2d      float32 [B,26,3]   x, y crop-normalised (kp / S - 0.5) and confidence
    keypoints_3d      float32 [B,26,4]   camera-frame x, y, z (rotated with the crop) and confidence
    betas             float32 [B,41]
    pose              float32 [B,35,3,3] rotation matrices, joint 0 the global orientation: the
                                         training loss compares matrices, and rotating or
                                         mirroring a crop composes matrices
    has_betas, has_pose, has_keypoints_3d, has_mask   float32 [B] (1 = annotated)
    family            int32 [B]          SMAL family index, -1 unknown (features.FAMILY_NAMES)
    identity          int32 [B]          the individual within its dataset, -1 unknown
    pck_scale         float32 [B]        the dataset's own PCK length in crop pixels (0: none)
    source_keypoints  float32 [B,S,3]    with make_loader(source_keypoints=S): each source's own
                                         keypoints (all of Horse-10's 22), crop-normalised like
                                         keypoints_2d, padded with (0, 0, 0)
    dataset           int32 [B]          index of the example's source in `sources`

With make_loader(device_crop_window=N) the crop is left to the jitted step
(`animax.image.device_warp.warp_windows`, `animax.train.step.with_image`), and the batch has,
in place of image and mask (every other field as above):
    window            uint8 [B,N,N,4]    the source pixels the crop reads (RGB and the mask, zero
                                         without one), padded; a host crop where they do not fit
    window_affine     float32 [B,2,3]    offsets from the crop's centre pixel -> window pixels
    window_edges      int32 [B,2,2]      the picture's first and last pixel in window coordinates
                                         (x, then y): taps beyond them weigh zero
    gain              float32 [B,3]      the augmentation's colour gain

Every example's augmentation comes from grain's per-record generator, derived from `seed`
and the record's position in the shuffled stream: the same seed gives the same batches, and
a restored iterator state continues on the exact next batch. Each worker process batches its
own share of the records, so which examples share a batch depends on `worker_count` (not how
each is augmented): resume with the worker count the state was saved with.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from animax.data import features
from animax.data.augment import Augmentation, AugmentConfig, crop_example, sample_augmentation
from animax.data.mixture import MixtureSource
from animax.geometry import CROP_SIZE
from animax.image.crop import DATASET, DATASET_ANTIALIAS
from animax.image.io import open_rgb

_FLAGS = ("has_betas", "has_pose", "has_keypoints_3d", "has_mask")


def open_source(name: str, split: str, data_dir):
    """A built dataset's split as a random-access source (images left encoded): what
    `tfds.data_source` returns, with a clear error when the dataset is not built."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(f"{name} is not built in {data_dir}: run python -m animax.data.build "
                                f"{name} --manual_dir SRC --data_dir {data_dir}")
    return builder.as_data_source(split=split, decoders={
        field: tfds.decode.SkipDecoding() for field in features.ENCODED_FIELDS})


def decode_example(example) -> np.ndarray:
    """Stored example -> uint8 pixels [H, W, 3], or [H, W, 4] with the mask as fourth channel."""
    image = open_rgb(io.BytesIO(example["image"]))
    if example["has_mask"]:
        with Image.open(io.BytesIO(example["mask"])) as mask:
            # Pillow interleaves the mask in C, several times faster than a NumPy
            # concatenate along the channel axis at this size.
            image.putalpha(mask.convert("L"))
    return np.asarray(image)


def prepare_example(example, augmentation=Augmentation(), out_size=CROP_SIZE, recipe=DATASET,
                    window_size: int = 0) -> dict:
    """One stored example -> one batch row (see the module docstring for the fields), cropped
    as AniMer's datasets crop (`animax.image.crop.DATASET`) unless `recipe` says otherwise;
    window_size > 0: its window for the device crop instead."""
    out = crop_example(decode_example(example), example, augmentation, out_size, recipe, window_size)
    out["betas"] = np.asarray(example["betas"], np.float32)
    out["family"] = np.int32(example["family"])
    out["identity"] = np.int32(example["identity"])
    out["pck_scale"] = np.float32(example["pck_scale"]) * out.pop("zoom")
    for flag in _FLAGS:
        out[flag] = np.float32(example[flag])
    return out


def fixed_source_keypoints(keypoints, count: int) -> np.ndarray:
    """A row's source keypoints [S, 3] padded with unlabelled (0, 0, 0) to `count`, so rows of
    datasets with fewer (or none) batch together."""
    if len(keypoints) > count:
        raise ValueError(f"an example has {len(keypoints)} source keypoints, more than the loader's "
                         f"source_keypoints={count}")
    return np.concatenate([keypoints, np.zeros((count - len(keypoints), 3), np.float32)])


class PrepareExample(grain.RandomMapTransform):
    """grain transform: a (source index, stored example) pair -> a batch row, augmented when
    `augment` is given (training), else the plain crop (AniMer's EvaluationDataset); both crop
    as AniMer's datasets, blurred only with `antialias` (its USE_SKIMAGE_ANTIALIAS); on the
    device from windows of `window_size` pixels when that is > 0."""

    def __init__(self, augment: AugmentConfig | None, out_size=CROP_SIZE, source_keypoints: int = 0,
                 antialias: bool = False, window_size: int = 0):
        self.augment = augment
        self.window_size = window_size
        self.out_size = out_size
        self.source_keypoints = source_keypoints
        self.recipe = DATASET_ANTIALIAS if antialias else DATASET

    def random_map(self, element, rng: np.random.Generator):
        source_index, example = element
        augmentation = sample_augmentation(rng, self.augment) if self.augment else Augmentation()
        out = prepare_example(example, augmentation, self.out_size, self.recipe, self.window_size)
        out["dataset"] = np.int32(source_index)
        source = out.pop("source_keypoints")
        if self.source_keypoints:
            out["source_keypoints"] = fixed_source_keypoints(source, self.source_keypoints)
        return out


def make_loader(sources: Sequence, *, batch_size: int, seed: int, weights: Sequence[float] | None = None,
                augment: AugmentConfig | None = AugmentConfig(), worker_count: int = 0,
                num_epochs: int | None = None, shuffle: bool = True, drop_remainder: bool = True,
                shard_options: grain.ShardOptions | None = None, out_size: int = CROP_SIZE,
                worker_buffer_size: int = 2, read_options: grain.ReadOptions | None = None,
                source_keypoints: int = 0, antialias: bool = False,
                device_crop_window: int = 0) -> grain.DataLoader:
    """A grain DataLoader over `sources` mixed by `weights` (default: equal).

    seed: shuffling and augmentation; num_epochs None = endless; worker_count 0 = in this
    process; shard_options: e.g. grain.ShardByJaxProcess() for multi-host training (default:
    no sharding). augment None gives the plain crop (evaluation). Crops are AniMer's dataset
    crops (`animax.image.crop.DATASET`: floored box centre, no blur, whole grey levels);
    antialias: blur first as its DATASETS.USE_SKIMAGE_ANTIALIAS would (off in AniMer).
    read_options: record reading threads and read-ahead per process. The default is small:
    records come from local array_record files and decoding dominates, and grain's own
    default (16 threads, 500 records ahead) costs more in thread start-up and contention
    than it saves. source_keypoints: batch the sources' own keypoints too, padded to this many
    (`source_keypoints [B, S, 3]`; 0 = leave them out). device_crop_window: send each crop's
    window of this many pixels a side for the jitted step to crop (see the module docstring;
    0 = crop here). It should hold the pictures' boxes (1.3 x enlarged, rotated): rows whose
    region does not fit, and blurred crops (antialias), are cropped here and sent as windows.
    """
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # grain's worker processes read grain's absl flags; programs that do not parse absl
        # flags (pytest, argparse CLIs) get their defaults.
        flags.FLAGS.mark_as_parsed()
    weights = [1.0] * len(sources) if weights is None else weights
    source = MixtureSource(sources, weights, seed=seed)
    shard_options = shard_options or grain.NoSharding()
    sampler = grain.IndexSampler(num_records=len(source), shard_options=shard_options,
                                 shuffle=shuffle, num_epochs=num_epochs, seed=seed)
    return grain.DataLoader(
        data_source=source, sampler=sampler,
        operations=[PrepareExample(augment, out_size, source_keypoints, antialias, device_crop_window),
                    grain.Batch(batch_size, drop_remainder)],
        worker_count=worker_count, worker_buffer_size=worker_buffer_size,
        shard_options=shard_options,
        read_options=read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=64))
