"""Fitting the SMAL body model to 2D evidence: keypoints, silhouettes and whole clips.

    from animax.fit import fit
    result = fit(body, keypoints, image_size)       # see animax.fit.api

Modules: terms (the objective's pure terms), config (stages as configuration), priors,
evidence (keypoints and masks -> fixed-shape arrays), init (network or closed-form start),
solve (the jitted Adam scan), inputs (DeepLabCut, COCO, masks, keypoint maps), cli (animax-fit).
"""

from animax.fit.api import FitResult, fit
from animax.fit.config import FitConfig, FitStage, TermWeights, default_config
from animax.fit.init import Start, from_keypoints, from_predictions, from_tracks
from animax.fit.priors import FitPriors, animer_priors, default_priors, standin_priors

__all__ = ["FitResult", "fit", "FitConfig", "FitStage", "TermWeights", "default_config", "Start",
           "from_keypoints", "from_predictions", "from_tracks", "FitPriors", "animer_priors", "default_priors",
           "standin_priors"]
