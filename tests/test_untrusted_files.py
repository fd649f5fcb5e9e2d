"""Files a user could have been sent: reading them never runs code, never reads or allocates
without bound, and a bad one costs one line naming it (issue 31).

Every hostile file here is made by the real writer (pandas.to_hdf, PIL, PyAV, json.dumps) and
then, where needed, patched the way an attacker would. Where a file is meant to be dangerous,
the test first shows that the naive reader falls for it, so a refusal is no tautology.
"""

import contextlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from animax import untrusted
from animax.data import dlc, hdf5
from animax.data.build import main as build_main
from animax.image.io import MAX_IMAGE_PIXELS, load_image
from animax.predict import inputs
from animax.predict.detections import BoxesFileError, in_pixels
from animax.track import frames as frames_module
from animax.track.frames import SequenceError, VideoWriter, open_sequence

REPO = Path(__file__).resolve().parents[1]
PARTS = ("nose", "eye", "withers")


class Marker:
    """Pickles as a call to os.system that creates `path`: what a poisoned file carries."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def dlc_frame(rows=3, multi_animal=False, path_index=True, seed=0, nan_fraction=0.2):
    """A DeepLabCut label table as DeepLabCut builds it: MultiIndex columns scorer/bodyparts/
    coords (scorer/individuals/bodyparts/coords), the frames as one path or three index levels."""
    rng = np.random.default_rng(seed)
    if multi_animal:
        columns = pd.MultiIndex.from_product([["Byron"], ["ind1", "ind2"], PARTS, ["x", "y"]],
                                             names=["scorer", "individuals", "bodyparts", "coords"])
    else:
        columns = pd.MultiIndex.from_product([["Byron"], PARTS, ["x", "y"]], names=["scorer", "bodyparts", "coords"])
    images = [f"img{i:03d}.png" for i in range(rows)]
    index = (pd.Index([f"labeled-data/horse1/{name}" for name in images]) if path_index else
             pd.MultiIndex.from_tuples([("labeled-data", "horse1", name) for name in images]))
    values = rng.uniform(0, 500, (rows, len(columns)))
    values[rng.random(values.shape) < nan_fraction] = np.nan
    return pd.DataFrame(values, index=index, columns=columns)


def assert_same_as_pandas(path, key=None):
    expected = pd.read_hdf(path, key)
    got = hdf5.read_frame(path, key)
    assert got.index == [k if isinstance(k, tuple) else (k,) for k in expected.index]
    assert got.columns == [k if isinstance(k, tuple) else (k,) for k in expected.columns]
    assert got.column_names == tuple(expected.columns.names)
    np.testing.assert_array_equal(got.values, expected.to_numpy(np.float64))   # NaN where NaN


# --- DeepLabCut / pandas .h5 ------------------------------------------------------------------

# Every layout pandas writes; it cannot write a row MultiIndex with MultiIndex columns as a table.
LAYOUTS = [(fmt, path_index) for fmt in ("table", "fixed") for path_index in (True, False)
           if fmt == "fixed" or path_index]


@pytest.mark.parametrize("fmt, path_index", LAYOUTS)
@pytest.mark.parametrize("multi_animal", [False, True])
def test_h5_reader_gives_what_pandas_reads(tmp_path, fmt, multi_animal, path_index):
    table = dlc_frame(4, multi_animal, path_index)
    path = tmp_path / "CollectedData_Byron.h5"
    table.to_hdf(path, key="df_with_missing", format=fmt, mode="w")
    assert_same_as_pandas(path)
    labels = dlc.read_labels(path)
    assert len(labels) == 4 * (2 if multi_animal else 1)
    np.testing.assert_array_equal(labels[0].xy, table.iloc[0].to_numpy().reshape(-1, 2)[:len(PARTS)])


def test_h5_reader_reads_other_layouts_as_pandas_does(tmp_path):
    # Horse-10's Horsescale.h5 is a small frame of per-horse numbers: mixed float/int blocks.
    scales = pd.DataFrame({"scale": [1.5, np.nan, 2.25], "frames": [10, 20, 30]}, index=["h1", "h2", "h3"])
    rows = pd.DataFrame({"a": [1.0, np.nan]}, index=pd.MultiIndex.from_tuples([("labeled-data", "v", "i1"),
                                                                              ("labeled-data", "v", "i2")]))
    ints = pd.DataFrame(np.arange(6.0).reshape(2, 3), columns=[0, 1, 2], index=[5, 7])
    for i, frame in enumerate([scales, rows, ints]):
        for fmt in ("fixed", "table"):
            path = tmp_path / f"{i}_{fmt}.h5"
            frame.to_hdf(path, key="scales", format=fmt, mode="w")      # the one key, whatever its name
            assert_same_as_pandas(path)


def test_h5_key_choice(tmp_path):
    path = tmp_path / "two.h5"
    dlc_frame(2).to_hdf(path, key="other", format="table", mode="w")
    dlc_frame(3, seed=1).to_hdf(path, key="df_with_missing", format="table", mode="a")
    assert len(hdf5.read_frame(path).index) == 3                   # several: df_with_missing
    assert len(hdf5.read_frame(path, "other").index) == 2
    path = tmp_path / "ambiguous.h5"
    dlc_frame(2).to_hdf(path, key="a", mode="w")
    dlc_frame(2).to_hdf(path, key="b", mode="a")
    with pytest.raises(hdf5.HDF5Error, match=r"ambiguous.h5: 2 pandas objects \(a, b\)"):
        hdf5.read_frame(path)
    with pytest.raises(hdf5.HDF5Error, match="ambiguous.h5: no pandas object 'c'"):
        hdf5.read_frame(path, "c")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 12), multi_animal=st.booleans(), path_index=st.booleans(),
       fmt=st.sampled_from(["fixed", "table"]), nan_fraction=st.sampled_from([0.0, 0.3, 1.0]),
       seed=st.integers(0, 2**16))
def test_h5_reader_equals_pandas_on_random_frames(tmp_path, rows, multi_animal, path_index, fmt, nan_fraction, seed):
    if fmt == "table" and not path_index:
        path_index = True                       # the one layout pandas cannot write as a table
    path = tmp_path / f"r{seed}.h5"
    dlc_frame(rows, multi_animal, path_index, seed, nan_fraction).to_hdf(path, key="df_with_missing",
                                                                           format=fmt, mode="w")
    assert_same_as_pandas(path)


def poisoned_h5(path, marker):
    """A DeepLabCut label file with one object column holding a pickled os.system call: pandas
    writes it with PyTables' ObjectAtom, and pandas.read_hdf unpickles it."""
    table = dlc_frame(2).astype(object)
    table[("Byron", "nose", "x")] = [Marker(marker), 1.0]
    with pytest.warns(pd.errors.PerformanceWarning):
        table.to_hdf(path, key="df_with_missing", format="fixed", mode="w")


