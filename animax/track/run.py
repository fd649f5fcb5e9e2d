"""infer.py's sequences: which inputs are sequences, their boxes, tracking and export, one line
per failure (a sequence that fails leaves no folder behind)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from animax.loading import LoadedModel
from animax.predict.inputs import BoxSource
from animax.predict.predictor import Predictor
from animax.track.export import SEQUENCE_OUTPUTS, write_sequence
from animax.track.frames import SequenceError, is_video, open_sequence
from animax.track.sequence import track_sequence
from animax.track.smoothing import smooth_track


def split_sequences(specs, folders_are_sequences: bool) -> tuple[list[str], list[str]]:
    """(image specs, sequence specs): videos always are sequences, folders when asked."""
    images, sequences = [], []
    for spec in specs:
        path = Path(spec)
        (sequences if is_video(path) or (folders_are_sequences and path.is_dir()) else images).append(spec)
    return images, sequences


@dataclass(frozen=True)
class SequenceRunOptions:
    """What infer.py writes for sequences, and how."""
    out_dir: Path
    outputs: tuple[str, ...] = SEQUENCE_OUTPUTS
    smooth_sigma: float = 0.0            # smoothing over time, in frames (`smooth_track`); 0: none
    fps: float | None = None             # frame rate of image-folder sequences (None: 30)
    max_batch: int = 8                   # animals per model call at most
    progress: bool | None = None         # the progress bar; None: on terminals
    # refine(tracks, body, num_frames, image_size) -> (tracks, {track id: report}, problem lines): e.g.
    # a fit to keypoints (animax.fit.run.track_refiner), after smoothing and before export; the
    # reports go into sequence.json under "fit".
    refine: Callable | None = None


def run_sequences(specs, loaded: LoadedModel, boxes: BoxSource, options: SequenceRunOptions, report=print) -> int:
    """Tracks and exports each sequence into OUT/<name>/; returns the number of failure lines
    (each also passed to `report`)."""
    lookup = boxes.lookup()
    predictors, failures, taken = {}, 0, set()
    for spec in specs:
        lines = []
        try:
            sequence = open_sequence(spec, options.fps)
            first_boxes = None if boxes.bbox is None else [boxes.bbox]
            frame_boxes = None
            if lookup is not None:
                frame_boxes = (lookup.video_frames(sequence.path) if not sequence.files else
                               {i: b for i, f in enumerate(sequence.files) if (b := lookup(f)) is not None})
                if not frame_boxes:
                    raise SequenceError(f"{spec}: not listed in {boxes.file}")
            # One animal per frame needs a batch of one: top-down tracking runs a frame at a time.
            animals = max([len(b) for b in (frame_boxes or {}).values()] + [len(first_boxes or [None])])
            batch = max(1, min(options.max_batch, animals))
            if batch not in predictors:
                predictors[batch] = Predictor(loaded.model, loaded.variables, batch)
            name, n = sequence.path.stem, 1
            while name in taken:
                n += 1
                name = f"{sequence.path.stem}-{n}"
            taken.add(name)
            start = time.perf_counter()
            tracks, num_frames = track_sequence(predictors[batch], sequence.frames(), first_boxes, frame_boxes,
                                                sequence.num_frames, progress=options.progress, failures=lines)
            seconds = time.perf_counter() - start
            if options.smooth_sigma > 0:
                tracks = [smooth_track(t, loaded.body, options.smooth_sigma) for t in tracks]
            fit_reports = None
            if options.refine is not None and tracks:
                tracks, fit_reports, refine_lines = options.refine(tracks, loaded.body, num_frames,
                                                                   tracks[0].image_size)
                lines += refine_lines
            folder = Path(options.out_dir) / name
            write_sequence(folder, tracks, loaded.body, sequence.fps, num_frames,
                           {"input": str(sequence.path), "failures": lines, **loaded.info,
                            **({"fit": fit_reports} if fit_reports is not None else {})}, options.outputs,
                           frames=sequence.frames())
            print(f"{spec}: {num_frames} frames, {len(tracks)} tracks in {seconds:.1f} s "
                  f"({num_frames / max(seconds, 1e-9):.1f} frames/s) -> {folder}")
        except SequenceError as e:
            lines.append(str(e))
        except Exception as e:            # one sequence's failure must not stop the others
            lines.append(f"{spec}: {type(e).__name__}: {e}")
        for line in lines:
            report(line if line.startswith(str(spec)) else f"{spec}: {line}")
        failures += len(lines)
    return failures
