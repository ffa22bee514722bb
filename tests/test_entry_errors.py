"""Every entry script answers a mistake with one line naming the file or key, and an exit status.

The subprocess cases run each script as a user would, with one bad argument, and fail on any
traceback in its output; the in-process cases pin down run_entry's contract (exit statuses,
--debug, SSD_DEBUG, foreign errors).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DEMO_CONFIG, run_script
from src.model_utils.config import ConfigError
from src.model_utils.errors import (DEBUG_FLAG, DEBUG_VARIABLE, RUNTIME_EXIT, USAGE_EXIT, InputFileError, SSDError,
                                    run_entry, wrap_foreign_error)

MISSING = "no_such_dir/missing"


def _cases(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    """(script, arguments, exit status, text the message must contain)."""
    config = ["--config_path", str(DEMO_CONFIG), "--output_path", str(tmp / "out")]
    not_a_checkpoint = tmp / "notes.ckpt"
    not_a_checkpoint.write_text("these are notes, not weights")
    return [
        ("train.py", ["--config_path", f"{MISSING}.yaml"], USAGE_EXIT, f"{MISSING}.yaml"),
        ("train.py", [*config, "--lr", "fast"], USAGE_EXIT, "--lr"),
        ("train.py", [*config, "--batch_sise", "8"], USAGE_EXIT, "batch_size"),
        ("eval.py", config, USAGE_EXIT, "--checkpoint_file_path"),
        ("eval.py", [*config, "--checkpoint_file_path", f"{MISSING}.ckpt"], RUNTIME_EXIT, f"{MISSING}.ckpt"),
        ("export.py", [*config, "--checkpoint_file_path", str(not_a_checkpoint)], RUNTIME_EXIT, "notes.ckpt"),
        ("predict.py", [*config, "--model", f"{MISSING}.onnx", "--input", str(not_a_checkpoint)], RUNTIME_EXIT,
         f"{MISSING}.onnx"),
        ("eval_onnx.py", [*config, "--file_name", f"{MISSING}.onnx"], RUNTIME_EXIT, f"{MISSING}.onnx"),
        ("postprocess.py", config, USAGE_EXIT, "--result_path"),
        ("convert_torchvision_backbone.py", ["--pth", f"{MISSING}.pth"], USAGE_EXIT, f"{MISSING}.pth"),
        ("plot_curves.py", [f"{MISSING}.csv"], RUNTIME_EXIT, f"{MISSING}"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(11), ids=lambda i: f"case{i}")
def test_every_entry_script_answers_a_mistake_in_one_line(tmp_path: Path, index: int) -> None:
    script, args, status, named = _cases(tmp_path)[index]
    done = run_script(script, *args, timeout=300)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-3000:]
    assert done.returncode == status, output[-3000:]
    error_lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and named in error_lines[0], done.stderr[-3000:]


@pytest.mark.slow
def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    done = run_script("eval.py", "--config_path", str(DEMO_CONFIG), "--output_path", str(tmp_path), DEBUG_FLAG)
    assert done.returncode != 0 and "Traceback" in done.stderr and "--checkpoint_file_path" in done.stderr


def _raiser(error: BaseException):
    def main(argv: list[str]) -> int:
        raise error
    return main


@pytest.mark.parametrize("error, status, text", [
    (ConfigError("--lr: expected a number, got 'x'"), USAGE_EXIT, "x.py: error: --lr: expected a number, got 'x'"),
    (SSDError("run failed, see a.log"), RUNTIME_EXIT, "x.py: error: run failed, see a.log"),
    (FileNotFoundError(2, "No such file or directory", "data/a.json"), RUNTIME_EXIT,
     "x.py: error: data/a.json: no such file or directory"),
    (KeyError("boxes"), RUNTIME_EXIT, "x.py: error: KeyError: 'boxes' (unexpected; run again with --debug"),
])
def test_run_entry_prints_one_line_and_returns_the_status(capsys, monkeypatch, error: BaseException, status: int,
                                                           text: str) -> None:
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    assert run_entry(_raiser(error), "x.py", []) == status
    err = capsys.readouterr().err
    assert err.startswith(text) and err.count("\n") == 1


def test_run_entry_passes_arguments_without_the_debug_flag_and_reraises_in_debug(monkeypatch) -> None:
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    seen: list[list[str]] = []
    assert run_entry(lambda argv: seen.append(argv) or 0, "x.py", ["--lr", "1", DEBUG_FLAG]) == 0
    assert seen == [["--lr", "1"]]
    with pytest.raises(SSDError):
        run_entry(_raiser(SSDError("boom")), "x.py", [DEBUG_FLAG])
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(KeyError):
        run_entry(_raiser(KeyError("boxes")), "x.py", [])


def test_foreign_errors_are_wrapped_with_the_file_named(tmp_path: Path) -> None:
    broken = tmp_path / "instances.json"
    broken.write_text('{"images": [')
    try:
        json.loads(broken.read_text())
    except json.JSONDecodeError as error:
        wrapped = wrap_foreign_error(broken, "JSON", error, "fix or re-download it")
    assert isinstance(wrapped, InputFileError)
    assert str(wrapped).startswith(f"{broken}: cannot read it as JSON (Expecting value")
    assert str(wrapped).endswith("; fix or re-download it") and "\n" not in str(wrapped)
