"""Builds an animax dataset: `python -m animax.data.build NAME --manual_dir SRC --data_dir DST`.

NAME is one of horse10, animal3d, coco_keypoints, synthetic_quadruped. The source files in
SRC are read, bad data is skipped and reported, and the dataset is written to
DST/NAME/<version> in TFDS's array_record format (no TensorFlow needed). The build goes to
a temporary folder inside DST and replaces the previous version only once complete, so a
failed or interrupted build leaves the previous version as it was. A report (examples per
split, every skipped file with the reason) is printed and saved as build_report.json
beside the data. Exit status 0 when the dataset was written, 1 when it was not.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path

import tensorflow_datasets as tfds

from animax.data import BUILDERS
from animax.files import replace_folder

# Options: flag (= builder keyword) -> (type, help). Each builder takes the ones its __init__ names.
_OPTIONS = {
    "keypoint_map": (str, "keypoint map name or config path (horse10, coco_keypoints)"),
    "shuffle": (int, "horse10: which of the project's shuffles (Horse-10: 1, 2, 3; default 1), read from its "
                     "Documentation_data-*shuffle<k>.pickle or TrainTestInfo_shuffle<k>.csv"),
    "split_file": (str, "horse10: a Documentation_data-*.pickle, a TrainTestInfo_shuffle<k>.csv, or JSON "
                        "{split: [video or frame path, ...]} instead of the files the project holds"),
    "split_seed": (int, "horse10, projects without split files only: seed drawing the training horses and "
                        "frames (default: the shuffle number); not Horse-10's published split"),
    "annotations": (str, "animal3d, coco_keypoints: split=path.json[,split=path.json...] instead of "
                         "finding the files by name"),
    "split_index": (int, "animal3d, coco_keypoints: which numbered split files to use (e.g. 1 for *-split1.json)"),
    "image_dir": (str, "animal3d, coco_keypoints: folder the image paths are relative to"),
    "box_margin": (float, "horse10, coco_keypoints: margin of boxes made from keypoints, per side"),
    "family": (str, "horse10, coco_keypoints: family for every example (felidae, canidae, equidae, "
                    "bovidae, hippopotamidae)"),
    "num_train": (int, "synthetic_quadruped: training examples"),
    "num_test": (int, "synthetic_quadruped: test examples"),
    "seed": (int, "synthetic_quadruped: seed of every random choice"),
    "image_size": (str, "synthetic_quadruped: WIDTHxHEIGHT of the rendered images"),
    "pose_prior": (str, "synthetic_quadruped: SMAL pose prior .pkl to draw poses near"),
    "body_model": (str, "synthetic_quadruped: SMAL .pkl/.npz (default: the built-in stand-in)"),
}
_REPORT_LINES_PER_REASON = 20


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m animax.data.build", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(BUILDERS), help="dataset to build")
    parser.add_argument("--manual_dir", type=Path, help="folder with the source files "
                                                        "(not needed for synthetic_quadruped)")
    parser.add_argument("--data_dir", type=Path, required=True, help="where datasets are written")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    for flag, (kind, text) in _OPTIONS.items():
        parser.add_argument(f"--{flag}", type=kind, help=text)
    return parser.parse_args(argv)


def _builder_options(args, builder_cls) -> dict:
    """The options given on the command line, checked against what the builder takes."""
    accepted = inspect.signature(builder_cls.__init__).parameters
    options = {}
    for flag in _OPTIONS:
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in accepted:
            raise ValueError(f"--{flag} does not apply to {args.name}")
        if flag == "annotations":
            value = dict(item.split("=", 1) for item in value.split(","))
        elif flag == "image_size":
            value = tuple(int(v) for v in value.lower().split("x"))
        options[flag] = value
    return options


def build(name, manual_dir, data_dir, progress=True, **options) -> dict:
    """Builds dataset `name` into data_dir/name/<version> atomically; returns the report.
    Raises on failure, leaving any previous version untouched."""
    builder_cls = BUILDERS[name]
    if manual_dir is not None and not Path(manual_dir).is_dir():
        raise FileNotFoundError(f"{manual_dir}: manual_dir is not a folder")
    if manual_dir is None and builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS:
        raise ValueError(f"{name} reads its source files from --manual_dir")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tfds.disable_progress_bar()  # the builders show one bar per split, with the skip count
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.building.", dir=data_dir))
    try:
        builder = builder_cls(data_dir=str(staging), progress=progress, **options)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if manual_dir else None))
        splits = {split: info.num_examples for split, info in builder.info.splits.items()}
        if not sum(splits.values()):
            raise ValueError(f"no usable example in {manual_dir}")
        report = {
            "dataset": name, "version": str(builder.version), "manual_dir": str(manual_dir),
            "options": {k: str(v) for k, v in options.items()}, "examples": splits,
            "skipped": [dataclasses.asdict(s) for s in builder.skipped],
        }
        if getattr(builder, "sources", None):          # where a builder's splits etc. came from
            report["sources"] = dict(builder.sources)
        built = Path(builder.data_dir)
        (built / "build_report.json").write_text(json.dumps(report, indent=1))
        final = data_dir / name / built.name
        replace_folder(built, final)
        report["path"] = str(final)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def format_report(report) -> str:
    """The report as text: examples per split, skips grouped by reason with their files."""
    lines = [f"{report['dataset']} {report['version']} written to {report['path']}"]
    lines += [f"  {split}: {count} examples" for split, count in sorted(report["examples"].items())]
    lines += [f"  {what} from: {source}" for what, source in report.get("sources", {}).items()]
    skipped = report["skipped"]
    lines.append(f"  skipped: {len(skipped)}")
    by_reason = collections.defaultdict(list)
    for s in skipped:
        by_reason[s["reason"]].append(s)
    for reason, items in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"    {len(items)} x {reason}")
        lines += [f"      [{s['split']}] {s['file']}" + (f": {s['detail']}" if s["detail"] else "")
                  for s in items[:_REPORT_LINES_PER_REASON]]
        if len(items) > _REPORT_LINES_PER_REASON:
            lines.append(f"      ... {len(items) - _REPORT_LINES_PER_REASON} more in build_report.json")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        options = _builder_options(args, BUILDERS[args.name])
        report = build(args.name, args.manual_dir, args.data_dir, progress=not args.no_progress,
                       **options)
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback
        print(f"error: {args.name} not built: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
