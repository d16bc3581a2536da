"""DIFFNet's released-weights layout -> this project's checkpoint, checked tensor by tensor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oe_depth_ros.model import build_depth_net, load_depth_net
from training.convert import DIFFNET_DECODER_ORDER, ConversionError, convert_files, main

torch.set_num_threads(2)

#: DIFFNet decoder module -> (our module, kind), written out from DIFFNet's structure.
OURS = {"up_x9_0": ("conv_half", "convblock"), "up_x9_1": ("conv_full", "convblock"),
        "72": ("fuse4", "attention"), "36": ("fuse3", "attention"),
        "18": ("fuse2", "attention"), "9": ("fuse1", "attention"),
        **{f"dispConvScale{i}": (f"heads.{i}", "conv3x3") for i in range(4)}}


def diffnet_layout(net: torch.nn.Module, prefix: str = "") -> tuple[dict, dict]:
    """(encoder.pth, depth.pth) dicts in DIFFNet's layout holding ``net``'s weights."""
    enc = {prefix + k: v.clone() for k, v in net.encoder.state_dict().items()}
    enc.update(height=64, width=192, use_stereo=False)
    dec = net.decoder
    depth: dict[str, torch.Tensor] = {}
    for index, name in enumerate(DIFFNET_DECODER_ORDER):
        ours, kind = OURS[name]
        module = dec.get_submodule(ours)
        if kind == "convblock":
            entries = {"conv.conv.weight": module.conv.weight, "conv.conv.bias": module.conv.bias}
        elif kind == "conv3x3":
            entries = {"conv.weight": module.conv.weight, "conv.bias": module.conv.bias}
        else:  # Linear layers store [out, in] matrices
            entries = {"ca.fc.0.weight": module.attention.reduce.weight[:, :, 0, 0],
                       "ca.fc.2.weight": module.attention.expand.weight[:, :, 0, 0],
                       "conv_se.weight": module.conv.weight, "conv_se.bias": module.conv.bias}
        for leaf, value in entries.items():  # the ModuleDict and the ModuleList both save it
            depth[f"convs.{name}.{leaf}"] = value.detach().clone()
            depth[f"decoder.{index}.{leaf}"] = value.detach().clone()
    return enc, depth


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    net = build_depth_net("diffnet_small").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("prefix,only_list", [("", False), ("module.", True)])
def test_converted_checkpoint_reproduces_the_network(source, tmp_path: Path, prefix: str,
                                                     only_list: bool) -> None:
    enc, depth = diffnet_layout(source, prefix)
    if only_list:  # a file that kept only the decoder.N keys
        depth = {k: v for k, v in depth.items() if k.startswith("decoder.")}
    torch.save(enc, tmp_path / "encoder.pth")
    torch.save(depth, tmp_path / "depth.pth")
    assert main(["--diffnet", str(tmp_path), "--out", str(tmp_path / "out.pt"),
                 "--model", "diffnet_small"]) == 0
    ckpt = torch.load(tmp_path / "out.pt", weights_only=True)
    assert ckpt["input_size"] == [64, 192]
    net = load_depth_net(tmp_path / "out.pt")
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    x = torch.rand(1, 3, 64, 192)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[("disp", 0)], source(x)[("disp", 0)])


def test_attention_matrices_act_as_diffnets_linear_layers(source) -> None:
    _, depth = diffnet_layout(source)
    x = torch.rand(2, source.decoder.fuse1.attention.reduce.in_channels, 5, 7)
    pooled = x.mean((2, 3))
    hidden = F.relu(F.linear(pooled, depth["convs.9.ca.fc.0.weight"]))
    weights = torch.sigmoid(F.linear(hidden, depth["convs.9.ca.fc.2.weight"]))
    with torch.no_grad():
        torch.testing.assert_close(source.decoder.fuse1.attention(x),
                                   x * weights[:, :, None, None])


def test_wrong_layouts_are_named(source, tmp_path: Path) -> None:
    enc, depth = diffnet_layout(source)
    bad = dict(depth, **{"convs.99.conv_se.weight": torch.zeros(1)})
    torch.save(enc, tmp_path / "encoder.pth")
    torch.save(bad, tmp_path / "depth.pth")
    with pytest.raises(ConversionError, match="outside DIFFNet's decoder.*convs.99|99"):
        convert_files(tmp_path / "encoder.pth", tmp_path / "depth.pth", tmp_path / "o.pt",
                      "diffnet_small")
    torch.save(depth, tmp_path / "depth.pth")
    with pytest.raises(ConversionError, match="do not fit"):  # encoder of another size
        convert_files(tmp_path / "encoder.pth", tmp_path / "depth.pth", tmp_path / "o.pt",
                      "diffnet")
    assert main(["--encoder", str(tmp_path / "missing.pth"), "--depth",
                 str(tmp_path / "depth.pth"), "--out", str(tmp_path / "o.pt")]) == 1
