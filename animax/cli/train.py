"""Train, evaluate or export an animax model.

    python train.py --config configs/standin.py:tiny --workdir runs/tiny [--config.key=value ...]
    python train.py --config configs/animal3d.py --workdir runs/a3d --config.init.path=ckpt/animer
    python train.py --config configs/standin.py:tiny --workdir runs/tiny --mode one_step

A run resumes from the latest checkpoint in --workdir by itself. Modes: train, one_step (one
optimizer step, printing every loss term and each module's gradient norm), eval (held-out
PCK@0.1 / PA-MPJPE of the latest checkpoint), export (LoRA-merged weights for load_model).

Several processes (hosts): give each the same --coordinator_address and --num_processes and
its own --process_id (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard, curves.")
flags.DEFINE_enum("mode", "train", ["train", "one_step", "eval", "export"], "What to do.")
flags.DEFINE_integer("stop_after_steps", None, "Train only up to this step (saving there); the schedule "
                     "still spans config.num_train_steps, so a later run continues it exactly.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax and jax log every save and restore at INFO
    # Before anything touches a device.
    from animax.runtime import initialize_distributed
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from animax.train.loop import run
    try:
        return run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.stop_after_steps)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def parse_flags(argv):
    """absl's flag parsing, with a bad `--config.key=value` (a misspelt key) in one line
    instead of a traceback."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        message = str(e.args[0] if e.args else e).replace("\\n", " ").replace("\\'", "")
        sys.exit(f"error: bad config override: {' '.join(message.strip(chr(39)).split())}")


def run():
    """The entry point of `animax-train` and train.py. absl's --help shows the docstring and the
    flags of the program's main module, which here is a wrapper: lend it this module's."""
    for flag in FLAGS.get_key_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
