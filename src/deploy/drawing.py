"""Draw detections on an image: a box outline, and a filled label with the class name and score.

The label box is filled with the class colour and its text is black or white, whichever
contrasts more with that colour, so labels read on any background. Labels sit above their box
when there is room, otherwise just inside its top edge; a label that would cover a better
detection's label moves below or inside the bottom of its box; labels always stay inside the image.
Sizes scale with the image so a 300 px demo image and a 4000 px photo both stay legible.
"""
from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Well-separated colours for the first classes (RGB); later classes step around the hue circle.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
           (255, 225, 25), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
           (128, 128, 128), (255, 99, 71))
_GOLDEN_RATIO_FRACTION = 0.6180339887
MIN_FONT_PX = 11
FONT_SHARE_OF_SHORT_SIDE = 0.035
LABEL_PADDING_PX = 2


def class_colour(label: int) -> tuple[int, int, int]:
    """Colour of training class ``label`` (1 = first foreground class): the palette, then golden-ratio hues."""
    index = int(label) - 1
    if 0 <= index < len(PALETTE):
        return PALETTE[index]
    hue = (index * _GOLDEN_RATIO_FRACTION) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def _relative_luminance(colour: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in colour)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever has the higher WCAG contrast ratio against ``fill``."""
    luminance = _relative_luminance(fill)
    contrast_black, contrast_white = (luminance + 0.05) / 0.05, 1.05 / (luminance + 0.05)
    return (0, 0, 0) if contrast_black >= contrast_white else (255, 255, 255)


@lru_cache(maxsize=8)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size_px)


def drawing_sizes(height: int, width: int) -> tuple[int, int]:
    """(font size, box line width) in pixels for an image of this size."""
    short_side = min(height, width)
    return max(MIN_FONT_PX, round(short_side * FONT_SHARE_OF_SHORT_SIDE)), max(2, round(short_side / 200))


def _overlap_area(a: Sequence[int], b: Sequence[int]) -> int:
    """Shared area of two rectangles (x1, y1, x2, y2), exclusive max."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def label_origin(box_xyxy: Sequence[float], label_w: int, label_h: int, image_w: int, image_h: int,
                 taken: Sequence[Sequence[int]] = ()) -> tuple[int, int]:
    """Top-left corner of a label_w x label_h label for a box, kept inside the image.

    Places, best first: above the box, just inside its top edge, below it, just inside its bottom
    edge. The first that overlaps none of the ``taken`` label rectangles (x1, y1, x2, y2) wins, else
    the one that overlaps them least, so that labels of neighbouring boxes stay readable.
    """
    x_min, y_min, y_max = float(box_xyxy[0]), float(box_xyxy[1]), float(box_xyxy[3])
    left = max(min(max(x_min, 0.0), image_w - label_w), 0.0)
    tops = [y_min - label_h] if y_min - label_h >= 0 else []
    tops += [y_min, y_max, y_max - label_h]
    origins = []
    for top in tops:
        origin = int(round(left)), int(round(max(min(max(top, 0.0), image_h - label_h), 0.0)))
        if origin not in origins:
            origins.append(origin)
    return min(origins, key=lambda o: sum(_overlap_area((o[0], o[1], o[0] + label_w, o[1] + label_h), rect)
                                          for rect in taken))


def draw_detections(image_rgb: np.ndarray, boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) uint8 with each detection drawn; boxes are pixel [x1, y1, x2, y2].

    Labels are placed best detection first (so it gets the place above its box) and drawn after
    every box, so no outline crosses a label; the best detection's box and label are drawn last,
    on top where detections overlap.
    """
    image = Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8), mode="RGB")
    width, height = image.size
    font_px, line_px = drawing_sizes(height, width)
    font = _font(font_px)
    pen = ImageDraw.Draw(image)
    best_first = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    boxes = {index: np.clip(np.asarray(boxes_xyxy[index], dtype=np.float64), 0, [width - 1, height - 1] * 2)
             for index in best_first}
    labels_drawn = {}
    for index in best_first:
        label = int(labels[index])
        name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
        text = f"{name} {float(scores[index]):.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        label_w, label_h = right - left + 2 * LABEL_PADDING_PX, bottom - top + 2 * LABEL_PADDING_PX
        taken = [rect for rect, _, _ in labels_drawn.values()]
        x, y = label_origin(boxes[index], label_w, label_h, width, height, taken)
        labels_drawn[index] = ((x, y, x + label_w, y + label_h), text, (x + LABEL_PADDING_PX - left,
                                                                       y + LABEL_PADDING_PX - top))
    for index in best_first[::-1]:
        x1, y1, x2, y2 = boxes[index]
        pen.rectangle((x1, y1, max(x2, x1), max(y2, y1)), outline=class_colour(int(labels[index])), width=line_px)
    for index in best_first[::-1]:
        colour = class_colour(int(labels[index]))
        (x1, y1, x2, y2), text, text_origin = labels_drawn[index]
        pen.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
        pen.text(text_origin, text, fill=text_colour(colour), font=font)
    return np.asarray(image)
