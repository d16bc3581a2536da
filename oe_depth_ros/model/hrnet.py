"""HRNet encoder built from timm's HRNet modules, returning every stage's outputs.

DIFFNet feeds its decoder with the stem and with each stage's branch outputs rather
than only the last stage. :class:`HRNetEncoder` keeps timm's module names (``conv1``,
``bn1``, ``conv2``, ``bn2``, ``layer1``, ``transition1..3``, ``stage2..4``), so ImageNet
weights in timm's or the official HRNet format load by name; the classification head
is dropped. The fuse layers upsample as DIFFNet's HRNet does (bilinear,
``align_corners=True``) instead of timm's nearest neighbor; the upsampling has no
parameters, so the weights and the parameter count are unchanged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from .odconv import ODConv2d
from .state_dict import mismatch_summary, read_state_dict

LOG = logging.getLogger(__name__)

_HEAD_PREFIXES = (
    "incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "fc.", "head.",
)
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.")
SUPPORTED_ENCODERS = ("hrnet_w18", "hrnet_w18_small", "hrnet_w18_small_v2")
#: The HRNet stages built of BasicBlocks (stage 1 is Bottlenecks): where ODConv can go.
BASIC_BLOCK_STAGES = (2, 3, 4)


class HRNetEncoder(nn.Module):
    """HRNet trunk; ``forward`` returns five feature groups, fine to coarse.

    Group 0 (H/2): [stem conv1]; group 1 (H/4): [stem conv2, branch 0 of stages 2, 3, 4];
    group 2 (H/8): [branch 1 of stages 2, 3, 4]; group 3 (H/16): [branch 2 of stages
    3, 4]; group 4 (H/32): [branch 3 of stage 4]. ``group_channels`` lists the channel
    count of every tensor in each group.
    """

    def __init__(self, name: str = "hrnet_w18") -> None:
        super().__init__()
        if name not in SUPPORTED_ENCODERS:
            raise ValueError(
                f"unknown encoder {name!r}; supported: {', '.join(SUPPORTED_ENCODERS)}"
            )
        import timm

        trunk: Any = timm.create_model(name, pretrained=False)
        self.name = name
        self.conv1: nn.Conv2d = trunk.conv1
        self.bn1: nn.Module = trunk.bn1
        self.conv2: nn.Conv2d = trunk.conv2
        self.bn2: nn.Module = trunk.bn2
        self.layer1: nn.Module = trunk.layer1
        self.transition1: nn.ModuleList = trunk.transition1
        self.stage2: nn.Sequential = trunk.stage2
        self.transition2: nn.ModuleList = trunk.transition2
        self.stage3: nn.Sequential = trunk.stage3
        self.transition3: nn.ModuleList = trunk.transition3
        self.stage4: nn.Sequential = trunk.stage4
        self.act = nn.ReLU(inplace=True)
        use_bilinear_fuse_upsampling(self)
        stem = self.conv1.out_channels
        s2, s3, s4 = (list(stage[-1].get_num_in_chs())
                      for stage in (self.stage2, self.stage3, self.stage4))
        self.group_channels: list[list[int]] = [
            [stem],
            [self.conv2.out_channels, s2[0], s3[0], s4[0]],
            [s2[1], s3[1], s4[1]],
            [s3[2], s4[2]],
            [s4[3]],
        ]

    @staticmethod
    def _transition(transition: nn.ModuleList, prev: list[torch.Tensor]) -> list[torch.Tensor]:
        # As in HRNet: a branch's transition reads the previous stage's last branch.
        return [prev[i] if isinstance(t, nn.Identity) else t(prev[-1])
                for i, t in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        x1 = self.act(self.bn1(self.conv1(x)))
        x2 = self.act(self.bn2(self.conv2(x1)))
        y = self.layer1(x2)
        y2 = self.stage2([t(y) for t in self.transition1])
        y3 = self.stage3(self._transition(self.transition2, y2))
        y4 = self.stage4(self._transition(self.transition3, y3))
        return [
            [x1],
            [x2, y2[0], y3[0], y4[0]],
            [y2[1], y3[1], y4[1]],
            [y3[2], y4[2]],
            [y4[3]],
        ]

    def basic_block_convs(self, stages: Iterable[int]) -> Iterator[tuple[str, nn.Module, str]]:
        """Yield (qualified name, parent block, attribute) for BasicBlock 3x3 convs.

        Only the BasicBlocks in the given HRNet ``stages`` (2..4) are visited.
        """
        for stage in stages:
            stage_module = getattr(self, f"stage{stage}")
            for name, module in stage_module.named_modules():
                if type(module).__name__ != "BasicBlock":
                    continue
                for attr in ("conv1", "conv2"):
                    conv = getattr(module, attr)
                    if isinstance(conv, (nn.Conv2d, ODConv2d)) and _kernel_size(conv) == 3:
                        yield f"stage{stage}.{name}.{attr}", module, attr


def absorb_odconv_batchnorms(encoder: HRNetEncoder) -> list[str]:
    """For inference: fold the BatchNorm after each ODConv layer into it; return their names.

    In a BasicBlock ``conv1`` feeds ``bn1`` and ``conv2`` feeds ``bn2`` and nothing else,
    so ``bnN(convN(x))`` becomes one layer (:meth:`ODConv2d.absorb_batchnorm`) and the
    BatchNorm an identity. The encoder must be in eval mode (running statistics).
    """
    if encoder.training:
        raise ValueError("absorbing BatchNorms needs an encoder in eval mode")
    absorbed = []
    for name, block, attr in list(encoder.basic_block_convs(BASIC_BLOCK_STAGES)):
        conv = getattr(block, attr)
        bn_attr = "bn" + attr[len("conv"):]
        bn = getattr(block, bn_attr, None)
        if not isinstance(conv, ODConv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        conv.absorb_batchnorm(bn)
        setattr(block, bn_attr, nn.Identity())
        absorbed.append(name)
    return absorbed


def use_bilinear_fuse_upsampling(module: nn.Module) -> int:
    """Make every fuse-layer upsampling of ``module`` bilinear with align_corners=True.

    timm's HRNet upsamples the coarser branches with nearest neighbor; DIFFNet's (and the
    official HRNet's) interpolates bilinearly with ``align_corners=True``. Returns how many
    upsampling layers were replaced.
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Upsample):
                setattr(parent, name, nn.Upsample(scale_factor=child.scale_factor,
                                                  mode="bilinear", align_corners=True))
                replaced += 1
    return replaced


