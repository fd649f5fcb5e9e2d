"""Videos and frame folders: animals tracked through a sequence on top of `animax.predict`.

    sequence = open_sequence("clip.mp4")
    tracks, num_frames = track_sequence(predictor, sequence.frames(), first_boxes=[(40, 60, 360, 300)])
    tracks = [smooth_track(track, body) for track in tracks]           # optional
    write_sequence("out/clip", tracks, body, sequence.fps, num_frames, {}, frames=sequence.frames())

frames.py: reading and writing frames; tracker.py: which box is which animal; sequence.py: the
loop over frames; smoothing.py: over time; export.py: a sequence's folder (npz, DeepLabCut
files, glTF from gltf.py, overlay video); run.py: infer.py's loop over sequences.
"""

from animax.track.export import write_sequence
from animax.track.frames import open_sequence
from animax.track.sequence import TrackResult, track_sequence
from animax.track.smoothing import smooth_track

__all__ = ["TrackResult", "open_sequence", "smooth_track", "track_sequence", "write_sequence"]
