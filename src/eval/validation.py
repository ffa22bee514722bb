"""COCO evaluation of an SSD network on the configured validation set.

Shared by ``eval.py`` and the evaluation that ``train.py`` runs between epochs, so that both
report the same number for the same weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from src.data.dataset import create_ssd_dataset
from src.data.mindrecord import ensure_mindrecord, ground_truth_json
from src.eval.coco import BatchPostprocess, CocoEvalResult, evaluate_detector


def predictor(infer_net: nn.Cell) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A numpy-in/numpy-out function over a batch of normalised NCHW images."""

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = infer_net(ms.Tensor(images, ms.float32))
        return boxes.asnumpy(), scores.asnumpy()

    return predict


def evaluate_on_validation(infer_net: nn.Cell, config: Any, results_json: Path) -> CocoEvalResult:
    """Run the eval pipeline over every validation image and score it with pycocotools.

    The network is switched to inference mode (sigmoid scores, BatchNorm statistics frozen);
    callers that go on training must switch it back with ``set_train(True)``.
    """
    infer_net.set_train(False)
    return evaluate_predictor_on_validation(predictor(infer_net), config, results_json, int(config.eval_batch_size))


def evaluate_predictor_on_validation(predict: Callable[[np.ndarray], Sequence[np.ndarray]], config: Any,
                                     results_json: Path, batch_size: int,
                                     postprocess: BatchPostprocess | None = None) -> CocoEvalResult:
    """The validation evaluation of any predict function (MindSpore network, onnxruntime session).

    Same dataset, post-processing and COCO protocol for every engine, so their mAPs compare; a model
    with NMS in its graph passes ``postprocess`` (see ``evaluate_detector``). The
    ground truth is the one the eval conversion cleaned (``ground_truth_json``): the boxes and images
    it dropped are not scored, clipped boxes are scored clipped, and the log says what changed.
    """
    mindrecord = ensure_mindrecord(config, for_training=False)
    dataset = create_ssd_dataset(mindrecord, config, int(batch_size), is_training=False,
                                 num_parallel_workers=int(config.num_parallel_workers))
    return evaluate_detector(predict, dataset, ground_truth_json(config), config.classes, config, Path(results_json),
                             postprocess)
