"""Export a trained SSD for deployment: ``python export.py --config_path ... --checkpoint_file_path ...
[--file_format MINDIR|ONNX|AIR] [--file_name ssd] [--batch_size 1]``.

The exported graph takes a (batch, 3, H, W) float32 normalised image and returns decoded boxes
(batch, N, 4) [ymin, xmin, ymax, xmax] in [0, 1] and sigmoid scores (batch, N, num_classes).
Its batch size is fixed: --batch_size when given, else 1 (the config file's batch_size is the
training batch and is not used). AIR needs --device_target Ascend. An existing file is replaced.
"""
from __future__ import annotations

import sys

from src.model_utils.device_adapter import start_run

#: Exported batch size when --batch_size is not on the command line (what deployment usually feeds).
DEFAULT_EXPORT_BATCH = 1


def main(argv: list[str] | None = None) -> int:
    from src.model_utils.config import command_line_keys

    args = list(sys.argv[1:] if argv is None else argv)
    config, _, logger = start_run(args, __doc__, "export")
    if not config.checkpoint_file_path:
        raise SystemExit("export.py needs --checkpoint_file_path <ckpt> (the weights to export)")
    batch_size = int(config.batch_size) if "batch_size" in command_line_keys(args) else DEFAULT_EXPORT_BATCH
    from src.exporting import ExportError, export_inference_model

    try:
        path = export_inference_model(config, config.checkpoint_file_path, config.file_format, batch_size,
                                      config.file_name)
    except ExportError as error:
        raise SystemExit(f"export.py: {error}") from None
    height, width = config.img_shape
    logger.info(f"exported {config.model_name} from {config.checkpoint_file_path} to {path} "
                f"(input {batch_size}x3x{height}x{width}, {config.file_format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
