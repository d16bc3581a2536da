"""load_depth_net: training checkpoints, plain state_dicts and clear errors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from oe_depth_ros.config import to_dict
from oe_depth_ros.model import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    build_depth_net,
    build_pose_net,
    load_depth_net,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = build_depth_net("oe_depth_small")
    # Give BN statistics and attentions non-default values, as after training.
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, 64, 64))
    return net.eval()


def _outputs(net, x):
    with torch.no_grad():
        return net(x)[("disp", 0)]


def test_full_checkpoint_round_trip(tmp_path, trained, caplog):
    pose = build_pose_net()
    opt = torch.optim.Adam(list(trained.parameters()) + list(pose.parameters()), lr=1e-4)
    path = tmp_path / "ckpt.pt"
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "model_config": to_dict(trained.config),
        "depth": trained.state_dict(),
        "pose": pose.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": {"last_epoch": 3},
        "step": 10,
        "epoch": 1,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        "train_config": {"batch_size": 2},
        "input_size": [64, 64],
    }, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_depth_net(path)
    # The numpy RNG state is not a tensor: loading falls back to full unpickling, loudly.
    assert any("full unpickling" in r.getMessage() for r in caplog.records)
    assert not loaded.training
    assert loaded.config == trained.config
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(trained, x), rtol=0, atol=0)


def test_plain_state_dict_needs_config(tmp_path, trained):
    path = tmp_path / "depth.pth"
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="plain state_dict; pass config="):
        load_depth_net(path)
    loaded = load_depth_net(path, config="oe_depth_small")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(trained, x), rtol=0, atol=0)


def test_wrong_keys_are_listed(tmp_path, trained):
    state = dict(trained.state_dict())
    state["encoder.bogus.weight"] = torch.zeros(1)
    del state["decoder.heads.0.conv.bias"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_depth_net(path, config="oe_depth_small")
    msg = str(info.value)
    assert "bad.pth" in msg and "decoder.heads.0.conv.bias" in msg and "encoder.bogus.weight" in msg


def test_wrong_architecture_reports_shape_mismatch(tmp_path, trained):
    path = tmp_path / "odconv_weights.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(CheckpointError, match="odconv_weights.pth.*shape mismatch"):
        load_depth_net(path, config="diffnet_small")


def test_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_depth_net(tmp_path / "nothing.pt")
    path = tmp_path / "other.pt"
    torch.save({"format": "someone.else/2", "depth": {}}, path)
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'someone.else/2'"):
        load_depth_net(path)
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format.*'weights'"):
        load_depth_net(path, config="diffnet_small")
    torch.save({"format": CHECKPOINT_FORMAT, "depth": {}}, path)
    with pytest.raises(CheckpointError, match="model_config"):
        load_depth_net(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="other.pt"):
        load_depth_net(path, config="diffnet_small")


def test_batchnorm_epsilon_is_part_of_the_architecture(tmp_path):
    """bn_eps reaches every BatchNorm, bounds its gain and survives a checkpoint."""
    from dataclasses import replace

    from oe_depth_ros.model import load_depth_config

    torch.manual_seed(0)
    cfg = replace(load_depth_config("diffnet_small"), bn_eps=1e-3)
    net = build_depth_net(cfg).eval()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    # A channel that never varied in training (running_var 0): gain |gamma| / sqrt(eps).
    bn = norms[0]
    with torch.no_grad():
        bn.running_var.zero_()
        bn.running_mean.zero_()
        bn.weight.fill_(2.0)
        bn.bias.zero_()
        x = torch.randn(1, bn.num_features, 4, 4)
        torch.testing.assert_close(bn(x), x * 2.0 / 1e-3 ** 0.5)
    path = tmp_path / "eps.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": to_dict(net.config),
                "depth": net.state_dict()}, path)
    loaded = load_depth_net(path)
    assert loaded.config.bn_eps == 1e-3
    assert all(m.eps == 1e-3 for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(net, x), rtol=0, atol=0)
    # Checkpoints written before the option existed keep PyTorch's default.
    old = to_dict(net.config)
    del old["bn_eps"]
    assert load_depth_config(old).bn_eps == 1e-5
