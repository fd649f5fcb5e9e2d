"""Training: losses, metrics, optimizer, LoRA, sharding, state, steps, checkpoints, the loop.

`train.py` is the command line; `animax.train.loop.run(config, workdir, mode)` the entry point.
"""
