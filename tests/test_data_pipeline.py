"""The grain pipeline: fixed-shape batches, seeded and resumable, over weighted mixtures."""

import io

import numpy as np
import pytest
from test_data_fixtures import write_animal3d, write_coco

from animax.data import AugmentConfig, make_loader, open_source
from animax.data.build import build
from animax.data.mixture import MixtureSource
from animax.image.io import load_image
from animax.predict.predictor import prepare
from helpers.nn_reference import U

BATCH_SHAPES = {
    "image": ((4, 256, 256, 3), np.float32), "mask": ((4, 256, 256), np.float32),
    "keypoints_2d": ((4, 26, 3), np.float32), "keypoints_3d": ((4, 26, 4), np.float32),
    "betas": ((4, 41), np.float32), "pose": ((4, 35, 3, 3), np.float32),
    "has_betas": ((4,), np.float32), "has_pose": ((4,), np.float32),
    "has_keypoints_3d": ((4,), np.float32), "has_mask": ((4,), np.float32),
    "family": ((4,), np.int32), "identity": ((4,), np.int32), "pck_scale": ((4,), np.float32),
    "dataset": ((4,), np.int32),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two built datasets: animal3d (5 train examples, full 3D labels) and AP-10K style (4, 2D only)."""
    root = tmp_path_factory.mktemp("pipeline")
    write_animal3d(root / "a3d")
    write_coco(root / "coco")
    build("animal3d", root / "a3d", root / "data", progress=False)
    build("coco_keypoints", root / "coco", root / "data", progress=False)
    return [open_source("animal3d", "train", root / "data"), open_source("coco_keypoints", "train", root / "data")]


def loader(sources, seed=0, **kwargs):
    kwargs = {"batch_size": 4, "weights": [1.0, 1.0], "augment": AugmentConfig(flip_rate=0.5), **kwargs}
    return make_loader(sources, seed=seed, **kwargs)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_same(batches_a, batches_b):
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_format(sources):
    batch = next(iter(loader(sources)))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == BATCH_SHAPES
    rotations = batch["pose"]
    # Float64 rotations rounded to float32, then a 3-term float32 product: <= ~5 U; x3.
    np.testing.assert_allclose(rotations @ np.swapaxes(rotations, -1, -2), np.broadcast_to(np.eye(3), rotations.shape),
                               atol=16 * U)
    from_animal3d = batch["dataset"] == 0
    np.testing.assert_array_equal(batch["has_pose"], from_animal3d)
    np.testing.assert_array_equal(batch["has_mask"], from_animal3d)
    assert (batch["mask"][~from_animal3d] == 0).all()
    visible = batch["keypoints_2d"][..., 2] > 0
    assert visible.any() and (np.abs(batch["keypoints_2d"][..., :2][visible]) < 1.0).all()


def test_evaluation_crop_is_animer_dataset_crop_not_the_inference_crop(sources):
    """augment=None gives AniMer's EvaluationDataset crop (floored centre, no blur, whole grey
    levels; tests/test_data_animer_parity.py checks it against cv2), not inference's."""
    from animax.data import prepare_example
    from animax.image.crop import IMAGE_MEAN, IMAGE_STD

    batch = next(iter(loader(sources, augment=None, shuffle=False, weights=[1.0, 0.0], num_epochs=1)))
    for row in range(4):                             # one source, unshuffled: read in order
        example = sources[0][row]
        np.testing.assert_array_equal(batch["image"][row], prepare_example(example)["image"])
        grey = batch["image"][row] * IMAGE_STD + IMAGE_MEAN
        # Whole grey levels: float32 normalisation there and back, ~2 U 255 / 0.0039 of a level.
        np.testing.assert_allclose(grey, np.round(grey), atol=1e-3)
        inference = prepare(load_image(io.BytesIO(example["image"])), example["bbox"]).crop
        assert not np.array_equal(batch["image"][row], inference)    # inference keeps the warp's fractions


def test_same_seed_same_batches(sources):
    assert_same(take(iter(loader(sources, seed=7)), 3), take(iter(loader(sources, seed=7)), 3))
    other = next(iter(loader(sources, seed=8)))
    assert not np.array_equal(other["image"], next(iter(loader(sources, seed=7)))["image"])


