"""The web app end to end in a real browser: `python -m animax.app` on a free loopback port,
driven through Debian's chromium by Playwright, as a person would use it.

One app process serves the module (its first compile is the slow part); tests run in file order
and the last stops the server. With ANIMAX_APP_SCREENSHOTS=docs/images the tabs' screenshots
are written there (README's pictures); otherwise under the test's temporary folder.
"""

import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "standin_quadruped.png"
WALK = REPO / "examples" / "standin_walk.mp4"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL in software
RUN_TIMEOUT_MS = 180_000
START_TIMEOUT_S = 300
MAX_FILE_MB = 2

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                 "(apt-get install chromium; .ci/run installs it)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    """(status, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    port = free_port()
    log_path = root / "app.log"
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "animax.app", "--port", str(port),
                                    "--max-file-mb", str(MAX_FILE_MB)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not (ready := re.search(r"animax-app: ready .* \(files in (\S+)\)", log_path.read_text())):
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        assert get(url + "/")[0] == 200
        yield SimpleNamespace(url=url, process=process, log=log_path, folder=Path(ready.group(1)), root=root,
                              cache=root / "cache" / "animax" / "jax")
    finally:                  # a failed start or a failed test leaves no server behind
        if process.poll() is None:
            process.terminate()
            process.wait(60)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("ANIMAX_APP_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#photos input[type=file]", state="attached")
    return page


STATUS_JS = "id => document.querySelector('#' + id).innerText.replace(/^\\s*[\\d.]+s\\s*/, '')"


def status_of(page, elem_id, timeout=RUN_TIMEOUT_MS, before=""):
    """The status markdown (less the running timer) once it says Done or Error, and says
    something else than `before`."""
    page.wait_for_function(f"([id, before]) => {{ const text = ({STATUS_JS})(id);"
                           " return /Done|Error/.test(text) && text !== before; }", arg=[elem_id, before],
                           timeout=timeout)
    return page.evaluate(STATUS_JS, elem_id)


def upload(page, elem_id, path, wait=True):
    """Puts a file in an upload component (replacing the one there), and waits until it has landed."""
    clear = page.locator(f"#{elem_id} button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(path)
    if wait:                   # a component holding a file shows its Clear button
        clear.wait_for()


def fetch(page, locator, attribute):
    """Bytes of the file an element points at (img src, a href, video src), through the page's session."""
    url = locator.get_attribute(attribute)
    response = page.request.get(url)
    assert response.ok, url
    return response.body()


def wait_for_3d(locator, timeout_s=90) -> np.ndarray:
    """A screenshot of a Model3D's canvas once the mesh is drawn (WebGL in SwiftShader takes a while)."""
    canvas = locator.locator("canvas")
    canvas.wait_for(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while True:
        pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), np.float64)
        if pixels.std(axis=(0, 1)).max() > 10 or time.monotonic() > deadline:
            return pixels
        time.sleep(1)


def save_screenshot(page, path, width=1000):
    """The whole page, scaled down to `width` pixels: README's pictures stay small."""
    page.evaluate("() => window.scrollTo(0, 0)")
    picture = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    picture = picture.resize((width, round(picture.height * width / picture.width)), Image.Resampling.LANCZOS)
    picture.quantize(256).save(path, optimize=True)


def glb_document(data: bytes) -> dict:
    magic, version, _ = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


def test_photo_boxes_drawn_by_clicks_give_infer_py_keypoints(browser, server, shots, tmp_path):
    page = open_page(browser, server)
    page.locator("#photos input[type=file]").set_input_files(EXAMPLE)
    canvas = page.locator("#photo-canvas img")
    canvas.wait_for()
    box = canvas.bounding_box()
    canvas.click(position={"x": 0.2 * box["width"], "y": 0.2 * box["height"]})
    page.wait_for_function("() => document.querySelector('#photo-canvas img') !== null")
    time.sleep(0.5)
    canvas.click(position={"x": 0.8 * box["width"], "y": 0.85 * box["height"]})
    text = page.locator("#photo-boxes textarea")
    page.wait_for_function("() => document.querySelector('#photo-boxes textarea').value.trim() !== ''")
    drawn = [float(v) for v in text.input_value().split()]
    # The clicks land where they were aimed, in the picture's own pixels (640 x 480).
    np.testing.assert_allclose(drawn, [128, 96, 512, 408], atol=4)
    page.click("#photo-run")
    status = status_of(page, "photo-status")
    assert status.startswith("Done") and "1 animal" in status, status

    full = Image.open(io.BytesIO(fetch(page, page.locator("#photo-full img").first, "src")))
    assert full.size == (640, 480)
    example = np.asarray(Image.open(EXAMPLE).convert("RGB"), np.float64)
    changed = np.abs(np.asarray(full.convert("RGB"), np.float64) - example).max(-1) > 30
    x1, y1, x2, y2 = (int(v) for v in drawn)
    assert changed[y1:y2, x1:x2].mean() > 0.1 and changed.mean() < 0.3      # the mesh, over the animal
    crop = Image.open(io.BytesIO(fetch(page, page.locator("#photo-crops img").first, "src")))
    assert crop.size == (768, 256)                                          # crop | mesh | side view
    view = wait_for_3d(page.locator("#photo-3d"))
    assert view.std(axis=(0, 1)).max() > 10, "the 3D viewer drew nothing"
    page.locator("#photo-keypoints").wait_for()
    assert "left_eye" in page.locator("#photo-keypoints").inner_text()
    save_screenshot(page, shots / "app_photos.png")

    archive = zipfile.ZipFile(io.BytesIO(fetch(page, page.locator("#photo-zip a").first, "href")))
    names = set(archive.namelist())
    animal = "standin_quadruped/"
    arrays = ("vertices", "keypoints3d", "keypoints2d", "betas", "pose", "cam", "cam_t_full", "visual_features",
              "head_features", "fused_features")
    expected = {animal + f"{a}.npy" for a in arrays} | {animal + f for f in ("mesh.obj", "mesh.glb", "overlay.png",
                                                                                "result.json")}
    assert expected | {"standin_quadruped_full_overlay.png", "keypoints.csv"} == names
    loaded = {a: np.load(io.BytesIO(archive.read(animal + f"{a}.npy"))) for a in arrays}
    result = json.loads(archive.read(animal + "result.json"))
    assert {a: list(v.shape) for a, v in loaded.items()} == result["arrays"]
    vertices = result["body_model"]["vertices"]                   # the stand-in's mesh
    assert loaded["vertices"].shape == (vertices, 3) and loaded["keypoints2d"].shape == (26, 2)
    assert loaded["pose"].shape == (35, 3, 3) and loaded["betas"].shape == (41,)
    assert result["box"] == drawn
    obj = archive.read(animal + "mesh.obj").decode()
    assert sum(line.startswith("v ") for line in obj.splitlines()) == vertices
    document = glb_document(archive.read(animal + "mesh.glb"))
    position = document["meshes"][0]["primitives"][0]["attributes"]["POSITION"]
    assert document["accessors"][position]["count"] == vertices and len(document["skins"][0]["joints"]) == 35
    table = archive.read("keypoints.csv").decode().splitlines()
    assert len(table) == 1 + 26 and table[1].startswith("standin_quadruped.png,standin_quadruped,")

    # infer.py on the same image and box, in its own process, through the app's compilation cache.
    out = tmp_path / "infer"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(server.cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    done = subprocess.run([sys.executable, "infer.py", "--input", str(EXAMPLE), "--bbox", *map(str, drawn),
                           "--out_dir", str(out), "--batch-size", "1"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("keypoints2d", "keypoints3d", "vertices"):
        np.testing.assert_allclose(loaded[name], np.load(out / EXAMPLE.stem / f"{name}.npy"), rtol=1e-5, atol=1e-4)
    page.close()


def test_clip_is_tracked_with_progress_video_and_files(browser, server, shots):
    page = open_page(browser, server)
    page.get_by_role("tab", name="Clip").click()
    page.locator("#clip input[type=file]").set_input_files(WALK)
    page.locator("#clip-canvas img").wait_for()
    assert "24 frames" in page.locator("#clip-status").inner_text()
    page.click("#clip-run")
    # gr.Progress shows the frames while they run.
    page.wait_for_function("() => /tracking|rendering/.test(document.body.innerText)", timeout=RUN_TIMEOUT_MS)
    status = status_of(page, "clip-status")
    assert status.startswith("Done") and "24 frames" in status and "1 track" in status, status

    video = page.locator("#clip-video video")
    video.wait_for()
    page.wait_for_function("() => document.querySelector('#clip-video video').readyState >= 2", timeout=60_000)
    assert page.evaluate("() => document.querySelector('#clip-video video').duration") > 0.5
    import av

    with av.open(io.BytesIO(fetch(page, video, "src"))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 24

    links = page.locator("#clip-files a")
    links.first.wait_for()
    files = {Path(urllib.parse.urlparse(links.nth(i).get_attribute("href")).path).name: links.nth(i)
             for i in range(links.count())}
    assert {"track_0.npz", "track_0_DLC.h5", "track_0_DLC.csv", "sequence.json"} <= set(files), files
    track = np.load(io.BytesIO(fetch(page, files["track_0.npz"], "href")))
    assert track["keypoints2d"].shape == (24, 26, 2) and list(track["frames"]) == list(range(24))
    assert "keypoints2d_raw" in track                                      # smoothed (the slider's default)
    csv_lines = fetch(page, files["track_0_DLC.csv"], "href").decode().splitlines()
    # Three header rows (scorer, bodyparts, coords), then a row a frame.
    assert csv_lines[0].startswith("scorer,animax") and len(csv_lines) == 3 + 24
    archive = zipfile.ZipFile(io.BytesIO(fetch(page, page.locator("#clip-zip a").first, "href")))
    assert {"standin_walk/overlay.mp4", "standin_walk/track_0.glb"} <= set(archive.namelist())
    view = wait_for_3d(page.locator("#clip-3d"))
    assert view.std(axis=(0, 1)).max() > 10, "the 3D viewer drew nothing"
    save_screenshot(page, shots / "app_clip.png")
    page.close()


def test_bad_uploads_are_answered_in_the_page(browser, server, tmp_path):
    page = open_page(browser, server)
    (tmp_path / "notes.png").write_text("not a picture\n")
    page.locator("#photos input[type=file]").set_input_files(tmp_path / "notes.png")
    assert "notes.png: not an image" in status_of(page, "photo-status", 30_000)

    page.locator("#photos input[type=file]").set_input_files(EXAMPLE)
    page.wait_for_function("() => /Loaded/.test(document.querySelector('#photo-status').innerText)")
    page.locator("#photo-boxes textarea").fill("700 500 900 600")
    assert "line 1 '700 500 900 600': outside the 640x480 image" in status_of(page, "photo-status")

    (tmp_path / "boxes.json").write_text("{not json")
    page.locator("#photo-boxes textarea").fill("")
    upload(page, "photo-boxes-file", tmp_path / "boxes.json")
    before = page.evaluate(STATUS_JS, "photo-status")
    page.click("#photo-run")
    assert "boxes.json: not valid JSON" in status_of(page, "photo-status", before=before)

    (tmp_path / "boxes.json").write_text(json.dumps({"other.jpg": [[0, 0, 10, 10]]}))
    upload(page, "photo-boxes-file", tmp_path / "boxes.json")
    before = page.evaluate(STATUS_JS, "photo-status")
    page.click("#photo-run")
    assert "standin_quadruped.png: not listed in boxes.json" in status_of(page, "photo-status", before=before)

    page.get_by_role("tab", name="Clip").click()
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    upload(page, "clip", tmp_path / "broken.mp4", wait=False)
    assert "broken.mp4: cannot open video" in status_of(page, "clip-status", 30_000)

    # Larger than --max-file-mb: Gradio refuses it before it lands, and says so.
    (tmp_path / "huge.mp4").write_bytes(bytes(MAX_FILE_MB * 2**20 + 1))
    upload(page, "clip", tmp_path / "huge.mp4", wait=False)
    page.get_by_text(re.compile("exceed|too large|max", re.I)).first.wait_for(timeout=30_000)
    assert "Traceback" not in page.locator("body").inner_text()
    page.close()


def test_two_sessions_at_once_both_finish(browser, server):
    pages = [open_page(browser, server) for _ in range(2)]
    for page, box in zip(pages, ("120 90 520 410", "100 80 540 420")):
        page.locator("#photos input[type=file]").set_input_files(EXAMPLE)
        page.wait_for_function("() => /Loaded/.test(document.querySelector('#photo-status').innerText)")
        page.locator("#photo-boxes textarea").fill(box)
    for page in pages:
        page.click("#photo-run")
    for page in pages:
        assert status_of(page, "photo-status").startswith("Done")
        page.close()


def test_only_the_apps_own_files_are_served(server):
    for path in (EXAMPLE, Path("/etc/passwd"), server.root / "app.log"):
        status, _ = get(f"{server.url}/gradio_api/file={path}")
        assert status in (403, 404), path


def test_stopping_the_app_removes_its_folder(server):
    assert server.folder.is_dir() and (server.folder / "runs").is_dir()
    server.process.terminate()
    assert server.process.wait(60) == 0
    assert not server.folder.exists()
