"""The house's layering: packages of src/ import only packages earlier in the data flow.

config -> dataset -> model -> train/eval -> export -> runner: a module that imports a "later"
package (the dataset importing the trainer, export importing evaluation) is how flat code bases
grow cycles and drag pycocotools into an export. The check reads every import statement of
src/ with ``ast``, function-level (lazy) imports included, so it needs no MindSpore.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
#: Earlier packages first; a package may import itself and any package before it.
LAYERS = ("boxes", "model_utils", "data", "models", "weights", "eval", "train", "deploy")


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0] if len(path.relative_to(SRC).parts) > 1 else ""


def _imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, package) of every ``src.<package>`` this module imports, wherever the import sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "src" and len(parts) > 1 and (SRC / parts[1]).is_dir():
                found.append((node.lineno, parts[1]))
    return found


MODULES = sorted(path for path in SRC.rglob("*.py") if _package(path))


def test_every_package_has_a_place_in_the_layers() -> None:
    packages = {path.name for path in SRC.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert packages == set(LAYERS)
    assert [path.name for path in SRC.glob("*.py")] == ["__init__.py"], "modules belong in a package of src/"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SRC)))
def test_module_imports_no_later_package(path: Path) -> None:
    rank = LAYERS.index(_package(path))
    later = [f"line {line}: src.{package}" for line, package in _imported_packages(path)
             if LAYERS.index(package) > rank]
    assert not later, f"{path.relative_to(PROJECT_ROOT)} ({LAYERS[rank]}) imports later packages: {later}"


def test_library_never_imports_an_entry_script() -> None:
    entry_scripts = {path.stem for path in PROJECT_ROOT.glob("*.py")}
    offenders = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(PROJECT_ROOT)}: {name}" for name in names
                          if name.split(".")[0] in entry_scripts]
    assert not offenders


def test_the_checker_sees_a_lazy_import_of_a_later_package(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text("def f():\n    from src.deploy.export import export_inference_model\n    import src.train.loss\n")

    assert _imported_packages(module) == [(2, "deploy"), (2, "deploy"), (3, "train")]
