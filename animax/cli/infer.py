"""Animal images in; SMAL meshes, keypoints, features and overlays out.

    python infer.py --input examples/standin_quadruped.png --out_dir out/demo
    python infer.py --input photos/ "more/*.jpg" --boxes boxes.json --ckpt ckpt/animer --out_dir out

Each animal gets OUT/<image stem>/ (OUT/<image stem>_<k>/ when its image has several
boxes, k = box index), written atomically: vertices.npy (model space), keypoints3d.npy,
keypoints2d.npy (pixels of the original image), betas.npy, pose.npy [35,3,3], cam.npy,
cam_t_full.npy, visual_features.npy, head_features.npy, fused_features.npy, mesh.obj (camera
frame: vertices + cam_t_full), overlay.png (crop | mesh over crop | side view) and result.json,
or what --outputs names.

Videos (.mp4 .mov .avi .mkv .m4v .webm) and, with --sequence, image folders are sequences:
each gets OUT/<name>/ with per-track track_<id>.npz, DeepLabCut track_<id>_DLC.h5/.csv,
track_<id>.glb, overlay.mp4 and sequence.json (animax.track.export). Frame 0's
boxes come from --bbox/--boxes (else the whole frame), later frames' from the boxes file where
it lists them (MegaDetector's video layout: "clip.mp4/frame000012.jpg"), else top-down from each
animal's predicted mesh; ids are kept by box overlap.

    python infer.py --input examples/standin_walk.mp4 --out_dir out/walk --smooth

Several species in one run: name their body models (`--smal horse=horse.pkl --smal
dog=dog.npz`) and pick one per image in the boxes file ({"a.jpg": {"boxes": [...], "smal":
"horse"}}); the images of each body model run as one group, at that model's mesh size.

A broken input costs one line on stderr naming the file; the others are still processed and
the exit code is 1.

Several processes (hosts) share one run of still images: start the same command on each, with
the same --coordinator_address and --num_processes and its own --process_id (or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Each process takes a contiguous
share of the images, about equal in animals, and runs it on its own devices into the same
--out_dir (which every host must see); process 0 joins the --arrays-file. A failure on any
process makes the exit code 1 on every process.

    python infer.py --input photos/ --boxes boxes.json --out_dir /shared/out \\
        --coordinator_address=host0:1234 --num_processes=4 --process_id=$RANK
"""

import argparse
import os
import re
import sys
from pathlib import Path

BOXES_HELP = """JSON file of boxes per image, in pixels of the EXIF-rotated image. Corner boxes:
{"horse.jpg": [[x1, y1, x2, y2], ...], ...}; COCO boxes: {"format": "xywh", "boxes":
{"horse.jpg": [[x, y, w, h], ...]}}; or a detector's output: MegaDetector batch JSON, COCO
results (with --coco-images) or a COCO dataset file. Keys are the paths as given, trailing
parts of them or file names; [] = no animal; an image missing from the file is a failure."""


NO_BOXES_NOTE = ("note: no --bbox or --boxes given: each image (and each video's first frame) is one box, the "
                 "whole picture; the model expects the animal centred and filling its box, so give boxes: "
                 "--boxes FILE takes a detector's output as it is (MegaDetector, COCO results), or draw them "
                 "in the web app (animax-app)")

# animax.predict.export.OUTPUTS, spelled out so that --help answers before the package loads.
OUTPUT_KINDS = ("arrays", "mesh", "overlay", "json")