def naive_read_runs_code(path, marker) -> bool:
    """Whether pandas.read_hdf (in a subprocess) creates the marker: proof the file is live."""
    subprocess.run([sys.executable, "-c", f"import pandas; pandas.read_hdf({str(path)!r})"],
                   capture_output=True, timeout=120)
    found = marker.exists()
    marker.unlink(missing_ok=True)
    return found


def test_poisoned_object_column_is_refused_and_never_run(tmp_path):
    path, marker = tmp_path / "CollectedData_evil.h5", tmp_path / "MARKER"
    poisoned_h5(path, marker)
    assert naive_read_runs_code(path, marker)
    with pytest.raises(hdf5.HDF5Error) as refusal:
        hdf5.read_frame(path)
    assert str(refusal.value) == (f"{path}: /df_with_missing/block0_values: object/pickled data (object) "
                                  "is never read")
    with pytest.raises(ValueError, match="CollectedData_evil.h5: /df_with_missing/block0_values"):
        dlc.read_labels(path)
    assert not marker.exists()


def test_poisoned_attribute_is_refused_and_never_run(tmp_path):
    """PyTables unpickles any byte-string attribute ending in '.': pandas reads the column
    labels that way. A label list replaced by a pickled call is refused by name."""
    path, marker = tmp_path / "CollectedData_attr.h5", tmp_path / "MARKER"
    dlc_frame(2).to_hdf(path, key="df_with_missing", format="table", mode="w")
    with h5py.File(path, "a") as f:
        f["df_with_missing"].attrs["non_index_axes"] = np.bytes_(pickle.dumps(Marker(marker), protocol=0))
    assert naive_read_runs_code(path, marker)
    with pytest.raises(hdf5.HDF5Error, match=r"CollectedData_attr.h5: /df_with_missing attribute "
                                             r"'non_index_axes': refusing to load global 'posix.system'"):
        hdf5.read_frame(path)
    assert not marker.exists()


