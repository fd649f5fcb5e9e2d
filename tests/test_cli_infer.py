"""infer.py end to end on the tiny config (random weights) over generated images, including
awkward formats and broken files (the batch run is conftest's `batch_run` fixture).

The model is initialised once (animax.loading caches it) and each CLI run compiles once, so the
CLI runs in-process except for one subprocess check.
"""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

import infer
from animax.predict import export
from animax.predict.predictor import prepare
from animax.smal import load_smal, save_smal
from animax.smal.io import smal_model_from_arrays
from animax.viz import overlay
from configs import tiny
from helpers.images import smooth_image
from helpers.infer_cli import BATCH, EXAMPLE, EXIF_BOX, EXIF_UPRIGHT, MULTI_BOXES_XYWH, REPO, error_lines, run_cli
from helpers.nn_reference import f32_tol, pipeline_steps, rel_err
from helpers.shared_data import SHARED_DATA
from helpers.smal_files import random_smal_arrays

HORSE = SHARED_DATA / "animer_examples" / "000000015956_horse.png"
EXPORTED = ["rgb", "plain", "grey", "rgba", "palette", "cmyk", "deep", "exif", "multi_0", "multi_1", "g1", "g2",
            "standin_quadruped"]


def test_run_reports_each_failure_in_one_line_and_exits_nonzero(batch_run):
    assert batch_run.code == 1
    errors = error_lines(batch_run.lines)
    expected = ["truncated.jpg", "text.jpg", "missing.jpg", "empty", "multi.png: box 2", "multi.png: box 3"]
    assert len(errors) == len(expected), batch_run.lines
    for name in expected:
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert "zero area" in next(line for line in errors if "box 2" in line)
    assert "outside the 200x150 image" in next(line for line in errors if "box 3" in line)
    assert not any("Traceback" in line for line in batch_run.lines)
    assert any("RANDOM weights" in line for line in batch_run.lines)


def test_every_animal_gets_a_complete_folder_and_failures_none(batch_run):
    folders = sorted(p.name for p in batch_run.out.iterdir())
    assert folders == sorted(EXPORTED)                # no failed animal, no stale output, no temp folder
    body = load_smal()
    for name in EXPORTED:
        folder = batch_run.out / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(export.FILES)
        info = json.loads((folder / "result.json").read_text())
        for array, shape in info["arrays"].items():
            values = np.load(folder / f"{array}.npy")
            assert list(values.shape) == shape and np.isfinite(values).all(), (name, array)
        assert info["arrays"]["vertices"] == [body.num_vertices, 3] and info["arrays"]["pose"] == [35, 3, 3]
        assert info["body_model"]["name"] == "standin" and info["checkpoint"] is None
        assert set(info["timings_s"]) == {"decode", "preprocess", "model", "overlay"}
        mesh = trimesh.load(folder / "mesh.obj", process=False)
        camera_frame = np.load(folder / "vertices.npy") + np.load(folder / "cam_t_full.npy")
        np.testing.assert_allclose(mesh.vertices, camera_frame, rtol=0, atol=1e-8)  # OBJ keeps 8 decimals: +-5e-9
        assert Image.open(folder / "overlay.png").size == (3 * 256, 256)


def test_boxes_file_boxes_reach_the_outputs(batch_run):
    for k in (0, 1):
        x, y, w, h = MULTI_BOXES_XYWH[k]
        info = json.loads((batch_run.out / f"multi_{k}" / "result.json").read_text())
        assert info["box"] == [x, y, x + w, y + h] and info["box_index"] == k
        assert info["box_size"] == max(w, h) and info["image_size"] == [200, 150]


