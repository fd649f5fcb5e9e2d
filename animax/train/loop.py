"""The training run: set-up, the train loop, evaluation, one_step and export modes.

`run(config, workdir, mode)` with mode
    train     resume from the latest checkpoint in WORKDIR (or start per config.init), train to
              config.num_train_steps (or only up to `stop_after`, saving there: runs can be cut
              into slices without changing the schedule), evaluating and checkpointing on the way
    one_step  one optimizer step on one batch; prints every loss term and the gradient norm
              of every module; writes nothing
    eval      held-out PCK@0.1 / 0.15, AUC, PA-MPJPE, PA-MPVPE and retrieval of the latest
              checkpoint (or of the initial state) on every `data.eval_sets` dataset, each
              printed in AniMer's eval.py layout
    export    WORKDIR/export: the latest weights, LoRA merged, as an animax.load_model directory

Faults. A non-finite loss skips its update (counted); `max_nonfinite_steps` in a row stop
the run with a message, and no checkpoint is written then, so the last one stays. SIGTERM
finishes the current step, saves, and exits cleanly. A SIGKILLed run restarts from its last
complete checkpoint: metrics logged past it are dropped and recomputed identically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import signal
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from animax.models import build_model
from animax.smal import BodyModelBank, load_body, load_pose_prior, load_shape_prior
from animax.train import input as input_lib
from animax.train import metrics as metrics_lib
from animax.train import optim
from animax.train import sharding as sharding_lib
from animax.train import state as state_lib
from animax.train import step as step_lib
from animax.train.checkpoint import Checkpointer
from animax.train.writers import MetricWriter, say
from animax.viz.overlay import overlay_image

MODES = ("train", "one_step", "eval", "export")
EXPORT_DIR = "export"


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite steps."""


