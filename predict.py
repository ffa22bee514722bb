"""Detect objects in your own images: ``python predict.py --model MODEL --input IMAGES [--config_path ...]
[--output_dir DIR] [--exist_ok] [--score_threshold S] [--max_boxes K] [--classes "name,name"] [--draw_threshold D]``.

--model            a train.py checkpoint (.ckpt) or an export.py file (.mindir run by MindSpore,
                   .onnx run by onnxruntime or OpenVINO, an OpenVINO IR .xml with its .bin). Its config
                   is found beside it (the config.yaml train.py writes in the checkpoint folder, the
                   <file>.config.yaml export.py writes beside the file); --config_path overrides it, and must then agree with it on model_name,
                   num_classes and img_shape. A model-zoo checkpoint (no config beside it) needs --config_path.
--input            one or more images, folders (their files, not sub-folders) or quoted glob
                   patterns ('photos/*.jpg'). Non-image and unreadable files are reported and skipped.
--output_dir       where the drawn images and detections.json go (default <output_path>/predict); never an
                   input folder, a folder inside or around one, or the folder of an input file.
--exist_ok         replace drawn images and detections.json of an earlier run in --output_dir (without it
                   the run stops before loading the model, naming the first such file).
--backend          engine of a .onnx/.xml model: onnxruntime (default for .onnx) or openvino (default for .xml).
--precision        f32 (default) or bf16 (OpenVINO on CPUs with native bf16); printed in the log. An INT8
                   model (export.py --quantize int8) runs INT8 at either.
--score_threshold  keep detections scoring above this (default: the config's min_score).
--max_boxes        at most this many detections per image (default: the config's max_boxes).
--classes          comma-separated class names to report, e.g. "person,sports ball" (default: all).
--draw_threshold   draw only detections scoring above this (default 0.3: the config's min_score keeps
                   dozens of low-score boxes per image, good for mAP, unreadable in a picture); where
                   boxes of different classes cover one object (IoU >= 0.6) only the best is drawn.
                   detections.json still lists every detection above --score_threshold.

Images are pre-processed and post-processed exactly as eval.py does. Each image is written with
its boxes, class names and scores drawn (JPEG inputs as JPEG, others as PNG), and detections.json
holds all detections in COCO result format plus file_name and category_name; image_id is the
COCO id when the file is listed in the config's annotation file, else a running number.
Every other --key value overrides the config as in eval.py. Exit status 1 when no image was read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.deploy.engines import add_engine_flags
from src.model_utils.device_adapter import start_run
from src.model_utils.errors import run_entry
from src.model_utils.run_config import argv_with_model_config, check_model_config


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _own_flags() -> argparse.ArgumentParser:
    """This script's options; everything else is a config key for parse_args."""
    usage = ("predict.py [--config_path PATH] --model MODEL --input IMAGES [IMAGES ...] [--output_dir DIR] "
             "[--exist_ok] [--backend onnxruntime|openvino] [--precision f32|bf16] [--score_threshold S] "
             "[--max_boxes K] [--classes NAMES] [--draw_threshold D] "
             "[--KEY VALUE ...] (--help for all options)")
    parser = argparse.ArgumentParser(prog="predict.py", add_help=False, allow_abbrev=False, usage=usage)
    parser.add_argument("--model")
    parser.add_argument("--input", nargs="+")
    parser.add_argument("--output_dir")
    parser.add_argument("--exist_ok", action="store_true")
    add_engine_flags(parser)
    parser.add_argument("--score_threshold", type=_probability)
    parser.add_argument("--max_boxes", type=_positive_int)
    parser.add_argument("--classes", type=lambda text: [name.strip() for name in text.split(",") if name.strip()])
    parser.add_argument("--draw_threshold", type=_probability)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _own_flags()
    own, config_args = parser.parse_known_args(args)
    if not {"-h", "--help"} & set(config_args) and not (own.model and own.input):
        parser.error("--model and --input are required")
    config_args = argv_with_model_config(config_args, "model", own.model)
    config, _, logger = start_run(config_args, __doc__, "predict")
    logger.info(check_model_config(config, own.model, config_args))
    from src.deploy.predict import (FilePredictor, check_output_folder, list_input_files, load_detector,
                                    prediction_options)

    files = list_input_files(own.input)
    output_dir = Path(own.output_dir) if own.output_dir else Path(config.output_path) / "predict"
    check_output_folder(own.input, files, output_dir, own.exist_ok)  # before the model loads
    options = prediction_options(config, own.score_threshold, own.max_boxes, own.classes, own.draw_threshold)
    detector = load_detector(own.model, config, len(files), own.backend, own.precision)
    logger.info(f"{len(files)} files; model {own.model} on {detector.engine}, batch {detector.batch_size}; "
                f"score > {options.min_score}, NMS IoU {options.nms_threshold}, at most {options.max_boxes} "
                f"boxes per image; drawing those scoring above {options.draw_threshold}")
    summary = FilePredictor(detector, config, options, output_dir, logger).run(files)
    logger.info(summary.line())
    return 0 if summary.num_images else 1


if __name__ == "__main__":
    sys.exit(run_entry(main, "predict.py"))
