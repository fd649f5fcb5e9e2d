"""What users bring to a fit: DeepLabCut and COCO files, masks, keypoint maps; each bad input is
one line naming the file and the rest goes on; and the animax-fit console script end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animax.data.keypoint_maps import load_keypoint_map
from animax.fit.inputs import InputError, keypoint_map, read_coco, read_deeplabcut, read_mask, read_masks
from animax.smal.constants import KEYPOINT_NAMES


def write_dlc(path, parts, values, individuals=None, h5=False):
    """A DeepLabCut analysis file: rows = frames, columns (scorer, [individuals,] bodyparts, coords)."""
    if individuals is None:
        columns = pd.MultiIndex.from_product([["me"], parts, ["x", "y", "likelihood"]],
                                             names=["scorer", "bodyparts", "coords"])
    else:
        columns = pd.MultiIndex.from_product([["me"], individuals, parts, ["x", "y", "likelihood"]],
                                             names=["scorer", "individuals", "bodyparts", "coords"])
    table = pd.DataFrame(values.reshape(len(values), -1), columns=columns)
    if h5:
        table.to_hdf(path, key="df_with_missing", mode="w", format="table")
    else:
        table.to_csv(path)
    return path


def test_superanimal_quadruped_map_has_the_published_39_parts():
    m = load_keypoint_map("superanimal_quadruped")
    assert len(m.keypoints) == 39 and m.keypoints[0] == "nose" and m.keypoints[23] == "tail_end"
    assert set(m.to_smal.values()) <= set(KEYPOINT_NAMES)


def test_deeplabcut_csv_and_h5_read_the_same_with_nan_as_missing(tmp_path):
    parts = ["nose", "tail_base", "left_front_paw"]
    values = np.arange(4 * 3 * 3, dtype=np.float64).reshape(4, 3, 3)
    values[1, 0, :2] = np.nan
    for h5 in (False, True):
        path = write_dlc(tmp_path / f"a.{'h5' if h5 else 'csv'}", parts, values, h5=h5)
        tracks, problems = read_deeplabcut(path)
        (track,) = tracks.values()
        assert track.shape == (4, 26, 3) and not problems
        nose = KEYPOINT_NAMES.index("nose")
        np.testing.assert_allclose(track[0, nose], [values[0, 0, 0], values[0, 0, 1], 1.0])
        assert track[1, nose, 2] == 0.0 and np.isfinite(track).all()


def test_multi_animal_unknown_parts_and_frames_out_of_range(tmp_path):
    parts = ["nose", "horn"]
    values = np.ones((5, 2, 2, 3)) * 10
    path = write_dlc(tmp_path / "multi.csv", parts, values, individuals=["a", "b"])
    tracks, problems = read_deeplabcut(path, num_frames=3)
    assert set(tracks) == {"a", "b"} and tracks["a"].shape == (3, 26, 3)
    assert any("horn" in p and str(path) in p for p in problems)
    assert any("out of range" in p and str(path) in p for p in problems)


def test_a_file_whose_parts_map_to_nothing_is_one_error_naming_it(tmp_path):
    path = write_dlc(tmp_path / "odd.csv", ["wingtip", "beak"], np.ones((2, 2, 3)))
    with pytest.raises(InputError, match="odd.csv"):
        read_deeplabcut(path)


def test_json_keypoint_map_and_coco(tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"name": "mine", "keypoints": ["snout", "rump"],
                                   "to_smal": {"snout": "nose", "rump": "tail_base"}}))
    m = keypoint_map(mapping)
    assert m.to_smal["snout"] == "nose"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keypoints": ["a"], "to_smal": {"a": "elbow"}}))
    with pytest.raises(InputError, match="bad.json"):
        keypoint_map(bad)
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                "categories": [{"id": 1, "keypoints": ["snout", "rump"]}],
                                "annotations": [{"id": 5, "image_id": 1, "category_id": 1,
                                                 "keypoints": [10, 20, 2, 0, 0, 0]},
                                                {"id": 6, "image_id": 9, "category_id": 1, "keypoints": [1, 2, 2]}]}))
    animals, problems = read_coco(coco, mapping)
    k = animals["a.png"][0]
    assert k[KEYPOINT_NAMES.index("nose")].tolist() == [10, 20, 1] and k[KEYPOINT_NAMES.index("tail_base"), 2] == 0
    assert len(problems) == 1 and "coco.json" in problems[0]


def test_masks_wrong_size_or_empty_are_dropped_with_a_line(tmp_path):
    good = np.zeros((24, 32), np.uint8)
    good[5:15, 5:20] = 255
    Image.fromarray(good).save(tmp_path / "frame0000.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tmp_path / "frame0001.png")
    Image.fromarray(good[:20]).save(tmp_path / "frame0002.png")
    assert read_mask(tmp_path / "frame0000.png", (32, 24)).sum() == 150
    masks, problems = read_masks(tmp_path, (32, 24), 3)
    assert masks[0] is not None and masks[1] is None and masks[2] is None
    assert any("empty" in p and "frame0001" in p for p in problems)
    assert any("32x20" in p or "mask is 32x20" in p for p in problems)


def test_animax_fit_lifts_a_deeplabcut_file_end_to_end(tmp_path):
    """A tiny clip: the stand-in walking's true keypoints in DeepLabCut's layout, with a NaN part and an
    unknown body part: the fit is written, the problem is named, the exit code says so."""
    from animax.fit.cli import main
    from animax.geometry import axis_angle_to_rotmat, full_image_focal_length
    from animax.smal import load_smal, smal_forward
    from animax.smal.standin import walking_pose

    body = load_smal()
    frames = 3
    pose = np.stack([walking_pose() * np.sin(t / 2) for t in range(frames)])
    pose[:, 0] = [np.pi / 2, 0, 0]      # side-on: the model's up (+z) to the camera's up (-y)
    out = smal_forward(body, np.zeros((frames, 41), np.float32), axis_angle_to_rotmat(pose, xp=np).astype(np.float32))
    points = np.asarray(out["keypoints_3d"], np.float64) + [0, 0, 8.0]
    focal = float(full_image_focal_length(np.array([320, 240])))
    xy = focal * points[..., :2] / points[..., 2:] + [160, 120]
    values = np.concatenate([xy, np.ones((frames, 26, 1))], -1)
    values = np.concatenate([values, np.ones((frames, 1, 3))], 1)         # an unknown part
    values[0, 2, :2] = np.nan
    path = write_dlc(tmp_path / "walk.csv", list(KEYPOINT_NAMES) + ["horn"], values)
    out_dir = tmp_path / "fit"
    rc = main([str(path), "--image-size", "320", "240", "--out", str(out_dir), "--iterations", "0.5",
               "--no-progress"])
    assert rc == 1                         # the unknown part is reported
    summary = json.loads((out_dir / "sequence.json").read_text())
    assert any("horn" in line for line in summary["failures"])
    assert [s["stage"] for s in summary["fit"]["stages"]] == ["camera_torso", "all"]
    assert "keypoints" in summary["fit"]["stages"][-1]["terms"]
    track = np.load(out_dir / "track_0.npz")
    error = np.linalg.norm(track["keypoints2d"][:3] - xy, axis=-1)
    assert np.median(error) < 3.0, np.median(error)
    assert (out_dir / "track_0.glb").is_file() and (out_dir / "track_0_DLC.h5").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # nothing half-written
