"""Horse-10's official splits and scales: the builder reads the shuffle files the release and the
benchmark publish, and refuses a Documentation pickle that would run code (issue 33, part 6).

The fixture is laid out as the release `horse10.tar.gz` is (a DeepLabCut project
`Horses-Byron-2019-05-08/`) and written the way DeepLabCut and the benchmark write it: per-video
CollectedData_Byron.csv/.h5 in labeled-data/, the combined CollectedData_Byron.h5 (row index
'labeled-data/<video>/<image>', the videos in the project's config order, not sorted) and one
Documentation_data-Horses_50shuffle<k>.pickle per shuffle ([data, trainIndices, testIndices,
trainFraction], pickled with pickle's module) in training-datasets/iteration-0/
UnaugmentedDataSet_HorsesMay8/, TrainTestInfo_shuffle<k>.csv as the benchmark's export_splits.py
writes it (an index column, then one column of frame paths per split), and Horsescale.h5 (one
'scale' row per frame of the combined table).
"""

import collections
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_fixtures import HORSE10_PARTS, _horse_points, dot_image, save

from animax.data import dlc_splits, open_source
from animax.data.build import build
from animax.data.build import main as build_main
from animax.safe_pickle import UnsafePickleError

PROJECT = "Horses-Byron-2019-05-08"
TRAINING_SET = "training-datasets/iteration-0/UnaugmentedDataSet_HorsesMay8"
# The project's config order (the combined table's row order), deliberately not sorted.
VIDEOS = ("ChestnutHorseLight", "BrownHorseinShadow", "Sample1", "Sample12", "GreyHorseNoShadowBadLight",
          "Twohorsesinvideoonemoving")
FRAMES_PER_VIDEO = 4
# Per shuffle: the training horses and which of their frames train (the rest test within-domain).
SHUFFLES = {1: {"ChestnutHorseLight": (1, 3), "Sample12": (0, 2)},
            2: {"BrownHorseinShadow": (0, 1), "GreyHorseNoShadowBadLight": (2, 3)},
            3: {"Sample1": (0, 3), "Twohorsesinvideoonemoving": (1, 2)}}
SCALES = {video: 11.5 + 3.25 * i for i, video in enumerate(VIDEOS)}
WIDTH, HEIGHT = 80, 60


