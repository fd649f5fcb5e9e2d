"""The batch loop behind infer.py: image files -> windows -> batched device step -> exported folders.

Decoding and the crop's planning (the box's window and taps: `animax.image.device_crop`) run
ahead in one thread pool and export (overlay rendering, file writes) behind in another, while
the calling thread feeds the device full batches gathered across images: it submits batch
N + 1 (copy into preallocated buffers, send, dispatch) before it fetches batch N. PIL decoding,
NumPy, zlib and file writes release the GIL, so on an accelerator the host work overlaps the
model instead of adding to it.

A failure (unreadable file, bad box, export error) is one line naming the file; it stops
only its image or animal, and leaves no output folder for it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from animax.geometry import CROP_SIZE
from animax.image.io import FULL_SCALE, load_image, load_reduced
from animax.predict.detections import in_pixels
from animax.predict.export import OUTPUTS, ArraysFile, remove_stale, write_animal
from animax.predict.inputs import ImageJob, box_problem
from animax.predict.predictor import Animal, picture_box, prepare
from animax.viz.overlay import overlay_image

# Host time per stage: decode (the file to pixels), window (the crop's window and taps), submit
# (batch buffers, transfer, dispatch), fetch (outputs to host arrays, keypoints to image pixels),
# export (files), each the CPU time of the thread that did it (`time.thread_time`: the work,
# not the waits for a core or the GIL while the model computes on the same cores); wait: wall
# time blocked on the device.
STAGES = ("decode", "window", "submit", "wait", "fetch", "export")
# `reduced_decode` keeps every box at least this many pixels wide: twice the crop's side, so
# the crop still samples the (block-averaged) picture finer than it outputs.
REDUCED_DECODE_MIN_BOX = 2 * CROP_SIZE


@dataclass(frozen=True)
class ImageRunOptions:
    """What infer.py writes for still images, and with how many threads."""
    out_dir: Path
    outputs: tuple[str, ...] = tuple(OUTPUTS)    # what each animal's folder gets (keys of OUTPUTS)
    arrays_file: Path | None = None              # one .npz of every animal's arrays instead of .npy files
    workers: int = 4                             # threads for decoding, and as many for export
    progress: bool | None = None                 # the progress bar; None: on terminals
    reduced_decode: bool = False                 # JPEGs at 1/2..1/8 scale where boxes stay >= REDUCED_DECODE_MIN_BOX


@dataclass
class RunSummary:
    """Counts, failure lines, wall time and per-stage seconds (summed over threads)."""
    images: int = 0                 # images with at least one animal exported
    animals: int = 0                # animals exported
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    stage_s: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def lines(self) -> list[str]:
        rate = self.images / self.wall_s if self.wall_s > 0 else 0.0
        stages = "  ".join(f"{k} {v:.2f}" for k, v in self.stage_s.items())
        return [f"done: {self.images} images, {self.animals} animals exported, {len(self.failures)} failures "
                f"in {self.wall_s:.2f} s ({rate:.2f} images/s)",
                f"seconds per stage (summed over threads): {stages}"]


@dataclass
class _Loaded:
    """An image after decoding and cropping: its animals by box index, and timings."""
    job: ImageJob
    animals: list[tuple[int, Animal]]
    decode_s: float = 0.0
    preprocess_s: list[float] = field(default_factory=list)


def largest_reduction(boxes, width, height) -> float:
    """How much a width x height picture may shrink with its boxes (None: the whole picture)
    kept at least REDUCED_DECODE_MIN_BOX pixels wide."""
    boxes = [picture_box(width, height)] if boxes is None else [in_pixels(b, width, height) for b in boxes]
    sides = [max(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes]
    return min(sides, default=0.0) / REDUCED_DECODE_MIN_BOX


class _Run:
    """State shared by the threads of one `run_inference` call."""

    def __init__(self, jobs, faces, info, options: ImageRunOptions):
        self.out_dir, self.faces, self.info = Path(options.out_dir), np.asarray(faces), info
        self.outputs, arrays_file = options.outputs, options.arrays_file
        self.reduced_decode = options.reduced_decode
        self.arrays_file = None
        self.first_row = {}                 # job -> its first row in the arrays file
        if arrays_file is not None:
            rows = 0
            for job in jobs:
                self.first_row[job], rows = rows, rows + job.num_animals
            self.arrays_file = ArraysFile(arrays_file, [str(j.path) for j in jobs for _ in range(j.num_animals)],
                                          [k for j in jobs for k in range(j.num_animals)])
            self.outputs = tuple(kind for kind in self.outputs if kind != "arrays")     # the file has them
        self.summary = RunSummary()
        self.lock = threading.Lock()
        self.remaining = {job: job.num_animals for job in jobs}     # animals not yet finished
        self.exported = {job: 0 for job in jobs}
        self.bar = tqdm(total=len(jobs), unit="image", file=sys.stderr,
                        disable=None if options.progress is None else not options.progress)

    def fail(self, job, message, box_indices):
        """Reports one failure line and finishes the given animals without output."""
        for k in box_indices:
            remove_stale(self.out_dir / job.folder_name(k))
        with self.lock:
            self.summary.failures.append(message)
            self.bar.write(f"error: {message}", file=sys.stderr)
        self.finish(job, len(box_indices), exported=0)

    def finish(self, job, count, exported):
        with self.lock:
            self.remaining[job] -= count
            self.exported[job] += exported
            self.summary.animals += exported
            if self.remaining[job] == 0:
                self.summary.images += self.exported[job] > 0
                self.bar.update(1)

    def add_time(self, stage, seconds):
        with self.lock:
            self.summary.stage_s[stage] += seconds

    def load(self, job: ImageJob) -> _Loaded:
        """Decodes and crops one image; failures are reported here."""
        if job.num_animals == 0:              # listed with no boxes: nothing to do
            self.finish(job, 0, exported=0)
            return _Loaded(job, [])
        start = time.thread_time()
        try:
            if self.reduced_decode:
                image, scale = load_reduced(job.path, lambda w, h: largest_reduction(job.boxes, w, h))
            else:
                image, scale = load_image(job.path), FULL_SCALE
        except Exception as e:                # any broken file: one line, the other images go on
            message = (str(e) if isinstance(e, ValueError)
                       else f"{job.path}: cannot read image ({type(e).__name__}: {e})")
            self.fail(job, message, range(job.num_animals))
            return _Loaded(job, [])
        loaded = _Loaded(job, [], decode_s=time.thread_time() - start)
        self.add_time("decode", loaded.decode_s)
        width, height = scale.picture_size or image.shape[1::-1]
        for k, box in enumerate([picture_box(width, height)] if job.boxes is None else job.boxes):
            box = in_pixels(box, width, height)
            problem = box_problem(box, width, height)
            if problem:
                self.fail(job, f"{job.path}: box {k} {list(box)}: {problem}", [k])
                continue
            start = time.thread_time()
            try:
                loaded.animals.append((k, prepare(image, box, scale)))
            except Exception as e:            # a box the crop cannot handle fails alone
                self.fail(job, f"{job.path}: box {k} {list(box)}: cannot crop ({type(e).__name__}: {e})", [k])
                continue
            loaded.preprocess_s.append(time.thread_time() - start)
        self.add_time("window", sum(loaded.preprocess_s))
        return loaded

    def export(self, loaded: _Loaded, position: int, result: dict, model_s: float):
        """Renders the overlay and writes one animal's folder."""
        job = loaded.job
        box_index, animal = loaded.animals[position]
        start = time.thread_time()
        try:
            crop = result.pop("crop", None)         # the device's crop (the predictor returns it for overlays)
            overlay = (overlay_image(crop, result["vertices"], result["cam_t"], self.faces,
                                     result["keypoints2d_crop"], result["head_box"])
                       if "overlay" in self.outputs else None)
            timings = {"decode": loaded.decode_s, "preprocess": loaded.preprocess_s[position], "model": model_s,
                       **({"overlay": time.thread_time() - start} if overlay is not None else {})}
            info = {"input": str(job.path), "image_size": list(animal.image_size), "decode_factor": animal.scale.factor,
                    "box_index": box_index, "box": animal.box.tolist(), "box_center": animal.center.tolist(),
                    "box_size": animal.size,
                    "focal_length": float(result["focal_length"]), "timings_s": timings, **self.info}
            if self.outputs:
                write_animal(self.out_dir / job.folder_name(box_index), result, self.faces, overlay, info,
                             self.outputs)
            if self.arrays_file is not None:      # last: a row is valid only if all of the animal's export is
                self.arrays_file.put(self.first_row[job] + box_index, result)
        except Exception as e:                # one animal's export error must not stop the others
            self.fail(job, f"{job.path}: box {box_index}: cannot write output ({type(e).__name__}: {e})", [box_index])
            return
        finally:
            self.add_time("export", time.thread_time() - start)
        self.finish(job, 1, exported=1)


