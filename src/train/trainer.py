"""The training run behind ``train.py``: build everything from one config, loop, log, save, resume.

A plain Python loop over a compiled GRAPH_MODE train step (rather than ``Model.train``) keeps
the things users need in one readable place: a progress bar with ETA, a per-step CSV, a NaN
guard that names the step, periodic evaluation keeping ``best_map.ckpt``, and ``--resume``
that restores weights, optimiser moments, loss-scale state, global step and epoch.

A run never destroys another run's results: it refuses an output folder that holds another run's
checkpoints or metrics before any data is converted (a ``--resume`` from that folder may continue
in it), holds a lock on its rank's outputs while it runs, and ``keep_checkpoint_max`` deletes only
checkpoints the run itself wrote.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from tqdm import tqdm

from src.data.dataset import create_ssd_dataset
from src.data.mindrecord import ensure_mindrecord_for_rank
from src.eval.validation import evaluate_on_validation
from src.model_utils.config import save_resolved_config
from src.model_utils.device_adapter import ProcessInfo
from src.model_utils.errors import SSDError, UsageError
from src.model_utils.files import remove_stale_temporaries, temporary_path, write_json_atomic
from src.model_utils.run_config import RUN_CONFIG_NAME
from src.model_utils.run_lock import RunLock
from src.models.cpu_depthwise import use_cpu_depthwise_kernels
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd, inference_network, network_record
from src.models.ssd import freeze_layers
from src.train.curves import CURVES_FILE, draw_curves_after_training
from src.train.loss import SSDWithLossCell
from src.train.lr_schedule import warmup_cosine_lr
from src.train.step import build_optimizer, build_train_step
from src.weights.checkpoint import load_network_weights, load_train_state, read_checkpoint, save_atomically
from src.weights.pretrained import load_backbone_weights

#: Consecutive overflow-skipped steps tolerated while a dynamic loss scale shrinks.
MAX_OVERFLOW_SKIPS = 32
CHECKPOINT_PREFIX = "ssd"
BEST_CHECKPOINT = "best_map.ckpt"
#: The fully resolved config of the run, written beside its checkpoints (eval, predict and export find it there).
RESOLVED_CONFIG = RUN_CONFIG_NAME
#: Per-rank training CSV, beside the checkpoint folders (plot_curves.py and the curves read it).
METRICS_FILE = "metrics_rank{rank}.csv"
#: Per-rank lock file in output_path: ranks of one job write different files and never block each other.
LOCK_FILE = ".train_rank{rank}.lock"
#: New columns go at the end, so scripts that read older files by position keep working.
METRICS_COLUMNS = ("step", "epoch", "loss", "lr", "img_per_s", "map", "class_loss", "box_loss")
#: Per-rank record of the img_ids consumed in a run's first epoch: shows how the data was sharded.
FIRST_EPOCH_IDS_FILE = "first_epoch_img_ids_rank{rank}.json"


class TrainingDiverged(SSDError, RuntimeError):
    """The loss became NaN/Inf and loss scaling could not recover it."""


@dataclass
class TrainSummary:
    """What a finished run reports back (printed as the final line, asserted by tests)."""

    epochs_run: int
    global_step: int
    last_loss: float
    best_map: float | None
    checkpoint_dir: Path
    seconds: float


class _MetricsLog:
    """Per-step CSV ``metrics_rank<r>.csv`` (steps from 1); a resumed run drops rows past its restored step.

    The kept rows are written to a temporary file renamed over the old one, so a crash at this point
    loses no rows of the earlier run; new rows are then appended.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        partial = temporary_path(path)
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(partial, path)
        self.handle = path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=METRICS_COLUMNS)

    def best_map(self) -> float | None:
        """The best mAP among the kept rows: a resumed run replaces best_map.ckpt only with a better one."""
        maps = [float(row["map"]) for row in self.rows if row.get("map")]
        return max(maps, default=None)

    def write(self, **row: Any) -> None:
        self.writer.writerow({key: row.get(key, "") for key in METRICS_COLUMNS})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def guard_loss(loss: float, overflow: bool, scale: float, skips: int, dynamic_scale: bool, where: str) -> int:
    """Decide whether training may go on after a step; returns the count of consecutive skipped steps.

    An overflowing step has already been skipped by the train step. That is tolerated while a
    dynamic loss scale can still shrink (or, with a fixed scale, while the loss itself is finite),
    for at most ``MAX_OVERFLOW_SKIPS`` steps in a row; a NaN/Inf loss otherwise stops the run at
    once with the step named, instead of training on NaN for hours.
    """
    if math.isfinite(loss) and not overflow:
        return 0
    recoverable = overflow and skips < MAX_OVERFLOW_SKIPS and (scale > 1.0 if dynamic_scale else math.isfinite(loss))
    if recoverable:
        return skips + 1
    raise TrainingDiverged(
        f"loss is {loss} at {where}" + (f" after {skips} overflow-skipped steps" if skips else "")
        + "; training stopped. Lower --lr, check the data, or resume from the last checkpoint with --resume")


