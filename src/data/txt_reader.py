"""The plain txt list (dataset `other`): one line per image, `relative/path.jpg x1,y1,x2,y2,cls ...`, read by
`read_txt`. Class indices refer to `config.classes`, so this format cannot name its classes: the config must.
See `annotations` for what is counted and skipped.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from src.data.annotations import (BAD_NUMBER, CORRUPT_IMAGE, DUPLICATE_FILE, UNKNOWN_CLASS, AnnotationError,
                                  ConversionReport, ImageRecord, finish_record, image_header, same_file_key)

def _txt_box(token: str, anno_path: Path, line_no: int) -> tuple[list[float], int]:
    """Parse `x1,y1,x2,y2,cls` (x first, as the seed's README documents) into ([y1,x1,y2,x2], cls)."""
    parts = token.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(p) for p in parts[:4])
        cls = int(parts[4])
    except ValueError:
        raise AnnotationError(f"{anno_path}:{line_no + 1}: box {token!r} is not 'x1,y1,x2,y2,class_index' "
                              f"(pixels, x first, integer class index)") from None
    return [y1, x1, y2, x2], cls


def _txt_lines(anno_path: Path, image_dir: Path) -> tuple[list[tuple[int, list[str]]], dict[int, str]]:
    """(0-based line index, tokens) of every non-empty line, and {line index: example} for the lines
    whose image another line names too."""
    lines = [(line_no, line.split()) for line_no, line in enumerate(anno_path.read_text(encoding="utf-8").splitlines())
             if line.split()]
    keys = [same_file_key(image_dir / tokens[0]) for _, tokens in lines]
    line_numbers = defaultdict(list)
    for (line_no, _), key in zip(lines, keys):
        line_numbers[key].append(str(line_no + 1))
    duplicates = {line_no: f"{anno_path.name}:{line_no + 1} {tokens[0]} (lines {' and '.join(line_numbers[key])})"
                  for (line_no, tokens), key in zip(lines, keys) if len(line_numbers[key]) > 1}
    return lines, duplicates


def read_txt(anno_path: Path, image_dir: Path, classes: Sequence[str],
             report: ConversionReport) -> list[ImageRecord]:
    """Read the one-line-per-image format `rel/path.jpg x1,y1,x2,y2,cls ...`; id = line index (0-based).

    Columns are x FIRST as the seed's README says (the seed's code read them y first, bug B3). Class
    indices outside 1..len(classes)-1 count as unknown classes. Sizes come from the image headers.
    NaN/inf coordinates skip their box, and lines naming an image another line names too are skipped.
    """
    anno_path, image_dir = Path(anno_path), Path(image_dir)
    lines, duplicates = _txt_lines(anno_path, image_dir)
    records = []
    for line_no, tokens in lines:
        name = tokens[0]
        parsed = [(token, *_txt_box(token, anno_path, line_no)) for token in tokens[1:]]  # format first: it stops
        if line_no in duplicates:
            report.add(DUPLICATE_FILE, duplicates[line_no])
            continue
        image_path = image_dir / name
        header = image_header(image_path)
        if header is None:
            report.add(CORRUPT_IMAGE, name)
            continue
        boxes, labels = [], []
        for token, box, cls in parsed:
            if not all(math.isfinite(value) for value in box):
                report.add(BAD_NUMBER, f"{anno_path.name}:{line_no + 1} {name}: {token}")
                continue
            if not 0 < cls < len(classes):
                report.add(UNKNOWN_CLASS, name)
                continue
            boxes.append(box)
            labels.append(cls)
        records.append(finish_record(line_no, image_path, header[0], header[1], boxes, labels, name, report))
    return records