def test_exif_orientation_is_honoured(batch_run):
    info = json.loads((batch_run.out / "exif" / "result.json").read_text())
    height, width = EXIF_UPRIGHT
    assert info["image_size"] == [width, height]
    # The crop panel is the box cut from the upright picture, not from the stored one.
    crop_panel = np.asarray(Image.open(batch_run.out / "exif" / "overlay.png"))[:, :256].astype(np.float64)
    expected = overlay.crop_to_uint8(prepare(batch_run.upright, EXIF_BOX).crop)
    unrotated = overlay.crop_to_uint8(prepare(np.rot90(batch_run.upright), EXIF_BOX).crop)
    assert np.median(np.abs(crop_panel - expected)) <= 2        # JPEG; keypoints/head box drawn on top
    assert np.median(np.abs(crop_panel - unrotated)) > 20


def test_horse_photo_with_a_box(tmp_path):
    if not HORSE.exists():
        pytest.skip(f"{HORSE} not present")
    out = tmp_path / "out"
    code, lines = run_cli(["--input", HORSE, "--bbox", 40, 60, 360, 300, "--out_dir", out, "--batch-size", 1])
    assert code == 0, lines
    folder = out / HORSE.stem
    assert sorted(p.name for p in folder.iterdir()) == sorted(export.FILES)
    keypoints = np.load(folder / "keypoints2d.npy")
    # The demo model knows only the stand-in: only shape and a generous range (the box is 320 px wide).
    assert keypoints.shape == (26, 2) and np.isfinite(keypoints).all()
    assert (keypoints > -640).all() and (keypoints[:, 0] < 2 * 640).all() and (keypoints[:, 1] < 2 * 480).all()
    assert json.loads((folder / "result.json").read_text())["box"] == [40, 60, 360, 300]


def test_missing_smal_file_and_empty_input(tmp_path):
    (tmp_path / "empty").mkdir()
    Image.fromarray(smooth_image(20, 20)).save(tmp_path / "a.png")
    code, lines = run_cli(["--input", tmp_path / "a.png", "--smal", tmp_path / "nope.pkl", "--out_dir", tmp_path / "o"])
    assert code == 1 and error_lines(lines) == [f"error: {tmp_path / 'nope.pkl'}: SMAL file not found"]
    code, lines = run_cli(["--input", tmp_path / "empty", "--out_dir", tmp_path / "o"])
    assert code == 1 and error_lines(lines) == [f"error: {tmp_path / 'empty'}: folder contains no images",
                                                "error: no images to process"]
    assert not (tmp_path / "o").exists()


def test_cli_process_missing_checkpoint_is_one_line(tmp_path):
    Image.fromarray(smooth_image(20, 20)).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, str(REPO / "infer.py"), "--input", str(tmp_path / "a.png"),
                           "--ckpt", str(tmp_path / "no_ckpt"), "--out_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'no_ckpt'}: checkpoint folder not found"]