def release_freed_host_memory() -> None:
    """Hands the heap memory freed since the last call back to the OS (glibc's malloc_trim).

    Compiling the ViT-H train step allocates ~0.8 GiB of small blocks on the host, and building the
    initial state as much again; glibc keeps them once freed, so on a CPU they sat under the
    step's own peak (12.84 GiB RSS before, 12.23 after; docs/performance.md). On an accelerator
    it only trims host RAM. A no-op where the C library has no malloc_trim.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def load_priors(loss_config) -> dict:
    """{"shape": ShapePrior, "pose": PosePrior} for the configured files; a note for each one missing."""
    priors = {}
    for name, path, load in (("shape", loss_config.shape_prior_path, load_shape_prior),
                             ("pose", loss_config.pose_prior_path, load_pose_prior)):
        if path:
            priors[name] = load(path)
        elif loss_config.weights[f"{name}_prior"]:
            say(f"note: config.loss.{name}_prior_path is not set; the {name}-prior term is 0")
    return priors


@dataclasses.dataclass
class Trainer:
    """Everything a run builds once from its config; modes are methods."""
    config: object
    workdir: Path
    stop_after: int | None = None   # train mode: stop (and save) once this step is reached
    devices: list | None = None     # the mesh's devices (default: all of every process)

    def __post_init__(self):
        config = self.config
        self.workdir = Path(self.workdir)
        self.mesh = sharding_lib.make_mesh(config.mesh, self.devices)
        self.body = load_body(config.smal)
        self.model = build_model(config, smal=self.body)
        self.smal = {"model": self.body}
        abstract_trainable = state_lib.abstract_trainable(self.model, config)
        self.tx = optim.make_optimizer(config, abstract_trainable)
        trained = optim.trained_mask(abstract_trainable, config.trainable)
        self.abstract_state, self.shardings = state_lib.abstract_train_state(self.model, config, self.tx, self.mesh)
        self.train_step, self.eval_step, self.preview_step = step_lib.jit_steps(
            self.model, config, self.tx, self.mesh, self.shardings, load_priors(config.loss), trained)
        self.checkpointer = Checkpointer(self.workdir, config)

    # ---- state
    def restore_or_init(self, source=None):
        """The latest checkpoint's state (and `source` set to its data position), else the initial state."""
        step = self.checkpointer.latest_step()
        if step is None:
            say(f"starting from {self.config.init.kind} (no checkpoint in {self.checkpointer.directory})")
            state = state_lib.initial_state(self.model, self.config, self.tx, self.shardings)
        else:
            state, data_state = self.checkpointer.restore(self.abstract_state, self.shardings, step)
            if source is not None:
                source.set_state(data_state)
            say(f"resumed from step {step} ({self.checkpointer.directory / str(step)})")
        release_freed_host_memory()
        return state

    def compiled_train_step(self, state, batch):
        """The train step compiled for the shapes of `state` (or `abstract_state`) and `batch`,
        with the compiler's freed host memory released before the first step runs."""
        compiled = self.train_step.lower(state, batch, self.smal).compile()
        release_freed_host_memory()
        return compiled

    def batch(self, local: dict, keys) -> dict:
        keys = input_lib.step_keys(keys, local)
        keys = [*keys, *(k for k in input_lib.OPTIONAL_KEYS if k in local and k not in keys)]
        return sharding_lib.global_batch(self.mesh, {k: local[k] for k in keys})

    # ---- evaluation
    def evaluate(self, state, dataset=None) -> dict:
        """Held-out metrics of `dataset` ((name, split); default the training set's held-out split):
        weighted means over its examples (metrics without samples left out), and retrieval of the
        same family / individual by `fused_features` (labels with a positive only)."""
        totals, descriptors = {}, []
        for local in input_lib.eval_batches(self.config, self.body, dataset):
            sums, rows = jax.device_get(self.eval_step(state, self.batch(local, input_lib.EVAL_KEYS), self.smal))
            for name, (value, weight) in sums.items():
                v, w = totals.get(name, (0.0, 0.0))
                totals[name] = (v + float(value), w + float(weight))
            descriptors.append({k: v[rows["valid"] > 0] for k, v in rows.items()})
        results = {name: v / w for name, (v, w) in totals.items() if w > 0}
        features = np.concatenate([d["fused_features"] for d in descriptors])
        for label in ("family", "identity"):
            scores = metrics_lib.retrieval(features, np.concatenate([d[label] for d in descriptors]))
            results.update({f"retrieval/{label}_{k}": v for k, v in scores.items() if k != "queries"})
        return results

    def _evaluate_and_log(self, state, step, writer) -> dict:
        """Held-out metrics and the overlay grid of `state`, written at `step`."""
        metrics = self.evaluate(state)
        writer.write(step, "eval", metrics)
        grid = self.overlay_grid(state)
        if grid is not None:
            writer.image(step, "eval/overlays", grid)
        writer.flush()
        release_freed_host_memory()     # the evaluation programs' compiles
        return metrics

    def overlay_grid(self, state):
        """uint8 RGB [n * 256, 768, 3]: the first `config.eval_overlays` held-out examples, one row
        each as infer.py's overlay (crop with keypoints and head box | mesh over the crop | side
        view); None when that is 0."""
        count = self.config.get("eval_overlays", 0)
        if not count:
            return None
        local = next(iter(input_lib.eval_batches(self.config, self.body)))
        out = jax.device_get(self.preview_step(state, self.batch(local, input_lib.EVAL_KEYS), self.smal))
        rows = []
        for b in range(min(count, int(np.sum(local["valid"])))):
            body, vertices = self.body, out["vertices"][b]
            if isinstance(body, BodyModelBank):          # the row's own mesh, without padding
                m = int(local["body_model"][b])
                body, vertices = body.own(m), vertices[:body.vertex_counts[m]]
            rows.append(overlay_image(out["image"][b], vertices, out["cam_t"][b], np.asarray(body.faces),
                                      out["keypoints_2d"][b], out["head_box"][b]))
        return np.concatenate(rows, axis=0)

    # ---- modes
    def train(self) -> int:
        config = self.config
        source = input_lib.train_source(config, self.body)
        state = self.restore_or_init(source)
        start = int(jax.device_get(state.step))
        writer = MetricWriter(self.workdir, resume_step=start)
        stop = _TerminationFlag()
        window, lagged = [], None
        bar = tqdm(total=config.num_train_steps, initial=start, disable=jax.process_index() != 0,
                   dynamic_ncols=True, unit="step")
        try:
            if start == 0 and config.eval_at_start:
                self._evaluate_and_log(state, 0, writer)
            window_start, window_steps = time.perf_counter(), 0
            last = min(config.num_train_steps, self.stop_after or config.num_train_steps)
            train_step = None
            for step in range(start + 1, last + 1):   # `step`: state.step after the update
                batch = self.batch(next(source), input_lib.TRAIN_KEYS)
                train_step = train_step or self.compiled_train_step(state, batch)
                state, metrics = train_step(state, batch, self.smal)
                # Read the previous step's metrics only now, so this step is already queued.
                if lagged is not None:
                    self._check(lagged, window)
                lagged = (step, metrics)
                bar.update(1)
                window_steps += 1
                if step % config.log_every_steps == 0 or step == last:
                    self._check(lagged, window)
                    lagged = None
                    elapsed = time.perf_counter() - window_start
                    rates = {"steps_per_s": window_steps / elapsed,
                             "images_per_s": window_steps * config.batch_size / elapsed}
                    summary = _mean(window)
                    writer.write(step, "train", {**summary, **rates})
                    bar.set_postfix(loss=f"{summary.get('loss', float('nan')):.4g}",
                                    steps_s=f"{rates['steps_per_s']:.2f}", img_s=f"{rates['images_per_s']:.1f}")
                    window, window_start, window_steps = [], time.perf_counter(), 0
                eval_metrics = None
                if step % config.eval_every_steps == 0 or step == config.num_train_steps:
                    eval_start = time.perf_counter()
                    eval_metrics = self._evaluate_and_log(state, step, writer)
                    window_start += time.perf_counter() - eval_start   # rates count training only
                    bar.write(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in eval_metrics.items()))
                if eval_metrics is not None or step % config.checkpoint.every_steps == 0 or step == last:
                    self.checkpointer.save(state, source.get_state(), eval_metrics)
                if stop.requested():
                    self.checkpointer.save(state, source.get_state())
                    self.checkpointer.wait()
                    bar.write(f"SIGTERM: saved step {step} to {self.checkpointer.directory}; exiting")
                    return 0
            if lagged is not None:
                self._check(lagged, window)
        except NonFiniteError as e:
            self.checkpointer.wait()
            bar.write(f"error: {e}. Nothing was saved after the last good checkpoint "
                      f"(step {self.checkpointer.latest_step()}) in {self.checkpointer.directory}.")
            return 1
        finally:
            bar.close()
            writer.close()
            stop.restore()
            input_lib.close_train_source(source)
        self.checkpointer.wait()
        if config.checkpoint.export and last == config.num_train_steps:
            self.export(state)
        return 0

    def _check(self, lagged, window) -> None:
        """Fetches one step's metrics into the log window; raises after too many non-finite steps."""
        step, metrics = lagged
        values = jax.device_get(metrics)
        if values["skipped"]:
            say(f"step {step}: non-finite loss ({values['loss']}); update skipped "
                 f"({values['nonfinite_streak']} in a row, {values['nonfinite_total']} in all)")
            if values["nonfinite_streak"] >= self.config.max_nonfinite_steps:
                raise NonFiniteError(f"{values['nonfinite_streak']} consecutive non-finite steps (up to step {step}); "
                                     f"max_nonfinite_steps = {self.config.max_nonfinite_steps}")
        else:
            window.append(values)

    def one_step(self) -> int:
        """One optimizer step on one batch, reported term by term."""
        config = self.config
        source = input_lib.train_source(config, self.body)
        state = self.restore_or_init(source)
        start = time.perf_counter()
        state, metrics = self.train_step(state, self.batch(next(source), input_lib.TRAIN_KEYS), self.smal)
        input_lib.close_train_source(source)
        values = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        if jax.process_index() == 0:
            print(f"one step at step {int(jax.device_get(state.step)) - 1}, batch {config.batch_size} "
                  f"({seconds:.1f} s with compilation)")
            print(f"{'loss term':<18}{'value':>14}{'weight':>10}{'weighted':>14}")
            for name in sorted(k.split("/", 1)[1] for k in values if k.startswith("loss/")):
                print(f"{name:<18}{values['loss/' + name]:>14.6g}{config.loss.weights[name]:>10.4g}"
                      f"{values['weighted/' + name]:>14.6g}")
            print(f"{'total':<18}{values['loss']:>14.6g}")
            if "discriminator/loss" in values:
                print(f"{'discriminator':<18}{values['discriminator/loss']:>14.6g}  (its own loss and AdamW step)")
            print(f"{'gradient norm':<18}{'':>14}")
            for name in sorted(k for k in values if k.startswith("grad_norm/")):
                print(f"  {name.split('/', 1)[1]:<16}{values[name]:>14.6g}")
            print(f"  {'(trained, all)':<16}{values['grad_norm']:>14.6g}")
            print(f"learning rate {values['learning_rate']:.3g}; update "
                  f"{'skipped (non-finite)' if values['skipped'] else 'applied'}")
        return int(values["skipped"])

    def eval(self) -> int:
        """Every `eval_sets` dataset, printed in AniMer's eval.py layout, then one line each."""
        state = self.restore_or_init()
        step = int(jax.device_get(state.step))
        for name, split in input_lib.eval_sets(self.config):
            metrics = self.evaluate(state, (name, split))
            if jax.process_index() == 0:
                print(animer_table(f"{name}:{split}", metrics))
            say(f"eval at step {step} on {name}:{split}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return 0

    def export(self, state=None) -> int:
        """WORKDIR/export: merged weights + config.json (animax.load_model reads it)."""
        from animax.saved_model import save_model  # the model-checkpoint format lives there

        if jax.process_count() > 1:
            say("export: skipped in a multi-process run; run `train.py --mode=export` as one process")
            return 0
        state = self.restore_or_init() if state is None else state
        variables = jax.device_get({"params": state_lib.merged_params(state, state_lib.lora_scale(self.config)),
                                    "batch_stats": state.batch_stats})
        step = int(jax.device_get(state.step))
        save_model(self.workdir / EXPORT_DIR, self.config, variables,
                   {"source": "animax train", "step": step, "trainable": self.config.trainable})
        print(f"exported the weights of step {step} to {self.workdir / EXPORT_DIR}")
        return 0


def animer_table(dataset: str, metrics: dict) -> str:
    """One dataset's metrics as AniMer's eval.py prints them (3D block, then 2D); a metric the
    dataset has no samples for shows as n/a (AniMer prints 0 for the 3D ones)."""
    value = lambda key: f"{metrics[key]}" if key in metrics else "n/a"
    return "\n".join([
        f"-------- Evaluate {dataset} dataset ------------",
        "---------------- 3D metric -----------------",
        f"Avg PA-MPJPE: {value('pa_mpjpe')}",
        f"Avg PA-MPVPE: {value('pa_mpvpe')}",
        "--------------- 2D metric ------------------",
        f"AUC: {value('auc')}",
        f"PCK@0.1: {value('pck@0.1')}",
        f"PCK@0.15: {value('pck@0.15')}",
        f"-------{dataset} Dataset evaluate finish ------"])


class _TerminationFlag:
    """Turns SIGTERM into a flag the loop polls between steps (all processes agree on it)."""

    def __init__(self):
        self._raised = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self._raised = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._raised
        return bool(np.any(multihost_utils.process_allgather(np.int32(self._raised))))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _mean(records: list[dict]) -> dict:
    """Per-key mean of a window of per-step scalars (the counters: their latest value)."""
    if not records:
        return {}
    latest = ("nonfinite_total", "nonfinite_streak")
    return {k: (float(records[-1][k]) if k in latest else float(np.mean([r[k] for r in records])))
            for k in records[0] if k != "skipped"}


def run(config, workdir, mode: str = "train", stop_after: int | None = None) -> int:
    """Runs one mode (see the module docstring); returns the process exit status."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    trainer = Trainer(config, workdir, stop_after)
    try:
        return getattr(trainer, mode)()
    finally:
        trainer.checkpointer.close()
