"""animax-fit: lifts a DeepLabCut file of a video to 3D tracks, no network needed.

    animax-fit clip_DLC.h5 --video clip.mp4 --out out/clip_fit
    animax-fit CollectedData_me.csv --image-size 640 480 --keypoint-map superanimal_quadruped --out out/fit

Each individual of the file becomes one track, fitted as a whole clip (one shape, smooth joint
rotations and trajectory) from the stand-in's mean pose and a camera solved from its keypoints.
OUT/ gets (atomically, as infer.py's sequences) track_<id>.npz (fitted per-frame arrays,
`<name>_start` the closed-form start), track_<id>_DLC.h5/.csv (the fit's reprojected keypoints),
track_<id>.glb, overlay.mp4 (with --video) and sequence.json (with the loss terms per stage
under "fit"). Problems are one line each naming the file; the exit code is 1 if any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="animax-fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keypoints", help="DeepLabCut .h5/.csv (single- or multi-animal)")
    parser.add_argument("--out", required=True, help="output folder (replaced as a whole)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--video", help="the video the keypoints are of (its size, frame count, frame rate, overlay)")
    size.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="frame size without --video")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate without --video (default: %(default)s)")
    parser.add_argument("--keypoint-map", help="built-in map name or a JSON map file (default: SMAL names, else "
                                               "the built-in map that knows the most body parts)")
    parser.add_argument("--masks", metavar="DIR", help="per-frame mask PNGs (the last number in a name is its frame)")
    parser.add_argument("--smal", help="SMAL body model file (default: the stand-in quadruped)")
    parser.add_argument("--priors", nargs=2, metavar=("SHAPE_PKL", "POSE_PKL"),
                        help="AniMer's prior files (default: the stand-in's priors)")
    parser.add_argument("--per-frame", action="store_true", help="fit frames independently (no temporal terms)")
    parser.add_argument("--iterations", type=float, default=1.0, help="scale every stage's iterations")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from animax.fit.api import fit
    from animax.fit.config import default_config
    from animax.fit.inputs import InputError, read_deeplabcut, read_masks
    from animax.fit.priors import default_priors
    from animax.smal.bank import load_body_file
    from animax.track.export import write_sequence
    from animax.track.frames import SequenceError, open_sequence
    from animax.track.sequence import TrackResult

    problems = []
    try:
        body = load_body_file(args.smal or "standin")
        priors = default_priors(body, *(args.priors or (None, None)))
        sequence = None
        if args.video:
            sequence = open_sequence(args.video)
            first = next(iter(sequence.frames()))
            image_size, fps, num_frames = (first.shape[1], first.shape[0]), sequence.fps, sequence.num_frames
        else:
            image_size, fps, num_frames = tuple(args.image_size), args.fps, None
        tracks, lines = read_deeplabcut(args.keypoints, args.keypoint_map, num_frames)
        problems += lines
    except (InputError, SequenceError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    num_frames = num_frames or len(next(iter(tracks.values())))
    masks = None
    if args.masks:
        masks, lines = read_masks(args.masks, image_size, num_frames)
        problems += lines
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    names = list(tracks)
    keypoints = np.stack([tracks[n] for n in names])
    clip = not args.per_frame
    config = default_config(masks=masks is not None and any(m is not None for m in masks), clip=clip,
                            from_network=False).with_iterations(args.iterations)
    if clip:
        result = fit(body, keypoints, image_size, masks=None if masks is None else [masks] * len(names),
                     clip=True, config=config, priors=priors, progress=not args.no_progress)
        arrays, start = result.arrays, result.start
    else:       # frames as a batch of pictures
        flat = keypoints.reshape(-1, 1, *keypoints.shape[2:])
        result = fit(body, flat, image_size, masks=None if masks is None else [[m] for m in masks] * len(names),
                     config=config, priors=priors, progress=not args.no_progress)
        def reshape(a):
            return {k: v.reshape(len(names), num_frames, *v.shape[2:]) for k, v in a.items()}
        arrays, start = reshape(result.arrays), reshape(result.start)
    results = []
    for i, name in enumerate(names):
        seen = keypoints[i, :, :, 2] > 0
        frames = np.flatnonzero(seen.any(-1))
        if not len(frames):
            continue
        frames = np.arange(frames[0], frames[-1] + 1)
        track = {k: v[i, frames] for k, v in arrays.items() if k != "vertices"}
        low, high = arrays["keypoints2d"][i, frames].min(1), arrays["keypoints2d"][i, frames].max(1)
        track["box"] = np.concatenate([low, high], -1).astype(np.float32)
        track.update({f"{k}_start": v[i, frames] for k, v in start.items() if k in ("betas", "pose", "cam_t_full")})
        results.append(TrackResult(i, frames, track, image_size))
    info = {"input": str(args.keypoints), "individuals": names, "failures": problems, "body_model": body.name,
            "fit": {"clip": clip, "start": "closed-form camera, prior mean pose", "stages": result.report}}
    outputs = ("arrays", "mesh", "json") + (("overlay",) if sequence is not None else ())
    write_sequence(Path(args.out), results, body, fps, num_frames, info, outputs,
                   frames=sequence.frames() if sequence is not None else None)
    print(f"{args.keypoints}: {len(results)} tracks, {num_frames} frames -> {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
