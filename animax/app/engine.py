"""The app's work, without the web page: one model per process, photos and clips in, the
files the page shows and offers out. The page (`animax.app.ui`) only turns these into
components; tests call them directly as well.

Photos go through infer.py's own batch loop (`animax.predict.run.run_inference`), so an
animal's folder is exactly what infer.py writes for the same photo and box; the app adds a
one-frame glTF per animal, the full-picture overlay, a keypoint table and one zip. Clips go
through `animax.track` as infer.py's sequences do (tracking, smoothing, `write_sequence`),
with a progress callback per frame.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from animax.app.uploads import UploadError, display_name
from animax.loading import LoadedModel
from animax.predict.detections import in_pixels
from animax.predict.inputs import BoxSource, box_problem, plan_jobs
from animax.predict.predictor import Predictor
from animax.predict.run import ImageRunOptions, run_inference
from animax.smal.constants import KEYPOINT_NAMES
from animax.track.export import SEQUENCE_FILE, TRACK_COLORS, write_sequence
from animax.track.frames import Sequence
from animax.track.gltf import CAMERA_TO_GLTF, write_glb
from animax.track.sequence import track_sequence
from animax.track.smoothing import smooth_track
from animax.viz.overlay import blend_in_picture, draw_keypoints

GLB_FILE = "mesh.glb"
KEYPOINT_COLUMNS = ("photo", "animal", "keypoint", "x", "y", "x3d", "y3d", "z3d")

Progress = Callable[[str, int, int | None], None]      # (stage, done, total or None)


def no_progress(stage: str, done: int, total: int | None) -> None:
    return None


class Engine:
    """The process's one model and its Predictors: batch 1 (one animal, and top-down video
    frames) and `batch_size` (several animals), each compiled once, when first needed (with the
    persistent compilation cache, later processes load the compiled code instead). Runs are
    serialised by the page's queue; the lock keeps two first calls from compiling twice."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 4, workers: int = 2):
        self.loaded = loaded
        self.batch_size = max(1, batch_size)
        self.workers = workers
        self._predictors: dict[int, Predictor] = {}
        self._lock = threading.Lock()

    def predictor(self, animals: int) -> Predictor:
        """The Predictor for a run of `animals` animals at a time."""
        batch = 1 if animals <= 1 else self.batch_size
        with self._lock:
            if batch not in self._predictors:
                predictor = Predictor(self.loaded.model, self.loaded.variables, batch)
                predictor.compile()
                self._predictors[batch] = predictor
            return self._predictors[batch]

    def warm_up(self) -> float:
        """Compiles the batch-1 Predictor now (before serving); returns the seconds it took."""
        start = time.perf_counter()
        self.predictor(1)
        return time.perf_counter() - start


# ----------------------------------------------------------------------------------- photos


@dataclass
class PhotoRun:
    """What one run over photos made, all under `folder`: per photo its full-picture overlay,
    per animal its crop overlay (crop | mesh | side view) and one-frame glTF, the keypoint table
    (KEYPOINT_COLUMNS rows), the zip of everything and a summary line per photo."""
    folder: Path
    full_overlays: list[tuple[Path, str]] = field(default_factory=list)
    crop_overlays: list[tuple[Path, str]] = field(default_factory=list)
    meshes: dict[str, Path] = field(default_factory=dict)          # animal label -> .glb
    keypoints: list[list] = field(default_factory=list)
    zip: Path | None = None
    lines: list[str] = field(default_factory=list)


def photo_boxes(photos: dict, drawn: dict, boxes_file: BoxSource | None) -> dict[str, list | None]:
    """Each photo's boxes in pixels: those drawn or typed for it, else the boxes file's, else
    None (the whole picture). A photo the boxes file does not list, with none drawn, and a box
    that misses its picture are UploadErrors."""
    lookup = None if boxes_file is None else boxes_file.lookup()
    chosen = {}
    for name, (path, image) in photos.items():
        height, width = image.shape[:2]
        boxes = drawn.get(name) or None
        source = "drawn box"
        if boxes is None and lookup is not None:
            listed = listed_boxes(lookup, name, boxes_file)
            if listed is None:
                raise UploadError(f"{name}: not listed in {display_name(boxes_file.file)}; draw its boxes, or "
                                  "remove the boxes file to use the whole picture")
            boxes, source = [in_pixels(b, width, height) for b in listed], f"box of {display_name(boxes_file.file)}"
        for k, box in enumerate(boxes or []):
            if problem := box_problem(box, width, height):
                raise UploadError(f"{name}: {source} {k} {[round(v, 1) for v in box]}: {problem}")
        chosen[name] = None if boxes is None else [tuple(float(v) for v in b) for b in boxes]
    return chosen


