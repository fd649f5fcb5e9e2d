"""Reduced JPEG decoding (animax.image.io.load_reduced, infer.py --reduced-decode): where the
reduced pixels sit in the picture, under every EXIF orientation, against a full decode."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from animax.image.io import load_image, load_reduced
from animax.predict.predictor import prepare
from animax.predict.run import REDUCED_DECODE_MIN_BOX, largest_reduction
from helpers.infer_cli import run_cli

# Sides that are not multiples of 4: libjpeg's last block row and column are partial, which is
# where an orientation that reverses an axis shifts the reduced pixels by a fraction of one.
RAW_W, RAW_H = 1030, 771
BLOB = (301.0, 205.0)            # the stored image's bright spot (x, y)


def _jpeg(orientation: int) -> io.BytesIO:
    """A dark picture with one smooth bright spot, stored with an EXIF orientation."""
    y, x = np.mgrid[:RAW_H, :RAW_W]
    spot = 255.0 * np.exp(-((x - BLOB[0]) ** 2 + (y - BLOB[1]) ** 2) / (2 * 8.0 ** 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    encoded = io.BytesIO()
    Image.fromarray(np.repeat(spot.round().astype(np.uint8)[..., None], 3, -1)).save(
        encoded, "JPEG", quality=95, exif=exif)
    encoded.seek(0)
    return encoded


def _centroid(pixels) -> np.ndarray:
    """(x, y) of the brightness centroid, pixel centres at whole numbers."""
    weight = pixels[..., 0].astype(np.float64)
    weight = np.where(weight > 0.1 * weight.max(), weight, 0.0)
    assert weight.max() > 0, "no spot in the picture"
    y, x = np.mgrid[:weight.shape[0], :weight.shape[1]]
    return np.array([(x * weight).sum(), (y * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decode_places_the_picture_where_a_full_decode_does(orientation):
    full = load_image(_jpeg(orientation))
    reduced, scale = load_reduced(_jpeg(orientation), lambda w, h: 4.0)
    upright = full.shape[1::-1]
    assert scale.factor == 4 and scale.picture_size == upright
    assert reduced.shape[:2] == tuple(-(-s // 4) for s in full.shape[:2])
    # The spot's centre, found in each decode, mapped into the reduced pixels. A 1/4 decode
    # averages 4 x 4 blocks, so a centroid moves by JPEG noise only (~0.01 px here); a partial
    # block counted from the wrong side would move it by (4 - 1030 % 4) / 4 = 0.5 or
    # (4 - 771 % 4) / 4 = 0.25 reduced pixels.
    np.testing.assert_allclose(_centroid(reduced), scale.to_pixels(_centroid(full)), atol=0.05)


def test_reduction_follows_the_boxes_and_formats(tmp_path):
    assert largest_reduction(None, 4000, 3000) == 4000 / REDUCED_DECODE_MIN_BOX    # the square box's side
    assert largest_reduction([(0, 0, 600, 500), (100, 100, 2100, 900)], 4000, 3000) == 600 / REDUCED_DECODE_MIN_BOX
    # Only powers of two up to 8, and never past what the boxes allow.
    assert load_reduced(_jpeg(1), lambda w, h: 3.9)[1].factor == 2
    assert load_reduced(_jpeg(1), lambda w, h: 100.0)[1].factor == 8
    assert load_reduced(_jpeg(1), lambda w, h: 1.9)[1].factor == 1
    png = tmp_path / "picture.png"
    Image.open(_jpeg(1)).save(png)
    pixels, scale = load_reduced(png, lambda w, h: 8.0)     # not a JPEG: decoded in full
    assert scale.factor == 1 and pixels.shape == (RAW_H, RAW_W, 3)


def test_reduced_crop_matches_the_full_crop():
    full = load_image(_jpeg(6))
    reduced, scale = load_reduced(_jpeg(6), lambda w, h: 2.0)
    box = (300.0, 100.0, 800.0, 600.0)          # around the spot (upright: x 565, y 301)
    full_crop, reduced_crop = prepare(full, box).crop, prepare(reduced, box, scale).crop
    # Both crops show the same square of the picture: the spot at the same crop pixel.
    full_spot = _centroid(full_crop - full_crop.min())
    assert np.all(np.abs(full_spot - 128) < 100), full_spot
    np.testing.assert_allclose(_centroid(reduced_crop - reduced_crop.min()), full_spot, atol=0.05)


def test_infer_reduced_decode_reports_the_picture_s_pixels(tmp_path):
    picture = tmp_path / "in" / "spot.jpg"
    picture.parent.mkdir()
    picture.write_bytes(_jpeg(6).getvalue())
    results = {}
    for name, flags in (("full", []), ("reduced", ["--reduced-decode"])):
        code, lines = run_cli(["--input", picture, "--out_dir", tmp_path / name, "--outputs", "json",
                               "--random-weights", *flags])
        assert code == 0, lines
        results[name] = json.loads((tmp_path / name / "spot" / "result.json").read_text())
    full, reduced = results["full"], results["reduced"]
    # The whole picture (upright 771 x 1030) is the box: 1030 / 512 allows a 1/2 decode.
    assert full["decode_factor"] == 1 and reduced["decode_factor"] == 2
    for key in ("image_size", "box", "box_center", "box_size", "focal_length"):
        assert reduced[key] == full[key], key
    assert full["image_size"] == [RAW_H, RAW_W]
