"""Image files -> uint8 RGB pixels, as both the data builders and inference read them."""

from __future__ import annotations

import warnings
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


def open_rgb(path) -> Image.Image:
    """`load_image`'s decoding, as a loaded RGB PIL image (e.g. to attach a mask as alpha
    without another copy of the pixels)."""
    is_file_object = hasattr(path, "read")
    source = path if is_file_object else Path(path)
    name = getattr(path, "name", "image bytes") if is_file_object else source
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _TooLarge(f"{name}: image of {width}x{height} pixels, more than the limit of "
                                f"{MAX_IMAGE_PIXELS} pixels")
            im.load()
            # In place: the copying form copies every image, even one without an orientation tag.
            ImageOps.exif_transpose(im, in_place=True)
            return _to_rgb(im)
    except _TooLarge as e:
        raise ValueError(str(e)) from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name}: image larger than the limit of {MAX_IMAGE_PIXELS} pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ValueError(f"{name}: cannot read image ({type(e).__name__}: {e})") from None


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
