"""Weight initialisation of the SSD networks before training (the model zoo's recipe)."""
from __future__ import annotations

from mindspore import nn
from mindspore.common.initializer import TruncatedNormal, initializer

#: Parameters whose name contains one of these keep their constructor value (BN 1/0, bias 0).
_KEEP_SUBSTRINGS = ("beta", "gamma", "bias")


def init_network_weights(network: nn.Cell, sigma: float = 0.02) -> None:
    """Re-draw every trainable weight from a normal(0, sigma) truncated at +-2 sigma.

    The zoo trains ssd300 from scratch with this init (and calls it before loading any
    checkpoint). MindSpore 2.x ``TruncatedNormal`` takes absolute bounds (default +-2), so the
    +-2 sigma of the original recipe is passed explicitly. Frozen parameters and BatchNorm
    statistics are left alone.
    """
    init = TruncatedNormal(sigma=sigma, a=-2.0 * sigma, b=2.0 * sigma)
    for param in network.trainable_params():
        if not any(key in param.name for key in _KEEP_SUBSTRINGS):
            param.set_data(initializer(init, param.shape, param.dtype))
