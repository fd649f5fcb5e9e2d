"""Tracks: top-down boxes, ids kept by optimal IoU assignment, rotation-safe smoothing."""

import numpy as np
from scipy.spatial.transform import Rotation

from animax.geometry import FOCAL_LENGTH
from animax.track.smoothing import smooth_parameters
from animax.track.tracker import Tracker, box_from_mesh, iou, visible_fraction


def test_top_down_box_and_iou_by_hand():
    """Vertices at depth f (the crop focal length) project to crop pixels xy + 128; a box of size
    512 centred at (300, 200) maps crop pixel c to (c - 128) * 2 + (300, 200)."""
    vertices = np.array([[-10.0, -20.0, 0.0], [10.0, 20.0, 0.0], [0.0, 5.0, 0.0]])
    cam_t = np.array([0.0, 0.0, FOCAL_LENGTH])
    assert box_from_mesh(vertices, cam_t, (128, 128), 256, margin=0.5) == (108.0, 88.0, 148.0, 168.0)
    assert box_from_mesh(vertices, cam_t, (300, 200), 512, margin=0.0) == (280.0, 160.0, 320.0, 240.0)
    assert visible_fraction((-10, 0, 10, 10), 100, 100) == 0.5
    overlap = iou([(0, 0, 10, 10), (0, 0, 2, 2)], [(5, 0, 15, 10), (20, 20, 30, 30)])
    np.testing.assert_allclose(overlap, [[50 / 150, 0.0], [0.0, 0.0]])


def test_two_animals_crossing_keep_their_ids():
    """A walks right, B walks left, one row lower, overlapping mid-way; B leaves at frame 7 and a
    third animal C enters at frame 8. Boxes are given in a shuffled order each frame."""
    tracker, rng, seen = Tracker(), np.random.default_rng(0), {}
    for frame in range(12):
        boxes = {"A": (10 + 10 * frame, 0, 60 + 10 * frame, 40)}
        if frame < 7:
            boxes["B"] = (130 - 10 * frame, 15, 180 - 10 * frame, 55)
        if frame >= 8:
            boxes["C"] = (300, 100, 340, 140)
        names = list(boxes)
        rng.shuffle(names)
        for name, track_id in zip(names, tracker.update(frame, [boxes[n] for n in names])):
            seen.setdefault(name, set()).add(track_id)
    assert {name: len(ids) for name, ids in seen.items()} == {"A": 1, "B": 1, "C": 1}
    assert len({next(iter(ids)) for ids in seen.values()}) == 3
    tracks = {t.id: t for t in tracker.tracks}
    assert tracks[next(iter(seen["B"]))].frames == list(range(7))
    assert not tracks[next(iter(seen["B"]))].alive and tracks[next(iter(seen["A"]))].alive


def _angles(rotations):
    return Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_rotvec().reshape(*rotations.shape[:-2], 3)


def test_smoothing_lowers_jitter_and_keeps_the_motion():
    frames, rng = 60, np.random.default_rng(1)
    truth = Rotation.from_rotvec(np.outer(np.linspace(0, 2.5, frames), [0.0, 0.0, 1.0]))   # turning 2.5 rad
    noise = Rotation.from_rotvec(rng.normal(0.0, 0.05, (frames, 3)))
    rotations = (noise * truth).as_matrix()[:, None].repeat(2, axis=1)            # two joints, same track
    cam = np.stack([np.full(frames, 0.9), np.linspace(-0.2, 0.2, frames), np.zeros(frames)], -1)
    cam_noisy = cam + rng.normal(0.0, 0.01, cam.shape)
    betas = rng.normal(0.0, 0.1, (frames, 5)) + np.arange(5)
    smooth_rotations, smooth_cam, smooth_betas = smooth_parameters(rotations, cam_noisy, betas, sigma_frames=2.0)

    def jitter(r):      # mean angular acceleration: |log(R[t+1] R[t]^T) - log(R[t] R[t-1]^T)|
        steps = Rotation.from_matrix(r[1:]) * Rotation.from_matrix(r[:-1]).inv()
        return np.mean(np.linalg.norm(np.diff(steps.as_rotvec(), axis=0), axis=-1))

    assert jitter(smooth_rotations[:, 0]) < 0.3 * jitter(rotations[:, 0])
    error = (Rotation.from_matrix(smooth_rotations[5:-5, 0]) * truth[5:-5].inv()).magnitude()
    assert error.max() < 0.05                        # the turn survives (noise 0.05 rad per axis)
    assert np.abs(smooth_cam - cam).mean() < 0.5 * np.abs(cam_noisy - cam).mean()
    np.testing.assert_allclose(smooth_betas, np.broadcast_to(np.median(betas, 0), betas.shape), rtol=1e-6)
    unsmoothed, _, _ = smooth_parameters(rotations, cam_noisy, betas, sigma_frames=0)
    np.testing.assert_allclose(unsmoothed, rotations, atol=1e-5)   # float32 round trip through quaternions
    # A rotation through 180 degrees (where quaternion signs flip) is averaged, not torn apart.
    flip = Rotation.from_rotvec(np.outer(np.linspace(2.8, 3.5, 20), [1.0, 0, 0])).as_matrix()[:, None]
    smoothed_flip = smooth_parameters(flip, np.zeros((20, 3)), np.zeros((20, 1)))[0]
    assert (Rotation.from_matrix(smoothed_flip[2:-2, 0]) * Rotation.from_matrix(flip[2:-2, 0]).inv()
            ).magnitude().max() < 0.02
