"""Frame sequences in and out: a video file (PyAV, which bundles FFmpeg) or an ordered folder of
images, streamed one frame at a time; and an H.264 writer for overlay videos.

Nothing here holds more than one decoded frame: a two-hour clip costs what one frame costs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from animax.files import AtomicFile
from animax.image.io import MAX_IMAGE_PIXELS, load_image
from animax.predict.inputs import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm"})
FOLDER_FPS = 30.0          # an image folder's frame rate unless told
# Videos are users' files. FFmpeg may only use the demuxers of VIDEO_SUFFIXES' containers (no
# playlists or concat scripts that pull in other files or URLs) and only read the file itself.
_OPEN_OPTIONS = {"format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi", "protocol_whitelist": "file"}
# A frame's size as its header declares it and as decoded: at most an image's (8K video is 33
# megapixels). The frame count a header gives only sizes the progress bar; nothing is allocated by it.
MAX_FRAME_PIXELS = MAX_IMAGE_PIXELS
_MAX_FRAME_COUNT_HINT = 10**9


class SequenceError(ValueError):
    """A sequence that cannot be read; the message names the file and the problem."""


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def natural_key(path: Path):
    """frame2.png before frame10.png: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class Sequence:
    """Frames of one video or image folder: `fps`, `num_frames` (None when the container does
    not say), and `frames()`, a fresh iterator of uint8 RGB [H, W, 3] arrays."""
    path: Path
    fps: float
    num_frames: int | None
    files: tuple[Path, ...] = ()        # an image folder's frames, in order

    def frames(self) -> Iterator[np.ndarray]:
        if self.files:
            for file in self.files:
                yield load_image(file)
            return
        import av

        try:
            with av.open(str(self.path), options=_OPEN_OPTIONS) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"          # FFmpeg's frame threads
                for index, frame in enumerate(container.decode(stream)):
                    _check_frame_size(self.path, frame.width, frame.height, f"frame {index}")
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise SequenceError(f"{self.path}: cannot decode video ({e})") from None


def open_sequence(path, fps: float | None = None) -> Sequence:
    """A video file, or a folder whose images are the frames in natural name order.

    fps: an image folder's frame rate (default FOLDER_FPS); a video's own rate otherwise.
    Raises SequenceError naming the path when it is no readable sequence.
    """
    path = Path(path)
    if path.is_dir():
        files = tuple(sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                             key=natural_key))
        if not files:
            raise SequenceError(f"{path}: folder contains no images")
        return Sequence(path, float(fps or FOLDER_FPS), len(files), files)
    if not path.is_file():
        raise SequenceError(f"{path}: no such file or folder")
    import av

    try:
        with av.open(str(path), options=_OPEN_OPTIONS) as container:
            if not container.streams.video:
                raise SequenceError(f"{path}: no video stream")
            stream = container.streams.video[0]
            _check_frame_size(path, stream.codec_context.width, stream.codec_context.height, "the header")
            rate = float(fps or stream.average_rate or stream.guessed_rate or FOLDER_FPS)
            if not (math.isfinite(rate) and rate > 0):
                raise SequenceError(f"{path}: frame rate {rate} in the header")
            frames = int(stream.frames)
            return Sequence(path, rate, frames if 0 < frames <= _MAX_FRAME_COUNT_HINT else None)
    except av.FFmpegError as e:
        raise SequenceError(f"{path}: cannot open video ({e})") from None


def _check_frame_size(path, width, height, where) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise SequenceError(f"{path}: {where} declares {width}x{height} pixels, more than the limit of "
                            f"{MAX_FRAME_PIXELS} per frame")


class VideoWriter:
    """H.264 (yuv420p) video of RGB frames, written to a hidden file renamed into place on
    `close()` (`animax.files.AtomicFile`): an interrupted run leaves no half-written video. Frames
    of odd width or height are padded by one black pixel (4:2:0 needs even sizes)."""

    def __init__(self, path, fps: float, crf: int = 20):
        import av

        self.file = AtomicFile(path)
        self.container = av.open(str(self.file.tmp), mode="w")
        self.stream = self.container.add_stream("libx264", rate=_rational(fps), options={"crf": str(crf)})
        self.stream.pix_fmt = "yuv420p"
        self.size = None

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.ascontiguousarray(frame, np.uint8)
        height, width = frame.shape[:2]
        if self.size is None:
            self.size = (width + width % 2, height + height % 2)
            self.stream.width, self.stream.height = self.size
        if (width, height) != self.size:
            frame = np.pad(frame, ((0, self.size[1] - height), (0, self.size[0] - width), (0, 0)))
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.file.commit()

    def abort(self) -> None:
        self.container.close()
        self.file.discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close() if kind is None else self.abort()


def _rational(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