def test_outputs_chooses_the_files_and_skips_the_overlay(tmp_path):
    from animax.cli import infer as infer_cli

    assert infer_cli.OUTPUT_KINDS == tuple(export.OUTPUTS)         # the CLI's copy of the choices
    out = tmp_path / "out"
    code, lines = run_cli(["--input", EXAMPLE, "--out_dir", out, "--random-weights", "--outputs", "arrays,json",
                           "--batch-size", 1])
    assert code == 0, lines
    assert lines.count(infer_cli.NO_BOXES_NOTE) == 1        # no boxes given: said once
    folder = out / EXAMPLE.stem
    expected = export.files_of(("arrays", "json"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected) and "overlay.png" not in expected
    result = json.loads((folder / "result.json").read_text())
    assert result["files"] == list(expected) and "overlay" not in result["timings_s"]
    code, lines = run_cli(["--input", EXAMPLE, "--out_dir", out, "--random-weights", "--outputs", "mesh",
                           "--batch-size", 1])
    assert code == 0 and sorted(p.name for p in folder.iterdir()) == ["mesh.obj"]   # the earlier folder replaced
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        infer.main(["--input", str(EXAMPLE), "--out_dir", str(out), "--outputs", "arrays,video"])
    assert exit_info.value.code == 2


def test_no_boxes_note_only_without_boxes(batch_run):
    from animax.cli import infer as infer_cli

    assert infer_cli.NO_BOXES_NOTE not in batch_run.lines and "--boxes" in infer_cli.NO_BOXES_NOTE


def test_arrays_file_holds_every_animal_in_input_order(batch_run, tmp_path):
    """The batch run's inputs again with --arrays-file and arrays only: no folders, one .npz whose
    valid rows equal the .npy files of the batch run's folders (same model, same crops)."""
    target = tmp_path / "all.npz"
    folder = batch_run.folder
    code, lines = run_cli(["--input", folder / "rgb.jpg", folder / "text.jpg", folder / "multi.png",
                           "--boxes", batch_run.root / "boxes.json", "--out_dir", tmp_path / "out",
                           "--batch-size", BATCH, "--workers", 2, "--random-weights", "--outputs", "arrays",
                           "--arrays-file", target])
    multi_ok = [f"multi_{k}" in EXPORTED for k in range(len(MULTI_BOXES_XYWH))]
    assert code == 1 and len(error_lines(lines)) == 1 + multi_ok.count(False)     # text.jpg, bad boxes
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.npz"]  # no temporaries left
    data = np.load(target)
    names = [Path(p).name for p in data["image"]]
    assert names == ["rgb.jpg", "text.jpg"] + ["multi.png"] * len(MULTI_BOXES_XYWH)
    assert data["valid"].tolist() == [True, False] + multi_ok
    assert data["box_index"].tolist() == [0, 0] + list(range(len(MULTI_BOXES_XYWH)))
    for row, folder_name in [(0, "rgb"), (2, "multi_0"), (3, "multi_1")]:
        for name in export.ARRAY_FILES:
            np.testing.assert_array_equal(data[name][row], np.load(batch_run.out / folder_name / f"{name}.npy"))
    assert not data["vertices"][1].any()


def test_one_run_mixes_body_models_picked_per_image(tmp_path):
    """Two species in one run: each image's body model from the boxes file, every result what a
    run with only that body model gives."""
    data = random_smal_arrays(num_vertices=500, num_betas=41, seed=3)
    rng = np.random.default_rng(4)
    data["keypoint_vertex_sets"] = [rng.choice(500, 3, replace=False) for _ in range(26)]
    save_smal(smal_model_from_arrays(data, 41, "other"), tmp_path / "other.npz")
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.png").write_bytes(EXAMPLE.read_bytes())
    box = [10, 10, 300, 250]
    (tmp_path / "boxes.json").write_text(json.dumps({"a.png": {"boxes": [box], "smal": "other"}, "b.png": [box],
                                                     "c.png": {"boxes": [box], "smal": "unknown"}}))
    images = [tmp_path / f"{n}.png" for n in "abc"]
    code, lines = run_cli(["--input", *images, "--boxes", tmp_path / "boxes.json", "--out_dir", tmp_path / "mixed",
                           "--smal", f"other={tmp_path / 'other.npz'}", "--outputs", "arrays,json"])
    assert code == 1
    assert error_lines(lines) == [f"error: {images[2]}: body model 'unknown' (in {tmp_path / 'boxes.json'}) "
                                  "is not given by --smal unknown=FILE"]
    assert not (tmp_path / "mixed" / "c").exists()
    tol = f32_tol(*pipeline_steps(tiny.get_config().model), sides=2)
    for name, smal, vertices in (("a", tmp_path / "other.npz", 500), ("b", None, 3242)):
        alone = tmp_path / f"alone_{name}"
        code, _ = run_cli(["--input", tmp_path / f"{name}.png", "--bbox", *box, "--out_dir", alone,
                           "--outputs", "arrays,json", *(["--smal", smal] if smal else [])])
        assert code == 0
        mixed = tmp_path / "mixed" / name
        assert np.load(mixed / "vertices.npy").shape == (vertices, 3)
        assert json.loads((mixed / "result.json").read_text())["body_model"]["vertices"] == vertices
        for array in ("vertices", "keypoints2d", "fused_features"):
            assert rel_err(np.load(mixed / f"{array}.npy"), np.load(alone / name / f"{array}.npy")) < tol, array