def test_h5_reading_only_what_the_file_holds(tmp_path):
    """Absurd declared sizes, storage outside the file and links out of it are refused before
    anything is read."""
    good = tmp_path / "good.h5"
    dlc_frame(3).to_hdf(good, key="df_with_missing", format="fixed", mode="w")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(18, dtype=np.float64).tobytes())
    cases = {
        # 20 million rows, gzip-compressed fill values: a few KB on disk.
        "bomb": (lambda g: g.create_dataset("block0_values", shape=(20_000_000, 6), dtype="f8", chunks=(4096, 6),
                                            compression="gzip"), "20000000 rows, more than the limit"),
        # Uncompressed, never written: declares 80 MB in a file of kilobytes.
        "lie": (lambda g: g.create_dataset("block0_values", shape=(10_000, 1000), dtype="f8"),
                "more than the file's"),
        # The values stored in another file (any file on the reader's disk).
        "external": (lambda g: g.create_dataset("block0_values", shape=(3, 6), dtype="f8",
                                                external=[(str(secret), 0, 144)]), "outside the file"),
        "link": (lambda g: g.__setitem__("block0_values", h5py.ExternalLink(str(secret), "/x")), "ExternalLink"),
    }
    for name, (make, problem) in cases.items():
        path = tmp_path / f"{name}.h5"
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "a") as f:
            del f["df_with_missing/block0_values"]
            make(f["df_with_missing"])
        assert path.stat().st_size < 1_000_000
        with pytest.raises(hdf5.HDF5Error, match=f"{name}.h5: /df_with_missing/block0_values.*{problem}"):
            hdf5.read_frame(path)
    with pytest.raises(hdf5.HDF5Error, match="good.h5: /df_with_missing/axis1: 3 rows, more than the limit of 2"):
        hdf5.read_frame(good, max_rows=2)
    (tmp_path / "text.h5").write_text("scorer,Byron\n")
    with pytest.raises(ValueError, match="text.h5: not a readable HDF5 file"):
        dlc.read_labels(tmp_path / "text.h5")


