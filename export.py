"""Export a trained SSD for deployment: ``python export.py --checkpoint_file_path ... [--config_path ...]
[--file_format MINDIR|ONNX|AIR] [--file_name ssd] [--batch_size 1]``.

The config is the config.yaml train.py wrote beside the checkpoint unless --config_path is given
(one that disagrees with it on model_name, num_classes or img_shape is refused; a model-zoo
checkpoint needs --config_path). The config is written beside the exported file as
``<file>.config.yaml`` (e.g. ssd.onnx.config.yaml), where predict.py and eval_onnx.py find it.

The exported graph takes a (batch, 3, H, W) float32 normalised image and returns decoded boxes
(batch, N, 4) [ymin, xmin, ymax, xmax] in [0, 1] and sigmoid scores (batch, N, num_classes).
Its batch size is fixed: --batch_size when given, else 1 (the config file's batch_size is the
training batch and is not used). AIR needs --device_target Ascend. An existing file (and its
config) is replaced.
On ModelArts (--enable_modelarts True) a relative --file_name lands in output_path, which is
uploaded to train_url when the export ends.
"""
from __future__ import annotations

import sys
from pathlib import Path

from src.model_utils.device_adapter import start_run
from src.model_utils.errors import UsageError, run_entry
from src.model_utils.moxing_adapter import entry_session
from src.model_utils.run_config import argv_with_model_config, check_model_config, config_beside

#: Exported batch size when --batch_size is not on the command line (what deployment usually feeds).
DEFAULT_EXPORT_BATCH = 1


def main(argv: list[str] | None = None) -> int:
    from src.model_utils.config import command_line_keys, save_resolved_config

    args = argv_with_model_config(sys.argv[1:] if argv is None else argv, "checkpoint_file_path")
    config, process, logger = start_run(args, __doc__, "export")
    if not config.checkpoint_file_path:
        raise UsageError("--checkpoint_file_path is not set; pass the checkpoint to export, "
                         "e.g. --checkpoint_file_path output/ckpt_0/ssd-60_500.ckpt")
    logger.info(check_model_config(config, config.checkpoint_file_path, args))
    batch_size = int(config.batch_size) if "batch_size" in command_line_keys(args) else DEFAULT_EXPORT_BATCH
    if not str(config.file_name).strip():
        raise UsageError("--file_name is empty; pass the exported file's name, e.g. --file_name ssd300")
    file_name = Path(config.file_name)
    if config.enable_modelarts and not file_name.is_absolute():
        file_name = Path(config.output_path) / file_name  # only output_path goes back to OBS
    with entry_session(config, process, "export.py"):  # ModelArts: checkpoint in before, file out after
        from src.deploy.export import export_inference_model

        path = export_inference_model(config, config.checkpoint_file_path, config.file_format, batch_size, file_name)
        saved = save_resolved_config(config, config_beside(path))  # inside the session: uploaded with the file
    height, width = config.img_shape
    logger.info(f"exported {config.model_name} from {config.checkpoint_file_path} to {path} "
                f"(input {batch_size}x3x{height}x{width}, {config.file_format}); its config: {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "export.py"))
