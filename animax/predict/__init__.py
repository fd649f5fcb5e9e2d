"""Still images: boxes -> crops -> model -> full-image arrays, and what infer.py writes per animal.

    predictor = Predictor(model, variables)
    results = predictor.predict(image, boxes=[(40, 60, 360, 300)])    # one dict per animal

predictor.py: the Predictor (the jitted forward, sharded over local devices); inputs.py: image
paths, boxes per image and the jobs they make; detections.py: detector files (MegaDetector,
COCO); run.py: infer.py's batch loop (decode, predict, export in threads); export.py: an
animal's folder or one arrays file.
"""

from animax.predict.predictor import Predictor, prepare, whole_image_box

__all__ = ["Predictor", "prepare", "whole_image_box"]