def check_output_is_free(output: Path, rank: int, resume: str) -> None:
    """Refuse an output folder holding this rank's checkpoints or metrics of another run.

    Checked before anything is converted, compiled or written: a new run there would rewrite the old
    run's CSV and mix its checkpoints with the old ones. A run resuming from a checkpoint inside
    ``output`` continues that run and may write there.
    """
    if resume and Path(resume).resolve().is_relative_to(output.resolve()):
        return
    checkpoints = sorted((path for path in (output / f"ckpt_{rank}").glob("*.ckpt") if not path.name.startswith(".")),
                         key=lambda path: path.stat().st_mtime)
    metrics = output / METRICS_FILE.format(rank=rank)
    if not checkpoints and not metrics.is_file():
        return
    found = f"checkpoints (e.g. {checkpoints[-1]})" if checkpoints else f"metrics ({metrics})"
    epochs = [path for path in checkpoints if path.name.startswith(f"{CHECKPOINT_PREFIX}-")]
    fix = (f"pass --resume {epochs[-1]} to continue that run, or a new --output_path" if epochs
           else "pass a new --output_path" if checkpoints
           else f"that run saved no checkpoint, so nothing can be resumed: delete {metrics} or pass a new --output_path")
    raise UsageError(f"output_path {output} already holds another run's {found}; {fix}")


def fill_finetune_filter(config: Any) -> None:
    """``finetune``: set ``filter_weight`` and ``checkpoint_filter_list`` to the network's class-dependent tensors.

    One switch instead of a hand-written list per network: the registry record knows which tensors
    have a shape that follows num_classes. The box regression heads stay loaded (the model zoo's
    default list drops them too; users who set their own list with filter_weight keep that).
    A model-zoo config file without the key does not fine-tune.
    """
    if config.get("finetune", False):
        config.filter_weight = True
        config.checkpoint_filter_list = list(network_record(config.model_name).class_tensors)


