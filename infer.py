"""Animal images in; SMAL meshes, keypoints, features and overlays out (`animax-infer`).

    python infer.py --input examples/standin_quadruped.png --out_dir out/demo

The command lives in animax/cli/infer.py (`--help` for everything)."""

import sys

from animax.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