def run_inference(predictor, jobs, info: dict, options: ImageRunOptions) -> RunSummary:
    """Runs `predictor` on every box of every job and exports each animal to OUT/<folder>/.

    info: JSON-ready metadata copied into every result.json (checkpoint, body model, ...; a
    `LoadedModel`'s). The overlay is rendered only if `options.outputs` asks for it; an arrays
    file (`export.ArraysFile`) is written only when the run ends, and not at all if it is
    interrupted. Failure lines go to stderr as they happen and are returned in the summary.
    """
    start = time.perf_counter()
    run = _Run(jobs, predictor.variables["smal"]["model"].faces, info, options)
    predictor.return_crops = "overlay" in run.outputs      # the overlay draws on the device's crop
    try:
        _pipeline(run, predictor, jobs, options.workers)
    except BaseException:
        if run.arrays_file is not None:
            run.arrays_file.abort()
        raise
    if run.arrays_file is not None:
        run.arrays_file.close()
    run.bar.close()
    run.summary.wall_s = time.perf_counter() - start
    return run.summary


def _pipeline(run: _Run, predictor, jobs, workers):
    """Loading ahead in one pool, full device batches here (one in flight while the next is
    submitted), export behind in another pool."""
    batch_size = predictor.batch_size
    with ThreadPoolExecutor(workers, thread_name_prefix="load") as loaders, \
            ThreadPoolExecutor(workers, thread_name_prefix="export") as exporters:
        loading = deque()
        exporting = deque()
        jobs_left = iter(jobs)
        pending = []                          # (loaded, position) awaiting a device batch
        in_flight = None                      # (batch, PendingBatch) submitted, not yet fetched

        def submit(batch):
            t0 = time.thread_time()
            submitted = predictor.submit([loaded.animals[i][1] for loaded, i in batch])
            for loaded, i in batch:           # the pictures are in the batch buffer now: free them
                box_index, animal = loaded.animals[i]
                loaded.animals[i] = (box_index, animal.sent())
            run.add_time("submit", time.thread_time() - t0)
            return batch, submitted

        def fetch(batch, submitted):
            t0 = time.perf_counter()
            submitted.wait()
            t1, cpu = time.perf_counter(), time.thread_time()
            results = submitted.result()
            t2 = time.perf_counter()
            run.add_time("wait", t1 - t0)
            run.add_time("fetch", time.thread_time() - cpu)
            for (loaded, i), result in zip(batch, results):
                exporting.append(exporters.submit(run.export, loaded, i, result, (t2 - t0) / len(batch)))
            # Bound the results held in memory when export is the slower side.
            while len(exporting) > 4 * batch_size:
                exporting.popleft().result()

        def run_batch(batch):
            nonlocal in_flight
            submitted = submit(batch)
            if in_flight is not None:
                fetch(*in_flight)
            in_flight = submitted

        def top_up():
            while len(loading) < 2 * batch_size:
                job = next(jobs_left, None)
                if job is None:
                    return
                loading.append(loaders.submit(run.load, job))

        top_up()
        while loading:
            loaded = loading.popleft().result()
            top_up()
            pending.extend((loaded, i) for i in range(len(loaded.animals)))
            while len(pending) >= batch_size:
                run_batch(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            run_batch(pending)
        if in_flight is not None:
            fetch(*in_flight)
        for future in exporting:
            future.result()
