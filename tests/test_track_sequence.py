"""Sequences end to end on clips rendered by examples/make_clip.py (animax's rasteriser, known
keypoints, boxes, poses and translations per frame): top-down tracking and detector boxes with the
shipped demo model, ids kept while two animals cross, smoothing, the export path on the true
parameters, and every file infer.py writes read back by its own reader (trimesh for the glb,
pandas for DeepLabCut's files, PyAV for the overlay video)."""

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import trimesh

import infer
from animax.geometry import axis_angle_to_rotmat, full_image_focal_length
from animax.loading import load_model_or_random
from animax.predict.predictor import Predictor
from animax.smal import load_smal
from animax.smal.constants import KEYPOINT_NAMES
from animax.track.frames import VideoWriter, open_sequence
from animax.track.sequence import TrackResult, track_sequence
from animax.track.smoothing import jitter, smooth_track
from examples.make_clip import FPS, TWO_WALKERS, render_clip

# PCK@0.1 (a tenth of sqrt(the walker's mask area)) over the clip's visible keypoints that the
# shipped model must reach; measured values in the comments (docs/inference.md), bounds a few
# keypoints' worth lower for another CPU's float32 rounding and the codec.
MIN_PCK_DETECTOR_BOXES = 0.75      # measured 0.90 on the rendered frames with the true boxes grown 10%
MIN_PCK_TOP_DOWN = 0.40            # measured 0.50 from the whole first frame, top-down after


@pytest.fixture(scope="module")
def walk():
    return render_clip()


@pytest.fixture(scope="module")
def crossing():
    return render_clip(TWO_WALKERS)


@pytest.fixture(scope="module")
def shipped():
    loaded = load_model_or_random()
    model, variables, info = loaded.model, loaded.variables, loaded.info
    return model, variables, info


def write_video(path, frames):
    with VideoWriter(path, FPS) as video:
        for frame in frames:
            video.write(frame)
    return path


def pck(track, truth):
    keypoints = truth["keypoints_2d"][track.frames]
    errors = np.linalg.norm(track.arrays["keypoints2d"] - keypoints[..., :2], axis=-1)
    errors /= np.sqrt(truth["mask_area"][track.frames])[:, None]
    return float((errors < 0.1)[keypoints[..., 2] > 0].mean())


def grown(box, margin=0.1):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (x1 - margin * w, y1 - margin * h, x2 + margin * w, y2 + margin * h)


def test_top_down_tracking_follows_the_walker_and_smoothing_lowers_jitter(walk, shipped):
    frames, truth = walk
    model, variables, _ = shipped
    tracks, read = track_sequence(Predictor(model, variables, 1), iter(frames), progress=False)
    assert read == len(frames) and len(tracks) == 1
    raw = tracks[0]
    assert raw.frames.tolist() == list(range(len(frames)))
    assert pck(raw, truth[0]) >= MIN_PCK_TOP_DOWN
    smoothed = smooth_track(raw, variables["smal"]["model"])
    truth_jitter = jitter(truth[0]["keypoints_2d"][..., :2])
    # measured: raw 10.1, smoothed 1.17, the true motion 1.15 pixels per frame squared
    assert jitter(smoothed.arrays["keypoints2d"]) < 0.5 * jitter(raw.arrays["keypoints2d"])
    assert jitter(smoothed.arrays["keypoints2d"]) < 2 * truth_jitter + 0.5
    assert np.allclose(smoothed.arrays["keypoints2d_raw"], raw.arrays["keypoints2d"])
    assert np.ptp(smoothed.arrays["betas"], axis=0).max() == 0          # one shape per track


def test_detector_boxes_keep_the_ids_of_crossing_animals(crossing, shipped):
    frames, truth = crossing
    model, variables, _ = shipped
    order = np.random.default_rng(0).permuted(np.tile([0, 1], (len(frames), 1)), axis=1)
    frame_boxes = {t: [grown(truth[w]["box"][t]) for w in order[t]] for t in range(len(frames))}
    boxes_a, boxes_b = truth[0]["box"], truth[1]["box"]
    assert any(b[0] < a[2] and a[0] < b[2] for a, b in zip(boxes_a, boxes_b))      # they do cross
    tracks, _ = track_sequence(Predictor(model, variables, 2), iter(frames), frame_boxes=frame_boxes,
                               progress=False)
    assert len(tracks) == 2
    for track in tracks:
        assert len(track.frames) == len(frames)
        walker = [int(np.argmin([np.abs(np.subtract(grown(truth[w]["box"][t]), box)).sum() for w in (0, 1)]))
                  for t, box in zip(track.frames, track.arrays["box"])]
        assert len(set(walker)) == 1, walker                  # one animal from start to end


