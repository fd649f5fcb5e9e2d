"""Inference: preprocessing (preprocess), the notebook API (predictor.Predictor), export and
overlays. infer.py is the command line over it; runner.py its batch loop."""

from animax.inference.predictor import Predictor

__all__ = ["Predictor"]
