"""AniMer's crop (animax.image.crop) against OpenCV + scikit-image, and the negligible blur it skips."""

import numpy as np
import pytest

from animax.image.crop import IMAGE_MEAN, IMAGE_STD
from animax.predict.predictor import prepare
from helpers.images import smooth_image

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


# Preprocessing against OpenCV + scikit-image (test-only references).
def test_crop_matches_opencv_with_skimage_antialiasing():
    import cv2  # the dev extra installs the test-only references
    import skimage.filters as skimage_filters
    image = smooth_image(900, 1200, seed=5)
    # A 1000-pixel box needs the anti-aliasing blur (f = 1000/256/2 > 1.1); the small one
    # sticks out of the image (zero border) and is not blurred.
    for box, sigma in [((100, 50, 1100, 850), (1000 / 512 - 1) / 2), ((-40, 700, 160, 950), 0.0)]:
        x1, y1, x2, y2 = box
        cx, cy, size = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        source = image.astype(np.float32)
        if sigma:
            source = skimage_filters.gaussian(source, sigma=sigma, mode="nearest", truncate=4.0,
                                              channel_axis=-1, preserve_range=True).astype(np.float32)
        s = size / 256
        dst_to_src = np.array([[s, 0, cx - 128 * s], [0, s, cy - 128 * s]])
        reference = cv2.warpAffine(source, dst_to_src, (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        crop = prepare(image, box).crop * IMAGE_STD + IMAGE_MEAN
        assert np.abs(crop - reference).max() <= 1.0, box


def test_a_negligible_blur_is_skipped_within_its_bound():
    """A 640-pixel box blurs with sigma 0.125, whose side taps weigh 1.3e-14: skipping the blur
    must stay within NEGLIGIBLE_BLUR x 255 grey levels of blurring (scipy); a slightly larger
    sigma (0.2: side taps 3.7e-6) must still blur."""
    import scipy.ndimage

    from animax.image.crop import NEGLIGIBLE_BLUR, antialias_sigma, blur_is_negligible, crop_transform, warp_affine
    image = smooth_image(480, 640, seed=3)
    assert blur_is_negligible(antialias_sigma(640)) and not blur_is_negligible(0.2)
    transform = crop_transform(np.array([320.0, 240.0]), 640.0)
    blurred = scipy.ndimage.gaussian_filter(image.astype(np.float32), sigma=(0.125, 0.125, 0), mode="nearest",
                                            truncate=4.0)
    skipped = warp_affine(image, transform, sigma=0.125)
    assert np.abs(skipped - warp_affine(blurred, transform)).max() <= NEGLIGIBLE_BLUR * 255
