"""The Cityscapes label table: labelIds (what label PNGs hold) and the 19 trainIds.

Semantic labels are stored as Cityscapes labelIds (FSRE-Depth's pseudo-labels, the
synthetic world's ``segmentation`` folder); training and evaluation use the 19
evaluated classes' trainIds, and every other labelId is void (trainId 255, ignored).
"""
from __future__ import annotations

import numpy as np

#: The folder of label PNGs beside a dataset's date folders (FSRE-Depth's layout
#: ``<root>/segmentation/<date>/<drive>/image_0X/%010d.png``).
SEGMENTATION_DIR = "segmentation"

#: trainId of void labels: neither anchor nor neighbor in the triplet loss, no boundary.
IGNORE_TRAIN_ID = 255

#: (name, labelId) of the 19 evaluated classes, in trainId order (0..18).
TRAIN_CLASSES: tuple[tuple[str, int], ...] = (
    ("road", 7), ("sidewalk", 8), ("building", 11), ("wall", 12), ("fence", 13),
    ("pole", 17), ("traffic light", 19), ("traffic sign", 20), ("vegetation", 21),
    ("terrain", 22), ("sky", 23), ("person", 24), ("rider", 25), ("car", 26),
    ("truck", 27), ("bus", 28), ("train", 31), ("motorcycle", 32), ("bicycle", 33),
)
#: labelId of each evaluated class by name.
LABEL_ID = {name: label_id for name, label_id in TRAIN_CLASSES}
#: labelId -> trainId of the evaluated classes (all other labelIds are void).
LABEL_TO_TRAIN_ID = {label_id: train_id for train_id, (_, label_id) in enumerate(TRAIN_CLASSES)}

_LOOKUP = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
_LOOKUP[list(LABEL_TO_TRAIN_ID)] = list(LABEL_TO_TRAIN_ID.values())


def labels_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds (0..255) to the 19 trainIds as uint8; void -> 255."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
            raise ValueError("Cityscapes labelIds must lie in 0..255")
        label_ids = label_ids.astype(np.uint8)
    return _LOOKUP[label_ids]