def _kernel_size(conv: nn.Module) -> int:
    k = conv.kernel_size
    if isinstance(k, tuple):
        return int(k[0])
    if isinstance(k, int):
        return k
    raise TypeError(f"{type(conv).__name__} has no integer kernel_size: {k!r}")


def replace_with_odconv(
    encoder: HRNetEncoder, stages: Iterable[int], kernel_num: int, reduction: float
) -> list[str]:
    """Swap the BasicBlock 3x3 convs of ``stages`` for ODConv2d; return their names.

    The candidate kernels get ODConv's own independent initialization;
    :func:`load_pretrained_encoder` later sets each of them to the pretrained kernel.
    """
    replaced = []
    for name, block, attr in list(encoder.basic_block_convs(stages)):
        conv = getattr(block, attr)
        if not isinstance(conv, nn.Conv2d):
            continue
        if conv.bias is not None:
            raise ValueError(f"{name}: ODConv replacement expects a bias-free conv")
        od = ODConv2d(
            conv.in_channels, conv.out_channels, 3, stride=conv.stride[0],
            padding=int(conv.padding[0]), dilation=conv.dilation[0], groups=conv.groups,
            reduction=reduction, kernel_num=kernel_num,
        )
        setattr(block, attr, od)
        replaced.append(name)
    return replaced


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_pretrained_encoder(encoder: HRNetEncoder, path: str | Path) -> None:
    """Load ImageNet HRNet weights (timm or official HRNet key names) from a local file.

    The classification head is ignored; an ODConv layer receives the static kernel in
    every candidate and keeps its freshly initialized attention branch. Anything else
    that does not match raises ``ValueError`` naming the first mismatches.
    """
    state = _strip_wrappers(read_state_dict(path))
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    own = encoder.state_dict()
    odconv_weights = {
        f"{name}.weight" for name, m in encoder.named_modules() if isinstance(m, ODConv2d)
    }
    unexpected, shape_errors, loaded = [], [], {}
    for key, value in state.items():
        if key not in own:
            unexpected.append(key)
            continue
        target = own[key]
        if key in odconv_weights and value.dim() == 4 and target.dim() == 5:
            value = value.unsqueeze(0).expand_as(target)
        if tuple(value.shape) != tuple(target.shape):
            shape_errors.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        loaded[key] = value
    missing = [
        k for k in own if k not in loaded and ".attention." not in k
    ]
    problems = mismatch_summary(missing, unexpected, shape_errors)
    if problems:
        raise ValueError(f"{path}: does not match encoder {encoder.name!r}: {problems}")
    encoder.load_state_dict(loaded, strict=False)
    LOG.info("loaded %d pretrained encoder tensors from %s", len(loaded), path)
