"""Shared pytest fixtures: a small synthetic KITTI world, ROS isolation, markers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config: pytest.Config) -> None:
    # Keep DDS traffic of node tests on this machine and away from other runs.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colcon workspace with a copy of the package, built once per run (``colcon build``)."""
    from colcon_helpers import build_workspace

    return build_workspace(tmp_path_factory.mktemp("colcon_ws"))


#: frames per drive of the session's synthetic world
SYNTH_WORLD_FRAMES = 8


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic KITTI world (2 drives x 8 frames, 416x128), made once per run."""
    from oe_depth_ros.synthetic.dataset import generate_dataset

    root = tmp_path_factory.mktemp("synth_world")
    return generate_dataset(root, drives=2, frames=SYNTH_WORLD_FRAMES, seed=7, width=416,
                            height=128)


@pytest.fixture(scope="session")
def oxts_splits(synth_world) -> dict[str, Path]:
    """The session world's split files for synth_small_oxts's source frames (-2, +2)."""
    from training.experiments.demo import recipe_splits

    return recipe_splits("synth_small_oxts", synth_world, SYNTH_WORLD_FRAMES)
