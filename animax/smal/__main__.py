"""Poses the body model in a walking stride and writes an OBJ: `python -m animax.smal --out x.obj`."""

import argparse
import sys

import numpy as np

from animax.geometry import axis_angle_to_rotmat
from animax.smal import load_smal, save_obj, smal_forward
from animax.smal.standin import walking_pose


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/standin_walk.obj", help="OBJ file to write")
    parser.add_argument("--smal", default=None,
                        help="SMAL .pkl/.npz file (default: the built-in stand-in quadruped)")
    args = parser.parse_args(argv)
    if args.smal is None:
        print("note: no --smal given, using the license-free stand-in quadruped", file=sys.stderr)
    try:
        model = load_smal(args.smal)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    pose = axis_angle_to_rotmat(walking_pose(model.num_joints))[None]
    out = smal_forward(model, np.zeros((1, model.num_betas), np.float32), pose)
    save_obj(args.out, out["vertices"][0], model.faces)
    print(f"wrote {args.out} ({model.num_vertices} vertices, {model.faces.shape[0]} faces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
