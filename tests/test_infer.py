"""infer.py end to end on the tiny config (random weights) over generated images, including
awkward formats and broken files; and its parts: box files, preprocessing against OpenCV,
the rasteriser and the overlay.

The model is initialised once (animax.loading caches it) and each CLI run or
Predictor compiles once, so the CLI runs in-process except for one subprocess check.
"""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import trimesh
from PIL import Image

import infer
from animax.image import raster
from animax.predict import export, inputs
from animax.viz import overlay
from animax.loading import random_model
from animax.predict.predictor import Predictor
from animax.image.crop import IMAGE_MEAN, IMAGE_STD
from animax.image.io import load_image
from animax.predict.predictor import prepare
from animax.smal import load_smal, save_smal
from animax.smal.io import smal_model_from_arrays
from configs import tiny
from conftest import SHARED_DATA, random_smal_arrays
from nn_reference import U, assert_within, f32_tol, pipeline_steps, rel_err

REPO = Path(__file__).resolve().parents[1]
HORSE = SHARED_DATA / "animer_examples" / "000000015956_horse.png"
EXAMPLE = REPO / "examples" / "standin_quadruped.png"            # README's demo input
BATCH = 4


def smooth_image(height, width, seed=0):
    """uint8 RGB of a few low-frequency waves: strongly asymmetric, yet smooth enough that JPEG
    and OpenCV's 1/32-pixel interpolation steps change it by well under a grey level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        waves = sum(np.cos(2 * np.pi * (fx * x + fy * y) + phase)
                    for fx, fy, phase in rng.uniform([-2, -2, 0], [2, 2, 6.3], (3, 3)))
        channels.append(waves)
    img = np.stack(channels, -1) + np.stack([2 * x, 2 * y, x - y], -1)   # ramps: no symmetry
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(255 * img).astype(np.uint8)


def run_cli(argv):
    """infer.main in-process -> (exit code, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = infer.main([str(a) for a in argv])
    return code, err.getvalue().splitlines()


def error_lines(lines):
    return [line for line in lines if line.startswith("error:")]


# One CLI run over a folder, a glob, a missing path, an empty folder and the bundled example,
# with a COCO boxes file.
EXIF_UPRIGHT = (200, 120)            # (H, W) after honouring the EXIF orientation
EXIF_BOX = (10.0, 100.0, 110.0, 190.0)
MULTI_BOXES_XYWH = [[10, 20, 120, 90], [60, 40, 100, 100], [30, 30, 0, 50], [1000, 10, 50, 50]]


def write_images(folder):
    """The awkward formats, two broken files and a non-image; returns the EXIF image upright."""
    rgb = smooth_image(120, 160, seed=1)
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=95)
    Image.fromarray(rgb).save(folder / "plain.png")
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, np.linspace(60, 255, 160, dtype=np.uint8)[None].repeat(120, 0)])).save(
        folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "deep.png")       # 16-bit grey
    # Stored on its side; orientation 6 says "turn 90 degrees clockwise to display".
    upright = smooth_image(*EXIF_UPRIGHT, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(folder / "exif.jpg", quality=95, exif=exif)
    Image.fromarray(smooth_image(150, 200, seed=3)).save(folder / "multi.png")
    Image.fromarray(smooth_image(50, 50, seed=4)).save(folder / "no_animal.png")    # listed with no boxes
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, "JPEG")
    (folder / "truncated.jpg").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "notes.txt").write_text("not an image suffix: folders skip it\n")
    return upright


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    folder = root / "images"
    folder.mkdir()
    upright = write_images(folder)
    more = root / "more"
    more.mkdir()
    for k, name in enumerate(("g1.png", "g2.png", "g3.jpg")):
        Image.fromarray(smooth_image(100, 100, seed=10 + k)).save(more / name)
    (root / "empty").mkdir()
    single = {"rgb.jpg": [[0, 0, 160, 120]], "plain.png": [[0, 0, 160, 120]], "grey.png": [[20, 10, 100, 100]],
             "rgba.png": [[0, 0, 160, 120]], "palette.png": [[0, 0, 160, 120]], "cmyk.jpg": [[0, 0, 160, 120]],
             "deep.png": [[0, 0, 160, 120]], "truncated.jpg": [[0, 0, 10, 10]], "text.jpg": [[0, 0, 10, 10]],
             "g1.png": [[0, 0, 100, 100]], "g2.png": [[10, 10, 80, 80]], "no_animal.png": [],
             "standin_quadruped.png": [[0, 0, 640, 480]]}
    x1, y1, x2, y2 = EXIF_BOX
    boxes = {**single, "exif.jpg": [[x1, y1, x2 - x1, y2 - y1]], "multi.png": MULTI_BOXES_XYWH}
    (root / "boxes.json").write_text(json.dumps({"format": "xywh", "boxes": boxes}))
    out = root / "out"
    (out / "multi_2").mkdir(parents=True)           # an earlier run's output for an animal that now fails
    (out / "multi_2" / "result.json").write_text("{}")
    code, lines = run_cli(["--input", folder, more / "*.png", root / "missing.jpg", root / "empty", EXAMPLE,
                           "--boxes", root / "boxes.json", "--out_dir", out, "--batch-size", BATCH, "--workers", 2,
                           "--random-weights"])
    return SimpleNamespace(code=code, lines=lines, out=out, root=root, folder=folder, upright=upright)


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


