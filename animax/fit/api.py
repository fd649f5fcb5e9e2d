"""`fit`: the Python API of animax.fit.

    from animax.fit import fit
    result = fit(body, keypoints, image_size=(640, 480))                   # no network: lift 2D
    result = fit(body, keypoints, image_size, masks=masks, start=from_predictions(results))
    result.arrays["pose"]           # [A, T, J, 3, 3]; result.report: loss terms per stage

keypoints [A, T, K, 3]: pixels + confidence of the 26 SMAL keypoints (animax.fit.inputs maps a
file's body parts onto them), NaN for missing; A animals (images) or tracks, T frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from animax.fit.config import FitConfig, default_config
from animax.fit.evidence import build_evidence, clean_keypoints
from animax.fit.init import Start, from_keypoints
from animax.fit.priors import FitPriors, default_priors
from animax.fit.solve import initial_params, outputs, run_stages


@dataclasses.dataclass
class FitResult:
    """arrays {name: [A, T, ...]}: betas, pose, cam_t_full, vertices, joints, keypoints3d,
    keypoints2d (pixels), focal_length; start: the same names for the start (before fitting);
    report: one dict per stage (iterations, seconds, iterations/s, loss and terms)."""
    arrays: dict
    start: dict
    report: list


def fit(body, keypoints, image_size, masks=None, start: Start | None = None, clip: bool = False,
        config: FitConfig | None = None, priors: FitPriors | None = None, progress: bool | None = None) -> FitResult:
    """Fits the body model to keypoints [A, T, K, 3] (and masks: None or [A][T] bool [H, W] or
    None) of frames of size image_size (W, H).

    start: the network's (animax.fit.init.from_predictions / from_tracks), else the prior's mean
    pose with a closed-form camera. clip: the T frames are one sequence per animal (one shape,
    temporal terms) rather than T independent pictures. config: default_config(masks, clip,
    from_network). priors: default_priors(body) (the stand-in's; animer_priors for AniMer's files).
    """
    keypoints = clean_keypoints(keypoints)
    if keypoints.ndim != 4 or keypoints.shape[2] != body.num_keypoints:
        raise ValueError(f"keypoints: expected [A, T, {body.num_keypoints}, 3], got {keypoints.shape}")
    priors = default_priors(body) if priors is None else priors
    has_masks = masks is not None and any(m is not None for row in masks for m in row)
    config = config or default_config(masks=has_masks, clip=clip, from_network=start is not None)
    if not clip:
        config = dataclasses.replace(config, shared_shape=False)
    evidence = build_evidence(keypoints, image_size, masks, grid=config.mask_grid, points=config.mask_points)
    if start is None:
        start = from_keypoints(body, priors, keypoints, np.asarray(evidence.focal), np.asarray(evidence.center),
                               shared_heading=clip)
    params = initial_params(start.betas, start.rotations, start.translation, config.shared_shape)
    before = outputs(params, evidence, body)
    params, report = run_stages(params, evidence, body, priors, config, progress)
    return FitResult(outputs(params, evidence, body), before, report)
