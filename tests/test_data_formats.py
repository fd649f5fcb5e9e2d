"""Each builder reads its real on-disk format, skips bad data with the reason, and stores
exactly what the source says."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from test_data_fixtures import AP10K_KEYPOINTS, HORSE10_PARTS, write_animal3d, write_coco, write_dlc_project

from animax.data import features, open_source
from animax.data.build import build
from animax.data.dlc import read_labels
from animax.data.keypoint_maps import load_keypoint_map
from animax.smal.constants import KEYPOINT_NAMES
from helpers.nn_reference import U
from helpers.shared_data import shared_file


def read_all(name, data_dir, split):
    source = open_source(name, split, data_dir)
    return [source[i] for i in range(len(source))]


def skipped_reasons(report):
    return sorted(s["reason"] for s in report["skipped"])


@pytest.fixture(scope="module")
def dlc(tmp_path_factory):
    root = tmp_path_factory.mktemp("dlc")
    return root, write_dlc_project(root)


def test_dlc_csv_layouts_read_the_same_labels(dlc):
    root, expected = dlc
    for video in ("horseA", "horseB", "horseC"):          # three index columns, one path column
        for frame in read_labels(root / f"labeled-data/{video}/CollectedData_Byron.csv"):
            assert frame.bodyparts == HORSE10_PARTS
            np.testing.assert_allclose(frame.xy, expected["points"][frame.image], equal_nan=True)


def test_dlc_multi_animal_csv_gives_one_frame_per_individual(tmp_path):
    path = tmp_path / "CollectedData_me.csv"
    path.write_text("scorer,me,me,me,me,me,me\n"
                    "individuals,a,a,a,b,b,b\n"
                    "bodyparts,Nose,Nose,Nose,Nose,Nose,Nose\n"
                    "coords,x,y,likelihood,x,y,likelihood\n"
                    "labeled-data/v/img0.png,1.5,2.5,0.9,,,\n")
    frames = read_labels(path)
    assert [(f.image, f.individual) for f in frames] == [("labeled-data/v/img0.png", "a"),
                                                         ("labeled-data/v/img0.png", "b")]
    np.testing.assert_allclose(frames[0].xy, [[1.5, 2.5]])
    assert np.isnan(frames[1].xy).all()


def test_horse10_maps_parts_and_skips_bad_rows(dlc, tmp_path):
    root, expected = dlc
    report = build("horse10", root, tmp_path, progress=False)
    assert sum(report["examples"].values()) == expected["good"]
    assert skipped_reasons(report) == sorted(expected["skipped"])
    mapping = load_keypoint_map("horse10")
    seen = 0
    for split in report["examples"]:
        for example in read_all("horse10", tmp_path, split):
            points = expected["points"][example["image_id"].decode()]
            labelled = np.isfinite(points).all(-1)
            smal = mapping.smal_index(HORSE10_PARTS)
            want = np.zeros((26, 3), np.float32)
            want[smal[smal >= 0]] = np.concatenate(
                [np.nan_to_num(points), labelled[:, None]], -1)[smal >= 0]
            np.testing.assert_allclose(example["keypoints_2d"], want, atol=1e-4)
            visible = want[want[:, 2] > 0, :2]
            x1, y1, x2, y2 = example["bbox"]
            assert (x1 < visible[:, 0]).all() and (visible[:, 0] < x2).all()
            assert (y1 < visible[:, 1]).all() and (visible[:, 1] < y2).all()
            assert example["family"] == features.FAMILY_NAMES.index("equidae")
            assert not example["has_betas"] and not example["has_pose"] and not example["has_mask"]
            seen += 1
    assert seen == expected["good"]


def test_horse10_protocol_splits_by_horse(dlc, tmp_path):
    root, _ = dlc
    report = build("horse10", root, tmp_path, progress=False, split_seed=3)
    videos = {split: {e["image_id"].decode().split("/")[1] for e in read_all("horse10", tmp_path, split)}
              for split in report["examples"]}
    train_horses = videos.get("train", set()) | videos.get("test_within", set())
    assert train_horses and videos["test"] and not train_horses & videos["test"]
    # One identity per horse (video), the videos numbered in name order across all splits.
    identity = {(e["image_id"].decode().split("/")[1], int(e["identity"]))
                for split in report["examples"] for e in read_all("horse10", tmp_path, split)}
    horses = sorted({video for video, _ in identity})
    assert sorted(identity) == [(video, i) for i, video in enumerate(horses)]


def test_horse10_keeps_all_22_parts_with_their_mirror_partners(dlc, tmp_path):
    root, expected = dlc
    report = build("horse10", root, tmp_path, progress=False)
    mapping = load_keypoint_map("horse10")
    assert mapping.keypoints == HORSE10_PARTS
    for split in report["examples"]:
        for example in read_all("horse10", tmp_path, split):
            points = expected["points"][example["image_id"].decode()]
            labelled = np.isfinite(points).all(-1)
            np.testing.assert_allclose(example["source_keypoints"][:, :2], np.nan_to_num(points), atol=1e-4)
            np.testing.assert_array_equal(example["source_keypoints"][:, 2], labelled)
            partner = [HORSE10_PARTS[i] for i in example["source_mirror"]]
            assert partner[HORSE10_PARTS.index("Nearknee")] == "Offknee"
            assert partner[HORSE10_PARTS.index("Offhindfetlock")] == "Nearhindfetlock"
            assert partner[HORSE10_PARTS.index("Nose")] == "Nose"
            assert sorted(example["source_mirror"]) == list(range(22))


def test_horse10_pck_scale_is_the_horses_median_nose_eye_distance(dlc, tmp_path):
    root, expected = dlc
    report = build("horse10", root, tmp_path, progress=False)
    nose, eye = HORSE10_PARTS.index("Nose"), HORSE10_PARTS.index("Eye")
    for split in report["examples"]:
        for example in read_all("horse10", tmp_path, split):
            video = example["image_id"].decode().split("/")[1]
            # Every labelled frame of the horse counts, also those whose image is unusable.
            lengths = [np.linalg.norm(p[nose] - p[eye]) for path, p in expected["points"].items()
                       if path.split("/")[1] == video and np.isfinite(p[[nose, eye]]).all()]
            np.testing.assert_allclose(example["pck_scale"], np.median(lengths) if lengths else 0.0, rtol=1e-6)


def test_horse10_split_file(dlc, tmp_path):
    root, _ = dlc
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": ["horseA", "horseB"],
                                      "val": ["labeled-data/horseC/img001.png"]}))
    report = build("horse10", root, tmp_path / "out", progress=False, split_file=str(split_file))
    assert report["examples"] == {"train": 4, "val": 1}


def test_dlc_h5_labels_match_the_csv(dlc, tmp_path):
    import pandas  # the dev extra installs pandas and PyTables (pandas' HDF5 backend)
    root, _ = dlc
    csv_frames = read_labels(root / "labeled-data/horseC/CollectedData_Byron.csv")
    columns = pandas.MultiIndex.from_tuples(
        [("Byron", part, c) for part in HORSE10_PARTS for c in ("x", "y")],
        names=["scorer", "bodyparts", "coords"])
    index = pandas.MultiIndex.from_tuples([tuple(f.image.split("/")) for f in csv_frames])
    table = pandas.DataFrame(np.stack([f.xy.ravel() for f in csv_frames]), index=index, columns=columns)
    table.to_hdf(tmp_path / "CollectedData_Byron.h5", key="df_with_missing")
    for a, b in zip(read_labels(tmp_path / "CollectedData_Byron.h5"), csv_frames):
        assert a.image == b.image
        np.testing.assert_allclose(a.xy, b.xy, equal_nan=True)


def test_animal3d_stores_every_annotation(tmp_path):
    expected = write_animal3d(tmp_path / "src")
    report = build("animal3d", tmp_path / "src", tmp_path / "out", progress=False)
    assert report["examples"] == expected["good"]
    assert skipped_reasons(report) == sorted(["box outside the image", "missing file",
                                              "NaN or infinite value", "no visible keypoint",
                                              "unreadable image"])
    records = {f"train.json:{i} {r['img_path']}": r
               for i, r in enumerate(json.loads((tmp_path / "src/train.json").read_text())["data"])}
    for example in read_all("animal3d", tmp_path / "out", "train"):
        record = records[example["image_id"].decode()]
        np.testing.assert_allclose(example["pose"].ravel(), record["pose"], rtol=1e-6)
        np.testing.assert_allclose(example["betas"], record["shape"] + record["shape_extra"], rtol=1e-6)
        np.testing.assert_allclose(example["keypoints_3d"][:, :3], record["keypoint_3d"], rtol=1e-6)
        np.testing.assert_array_equal(example["keypoints_3d"][:, 3], 1.0)
        labelled = np.asarray(record["keypoint_2d"])
        labelled[labelled[:, 2] == 0] = 0.0                  # unlabelled keypoints are stored as 0
        np.testing.assert_allclose(example["keypoints_2d"], labelled, rtol=1e-6)
        x, y, w, h = record["bbox"]
        np.testing.assert_allclose(example["bbox"], [x, y, x + w, y + h])
        assert example["family"] == record["supercategory"]
        assert example["has_pose"] and example["has_betas"] and example["has_keypoints_3d"]
        mask = np.asarray(Image.open(io.BytesIO(example["mask"])))
        assert example["has_mask"] and mask.shape == (120, 160) and mask.max() == 255


def test_coco_keypoints_ap10k(tmp_path):
    expected = write_coco(tmp_path / "src")
    report = build("coco_keypoints", tmp_path / "src", tmp_path / "out", progress=False)
    assert report["examples"] == expected["good"]       # split2's file was left out
    assert skipped_reasons(report) == sorted(expected["skipped"])
    coco = json.loads((tmp_path / "src/annotations/ap10k-train-split1.json").read_text())
    by_id = {f"ap10k-train-split1.json:{a['id']}": a for a in coco["annotations"]}
    for example in read_all("coco_keypoints", tmp_path / "out", "train"):
        annotation = by_id[example["image_id"].decode().split(" ")[0]]
        source = np.asarray(annotation["keypoints"]).reshape(17, 3)
        tail = example["keypoints_2d"][KEYPOINT_NAMES.index("tail_base")]
        root_of_tail = source[AP10K_KEYPOINTS.index("root_of_tail")]
        np.testing.assert_allclose(tail, [*root_of_tail[:2], 1.0] if root_of_tail[2] > 0 else 0.0)
        assert (example["keypoints_2d"][:, 2] > 0).sum() == (source[:, 2] > 0).sum()
        family = "equidae" if annotation["category_id"] == 1 else "canidae"
        assert example["family"] == features.FAMILY_NAMES.index(family)


def _synthetic(tmp_path, name, **options):
    build("synthetic_quadruped", None, tmp_path / name, progress=False, num_train=2, num_test=1, **options)
    return read_all("synthetic_quadruped", tmp_path / name, "train")


def test_synthetic_quadruped_is_deterministic_with_exact_labels(tmp_path):
    first = _synthetic(tmp_path, "a", seed=5, image_size=(160, 128))
    again = _synthetic(tmp_path, "b", seed=5, image_size=(160, 128))
    for a, b in zip(first, again):
        assert a["image"] == b["image"] and a["mask"] == b["mask"]
        np.testing.assert_array_equal(a["keypoints_2d"], b["keypoints_2d"])
    for example in first:
        assert example["has_pose"] and example["has_betas"] and example["has_keypoints_3d"]
        focal = 1000.0 / 256.0 * 160
        camera = example["keypoints_3d"][:, :3] + example["trans"]
        projected = focal * camera[:, :2] / camera[:, 2:] + np.array([80.0, 64.0])
        visible = example["keypoints_2d"][:, 2] > 0
        assert visible.sum() > 20
        # Projections of the float32-stored 3D keypoints and translation: a few roundings of ~100 px.
        np.testing.assert_allclose(example["keypoints_2d"][visible, :2], projected[visible],
                                   atol=32 * U * np.abs(projected[visible]).max())
        mask = np.asarray(Image.open(io.BytesIO(example["mask"]))) > 0
        inside = [mask[int(round(y)), int(round(x))] for x, y in projected[visible]]
        assert np.mean(inside) > 0.8                     # keypoints lie on the rendered body
        # The stored box is the scene's detector box: it holds most of the animal (scenes.py cuts
        # at most 35% of one side).
        x1, y1, x2, y2 = example["bbox"]
        rows, cols = np.nonzero(mask)
        assert np.mean((cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)) > 0.6


def test_synthetic_quadruped_poses_near_the_prior(tmp_path):
    from animax.smal.io import load_pickle
    prior_file = shared_file("smal_priors", "walking_toy_symmetric_pose_prior_with_cov_35parts.pkl")
    examples = _synthetic(tmp_path, "prior", pose_prior=str(prior_file), image_size=(128, 128))
    prior = load_pickle(prior_file)
    sigma = np.sqrt(np.diag(prior["cov"])).reshape(35, 3)
    for example in examples:
        distance = np.abs(example["pose"] - np.asarray(prior["mean_pose"]).reshape(35, 3))
        assert (distance[1:] <= 4.0 * sigma[1:]).all()          # body joints near the mean
