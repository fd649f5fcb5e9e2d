"""The app's boxes: typed or clicked into a text box, one box a line, and drawn on the picture.

    horse.jpg: 40 60 360 300        a box of the photo horse.jpg (x1 y1 x2 y2, pixels)
    40 60 360 300                   a box of the only photo (or of a clip's first frame)

The text is the one place a box lives: a click on the picture adds a corner, the second click
the line of the box they span, and a user may type, paste or delete lines as well. Pure
functions of the text and the pictures, so they are tested without a browser.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from animax.predict.inputs import box_problem

BOX_COLORS = ((255, 80, 60), (60, 160, 255), (90, 210, 90), (255, 200, 40), (190, 100, 230), (60, 220, 220))
CORNER_RADIUS = 5


class BoxTextError(ValueError):
    """A line of the boxes text that is not a box; the message names the line."""


def parse_box_text(text: str, names=(), sizes=None) -> dict[str, list[tuple[float, float, float, float]]]:
    """The boxes of each picture named in `names` ({name: [(x1, y1, x2, y2), ...]}, in order).

    A line without a name belongs to the only picture (an error when there are several).
    sizes: {name: (width, height)} to check that each box overlaps its picture
    (`animax.predict.inputs.box_problem`). Raises BoxTextError naming the bad line.
    """
    names = list(names)
    boxes = {name: [] for name in names}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, numbers = line.rpartition(":")
        name = name.strip() if colon else ""
        if not name:
            if len(names) != 1:
                raise BoxTextError(f"line {number} '{line}': name the photo (e.g. 'horse.jpg: x1 y1 x2 y2'): "
                                   f"{len(names)} photos are loaded")
            name = names[0]
        if name not in boxes:
            raise BoxTextError(f"line {number} '{line}': no photo named '{name}' is loaded")
        try:
            box = tuple(float(v) for v in numbers.replace(",", " ").split())
        except ValueError:
            box = ()
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise BoxTextError(f"line {number} '{line}': expected four numbers x1 y1 x2 y2 (pixels)")
        if sizes is not None and (problem := box_problem(box, *sizes[name])):
            raise BoxTextError(f"line {number} '{line}': {problem}")
        boxes[name].append(box)
    return boxes


def box_line(box, name: str | None = None) -> str:
    """The text line of a box: `name: x1 y1 x2 y2` (whole pixels), or without the name."""
    numbers = " ".join(f"{round(v)}" for v in box)
    return numbers if name is None else f"{name}: {numbers}"


def add_corner(text: str, corner, pending, name: str | None = None):
    """A click at `corner` (x, y): the first of two starts a box, the second ends it.

    pending: the first corner of a box being drawn, or None. Returns (text, pending): the text
    with the box's line added once both corners are known, and the corner still waiting.
    """
    x, y = (float(v) for v in corner)
    if pending is None:
        return text, (x, y)
    px, py = pending
    box = (min(px, x), min(py, y), max(px, x), max(py, y))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:      # a double click: start again from here
        return text, (x, y)
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines + [box_line(box, name)]), None


def draw_boxes(image: np.ndarray, boxes, pending=None) -> np.ndarray:
    """A copy of the uint8 RGB picture with each box outlined and numbered, and the pending
    corner marked. Drawn at the picture's own size, so that a click's pixel is the picture's."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(image.shape[:2]) / 300))
    for k, box in enumerate(boxes):
        color = BOX_COLORS[k % len(BOX_COLORS)]
        draw.rectangle([float(v) for v in box], outline=color, width=width)
        draw.text((float(box[0]) + width + 2, float(box[1]) + width + 1), str(k), fill=color)
    if pending is not None:
        x, y = pending
        r = CORNER_RADIUS
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), fill=BOX_COLORS[len(boxes) % 6])
    return np.asarray(picture)
