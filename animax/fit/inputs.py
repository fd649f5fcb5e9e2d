"""What users bring to a fit, read into SMAL keypoints [T, 26, 3] (pixels + confidence): DeepLabCut
files (.csv / .h5, single- and multi-animal, through animax.data.dlc.read_labels), COCO keypoint
JSON, binary masks (PNG as SAM writes them), and keypoint maps from their body parts to SMAL's.

Every problem is one line naming the file (`InputError` or a line in `problems`); what can go on
goes on: unknown body parts are left out, frames out of range are skipped, a bad mask is dropped.

Keypoint maps: a built-in name (animax.data.keypoint_maps: horse10, ap10k, animal_pose,
superanimal_quadruped), a JSON file {"name": ..., "keypoints": [...], "to_smal": {part: SMAL name}}
(data, not code: a fit reads untrusted files), or none when the file names SMAL keypoints itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from animax.data.dlc import read_labels
from animax.data.keypoint_maps import BUILT_IN, KeypointMap, load_keypoint_map
from animax.smal.constants import KEYPOINT_NAMES
from animax.untrusted import read_json

MASK_SUFFIXES = (".png",)


class InputError(ValueError):
    """A file that cannot be used at all; the message is one line naming it."""


def keypoint_map(spec, bodyparts=()) -> KeypointMap:
    """A keypoint map from `spec` (built-in name, JSON file, or None). With None: SMAL's own names
    when every body part is one (identity), else the built-in map listing the most of them."""
    if spec is None:
        lower = {p.lower() for p in bodyparts}
        if lower <= set(KEYPOINT_NAMES):
            return KeypointMap("smal", KEYPOINT_NAMES, {n: n for n in KEYPOINT_NAMES})
        maps = [load_keypoint_map(name) for name in BUILT_IN]
        best = max(maps, key=lambda m: len(lower & {k.lower() for k in m.keypoints}))
        if not lower & {k.lower() for k in best.keypoints}:
            raise InputError(f"no keypoint map knows these body parts: {', '.join(sorted(bodyparts))}; "
                             "give one with --keypoint-map")
        return best
    if str(spec) in BUILT_IN:
        return load_keypoint_map(spec)
    path = Path(spec)
    try:
        data = read_json(path, "keypoint map")
        keypoints = tuple(str(k) for k in data["keypoints"])
        to_smal = {str(k).lower(): str(v) for k, v in dict(data["to_smal"]).items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a keypoint map (a built-in name: {', '.join(BUILT_IN)}; or JSON with "
                         f"'keypoints' and 'to_smal'): {type(e).__name__}: {e}") from None
    unknown = sorted(set(to_smal.values()) - set(KEYPOINT_NAMES))
    if unknown:
        raise InputError(f"{path}: not SMAL keypoint names: {', '.join(unknown)}")
    return KeypointMap(str(data.get("name", path.stem)), keypoints, to_smal)


def to_smal(mapping: KeypointMap, bodyparts, xy, confidence=None) -> np.ndarray:
    """Body parts' xy [..., N, 2] (NaN = missing) -> SMAL keypoints [..., 26, 3]; confidence [..., N]
    defaults to 1 where xy is finite."""
    xy = np.asarray(xy, np.float64)
    finite = np.all(np.isfinite(xy), axis=-1)
    conf = finite.astype(np.float64) if confidence is None else np.where(finite, confidence, 0.0)
    out = np.zeros(xy.shape[:-2] + (len(KEYPOINT_NAMES), 3))
    for j, part in enumerate(bodyparts):
        target = mapping.to_smal.get(part.lower())
        if target is not None:
            k = KEYPOINT_NAMES.index(target)
            out[..., k, :2] = np.where(finite[..., j, None], xy[..., j, :], 0.0)
            out[..., k, 2] = conf[..., j]
    return out


def frame_number(image: str) -> int | None:
    """The frame a DeepLabCut row names: its index (video analysis files) or the last number in its
    file name (labeled-data/<video>/img0012.png -> 12); None without a number."""
    numbers = re.findall(r"\d+", image.replace("\\", "/").rsplit("/", 1)[-1])
    return int(numbers[-1]) if numbers else None


def unknown_parts(path, mapping: KeypointMap, bodyparts) -> str | None:
    """The line for body parts the map does not know, or None."""
    known = {k.lower() for k in mapping.keypoints} | set(mapping.to_smal)
    unknown = [p for p in bodyparts if p.lower() not in known]
    if unknown:
        return (f"{path}: body parts not in keypoint map '{mapping.name}', left out: {', '.join(unknown)}")
    return None


def read_deeplabcut(path, mapping_spec=None, num_frames: int | None = None):
    """A DeepLabCut file -> ({individual: SMAL keypoints [T, 26, 3]}, problems [lines]). T is
    num_frames (the video's) when given, else one past the last frame in the file; rows without a
    frame number or beyond num_frames are skipped with a line. Raises InputError when nothing is usable."""
    path = Path(path)
    try:
        frames = read_labels(path)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise InputError(f"{path}: cannot read DeepLabCut labels ({type(e).__name__}: {e})") from None
    if not frames:
        raise InputError(f"{path}: no labelled frames")
    problems = []
    bodyparts = frames[0].bodyparts
    try:
        mapping = keypoint_map(mapping_spec, bodyparts)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    if (line := unknown_parts(path, mapping, bodyparts)) is not None:
        problems.append(line)
    numbers = [frame_number(f.image) for f in frames]
    unnamed = sum(n is None for n in numbers)
    if unnamed:
        problems.append(f"{path}: {unnamed} rows name no frame number, skipped")
    last = max((n for n in numbers if n is not None), default=-1)
    length = num_frames if num_frames is not None else last + 1
    beyond = sorted({n for n in numbers if n is not None and n >= length})
    if beyond:
        problems.append(f"{path}: frames {beyond[0]}..{beyond[-1]} are out of range (the video has {length}), skipped")
    tracks = {}
    for frame, n in zip(frames, numbers):
        if n is None or n >= length:
            continue
        track = tracks.setdefault(frame.individual, np.full((length, len(KEYPOINT_NAMES), 3), np.nan))
        track[n] = to_smal(mapping, frame.bodyparts, frame.xy)
    for name, track in tracks.items():
        track[np.isnan(track[..., 2])] = 0.0
    if not tracks or not any(np.any(t[..., 2] > 0) for t in tracks.values()):
        raise InputError(f"{path}: no keypoint maps to SMAL's through '{mapping.name}'")
    return tracks, problems


def read_coco(path, mapping_spec=None):
    """COCO keypoint JSON -> ({file name: [SMAL keypoints [26, 3] per annotation]}, problems)."""
    path = Path(path)
    try:
        data = read_json(path, "COCO keypoint file")
    except ValueError as e:                    # names the file already
        raise InputError(str(e)) from None
    try:
        images = {img["id"]: str(img["file_name"]) for img in data["images"]}
        categories = {c["id"]: [str(n) for n in c["keypoints"]] for c in data["categories"]}
        annotations = list(data["annotations"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a COCO keypoint file ({type(e).__name__}: {e})") from None
    problems, out = [], {}
    maps = {}
    for ann in annotations:
        names = categories.get(ann.get("category_id"), next(iter(categories.values()), []))
        values = np.asarray(ann.get("keypoints", []), np.float64)
        if ann.get("image_id") not in images or values.size != 3 * len(names):
            problems.append(f"{path}: annotation {ann.get('id')}: unknown image or {values.size} numbers for "
                            f"{len(names)} keypoints, skipped")
            continue
        key = tuple(names)
        if key not in maps:
            try:
                maps[key] = keypoint_map(mapping_spec, names)
            except InputError as e:
                raise InputError(f"{path}: {e}") from None
            if (line := unknown_parts(path, maps[key], names)) is not None:
                problems.append(line)
        values = values.reshape(-1, 3)
        xy = np.where(values[:, 2:3] > 0, values[:, :2], np.nan)
        out.setdefault(images[ann["image_id"]], []).append(to_smal(maps[key], names, xy))
    if not out:
        raise InputError(f"{path}: no usable keypoint annotation")
    return out, problems


def read_keypoints(path, mapping_spec=None, num_frames=None):
    """DeepLabCut (.csv, .h5) -> ('tracks', {individual: [T,26,3]}, problems); COCO (.json) ->
    ('images', {file name: [[26,3], ...]}, problems)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise InputError(f"{path}: keypoint file not found")
    if suffix in (".csv", ".h5"):
        return ("tracks", *read_deeplabcut(path, mapping_spec, num_frames))
    if suffix == ".json":
        return ("images", *read_coco(path, mapping_spec))
    raise InputError(f"{path}: keypoint files are DeepLabCut .csv/.h5 or COCO .json")


def read_mask(path, image_size) -> np.ndarray:
    """A binary mask PNG (SAM writes 0/255, or 0/1; any channel count: the first is used) -> bool
    [H, W]. Raises InputError when its size is not image_size (W, H) or it is empty."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
    if array.ndim == 3:
        array = array[..., 0]
    if (array.shape[1], array.shape[0]) != tuple(image_size):
        raise InputError(f"{path}: mask is {array.shape[1]}x{array.shape[0]}, the picture "
                         f"{image_size[0]}x{image_size[1]}; mask left out")
    mask = array > (127 if array.max() > 1 else 0)
    if not mask.any():
        raise InputError(f"{path}: mask is empty; mask left out")
    return mask


def find_mask(folder, stem: str | None = None, frame: int | None = None) -> Path | None:
    """The mask of an image (`<stem>.png`, `<stem>_mask.png`) or of a video frame (the PNG whose
    last number is `frame`) in folder, or None."""
    folder = Path(folder)
    if stem is not None:
        for name in (f"{stem}.png", f"{stem}_mask.png"):
            if (folder / name).is_file():
                return folder / name
    if frame is not None:
        for path in sorted(folder.glob("*.png")):
            if frame_number(path.name) == frame:
                return path
    return None


def read_masks(folder, image_size, num_frames: int):
    """Masks of frames 0..T-1 in folder -> ([T] bool [H, W] or None, problems)."""
    masks, problems = [], []
    by_frame = {}
    for path in sorted(Path(folder).glob("*.png")):
        n = frame_number(path.name)
        if n is not None:
            by_frame.setdefault(n, path)
    beyond = sorted(n for n in by_frame if n >= num_frames)
    if beyond:
        problems.append(f"{folder}: masks of frames {beyond[0]}..{beyond[-1]} are out of range "
                        f"(the video has {num_frames}), left out")
    for t in range(num_frames):
        mask = None
        if t in by_frame:
            try:
                mask = read_mask(by_frame[t], image_size)
            except InputError as e:
                problems.append(str(e))
        masks.append(mask)
    return masks, problems
