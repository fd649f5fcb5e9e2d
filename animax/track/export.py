"""A sequence's tracks on disk, in one folder written atomically (`animax.files.AtomicFolder`):

    OUT/<clip>/  track_<id>.npz          per-frame arrays ("arrays"): frames, keypoints2d (pixels),
                                         keypoints3d, joints, betas, pose, cam, cam_t_full,
                                         focal_length, box, features (+ <name>_raw when smoothed)
                 track_<id>_DLC.h5/.csv  2D keypoints in DeepLabCut's layout ("arrays")
                 track_<id>.glb          animated skinned glTF of the track ("mesh")
                 overlay.mp4             the frames with every track's mesh and keypoints ("overlay")
                 sequence.json           frame rate, size, tracks, files, model ("json")

The DeepLabCut files follow what its video analysis writes: rows are all frames of the sequence
(NaN where the track is absent), columns (scorer, bodyparts, coords) with scorer `animax`, the
26 keypoint names as body parts and coords x, y, likelihood; the HDF5 key is
`df_with_missing`. animax predicts no keypoint confidence: likelihood is 1 for a keypoint
inside the frame and 0 outside.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from PIL import Image, ImageDraw

from animax.files import AtomicFolder
from animax.smal.constants import KEYPOINT_NAMES
from animax.smal.model import smal_forward
from animax.track.frames import VideoWriter
from animax.track.gltf import CAMERA_TO_GLTF, write_glb
from animax.viz.overlay import blend_in_picture, draw_keypoints

SEQUENCE_OUTPUTS = ("arrays", "mesh", "overlay", "json")
SEQUENCE_FILE = "sequence.json"
DLC_SCORER = "animax"
DLC_KEY = "df_with_missing"
TRACK_COLORS = ((230, 80, 60), (60, 140, 230), (90, 190, 90), (230, 180, 40), (170, 90, 200), (60, 200, 200))


def track_files(track_id: int, outputs) -> list[str]:
    files = []
    if "arrays" in outputs:
        files += [f"track_{track_id}.npz", f"track_{track_id}_DLC.h5", f"track_{track_id}_DLC.csv"]
    if "mesh" in outputs:
        files.append(f"track_{track_id}.glb")
    return files


def write_sequence(folder, tracks, body, fps: float, num_frames: int, info: dict, outputs=SEQUENCE_OUTPUTS,
                   frames=None) -> None:
    """Writes `tracks` (TrackResults of `animax.track.sequence`) into `folder`, replacing an
    earlier one. body: the SMAL model the tracks were predicted with; fps and num_frames of the
    sequence; info: JSON-ready metadata for sequence.json; frames: a fresh iterator of the
    sequence's frames, needed for "overlay" (the video is read a second time)."""
    with AtomicFolder(folder) as tmp:
        for track in tracks:
            if "arrays" in outputs:
                np.savez(tmp / f"track_{track.id}.npz", frames=track.frames, **track.arrays)
                write_deeplabcut(tmp / f"track_{track.id}_DLC", track, num_frames)
            if "mesh" in outputs:
                a = track.arrays
                write_glb(tmp / f"track_{track.id}.glb", body, np.median(a["betas"], axis=0), a["pose"],
                          a["cam_t_full"], fps, name=f"track_{track.id}", world=CAMERA_TO_GLTF)
        if "overlay" in outputs:
            write_overlay_video(tmp / "overlay.mp4", frames, tracks, body, fps)
        if "json" in outputs:
            files = [f for t in tracks for f in track_files(t.id, outputs)]
            files += ["overlay.mp4"] * ("overlay" in outputs) + [SEQUENCE_FILE]
            summary = {**info, "fps": fps, "num_frames": num_frames,
                       "image_size": list(tracks[0].image_size) if tracks else None,
                       "tracks": [{"id": t.id, "first_frame": int(t.frames[0]), "last_frame": int(t.frames[-1]),
                                   "num_frames": len(t.frames), "smoothing_sigma_frames": t.smoothing}
                                  for t in tracks],
                       "files": files}
            (tmp / SEQUENCE_FILE).write_text(json.dumps(summary, indent=2))


def deeplabcut_table(track, num_frames: int):
    """The track's 2D keypoints as DeepLabCut's pandas DataFrame (module docstring)."""
    import pandas as pd

    width, height = track.image_size
    keypoints = np.asarray(track.arrays["keypoints2d"], np.float64)
    inside = ((keypoints >= 0) & (keypoints < [width, height])).all(-1)
    values = np.full((num_frames, len(KEYPOINT_NAMES), 3), np.nan)
    values[track.frames] = np.concatenate([keypoints, inside[..., None].astype(np.float64)], axis=-1)
    columns = pd.MultiIndex.from_product([[DLC_SCORER], list(KEYPOINT_NAMES), ["x", "y", "likelihood"]],
                                         names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(values.reshape(num_frames, -1), columns=columns)


def write_deeplabcut(stem, track, num_frames: int) -> None:
    """STEM.h5 and STEM.csv of `deeplabcut_table`."""
    table = deeplabcut_table(track, num_frames)
    table.to_hdf(f"{stem}.h5", key=DLC_KEY, mode="w", format="table")
    table.to_csv(f"{stem}.csv")


def write_overlay_video(path, frames, tracks, body, fps: float) -> None:
    """overlay.mp4: each frame with the mesh of every track present (through the full frame's
    camera: vertices + cam_t_full, the track's focal length, principal point at the centre), its
    keypoints and its id. Meshes come from pose and betas a frame at a time, padded to the number
    of tracks so the body model compiles once."""
    if frames is None:
        raise ValueError("the overlay video needs the sequence's frames")
    by_frame = {}
    for track in tracks:
        for i, t in enumerate(track.frames):
            by_frame.setdefault(int(t), []).append((track, i))
    slots = max((len(v) for v in by_frame.values()), default=1)
    num_betas = tracks[0].arrays["betas"].shape[-1] if tracks else body.num_betas
    with VideoWriter(path, fps) as video:
        for t, image in enumerate(frames):
            present = by_frame.get(t, [])
            picture = np.asarray(image, np.float64)
            if present:
                betas = np.zeros((slots, num_betas), np.float32)
                pose = np.tile(np.eye(3, dtype=np.float32), (slots, body.num_joints, 1, 1))
                for s, (track, i) in enumerate(present):
                    betas[s], pose[s] = track.arrays["betas"][i], track.arrays["pose"][i]
                vertices = np.asarray(jax.device_get(smal_forward(body, betas, pose)["vertices"]))
                for s, (track, i) in enumerate(present):
                    a = track.arrays
                    color = np.array(TRACK_COLORS[track.id % len(TRACK_COLORS)]) / 255
                    picture = blend_in_picture(picture, vertices[s], a["cam_t_full"][i], a["focal_length"][i],
                                               body.faces, color)
            out = Image.fromarray(np.round(picture).astype(np.uint8))
            draw = ImageDraw.Draw(out)
            for track, i in present:
                draw_keypoints(draw, track.arrays["keypoints2d"][i])
                x1, y1 = track.arrays["box"][i][:2]
                draw.text((float(x1) + 3, float(y1) + 3), f"#{track.id}",
                          fill=TRACK_COLORS[track.id % len(TRACK_COLORS)])
            video.write(np.asarray(out))
