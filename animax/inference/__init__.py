"""Inference: the notebook API (predictor.Predictor: boxes -> crops -> model -> full-image
arrays), export and overlays; the crop and the rasteriser are `animax.image`'s. infer.py is the
command line over it; runner.py its batch loop for images, sequence_run.py its loop for videos.

Sequences in Python:

    sequence = open_sequence("clip.mp4")
    tracks, num_frames = track_sequence(predictor, sequence.frames(), first_boxes=[(40, 60, 360, 300)])
    tracks = [smooth(track, variables["smal"]["model"]) for track in tracks]
    write_sequence("out/clip", tracks, variables["smal"]["model"], sequence.fps, num_frames, {},
                   frames=sequence.frames())
"""

from animax.inference.frames import open_sequence
from animax.inference.predictor import Predictor
from animax.inference.sequence import smooth, track_sequence
from animax.inference.sequence_export import write_sequence

__all__ = ["Predictor", "open_sequence", "smooth", "track_sequence", "write_sequence"]
