"""infer.py run in-process, and the inputs of the batch run that several test files read
(conftest's `batch_run` fixture)."""

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

import infer
from helpers.images import smooth_image

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "standin_quadruped.png"            # README's demo input
BATCH = 4


def run_cli(argv):
    """infer.main in-process -> (exit code, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = infer.main([str(a) for a in argv])
    return code, err.getvalue().splitlines()


def error_lines(lines):
    return [line for line in lines if line.startswith("error:")]


# One CLI run over a folder, a glob, a missing path, an empty folder and the bundled example,
# with a COCO boxes file.
EXIF_UPRIGHT = (200, 120)            # (H, W) after honouring the EXIF orientation


EXIF_BOX = (10.0, 100.0, 110.0, 190.0)


MULTI_BOXES_XYWH = [[10, 20, 120, 90], [60, 40, 100, 100], [30, 30, 0, 50], [1000, 10, 50, 50]]


def write_images(folder):
    """The awkward formats, two broken files and a non-image; returns the EXIF image upright."""
    rgb = smooth_image(120, 160, seed=1)
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=95)
    Image.fromarray(rgb).save(folder / "plain.png")
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, np.linspace(60, 255, 160, dtype=np.uint8)[None].repeat(120, 0)])).save(
        folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "deep.png")       # 16-bit grey
    # Stored on its side; orientation 6 says "turn 90 degrees clockwise to display".
    upright = smooth_image(*EXIF_UPRIGHT, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(folder / "exif.jpg", quality=95, exif=exif)
    Image.fromarray(smooth_image(150, 200, seed=3)).save(folder / "multi.png")
    Image.fromarray(smooth_image(50, 50, seed=4)).save(folder / "no_animal.png")    # listed with no boxes
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, "JPEG")
    (folder / "truncated.jpg").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "notes.txt").write_text("not an image suffix: folders skip it\n")
    return upright
