"""Depth network: configs, parameter counts, output contract, gradients, pretrained loading."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from oe_depth_ros.config import ConfigError, to_dict
from oe_depth_ros.model import (
    DepthNetConfig,
    ODConv2d,
    ODConvConfig,
    available_depth_configs,
    build_depth_net,
    load_depth_config,
)
from oe_depth_ros.model.hrnet import absorb_odconv_batchnorms

torch.set_num_threads(2)

ALL_CONFIGS = ["diffnet", "oe_depth", "diffnet_small", "oe_depth_small"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def diffnet():
    return build_depth_net("diffnet")


def test_shipped_configs_are_listed():
    assert set(ALL_CONFIGS) <= set(available_depth_configs())
    cfg = load_depth_config("oe_depth")
    assert cfg.odconv == ODConvConfig(stages=[2, 3, 4], kernel_num=4, reduction=0.0625)
    assert (cfg.min_depth, cfg.max_depth) == (0.1, 100.0)
    assert load_depth_config("diffnet").odconv is None


def test_diffnet_parameter_count_is_faithful(diffnet):
    assert count(diffnet.encoder) == 9_562_260
    assert count(diffnet.decoder) == 1_306_840
    assert count(diffnet) == 10_869_100
    assert not diffnet.odconv_layers()


@pytest.mark.parametrize("kernel_num, extra", [(4, 24_674_320), (1, 585_680)])
def test_odconv_extra_parameters(kernel_num, extra):
    cfg = dataclasses.replace(load_depth_config("oe_depth"),
                              odconv=ODConvConfig(stages=[2, 3, 4], kernel_num=kernel_num))
    net = build_depth_net(cfg)
    assert count(net) - 10_869_100 == extra
    # Every BasicBlock 3x3 conv of stages 2-4 is an ODConv, nothing else is.
    assert all(name.startswith(("stage2.", "stage3.", "stage4.")) for name in net.odconv_names)
    assert len(net.odconv_layers()) == len(net.odconv_names)
    static_3x3 = [n for n, m in net.encoder.named_modules()
                  if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                  and ".branches." in n and n.startswith("stage")]
    assert static_3x3 == []


def test_odconv_placement_is_configurable():
    cfg = DepthNetConfig(name="s4", encoder="hrnet_w18_small",
                         odconv=ODConvConfig(stages=[4], kernel_num=2))
    net = build_depth_net(cfg)
    assert net.odconv_names and all(n.startswith("stage4.") for n in net.odconv_names)
    assert all(m.kernel_num == 2 for m in net.odconv_layers())
    # hrnet_w18_small stage 4: 4 branches x 2 BasicBlocks x 2 convs.
    assert len(net.odconv_names) == 16


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_output_contract(name):
    net = build_depth_net(name).eval()
    assert net.config.name == name
    for h, w in ((192, 640), (64, 96)):
        with torch.no_grad():
            out = net(torch.rand(1, 3, h, w))
        assert set(out) == {("disp", s) for s in range(4)} | {("feat", s) for s in (1, 2, 3)}
        for s in range(4):
            disp = out[("disp", s)]
            assert disp.shape == (1, 1, h >> s, w >> s)
            assert disp.min() >= 0.0 and disp.max() <= 1.0
        for s, c in zip((1, 2, 3), (32, 64, 128)):
            assert out[("feat", s)].shape == (1, c, h >> s, w >> s)


def test_absorbed_batchnorms_keep_the_output():
    """Every ODConv layer takes its BatchNorm; the network's output stays the same."""
    net = build_depth_net("oe_depth_small")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # running statistics unlike the identity they start as
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    with pytest.raises(ValueError, match="eval mode"):
        absorb_odconv_batchnorms(net.encoder)
    net = net.eval().double()
    x = torch.rand(1, 3, 64, 96, generator=g, dtype=torch.float64)
    with torch.no_grad():
        before = net(x)[("disp", 0)]
        absorbed = absorb_odconv_batchnorms(net.encoder)
        after = net(x)[("disp", 0)]
    assert sorted(absorbed) == sorted(net.odconv_names)
    assert all(layer.out_scale is not None for layer in net.odconv_layers())
    blocks = [m for m in net.encoder.modules() if type(m).__name__ == "BasicBlock"]
    assert blocks and not any(isinstance(getattr(b, bn), torch.nn.BatchNorm2d)
                              for b in blocks for bn in ("bn1", "bn2"))
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-12)