def listed_boxes(lookup, name: str, boxes_file: BoxSource):
    """The boxes a boxes file lists for an upload called `name`: by file name, since an upload
    keeps no folder (`site1/IMG_0001.JPG` is found as IMG_0001.JPG); None when not listed."""
    keys = lookup.keys_by_name.get(name, [])
    if len({str(lookup.boxes_by_name[k]) for k in keys}) > 1:
        raise UploadError(f"{name}: {display_name(boxes_file.file)} lists several images of this name "
                          f"({', '.join(keys)}); upload a file with one")
    return lookup.boxes_by_name[keys[0]] if keys else None


def run_photos(engine: Engine, photos: dict, boxes: dict, folder) -> PhotoRun:
    """Predicts every box of every photo into `folder` (a new folder of this run).

    photos: {name: (path, uint8 RGB)} (`uploads.read_photos`); boxes: {name: [box, ...] or
    None} (`photo_boxes`)."""
    folder = Path(folder)
    results = folder / "results"
    paths = [path for path, _ in photos.values()]
    jobs, _ = plan_jobs(paths)
    jobs = [dataclasses.replace(job, boxes=None if boxes[name] is None else tuple(boxes[name]))
            for job, name in zip(jobs, photos)]
    animals = sum(job.num_animals for job in jobs)
    run = PhotoRun(folder)
    if animals:
        summary = run_inference(engine.predictor(animals), jobs, engine.loaded.info,
                                ImageRunOptions(results, workers=engine.workers, progress=False))
        if summary.failures:
            names = {str(path): name for name, (path, _) in photos.items()}
            lines = [_named(line, names) for line in summary.failures]
            raise UploadError("; ".join(lines))
    body = engine.loaded.body
    for job, (name, (_, image)) in zip(jobs, photos.items()):
        found = []
        for k in range(job.num_animals):
            animal = results / job.folder_name(k)
            arrays = {key: np.load(animal / f"{key}.npy") for key in ("vertices", "cam_t_full", "keypoints2d",
                                                                      "keypoints3d", "betas", "pose")}
            info = json.loads((animal / "result.json").read_text())
            write_glb(animal / GLB_FILE, body, arrays["betas"], arrays["pose"][None], arrays["cam_t_full"][None],
                      name=animal.name, world=CAMERA_TO_GLTF)
            label = animal.name
            run.crop_overlays.append((animal / "overlay.png", f"{label}: crop | mesh | side view"))
            run.meshes[label] = animal / GLB_FILE
            for point, (x, y), (a, b, c) in zip(KEYPOINT_NAMES, arrays["keypoints2d"], arrays["keypoints3d"]):
                run.keypoints.append([name, label, point, *(round(float(v), 2) for v in (x, y)),
                                      *(round(float(v), 4) for v in (a, b, c))])
            found.append((arrays, info["focal_length"], info["box"]))
        full = results / f"{job.name}_full_overlay.png"
        Image.fromarray(full_picture_overlay(image, found, body.faces)).save(full)
        run.full_overlays.append((full, name))
        box_kind = "whole picture" if job.boxes is None else f"{len(job.boxes)} box" + "es" * (len(job.boxes) != 1)
        run.lines.append(f"{name}: {len(found)} animal{'s' * (len(found) != 1)} ({box_kind})")
    _write_table(results / "keypoints.csv", run.keypoints)
    run.zip = zip_folder(results, folder / f"animax_{jobs[0].name}.zip")
    return run


def _named(line: str, names: dict) -> str:
    """A failure line of run_inference with the upload's temporary path replaced by its name."""
    for path, name in names.items():
        line = line.replace(path, name)
    return line