def _outputs(value):
    kinds = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a comma-separated choice of {', '.join(OUTPUT_KINDS)}")
    return kinds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image files, folders (their images, not recursive), quoted globs or videos")
    parser.add_argument("--out_dir", required=True, help="output folder (created if needed)")
    parser.add_argument("--ckpt", help="checkpoint folder from convert_weights.py or training (default: the "
                                       "shipped demo model, trained on synthetic renders of the stand-in only)")
    parser.add_argument("--random-weights", action="store_true",
                        help="without --ckpt: random weights instead of the shipped model (for trying the pipeline)")
    parser.add_argument("--config", default=None,
                        help="config file of the random weights (implies --random-weights; default: the built-in "
                             "tiny model of configs/tiny.py); with --ckpt the checkpoint's own config is used")
    parser.add_argument("--smal", action="append", metavar="[NAME=]FILE",
                        help="SMAL body model .pkl (e.g. my_smpl_00781_4_all.pkl) or .npz (default: the "
                             "checkpoint's, else the license-free stand-in quadruped). Repeat as NAME=FILE to "
                             "offer several (FILE 'standin' is the built-in one): a boxes-file entry "
                             '{"boxes": [...], "smal": NAME} picks one per image; other images get the default')
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--bbox", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"),
                       help="one box (pixel corners) used for every input image")
    boxes.add_argument("--boxes", metavar="FILE", help=BOXES_HELP)
    parser.add_argument("--min-score", type=float,
                        help="detector outputs: keep detections scoring at least this (default: MegaDetector's "
                             "suggested threshold, animax.predict.detections.DEFAULT_MIN_SCORE)")
    parser.add_argument("--category", action="append", metavar="NAME_OR_ID",
                        help="detector outputs: keep this category (repeatable; default: MegaDetector's "
                             "'animal', every category of COCO results)")
    parser.add_argument("--coco-images", metavar="FILE",
                        help="COCO results: the annotation file whose 'images' list names the image ids")
    parser.add_argument("--outputs", default=",".join(OUTPUT_KINDS), type=_outputs,
                        help="what each animal's folder gets, comma-separated from %(default)s (default: all); "
                             "arrays alone keep an accelerator busy, the overlay costs the most")
    parser.add_argument("--arrays-file", metavar="FILE.npz",
                        help="images: every animal's arrays in one .npz (row r = animal r in input order; "
                             "'valid', 'image', 'box_index' say which) instead of .npy files in each folder")
    parser.add_argument("--sequence", action="store_true",
                        help="treat input folders as frame sequences (images in natural name order), like videos")
    parser.add_argument("--fps", type=float, help="frame rate of image-folder sequences (default: 30)")
    parser.add_argument("--smooth", type=float, nargs="?", const=1.5, default=0.0, metavar="SIGMA",
                        help="sequences: smooth joint rotations and camera over time with a Gaussian of SIGMA "
                             "frames (default when given: %(const)s) and give each track one shape")
    parser.add_argument("--fit-keypoints", metavar="FILE",
                        help="refine the network's prediction by fitting SMAL to these 2D keypoints (animax.fit): "
                             "COCO keypoint JSON for images, a DeepLabCut .h5/.csv for a video. The fit is "
                             "exported; the network's prediction stays beside it (OUT/<name>_net/, or <array>_net "
                             "in a track's npz)")
    parser.add_argument("--fit-masks", metavar="DIR",
                        help="with --fit-keypoints: binary mask PNGs (<image stem>.png, or a video frame's number)")
    parser.add_argument("--fit-keypoint-map", metavar="NAME_OR_JSON",
                        help="with --fit-keypoints: the body parts' map to SMAL's keypoints (built-in: horse10, "
                             "ap10k, animal_pose, superanimal_quadruped; or a JSON map file)")
    parser.add_argument("--batch-size", type=int,
                        help="animals per model call; the last batch is padded (default: 8 per CPU, 32 per "
                             "GPU/TPU device)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="compute dtype: float32 is exact (matmuls at HIGHEST precision, AniMer parity), "
                             "bfloat16 casts the weights once and keeps norms, softmax and geometry in float32 "
                             "(default: bfloat16 on GPU/TPU, float32 on CPU)")
    parser.add_argument("--workers", type=int, default=min(32, os.cpu_count() or 4),
                        help="threads for decoding and for export (default: the host's cores, %(default)s)")
    parser.add_argument("--reduced-decode", action="store_true",
                        help="still images: decode JPEGs at 1/2, 1/4 or 1/8 scale where every box stays at least "
                             "512 pixels wide (libjpeg's DCT scaling), several times faster for camera-trap-sized "
                             "photos; crops change by about half a grey level (docs/performance.md)")
    parser.add_argument("--coordinator_address", help="host:port of process 0, for multi-process runs")
    parser.add_argument("--num_processes", type=int, help="number of processes in a multi-process run")
    parser.add_argument("--process_id", type=int, help="this process's index in a multi-process run")
    parser.add_argument("--compile-cache", metavar="DIR",
                        help="persistent compilation cache: a later run loads the compiled model instead of "
                             "compiling it (default: ~/.cache/animax/jax; 'none' turns it off)")
    args = parser.parse_args(argv)
    args.smal, args.named_smal = _split_smal(parser, args.smal or [])
    if (args.batch_size is not None and args.batch_size < 1) or args.workers < 1:
        parser.error("--batch-size and --workers must be at least 1")
    if args.smooth < 0 or (args.fps is not None and args.fps <= 0):
        parser.error("--smooth must be at least 0 and --fps positive")
    if (args.fit_masks or args.fit_keypoint_map) and not args.fit_keypoints:
        parser.error("--fit-masks and --fit-keypoint-map need --fit-keypoints")
    return args