def test_detector_boxes_on_the_walk(walk, shipped):
    """Keypoints within PCK@0.1 with a box per frame. (Not on the crossing clip: the demo model
    has only seen one animal per crop, and there the two overlap in every frame.)"""
    frames, truth = walk
    model, variables, _ = shipped
    frame_boxes = {t: [grown(box)] for t, box in enumerate(truth[0]["box"])}
    tracks, _ = track_sequence(Predictor(model, variables, 1), iter(frames), frame_boxes=frame_boxes,
                               progress=False)
    assert len(tracks) == 1 and pck(tracks[0], truth[0]) >= MIN_PCK_DETECTOR_BOXES


def test_the_true_parameters_through_the_export_path_give_the_true_keypoints(walk):
    """`smooth` (sigma 0) rebuilds keypoints from pose, betas and cam_t_full through the body model
    and the full frame's camera: on the renderer's true values they must be the true keypoints.
    Float32 body model: ~1e-6 m at ~13 m depth and f = 1250 px is ~1e-4 px; bound 0.01 px."""
    frames, truth = walk
    body = load_smal()
    t = len(frames)
    height, width = frames.shape[1:3]
    arrays = {"pose": axis_angle_to_rotmat(truth[0]["pose"], xp=np).astype(np.float32),
              "betas": np.zeros((t, body.num_betas), np.float32),
              "cam_t_full": truth[0]["trans"].astype(np.float32),
              "focal_length": np.full(t, full_image_focal_length(np.array([width, height])), np.float32),
              "keypoints2d": np.zeros((t, 26, 2), np.float32), "keypoints3d": np.zeros((t, 26, 3), np.float32),
              "joints": np.zeros((t, body.num_joints, 3), np.float32)}
    track = smooth_track(TrackResult(0, np.arange(t), arrays, (width, height)), body, sigma_frames=0.0)
    error = np.abs(track.arrays["keypoints2d"] - truth[0]["keypoints_2d"][..., :2]).max()
    assert error < 0.01, error


