"""What the app accepts from a browser: photos, clips, zips of frames and boxes files, each
checked before any model work, each problem one `UploadError` line naming the file.

Uploads are untrusted (docs: DESIGN.md, "Contracts"): images decode through Pillow with a
pixel cap, videos through PyAV (the first frame is read at once, so a corrupt clip is caught on
upload), zips are read member by member with a count and size cap and never extracted by
their own paths (only image files, flattened to their names, into the app's folder).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animax.image.io import load_image
from animax.predict.detections import BoxesFileError
from animax.predict.inputs import IMAGE_SUFFIXES, BoxSource
from animax.track.frames import VIDEO_SUFFIXES, Sequence, SequenceError, natural_key, open_sequence

ZIP_SUFFIX = ".zip"
BOXES_SUFFIX = ".json"


class UploadError(ValueError):
    """An upload the app cannot use; the message names the file and says what is wrong."""


@dataclass(frozen=True)
class Limits:
    """Upload limits of one app process (the command line's --max-* flags)."""
    max_file_mb: int = 50            # any one upload (Gradio refuses larger ones before they land)
    max_photos: int = 16             # photos per run
    max_megapixels: float = 40.0     # one photo or frame
    max_frames: int = 900            # frames of one clip or zip
    max_zip_mb: int = 500            # a zip of frames, uncompressed

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20


def display_name(path) -> str:
    """The name a user knows an upload by: its file name (Gradio keeps it under a hashed folder)."""
    return Path(path).name


def _check_size(path, limits: Limits) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UploadError(f"{display_name(path)}: the upload is missing; upload it again")
    if path.stat().st_size > limits.max_file_bytes:
        raise UploadError(f"{display_name(path)}: larger than the {limits.max_file_mb} MB upload limit")
    return path


def _check_pixels(name, image: np.ndarray, limits: Limits) -> np.ndarray:
    height, width = image.shape[:2]
    if height * width > limits.max_megapixels * 1e6:
        raise UploadError(f"{name}: {width}x{height} is over the {limits.max_megapixels:g}-megapixel limit; "
                          "scale it down first")
    return image


def read_photo(path, limits: Limits) -> np.ndarray:
    """An uploaded photo as uint8 RGB [H, W, 3] (EXIF-rotated, as infer.py reads it)."""
    path = _check_size(path, limits)
    name = display_name(path)
    try:
        image = load_image(path)
    except ValueError as e:
        reason = str(e).replace(str(path), name).split("cannot read image", 1)[-1].strip(" ()")
        raise UploadError(f"{name}: not an image this app can read ({reason})") from None
    return _check_pixels(name, image, limits)


def read_photos(paths, limits: Limits) -> dict[str, tuple[Path, np.ndarray]]:
    """{name: (path, pixels)} of several uploaded photos; names must differ (they key the boxes)."""
    paths = list(paths or [])
    if not paths:
        raise UploadError("upload one or more photos first")
    if len(paths) > limits.max_photos:
        raise UploadError(f"{len(paths)} photos: at most {limits.max_photos} per run")
    photos = {}
    for path in paths:
        name = display_name(path)
        if name in photos:
            raise UploadError(f"{name}: two photos have this name; rename one")
        photos[name] = (Path(path), read_photo(path, limits))
    return photos


def read_boxes_file(path) -> BoxSource:
    """An uploaded boxes file: infer.py's --boxes layouts, MegaDetector's batch output or COCO
    results/dataset (`animax.predict.inputs`), with infer.py's default score threshold."""
    name = display_name(path)
    if Path(path).suffix.lower() != BOXES_SUFFIX:
        raise UploadError(f"{name}: a boxes file is JSON (.json): MegaDetector, COCO or {{name: [[x1, y1, x2, y2]]}}")
    try:
        return BoxSource.read(path)
    except BoxesFileError as e:
        raise UploadError(str(e).replace(str(path), name)) from None


def open_clip(path, work_dir, limits: Limits) -> tuple[Sequence, np.ndarray]:
    """An uploaded clip (a video, or a zip of frames in name order) as a Sequence and its first
    frame. A zip's images are written to `work_dir`/<zip stem>/ first."""
    path = _check_size(path, limits)
    name = display_name(path)
    suffix = path.suffix.lower()
    if suffix == ZIP_SUFFIX:
        path = extract_frames(path, Path(work_dir), limits)
    elif suffix not in VIDEO_SUFFIXES:
        kinds = ", ".join(sorted(VIDEO_SUFFIXES))
        raise UploadError(f"{name}: not a clip: upload a video ({kinds}) or a .zip of frames")
    try:
        sequence = open_sequence(path)
        first = next(iter(sequence.frames()), None)
    except (SequenceError, ValueError) as e:
        raise UploadError(str(e).replace(str(path), name)) from None
    if first is None:
        raise UploadError(f"{name}: the video has no frames")
    if sequence.num_frames is not None and sequence.num_frames > limits.max_frames:
        raise UploadError(f"{name}: {sequence.num_frames} frames, over the limit of {limits.max_frames}")
    return sequence, _check_pixels(name, first, limits)


def extract_frames(path, work_dir: Path, limits: Limits) -> Path:
    """The image files of a zip (at any depth, by file name, in natural order) written into
    work_dir/<zip stem>/; refuses archives with too many or too large members, or no image."""
    name = display_name(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist()
                       if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES
                       and not Path(m.filename).name.startswith(".")]
            if not members:
                raise UploadError(f"{name}: the zip holds no image files")
            if len(members) > limits.max_frames:
                raise UploadError(f"{name}: {len(members)} frames, over the limit of {limits.max_frames}")
            if sum(m.file_size for m in members) > limits.max_zip_mb * 2**20:
                raise UploadError(f"{name}: its images unpack to over {limits.max_zip_mb} MB")
            names = [Path(m.filename).name for m in members]
            if len(set(names)) != len(names):
                raise UploadError(f"{name}: two frames have the same file name in different folders")
            folder = work_dir / Path(name).stem
            folder.mkdir(parents=True)
            for member, frame_name in sorted(zip(members, names), key=lambda m: natural_key(Path(m[1]))):
                with archive.open(member) as source, open(folder / frame_name, "wb") as target:
                    _copy_bounded(source, target, member.file_size, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        raise UploadError(f"{name}: not a readable zip ({e})") from None
    return folder


def _copy_bounded(source, target, declared: int, name: str, chunk: int = 2**20) -> None:
    """Copies at most the member's declared size: a zip that lies about sizes stops here."""
    written = 0
    while block := source.read(chunk):
        written += len(block)
        if written > declared:
            raise UploadError(f"{name}: a member is larger than the zip says")
        target.write(block)
