"""The config a model was made with, found beside the model file, so a checkpoint alone is enough to use it.

train.py writes the fully resolved config of a run as ``config.yaml`` beside its checkpoints
(``<output_path>/ckpt_<rank>/``, so ``best_map.ckpt`` has it too) and export.py writes it as
``<exported file>.config.yaml`` beside the exported file (``ssd.onnx`` -> ``ssd.onnx.config.yaml``).
eval.py, predict.py, export.py and eval_onnx.py then use that file when ``--config_path`` is not on
the command line; an explicit ``--config_path`` still wins, but one that disagrees with the model's
own config on what the weights depend on (network, class count, input size) is refused, naming both
files: such a model would load and silently predict garbage (the input size does not change a
single tensor shape). A model without a config beside it (a model-zoo checkpoint) needs
``--config_path``, as it always did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from src.model_utils.config import DEFAULT_CONFIG_PATH, ConfigError, command_line_keys, command_line_value
from src.model_utils.config import load_config
from src.model_utils.errors import UsageError

#: The resolved config train.py writes in each checkpoint folder.
RUN_CONFIG_NAME = "config.yaml"
#: What export.py appends to the exported file's name for the config written beside it.
EXPORT_CONFIG_SUFFIX = ".config.yaml"
#: The keys a model's tensors and its input depend on: an explicit config must agree on them.
MODEL_KEYS = ("model_name", "num_classes", "img_shape")


def config_beside(model_path: str | Path) -> Path:
    """Where the config of ``model_path`` lives: the folder's config.yaml for a .ckpt, else ``<file>.config.yaml``."""
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".ckpt":
        return model_path.parent / RUN_CONFIG_NAME
    return model_path.with_name(model_path.name + EXPORT_CONFIG_SUFFIX)


def argv_with_model_config(argv: Sequence[str], model_flag: str, model_path: str | Path | None = None) -> list[str]:
    """``argv`` with ``--config_path`` of the config beside the model added when it has none.

    The model is ``model_path`` or else the value of ``--<model_flag>`` in ``argv``. ``argv`` is left
    as it is with ``--config_path`` or ``--help`` given, for a model path that is unset or not a file
    (the script's own check then names the problem) and for malformed options (parse_args reports
    them). A model file without a config beside it is a UsageError telling to pass ``--config_path``.
    """
    args = list(argv)
    try:
        given = command_line_keys(args)
        model_path = model_path or command_line_value(args, model_flag)
    except ConfigError:
        return args
    if {"config_path", "help"} & given or not model_path or not Path(model_path).is_file():
        return args
    beside = config_beside(model_path)
    if not beside.is_file():
        raise UsageError(f"no --config_path given and no {beside.name} beside --{model_flag} {model_path} (train.py "
                         "and export.py write one, a model-zoo checkpoint has none); pass --config_path with the "
                         "config the model was trained with")
    return ["--config_path", str(beside), *args]


def check_model_config(config: Any, model_path: str | Path, argv: Sequence[str]) -> str:
    """Refuse a config whose network, class count or input size differ from the model's own config.

    ``argv`` is what the config was parsed from (it names the file and the overrides). Returns the
    line to log: which config is used. Nothing to compare for a model without a config beside it.
    """
    used = command_line_value(argv, "config_path") or str(DEFAULT_CONFIG_PATH)
    beside = config_beside(model_path)
    if not beside.is_file():
        return f"config {used} (no {beside.name} beside {model_path})"
    own = load_config(beside)
    for key in MODEL_KEYS:
        if getattr(config, key) != getattr(own, key):
            raise UsageError(f"{key} is {getattr(config, key)} in {used} (with the command line) but "
                             f"{getattr(own, key)} in {beside}, the config {model_path} was made with; drop "
                             f"--config_path and --{key} to use {beside}, or pass the model made with {used}")
    found = " (found beside the model)" if Path(used).resolve() == beside.resolve() else f" (agrees with {beside})"
    return f"config {used}{found}"