@pytest.fixture(scope="module")
def predictor():
    return Predictor(*random_model(None), batch_size=BATCH)  # the built-in demo model, as infer.py uses


def test_predictor_matches_the_cli_and_maps_to_image_pixels(batch_run, predictor):
    image = load_image(batch_run.folder / "multi.png")
    boxes = [(x, y, x + w, y + h) for x, y, w, h in MULTI_BOXES_XYWH[:2]]
    results = predictor.predict(image, boxes)
    assert len(results) == 2
    # The same model and batch size, but these boxes sit in other batch rows than in the CLI's
    # batches: float32 results of the whole pipeline need not be bitwise equal.
    tol = f32_tol(*pipeline_steps(tiny.get_config().model), sides=2)  # the demo model is configs/tiny.py's
    for k, result in enumerate(results):
        folder = batch_run.out / f"multi_{k}"
        for name in ("keypoints2d", "vertices", "cam_t_full", "fused_features"):
            assert rel_err(result[name], np.load(folder / f"{name}.npy")) < tol, name
        # Crop-normalised keypoints span the square box: (k + 0.5) * size + top-left corner
        # (computed in float64, stored as float32: one rounding).
        x1, y1, x2, y2 = boxes[k]
        size = max(x2 - x1, y2 - y1)
        top_left = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - size / 2
        expected = (result["keypoints2d_crop"].astype(np.float64) + 0.5) * size + top_left
        np.testing.assert_allclose(result["keypoints2d"], expected, rtol=2 * U, atol=U * np.abs(expected).max())
        # REFERENCE.md's crop -> full-image camera, F = 1000 / 256 * max(W, H).
        s, tx, ty = result["cam"].astype(np.float64)
        focal, bs = 1000 / 256 * 200, size * s + 1e-9
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        expected = [2 * (cx - 100) / bs + tx, 2 * (cy - 75) / bs + ty, 2 * focal / bs]
        # float32 in the model: ~5 roundings of terms of these sizes (the box centre's too), x3.
        scale = np.abs([2 * (cx + 100) / bs, 2 * (cy + 75) / bs, 2 * focal / bs]) + np.abs([tx, ty, 0])
        assert_within(result["cam_t_full"], expected, 16 * U * np.array(scale))
    # The whole image is the default box; more boxes than a batch run in several batches.
    assert predictor.predict(image)[0]["box"].tolist() == [0, 0, 200, 150]
    assert len(predictor.predict(image, [boxes[0]] * (BATCH + 1))) == BATCH + 1


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


def test_boxes_file_layouts_and_job_planning(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"a.jpg": [[1, 2, 3, 4]], "b.jpg": []}))
    assert inputs.read_boxes(path) == {"a.jpg": [(1, 2, 3, 4)], "b.jpg": []}
    path.write_text(json.dumps({"format": "xyxy", "boxes": {"a.jpg": [[1, 2, 3, 4]]}}))
    assert inputs.read_boxes(path) == {"a.jpg": [(1, 2, 3, 4)]}
    path.write_text(json.dumps({"format": "xywh", "boxes": {"x/a.jpg": [[1, 2, 3, 4]]}}))
    assert inputs.read_boxes(path) == {"x/a.jpg": [(1, 2, 4, 6)]}
    paths = [Path("x/a.jpg"), Path("y/a.png"), Path("c.jpg")]
    jobs, failures = inputs.plan_jobs(paths, inputs.BoxSource("b.json", {"x/a.jpg": [(0, 0, 5, 5), (1, 1, 4, 4)], "a.png": []}))
    assert [(j.name, j.num_animals) for j in jobs] == [("a", 2), ("a-2", 0)]
    assert [jobs[0].folder_name(k) for k in (0, 1)] == ["a_0", "a_1"]
    assert failures == ["c.jpg: not listed in b.json"]
    jobs, _ = inputs.plan_jobs(paths[:1], inputs.BoxSource.one_box((0, 0, 5, 5)))
    assert jobs[0].boxes == ((0, 0, 5, 5),) and jobs[0].folder_name(0) == "a"
    assert inputs.box_problem((0, 0, 5, 5), 10, 10) is None
    assert inputs.box_problem((-5, -5, 2, 2), 10, 10) is None       # sticks out, still overlaps
    assert inputs.box_problem((5, 0, 5, 9), 10, 10) == "zero area"
    assert inputs.box_problem((10, 0, 20, 9), 10, 10) == "outside the 10x10 image"


