"""Learning-rate schedule: linear warm-up then cosine decay, one value per training step."""
from __future__ import annotations

import numpy as np


def warmup_cosine_lr(lr_init: float, lr_max: float, lr_end: float, warmup_epochs: float, total_epochs: int,
                     steps_per_epoch: int) -> np.ndarray:
    """Per-step LR for the WHOLE run (step 0 .. total-1), float32.

    The array always covers the full schedule; a resumed or continued run starts reading it at
    its global step instead of rebuilding a shorter array, so every step gets the same LR as in
    an uninterrupted run (the model zoo sliced the array and then ran past its end).
    """
    total = int(steps_per_epoch * total_epochs)
    warmup = int(steps_per_epoch * warmup_epochs)
    steps = np.arange(total, dtype=np.float64)
    ramp = lr_init + (lr_max - lr_init) * steps / max(warmup, 1)
    progress = (steps - warmup) / max(total - warmup, 1)
    cosine = lr_end + (lr_max - lr_end) * (1.0 + np.cos(np.pi * progress)) / 2.0
    return np.clip(np.where(steps < warmup, ramp, cosine), 0.0, None).astype(np.float32)
