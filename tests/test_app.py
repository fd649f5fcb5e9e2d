"""The web app's parts without a browser: boxes as text and clicks, upload checks (images,
clips, zips of frames, boxes files) and how a boxes file's entries reach the photos. The page
itself is driven in a real browser by test_app_browser.py."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animax.app.boxes import BoxTextError, add_corner, box_line, draw_boxes, parse_box_text
from animax.app.engine import clip_frame_boxes, photo_boxes
from animax.app.uploads import Limits, UploadError, extract_frames, open_clip, read_boxes_file, read_photos

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "standin_quadruped.png"
WALK = REPO / "examples" / "standin_walk.mp4"
LIMITS = Limits()


def test_box_text_names_photos_and_checks_each_line():
    sizes = {"a.jpg": (100, 80), "b.png": (50, 50)}
    boxes = parse_box_text("a.jpg: 1 2 30 40\n# a comment\n\nb.png: 0, 0, 10, 10\na.jpg: 5 5 9 9", sizes, sizes)
    assert boxes == {"a.jpg": [(1, 2, 30, 40), (5, 5, 9, 9)], "b.png": [(0, 0, 10, 10)]}
    assert parse_box_text("1 2 3 4", ["only.png"]) == {"only.png": [(1, 2, 3, 4)]}     # one photo: no name needed
    for text, problem in [("1 2 3 4", "name the photo"), ("c.jpg: 1 2 3 4", "no photo named 'c.jpg'"),
                          ("a.jpg: 1 2 3", "four numbers"), ("a.jpg: 1 2 x 4", "four numbers"),
                          ("a.jpg: 1 2 nan 4", "four numbers"), ("a.jpg: 200 10 300 20", "outside the 100x80 image"),
                          ("a.jpg: 5 5 5 9", "zero area")]:
        with pytest.raises(BoxTextError, match=problem):
            parse_box_text(text, sizes, sizes)
    with pytest.raises(BoxTextError, match="line 2 "):
        parse_box_text("a.jpg: 1 1 5 5\nb.png: 1", sizes)


def test_two_clicks_make_a_box_whatever_their_order():
    text, pending = add_corner("", (300, 40), None)
    assert (text, pending) == ("", (300, 40))
    text, pending = add_corner(text, (100.4, 200.6), pending, "a.jpg")
    assert (text, pending) == ("a.jpg: 100 40 300 201", None)
    text, pending = add_corner(text, (7, 7), None)
    assert add_corner(text, (7, 7), pending) == (text, (7, 7))        # a double click starts again
    assert add_corner(text, (20, 30), (7, 7))[0].splitlines() == ["a.jpg: 100 40 300 201", "7 7 20 30"]
    assert box_line((1.2, 2.5, 3.7, 4.0)) == "1 2 4 4"


def test_boxes_are_drawn_at_the_pictures_own_size():
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = draw_boxes(image, [(10, 10, 50, 40)], pending=(70, 50))
    assert drawn.shape == image.shape and drawn[10, 30].any() and drawn[50, 70].any() and not drawn[25, 30].any()
    assert not image.any()                                                 # a copy


def test_photos_are_read_as_infer_py_reads_them_and_bad_ones_named(tmp_path):
    photos = read_photos([EXAMPLE], LIMITS)
    path, image = photos["standin_quadruped.png"]
    assert path == EXAMPLE and image.shape == (480, 640, 3) and image.dtype == np.uint8
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(UploadError, match=r"^notes.png: not an image this app can read") as error:
        read_photos([tmp_path / "notes.png"], LIMITS)
    assert str(tmp_path) not in str(error.value)                          # no server paths in messages
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    with pytest.raises(UploadError, match="two photos have this name"):
        read_photos([EXAMPLE, twin / EXAMPLE.name], LIMITS)
    with pytest.raises(UploadError, match="upload one or more photos"):
        read_photos([], LIMITS)
    with pytest.raises(UploadError, match="at most 1 per run"):
        read_photos([EXAMPLE, tmp_path / "x.png"], Limits(max_photos=1))
    with pytest.raises(UploadError, match="over the 0.1-megapixel limit"):
        read_photos([EXAMPLE], Limits(max_megapixels=0.1))
    (tmp_path / "big.png").write_bytes(b"\0" * (2**20 + 1))
    with pytest.raises(UploadError, match="larger than the 1 MB upload limit"):
        read_photos([tmp_path / "big.png"], Limits(max_file_mb=1))


def test_a_boxes_file_reaches_photos_by_name(tmp_path):
    photos = read_photos([EXAMPLE], LIMITS)
    megadetector = {"images": [{"file": "site1/standin_quadruped.png",
                                "detections": [{"category": "1", "conf": 0.9, "bbox": [0.25, 0.25, 0.5, 0.5]},
                                               {"category": "1", "conf": 0.05, "bbox": [0, 0, 0.1, 0.1]}]}],
                    "detection_categories": {"1": "animal"}}
    (tmp_path / "md.json").write_text(json.dumps(megadetector))
    boxes = photo_boxes(photos, {}, read_boxes_file(tmp_path / "md.json"))
    assert boxes == {"standin_quadruped.png": [(160.0, 120.0, 480.0, 360.0)]}   # fractions -> pixels, scored
    # Drawn boxes win over the file's; with neither, the whole picture (None).
    drawn = {"standin_quadruped.png": [(1.0, 2.0, 300.0, 400.0)]}
    assert photo_boxes(photos, drawn, read_boxes_file(tmp_path / "md.json")) == drawn
    assert photo_boxes(photos, {}, None) == {"standin_quadruped.png": None}
    (tmp_path / "other.json").write_text(json.dumps({"other.jpg": [[0, 0, 5, 5]]}))
    with pytest.raises(UploadError, match="^standin_quadruped.png: not listed in other.json"):
        photo_boxes(photos, {}, read_boxes_file(tmp_path / "other.json"))
    (tmp_path / "far.json").write_text(json.dumps({"standin_quadruped.png": [[700, 10, 800, 50]]}))
    with pytest.raises(UploadError, match=r"box of far.json 0 .*outside the 640x480 image"):
        photo_boxes(photos, {}, read_boxes_file(tmp_path / "far.json"))
    (tmp_path / "twice.json").write_text(json.dumps({"a/standin_quadruped.png": [[0, 0, 5, 5]],
                                                     "b/standin_quadruped.png": [[1, 1, 5, 5]]}))
    with pytest.raises(UploadError, match="lists several images of this name"):
        photo_boxes(photos, {}, read_boxes_file(tmp_path / "twice.json"))
    for name, content, problem in [("bad.json", "{not json", "^bad.json: not valid JSON"),
                                   ("list.json", '{"a.png": 3}', "must be a list of boxes"),
                                   ("boxes.txt", "{}", "a boxes file is JSON")]:
        (tmp_path / name).write_text(content)
        with pytest.raises(UploadError, match=problem):
            read_boxes_file(tmp_path / name)


def test_clips_open_with_their_first_frame_and_bad_ones_are_named(tmp_path):
    sequence, first = open_clip(WALK, tmp_path, LIMITS)
    assert sequence.num_frames == 24 and first.ndim == 3
    with pytest.raises(UploadError, match="24 frames, over the limit of 10"):
        open_clip(WALK, tmp_path, Limits(max_frames=10))
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(UploadError, match="^broken.mp4: cannot open video"):
        open_clip(tmp_path / "broken.mp4", tmp_path, LIMITS)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UploadError, match="^notes.txt: not a clip"):
        open_clip(tmp_path / "notes.txt", tmp_path, LIMITS)
    # A boxes file in MegaDetector's video layout (frame keys under the clip's name).
    (tmp_path / "video.json").write_text(json.dumps({"standin_walk.mp4/frame000003.jpg": [[1, 2, 30, 40]]}))
    assert clip_frame_boxes(sequence, read_boxes_file(tmp_path / "video.json")) == {3: [(1.0, 2.0, 30.0, 40.0)]}
    (tmp_path / "none.json").write_text(json.dumps({"other.mp4": [[1, 2, 30, 40]]}))
    with pytest.raises(UploadError, match="standin_walk.mp4: not listed in none.json"):
        clip_frame_boxes(sequence, read_boxes_file(tmp_path / "none.json"))


def frames_zip(path, names, image=None):
    image = np.zeros((20, 30, 3), np.uint8) if image is None else image
    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, "PNG")
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, encoded.getvalue())
    return path


def test_a_zip_of_frames_is_unpacked_by_file_name_only(tmp_path):
    names = ["clip/f10.png", "clip/f2.png", "../../escape/f1.png", "/abs/f3.png", "clip/.hidden.png"]
    archive = frames_zip(tmp_path / "frames.zip", names)
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("clip/readme.txt", "not a frame")
    work = tmp_path / "work"
    work.mkdir()
    sequence, first = open_clip(archive, work, LIMITS)
    assert [f.name for f in sequence.files] == ["f1.png", "f2.png", "f3.png", "f10.png"]     # natural order
    assert sorted(p.name for p in (work / "frames").iterdir()) == ["f1.png", "f10.png", "f2.png", "f3.png"]
    assert not (tmp_path / "escape").exists() and first.shape == (20, 30, 3)
    # Frames named in a boxes file by their names.
    (tmp_path / "b.json").write_text(json.dumps({"f2.png": [[1, 1, 9, 9]]}))
    assert clip_frame_boxes(sequence, read_boxes_file(tmp_path / "b.json")) == {1: [(1.0, 1.0, 9.0, 9.0)]}


@pytest.mark.parametrize("case, problem", [("empty", "holds no image files"), ("many", "over the limit of 3"),
                                           ("twins", "same file name"), ("bomb", "unpack to over 1 MB"),
                                           ("corrupt", "not a readable zip")])
def test_bad_zips_are_refused_before_unpacking(tmp_path, case, problem):
    path = tmp_path / "x.zip"
    if case == "empty":
        frames_zip(path, [])
    elif case == "many":
        frames_zip(path, [f"f{i}.png" for i in range(4)])
    elif case == "twins":
        frames_zip(path, ["a/f.png", "b/f.png"])
    elif case == "bomb":                      # compresses to almost nothing, unpacks past the limit
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("f.png", bytes(2 * 2**20))
    else:
        path.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UploadError, match=problem):
        extract_frames(path, tmp_path / "out", Limits(max_frames=3, max_zip_mb=1))


def test_app_command_line_help_answers_without_loading_a_model():
    done = subprocess.run([sys.executable, "-m", "animax.app", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0 and "--ckpt" in done.stdout and "127.0.0.1" in done.stdout
    done = subprocess.run([sys.executable, "-m", "animax.app", "--max-frames", "0"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 2 and "must be positive" in done.stderr
