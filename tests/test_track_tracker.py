"""Tracks: top-down boxes, ids kept by optimal IoU assignment."""

import numpy as np

from animax.geometry import FOCAL_LENGTH
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
