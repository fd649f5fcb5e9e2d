"""Deprecated: the names of the old `animax.inference` package, kept for one release.

Its modules now live in `animax.predict` (still images), `animax.track` (sequences),
`animax.viz` (overlays) and `animax.loading` (where a model comes from). Only these package-level
names are re-exported; import from the new packages.
"""

from animax.predict import Predictor
from animax.track import open_sequence, track_sequence, write_sequence
from animax.track import smooth_track as smooth

__all__ = ["Predictor", "open_sequence", "smooth", "track_sequence", "write_sequence"]
