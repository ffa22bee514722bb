"""Exact default boxes and grid anchors (values from the model zoo, REFERENCE_SSD.md 3.1/3.2)."""
from types import SimpleNamespace

import numpy as np
import pytest

from src.boxes.anchors import count_default_boxes, default_boxes_from_config, grid_anchors, ssd_default_boxes
from src.model_utils.config import ConfigError, load_config

SSD300 = dict(img_shape=[300, 300], steps=[16, 32, 64, 100, 150, 300], feature_size=[19, 10, 5, 3, 2, 1],
              num_default=[3, 6, 6, 6, 6, 6], aspect_ratios=[[], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]],
              min_scale=0.2, max_scale=0.95)
VGG16 = dict(SSD300, steps=[8, 16, 32, 64, 100, 300], feature_size=[38, 19, 10, 5, 3, 1])


def test_ssd300_count_and_first_last_boxes():
    boxes = ssd_default_boxes(**SSD300)
    assert boxes.shape == (1917, 4) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes[:3], [[0.026667, 0.026667, 0.1, 0.1],
                                           [0.026667, 0.026667, 0.141421, 0.282843],
                                           [0.026667, 0.026667, 0.282843, 0.141421]], atol=1e-5)
    np.testing.assert_allclose(boxes[-3:], [[0.5, 0.5, 0.548483, 1.645448],
                                            [0.5, 0.5, 1.645448, 0.548483],
                                            [0.5, 0.5, 0.974679, 0.974679]], atol=1e-5)


def test_ssd300_order_is_level_row_column_anchor():
    boxes = ssd_default_boxes(**SSD300)
    # level 0: 19x19 cells x 3 anchors; cell (0, 1) starts at index 3 and shares cy with cell (0, 0)
    assert boxes[3, 0] == boxes[0, 0] and boxes[3, 1] > boxes[0, 1]
    # the stretched grid of level 0 (18.75 cells for 19 rows) ends at 18.5 / 18.75
    np.testing.assert_allclose(boxes[19 * 19 * 3 - 1, :2], [18.5 / 18.75, 18.5 / 18.75], rtol=1e-6)
    # level 1 (300 / 32 = 9.375 cells) starts after 1083 boxes with a square box of scale 0.35
    np.testing.assert_allclose(boxes[1083], [0.5 / 9.375, 0.5 / 9.375, 0.35, 0.35], atol=1e-6)


def test_vgg16_count():
    assert ssd_default_boxes(**VGG16).shape == (7308, 4)


def test_grid_anchors_fpn_640():
    anchors = grid_anchors([640, 640], [8, 16, 32, 64, 128])
    assert anchors.shape == (51150, 4)
    np.testing.assert_allclose(anchors[:6], [[0.00625, 0.00625, 0.05, 0.05],
                                             [0.00625, 0.00625, 0.070711, 0.070711],
                                             [0.00625, 0.00625, 0.035355, 0.070711],
                                             [0.00625, 0.00625, 0.05, 0.1],
                                             [0.00625, 0.00625, 0.070711, 0.035355],
                                             [0.00625, 0.00625, 0.1, 0.05]], atol=1e-5)
    np.testing.assert_allclose(anchors[-1], [0.9, 0.9, 1.6, 0.8], atol=1e-5)


def test_config_selects_generator():
    cfg = SimpleNamespace(**SSD300)
    assert count_default_boxes(cfg) == 1917
    fpn = SimpleNamespace(img_shape=[640, 640], steps=[8, 16, 32, 64, 128], use_anchor_generator=True,
                          num_default=[6] * 5)
    assert default_boxes_from_config(fpn).shape == (51150, 4)


def test_num_default_disagreeing_with_aspect_ratios_names_the_level():
    with pytest.raises(ValueError, match=r"num_default\[1\] = 4"):
        ssd_default_boxes(**dict(SSD300, num_default=[3, 4, 6, 6, 6, 6]))


def test_img_shape_not_fitting_strides_is_an_error():
    with pytest.raises(ValueError, match="not a multiple"):
        grid_anchors([600, 600], [8, 16, 32, 64, 128])


def test_grid_anchor_config_needs_six_anchors_per_level_of_steps() -> None:
    with pytest.raises(ConfigError, match=r"num_default \[6, 6, 6, 6\].*\[6, 6, 6, 6, 6\]"):
        load_config("config/ssd_mobilenet_v1_fpn_config.yaml", {"num_default": [6, 6, 6, 6]})
    with pytest.raises(ConfigError, match=r"num_default \[9, 9, 9, 9, 9\]"):
        load_config("config/ssd_resnet50_fpn_config.yaml", {"num_default": [9] * 5})
