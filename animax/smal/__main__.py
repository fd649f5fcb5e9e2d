"""Poses the body model in a walking stride and writes an OBJ: `python -m animax.smal --out x.obj`."""

import argparse
import sys

import numpy as np

from animax.geometry import axis_angle_to_rotmat
from animax.smal import JOINT_NAMES, load_smal, save_obj, smal_forward


def walking_pose(num_joints=35):
    """Local axis-angles of a mid-stride walk: legs swing about the lateral (y) axis, the tail
    droops, the head dips (signs for the stand-in's frame: x forward, y left, z up)."""
    aa = np.zeros((num_joints, 3), np.float32)
    swing = {"LLeg1": 0.35, "RLeg1": -0.35, "LLegBack1": -0.35, "RLegBack1": 0.35,
             "LLeg2": -0.3, "RLeg2": 0.2, "LLegBack2": 0.3, "RLegBack2": -0.2,
             "Neck": 0.15, "Tail1": -0.4, "Tail2": -0.15, "Tail3": -0.15}
    for name, angle in swing.items():
        aa[JOINT_NAMES.index(name), 1] = angle
    return aa


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
