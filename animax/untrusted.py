"""Reading files a user could have been sent: bounded work, one clear error naming the file.

animax's readers of users' files (images, videos, label files, detector outputs, annotation
JSON) never run code from them, never allocate by a size a header merely claims, and turn a
hostile or broken file into one ValueError naming it. The limits shared by several readers live
here; those of one reader live beside it (`animax.image.io.MAX_IMAGE_PIXELS`,
`animax.track.frames.MAX_FRAME_PIXELS`, `animax.data.dlc.MAX_ROWS`, `animax.data.hdf5`).
"""

from __future__ import annotations

import json
from pathlib import Path

# The largest JSON file read. COCO's own 2017 train instances file, the largest annotation file
# in common use, is 448 MB; MegaDetector outputs of a million images are of that order. Python
# holds parsed JSON in several times its size, so anything larger is refused before parsing.
MAX_JSON_BYTES = 512 << 20


class RefusedFileError(ValueError):
    """An untrusted file the readers refuse; the message names the file."""


def read_json(path, what: str = "JSON file", max_bytes: int | None = None):
    """A JSON file's content; ValueError naming the file when it is missing, unreadable, larger
    than max_bytes (default MAX_JSON_BYTES), not JSON, nested too deeply or holds an integer too long to convert.
    NaN and Infinity are accepted (Python writes them): the callers check numbers they use."""
    path = Path(path)
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise RefusedFileError(f"{path}: {what} of {size} bytes, more than the limit of {max_bytes}")
        with open(path, "rb") as f:
            text = f.read(max_bytes + 1)            # the file may have grown since
        if len(text) > max_bytes:
            raise RefusedFileError(f"{path}: {what} larger than the limit of {max_bytes} bytes")
        return json.loads(text)
    except FileNotFoundError:
        raise RefusedFileError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise RefusedFileError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise RefusedFileError(f"{path}: not UTF-8 text ({e})") from None
    except RecursionError:
        raise RefusedFileError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise RefusedFileError(f"{path}: not usable JSON ({e})") from None      # e.g. an integer of 5000 digits
    except OSError as e:
        raise RefusedFileError(f"{path}: cannot read {what} ({e.strerror or e})") from None
