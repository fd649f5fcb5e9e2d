"""Frame sequences: a clip written with the H.264 writer reads back frame by frame; image folders
play in natural order; broken files name themselves."""

import numpy as np
import pytest
from PIL import Image

from animax.track.frames import SequenceError, VideoWriter, natural_key, open_sequence

FRAMES, WIDTH, HEIGHT = 9, 161, 120          # an odd width: padded by one pixel for 4:2:0


def moving_square(t):
    """A bright square sliding right over a smooth gradient: frame t is known exactly."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frame = np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, np.full_like(x, 90)], -1).astype(np.uint8)
    frame[40:80, 10 + 12 * t:50 + 12 * t] = (250, 240, 30)
    return frame


def test_a_written_clip_reads_back_frame_by_frame(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=12.5) as writer:
        for t in range(FRAMES):
            writer.write(moving_square(t))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]       # the temporary file renamed
    sequence = open_sequence(path)
    assert sequence.fps == pytest.approx(12.5) and sequence.num_frames in (FRAMES, None)
    frames = list(sequence.frames())
    assert len(frames) == FRAMES
    for t, frame in enumerate(frames):
        assert frame.shape == (HEIGHT, WIDTH + 1, 3) and frame.dtype == np.uint8
        error = np.abs(frame[:, :WIDTH].astype(int) - moving_square(t))
        # H.264 at crf 20 with 4:2:0 chroma: small errors, larger along the square's edges.
        assert np.median(error) <= 3 and error.mean() < 6, (t, np.median(error), error.mean())
        assert frame[60, 30 + 12 * t].min() > 20 and frame[60, 30 + 12 * t, 0] > 200   # the square is where it was


def test_an_interrupted_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "clip.mp4", fps=30) as writer:
        writer.write(moving_square(0))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_image_folders_play_in_natural_order(tmp_path):
    for t in (10, 2, 1):
        Image.fromarray(moving_square(t % FRAMES)).save(tmp_path / f"frame{t}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    sequence = open_sequence(tmp_path, fps=5)
    assert [p.name for p in sequence.files] == ["frame1.png", "frame2.png", "frame10.png"]
    assert sequence.fps == 5 and sequence.num_frames == 3
    np.testing.assert_array_equal(next(iter(sequence.frames())), moving_square(1))
    assert sorted(["b10", "b9", "a"], key=lambda n: natural_key(tmp_path / n)) == ["a", "b9", "b10"]


def test_broken_sequences_name_the_path(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(SequenceError, match="broken.mp4: cannot open video"):
        open_sequence(tmp_path / "broken.mp4")
    with pytest.raises(SequenceError, match="missing.mp4: no such file"):
        open_sequence(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SequenceError, match="empty: folder contains no images"):
        open_sequence(tmp_path / "empty")
