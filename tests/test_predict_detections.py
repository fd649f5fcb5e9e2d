"""Boxes from detector outputs: MegaDetector batch JSON and COCO results, through read_boxes,
plan_jobs and infer.py."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

import infer
from animax.predict import inputs
from animax.predict.detections import BoxesFileError, FractionalBox, in_pixels


def megadetector_file(path, images):
    """A results file laid out as MegaDetector's writer lays it out (megadetector 10.0.28,
    run_detector_batch.write_results_to_file): format 1.6, its default category map with string
    ids, forward-slash relative file names sorted, detections by falling confidence, and a
    failed image with `detections: null`."""
    images = sorted(images, key=lambda im: im["file"])
    for image in images:
        if "failure" in image:
            image["detections"] = None
        else:
            image["detections"] = sorted(image["detections"], key=lambda d: -d["conf"])
    path.write_text(json.dumps({
        "images": images,
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "info": {"detection_completion_time": "2026-12-03 08:00:00", "format_version": "1.6",
                 "detector": "md_v5a.0.0.pt", "detector_metadata": {"megadetector_version": "v5a.0.0",
                                                                    "typical_detection_threshold": 0.2}}},
        indent=1))
    return path


def camera_trap(tmp_path):
    """site1/a.jpg (two animals, a person, a faint box), site2/a.jpg (same name, one animal),
    site2/b.jpg (failed); images of 200 x 100."""
    for name in ("site1/a.jpg", "site2/a.jpg", "site2/b.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((100, 200, 3), 120, np.uint8)).save(tmp_path / name)
    return megadetector_file(tmp_path / "md.json", [
        {"file": "site1/a.jpg", "detections": [
            {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4]},
            {"category": "1", "conf": 0.35, "bbox": [0.5, 0.5, 0.25, 0.5]},
            {"category": "2", "conf": 0.8, "bbox": [0.0, 0.0, 0.5, 0.5]},
            {"category": "1", "conf": 0.05, "bbox": [0.7, 0.1, 0.1, 0.1]}]},
        {"file": "site2/a.jpg", "detections": [{"category": "1", "conf": 0.6, "bbox": [0.0, 0.0, 1.0, 1.0]}]},
        {"file": "site2/b.jpg", "failure": "Failure image access"}])


def test_megadetector_boxes_are_fractions_kept_by_score_and_category(tmp_path):
    table = inputs.read_boxes(camera_trap(tmp_path))
    assert set(table) == {"site1/a.jpg", "site2/a.jpg"}          # the failed image is not listed
    site1 = table["site1/a.jpg"]
    assert all(isinstance(box, FractionalBox) for box in site1)
    np.testing.assert_allclose(site1, [(0.1, 0.2, 0.4, 0.6), (0.5, 0.5, 0.75, 1.0)])   # conf >= 0.2, animals
    np.testing.assert_allclose(in_pixels(site1[0], 200, 100), (20, 20, 80, 60))
    assert in_pixels((1, 2, 3, 4), 200, 100) == (1, 2, 3, 4)                            # pixel boxes as they are
    assert len(inputs.read_boxes(tmp_path / "md.json", min_score=0.0)["site1/a.jpg"]) == 3
    people = inputs.read_boxes(tmp_path / "md.json", categories=["person", "3"])["site1/a.jpg"]
    np.testing.assert_allclose(people, [(0.0, 0.0, 0.5, 0.5)])
    with pytest.raises(BoxesFileError, match=r"md.json: no category 'cat' \(known: 1 \(animal\)"):
        inputs.read_boxes(tmp_path / "md.json", categories=["cat"])


def test_relative_detector_paths_find_their_images(tmp_path):
    """MegaDetector names files relative to the folder it ran on; two images share a name."""
    table = inputs.read_boxes(camera_trap(tmp_path))
    paths = [tmp_path / "site1" / "a.jpg", tmp_path / "site2" / "a.jpg", tmp_path / "site2" / "b.jpg"]
    jobs, failures = inputs.plan_jobs(paths, inputs.BoxSource("md.json", table))
    assert [(job.path, job.num_animals) for job in jobs] == [(paths[0], 2), (paths[1], 1)]
    assert failures == [f"{paths[2]}: not listed in md.json"]


def test_infer_crops_megadetector_boxes_in_pixels(tmp_path):
    md = camera_trap(tmp_path)
    out = tmp_path / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = infer.main(["--input", str(tmp_path / "site1"), str(tmp_path / "site2"), "--boxes", str(md),
                           "--out_dir", str(out), "--random-weights", "--batch-size", "2"])
    assert code == 1                                              # site2/b.jpg: MegaDetector failed on it
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b.jpg: not listed in" in errors[0]
    boxes = {p.name: json.loads((p / "result.json").read_text())["box"] for p in out.iterdir()}
    assert set(boxes) == {"a_0", "a_1", "a-2"}
    np.testing.assert_allclose(boxes["a_0"], [20, 20, 80, 60])
    np.testing.assert_allclose(boxes["a-2"], [0, 0, 200, 100])


def coco_dataset(tmp_path):
    images = {"images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 100},
                         {"id": 9, "file_name": "b.jpg", "width": 200, "height": 100}],
              "categories": [{"id": 18, "name": "dog"}, {"id": 19, "name": "horse"}]}
    (tmp_path / "instances.json").write_text(json.dumps({**images, "annotations": []}))
    return images


def test_coco_results_with_the_annotation_files_images(tmp_path):
    coco_dataset(tmp_path)
    results = [{"image_id": 7, "category_id": 19, "bbox": [10, 20, 30, 40], "score": 0.9},
               {"image_id": 7, "category_id": 18, "bbox": [0, 0, 5, 5], "score": 0.5},
               {"image_id": 9, "category_id": 19, "bbox": [1, 2, 3, 4], "score": 0.1}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    table = inputs.read_boxes(tmp_path / "results.json", coco_images=tmp_path / "instances.json")
    assert table == {"a.jpg": [(10, 20, 40, 60), (0, 0, 5, 5)], "b.jpg": []}
    table = inputs.read_boxes(tmp_path / "results.json", 0.0, ["horse"], tmp_path / "instances.json")
    assert table == {"a.jpg": [(10, 20, 40, 60)], "b.jpg": [(1, 2, 4, 6)]}
    with pytest.raises(BoxesFileError, match="results.json: COCO results name images by id only"):
        inputs.read_boxes(tmp_path / "results.json")


def test_a_coco_dataset_file_is_its_own_boxes_file(tmp_path):
    images = coco_dataset(tmp_path)
    annotations = [{"id": 1, "image_id": 9, "category_id": 18, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0}]
    (tmp_path / "gt.json").write_text(json.dumps({**images, "annotations": annotations}))
    assert inputs.read_boxes(tmp_path / "gt.json") == {"a.jpg": [], "b.jpg": [(5, 5, 15, 15)]}


@pytest.mark.parametrize("name, content, problem", [
    ("md", {"images": [{"detections": []}], "detection_categories": {"1": "animal"}},
     "images[0] must be an object with a 'file'"),
    ("md", {"images": [], "detection_categories": {"2": "person"}}, "no category 'animal' (known: 2 (person))"),
    ("md", {"images": [{"file": "a.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1]}]}],
            "detection_categories": {"1": "animal"}}, "images[0].detections[0] (a.jpg) has bbox [0, 0, 1]"),
    ("md", {"images": [{"file": "a.jpg", "detections": [{"category": "1", "bbox": [0, 0, 1, 1]}]}],
            "detection_categories": {"1": "animal"}}, "has conf None, expected a number"),
    ("coco", [{"image_id": 3, "category_id": 18, "bbox": [0, 0, 1, 1], "score": 1.0}], "image_id 3, which"),
    ("coco", [{"image_id": 7, "category_id": 18, "bbox": [0, 0, 1, float("nan")], "score": 1.0}], "result 0 has bbox"),
])
def test_malformed_detector_files_name_the_file_and_the_problem(tmp_path, name, content, problem):
    coco_dataset(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps(content))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = infer.main(["--input", str(tmp_path), "--boxes", str(tmp_path / "bad.json"), "--out_dir",
                           str(tmp_path / "out"), "--coco-images", str(tmp_path / "instances.json")])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'bad.json'}: "), lines
    assert problem in lines[0]
    assert not (tmp_path / "out").exists()