class Trainer:
    """Owns the network, optimiser and data of one training run.

    It holds its rank's lock of the output folder from construction to the end of ``fit`` (or to a
    failed construction).
    """

    def __init__(self, config: Any, process: ProcessInfo, logger: logging.Logger) -> None:
        self.config = config
        self.process = process
        self.log = logger
        self.output = Path(config.output_path)
        self.checkpoint_dir = self.output / f"ckpt_{process.rank}"
        self._saved: list[Path] = []  # epoch checkpoints this run wrote, oldest first: the only ones it prunes
        self._graph_compiled = False  # until the run's first train step
        self._lock = RunLock(self.output / LOCK_FILE.format(rank=process.rank), logger,
                             fix="pass another --output_path")
        self._lock.acquire()
        try:
            self._set_up()
        except BaseException:
            self._lock.release()
            raise

    def _set_up(self) -> None:
        config = self.config
        check_output_is_free(self.output, self.process.rank, config.resume)
        for folder in (self.output, self.checkpoint_dir):
            remove_stale_temporaries(folder, self.log)
        fill_finetune_filter(config)  # before the config is saved: the saved file says what was dropped
        self.dataset = self._build_dataset()
        self.steps_per_epoch = self.dataset.get_dataset_size()
        if self.steps_per_epoch == 0:
            raise UsageError(f"the training set has fewer images than batch_size={config.batch_size} per device; "
                             "lower --batch_size or add images")
        self.network = build_ssd(config)
        init_network_weights(self.network, int(config.num_classes))
        frozen = freeze_layers(self.network, config.freeze_layer)  # before loading: their initial values are kept
        initial_frozen = [(param, param.asnumpy().copy()) for cell in frozen for param in cell.get_parameters()
                          if not param.name.endswith(("moving_mean", "moving_variance"))]  # weights tell if loaded
        if config.feature_extractor_base_param:  # relative: current directory first, then load_path
            report = load_backbone_weights(self.network, config.feature_extractor_base_param, config,
                                           search_dirs=(config.load_path,))
            self.log.info(report.summary())
        use_cpu_depthwise_kernels(self.network, bool(config.use_float16), self.log)
        if config.use_float16:
            self.network.to_float(ms.float16)
        self.loss_net = SSDWithLossCell(self.network, config.gamma, config.alpha)
        self.start_epoch = self._load_pre_trained()
        self.lr = warmup_cosine_lr(config.lr_init, config.lr, config.lr_end_rate * config.lr, config.warmup_epochs,
                                   config.epoch_size, self.steps_per_epoch)
        self.optimizer = build_optimizer(self.loss_net, self.lr, config)
        self.train_net = build_train_step(self.loss_net, self.optimizer, config)
        if config.resume:
            self.start_epoch = self._restore(config.resume)
        else:
            self.optimizer.global_step.set_data(ms.Tensor([self.start_epoch * self.steps_per_epoch], ms.int32))
        if frozen:
            self._check_frozen_layers_loaded(frozen, initial_frozen)
        self.infer_net = inference_network(config, self.network) if config.run_eval else None
        if self._saves_checkpoints():  # last: a run refused above (e.g. a --resume that does not fit) keeps
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)  # the config of the run it would continue
            saved = save_resolved_config(config, self.checkpoint_dir / RESOLVED_CONFIG)
            self.log.info(f"resolved config (every key) saved to {saved}")

    def _build_dataset(self):
        config = self.config
        mindrecord = ensure_mindrecord_for_rank(config, for_training=True, rank=self.process.rank)
        batch = int(config.batch_size)
        self.log.info(f"batch {batch} per device x {self.process.group_size} devices = global batch "
                      f"{batch * self.process.group_size}; lr {config.lr} is used as given (no scaling)")
        return create_ssd_dataset(mindrecord, config, batch, is_training=True, device_num=self.process.group_size,
                                  rank=self.process.rank, num_parallel_workers=int(config.num_parallel_workers),
                                  with_img_id=True)

    def _check_frozen_layers_loaded(self, frozen: list[ms.nn.Cell],
                                    initial: list[tuple[ms.Parameter, np.ndarray]]) -> None:
        """Refuse to train when a frozen layer's weights are still the random ones: no loaded file covered
        them (a partial backbone file, or --pre_trained with the backbone filtered out), and freezing
        them would silently keep noise in the network for the whole run."""
        config = self.config
        unloaded = [param.name for param, value in initial if np.array_equal(param.asnumpy(), value)]
        if unloaded:
            raise UsageError(f"--freeze_layer {config.freeze_layer}: {len(unloaded)} of the {len(initial)} frozen "
                             f"tensors were not loaded by any weights file and would stay at their random initial "
                             f"values (first: {', '.join(unloaded[:3])}); load weights that cover them "
                             "(--feature_extractor_base_param, or --pre_trained without filtering them out) or "
                             "freeze less (--freeze_layer None or a smaller stride)")
        values = [param for cell in frozen for param in cell.get_parameters()]
        self.log.info(f"freeze_layer {config.freeze_layer}: {sum(p.size for p in values):,} backbone values in "
                      f"{len(values)} tensors (BatchNorm statistics included) stay as loaded")

    def _check_same_trainable_tensors(self, params: dict, path: str) -> None:
        """The optimizer keeps one moment per trained tensor, so a checkpoint whose moments cover other
        tensors was trained with another ``freeze_layer``; say so instead of listing the moments."""
        saved = {name[len("moments."):] for name in params if name.startswith("moments.")}
        trained = {param.name for param in self.network.trainable_params()}
        if saved and saved != trained and saved | trained <= {param.name for param in self.network.get_parameters()}:
            raise UsageError(f"{path} was trained with other layers frozen: it trained {len(saved)} tensors, "
                             f"--freeze_layer {self.config.freeze_layer} trains {len(trained)}; resume with that "
                             "run's freeze_layer (its ckpt_<rank>/config.yaml says which)")

    def _load_pre_trained(self) -> int:
        """Whole-detector weights for transfer learning; returns the epoch the schedule resumes at."""
        config = self.config
        if not config.pre_trained:
            return 0
        drop = list(config.checkpoint_filter_list) if config.filter_weight else []
        report = load_network_weights(config.pre_trained, self.loss_net, drop=drop, config=config)
        self.log.info(f"pre_trained: {report.summary()}")
        return int(config.pre_trained_epoch_size)

    def _restore(self, path: str) -> int:
        """Full training state from one of our checkpoints; returns the next epoch index."""
        params = read_checkpoint(path)
        saved_steps = int(params.pop("steps_per_epoch").asnumpy()) if "steps_per_epoch" in params else None
        if saved_steps is not None and saved_steps != self.steps_per_epoch:
            raise UsageError(f"{path} was written with {saved_steps} steps per epoch but this run has "
                             f"{self.steps_per_epoch}; resume with the same dataset, batch_size and device count")
        epoch = int(params.pop("epoch_num").asnumpy()) if "epoch_num" in params else None
        if epoch is None:
            raise UsageError(f"{path} has no epoch_num: it is not a train.py checkpoint; use --pre_trained for "
                             "weights-only checkpoints")
        self._check_same_trainable_tensors(params, path)
        load_train_state(params, self.train_net, path)
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        self.log.info(f"resumed from {path}: epoch {epoch}, global step {step}, "
                      f"loss scale {float(self.train_net.scale_sense.asnumpy().reshape(-1)[0])}")
        return epoch

    def fit(self) -> TrainSummary:
        """Train to epoch_size, then release the output folder's lock (also when training fails)."""
        try:
            return self._train()
        finally:
            self._lock.release()

    def _train(self) -> TrainSummary:
        config = self.config
        epochs = int(config.epoch_size)
        if self.start_epoch >= epochs:
            raise UsageError(f"nothing to train: the run already reached epoch {self.start_epoch} of "
                             f"epoch_size={epochs}; raise --epoch_size to train longer")
        metrics = _MetricsLog(self.output / METRICS_FILE.format(rank=self.process.rank),
                              resume_step=self.start_epoch * self.steps_per_epoch if config.resume else None)
        started = time.time()
        best_map = metrics.best_map()
        loss = math.nan
        global_step = self.start_epoch * self.steps_per_epoch
        iterator = self.dataset.create_tuple_iterator(num_epochs=epochs - self.start_epoch)
        self.train_net.set_train(True)
        try:
            for epoch in range(self.start_epoch + 1, epochs + 1):
                loss, global_step = self._run_epoch(epoch, iterator, global_step, metrics)
                if self._should_evaluate(epoch):
                    best_map = self._evaluate(epoch, global_step, best_map, metrics)
                if epoch % int(config.save_checkpoint_epochs) == 0 or epoch == epochs:
                    self._save(epoch, global_step)
        finally:
            metrics.close()
        if self.process.rank == 0:
            draw_curves_after_training(metrics.path, self.output / CURVES_FILE, self.log)
        summary = TrainSummary(epochs - self.start_epoch, global_step, loss, best_map, self.checkpoint_dir,
                               time.time() - started)
        self.log.info(f"training done: {summary.epochs_run} epochs, global step {global_step}, last loss {loss:.4f}, "
                      f"best mAP {best_map if best_map is not None else 'n/a'}, {summary.seconds:.0f} s, "
                      f"checkpoints in {self.checkpoint_dir}")
        return summary

    def _run_epoch(self, epoch: int, iterator, global_step: int, metrics: _MetricsLog) -> tuple[float, int]:
        config = self.config
        images_per_step = int(config.batch_size) * self.process.group_size
        interval = max(int(config.log_interval), 1)
        overflow_skips = 0
        window_start, window_losses = time.time(), []
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{config.epoch_size}", unit="step",
                   disable=self.process.rank != 0, leave=False)
        record_ids = epoch == self.start_epoch + 1
        consumed_ids: list[int] = []
        for step_in_epoch, (*inputs, img_ids) in enumerate(iterator, start=1):  # stops at each epoch's end
            if record_ids:
                consumed_ids.extend(int(i) for i in img_ids.asnumpy().reshape(-1))
            lr = float(self.lr[global_step])
            loss_t, overflow_t, scale_t, class_loss_t, box_loss_t = self._train_step(inputs)
            loss = float(loss_t.asnumpy())
            losses = {"loss": f"{loss:.6f}", "class_loss": f"{float(class_loss_t.asnumpy()):.6f}",
                      "box_loss": f"{float(box_loss_t.asnumpy()):.6f}"}
            where = f"epoch {epoch} step {step_in_epoch} (global step {global_step + 1})"
            scale = float(scale_t.asnumpy().reshape(-1)[0])
            overflow_skips = guard_loss(loss, bool(overflow_t.asnumpy()), scale, overflow_skips,
                                        bool(config.use_float16), where)
            if overflow_skips:
                self.log.warning(f"gradient overflow at {where}: update skipped, loss scale {scale}")
            global_step += 1
            window_losses.append(loss)
            bar.update(1)
            if step_in_epoch % interval == 0 or step_in_epoch == self.steps_per_epoch:
                speed = len(window_losses) * images_per_step / max(time.time() - window_start, 1e-9)
                mean_loss = float(np.nanmean(window_losses))
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.5f}", img_s=f"{speed:.1f}")
                self.log.info(f"epoch {epoch}/{config.epoch_size} step {step_in_epoch}/{self.steps_per_epoch} "
                              f"global {global_step} loss {mean_loss:.4f} lr {lr:.6f} img/s {speed:.2f}")
                metrics.write(step=global_step, epoch=epoch, **losses, lr=f"{lr:.8f}", img_per_s=f"{speed:.2f}")
                window_start, window_losses = time.time(), []
            else:
                metrics.write(step=global_step, epoch=epoch, **losses, lr=f"{lr:.8f}")
        bar.close()
        if record_ids:
            self._record_consumed_ids(epoch, consumed_ids)
        return loss, global_step

    def _train_step(self, inputs: list) -> tuple:
        """One train step. The run's first one compiles the graph (10-30 s on 2 CPU cores), during which
        the progress bar stands still: the log says that compilation runs, then how long it took."""
        if self._graph_compiled:
            return self.train_net(*inputs)
        self.log.info("first step: compiling the training graph (the progress bar stands still until it is done)")
        started = time.time()
        outputs = self.train_net(*inputs)
        outputs[0].asnumpy()  # the step has run, not only started
        self.log.info(f"graph compiled in {time.time() - started:.1f} s (first step)")
        self._graph_compiled = True
        return outputs

    def _record_consumed_ids(self, epoch: int, img_ids: list[int]) -> None:
        """Write which images this rank trained on in the run's first epoch, in order.

        Sharding mistakes (ranks reading the same images, or a shard silently padded) are invisible in
        the loss; this file lets the ranks' shares be compared.
        """
        path = self.output / FIRST_EPOCH_IDS_FILE.format(rank=self.process.rank)
        write_json_atomic({"epoch": epoch, "rank": self.process.rank, "group_size": self.process.group_size,
                           "img_ids": img_ids}, path)
        self.log.info(f"epoch {epoch}: this rank trained on {len(img_ids)} images "
                      f"({len(set(img_ids))} distinct); their img_ids are in {path}")

    def _should_evaluate(self, epoch: int) -> bool:
        config = self.config
        start = int(config.eval_start_epoch)
        return bool(config.run_eval) and epoch >= start and (epoch - start) % int(config.eval_interval) == 0

    def _evaluate(self, epoch: int, global_step: int, best_map: float | None, metrics: _MetricsLog) -> float | None:
        result = evaluate_on_validation(self.infer_net, self.config,
                                        self.output / f"eval_results_rank{self.process.rank}.json")
        self.train_net.set_train(True)
        self.log.info(f"epoch {epoch}: mAP {result.map:.4f} AP50 {result.stats[1]:.4f}")
        metrics.write(step=global_step, epoch=epoch, map=f"{result.map:.6f}")
        if best_map is None or result.map > best_map:
            if self.config.save_best_ckpt and self._saves_checkpoints():
                save_atomically(self.train_net, self.checkpoint_dir / BEST_CHECKPOINT,
                                self._state_dict(epoch))
                self.log.info(f"new best mAP {result.map:.4f} at epoch {epoch}: saved {BEST_CHECKPOINT}")
            return result.map
        return best_map

    def _saves_checkpoints(self) -> bool:
        return self.process.rank == 0 or bool(self.config.save_ckpt_all_ranks)

    def _state_dict(self, epoch: int) -> dict:
        return {"epoch_num": epoch, "steps_per_epoch": self.steps_per_epoch}

    def _save(self, epoch: int, global_step: int) -> None:
        if not self._saves_checkpoints():
            return
        path = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}-{epoch}_{self.steps_per_epoch}.ckpt"
        save_atomically(self.train_net, path, self._state_dict(epoch))
        self.log.info(f"saved {path} (global step {global_step})")
        self._saved = [*(saved for saved in self._saved if saved != path), path]
        keep = int(self.config.keep_checkpoint_max)
        while keep > 0 and len(self._saved) > keep:  # never a file of an earlier run or of the run resumed
            self._saved.pop(0).unlink(missing_ok=True)

