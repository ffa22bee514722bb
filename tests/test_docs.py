"""README.md, README_CN.md and docs/*.md point only at things that exist.

Two kinds of reference are checked. Relative Markdown links (`[text](docs/USAGE.md#training)`)
must name an existing file, and a `#fragment` must be a heading (or `<a id>`) of the page it
points at. Repository paths written as code (`src/models/registry.py`, `config/*.yaml`,
`scripts/run_demo.sh`, also inside commands and fenced blocks) must exist when their first folder
is one of the repository's source folders, and a bare `name.py` / `.sh` / `.yaml` in inline code
must be a file of the repository root, `scripts/` or `config/`; a glob must match something.
Everything else is left alone by rule: run-time outputs (`output/...`, `LOG/...`, `result_Files/`,
`ascend310_infer/out/...`), placeholders (`<data_path>/...`), absolute paths and paths outside the
checkout (`../shared/...`).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.test_readme_cn import heading_anchor

PAGES = sorted([PROJECT_ROOT / "README.md", PROJECT_ROOT / "README_CN.md", *(PROJECT_ROOT / "docs").glob("*.md")])

#: Folders of the repository whose files the pages name; a path starting elsewhere is not checked.
SOURCE_FOLDERS = ("src", "config", "scripts", "docs", "bench", "tests", "ascend310_infer")
#: Folders that builds and runs create inside SOURCE_FOLDERS (not in the repository).
RUN_TIME_OUTPUTS = ("ascend310_infer/out/",)

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
EXPLICIT_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
REPO_PATH = re.compile(rf"^(?:\./)?((?:{'|'.join(SOURCE_FOLDERS)})/[\w.*/-]*)$")
#: A bare file name in inline code (`train.py`, `run_eval.sh`, `ssd300_config.yaml`) is a file of one of these.
BARE_NAME = re.compile(r"^[\w.-]+\.(?:py|sh|yaml)$")
BARE_NAME_FOLDERS = ("", "scripts", "config")


def split_fences(markdown: str) -> tuple[str, str]:
    """(prose, fenced code) of a page, so headings and links are read from the prose only."""
    prose, code, fenced = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            prose.append(line)
    return "\n".join(prose), "\n".join(code)


def anchors(page: Path) -> set[str]:
    """Link targets of a page: GitHub's fragment of every heading plus every explicit `<a id>`."""
    prose, _ = split_fences(page.read_text(encoding="utf-8"))
    found = set(EXPLICIT_ANCHOR.findall(prose))
    for line in prose.splitlines():
        if heading := HEADING.match(line):
            found.add(heading_anchor(heading.group(1)))
    return found


def repo_path_candidates(markdown: str) -> list[str]:
    """The words of inline code and of fenced blocks that look like repository paths."""
    prose, code = split_fences(markdown)
    words = " ".join(INLINE_CODE.findall(prose)).split() + code.split()
    candidates = []
    for word in words:
        word = word.strip().strip("'\",;:()[]").rstrip(".")
        if "<" in word or "{" in word or "$" in word:
            continue  # a placeholder, not a path
        match = REPO_PATH.match(word)
        if match and not match.group(1).startswith(RUN_TIME_OUTPUTS):
            candidates.append(match.group(1))
    return candidates


def missing_repo_paths(markdown: str) -> list[str]:
    missing = []
    for path in repo_path_candidates(markdown):
        exists = any(PROJECT_ROOT.glob(path)) if "*" in path else (PROJECT_ROOT / path).exists()
        if not exists:
            missing.append(path)
    prose, _ = split_fences(markdown)
    for name in INLINE_CODE.findall(prose):
        if BARE_NAME.match(name) and not any((PROJECT_ROOT / folder / name).is_file() for folder in BARE_NAME_FOLDERS):
            missing.append(name)
    return missing


def broken_links(page: Path) -> list[str]:
    prose, _ = split_fences(page.read_text(encoding="utf-8"))
    broken = []
    for target in MARKDOWN_LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {file_part}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT_ROOT)))
def test_repository_paths_exist(page):
    assert missing_repo_paths(page.read_text(encoding="utf-8")) == []


def test_the_readme_links_the_moved_write_ups():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("docs/PERFORMANCE.md", "docs/MODEL_ZOO_DIFFERENCES.md", "docs/USAGE.md"):
        assert f"]({page}" in readme, f"README.md does not link {page}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    markdown = ("See `src/eval_utils.py`, `config/*.yaml`, `output/demo/curves.png`, `<data_path>/x`,\n"
                "`../shared/data/coco128`, `ascend310_infer/out/main`, `train.py`, `run_eval.sh`, `gone.yaml`,\n"
                "`detections.json`.\n\n"
                "```bash\nbash scripts/run_demo.sh\nbash scripts/run_nothing.sh   # src/ssd.py\n```\n")
    assert missing_repo_paths(markdown) == ["src/eval_utils.py", "scripts/run_nothing.sh", "src/ssd.py", "gone.yaml"]

    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Real section\n\n[ok](#real-section) [gone](#nowhere) [web](https://x.org)\n"
                    "[file](missing.md) [top](page.md#title)\n\n```\n[not a link](inside_a_fence.md)\n```\n",
                    encoding="utf-8")
    assert broken_links(page) == ["#nowhere: no heading #nowhere in page.md", "missing.md: no file missing.md"]