class Marker:
    """Pickles as a call to os.system that creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def expected_splits(shuffle):
    """{split: set of frame paths} of a shuffle, from its definition above."""
    train, within, out = set(), set(), set()
    for video in VIDEOS:
        for i in range(FRAMES_PER_VIDEO):
            path = f"labeled-data/{video}/img{i:04d}.png"
            if video not in SHUFFLES[shuffle]:
                out.add(path)
            elif i in SHUFFLES[shuffle][video]:
                train.add(path)
            else:
                within.add(path)
    return {"train": train, "test_within": within, "test": out}


def write_release(root, documentation=True, train_test_info=False, horse_scale=True):
    """The Horse-10 release's layout with six horses of four frames. Returns the project folder."""
    project = Path(root) / PROJECT
    rng = np.random.default_rng(7)
    columns = pd.MultiIndex.from_product([["Byron"], HORSE10_PARTS, ["x", "y"]],
                                         names=["scorer", "bodyparts", "coords"])
    tables = []
    for v, video in enumerate(VIDEOS):
        rows, paths = [], []
        for i in range(FRAMES_PER_VIDEO):
            points = _horse_points(rng, WIDTH, HEIGHT)
            points[rng.choice(np.arange(2, len(points)), 3, replace=False)] = np.nan   # Nose and Eye stay labelled
            path = f"labeled-data/{video}/img{i:04d}.png"
            save(project / path, dot_image(WIDTH, HEIGHT, points, seed=10 * v + i))
            rows.append(points.ravel())
            paths.append(path)
        table = pd.DataFrame(np.stack(rows), index=paths, columns=columns)
        table.to_csv(project / f"labeled-data/{video}/CollectedData_Byron.csv")
        table.to_hdf(project / f"labeled-data/{video}/CollectedData_Byron.h5", key="df_with_missing",
                     format="table", mode="w")
        tables.append(table)
    # DeepLabCut's merge_annotateddatasets: the videos' tables concatenated in config order.
    combined = pd.concat(tables)
    folder = project / TRAINING_SET
    folder.mkdir(parents=True)
    combined.to_hdf(folder / "CollectedData_Byron.h5", key="df_with_missing", mode="w")
    combined.to_csv(folder / "CollectedData_Byron.csv")
    row = {path: i for i, path in enumerate(combined.index)}
    for shuffle in SHUFFLES:
        splits = expected_splits(shuffle)
        train = np.random.default_rng(shuffle).permutation(sorted(row[p] for p in splits["train"]))
        test = np.random.default_rng(shuffle).permutation(
            sorted(row[p] for p in splits["test_within"] | splits["test"]))
        if documentation:
            # create_training_dataset's data element: one dict per training frame with labels.
            data = []
            for i in train:
                xy = combined.iloc[i].to_numpy().reshape(-1, 2)
                joints = np.c_[np.arange(len(xy)), xy][np.isfinite(xy).all(1)].astype(int)
                data.append({"image": combined.index[i], "size": np.array([3, HEIGHT, WIDTH]), "joints": joints})
            # Shuffle 1 as numpy arrays (SplitTrials) at Python's highest protocol; shuffle 2 as lists
            # of ints (indices passed by hand) at protocol 4 (Python 3.6/3.7's highest); shuffle 3 at 2.
            indices = (train, test) if shuffle != 2 else (train.tolist(), test.tolist())
            protocol = {1: pickle.HIGHEST_PROTOCOL, 2: 4, 3: 2}[shuffle]
            with open(folder / f"Documentation_data-Horses_50shuffle{shuffle}.pickle", "wb") as f:
                pickle.dump([data, *indices, 0.5], f, protocol)
        if train_test_info:
            write_train_test_info(project / f"TrainTestInfo_shuffle{shuffle}.csv", combined.index, train, test)
    if horse_scale:
        scale = pd.DataFrame({"scale": [SCALES[p.split("/")[1]] for p in combined.index]}, index=combined.index)
        scale.to_hdf(project / "Horsescale.h5", key="df_with_missing", mode="w")
    return project


def write_train_test_info(path, frames, train, test):
    """The benchmark's export: train frames, then the test frames split by domain, one column each,
    the columns as long as the longest (the gaps written as empty cells)."""
    horses = {frames[i].split("/")[1] for i in train}
    within = [i for i in test if frames[i].split("/")[1] in horses]
    across = [i for i in test if frames[i].split("/")[1] not in horses]
    columns = [list(frames[train]), list(frames[within]), list(frames[across])]
    rows = max(map(len, columns))
    table = pd.DataFrame([c + [None] * (rows - len(c)) for c in columns],
                         index=["trainIndices", "testIndices_withinDomain", "testIndices_acrossDomain"]).T
    table.to_csv(path)


def built_frames(data_dir, report):
    """{split: {frame path: example}} of a build."""
    out = {}
    for split in report["examples"]:
        source = open_source("horse10", split, data_dir)
        out[split] = {source[i]["image_id"].decode(): source[i] for i in range(len(source))}
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release"), train_test_info=True)


@pytest.mark.parametrize("shuffle", [1, 2, 3])
def test_release_shuffles_come_from_the_documentation_pickles(release, tmp_path, shuffle):
    report = build("horse10", release, tmp_path, progress=False, shuffle=shuffle)
    frames = built_frames(tmp_path, report)
    expected = expected_splits(shuffle)
    assert {split: set(f) for split, f in frames.items()} == expected
    assert report["skipped"] == []
    folder = release / TRAINING_SET
    assert report["sources"]["splits"] == (
        f"documentation pickle {folder}/Documentation_data-Horses_50shuffle{shuffle}.pickle with rows from "
        f"{folder}/CollectedData_Byron.h5 (shuffle {shuffle}, train fraction 0.5)")
    assert report["sources"]["pck_scale"] == f"Horsescale.h5 {release}/Horsescale.h5"
    for split in frames.values():
        for path, example in split.items():
            video = path.split("/")[1]
            np.testing.assert_allclose(example["pck_scale"], SCALES[video], rtol=1e-6)
            assert int(example["identity"]) == sorted(VIDEOS).index(video)