def test_horse10_build_with_only_a_poisoned_h5_fails_cleanly(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    video = tmp_path / "project" / "labeled-data" / "horse1"
    video.mkdir(parents=True)
    poisoned_h5(video / "CollectedData_evil.h5", marker)
    Image.new("RGB", (64, 48)).save(video / "img000.png")
    code = build_main(["horse10", "--manual_dir", str(tmp_path / "project"), "--data_dir", str(tmp_path / "data"),
                       "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "horse10 not built" in err[0] and "CollectedData_evil.h5: /df_with_missing/block0_values" in err[0]
    assert not marker.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []          # nothing half-written


# --- DeepLabCut CSV of absurd length ----------------------------------------------------------

def test_csv_of_two_million_rows_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "CollectedData_big.csv"
    with open(path, "w") as f:
        f.write("scorer,me,me\nbodyparts,nose,nose\ncoords,x,y\n")
        row = "labeled-data/v/img{:07d}.png,1.5,2.5\n"
        for start in range(0, 2_000_000, 100_000):
            f.write("".join(row.format(i) for i in range(start, start + 100_000)))
    script = textwrap.dedent(f"""
        import resource
        from animax.data import dlc
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            dlc.read_labels({str(path)!r})
        except ValueError as e:
            print(e)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.splitlines()
    assert out[0] == f"{path}: 2000003 lines, more than the limit of {dlc.MAX_ROWS} labelled rows for a label file"
    assert int(out[1]) < 20, f"peak RSS grew by {out[1]} MiB"


def test_csv_row_cap_also_holds_while_parsing(tmp_path, monkeypatch):
    """Rows separated by lone carriage returns escape the line count; the parser's cap holds."""
    path = tmp_path / "CollectedData_cr.csv"
    path.write_bytes(b"scorer,me,me\rbodyparts,nose,nose\rcoords,x,y\r" + b"a.png,1,2\r" * 50)
    monkeypatch.setattr(dlc, "MAX_ROWS", 10)
    with pytest.raises(ValueError, match="CollectedData_cr.csv: more than 10 labelled rows"):
        dlc.read_labels(path)
    path.write_bytes(b"scorer,me\nbodyparts,nose\ncoords,x\n" + b"," * (dlc.MAX_LINE_CHARS + 10) + b"\n")
    with pytest.raises(ValueError, match="CollectedData_cr.csv: a line longer than"):
        dlc.read_labels(path)


# --- images -----------------------------------------------------------------------------------

def png_declaring(path, width, height):
    """A real 8x8 PNG whose IHDR is patched to declare width x height (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    struct.pack_into(">II", data, start + 4, width, height)
    struct.pack_into(">I", data, start + 17, zlib.crc32(bytes(data[start:start + 17])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width, height, problem", [
    (100_000, 100_000, "image larger than the limit of 100000000 pixels"),      # past Pillow's own error
    (12_000, 10_000, "image of 12000x10000 pixels, more than the limit of 100000000 pixels"),   # ours only
])
def test_decompression_bomb_is_one_line_before_decoding(tmp_path, width, height, problem):
    path = png_declaring(tmp_path / "bomb.png", width, height)
    if width * height > 2 * Image.MAX_IMAGE_PIXELS:
        with pytest.raises(Image.DecompressionBombError):  # the patch took: Pillow refuses at open
            Image.open(path)
    else:
        with pytest.warns(Image.DecompressionBombWarning), Image.open(path) as im:
            assert im.size == (width, height)           # the patch took: Pillow only warns
    assert width * height > MAX_IMAGE_PIXELS
    with pytest.raises(ValueError) as refusal:
        load_image(path)
    assert str(refusal.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(refusal.value)
    # Outside pytest (which resets warning filters per test) the refusal is the only output.
    script = (f"from animax.image.io import load_image\ntry:\n    load_image({str(path)!r})\n"
              "except ValueError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.stdout == str(refusal.value) + "\n" and run.stderr == ""


def test_truncated_and_fake_images_are_one_line(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for name in ("cut.jpg", "fake.png"):
        with pytest.raises(ValueError, match=f"^{tmp_path / name}: cannot read image"):
            load_image(tmp_path / name)
    assert load_image(good).shape == (48, 64, 3)


# --- videos -----------------------------------------------------------------------------------

def raw_avi(path, frames=5):
    """A real AVI of uncompressed frames: its header alone gives the frame size and count."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "bgr24"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return bytearray(path.read_bytes())


def test_video_header_lies_cost_nothing(tmp_path):
    data = raw_avi(tmp_path / "clip.avi")
    sequence = open_sequence(tmp_path / "clip.avi")
    assert sequence.num_frames == 5 and sum(1 for _ in sequence.frames()) == 5
    # A frame count of 4 billion (avih dwTotalFrames and strh dwLength): only a progress hint.
    lying = bytearray(data)
    struct.pack_into("<I", lying, lying.index(b"avih") + 24, 0xFFFFFFF0)
    struct.pack_into("<I", lying, lying.index(b"strh") + 40, 0xFFFFFFF0)
    (tmp_path / "count.avi").write_bytes(lying)
    sequence = open_sequence(tmp_path / "count.avi")
    assert sequence.num_frames is None and sum(1 for _ in sequence.frames()) == 5
    # A frame size of 12000x10000 (BITMAPINFOHEADER): refused from the header, nothing decoded.
    lying = bytearray(data)
    struct.pack_into("<ii", lying, lying.index(b"strf") + 12, 12_000, 10_000)
    (tmp_path / "big.avi").write_bytes(lying)
    with pytest.raises(SequenceError, match=r"big.avi: the header declares 12000x10000 pixels, more than the limit"):
        open_sequence(tmp_path / "big.avi")
    # Truncated: a clean SequenceError or fewer frames, never another exception.
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    try:
        assert sum(1 for _ in open_sequence(tmp_path / "cut.avi").frames()) < 5
    except SequenceError as e:
        assert str(e).startswith(f"{tmp_path / 'cut.avi'}: ")


def test_decoded_frames_are_checked_too(tmp_path, monkeypatch):
    raw_avi(tmp_path / "clip.avi")
    sequence = open_sequence(tmp_path / "clip.avi")
    monkeypatch.setattr(frames_module, "MAX_FRAME_PIXELS", 48 * 32 - 1)
    with pytest.raises(SequenceError, match="clip.avi: frame 0 declares 48x32 pixels"):
        next(sequence.frames())


def test_a_video_cannot_pull_in_other_files(tmp_path):
    """An FFmpeg concat script named .mp4 makes a naive av.open read another file."""
    import av

    with VideoWriter(tmp_path / "other.mp4", fps=10) as writer:
        for i in range(3):
            writer.write(np.full((32, 48, 3), 60 * i, np.uint8))
    (tmp_path / "script.mp4").write_text("ffconcat version 1.0\nfile other.mp4\n")
    with av.open(str(tmp_path / "script.mp4")) as container:
        assert container.format.name == "concat"           # the naive open follows it
    with pytest.raises(SequenceError, match="script.mp4: cannot open video"):
        open_sequence(tmp_path / "script.mp4")


# --- JSON: boxes, detector outputs, annotations ------------------------------------------------

FINITE_OR_NOT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                          st.sampled_from([1e300, -1e300, 1e308, 0.0, -0.0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(box=st.lists(FINITE_OR_NOT, min_size=4, max_size=4), box_format=st.sampled_from(["xyxy", "xywh"]))
def test_hostile_box_numbers(tmp_path, box, box_format):
    """Any four numbers: a clean refusal naming the file (non-finite in the file), or the box as
    written; then either a per-box problem line or a box that can really be cropped."""
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"format": box_format, "boxes": {"a.png": [box]}}))   # writes NaN, Infinity
    try:
        (read,) = inputs.read_boxes(path)["a.png"]
    except BoxesFileError as e:
        assert str(e).startswith(f"{path}: entry 'a.png' has a box") and "finite" in str(e)
        assert not all(np.isfinite(box))
        return
    x, y, a, b = (float(v) for v in box)
    assert read == ((x, y, x + a, y + b) if box_format == "xywh" else (x, y, a, b))
    problem = inputs.box_problem(read, 640, 480)
    if problem is None:
        x1, y1, x2, y2 = read
        assert 0 < x2 - x1 <= 100 * 640 and 0 < y2 - y1 <= 100 * 640
        assert x2 > 0 and y2 > 0 and x1 < 640 and y1 < 480


@pytest.mark.parametrize("content, problem", [
    ('{"a.png": [[0, 0, 10, ' + "9" * 5000 + "]]}", "not usable JSON"),      # past Python's int digit limit
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a.png": [[0, 0, NaN, 10]]}', "expected 4 finite numbers"),
    ('{"a.png": [[0, 0, Infinity, 10]]}', "expected 4 finite numbers"),
    ('\xff\xfe{"a.png": []}', "not UTF-8"),
])
def test_hostile_json_is_one_line(tmp_path, content, problem):
    path = tmp_path / "boxes.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(BoxesFileError) as refusal:
        inputs.read_boxes(path)
    assert str(refusal.value).startswith(f"{path}: ") and problem in str(refusal.value)


def test_json_size_cap(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": [{"file": f"{i}.jpg"} for i in range(100)]}))
    monkeypatch.setattr(untrusted, "MAX_JSON_BYTES", 1000)
    with pytest.raises(BoxesFileError, match=f"{path}: boxes file of {path.stat().st_size} bytes, more than "
                                             "the limit of 1000"):
        inputs.read_boxes(path)
    with pytest.raises(ValueError, match="big.json: annotation file of"):
        untrusted.read_json(path, "annotation file")


def test_megadetector_and_coco_hostile_numbers(tmp_path):
    """Detector boxes of absurd size are read, then each costs one line at crop time."""
    md = {"images": [{"file": "a.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1e300, 1e300]},
                                                      {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, -0.5, 0.2]},
                                                      {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.5, 0.5]}]}],
          "detection_categories": {"1": "animal"}}
    (tmp_path / "md.json").write_text(json.dumps(md))
    boxes = [in_pixels(b, 640, 480) for b in inputs.read_boxes(tmp_path / "md.json")["a.jpg"]]
    assert [inputs.box_problem(b, 640, 480) for b in boxes] == [
        "more than 100 times the size of the 640x480 image", "negative width or height", None]


# --- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow         # compiles the demo model: about 50 s on 2 cores
def test_infer_on_a_folder_with_a_bomb_and_a_corrupt_image(tmp_path):
    import infer

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "good.png")
    png_declaring(folder / "bomb.png", 100_000, 100_000)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = infer.main([str(a) for a in ["--input", folder, "--out_dir", out, "--random-weights",
                                            "--batch-size", 1, "--workers", 1]])
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert code == 1
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"error: {folder / 'bomb.png'}: image larger than the limit") or \
        errors[1].startswith(f"error: {folder / 'bomb.png'}: image larger than the limit"), errors
    assert sum(line.startswith(f"error: {folder / 'corrupt.jpg'}: cannot read image") for line in errors) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good"]            # no half-written or hidden folders
    assert (out / "good" / "result.json").is_file()
