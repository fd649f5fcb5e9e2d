"""Inference: the notebook API (predictor.Predictor: boxes -> crops -> model -> full-image
arrays), export and overlays; the crop and the rasteriser are `animax.image`'s. infer.py is the
command line over it; runner.py its batch loop."""

from animax.inference.predictor import Predictor

__all__ = ["Predictor"]
