"""AniMer / ViTPose PyTorch checkpoints -> animax checkpoints, safely and exactly (`animax-convert`).

    python convert_weights.py AniMer/ out/animer_ckpt

The command lives in animax/cli/convert.py (`--help` for everything)."""

import sys

from animax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