def run_infer(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = infer.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_infer_on_a_video_writes_every_output_and_each_reads_back(tmp_path, walk):
    frames, _ = walk
    clip = write_video(tmp_path / "walk.mp4", frames)
    code, out, err = run_infer("--input", clip, "--out_dir", tmp_path / "out", "--smooth")
    assert code == 0, err
    folder = tmp_path / "out" / "walk"
    summary = json.loads((folder / "sequence.json").read_text())
    assert summary["num_frames"] == len(frames) and summary["fps"] == FPS
    assert [t["num_frames"] for t in summary["tracks"]] == [len(frames)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(summary["files"])

    arrays = np.load(folder / "track_0.npz")
    assert arrays["frames"].tolist() == list(range(len(frames)))
    assert arrays["keypoints2d"].shape == (len(frames), 26, 2) and arrays["pose"].shape == (len(frames), 35, 3, 3)
    assert "keypoints2d_raw" in arrays

    body = load_smal()
    scene = trimesh.load(folder / "track_0.glb")
    assert sum(len(g.vertices) for g in scene.geometry.values()) == len(body.v_template)
    document = gltf_json(folder / "track_0.glb")
    joints = document["skins"][0]["joints"]
    assert len(joints) == body.num_joints
    parent = {c: i for i, n in enumerate(document["nodes"]) for c in n.get("children", [])}
    assert [joints.index(parent[n]) if n in parent else -1 for n in joints] == list(body.parents)
    times = document["accessors"][document["animations"][0]["samplers"][0]["input"]]
    assert times["count"] == len(frames) and times["max"][0] == pytest.approx((len(frames) - 1) / FPS)

    table = pd.read_hdf(folder / "track_0_DLC.h5", "df_with_missing")
    assert table.columns.names == ["scorer", "bodyparts", "coords"]
    assert set(table.columns.get_level_values("scorer")) == {"animax"}
    assert list(dict.fromkeys(table.columns.get_level_values("bodyparts"))) == list(KEYPOINT_NAMES)
    assert len(table) == len(frames)
    np.testing.assert_allclose(table.xs("x", axis=1, level="coords").to_numpy(), arrays["keypoints2d"][..., 0])
    from_csv = pd.read_csv(folder / "track_0_DLC.csv", header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(from_csv.to_numpy(), table.to_numpy(), rtol=1e-6)

    overlay = open_sequence(folder / "overlay.mp4")
    decoded = list(overlay.frames())
    assert len(decoded) == len(frames) and decoded[0].shape == frames[0].shape


def gltf_json(path):
    import struct

    data = path.read_bytes()
    length, _ = struct.unpack_from("<II", data, 12)
    return json.loads(data[20:20 + length])


def megadetector_video_json(path, name, truth, frames_listed, width, height):
    """MegaDetector's output for a video's frames: `<video>/frame<index>.jpg`, fractional boxes."""
    images = [{"file": f"{name}/frame{t:06d}.jpg",
               "detections": [{"category": "1", "conf": 0.9,
                               "bbox": [b[0] / width, b[1] / height, (b[2] - b[0]) / width, (b[3] - b[1]) / height]}
                              for b in (grown(walker["box"][t]) for walker in truth[::-1])]}
              for t in frames_listed]
    path.write_text(json.dumps({"images": images, "detection_categories": {"1": "animal", "2": "person"}}))
    return path


def walker_of(arrays, truth, frames):
    """Which walker each given frame's box of a track is (by distance to the true boxes)."""
    return [int(np.argmin([np.abs(np.subtract(grown(w["box"][t]), arrays["box"][list(arrays["frames"]).index(t)])).sum()
                           for w in truth])) for t in frames]


def test_megadetector_video_boxes(tmp_path, crossing, walk):
    """Every frame of the crossing clip listed: two tracks, each one animal throughout. Every
    fourth frame of the walk listed: one track, top-down between the detections."""
    frames, truth = crossing
    height, width = frames.shape[1:3]
    clip = write_video(tmp_path / "cross.mp4", frames)
    boxes = megadetector_video_json(tmp_path / "md.json", "cross.mp4", truth, range(len(frames)), width, height)
    code, out, err = run_infer("--input", clip, "--boxes", boxes, "--out_dir", tmp_path / "out",
                               "--outputs", "arrays,json")
    assert code == 0, err
    folder = tmp_path / "out" / "cross"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["sequence.json"] + [f"track_{i}{s}" for i in (0, 1) for s in (".npz", "_DLC.h5", "_DLC.csv")])
    for i in (0, 1):
        arrays = np.load(folder / f"track_{i}.npz")
        assert len(arrays["frames"]) == len(frames)
        assert len(set(walker_of(arrays, truth, range(len(frames))))) == 1

    frames, truth = walk
    clip = write_video(tmp_path / "walk.mp4", frames)
    boxes = megadetector_video_json(tmp_path / "md_walk.json", "walk.mp4", truth, range(0, len(frames), 4),
                                    width, height)
    code, out, err = run_infer("--input", clip, "--boxes", boxes, "--out_dir", tmp_path / "out", "--outputs", "arrays")
    assert code == 0, err
    arrays = np.load(tmp_path / "out" / "walk" / "track_0.npz")
    assert arrays["frames"].tolist() == list(range(len(frames)))
    detected = arrays["box"][::4]
    np.testing.assert_allclose(detected, [grown(b) for b in truth[0]["box"][::4]], atol=1e-3)


def test_image_folder_sequence_in_natural_order_and_failures(tmp_path, walk):
    from PIL import Image

    frames, _ = walk
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(10):
        Image.fromarray(frames[t]).save(folder / f"f{t + 1}.png")     # f10 after f9, not after f1
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    code, out, err = run_infer("--input", folder, broken, "--sequence", "--out_dir", tmp_path / "out",
                               "--outputs", "arrays")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(broken) in lines[0]
    assert not (tmp_path / "out" / "broken").exists()
    arrays = np.load(tmp_path / "out" / "frames" / "track_0.npz")
    assert arrays["frames"].tolist() == list(range(10))
    assert [p.name for p in open_sequence(folder).files] == [f"f{t + 1}.png" for t in range(10)]


def test_a_video_the_boxes_file_does_not_list_fails_alone(tmp_path, walk):
    frames, _ = walk
    clip = write_video(tmp_path / "walk.mp4", frames[:3])
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"other.mp4/frame000000.jpg": [[0, 0, 10, 10]]}))
    code, out, err = run_infer("--input", clip, "--boxes", boxes, "--out_dir", tmp_path / "out")
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {clip}: not listed in {boxes}"]
    assert not (tmp_path / "out" / "walk").exists()
