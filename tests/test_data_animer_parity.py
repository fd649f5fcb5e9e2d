"""Training and evaluation examples are AniMer's: against tests/helpers/animer_dataset_reference.py
(cv2.warpAffine, the upstream kernel, and NumPy, following amr/datasets/), and the augmentation
against a NumPy transcription of `do_augmentation`."""

import json
import random

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from animax.data import open_source, prepare_example
from animax.data.augment import Augmentation, AugmentConfig, crop_example, sample_augmentation
from animax.data.build import build
from animax.geometry import axis_angle_to_rotmat
from animax.image.crop import IMAGE_MEAN, IMAGE_STD, dataset_box, square_box
from helpers.animer_dataset_reference import animer_box, animer_example, warp_error_bound

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

KEYPOINT_TOL = 1e-4      # crop-normalised: 0.026 crop pixels


def smooth_picture(height, width, seed):
    """uint8 RGB of low-frequency waves: neighbouring pixels differ by a few grey levels, so
    cv2's 1/32-pixel sampling stays within about one grey level (warp_error_bound)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 400.0
    channels = [sum(np.cos(2 * np.pi * (a * x + b * y) + c) for a, b, c in rng.uniform([-2, -2, 0], [2, 2, 6], (3, 3)))
                for _ in range(3)]
    img = np.stack(channels, -1)
    return np.round(255 * (img - img.min()) / (img.max() - img.min())).astype(np.uint8)


def soft_mask(height, width, center, radii):
    """uint8 ellipse with a 12-pixel ramp at its edge (a few grey levels per pixel)."""
    y, x = np.mgrid[0:height, 0:width]
    r = np.sqrt(((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2)
    return np.round(255 * np.clip((1 - r) * min(radii) / 12 + 0.5, 0, 1)).astype(np.uint8)


def record(rng, bbox, width, height, index=0):
    keypoints = np.stack([rng.uniform(0, width, 26), rng.uniform(0, height, 26), rng.integers(0, 2, 26)], -1)
    return {"img_path": f"images/{index}.jpg", "mask_path": f"masks/{index}.png", "bbox": list(bbox),
            "keypoint_2d": keypoints.round(2).tolist(), "keypoint_3d": rng.normal(0, 0.3, (26, 3)).tolist(),
            "pose": rng.normal(0, 0.3, 105).tolist(), "shape": rng.normal(0, 1, 20).tolist(),
            "shape_extra": rng.normal(0, 1, 21).tolist(), "trans": [0.0, 0.1, 9.0], "supercategory": index % 5}


def stored(rec):
    """The stored-example arrays the builder makes of a record (animax.data.animal3d)."""
    x, y, w, h = rec["bbox"]
    return {"bbox": np.array([x, y, x + w, y + h], np.float32),
            "keypoints_2d": np.array(rec["keypoint_2d"], np.float32),
            "keypoints_3d": np.concatenate([rec["keypoint_3d"], np.ones((26, 1))], 1).astype(np.float32),
            "pose": np.array(rec["pose"], np.float32).reshape(35, 3)}


def grey(normalised):
    return normalised * IMAGE_STD + IMAGE_MEAN


def assert_matches_animer(out, ref, rgb, mask, gain=1.0):
    """Pixels within cv2's rounding (warp_error_bound, times the colour gain), the mask within
    its own bound / 255, 2D keypoints within KEYPOINT_TOL, 3D keypoints and the global
    orientation within float32 rounding."""
    # + float32 normalisation there and back: ~1e-5 of a level.
    bound = max(warp_error_bound(rgb[..., c]) for c in range(3)) * gain + 1e-4
    assert np.abs(grey(out["image"]) - grey(ref["img"])).max() <= bound
    assert np.abs(out["mask"] - ref["mask"]).max() <= warp_error_bound(mask) / 255 + 1e-6
    # Unlabelled keypoints (confidence 0) are stored at (0, 0) by the builders, AniMer keeps their
    # coordinates; every use weighs them by the confidence.
    labelled = ref["keypoints_2d"][:, 2] > 0
    np.testing.assert_allclose(out["keypoints_2d"][labelled, :2], ref["keypoints_2d"][labelled, :2], atol=KEYPOINT_TOL)
    np.testing.assert_array_equal(out["keypoints_2d"][:, 2], ref["keypoints_2d"][:, 2])
    np.testing.assert_allclose(out["keypoints_3d"], ref["keypoints_3d"], atol=1e-5)
    np.testing.assert_allclose(out["pose"][0], ref["global_orient"], atol=1e-5)


AUGMENTATIONS = [Augmentation(),
                 Augmentation(scale=1.27, rotation_deg=37.0, shift=(0.02, -0.013), color=(1.2, 0.85, 1.07)),
                 Augmentation(scale=0.71, rotation_deg=-58.0, shift=(-0.017, 0.02), color=(0.8, 1.0, 1.19))]


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_crop_is_cv2_warp_of_the_rgba_picture(augmentation):
    """A 667 x 541 box (centre on half pixels) in a 900 x 700 picture, RGB and mask through one warp."""
    rgb = smooth_picture(700, 900, seed=1)
    mask = soft_mask(700, 900, (440, 350), (300, 230))
    rec = record(np.random.default_rng(0), [100, 80, 667, 541], 900, 700)
    a = augmentation
    out = crop_example(np.concatenate([rgb, mask[..., None]], -1), stored(rec), a)
    ref = animer_example(rgb, mask, rec, a.scale, a.rotation_deg, *a.shift, a.color)
    assert_matches_animer(out, ref, rgb, mask, gain=max(a.color))


def test_box_centre_is_floored_as_animer_datasets():
    for bbox in ([100, 80, 667, 541], [-3, -7, 4, 5], [10.5, 3.25, 20, 7.5], [0, 0, 31, 17]):
        x, y, w, h = bbox
        center, side = dataset_box([x, y, x + w, y + h])
        ref_center, ref_side = animer_box(bbox)
        np.testing.assert_array_equal(center, ref_center)
        assert side == ref_side
    # Inference keeps the exact centre (AniMer's demo).
    np.testing.assert_array_equal(square_box([100, 80, 767, 621])[0], [433.5, 350.5])
    np.testing.assert_array_equal(dataset_box([100, 80, 767, 621])[0], [433.0, 350.0])


@pytest.mark.parametrize("alpha, expect_ones", [(127, True), (128, False), (0, True)])
def test_mask_is_alpha_over_255_or_all_ones_when_everywhere_below_half(alpha, expect_ones):
    rgb = smooth_picture(120, 160, seed=2)
    mask = np.full((120, 160), alpha, np.uint8)
    mask[:, 150:] = 255                       # outside the box: cut off by the crop
    rec = record(np.random.default_rng(1), [10, 10, 101, 91], 160, 120)
    out = crop_example(np.concatenate([rgb, mask[..., None]], -1), stored(rec))
    ref = animer_example(rgb, mask, rec)
    np.testing.assert_allclose(out["mask"], ref["mask"], atol=1e-7)
    assert (out["mask"] == 1.0).all() == expect_ones
    # Without a mask file animax marks has_mask 0 and leaves the mask zeros (AniMer needs one).
    assert (crop_example(rgb, stored(rec))["mask"] == 0).all()


@pytest.fixture(scope="module")
def animal3d_folder(tmp_path_factory):
    """An Animal3D-format folder (images/*.jpg, masks/*.png, test.json), built by animax: a
    half-pixel-centred box, one past the picture's edge whose mask misses the crop, and a box
    large enough that inference would blur it (f = 650 / 512 > 1.1)."""
    root = tmp_path_factory.mktemp("a3d")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    layouts = [((300, 240), [21, 17, 205, 167], (120, 100)), ((320, 240), [200, 60, 151, 97], (40, 60)),
               ((700, 640), [30, 20, 651, 600], (350, 320))]
    records = []
    for index, ((width, height), bbox, centre) in enumerate(layouts):
        rec = record(rng, bbox, width, height, index)
        Image.fromarray(smooth_picture(height, width, seed=index)).save(root / rec["img_path"], quality=95)
        Image.fromarray(soft_mask(height, width, centre, (60, 50) if index == 1 else (width / 3, height / 3))
                        ).save(root / rec["mask_path"])
        records.append(rec)
    (root / "test.json").write_text(json.dumps({"data": records}))
    build("animal3d", root, root / "data", progress=False)
    return root, records, open_source("animal3d", "test", root / "data")


def picture(root, rec):
    """The record's pixels as AniMer reads them (PIL, RGB / L)."""
    return (np.array(Image.open(root / rec["img_path"]).convert("RGB")),
            np.array(Image.open(root / rec["mask_path"]).convert("L")))


def test_built_animal3d_examples_are_animer_examples(animal3d_folder):
    """Evaluation (no augmentation) and training (AniMer's augmentation draws) examples of the
    built folder against AniMer's recipe on the same files."""
    root, records, source = animal3d_folder
    rng = np.random.default_rng(0)
    stored_order = [int(source[i]["image_id"].decode().split()[0].split(":")[1]) for i in range(len(source))]
    assert sorted(stored_order) == list(range(len(records)))
    for position, index in enumerate(stored_order):
        rec = records[index]
        rgb, mask = picture(root, rec)
        example = source[position]
        ref = animer_example(rgb, mask, rec)
        assert_matches_animer(prepare_example(example), ref, rgb, mask)
        if index == 1:
            assert (prepare_example(example)["mask"] == 1.0).all()     # the mask rule
        for _ in range(3):
            a = sample_augmentation(rng, AugmentConfig())
            out = prepare_example(example, a)
            ref = animer_example(rgb, mask, rec, a.scale, a.rotation_deg, *a.shift, a.color)
            assert_matches_animer(out, ref, rgb, mask, gain=max(a.color))


# ---- the augmentation's distribution
# AniMer's DATASETS.CONFIG: amr/configs_hydra/experiment/default.yaml, taken unchanged by
# AniMerStage1.yaml and AniMerStage2.yaml.
ANIMER_STAGE_CONFIG = {"SCALE_FACTOR": 0.3, "ROT_FACTOR": 30, "TRANS_FACTOR": 0.02, "COLOR_SCALE": 0.2,
                       "ROT_AUG_RATE": 0.6, "TRANS_AUG_RATE": 0.5, "DO_FLIP": False, "FLIP_AUG_RATE": 0.0,
                       "EXTREME_CROP_AUG_RATE": 0.0, "EXTREME_CROP_AUG_LEVEL": 1}


def animer_draws(config, count, seed):
    """A NumPy transcription of amr/datasets/utils.py `do_augmentation` (normals from NumPy's
    legacy generator, the rest from Python's `random`, as there), as columns:
    scale, rot, flip, extreme crop, colour r, g, b, tx, ty."""
    np_rng, py_rng = np.random.RandomState(seed), random.Random(seed)
    rows = []
    for _ in range(count):
        tx = np.clip(np_rng.randn(), -1, 1) * config["TRANS_FACTOR"]
        ty = np.clip(np_rng.randn(), -1, 1) * config["TRANS_FACTOR"]
        scale = np.clip(np_rng.randn(), -1, 1) * config["SCALE_FACTOR"] + 1
        rot = np.clip(np_rng.randn(), -2, 2) * config["ROT_FACTOR"] if py_rng.random() <= config["ROT_AUG_RATE"] else 0
        flip = config["DO_FLIP"] and py_rng.random() <= config["FLIP_AUG_RATE"]
        extreme = py_rng.random() <= config["EXTREME_CROP_AUG_RATE"]
        color = [py_rng.uniform(1 - config["COLOR_SCALE"], 1 + config["COLOR_SCALE"]) for _ in range(3)]
        rows.append([scale, rot, flip, extreme, *color, tx, ty])
    return np.array(rows, np.float64)


def animax_draws(config, count, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        a = sample_augmentation(rng, config)
        rows.append([a.scale, a.rotation_deg, a.flip, 0.0, *a.color, *a.shift])
    return np.array(rows, np.float64)


def as_augment_config(animer):
    """AniMer's keys -> AugmentConfig (TRANS_AUG_RATE and the extreme crop do nothing there)."""
    assert animer["EXTREME_CROP_AUG_RATE"] == 0.0
    return AugmentConfig(scale_factor=animer["SCALE_FACTOR"], rotation_factor=animer["ROT_FACTOR"],
                         rotation_rate=animer["ROT_AUG_RATE"], translation_factor=animer["TRANS_FACTOR"],
                         color_scale=animer["COLOR_SCALE"], flip_rate=animer["FLIP_AUG_RATE"] * animer["DO_FLIP"])


def test_default_augment_config_is_animer_stage_config():
    assert AugmentConfig() == as_augment_config(ANIMER_STAGE_CONFIG)


@pytest.mark.parametrize("animer", [ANIMER_STAGE_CONFIG, {**ANIMER_STAGE_CONFIG, "DO_FLIP": True, "FLIP_AUG_RATE": 0.5,
                                                          "ROT_AUG_RATE": 0.9, "SCALE_FACTOR": 0.25}])
def test_augmentation_draws_as_do_augmentation(animer):
    """Two samples of N draws each: every column's two-sample Kolmogorov-Smirnov distance below
    its 1e-6-level critical value c sqrt(2 / N), c = sqrt(-ln(0.5e-6) / 2) = 2.69 (atoms make the
    test conservative), and each atom's frequency (no rotation, clipped scale / rotation,
    flips) within 5 standard errors sqrt(2 p (1 - p) / N) of AniMer's."""
    n = 20000
    ours, theirs = animax_draws(as_augment_config(animer), n, 0), animer_draws(animer, n, 0)
    critical = np.sqrt(-np.log(0.5e-6) / 2) * np.sqrt(2 / n)
    for column, name in enumerate(["scale", "rot", "flip", "extreme", "r", "g", "b", "tx", "ty"]):
        assert scipy.stats.ks_2samp(ours[:, column], theirs[:, column]).statistic < critical, name
    atoms = {"no rotation": lambda d: d[:, 1] == 0,
             "scale at a clip": lambda d: np.isclose(np.abs(d[:, 0] - 1), animer["SCALE_FACTOR"]),
             "rotation at a clip": lambda d: np.isclose(np.abs(d[:, 1]), 2 * animer["ROT_FACTOR"]),
             "tx at a clip": lambda d: np.isclose(np.abs(d[:, 7]), animer["TRANS_FACTOR"]),
             "flip": lambda d: d[:, 2] > 0}
    for name, atom in atoms.items():
        p = atom(theirs).mean()
        assert abs(atom(ours).mean() - p) <= 5 * np.sqrt(2 * max(p * (1 - p), 1 / n) / n), name
    assert not theirs[:, 3].any()                       # EXTREME_CROP_AUG_RATE 0: never
    assert np.abs(ours[:, 4:7] - 1).max() <= animer["COLOR_SCALE"]


def test_rotation_turns_keypoints_3d_and_global_orient_as_animer():
    """keypoint_3d_processing and rot_aa: R(-rot) about the optical axis, for the same rot that
    turns the 2D crop (checked against cv2 above)."""
    rec = record(np.random.default_rng(5), [40, 30, 200, 180], 300, 240)
    out = crop_example(np.zeros((240, 300, 3), np.uint8), stored(rec), Augmentation(rotation_deg=41.0))
    ref = animer_example(np.zeros((240, 300, 3), np.uint8), np.zeros((240, 300), np.uint8), rec, rot=41.0)
    np.testing.assert_allclose(out["keypoints_3d"], ref["keypoints_3d"], atol=1e-5)
    np.testing.assert_allclose(out["pose"][0], ref["global_orient"], atol=1e-5)
    # Joints 1.. are local rotations: untouched by an in-plane rotation.
    np.testing.assert_allclose(out["pose"][1:], axis_angle_to_rotmat(stored(rec)["pose"][1:].astype(np.float64),
                                                                     xp=np), atol=1e-6)


# ---- --mode eval against AniMer's eval.py on the same inputs
def animer_metrics(pred_kp2d, pred_kp3d, pred_vertices, gt_kp2d, gt_kp3d, gt_vertices, mask):
    """amr/utils/evaluate_metric.py's Evaluator on one batch (torch): PCK@0.1 / 0.15 of
    sqrt(mask area) in crop pixels, AUC over 100 thresholds, PA-MPJPE about keypoint 7 and
    PA-MPVPE (Procrustes with scale via torch.svd), x 1000."""
    import torch

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    pred2, gt2, conf = (t(pred_kp2d) + 0.5) * 256, (t(gt_kp2d)[..., :2] + 0.5) * 256, t(gt_kp2d)[..., 2]
    area = t(mask).reshape(len(mask), -1).sum(-1, keepdim=True)

    def pck(th):
        hits = (torch.norm(pred2 - gt2, dim=-1) / torch.sqrt(area)) < th
        return float(((hits.float() * conf).sum(-1) / conf.sum(-1)).mean())

    def procrustes(s1, s2):
        s1, s2 = s1.permute(0, 2, 1), s2.permute(0, 2, 1)
        x1, x2 = s1 - s1.mean(2, keepdim=True), s2 - s2.mean(2, keepdim=True)
        k = x1 @ x2.permute(0, 2, 1)
        u, _, v = torch.svd(k)
        z = torch.eye(3).repeat(len(k), 1, 1)
        z[:, -1, -1] *= torch.sign(torch.linalg.det(u @ v.permute(0, 2, 1)))
        r = v @ z @ u.permute(0, 2, 1)
        scale = (r @ k).diagonal(dim1=-1, dim2=-2).sum(-1) / (x1 ** 2).sum((1, 2))
        out = (scale[:, None, None] * (r @ s1)
               + (s2.mean(2, keepdim=True) - scale[:, None, None] * (r @ s1.mean(2, keepdim=True))))
        return out.permute(0, 2, 1)

    def pa_error(pred, gt):
        return float((torch.sqrt(((procrustes(pred, gt) - gt) ** 2).sum(-1)).mean(-1) * 1000).mean())

    p3, g3 = t(pred_kp3d), t(gt_kp3d)[..., :3]
    thresholds = np.linspace(0.0, 1.0, 100)
    return {"pck@0.1": pck(0.1), "pck@0.15": pck(0.15),
            "auc": float(np.trapezoid([pck(th) for th in thresholds], thresholds)),
            "pa_mpjpe": pa_error(p3 - p3[:, 7:8], g3 - g3[:, 7:8]),
            "pa_mpvpe": pa_error(t(pred_vertices), t(gt_vertices))}


@pytest.mark.slow
def test_eval_mode_gives_animer_eval_metrics(animal3d_folder, tmp_path, capsys):
    """A converted (tiny, random) AniMer checkpoint evaluated by `--mode eval` on the built folder
    gives, metric by metric, what AniMer's pipeline gives: its crops (cv2), a PyTorch forward from
    the state dict, its Evaluator. One batch (AniMer averages batch means: equal here)."""
    import cv2
    import smplx.lbs as smplx_lbs
    import torch
    from test_convert import animer_state, torch_pipeline, write_lightning_ckpt

    import convert_weights
    from animax import load_smal
    from animax.saved_model import read_config
    from animax.train import loop
    from configs import animal3d

    root, records, _ = animal3d_folder
    sd = animer_state(seed=3)
    write_lightning_ckpt(tmp_path / "animer.ckpt", sd)
    assert convert_weights.main([str(tmp_path / "animer.ckpt"), str(tmp_path / "ckpt")]) == 0
    config = animal3d.get_config()
    config.model = read_config(tmp_path / "ckpt")[0].model
    config.init.path = str(tmp_path / "ckpt")
    config.data.root = str(root / "data")
    config.data.worker_count = 0
    config.data.prefetch = 0
    config.eval_batch_size = 8
    config.eval_overlays = 0
    assert loop.run(config, tmp_path / "run", mode="eval") == 0
    table = capsys.readouterr().out.split("-------- Evaluate ")[1]
    rows = dict(line.split(": ", 1) for line in table.splitlines() if ": " in line)
    ours = {"pa_mpjpe": rows["Avg PA-MPJPE"], "pa_mpvpe": rows["Avg PA-MPVPE"], "auc": rows["AUC"],
            "pck@0.1": rows["PCK@0.1"], "pck@0.15": rows["PCK@0.15"]}

    body = load_smal()
    examples = [animer_example(*picture(root, rec), rec) for rec in records]
    with torch.no_grad():
        out = torch_pipeline(sd, np.stack([e["img"] for e in examples]).astype(np.float32), body)
    sets = body.keypoint_vertex_sets
    keypoints = torch.stack([out["vertices"][:, list(s)].mean(1) for s in sets], 1)
    cam = out["cam"]
    cam_t = torch.stack([cam[:, 1], cam[:, 2], 2 * 1000.0 / (256 * cam[:, 0] + 1e-9)], -1)
    moved = keypoints + cam_t[:, None]
    kp2d = 1000.0 / 256 * moved[..., :2] / moved[..., 2:]
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    gt_pose = np.stack([[cv2.Rodrigues(np.asarray(p, np.float64))[0] for p in np.reshape(rec["pose"], (35, 3))]
                        for rec in records])
    gt_vertices, _ = smplx_lbs.lbs(t([rec["shape"] + rec["shape_extra"] for rec in records]), t(gt_pose),
                                   t(body.v_template), t(body.shapedirs), t(body.posedirs), t(body.j_regressor),
                                   torch.tensor(np.asarray(body.parents)), t(body.lbs_weights), pose2rot=False)
    reference = animer_metrics(kp2d, keypoints, out["vertices"], np.stack([e["keypoints_2d"] for e in examples]),
                               np.stack([e["keypoints_3d"] for e in examples]), gt_vertices,
                               np.stack([e["mask"] for e in examples]))
    for name, value in reference.items():
        # PCK / AUC count hits: equal unless a distance sits within float32 noise of a threshold.
        # The 3D errors: float32 forwards of the same weights (~1e-5 relative), in mm.
        np.testing.assert_allclose(float(ours[name]), value, rtol=1e-4, atol=1e-6, err_msg=name)
    print({name: (float(ours[name]), value) for name, value in reference.items()})
