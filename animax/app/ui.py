"""The web page (Gradio Blocks): a Photos tab and a Clip tab over one `Engine`.

Every handler answers a bad upload or box with a line in the tab's status (`**Error:** ...`),
never a traceback; the model runs are one queue (`concurrency_id="model"`, one at a time), so
two users never compile or run the model at once. Files go out only from the run folders under
the app's own folder (Gradio copies them into its cache, under the same folder).

Fitting (`animax.fit`, being built on its own branch) is not wired in yet. Its place: in
`build`, beside the Photos tab's Run button, a "refine by fitting" Checkbox and an iterations
Slider, created only when `importlib.util.find_spec("animax.fit")` finds the package; both go
to `App.run_photos` as two more inputs, and `engine.run_photos` refines each animal between
the model and the export (the page needs no other change).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import gradio as gr

from animax.app.boxes import BoxTextError, add_corner, draw_boxes, parse_box_text
from animax.app.engine import (
    KEYPOINT_COLUMNS,
    Engine,
    clip_frame_boxes,
    photo_boxes,
    remove_old_runs,
    run_clip,
    run_photos,
)
from animax.app.uploads import Limits, UploadError, open_clip, read_boxes_file, read_photos
from animax.track.frames import VIDEO_SUFFIXES

RUN_KEEP_S = 600          # a run folder's files are copied by Gradio at once; older ones are deleted
UPLOAD_KEEP_S = 3600      # an unpacked zip of frames waits this long for its run
SMOOTH_DEFAULT = 1.5
TITLE = "animax: 3D animal pose and shape"
INTRO = """Upload photos of quadrupeds, **click two opposite corners around each animal** (or type
boxes, or upload a MegaDetector / COCO results file; with none, the whole picture is one box), then run.
The model expects each animal centred and filling its box. Clips: upload a video or a zip of frames,
box the animals on the first frame, and they are tracked through the clip."""


def error_line(e: Exception) -> str:
    return f"**Error:** {e}"


class App:
    """The handlers of the page, sharing the engine, the limits and the app's folder."""

    def __init__(self, engine: Engine, limits: Limits, folder):
        self.engine, self.limits = engine, limits
        self.runs = Path(folder) / "runs"
        self.uploads = Path(folder) / "uploads"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    def new_folder(self, root: Path, keep_s: float) -> Path:
        remove_old_runs(root, keep_s)
        folder = root / f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    # ------------------------------------------------------------------------------- photos

    def load_photos(self, files):
        """Photos uploaded -> (the upload, photos state, the photo chooser, the canvas, status).
        A refused upload is taken off the page (its message stays), so the next one starts afresh."""
        if not files:
            return gr.update(), {}, gr.update(choices=[], value=None), None, gr.update()
        try:
            photos = read_photos(files, self.limits)
        except UploadError as e:
            return None, {}, gr.update(choices=[], value=None), None, error_line(e)
        names = list(photos)
        first = names[0]
        sizes = ", ".join(f"{n} ({p[1].shape[1]}x{p[1].shape[0]})" for n, p in photos.items())
        return (gr.update(), photos, gr.update(choices=names, value=first), photos[first][1],
                f"Loaded {sizes}. Click two corners around each animal.")

    def photo_canvas(self, photos, name, text, pending=None):
        """The chosen photo with its boxes (and a pending corner) drawn; status for bad lines."""
        if not photos or name not in photos:
            return None, gr.update()
        try:
            boxes = parse_box_text(text, photos, _sizes(photos))
        except BoxTextError as e:
            return draw_boxes(photos[name][1], [], pending), error_line(e)
        return draw_boxes(photos[name][1], boxes[name], pending), ""

    def click_photo(self, photos, name, text, pending, evt: gr.SelectData):
        if not photos or name not in photos:
            return text, None, None, "Upload a photo first."
        text, pending = add_corner(text, evt.index, pending, name if len(photos) > 1 else None)
        canvas, status = self.photo_canvas(photos, name, text, pending)
        return text, pending, canvas, status or ("First corner set: click the opposite one." if pending else "")

    def run_photos(self, photos, text, boxes_upload, progress=gr.Progress()):
        """-> status, full overlays, crop overlays, animal chooser, 3D view, table, zip, meshes state."""
        empty = (None, None, gr.update(choices=[], value=None), None, None, None, {})
        try:
            if not photos:
                raise UploadError("upload one or more photos first")
            drawn = parse_box_text(text or "", photos, _sizes(photos))
            boxes_file = None if boxes_upload is None else read_boxes_file(boxes_upload)
            boxes = photo_boxes(photos, drawn, boxes_file)
            progress(None, desc="running the model")
            run = run_photos(self.engine, photos, boxes, self.new_folder(self.runs, RUN_KEEP_S))
        except (UploadError, BoxTextError) as e:
            return (error_line(e), *empty)
        labels = list(run.meshes)
        first = labels[0] if labels else None
        status = "Done: " + "; ".join(run.lines)
        return (status, [(str(p), c) for p, c in run.full_overlays], [(str(p), c) for p, c in run.crop_overlays],
                gr.update(choices=labels, value=first), None if first is None else str(run.meshes[first]),
                run.keypoints, str(run.zip), {k: str(v) for k, v in run.meshes.items()})

    # -------------------------------------------------------------------------------- clips

    def load_clip(self, file):
        """A clip uploaded -> (clip state, the first frame, status)."""
        if file is None:
            return None, None, ""
        try:
            sequence, first = open_clip(file, self.new_folder(self.uploads, UPLOAD_KEEP_S), self.limits)
        except UploadError as e:
            return None, None, error_line(e)
        count = f"{sequence.num_frames} frames" if sequence.num_frames else "frames"
        return ((sequence, first), first, f"Loaded {Path(file).name}: {count} of {first.shape[1]}x{first.shape[0]}"
                f" at {sequence.fps:g} fps. Click two corners around each animal on the first frame.")

    def clip_canvas(self, clip, text, pending=None):
        if clip is None:
            return None, gr.update()
        first = clip[1]
        try:
            boxes = parse_box_text(text, ["frame 0"], {"frame 0": (first.shape[1], first.shape[0])})["frame 0"]
        except BoxTextError as e:
            return draw_boxes(first, [], pending), error_line(e)
        return draw_boxes(first, boxes, pending), ""

    def click_clip(self, clip, text, pending, evt: gr.SelectData):
        if clip is None:
            return text, None, None, "Upload a clip first."
        text, pending = add_corner(text, evt.index, pending)
        canvas, status = self.clip_canvas(clip, text, pending)
        return text, pending, canvas, status or ("First corner set: click the opposite one." if pending else "")

    def run_clip(self, clip, text, boxes_upload, smooth, progress=gr.Progress()):
        """-> status, overlay video, track chooser, 3D view, per-track files, zip, meshes state."""
        empty = (None, gr.update(choices=[], value=None), None, None, None, {})
        try:
            if clip is None:
                raise UploadError("upload a clip first (a video or a zip of frames)")
            sequence, first = clip
            size = {"frame 0": (first.shape[1], first.shape[0])}
            drawn = parse_box_text(text or "", ["frame 0"], size)["frame 0"] or None
            frame_boxes = None if boxes_upload is None else clip_frame_boxes(sequence, read_boxes_file(boxes_upload))

            def report(stage, done, total):
                progress((done, total) if total else None, desc=stage, unit="frames")

            run = run_clip(self.engine, sequence, drawn, frame_boxes, float(smooth),
                           self.new_folder(self.runs, RUN_KEEP_S), self.limits.max_frames, report)
        except (UploadError, BoxTextError) as e:
            return (error_line(e), *empty)
        labels = list(run.meshes)
        return ("Done: " + "; ".join(run.lines), str(run.video), gr.update(choices=labels, value=labels[0]),
                str(run.meshes[labels[0]]), [str(p) for p in run.files], str(run.zip),
                {k: str(v) for k, v in run.meshes.items()})