def full_picture_overlay(image: np.ndarray, animals, faces) -> np.ndarray:
    """The photo with each animal's mesh (through the full picture's camera: vertices +
    cam_t_full, its focal length, principal point at the centre), its keypoints and box.

    animals: [(arrays {vertices, cam_t_full, keypoints2d}, focal_length, box), ...]."""
    picture = np.asarray(image, np.float64)
    for k, (arrays, focal, _) in enumerate(animals):
        color = np.array(TRACK_COLORS[k % len(TRACK_COLORS)]) / 255
        picture = blend_in_picture(picture, arrays["vertices"], arrays["cam_t_full"], focal, faces, color)
    out = Image.fromarray(np.round(picture).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for k, (arrays, _, box) in enumerate(animals):
        draw.rectangle([float(v) for v in box], outline=TRACK_COLORS[k % len(TRACK_COLORS)], width=2)
        draw_keypoints(draw, arrays["keypoints2d"])
    return np.asarray(out)


def _write_table(path, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(KEYPOINT_COLUMNS)
        writer.writerows(rows)


def zip_folder(folder, target) -> Path:
    """Every file under `folder` in a zip at `target`, by its path relative to `folder`."""
    folder, target = Path(folder), Path(target)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return target


# ------------------------------------------------------------------------------------ clips


@dataclass
class ClipRun:
    """What one run over a clip made, under `folder`: the overlay video, each track's
    animated glTF and per-frame files (npz, DeepLabCut .h5/.csv), the zip and a summary line."""
    folder: Path
    video: Path | None = None
    meshes: dict[str, Path] = field(default_factory=dict)          # track label -> .glb
    files: list[Path] = field(default_factory=list)
    zip: Path | None = None
    lines: list[str] = field(default_factory=list)


def clip_frame_boxes(sequence: Sequence, boxes_file: BoxSource | None) -> dict[int, list] | None:
    """{frame: boxes} of a boxes file for this clip (MegaDetector's video layout, the clip's own
    key for frame 0, or a zip's frame names), as infer.py reads them; None without a file."""
    if boxes_file is None:
        return None
    lookup = boxes_file.lookup()
    if sequence.files:
        found = {i: b for i, f in enumerate(sequence.files)
                 if (b := listed_boxes(lookup, f.name, boxes_file)) is not None}
    else:
        found = lookup.video_frames(sequence.path.name)
    if not found:
        raise UploadError(f"{display_name(sequence.path)}: not listed in {display_name(boxes_file.file)}")
    return found


def run_clip(engine: Engine, sequence: Sequence, first_boxes, frame_boxes, smooth_sigma: float, folder,
             max_frames: int, progress: Progress = no_progress) -> ClipRun:
    """Tracks the animals of `sequence` and writes infer.py's sequence folder under `folder`.

    first_boxes: frame 0's boxes (None: the boxes file's, else the whole frame); frame_boxes:
    {frame: boxes} from a boxes file (`clip_frame_boxes`) or None; smooth_sigma: the smoothing
    over time in frames (0: none)."""
    folder = Path(folder)
    name = display_name(sequence.path)
    animals = max([len(b) for b in (frame_boxes or {}).values()] + [len(first_boxes or [None])])
    predictor = engine.predictor(animals)
    total = sequence.num_frames
    failures = []
    try:
        tracks, frames = track_sequence(predictor, _counted(sequence.frames(), "tracking", total, max_frames, name,
                                                            progress),
                                        first_boxes, frame_boxes, total, progress=False, failures=failures)
    except ValueError as e:                         # a frame that does not decode: the clip's problem
        raise UploadError(str(e).replace(str(sequence.path), name)) from None
    if failures:
        raise UploadError(f"{name}: " + "; ".join(failures))
    if not tracks:
        raise UploadError(f"{name}: no animal was tracked; draw a box on the first frame")
    if smooth_sigma > 0:
        tracks = [smooth_track(t, engine.loaded.body, smooth_sigma) for t in tracks]
    results = folder / "results" / Path(name).stem
    write_sequence(results, tracks, engine.loaded.body, sequence.fps, frames,
                   {"input": name, "failures": [], **engine.loaded.info},
                   frames=_counted(sequence.frames(), "rendering the overlay video", frames, max_frames, name,
                                   progress))
    run = ClipRun(folder, video=results / "overlay.mp4")
    for track in tracks:
        run.meshes[f"track {track.id}"] = results / f"track_{track.id}.glb"
        run.files += [results / f"track_{track.id}{suffix}" for suffix in (".npz", "_DLC.h5", "_DLC.csv")]
    run.files.append(results / SEQUENCE_FILE)
    run.zip = zip_folder(results.parent, folder / f"animax_{results.name}.zip")
    smoothing = f", smoothed over {smooth_sigma:g} frames" if smooth_sigma > 0 else ""
    run.lines.append(f"{name}: {frames} frames at {sequence.fps:g} fps, {len(tracks)} "
                     f"track{'s' * (len(tracks) != 1)}{smoothing}")
    return run


def _counted(frames, stage, total, max_frames, name, progress: Progress):
    """The frames, reporting each to `progress`; a clip longer than max_frames stops with an UploadError."""
    for t, frame in enumerate(frames):
        if t >= max_frames:
            raise UploadError(f"{name}: more than {max_frames} frames, the limit of this app")
        progress(stage, t, total)
        yield frame


def remove_old_runs(root, keep_seconds: float) -> None:
    """Deletes the run folders under `root` older than keep_seconds (their files were handed to
    the page, which serves its own copies)."""
    now = time.time()
    for run in Path(root).iterdir():
        if run.is_dir() and now - run.stat().st_mtime > keep_seconds:
            shutil.rmtree(run, ignore_errors=True)
