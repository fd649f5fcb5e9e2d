"""Where metrics and messages go: a JSONL file, TensorBoard event files (tensorboardX, no
TensorFlow), a loss/metric curve PNG, and `say` for the console. Only process 0 writes; other
processes get a writer that does nothing.

    WORKDIR/metrics.jsonl      one {"step": n, "split": "train"|"eval", <name>: value, ...} per line
    WORKDIR/tensorboard/       event files, tags "<split>/<name>", and "eval/overlays": a grid of
                               validation overlays at every evaluation
    WORKDIR/curves.png         training loss and every evaluation metric against the step
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax

from animax.files import atomic_write

METRICS_FILE = "metrics.jsonl"


def say(message: str) -> None:
    """Prints once per run (process 0), not once per host."""
    if jax.process_index() == 0:
        print(message, flush=True)


CURVES_FILE = "curves.png"


class MetricWriter:
    """Writes scalars of one run; `resume_step` drops records a killed run wrote past its checkpoint."""

    def __init__(self, workdir, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.workdir = Path(workdir)
        self.path = self.workdir / METRICS_FILE
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        records = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
        from tensorboardX import SummaryWriter  # imported here: only process 0 needs it

        self.tensorboard = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, split: str, scalars: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        for name, value in values.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, int(step))

    def image(self, step: int, tag: str, pixels) -> None:
        """One uint8 RGB image [H, W, 3] to TensorBoard (the JSONL file keeps scalars only)."""
        if self.enabled:
            self.tensorboard.add_image(tag, pixels, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self.tensorboard.flush()
            plot_curves(self.path, self.workdir / CURVES_FILE)

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self.tensorboard.close()


def read_metrics(path) -> list[dict]:
    """The records of a metrics.jsonl (none if it does not exist; a torn last line is dropped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def plot_curves(metrics_path, png_path) -> None:
    """Training loss (log scale) and each evaluation metric against the step, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train" and math.isfinite(r.get("loss", math.nan))]
    evals = [r for r in records if r["split"] == "eval"]
    names = sorted({k for r in evals for k in r if k not in ("step", "split")})
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.5 * (1 + len(names)), 3.5), squeeze=False)
    ax = axes[0, 0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train])
        ax.set_yscale("log")
    ax.set(title="train loss", xlabel="step")
    for ax, name in zip(axes[0, 1:], names):
        points = [(r["step"], r[name]) for r in evals if name in r]
        ax.plot(*zip(*points), marker="o")
        ax.set(title=f"eval {name}", xlabel="step")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=80))
    plt.close(fig)
