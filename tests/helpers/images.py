"""Generated test images."""

import numpy as np


def smooth_image(height, width, seed=0):
    """uint8 RGB of a few low-frequency waves: strongly asymmetric, yet smooth enough that JPEG
    and OpenCV's 1/32-pixel interpolation steps change it by well under a grey level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        waves = sum(np.cos(2 * np.pi * (fx * x + fy * y) + phase)
                    for fx, fy, phase in rng.uniform([-2, -2, 0], [2, 2, 6.3], (3, 3)))
        channels.append(waves)
    img = np.stack(channels, -1) + np.stack([2 * x, 2 * y, x - y], -1)   # ramps: no symmetry
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(255 * img).astype(np.uint8)