def _split_smal(parser, values):
    """--smal values -> (the default file or None, {name: file})."""
    plain = [v for v in values if not re.fullmatch(r"[A-Za-z0-9_-]+=.+", v)]
    if len(plain) > 1:
        parser.error("--smal: give one default FILE; name the others as NAME=FILE")
    named = dict(v.split("=", 1) for v in values if v not in plain)
    if len(named) != sum(v not in plain for v in values):
        parser.error("--smal: a NAME is given twice")
    return (plain[0] if plain else None), named


def error(message):
    print(f"error: {message}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    # The package is imported here so that --help and argument errors answer at once.
    from animax.loading import (
        DEMO_CONFIG_NAME,
        SHIPPED_MODEL_NAME,
        ModelLoadError,
        check_files,
        load_body_models,
        load_model_or_random,
        uses_random_weights,
    )
    from animax.predict.export import join_parts, part_path
    from animax.predict.inputs import BoxesFileError, BoxSource, expand_inputs, plan_jobs, share
    from animax.predict.predictor import Predictor
    from animax.predict.run import ImageRunOptions, run_inference
    from animax.runtime import (
        default_batch_size,
        default_dtype,
        enable_compile_cache,
        gather_ints,
        initialize_distributed,
    )
    from animax.track.run import SequenceRunOptions, run_sequences, split_sequences

    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)   # before the devices
    import jax

    process, processes = jax.process_index(), jax.process_count()
    enable_compile_cache(args.compile_cache)
    args.dtype = args.dtype or default_dtype()
    args.batch_size = args.batch_size or default_batch_size()

    try:
        check_files(args.ckpt, args.smal, args.config)
        for file in args.named_smal.values():
            check_files(smal=file)
        if args.boxes:
            boxes = BoxSource.read(args.boxes, args.min_score, args.category, args.coco_images)
        else:
            boxes = BoxSource() if args.bbox is None else BoxSource.one_box(args.bbox)
    except (ModelLoadError, BoxesFileError) as e:
        error(e)
        return 1
    image_specs, sequence_specs = split_sequences(args.input, args.sequence)
    if sequence_specs and processes > 1:
        error("videos and --sequence folders run in one process: start infer.py for them without "
              "--num_processes")
        return 1
    paths, failures = expand_inputs(image_specs) if image_specs else ([], [])
    jobs, unlisted = plan_jobs(paths, boxes)
    failures += unlisted
    for job in [j for j in jobs if j.body_model is not None and j.body_model not in args.named_smal]:
        failures.append(f"{job.path}: body model '{job.body_model}' (in {args.boxes}) is not given by "
                        f"--smal {job.body_model}=FILE")
        jobs.remove(job)
    # Grouped per body model: each group runs at its own mesh size, through one compile.
    groups = {}
    for job in jobs:
        groups.setdefault(job.body_model, []).append(job)
    if args.arrays_file and len(groups) > 1:
        error("--arrays-file holds one mesh size; with several body models write the per-animal folders")
        return 1
    for message in failures if process == 0 else []:      # every process finds the same ones
        error(message)
    if not jobs and not sequence_specs:
        error("no images to process")
        return 1

    if uses_random_weights(args.ckpt, args.config, args.random_weights):
        name = DEMO_CONFIG_NAME if args.config is None else Path(args.config).name
        print(f"WARNING: RANDOM weights ({name}); the outputs show "
              "the pipeline runs, not real predictions. Convert weights with convert_weights.py.", file=sys.stderr)
    elif args.ckpt is None:
        print(f"note: no --ckpt given: {SHIPPED_MODEL_NAME}", file=sys.stderr)
    try:
        loaded = load_model_or_random(args.ckpt, args.smal, args.config, args.dtype, args.random_weights)
        bodies = load_body_models({name: args.named_smal[name] for name in groups if name is not None})
    except ModelLoadError as e:
        error(e)
        return 1
    if args.bbox is None and args.boxes is None:
        print(NO_BOXES_NOTE, file=sys.stderr)
    if args.smal is None and loaded.info["body_model"]["name"] == "standin" and (None in groups or not groups):
        print("note: no --smal given, using the license-free stand-in quadruped", file=sys.stderr)
    arrays_file = args.arrays_file
    if arrays_file and processes > 1:
        arrays_file = part_path(arrays_file, process, processes)       # process 0 joins the parts below
    image_options = ImageRunOptions(Path(args.out_dir), args.outputs, arrays_file, args.workers,
                                    reduced_decode=args.reduced_decode)
    run_failures = []
    for name, group in groups.items():
        group = share(group, process, processes)
        group_model = loaded if name is None else loaded.with_body_model(bodies[name], args.named_smal[name])
        predictor = Predictor(group_model.model, group_model.variables, args.batch_size,
                              return_crops="overlay" in args.outputs)
        label = "" if name is None else f" with body model '{name}'"
        if args.fit_keypoints:
            from animax.fit.run import fit_images
            run_failures += fit_images(predictor, group, group_model.body, image_options, args.fit_keypoints,
                                       args.fit_masks, args.fit_keypoint_map, group_model.info, report=error)
            continue
        summary = run_inference(predictor, group, group_model.info, image_options)
        print(f"compiled the model{label} ({args.dtype}) for batches of {args.batch_size} in "
              f"{predictor.compile_s:.1f} s", file=sys.stderr)
        for line in summary.lines():
            print(line if name is None else f"{name}: {line}")
        run_failures += summary.failures
    run_failed = bool(run_failures)
    if processes > 1:
        failed = gather_ints(len(run_failures), "animax_infer_done")     # every part is written now
        run_failed = sum(failed) > 0               # any process's failure fails every process
        # Done with each other: the others leave now, and process 0's join cannot outlast the
        # timeout of jax.distributed's shutdown (5 minutes), which waits for every process.
        jax.distributed.shutdown()
        if process == 0:
            if args.arrays_file and not args.fit_keypoints:
                join_parts(args.arrays_file, processes)
            if run_failed:
                error(f"failures per process: {failed} (each process's lines are on its own stderr)")
    sequence_failures = 0
    if sequence_specs:
        refine = None
        if args.fit_keypoints:
            from animax.fit.run import track_refiner
            refine = track_refiner(args.fit_keypoints, args.fit_masks, args.fit_keypoint_map)
        sequence_options = SequenceRunOptions(Path(args.out_dir), args.outputs, args.smooth, args.fps,
                                              args.batch_size, refine=refine)
        sequence_failures = run_sequences(sequence_specs, loaded, boxes, sequence_options, report=error)
    return 1 if failures or run_failed or sequence_failures else 0


if __name__ == "__main__":
    sys.exit(main())
