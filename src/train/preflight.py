"""Checks ``train.py`` runs before any work: contradictory settings and the files later stages read.

Without them a mistake surfaced late or never: a missing validation annotation file after the
MindRecord conversion and ``eval_start_epoch`` epochs of training, a mistyped ``--resume`` path
after the conversion and the network build, and ``--resume`` together with ``--pre_trained`` not at
all (the resumed state silently replaced the pre-trained weights). Every check here only looks at
the config and at paths, so a wrong run stops within a second, before any MindRecord is written,
with one ``UsageError`` naming the key and the path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from src.data.mindrecord import check_split_data
from src.model_utils.errors import UsageError
from src.models.registry import check_input_shape
from src.weights.pretrained import resolve_weights_path


def check_training_run(config: Any) -> None:
    """Raise ``UsageError`` for the first contradiction or missing/unreadable input of a training run.

    With ``only_create_dataset`` only the training data matters; otherwise also the checkpoints
    the run loads and, with ``run_eval``, the validation data.
    """
    _check_contradictions(config)
    check_input_shape(config)  # img_shape against the anchors: before the data is converted, not at the network build
    _check_data(config, for_training=True)
    if config.only_create_dataset:
        return
    for key in ("pre_trained", "resume"):
        if getattr(config, key):
            _check_readable(key, Path(getattr(config, key)))
    if config.feature_extractor_base_param:
        _check_backbone_checkpoint(config)
    if config.run_eval:
        _check_data(config, for_training=False)


def _check_contradictions(config: Any) -> None:
    """Settings that cannot all take effect: one of them would be ignored without a word."""
    if config.resume and config.pre_trained:
        raise UsageError(f"--resume {config.resume} and --pre_trained {config.pre_trained} are both set; a resumed "
                         "run restores all its weights from --resume, so drop --pre_trained (or drop --resume to "
                         "start a new schedule from the pre-trained weights)")
    if not config.pre_trained:
        if config.get("finetune", False):
            raise UsageError("--finetune True needs --pre_trained: it fine-tunes that checkpoint to this config's "
                             "classes, and none is set; give --pre_trained <ckpt> or set --finetune False")
        if config.filter_weight:
            raise UsageError("--filter_weight True needs --pre_trained: it drops checkpoint_filter_list from the "
                             "pre-trained checkpoint, and none is set; give --pre_trained <ckpt> or set "
                             "--filter_weight False")
        if config.pre_trained_epoch_size:
            raise UsageError(f"--pre_trained_epoch_size {config.pre_trained_epoch_size} needs --pre_trained: it "
                             "counts the epochs that checkpoint was trained for, and none is set; give "
                             "--pre_trained <ckpt> or set --pre_trained_epoch_size 0")
    elif config.pre_trained_epoch_size >= config.epoch_size:
        raise UsageError(f"--pre_trained_epoch_size {config.pre_trained_epoch_size} leaves nothing to train with "
                         f"--epoch_size {config.epoch_size}; raise --epoch_size above it")
    if config.freeze_layer != "None" and not config.only_create_dataset and not (
            config.feature_extractor_base_param or config.pre_trained or config.resume):
        raise UsageError(f"--freeze_layer {config.freeze_layer} would keep backbone layers at their random initial "
                         "values: no weights are loaded; give --feature_extractor_base_param <ImageNet ckpt> or "
                         "--pre_trained <ckpt>, or set --freeze_layer None")
    if config.run_eval and config.eval_start_epoch > config.epoch_size:
        raise UsageError(f"--run_eval True never evaluates: --eval_start_epoch {config.eval_start_epoch} is after "
                         f"the last epoch (--epoch_size {config.epoch_size}); lower --eval_start_epoch")


def _check_data(config: Any, for_training: bool) -> None:
    """The split's source data (or a finished conversion of it), as the conversion will look for it."""
    try:
        check_split_data(config, for_training)
    except (FileNotFoundError, ValueError) as error:
        if isinstance(error, FileNotFoundError) and not Path(config.data_path).is_dir():
            raise UsageError(f"data_path {config.data_path} is not a folder; pass --data_path <the folder holding "
                             "the dataset>") from None
        if for_training:
            raise UsageError(f"training data missing: {error}") from None
        raise UsageError(f"run_eval is True but the validation data is missing: {error}; or pass --run_eval "
                         "False") from None


def _check_backbone_checkpoint(config: Any) -> None:
    """feature_extractor_base_param as the trainer resolves it: current folder first, then load_path."""
    try:
        path = resolve_weights_path(config.feature_extractor_base_param, (config.load_path,))
    except FileNotFoundError as error:
        random_start = ("\"\" with --freeze_layer None" if config.freeze_layer != "None" and not config.pre_trained
                        else "\"\"")
        raise UsageError(f"{error}; pass an existing file as --feature_extractor_base_param, or {random_start} to "
                         "start the backbone from random weights") from None
    _check_readable("feature_extractor_base_param", path)


def _check_readable(key: str, path: Path) -> None:
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "not found"
        raise UsageError(f"--{key} {path}: {what}; pass the path of an existing .ckpt file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"--{key} {path}: not readable (permission denied); fix its permissions or copy it")
