"""Image files -> uint8 RGB pixels, as both the data builders and inference read them."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The most pixels an image may have: 100 megapixels, 300 MB as uint8 RGB. Checked from the file's
# header before anything is decoded, so a small file declaring a huge image (a decompression
# bomb) costs nothing. Camera-trap and DSLR photos are 12-50 megapixels.
MAX_IMAGE_PIXELS = 100_000_000
# Pillow warns at open past its own limit (89 megapixels) and raises past twice that. Our limit
# decides instead (one error line, no warning beside it); a filter, not catch_warnings, because
# images are decoded in several threads and catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path) -> np.ndarray:
    """Reads an image file (a path, or a binary file object such as BytesIO of encoded bytes)
    as uint8 RGB [H, W, 3], EXIF orientation applied.

    Greyscale, palette, RGBA/LA (composited on black, as OpenCV drops alpha), CMYK and
    16-bit images are converted. Raises ValueError naming the file if it cannot be decoded or
    has more than MAX_IMAGE_PIXELS pixels (checked before decoding).
    """
    return np.asarray(open_rgb(path))


@dataclasses.dataclass(frozen=True)
class DecodeScale:
    """Where decoded pixels sit in the picture: the picture's point p (pixel centres at whole
    numbers, after EXIF orientation) is at (p + 0.5) / factor - 0.5 + offset in the pixels.
    factor 1 (offset 0) is a full decode. libjpeg's reduced decode averages factor x factor
    blocks from the raw image's top-left corner, so an axis that EXIF orientation reverses ends
    on a partial block: there the offset is the reduced side minus side / factor."""
    factor: int = 1
    offset: tuple[float, float] = (0.0, 0.0)
    picture_size: tuple[int, int] | None = None     # (W, H) of the full picture; None: the pixels'

    def to_pixels(self, points) -> np.ndarray:
        """Picture coordinates [..., 2] -> coordinates in the decoded pixels."""
        return (np.asarray(points, np.float64) + 0.5) / self.factor - 0.5 + np.asarray(self.offset)


FULL_SCALE = DecodeScale()
# libjpeg decodes at 1/2, 1/4 and 1/8 scale (its DCT scaling, PIL's `draft`) for about that
# share of the work.
JPEG_FACTORS = (8, 4, 2)
# EXIF orientation -> whether the upright picture's x and y axes run against the stored image's.
_REVERSED_AXES = {1: (False, False), 2: (True, False), 3: (True, True), 4: (False, True),
                  5: (False, False), 6: (True, False), 7: (True, True), 8: (False, True)}


def load_reduced(path, largest_factor: Callable[[int, int], float]) -> tuple[np.ndarray, DecodeScale]:
    """`load_image`, a JPEG decoded at 1/2, 1/4 or 1/8 scale where `largest_factor(W, H)` (the
    upright picture's size) allows it: e.g. the reduction that keeps every box of the picture
    at least so many pixels wide. Other formats decode in full. -> (pixels, their DecodeScale)."""
    image, scale = _open(path, largest_factor)
    return np.asarray(image), scale


def open_rgb(path) -> Image.Image:
    """`load_image`'s decoding, as a loaded RGB PIL image (e.g. to attach a mask as alpha
    without another copy of the pixels)."""
    return _open(path, None)[0]


def _open(path, largest_factor) -> tuple[Image.Image, DecodeScale]:
    is_file_object = hasattr(path, "read")
    source = path if is_file_object else Path(path)
    name = getattr(path, "name", "image bytes") if is_file_object else source
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _TooLarge(f"{name}: image of {width}x{height} pixels, more than the limit of "
                                f"{MAX_IMAGE_PIXELS} pixels")
            scale = FULL_SCALE if largest_factor is None else _draft(im, largest_factor)
            im.load()
            # In place: the copying form copies every image, even one without an orientation tag.
            ImageOps.exif_transpose(im, in_place=True)
            return _to_rgb(im), scale
    except _TooLarge as e:
        raise ValueError(str(e)) from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name}: image larger than the limit of {MAX_IMAGE_PIXELS} pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from None


def _draft(im: Image.Image, largest_factor) -> DecodeScale:
    """Asks libjpeg for a reduced decode (before `load`) and says where its pixels sit."""
    width, height = im.size
    orientation = im.getexif().get(0x0112, 1) if im.format == "JPEG" else 1
    reversed_x, reversed_y = _REVERSED_AXES.get(orientation, (False, False))
    swapped = orientation in (5, 6, 7, 8)       # stored on its side
    upright = (height, width) if swapped else (width, height)
    allowed = largest_factor(*upright)
    factor = next((f for f in JPEG_FACTORS if f <= allowed and min(width, height) >= f), 1)
    if im.format != "JPEG" or factor == 1:
        return DecodeScale(picture_size=upright)
    # draft picks the largest scale whose size is at least the one asked: factor itself here.
    im.draft(im.mode, (width // factor, height // factor))
    if im.size != (-(-width // factor), -(-height // factor)):
        raise ValueError(f"reduced JPEG decode gave {im.size} for {width}x{height} at 1/{factor}")
    reduced = im.size[::-1] if swapped else im.size
    offset = tuple(r - s / factor if flip else 0.0
                   for r, s, flip in zip(reduced, upright, (reversed_x, reversed_y)))
    return DecodeScale(factor, offset, upright)


class _TooLarge(ValueError):
    pass


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the full range down to 8 bits.
        a = np.asarray(im, np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.clip(np.round(a / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode == "F":
        grey = np.clip(np.round(np.asarray(im) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), np.float32)
        return Image.fromarray(np.round(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8))
    # The decoded pixels stay with the image object after the `with` closes its file.
    return im if im.mode == "RGB" else im.convert("RGB")