def test_batch_dimension_is_independent_in_eval_mode():
    net = build_depth_net("oe_depth_small").eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = net(x)[("disp", 0)]
        alone = torch.cat([net(x[i:i + 1])[("disp", 0)] for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["diffnet", "oe_depth", "diffnet_small", "oe_depth_small"])
def test_every_parameter_receives_a_gradient(name):
    net = build_depth_net(name).train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = net(x)
    loss = sum(v.mean() for v in out.values())
    loss.backward()
    no_grad = [n for n, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()
               or torch.count_nonzero(p.grad) == 0]
    assert no_grad == []


def test_rejects_bad_input_sizes():
    net = build_depth_net("diffnet_small").eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 100, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(torch.rand(1, 1, 64, 64))


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown model config 'nope'.*diffnet"):
        build_depth_net("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nencoder: hrnet_w18\nkernels: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*'kernels'"):
        build_depth_net(bad)
    with pytest.raises(ConfigError, match="stages"):
        load_depth_config({"name": "x", "odconv": {"stages": [1]}})
    with pytest.raises(ConfigError, match="encoder"):
        load_depth_config({"name": "x", "encoder": "resnet50"})
    with pytest.raises(ConfigError, match="min_depth"):
        load_depth_config({"name": "x", "min_depth": 10.0, "max_depth": 1.0})


def test_yaml_path_and_mapping_round_trip(tmp_path):
    import yaml

    cfg = load_depth_config("oe_depth_small")
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({**to_dict(cfg), "name": "custom", "max_depth": 80.0}))
    custom = build_depth_net(str(path))
    assert custom.config.name == "custom" and custom.config.max_depth == 80.0
    assert load_depth_config(to_dict(cfg)) == cfg


def _timm_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).state_dict()


@pytest.mark.parametrize("layout", ["timm", "official"])
def test_pretrained_encoder_loads_from_local_file(tmp_path, layout):
    state = _timm_state("hrnet_w18_small", seed=3)
    assert any(k.startswith("classifier.") for k in state)  # the head is in the file
    path = tmp_path / "hrnet.pth"
    if layout == "official":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    net = build_depth_net("oe_depth_small", pretrained=path)
    own = net.encoder.state_dict()
    checked = 0
    for key, value in state.items():
        if key.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier")):
            continue
        if own[key].dim() == 5:  # an ODConv: every candidate starts from the static kernel
            for i in range(own[key].shape[0]):
                assert torch.equal(own[key][i], value), key
        else:
            assert torch.equal(own[key], value), key
        checked += 1
    assert checked > 100 and net.odconv_layers()


def test_pretrained_mismatch_is_reported(tmp_path):
    path = tmp_path / "w18.pth"
    torch.save(_timm_state("hrnet_w18", seed=0), path)
    with pytest.raises(ValueError, match="w18.pth.*hrnet_w18_small.*shape mismatch"):
        build_depth_net("diffnet_small", pretrained=path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_depth_net("diffnet_small", pretrained=tmp_path / "missing.pth")


def test_temperature_reaches_every_odconv():
    net = build_depth_net("oe_depth_small")
    net.update_temperature(4.0)
    assert all(isinstance(m, ODConv2d) and m.attention.temperature == 4.0
               for m in net.odconv_layers())


def test_start_at_depth_sets_the_first_output():
    """The heads' bias alone gives the requested depth (1 / (1/100 + 9.99 sigmoid(b)) = d)."""
    net = build_depth_net("diffnet_small").eval()
    net.start_at_depth(3.16)
    for head in net.decoder.heads:
        torch.nn.init.zeros_(head.conv.weight)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 192))
    for s in range(4):
        sigmoid = out[("disp", s)].double()
        depth = 1.0 / (1.0 / 100.0 + (1.0 / 0.1 - 1.0 / 100.0) * sigmoid)
        torch.testing.assert_close(depth, torch.full_like(depth, 3.16), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="start depth 100.0 must lie within"):
        net.start_at_depth(100.0)
