"""Input planning (animax.predict.inputs): boxes file layouts, jobs and box problems; malformed
boxes files fail before any model work."""

import json
from pathlib import Path

import pytest
from PIL import Image

from animax.predict import inputs
from helpers.images import smooth_image
from helpers.infer_cli import error_lines, run_cli


def test_boxes_file_layouts_and_job_planning(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"a.jpg": [[1, 2, 3, 4]], "b.jpg": []}))
    assert inputs.read_boxes(path) == {"a.jpg": [(1, 2, 3, 4)], "b.jpg": []}
    path.write_text(json.dumps({"format": "xyxy", "boxes": {"a.jpg": [[1, 2, 3, 4]]}}))
    assert inputs.read_boxes(path) == {"a.jpg": [(1, 2, 3, 4)]}
    path.write_text(json.dumps({"format": "xywh", "boxes": {"x/a.jpg": [[1, 2, 3, 4]]}}))
    assert inputs.read_boxes(path) == {"x/a.jpg": [(1, 2, 4, 6)]}
    paths = [Path("x/a.jpg"), Path("y/a.png"), Path("c.jpg")]
    jobs, failures = inputs.plan_jobs(paths, inputs.BoxSource("b.json", {"x/a.jpg": [(0, 0, 5, 5), (1, 1, 4, 4)],
                                                                         "a.png": []}))
    assert [(j.name, j.num_animals) for j in jobs] == [("a", 2), ("a-2", 0)]
    assert [jobs[0].folder_name(k) for k in (0, 1)] == ["a_0", "a_1"]
    assert failures == ["c.jpg: not listed in b.json"]
    jobs, _ = inputs.plan_jobs(paths[:1], inputs.BoxSource.one_box((0, 0, 5, 5)))
    assert jobs[0].boxes == ((0, 0, 5, 5),) and jobs[0].folder_name(0) == "a"
    assert inputs.box_problem((0, 0, 5, 5), 10, 10) is None
    assert inputs.box_problem((-5, -5, 2, 2), 10, 10) is None       # sticks out, still overlaps
    assert inputs.box_problem((5, 0, 5, 9), 10, 10) == "zero area"
    assert inputs.box_problem((10, 0, 20, 9), 10, 10) == "outside the 10x10 image"


# Failures found before any model work: one line, exit 1, nothing written.
@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[[0, 0, 10, 10]]", "expected a JSON object"),
    ('{"a.png": [[0, 0, 10]]}', "expected 4 finite numbers"),
    ('{"a.png": [0, 0, 10, 10]}', "must be a list of boxes"),
    ('{"format": "cxcywh", "boxes": {}}', "'format'"),
    ('{"a.png": {"boxes": [[0, 0, 10, 10]], "species": "dog"}}', "an object with 'boxes'"),
])
def test_malformed_boxes_file(tmp_path, content, problem):
    Image.fromarray(smooth_image(20, 20)).save(tmp_path / "a.png")
    (tmp_path / "boxes.json").write_text(content)
    code, lines = run_cli(["--input", tmp_path / "a.png", "--boxes", tmp_path / "boxes.json",
                           "--out_dir", tmp_path / "out"])
    assert code == 1
    assert len(error_lines(lines)) == 1 and "boxes.json" in lines[-1] and problem in lines[-1], lines
    assert not (tmp_path / "out").exists()