def test_train_test_info_csv_gives_the_same_split(release, tmp_path):
    project = shutil.copytree(release, tmp_path / PROJECT)
    for path in (project / TRAINING_SET).glob("Documentation_data-*.pickle"):
        path.unlink()
    report = build("horse10", project, tmp_path / "data", progress=False, shuffle=2)
    assert {split: set(f) for split, f in built_frames(tmp_path / "data", report).items()} == expected_splits(2)
    assert report["sources"]["splits"] == f"TrainTestInfo CSV {project}/TrainTestInfo_shuffle2.csv (shuffle 2)"
    # The same file named from elsewhere, and a shuffle's Documentation pickle named directly.
    outside = shutil.copy(project / "TrainTestInfo_shuffle3.csv", tmp_path / "TrainTestInfo_shuffle3.csv")
    report = build("horse10", release, tmp_path / "data", progress=False, split_file=str(outside))
    assert {split: set(f) for split, f in built_frames(tmp_path / "data", report).items()} == expected_splits(3)
    assert report["sources"]["splits"].startswith(f"TrainTestInfo CSV {outside} ")


def test_the_csv_reader_matches_the_benchmark_columns(release):
    split = dlc_splits.read_train_test_info(release / "TrainTestInfo_shuffle1.csv")
    expected = expected_splits(1)
    assert (set(split.train), set(split.test_within), set(split.test)) == (
        expected["train"], expected["test_within"], expected["test"])
    header = (release / "TrainTestInfo_shuffle1.csv").read_text().splitlines()[0]
    assert header == ",trainIndices,testIndices_withinDomain,testIndices_acrossDomain"


def test_without_split_files_the_split_is_seed_drawn_and_the_scale_computed(release, tmp_path):
    project = shutil.copytree(release, tmp_path / PROJECT)
    shutil.rmtree(project / "training-datasets")
    for path in [project / "Horsescale.h5", *project.glob("TrainTestInfo_*.csv")]:
        path.unlink()
    report = build("horse10", project, tmp_path / "data", progress=False, shuffle=2)
    assert report["sources"]["splits"].startswith("seed-drawn (split_seed 2): no Documentation_data-*shuffle2.pickle")
    assert "not comparable with published results" in report["sources"]["splits"]
    assert report["sources"]["pck_scale"].startswith("computed nose-eye")
    frames = built_frames(tmp_path / "data", report)
    train_horses = {p.split("/")[1] for p in frames["train"]}
    assert train_horses and not train_horses & {p.split("/")[1] for p in frames["test"]}
    nose, eye = HORSE10_PARTS.index("Nose"), HORSE10_PARTS.index("Eye")
    for split in frames.values():
        for path, example in split.items():
            points = example["source_keypoints"]
            assert example["pck_scale"] > 0 and not np.isclose(example["pck_scale"], SCALES[path.split("/")[1]])
            assert points[nose, 2] and points[eye, 2]


def test_horsescale_frames_it_lacks_fall_back_per_horse(release, tmp_path):
    project = shutil.copytree(release, tmp_path / PROJECT)
    index = pd.Index([f"labeled-data/{v}/img0000.png" for v in VIDEOS[:-1]])   # one row per horse, one horse missing
    pd.DataFrame({"scale": [SCALES[v] for v in VIDEOS[:-1]]}, index=index).to_hdf(
        project / "Horsescale.h5", key="df_with_missing", mode="w")
    report = build("horse10", project, tmp_path / "data", progress=False)
    assert report["sources"]["pck_scale"].endswith(f"computed nose-eye for the horses it lacks: {VIDEOS[-1]}")
    for split in built_frames(tmp_path / "data", report).values():
        for path, example in split.items():
            video = path.split("/")[1]
            assert np.isclose(example["pck_scale"], SCALES[video]) == (video != VIDEOS[-1])


