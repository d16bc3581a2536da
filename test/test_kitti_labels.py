"""The Cityscapes label table: labelId -> trainId mapping, names, and the world's labels."""
from __future__ import annotations

import numpy as np
import pytest

from oe_depth_ros.synthetic import world
from oe_depth_ros.kitti.labels import (
    IGNORE_TRAIN_ID,
    LABEL_ID,
    LABEL_TO_TRAIN_ID,
    TRAIN_CLASSES,
    labels_to_train_ids,
)


def test_label_mapping_table() -> None:
    ids = np.array([0, 1, 6, 7, 8, 11, 17, 23, 24, 26, 33, 34, 255], dtype=np.uint8)
    expected = [255, 255, 255, 0, 1, 2, 5, 10, 11, 13, 18, 255, 255]
    assert labels_to_train_ids(ids).tolist() == expected
    # Wider integer types map the same; values outside 0..255 are refused.
    assert labels_to_train_ids(ids.astype(np.int64)).tolist() == expected
    with pytest.raises(ValueError, match="0..255"):
        labels_to_train_ids(np.array([7, 256]))


def test_table_covers_the_19_classes_once() -> None:
    assert len(TRAIN_CLASSES) == 19 and IGNORE_TRAIN_ID == 255
    assert sorted(LABEL_TO_TRAIN_ID.values()) == list(range(19))
    assert LABEL_ID["road"] == 7 and LABEL_ID["car"] == 26 and LABEL_ID["bicycle"] == 33
    # Cityscapes' evaluated labelIds (public label table): every other id is void.
    assert sorted(LABEL_ID.values()) == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26,
                                         27, 28, 31, 32, 33]
    all_ids = labels_to_train_ids(np.arange(256, dtype=np.uint8))
    assert np.count_nonzero(all_ids != IGNORE_TRAIN_ID) == 19


def test_synthetic_world_labels_are_evaluated_classes() -> None:
    labels = np.array(sorted(set(world.MATERIAL_LABEL.values())
                             | {world.LABEL_ROAD, world.LABEL_TERRAIN, world.LABEL_SKY}),
                      dtype=np.uint8)
    assert labels.tolist() == [7, 8, 11, 12, 17, 20, 21, 22, 23, 26]  # docs/synthetic.md
    assert IGNORE_TRAIN_ID not in labels_to_train_ids(labels).tolist()
