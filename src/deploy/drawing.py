"""Draw detections on an image: a box outline, and a filled label with the class name and score.

The label box is filled with the class colour and its text is black or white, whichever
contrasts more with that colour, so labels read on any background. Labels sit above their box
when there is room, otherwise just inside its top edge, and are always moved inside the image.
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


def label_origin(box_xyxy: Sequence[float], label_w: int, label_h: int, image_w: int, image_h: int) -> tuple[int, int]:
    """Top-left corner of a label_w x label_h label for a box: above it when it fits, else inside its top
    edge; shifted so that the label lies within the image (as far as the label is not larger than it)."""
    x_min, y_min = float(box_xyxy[0]), float(box_xyxy[1])
    top = y_min - label_h if y_min - label_h >= 0 else y_min
    left = min(max(x_min, 0.0), image_w - label_w)
    top = min(max(top, 0.0), image_h - label_h)
    return int(round(max(left, 0.0))), int(round(max(top, 0.0)))


def draw_detections(image_rgb: np.ndarray, boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) uint8 with each detection drawn; boxes are pixel [x1, y1, x2, y2].

    The best detection is drawn last, so its box and label are on top where detections overlap.
    """
    image = Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8), mode="RGB")
    width, height = image.size
    font_px, line_px = drawing_sizes(height, width)
    font = _font(font_px)
    pen = ImageDraw.Draw(image)
    for index in np.argsort(np.asarray(scores), kind="stable"):
        label = int(labels[index])
        colour = class_colour(label)
        x1, y1, x2, y2 = np.clip(np.asarray(boxes_xyxy[index], dtype=np.float64), 0, [width - 1, height - 1] * 2)
        pen.rectangle((x1, y1, max(x2, x1), max(y2, y1)), outline=colour, width=line_px)
        name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
        text = f"{name} {float(scores[index]):.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        label_w, label_h = right - left + 2 * LABEL_PADDING_PX, bottom - top + 2 * LABEL_PADDING_PX
        origin_x, origin_y = label_origin((x1, y1, x2, y2), label_w, label_h, width, height)
        pen.rectangle((origin_x, origin_y, origin_x + label_w - 1, origin_y + label_h - 1), fill=colour)
        pen.text((origin_x + LABEL_PADDING_PX - left, origin_y + LABEL_PADDING_PX - top), text,
                 fill=text_colour(colour), font=font)
    return np.asarray(image)