def test_poisoned_documentation_pickle_is_refused_and_never_run(release, tmp_path, capsys):
    project = shutil.copytree(release, tmp_path / PROJECT)
    path, marker = project / TRAINING_SET / "Documentation_data-Horses_50shuffle1.pickle", tmp_path / "MARKER"
    with open(path, "rb") as f:
        data, train, test, fraction = pickle.load(f)          # our own fixture: safe to load here
    data[0]["joints"] = Marker(marker)
    with open(path, "wb") as f:
        pickle.dump([data, train, test, fraction], f, pickle.HIGHEST_PROTOCOL)
    # The file is live: DeepLabCut's own reader (pickle.load) runs the command.
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"], timeout=60)
    assert marker.exists()
    marker.unlink()
    code = build_main(["horse10", "--manual_dir", str(project), "--data_dir", str(tmp_path / "data"), "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0] == (f"error: horse10 not built: UnsafePickleError: {path}: refusing to load global 'posix.system' "
                      "(not on the allow-list)")
    assert not marker.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []
    path.write_bytes(pickle.dumps([[collections.OrderedDict()], [0], [1], 0.5]))
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):  # harmless, but not DeepLabCut's
        dlc_splits.read_documentation(path)


def test_documentation_pickle_checks(release, tmp_path):
    folder = release / TRAINING_SET
    documentation = folder / "Documentation_data-Horses_50shuffle1.pickle"
    data, train, test, fraction = dlc_splits.read_documentation(documentation)
    assert fraction == 0.5 and train.dtype == np.int64 and len(data) == len(train)
    # A combined table whose rows are in another order is not the one the indices count.
    combined = pd.read_hdf(folder / "CollectedData_Byron.h5")      # our own fixture
    combined.sort_index().to_hdf(tmp_path / "CollectedData_Byron.h5", key="df_with_missing", mode="w")
    with pytest.raises(ValueError, match="not at any of its trainIndices.*not the ones the split was made on"):
        dlc_splits.documentation_split(documentation, tmp_path / "CollectedData_Byron.h5")
    for content, problem in [({"a": 1}, "not DeepLabCut's Documentation structure"),
                             ([[], [0], [999], 0.5], "testIndices has row 999"),
                             ([[], [0, 1], [1], 0.5], "share rows"),
                             ([[], ["0"], [1], 0.5], "trainIndices holds something other than integers")]:
        bad = tmp_path / "Documentation_data-Horses_50shuffle1.pickle"
        bad.write_bytes(pickle.dumps(content))
        with pytest.raises(ValueError, match=problem):
            dlc_splits.documentation_split(bad, folder / "CollectedData_Byron.h5")
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=f"{bad}: refused: not a valid pickle"):
        dlc_splits.read_documentation(bad)


def test_split_seed_or_ambiguity_on_a_project_with_split_files_is_an_error(release, tmp_path):
    with pytest.raises(ValueError, match="split_seed applies only to projects without split files"):
        build("horse10", release, tmp_path, progress=False, split_seed=3)
    project = shutil.copytree(release, tmp_path / PROJECT)
    other = project / "training-datasets/iteration-1/UnaugmentedDataSet_HorsesMay8"
    shutil.copytree(project / TRAINING_SET, other)
    with pytest.raises(ValueError, match="several split files for shuffle 1.*name one with --split_file"):
        build("horse10", project, tmp_path, progress=False)
    report = build("horse10", project, tmp_path, progress=False,
                   split_file=str(other / "Documentation_data-Horses_50shuffle1.pickle"))
    assert {split: set(f) for split, f in built_frames(tmp_path, report).items()} == expected_splits(1)
    assert not (project / TRAINING_SET / "Documentation_data-Horses_50shuffle10.pickle").exists()
    assert dlc_splits.find_documentation(project, 10) == []         # shuffle1 does not match shuffle10


def test_frames_named_without_labels_and_labels_in_no_split_are_reported(release, tmp_path):
    project = shutil.copytree(release, tmp_path / PROJECT)
    shutil.rmtree(project / "training-datasets")
    text = (project / "TrainTestInfo_shuffle1.csv").read_text().splitlines()
    gone = text[1].split(",")[1]                                # the first train frame
    text[1] = text[1].replace(gone, "labeled-data/ChestnutHorseLight/img9999.png")
    (project / "TrainTestInfo_shuffle1.csv").write_text("\n".join(text) + "\n")
    report = build("horse10", project, tmp_path / "data", progress=False)
    assert sorted((s["split"], s["file"], s["reason"]) for s in report["skipped"]) == [
        ("all", gone, "frame in no split"),
        ("train", "labeled-data/ChestnutHorseLight/img9999.png", "frame of the split without labels")]
    assert report["examples"]["train"] == len(expected_splits(1)["train"]) - 1
