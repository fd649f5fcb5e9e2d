"""infer.py's sequences: which inputs are sequences, their boxes, tracking and export, one line
per failure (a sequence that fails leaves no folder behind)."""

from __future__ import annotations

import time
from pathlib import Path

from animax.inference.frames import SequenceError, is_video, open_sequence
from animax.inference.inputs import BoxLookup
from animax.inference.predictor import Predictor
from animax.inference.sequence import smooth as smooth_track
from animax.inference.sequence import track_sequence
from animax.inference.sequence_export import SEQUENCE_OUTPUTS, write_sequence


def split_sequences(specs, folders_are_sequences: bool) -> tuple[list[str], list[str]]:
    """(image specs, sequence specs): videos always are sequences, folders when asked."""
    images, sequences = [], []
    for spec in specs:
        path = Path(spec)
        (sequences if is_video(path) or (folders_are_sequences and path.is_dir()) else images).append(spec)
    return images, sequences


def run_sequences(specs, model, variables, info: dict, out_dir, boxes_by_name=None, bbox=None,
                  boxes_file="boxes file", outputs=SEQUENCE_OUTPUTS, smooth: float = 0.0, fps=None,
                  max_batch: int = 8, report=print, progress=None) -> int:
    """Tracks and exports each sequence into OUT/<name>/; returns the number of failure lines
    (each also passed to `report`)."""
    lookup = BoxLookup(boxes_by_name) if boxes_by_name is not None else None
    body = variables["smal"]["model"]
    predictors, failures, taken = {}, 0, set()
    for spec in specs:
        lines = []
        try:
            sequence = open_sequence(spec, fps)
            first_boxes = [tuple(bbox)] if bbox is not None else None
            frame_boxes = None
            if lookup is not None:
                frame_boxes = (lookup.video_frames(sequence.path) if not sequence.files else
                               {i: b for i, f in enumerate(sequence.files) if (b := lookup(f)) is not None})
                if not frame_boxes:
                    raise SequenceError(f"{spec}: not listed in {boxes_file}")
            # One animal per frame needs a batch of one: top-down tracking runs a frame at a time.
            animals = max([len(b) for b in (frame_boxes or {}).values()] + [len(first_boxes or [None])])
            batch = max(1, min(max_batch, animals))
            if batch not in predictors:
                predictors[batch] = Predictor(model, variables, batch)
            name, n = sequence.path.stem, 1
            while name in taken:
                n += 1
                name = f"{sequence.path.stem}-{n}"
            taken.add(name)
            start = time.perf_counter()
            tracks, num_frames = track_sequence(predictors[batch], sequence.frames(), first_boxes, frame_boxes,
                                                sequence.num_frames, progress=progress, failures=lines)
            seconds = time.perf_counter() - start
            if smooth > 0:
                tracks = [smooth_track(t, body, smooth) for t in tracks]
            folder = Path(out_dir) / name
            write_sequence(folder, tracks, body, sequence.fps, num_frames,
                           {"input": str(sequence.path), "failures": lines, **info}, outputs, frames=sequence.frames())
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
