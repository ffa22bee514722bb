"""Library code reports through the project's logger ("ssd"); only entry scripts print.

The entry scripts attach the console and the per-rank log file to that logger (setup_logger), so
what the library says (MindRecord conversion, downloads, evaluation backend) and the Python warnings
it raises land in the run's log files instead of only on a console that a cluster launcher may throw away.
"""
from __future__ import annotations

import ast
import logging
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from src.data.demo_data import generate_demo_dataset
from src.data.mindrecord import TRAIN_PREFIX, ensure_mindrecord
from src.model_utils.config import load_config
from src.model_utils.device_adapter import setup_logger
from tests.conftest import DEMO_CONFIG, PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
#: (module, function) that may print: command-line front ends that behave like argparse or a script.
ALLOWED_PRINTS = {
    ("src/model_utils/config.py", "parse_args"),  # --help text, like argparse's own
    ("src/model_utils/config.py", "_exit_with_error"),  # the one-line usage error on stderr, like argparse's
    ("src/data/demo_data.py", "main"),  # python -m src.data.demo_data, the scripts' demo-data step
    ("src/model_utils/errors.py", "run_entry"),  # every entry script's one-line error on stderr
}


def _prints(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every print() call in a module."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                found.append((function, child.lineno))
            visit(child, name)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def test_library_modules_do_not_print() -> None:
    offenders = [f"{path.relative_to(PROJECT_ROOT)}:{line} in {function}"
                 for path in sorted(SRC.rglob("*.py")) for function, line in _prints(path)
                 if (str(path.relative_to(PROJECT_ROOT)), function) not in ALLOWED_PRINTS]
    assert not offenders, "use logging.getLogger('ssd') in library code: " + ", ".join(offenders)


def test_the_scan_finds_a_print(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    print('x')\n")
    assert _prints(module) == [("f", 2)]


@pytest.fixture
def rank_log(tmp_path: Path) -> Iterator[Path]:
    """setup_logger as train.py calls it; yields the rank's log file and undoes the set-up afterwards."""
    with warnings.catch_warnings():  # restores the warnings module's display hook captureWarnings replaced
        warnings.simplefilter("always")
        setup_logger(tmp_path / "out", rank=0, name="train")
        try:
            yield tmp_path / "out" / "log" / "train_rank0.log"
        finally:
            logging.captureWarnings(False)
            for logger in (logging.getLogger("ssd"), logging.getLogger("py.warnings")):
                for handler in list(logger.handlers):
                    handler.close()
                    logger.removeHandler(handler)
                logger.propagate = True


def test_conversion_messages_reach_the_rank_log_file(tmp_path: Path, rank_log: Path) -> None:
    generate_demo_dataset(tmp_path / "coco", 3, 1, image_size=64)
    config = load_config(DEMO_CONFIG, {"data_path": str(tmp_path), "mindrecord_dir": "mr",
                                       "output_path": str(tmp_path / "out")})
    ensure_mindrecord(config, for_training=True)
    assert f"{TRAIN_PREFIX}: wrote 3 images" in rank_log.read_text()


def test_library_warnings_reach_the_rank_log_file_and_stderr_unchanged(rank_log: Path, capsys) -> None:
    warnings.warn_explicit("3 detections dropped", UserWarning, "coco.py", 161)
    assert capsys.readouterr().err == warnings.formatwarning("3 detections dropped", UserWarning, "coco.py", 161)
    assert "[rank 0] coco.py:161: UserWarning: 3 detections dropped\n" in rank_log.read_text()
