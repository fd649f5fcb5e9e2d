"""infer.py's --fit-keypoints: the network's prediction refined by a fit to the user's keypoints
(and masks), for still images and for sequences' tracks. The fitted result is what gets exported;
the network's stays beside it (`OUT/<name>_net/` for images, `<array>_net` in a track's npz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from animax.fit.api import fit
from animax.fit.init import from_predictions, from_tracks
from animax.fit.inputs import InputError, find_mask, read_keypoints, read_mask, read_masks
from animax.predict.export import write_animal
from animax.viz.overlay import blend_in_picture, draw_keypoints

FITTED = ("betas", "pose", "cam_t_full", "vertices", "joints", "keypoints3d", "keypoints2d")


def crop_camera(cam_t_full, box_center, box_size, image_size, focal_length):
    """Inverse of geometry.cam_crop_to_full: full-image translation [3] -> crop camera [s, tx, ty]."""
    scaled = 2.0 * focal_length / cam_t_full[2]
    return np.array([scaled / box_size, cam_t_full[0] - 2.0 * (box_center[0] - image_size[0] / 2.0) / scaled,
                     cam_t_full[1] - 2.0 * (box_center[1] - image_size[1] / 2.0) / scaled], np.float32)


def picture_overlay(image, vertices, cam_t_full, focal, faces, keypoints2d):
    """The picture with the mesh (vertices + cam_t_full through the full-image camera) and keypoints."""
    picture = blend_in_picture(np.asarray(image, np.float64), vertices, cam_t_full, focal, faces)
    out = Image.fromarray(np.round(picture).astype(np.uint8))
    draw_keypoints(ImageDraw.Draw(out), keypoints2d)
    return np.asarray(out)


def nearest_animal(animals, box):
    """The keypoint set [26, 3] among `animals` whose confident keypoints' centre lies nearest the box's."""
    centre = (np.asarray(box[:2], np.float64) + np.asarray(box[2:4], np.float64)) / 2

    def distance(k):
        seen = k[k[:, 2] > 0, :2]
        return np.inf if not len(seen) else np.linalg.norm(seen.mean(0) - centre)
    return min(animals, key=distance)


def image_keypoints(path, mapping):
    """{file name: [SMAL keypoints [26, 3], ...]} of a COCO JSON or DeepLabCut labelled-frames file."""
    kind, data, problems = read_keypoints(path, mapping)
    if kind == "images":
        return data, problems
    raise InputError(f"{path}: for still images give COCO keypoint JSON (a DeepLabCut file is for videos)")


def fit_images(predictor, jobs, body, options, keypoints_file, masks_dir=None, mapping=None, info=None, report=print):
    """Each job's image: the network's prediction per box, fitted to its keypoints (and mask), written
    as OUT/<name>/ (fitted) and OUT/<name>_net/ (the network's). Returns the failure lines."""
    from animax.image.io import load_image

    failures = []
    try:
        by_name, problems = image_keypoints(keypoints_file, mapping)
    except InputError as e:
        return [str(e)]
    failures += problems
    for job in jobs:
        try:
            image = load_image(job.path)
            boxes = job.boxes if job.boxes is not None else None
            results = predictor.predict(image, boxes)
            animals = by_name.get(Path(job.path).name)
            if animals is None:
                failures.append(f"{job.path}: not in {keypoints_file}; exported the network's prediction only")
            size = (image.shape[1], image.shape[0])
            mask = None
            if masks_dir is not None and animals is not None and len(results) == 1:
                found = find_mask(masks_dir, stem=Path(job.path).stem)
                try:
                    mask = None if found is None else read_mask(found, size)
                except InputError as e:
                    failures.append(str(e))
            for k, result in enumerate(results):
                name = job.folder_name(k)
                net_info = {"input": str(job.path), "box_index": k, "result": "network", **(info or {})}
                if animals is None:
                    write_animal(options.out_dir / name, result, body.faces, None, net_info, options.outputs)
                    continue
                keypoints = nearest_animal(animals, result["box"])[None, None]
                fitted = fit(body, keypoints, size, masks=None if mask is None else [[mask]],
                             start=from_predictions([result]), progress=options.progress)
                new = {key: fitted.arrays[key][0, 0] for key in FITTED}
                new["cam"] = crop_camera(new["cam_t_full"], result["box_center"], result["box_size"], size,
                                         float(result["focal_length"]))
                fitted_result = {**result, **new}
                before = picture_overlay(image, result["vertices"], result["cam_t_full"], result["focal_length"],
                                         body.faces, result["keypoints2d"])
                after = picture_overlay(image, new["vertices"], new["cam_t_full"], result["focal_length"],
                                        body.faces, new["keypoints2d"])
                fit_info = {**net_info, "result": "fit", "fit": {"keypoints": str(keypoints_file),
                                                                 "mask": mask is not None, "stages": fitted.report}}
                write_animal(options.out_dir / f"{name}_net", result, body.faces, before, net_info, options.outputs)
                write_animal(options.out_dir / name, fitted_result, body.faces, after, fit_info, options.outputs)
        except Exception as e:          # one image's failure must not stop the others
            failures.append(f"{job.path}: {type(e).__name__}: {e}")
    for line in failures:
        report(line)
    return failures


def track_refiner(keypoints_file, masks_dir=None, mapping=None, progress=None):
    """A SequenceRunOptions.refine: fits each track of a sequence (jointly over its frames) to the
    file's keypoints, the file's individual nearest the track in 2D; `<name>_net` keeps the network's."""
    def refine(tracks, body, num_frames, image_size):
        kind, individuals, lines = read_keypoints(keypoints_file, mapping, num_frames)
        if kind != "tracks":
            raise InputError(f"{keypoints_file}: for videos give a DeepLabCut .h5/.csv")
        masks = None
        if masks_dir is not None:
            masks, more = read_masks(masks_dir, image_size, num_frames)
            lines += more
        refined, reports = [], {}
        for track in tracks:
            def mismatch(k):
                seen = k[track.frames, :, 2] > 0
                d = np.linalg.norm(k[track.frames, :, :2] - track.arrays["keypoints2d"], axis=-1)
                return np.inf if not seen.any() else d[seen].mean()
            name = min(individuals, key=lambda n: mismatch(individuals[n]))
            keypoints = individuals[name][track.frames][None]
            track_masks = None if masks is None or len(tracks) > 1 else [[masks[t] for t in track.frames]]
            fitted = fit(body, keypoints, image_size, masks=track_masks, start=from_tracks([track.arrays]),
                         clip=True, progress=progress)
            arrays = dict(track.arrays)
            for key in FITTED:
                if key in arrays and key != "vertices":
                    arrays[f"{key}_net"] = arrays[key]
                    arrays[key] = fitted.arrays[key][0]
            arrays["fit_individual"] = np.array(name)
            track.arrays = arrays
            reports[track.id] = fitted.report
            refined.append(track)
        return refined, reports, lines
    return refine