# Preprocessing against OpenCV + scikit-image (test-only references).
def test_crop_matches_opencv_with_skimage_antialiasing():
    import cv2  # the dev extra installs the test-only references
    import skimage.filters as skimage_filters
    image = smooth_image(900, 1200, seed=5)
    # A 1000-pixel box needs the anti-aliasing blur (f = 1000/256/2 > 1.1); the small one
    # sticks out of the image (zero border) and is not blurred.
    for box, sigma in [((100, 50, 1100, 850), (1000 / 512 - 1) / 2), ((-40, 700, 160, 950), 0.0)]:
        x1, y1, x2, y2 = box
        cx, cy, size = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        source = image.astype(np.float32)
        if sigma:
            source = skimage_filters.gaussian(source, sigma=sigma, mode="nearest", truncate=4.0,
                                              channel_axis=-1, preserve_range=True).astype(np.float32)
        s = size / 256
        dst_to_src = np.array([[s, 0, cx - 128 * s], [0, s, cy - 128 * s]])
        reference = cv2.warpAffine(source, dst_to_src, (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        crop = prepare(image, box).crop * IMAGE_STD + IMAGE_MEAN
        assert np.abs(crop - reference).max() <= 1.0, box


def test_a_negligible_blur_is_skipped_within_its_bound():
    """A 640-pixel box blurs with sigma 0.125, whose side taps weigh 1.3e-14: skipping the blur
    must stay within NEGLIGIBLE_BLUR x 255 grey levels of blurring (scipy); a slightly larger
    sigma (0.2: side taps 3.7e-6) must still blur."""
    import scipy.ndimage

    from animax.image.crop import NEGLIGIBLE_BLUR, antialias_sigma, blur_is_negligible, crop_transform, warp_affine
    image = smooth_image(480, 640, seed=3)
    assert blur_is_negligible(antialias_sigma(640)) and not blur_is_negligible(0.2)
    transform = crop_transform(np.array([320.0, 240.0]), 640.0)
    blurred = scipy.ndimage.gaussian_filter(image.astype(np.float32), sigma=(0.125, 0.125, 0), mode="nearest",
                                            truncate=4.0)
    skipped = warp_affine(image, transform, sigma=0.125)
    assert np.abs(skipped - warp_affine(blurred, transform)).max() <= NEGLIGIBLE_BLUR * 255


# The rasteriser and the overlay.
def test_rasterizer_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    height, width = 24, 32
    # Triangles of every bounding-box size bucket, some sticking out of the image, at random depths.
    corners = np.concatenate([rng.uniform(-8, 40, (6, 3, 2)), rng.uniform(5, 15, (6, 1, 2)) + rng.uniform(-3, 3, (6, 3, 2))])
    depth = rng.uniform(1, 5, (12, 3, 1))
    screen = np.concatenate([corners, depth], -1).reshape(-1, 3)
    faces = np.arange(len(screen)).reshape(-1, 3)
    rasterized = raster.rasterize(screen, faces, height, width)
    for i in range(height):
        for j in range(width):
            best, best_inv_z = -1, 0.0
            for f, (a, b, c) in enumerate(screen[faces]):
                def cross(p, q):
                    return (q[0] - p[0]) * (i - p[1]) - (q[1] - p[1]) * (j - p[0])
                edges = np.array([cross(a, b), cross(b, c), cross(c, a)])
                if (edges >= 0).all() or (edges <= 0).all():
                    area = cross(a, b) + cross(b, c) + cross(c, a)
                    weights = np.array([cross(b, c), cross(c, a), cross(a, b)]) / area
                    inv_z = weights @ (1 / np.array([a[2], b[2], c[2]]))
                    if inv_z > best_inv_z:
                        best, best_inv_z = f, inv_z
            assert rasterized.face[i, j] == best, (i, j)
            if best >= 0:
                assert rasterized.depth[i, j] == pytest.approx(1 / best_inv_z)


def standin_side_on():
    """Camera-frame vertices of the stand-in's template seen from its side, and its faces."""
    body = load_smal()
    to_camera = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)   # x fwd, z up -> x right, y down
    return np.asarray(body.v_template, np.float64) @ to_camera.T, np.asarray(body.faces)


def test_render_of_a_smal_sized_mesh_covers_its_silhouette():
    # Its speed is measured in bench/bench_infer_cli.py (export), not asserted here.
    sphere = trimesh.creation.uv_sphere(count=[56, 72])       # 7778 vertices, more faces than SMAL's 7774
    assert len(sphere.faces) >= 7774
    vertices = sphere.vertices * [1.6, 0.8, 0.8] + [0, 0, 14.0]   # 230 px long, like an animal in its crop
    _, mask = raster.render(vertices, sphere.faces, 1000.0, (128, 128), 256, 256)
    assert 0.3 < mask.mean() < 1.0


def test_overlay_shows_mesh_where_vertices_project():
    vertices, faces = standin_side_on()
    cam_t = np.array([0.1, -0.05, 8.0])
    crop = np.zeros((256, 256, 3), np.float32)              # normalised 0 = the ImageNet mean colour
    far_away = np.full((26, 2), -10.0)                      # keep keypoints off the panels
    picture = overlay.overlay_image(crop, vertices, cam_t, faces, far_away, [-50, -50, -40, -40])
    assert picture.shape == (256, 768, 3)
    camera = vertices + cam_t
    pixels = np.round(1000 * camera[:, :2] / camera[:, 2:] + 128).astype(int)
    assert ((pixels >= 0) & (pixels < 256)).all()
    crop_panel, mesh_panel = picture[:, :256].astype(int), picture[:, 256:512].astype(int)
    changed = np.abs(mesh_panel - crop_panel).sum(-1) > 0

    def within(radius):
        """[256, 256] True within `radius` pixels (Chebyshev) of a projected vertex."""
        near = np.zeros((256, 256), bool)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                near[np.clip(pixels[:, 1] + dy, 0, 255), np.clip(pixels[:, 0] + dx, 0, 255)] = True
        return near

    # Every vertex has mesh pixels at or next to it (silhouette vertices round either way) ...
    at_vertex = changed[pixels[:, 1], pixels[:, 0]]
    assert at_vertex.mean() > 0.9
    for i, (x, y) in enumerate(pixels[~at_vertex]):
        assert changed[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), i
    # ... and there are none away from them (this mesh's edges are under 10 pixels long).
    assert not (changed & ~within(6)).any()
    side_panel = picture[:, 512:]
    assert (side_panel != overlay.BACKGROUND).any(-1).mean() > 0.05


def test_without_ckpt_the_shipped_model_is_the_default(tmp_path, monkeypatch):
    """No --ckpt: the model folder at SHIPPED_MODEL when there is one, random weights when asked
    for (random_weights, or a config file), or when none is shipped."""
    from animax import loading
    from animax.saved_model import save_model

    model, variables = random_model(None)
    shipped = {"params": jax.tree.map(lambda x: x + 1.0, variables["params"]), "batch_stats": variables["batch_stats"]}
    config = loading.demo_config()
    save_model(tmp_path / "shipped", config, shipped)
    monkeypatch.setattr(loading, "SHIPPED_MODEL", tmp_path / "shipped")

    from_shipped = loading.load_model_or_random()
    loaded, info = from_shipped.variables, from_shipped.info
    assert info["weights"] == loading.SHIPPED_MODEL_NAME and info["checkpoint"] is None
    path, leaf = next(iter(jax.tree_util.tree_leaves_with_path(loaded["params"])))
    np.testing.assert_array_equal(leaf, jax.tree_util.tree_leaves(shipped["params"])[0], err_msg=str(path))
    for kwargs in ({"random_weights": True}, {"config": "configs/tiny.py"}):
        assert loading.uses_random_weights(**kwargs)
        random = loading.load_model_or_random(**kwargs)
        random_variables, info = random.variables, random.info
        assert info["weights"].startswith("random"), kwargs
    monkeypatch.setattr(loading, "SHIPPED_MODEL", tmp_path / "absent")
    assert loading.uses_random_weights() and loading.load_model_or_random().info["weights"].startswith("random")


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
