"""README_CN.md must stay a section-by-section translation of README.md.

README.md is the page people edit first; these checks turn a forgotten translation into a failing test
instead of a silently stale Chinese page. The Chinese file ends every level-2/3 heading with
`<a id="..."></a>` carrying the English heading's GitHub anchor, so both pages share link targets and the
sections can be paired one to one. Within each pair the tables must have the same number of rows, and the
fenced code blocks (commands, paths, layouts) must be the same text in the same order.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest

from tests.conftest import PROJECT_ROOT

ENGLISH_README = PROJECT_ROOT / "README.md"
CHINESE_README = PROJECT_ROOT / "README_CN.md"
ENGLISH_SWITCH = "English | [中文](README_CN.md)"
CHINESE_SWITCH = "[English](README.md) | 中文"

SECTION_HEADING = re.compile(r"^(#{2,3})\s+(.*?)\s*$")
EXPLICIT_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')


def github_anchor(title: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = title.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchor(title: str) -> str:
    """An explicit `<a id>` wins (the Chinese headings), otherwise GitHub's generated fragment."""
    explicit = EXPLICIT_ANCHOR.search(title)
    return explicit.group(1) if explicit else github_anchor(title)


@dataclass
class Outline:
    """What must match between the two pages; table rows are counted per section (index 0: the intro)."""

    headings: list[tuple[int, str]] = field(default_factory=list)
    code_blocks: list[str] = field(default_factory=list)
    table_rows: list[int] = field(default_factory=lambda: [0])


def outline(markdown: str) -> Outline:
    """Headings, fenced blocks and table rows, ignoring heading-like lines inside fences (`# comment`)."""
    result = Outline()
    fence: list[str] | None = None
    for line in markdown.splitlines():
        if fence is not None:
            fence.append(line)
            if line.startswith("```"):
                result.code_blocks.append("\n".join(fence))
                fence = None
        elif line.startswith("```"):
            fence = [line]
        elif heading := SECTION_HEADING.match(line):
            result.headings.append((len(heading.group(1)), heading_anchor(heading.group(2))))
            result.table_rows.append(0)
        elif line.startswith("|"):
            result.table_rows[-1] += 1
    if fence is not None:
        result.code_blocks.append("\n".join(fence))
    return result


def translation_gaps(english: str, chinese: str) -> list[str]:
    """Every way README_CN.md has fallen out of step with README.md, one readable line each."""
    gaps = []
    if english.splitlines()[:1] != [ENGLISH_SWITCH]:
        gaps.append(f"README.md must start with the language switch line {ENGLISH_SWITCH!r}")
    if chinese.splitlines()[:1] != [CHINESE_SWITCH]:
        gaps.append(f"README_CN.md must start with the language switch line {CHINESE_SWITCH!r}")

    english_outline, chinese_outline = outline(english), outline(chinese)
    english_levels = Counter(level for level, _ in english_outline.headings)
    chinese_levels = Counter(level for level, _ in chinese_outline.headings)
    for level in (2, 3):
        if english_levels[level] != chinese_levels[level]:
            gaps.append(f"level-{level} headings: {english_levels[level]} in README.md, "
                        f"{chinese_levels[level]} in README_CN.md")
    for position, (english_heading, chinese_heading) in enumerate(
            zip_longest(english_outline.headings, chinese_outline.headings), start=1):
        if english_heading != chinese_heading:
            wanted = (f'translate README.md\'s {"#" * english_heading[0]} heading here and end it with '
                      f'<a id="{english_heading[1]}"></a>') if english_heading else "remove it"
            gaps.append(f"section {position}: README.md has {english_heading}, README_CN.md has "
                        f"{chinese_heading}; {wanted}")
            break
    else:
        section_names = ["(intro)"] + [anchor for _, anchor in english_outline.headings]
        for name, english_rows, chinese_rows in zip(section_names, english_outline.table_rows,
                                                    chinese_outline.table_rows):
            if english_rows != chinese_rows:
                gaps.append(f"section {name}: {english_rows} table rows in README.md, {chinese_rows} in README_CN.md")

    if len(english_outline.code_blocks) != len(chinese_outline.code_blocks):
        gaps.append(f"fenced code blocks: {len(english_outline.code_blocks)} in README.md, "
                    f"{len(chinese_outline.code_blocks)} in README_CN.md")
    missing = [(number, block) for number, block in enumerate(english_outline.code_blocks, start=1)
               if block not in chinese_outline.code_blocks]
    for number, block in missing:
        first_line = block.splitlines()[1] if block.count("\n") else block
        gaps.append(f"code block {number} of README.md (starting {first_line!r}) is not verbatim in README_CN.md")
    if not missing and english_outline.code_blocks != chinese_outline.code_blocks:
        gaps.append("README_CN.md has README.md's code blocks in a different order or extra ones")
    return gaps


def read_readmes() -> tuple[str, str]:
    return ENGLISH_README.read_text(encoding="utf-8"), CHINESE_README.read_text(encoding="utf-8")


def test_readme_cn_is_in_step_with_readme():
    english, chinese = read_readmes()
    assert translation_gaps(english, chinese) == []
    assert len(outline(english).headings) >= 10, "README.md's outline parsed to almost nothing"


def test_a_section_added_only_to_readme_is_reported():
    english, chinese = read_readmes()
    extended = english + "\n## Prediction\n\nDraw the boxes.\n\n```bash\npython predict.py --image demo.jpg\n```\n"
    gaps = translation_gaps(extended, chinese)
    assert any("level-2 headings" in gap for gap in gaps)
    assert any('<a id="prediction"></a>' in gap for gap in gaps)
    assert any("python predict.py --image demo.jpg" in gap for gap in gaps)


def test_a_table_row_added_only_to_readme_is_reported():
    english, chinese = read_readmes()
    lines = english.splitlines()
    last_row = max(index for index, line in enumerate(lines) if line.startswith("|"))
    extended = "\n".join(lines[:last_row + 1] + [lines[last_row]] + lines[last_row + 1:])
    gaps = translation_gaps(extended, chinese)
    assert len(gaps) == 1 and "table rows" in gaps[0], gaps


def test_a_changed_command_is_reported():
    english, chinese = read_readmes()
    changed = english.replace("bash scripts/run_demo.sh", "bash scripts/run_demo.sh --fast", 1)
    assert changed != english
    gaps = translation_gaps(changed, chinese)
    assert any("is not verbatim in README_CN.md" in gap for gap in gaps)


def test_headings_inside_code_blocks_are_not_sections():
    markdown = "## Real\n\n```bash\n## not a heading\n# neither\n```\n\n| a |\n|---|\n"
    parsed = outline(markdown)
    assert parsed.headings == [(2, "real")]
    assert parsed.code_blocks == ["```bash\n## not a heading\n# neither\n```"]
    assert parsed.table_rows == [0, 2]
