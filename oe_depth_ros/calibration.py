"""Calibration images for an INT8 export: an image folder, a bag topic or the synthetic world.

Static INT8 quantization fixes every activation's range from the activations seen on
these images, so they should look like what the robot's camera sends. A source is
written as one string (``export-onnx --calibration SOURCE``):

* ``DIR``: the images in a folder (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``; sorted by
  name), e.g. frames saved from the robot's camera;
* ``bag:BAG:/TOPIC``: a rosbag2 and its ``sensor_msgs/msg/Image`` topic (any color,
  mono or bayer encoding), e.g. ``bag:drive.bag:/camera/image_raw``;
* ``synthetic``: frames rendered from the project's synthetic world (drive 1 of world
  seed :data:`SYNTHETIC_SEED`, which no other tool renders), for networks trained on it.

At most ``frames`` calibration images and :data:`HELD_OUT_FRAMES` more are read, spread
evenly over the source; every fourth of them (at most :data:`HELD_OUT_FRAMES`) is held
out of calibration and verifies the INT8 model in the camera's own domain. Each is
center-cropped to the network's aspect ratio and resized as at inference. Uniform
frames (a lens cap, a dropped frame) are left out with a warning; a source with no
other frame is refused: it cannot represent the camera's images.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np

from oe_depth_ros.inference.quantize import CalibrationSet

LOG = logging.getLogger(__name__)

#: Image files of a calibration folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Default number of calibration frames (the activation ranges settle well before).
DEFAULT_FRAMES = 32
#: Most frames of the source held out of calibration to verify the INT8 model on.
HELD_OUT_FRAMES = 4
#: Every HELD_OUT_EVERY-th frame read is held out (while fewer than HELD_OUT_FRAMES).
HELD_OUT_EVERY = 4
#: A frame whose pixel standard deviation (0-255 scale) is below this is uniform.
UNIFORM_STD = 1.0
#: World seed of the synthetic calibration drive (the demo and training use seed 0).
SYNTHETIC_SEED = 7
SYNTHETIC = "synthetic"
BAG_PREFIX = "bag:"
IMAGE_TYPE = "sensor_msgs/msg/Image"


class CalibrationError(ValueError):
    """A calibration source that cannot be read or holds no usable image."""


@dataclasses.dataclass(frozen=True)
class CalibrationSource:
    """A parsed ``--calibration`` value."""

    kind: str  #: "folder", "bag" or "synthetic"
    path: Path | None = None
    topic: str | None = None

    @classmethod
    def parse(cls, text: str) -> "CalibrationSource":
        """``DIR``, ``bag:BAG:/TOPIC`` or ``synthetic``; CalibrationError names a bad one."""
        if text == SYNTHETIC:
            return cls("synthetic")
        if text.startswith(BAG_PREFIX):
            bag, sep, topic = text[len(BAG_PREFIX):].rpartition(":")
            if not sep or not bag or not topic.startswith("/"):
                raise CalibrationError(f"calibration source {text!r}: write a bag topic as "
                                       "bag:BAG:/TOPIC, e.g. bag:drive.bag:/camera/image_raw")
            return cls("bag", Path(bag), topic)
        path = Path(text)
        if not path.is_dir():
            raise CalibrationError(f"calibration source {text!r} is not a folder of images; "
                                   "give DIR, bag:BAG:/TOPIC or synthetic")
        return cls("folder", path)

    def describe(self) -> str:
        """The source as the metadata records it."""
        if self.kind == "bag":
            return f"{BAG_PREFIX}{self.path}:{self.topic}"
        return SYNTHETIC if self.kind == "synthetic" else str(self.path)


def _spread(count: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly over ``count`` items (all of them when fewer)."""
    if count <= frames:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, frames).round()})


def folder_frames(folder: Path, frames: int) -> list[np.ndarray]:
    """uint8 RGB images from a folder, spread over its sorted file names."""
    from oe_depth_ros.inference.conditioning import read_rgb

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no image "
                               f"({', '.join(IMAGE_SUFFIXES)})")
    try:
        return [read_rgb(files[i]) for i in _spread(len(files), frames)]
    except FileNotFoundError as exc:
        raise CalibrationError(f"calibration folder {folder}: {exc}") from exc