def _sizes(photos):
    return {name: (image.shape[1], image.shape[0]) for name, (_, image) in photos.items()}


def _mesh_of(meshes, label):
    return meshes.get(label) if meshes and label else None


def build(engine: Engine, limits: Limits, folder) -> gr.Blocks:
    """The page over `engine`; `folder` is the app's own folder (runs and unpacked uploads)."""
    app = App(engine, limits, folder)
    model_note = engine.loaded.info.get("weights", "")
    with gr.Blocks(title=TITLE, delete_cache=(UPLOAD_KEEP_S, UPLOAD_KEEP_S)) as demo:
        gr.Markdown(f"## {TITLE}\n{INTRO}\n\n<small>Model: {model_note}</small>")
        with gr.Tab("Photos", id="photos"):
            photos, pending, meshes = gr.State({}), gr.State(None), gr.State({})
            with gr.Row():
                with gr.Column(scale=1):
                    files = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="photos")
                    choice = gr.Dropdown(label="Photo to draw on", choices=[], elem_id="photo-choice")
                    canvas = gr.Image(label="Click two opposite corners around each animal", interactive=False,
                                      type="numpy", elem_id="photo-canvas", buttons=[])
                    text = gr.Textbox(label="Boxes, one a line: [photo:] x1 y1 x2 y2 (pixels)", lines=3,
                                      elem_id="photo-boxes")
                    with gr.Row():
                        clear = gr.Button("Clear boxes", size="sm")
                    boxes_file = gr.File(label="Or a boxes file: MegaDetector / COCO results / {name: [[x1,y1,x2,y2]]}",
                                         file_types=[".json"], elem_id="photo-boxes-file")
                    run = gr.Button("Run", variant="primary", elem_id="photo-run")
                with gr.Column(scale=2):
                    status = gr.Markdown(elem_id="photo-status")
                    full = gr.Gallery(label="Full picture: mesh, keypoints and box of each animal", columns=1,
                                      height="auto", elem_id="photo-full", object_fit="contain")
                    crops = gr.Gallery(label="Each animal: crop | mesh over the crop | side view", columns=1,
                                       height="auto", elem_id="photo-crops", object_fit="contain")
                    animal = gr.Dropdown(label="Animal in the 3D view", choices=[], elem_id="photo-animal")
                    view = gr.Model3D(label="3D mesh (glTF, skinned to the SMAL skeleton)", elem_id="photo-3d",
                                      height=360, clear_color=(0.15, 0.15, 0.15, 1.0))
                    table = gr.Dataframe(headers=list(KEYPOINT_COLUMNS), label="Keypoints (pixels; 3D in the "
                                         "camera frame)", elem_id="photo-keypoints", interactive=False, max_height=300)
                    download = gr.File(label="Download: every animal's .npy arrays, mesh.obj, mesh.glb, overlay.png, "
                                             "result.json, the full-picture overlays and keypoints.csv",
                                       elem_id="photo-zip")
            files.change(app.load_photos, files, [files, photos, choice, canvas, status])
            choice.change(lambda p, n, t: app.photo_canvas(p, n, t)[0], [photos, choice, text], canvas) \
                .then(lambda: None, None, pending)
            text.change(lambda p, n, t: app.photo_canvas(p, n, t), [photos, choice, text], [canvas, status])
            canvas.select(app.click_photo, [photos, choice, text, pending], [text, pending, canvas, status])
            clear.click(lambda p, n: ("", None, *app.photo_canvas(p, n, "")), [photos, choice],
                        [text, pending, canvas, status])
            run.click(app.run_photos, [photos, text, boxes_file],
                      [status, full, crops, animal, view, table, download, meshes],
                      concurrency_id="model", concurrency_limit=1)
            animal.change(_mesh_of, [meshes, animal], view)

        with gr.Tab("Clip", id="clip"):
            clip, clip_pending, clip_meshes = gr.State(None), gr.State(None), gr.State({})
            with gr.Row():
                with gr.Column(scale=1):
                    clip_file = gr.File(label="Clip: a video or a .zip of frames",
                                        file_types=sorted(VIDEO_SUFFIXES) + [".zip"], elem_id="clip")
                    clip_canvas = gr.Image(label="First frame: click two opposite corners around each animal",
                                           interactive=False, type="numpy", elem_id="clip-canvas", buttons=[])
                    clip_text = gr.Textbox(label="First-frame boxes, one a line: x1 y1 x2 y2 (none: the whole frame)",
                                           lines=2, elem_id="clip-boxes")
                    clip_clear = gr.Button("Clear boxes", size="sm")
                    clip_boxes_file = gr.File(label="Or a boxes file (MegaDetector's video layout, or per frame name)",
                                              file_types=[".json"], elem_id="clip-boxes-file")
                    smooth = gr.Slider(0, 5, value=SMOOTH_DEFAULT, step=0.5, elem_id="clip-smooth",
                                       label="Smoothing over time (Gaussian sigma in frames; 0: none)")
                    clip_run = gr.Button("Track", variant="primary", elem_id="clip-run")
                with gr.Column(scale=2):
                    clip_status = gr.Markdown(elem_id="clip-status")
                    video = gr.Video(label="overlay.mp4", elem_id="clip-video", autoplay=True, loop=True,
                                     interactive=False)
                    track = gr.Dropdown(label="Track in the 3D view", choices=[], elem_id="clip-track")
                    clip_view = gr.Model3D(label="Animated 3D track (glTF: Blender imports it)", elem_id="clip-3d",
                                           height=360, clear_color=(0.15, 0.15, 0.15, 1.0))
                    track_files = gr.File(label="Per track: .npz arrays, DeepLabCut .h5/.csv; sequence.json",
                                          file_count="multiple", elem_id="clip-files")
                    clip_zip = gr.File(label="Download everything (zip)", elem_id="clip-zip")
            clip_file.change(app.load_clip, clip_file, [clip, clip_canvas, clip_status]) \
                .then(lambda: ("", None), None, [clip_text, clip_pending])
            clip_text.change(lambda c, t: app.clip_canvas(c, t), [clip, clip_text], [clip_canvas, clip_status])
            clip_canvas.select(app.click_clip, [clip, clip_text, clip_pending],
                               [clip_text, clip_pending, clip_canvas, clip_status])
            clip_clear.click(lambda c: ("", None, *app.clip_canvas(c, "")), clip,
                             [clip_text, clip_pending, clip_canvas, clip_status])
            clip_run.click(app.run_clip, [clip, clip_text, clip_boxes_file, smooth],
                           [clip_status, video, track, clip_view, track_files, clip_zip, clip_meshes],
                           concurrency_id="model", concurrency_limit=1)
            track.change(_mesh_of, [clip_meshes, track], clip_view)
    return demo
