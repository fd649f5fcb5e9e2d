"""Converts AniMer / ViTPose PyTorch checkpoints into animax checkpoints, safely and exactly.

    python convert_weights.py AniMer/ out/animer_ckpt              # AniMer's release folder
    python convert_weights.py AniMer.ckpt out/animer_ckpt          # a Lightning checkpoint
    python convert_weights.py backbone.pth out/vitpose_backbone    # ViTPose backbone only
    python convert_weights.py --to-torch out/animer_ckpt animer_state_dict.pth

AniMer's release folder holds checkpoints/checkpoint.ckpt and .hydra/config.yaml; the model
config comes from that YAML (as AniMer's load_amr reads it) or, without one, from the
checkpoint's pickled hyper-parameters, and any disagreement between the two is printed.
Checkpoints are read without torch and without running code: any pickled global outside
an allow-list (tensors, containers, omegaconf/yacs/Lightning config objects, loaded as plain
data) is refused. Only the mapped weights are read; optimizer state is never loaded. A table
accounts for every key; anything unexpected (unknown keys, shape mismatches, missing weights
other than the new animax modules) fails the conversion unless --allow-partial is given.
"""

import argparse
import ctypes
import resource
import sys
import time
from pathlib import Path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint (.ckpt/.pth) or AniMer's release folder "
                             "(checkpoints/checkpoint.ckpt + .hydra/config.yaml); "
                             "with --to-torch an animax checkpoint dir")
    parser.add_argument("out", help="output animax checkpoint directory (or .pth file with --to-torch)")
    parser.add_argument("--to-torch", action="store_true",
                        help="write an AniMer-named PyTorch state dict from an animax checkpoint")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the checkpoint even when keys are unknown, mismatched or missing")
    parser.add_argument("--smal", default=None, help="SMAL file recorded as the checkpoint's body model")
    return parser.parse_args(argv)


def to_animax(args) -> int:
    from animax.convert.animer import ConversionError, convert
    from animax.saved_model import save_model

    start = time.perf_counter()
    config, variables, report = convert(args.src)
    print(report.table())
    if report.problems and not args.allow_partial:
        raise ConversionError(f"{args.src}: {len(report.problems)} problem(s) above; nothing written "
                              f"(--allow-partial writes anyway)")
    config.smal = args.smal
    info = {"source": str(Path(args.src).resolve()), "source_kind": report.source_kind,
            "model_config_source": report.config_source,
            "mapped": len(report.mapped), "missing": [p for p, _, _ in report.missing]}
    save_model(args.out, config, variables, info)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s (peak RSS {peak_gib:.2f} GiB)")
    return 0


def to_torch(args) -> int:
    import numpy as np
    import torch

    from animax.convert.animer import to_torch_state_dict
    from animax.files import atomic_write
    from animax.saved_model import DISCRIMINATOR, load_discriminator, load_model, read_config

    config, _ = read_config(args.src)
    _, variables = load_model(args.src)
    discriminator = load_discriminator(args.src)
    if discriminator is not None:
        variables = {**variables, DISCRIMINATOR: discriminator}
    state = {k: torch.from_numpy(np.array(v)) for k, v in to_torch_state_dict(config, variables).items()}
    atomic_write(args.out, lambda tmp: torch.save({"state_dict": state}, tmp))
    print(f"wrote {args.out} ({len(state)} tensors)")
    return 0


def _release_freed_tensors_to_os():
    """Pins glibc's mmap threshold at 1 MiB. Left dynamic, it rises after the first large frees
    and later tensor buffers come from the heap, which never shrinks: peak memory would grow
    by a third over one copy of the weights."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv=None) -> int:
    args = parse_args(argv)
    _release_freed_tensors_to_os()
    from animax.safe_pickle import UnsafePickleError
    from animax.untrusted import RefusedFileError
    try:
        return to_torch(args) if args.to_torch else to_animax(args)
    except (OSError, ValueError, RefusedFileError, UnsafePickleError) as e:
        # Refused files (UnsafePickleError, torch_reader.UnsafeCheckpointError: both ValueErrors)
        # give one line naming the file; no traceback.
        message = " ".join(str(e).splitlines()) if isinstance(e, RefusedFileError) else str(e)
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