def bag_frames(bag: Path, topic: str, frames: int) -> list[np.ndarray]:
    """uint8 RGB images of a bag's Image topic, spread over the topic's messages."""
    from oe_depth_ros.bags.bagio import BagReader
    from oe_depth_ros.messages import image_to_rgb

    with BagReader(bag) as reader:
        topics = reader.topics()
        if topics.get(topic) != IMAGE_TYPE:
            images = sorted(t for t, kind in topics.items() if kind == IMAGE_TYPE)
            found = f"a {topics[topic]} topic" if topic in topics else "not in the bag"
            raise CalibrationError(f"calibration topic {topic} of {bag} is {found}; it must be "
                                   f"{IMAGE_TYPE} (image topics: {', '.join(images) or 'none'})")
        wanted = set(_spread(reader.message_count(topic), frames))
        out = []
        for index, (conn, stamp, raw) in enumerate(reader.messages([topic])):
            if index in wanted:
                out.append(image_to_rgb(reader.deserialize(raw, conn, stamp)))
    if not out:
        raise CalibrationError(f"calibration topic {topic} of {bag} has no message")
    return out


def synthetic_frames(height: int, width: int, frames: int) -> list[np.ndarray]:
    """uint8 RGB camera-2 frames of one synthetic drive, rendered at the network size."""
    from oe_depth_ros.kitti.raw import read_calib
    from oe_depth_ros.synthetic.dataset import plan_drive
    from oe_depth_ros.synthetic.rig import calibration_texts
    from oe_depth_ros.synthetic.sensors import SensorRig

    with tempfile.TemporaryDirectory(prefix="oe_depth_calib_") as tmp:
        for name, text in calibration_texts(width, height).items():
            (Path(tmp) / name).write_text(text, encoding="ascii")
        calib = read_calib(tmp)
    rig = SensorRig(calib, width, height, cameras=(2,))
    plan = plan_drive(SYNTHETIC_SEED, 1, frames)
    return [np.clip(rig.render_camera(plan.world, plan.imu_pose(k), 2)[0] * 255.0 + 0.5,
                    0, 255).astype(np.uint8) for k in range(frames)]


def textured(images: list[np.ndarray], where: str) -> list[np.ndarray]:
    """``images`` without uniform frames (logged); CalibrationError when none is left."""
    stds = [float(np.std(img)) for img in images]
    kept = [img for img, std in zip(images, stds) if std >= UNIFORM_STD]
    if not kept:
        raise CalibrationError(
            f"every calibration frame of {where} is uniform (pixel std at most "
            f"{max(stds):.2f} of 255, below {UNIFORM_STD}): INT8 ranges calibrated on them "
            "do not cover a camera's images; give frames of the camera")
    if len(kept) < len(images):
        LOG.warning("left out %d uniform calibration frame(s) of %s (pixel std below %s)",
                    len(images) - len(kept), where, UNIFORM_STD)
    return kept


def split_held_out(count: int) -> tuple[list[int], list[int]]:
    """Indices of ``count`` frames: (calibration, held out); every HELD_OUT_EVERY-th held out.

    At most HELD_OUT_FRAMES are held out, none from fewer than HELD_OUT_EVERY frames.
    """
    held = list(range(HELD_OUT_EVERY - 1, count, HELD_OUT_EVERY))[:HELD_OUT_FRAMES]
    return [i for i in range(count) if i not in held], held


def load_calibration(source: str | CalibrationSource, height: int, width: int,
                     frames: int = DEFAULT_FRAMES) -> CalibrationSet:
    """At most ``frames`` calibration inputs of ``source`` and its held-out inputs, H x W."""
    from oe_depth_ros.imageops import to_network_input
    from oe_depth_ros.inference.conditioning import crop_to_aspect

    if isinstance(source, str):
        source = CalibrationSource.parse(source)
    if frames < 1:
        raise CalibrationError(f"calibration frames must be at least 1, got {frames}")
    wanted = frames + HELD_OUT_FRAMES
    if source.kind == "synthetic":
        images = synthetic_frames(height, width, wanted)
    elif source.kind == "bag":
        assert source.path is not None and source.topic is not None
        images = bag_frames(source.path, source.topic, wanted)
    else:
        assert source.path is not None
        images = folder_frames(source.path, wanted)
    images = textured(images, source.describe())
    calibrate, held = split_held_out(len(images))
    calibrate = calibrate[:frames]
    LOG.info("calibrating on %d frames of %s, %d held out for the verification",
             len(calibrate), source.describe(), len(held))

    def inputs(indices: list[int]) -> tuple[np.ndarray, ...]:
        return tuple(to_network_input(crop_to_aspect(images[i], height, width), (height, width))
                     for i in indices)

    return CalibrationSet(source.describe(), inputs(calibrate), held_out=inputs(held))