def test_restored_iterator_continues_with_the_next_batch(sources):
    iterator = iter(loader(sources))
    take(iterator, 2)
    state = iterator.get_state()
    expected = take(iterator, 2)                     # crosses the end of the first epoch (9 records)
    resumed = iter(loader(sources))
    resumed.set_state(state)
    assert_same(take(resumed, 2), expected)


def test_a_worker_process_gives_the_same_batches(sources):
    assert_same(take(iter(loader(sources, worker_count=1)), 3), take(iter(loader(sources)), 3))


def test_mixture_follows_the_weights_and_reads_every_record():
    small, large = list(range(10)), list(range(100, 140))
    mixture = MixtureSource([small, large], [3.0, 1.0], seed=1)
    picks = [mixture[i] for i in range(len(mixture))]
    counts = np.bincount([k for k, _ in picks])
    # Long enough to read the large source whole once; the small one repeats, 3:1 overall.
    assert counts.tolist() == [120, 40]
    assert sorted(r for k, r in picks if k == 1) == large
    assert sorted(r for k, r in picks if k == 0) == sorted(small * 12)
    mixture = MixtureSource([small, large], [1.0, 1.0], seed=1)
    assert {r for k, r in (mixture[i] for i in range(len(mixture))) if k == 1} == set(large)
    np.testing.assert_array_equal(MixtureSource([small, large], [1, 2], seed=5).record,
                                  MixtureSource([small, large], [1, 2], seed=5).record)


def test_source_keypoints_follow_the_crop_and_the_flip_like_the_smal_ones(sources):
    """The AP-10K source's own 17 keypoints, padded to 20: those mapped to SMAL land exactly where
    their SMAL keypoints do, through every augmentation (flips swap both the same way)."""
    from animax.data.keypoint_maps import load_keypoint_map

    mapping = load_keypoint_map("ap10k")
    smal = mapping.smal_index(mapping.keypoints)
    batch = next(iter(loader(sources[1:], weights=[1.0], source_keypoints=20,
                             augment=AugmentConfig(flip_rate=0.5, rotation_rate=1.0))))
    assert batch["source_keypoints"].shape == (4, 20, 3)
    np.testing.assert_array_equal(batch["source_keypoints"][:, 17:], 0.0)
    source = batch["source_keypoints"][:, :17]
    np.testing.assert_allclose(source[:, smal >= 0], batch["keypoints_2d"][:, smal[smal >= 0]], atol=1e-6)


def test_device_crop_batches_crop_on_the_device_as_the_host_loader(sources):
    """device_crop_window: the same batches, the crop's windows in place of image and mask; the
    step's crop (`animax.train.step.with_image`) gives the host loader's image and mask within
    tests/test_device_crop.py's bound (a grey level apart, rarely)."""
    import jax

    from animax.image.crop import IMAGE_STD
    from animax.train.step import with_image

    augment = AugmentConfig(flip_rate=0.5, rotation_rate=1.0)      # every crop rotated
    host = take(iter(loader(sources, augment=augment)), 2)
    device = take(iter(loader(sources, augment=augment, device_crop_window=256)), 2)
    cropped = jax.jit(with_image)
    for h, d in zip(host, device):
        assert d["window"].shape == (4, 256, 256, 4) and d["window"].dtype == np.uint8
        assert set(d) - set(h) == {"window", "window_affine", "window_edges", "gain"}
        assert set(h) - set(d) == {"image", "mask"}
        for key in set(h) & set(d):
            np.testing.assert_array_equal(h[key], d[key], err_msg=key)
        out = jax.device_get(cropped(d))
        image_diff = np.abs(out["image"] - h["image"])
        assert image_diff.max() <= 1.3 / IMAGE_STD.min() and (image_diff > 1e-4).mean() < 3e-3
        mask_diff = np.abs(out["mask"] - h["mask"])
        assert mask_diff.max() <= 1.01 / 255 and (mask_diff > 1e-6).mean() < 1e-3
