"""Omni-dimensional dynamic convolution (ODConv, Li et al., ICLR 2022).

Per sample ``b`` the layer computes

    y_b = a_f[b] * conv(a_c[b] * x_b, sum_i a_w[b, i] * a_s[b] * W_i)

with four attentions computed from the globally pooled input: ``a_c`` over the input
channels, ``a_f`` over the output channels (filters), ``a_s`` over the k x k kernel
positions and ``a_w`` (a softmax) over the ``kernel_num`` candidate kernels ``W_i``.
Parameter names and shapes follow the reference implementation, so its state_dicts
load unchanged.

Batch handling: the per-sample kernels are computed batch-agnostically (a matmul over
the candidate kernels). A batch of one, the case that is exported to ONNX, runs a
single convolution whose weight is that computed kernel (``groups`` stays the layer's
own). Where the kernel has no more elements than the input, the channel and filter
attentions are folded into it, ``conv(a_c * x, W) * a_f = conv(x, a_f * W * a_c)``, so
the image-sized tensors see one convolution and nothing else (under INT8 one integer
convolution instead of a float multiply on either side of it); where the kernel is the
larger (wide layers on small feature maps), scaling the input and output is the cheaper
of the two. Larger batches in PyTorch scale the input and output and run one grouped
convolution with the batch folded into the groups, which is only ever traced when
exporting with a batch above one.

For inference the BatchNorm that follows the layer can be absorbed into it
(:meth:`ODConv2d.absorb_batchnorm`): its per-channel scale joins the filter attention and
its shift becomes the convolution's bias, so a folded kernel carries the whole affine
and the exported graph has no normalization between the convolution and its activation.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

Attn = Union[torch.Tensor, float]


class ODConvAttention(nn.Module):
    """The four attention branches of an ODConv layer (sub-module ``attention``).

    A skipped branch (k == 1: spatial, kernel_num == 1: kernel, depthwise: filter)
    has no parameters and yields the constant 1.0.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
        min_channel: int = 16,
    ) -> None:
        super().__init__()
        hidden = max(int(in_planes * reduction), min_channel)
        self.kernel_size = kernel_size
        self.kernel_num = kernel_num
        self.temperature = 1.0
        self.fc = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.channel_fc = nn.Conv2d(hidden, in_planes, 1, bias=True)
        self.depthwise = in_planes == groups and in_planes == out_planes
        self.filter_fc = None if self.depthwise else nn.Conv2d(hidden, out_planes, 1, bias=True)
        self.spatial_fc = (
            None if kernel_size == 1 else nn.Conv2d(hidden, kernel_size * kernel_size, 1, bias=True)
        )
        self.kernel_fc = None if kernel_num == 1 else nn.Conv2d(hidden, kernel_num, 1, bias=True)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def update_temperature(self, temperature: float) -> None:
        """Set the softmax/sigmoid temperature T (1 unless annealed)."""
        if temperature <= 0:
            raise ValueError(f"ODConv temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[Attn, Attn, Attn, Attn]:
        """Return the channel, filter, spatial and kernel attentions.

        Shapes: channel [B,in,1,1], filter [B,out,1,1], spatial [B,1,1,k,k], kernel
        [B,kernel_num]; skipped ones are 1.0.
        """
        batch = x.shape[0]
        t = self.temperature
        h = F.relu(self.bn(self.fc(F.adaptive_avg_pool2d(x, 1))))
        channel = torch.sigmoid(self.channel_fc(h) / t)
        filt: Attn = 1.0 if self.filter_fc is None else torch.sigmoid(self.filter_fc(h) / t)
        spatial: Attn = 1.0
        if self.spatial_fc is not None:
            k = self.kernel_size
            spatial = torch.sigmoid(self.spatial_fc(h).reshape(batch, 1, 1, k, k) / t)
        kernel: Attn = 1.0
        if self.kernel_fc is not None:
            kernel = torch.softmax(self.kernel_fc(h).reshape(batch, self.kernel_num) / t, dim=1)
        return channel, filt, spatial, kernel


class ODConv2d(nn.Module):
    """Omni-dimensional dynamic 2-D convolution (no bias), drop-in for ``nn.Conv2d``."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
    ) -> None:
        super().__init__()
        if in_planes % groups or out_planes % groups:
            raise ValueError(
                f"ODConv2d: in_planes ({in_planes}) and out_planes ({out_planes}) "
                f"must be divisible by groups ({groups})"
            )
        if kernel_num < 1:
            raise ValueError(f"ODConv2d: kernel_num must be >= 1, got {kernel_num}")
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.kernel_num = kernel_num
        self.attention = ODConvAttention(
            in_planes, out_planes, kernel_size, groups=groups, reduction=reduction,
            kernel_num=kernel_num,
        )
        self.weight = nn.Parameter(
            torch.empty(kernel_num, out_planes, in_planes // groups, kernel_size, kernel_size)
        )
        for i in range(kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")
        # An absorbed inference BatchNorm (absorb_batchnorm): not part of the state_dict.
        self.out_scale: torch.Tensor | None
        self.out_shift: torch.Tensor | None
        self.register_buffer("out_scale", None, persistent=False)
        self.register_buffer("out_shift", None, persistent=False)

    def update_temperature(self, temperature: float) -> None:
        """Set the attention temperature T."""
        self.attention.update_temperature(temperature)

    def start_as_static_conv(self) -> None:
        """Make the layer start as the static convolution ``conv(x, W)`` when every ``W_i = W``.

        The channel, filter and spatial heads' weights and biases are zeroed, so those
        attentions are the constant sigmoid(0) = 0.5 at any temperature, and the candidate
        kernels are divided by the product of these gains (a power of two: exact). The
        kernel attention keeps its initialization: it sums to one, so with equal candidates
        (pretrained loading) it does not change the output, and it gives each candidate its
        own gradient (a uniform one would keep equal candidates equal forever). The zeroed
        heads still get gradients (their input, the hidden vector, is not zero), so the
        attention learns from the first step on.
        """
        att = self.attention
        heads = [fc for fc in (att.channel_fc, att.filter_fc, att.spatial_fc) if fc is not None]
        with torch.no_grad():
            for fc in heads:
                fc.weight.zero_()
                if fc.bias is not None:
                    fc.bias.zero_()
            self.weight.mul_(2.0 ** len(heads))  # 1 / sigmoid(0) per constant attention

    def absorb_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Make the layer compute ``bn(self(x))`` for an inference-mode ``bn`` that follows it.

        ``bn(y) = y * s + t`` with ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``
        (running statistics). ``bn`` is then to be removed from the network. Inference
        only: training normalizes with batch statistics, so the layer refuses to train.
        """
        mean, var = bn.running_mean, bn.running_var
        if bn.num_features != self.out_planes or mean is None or var is None:
            raise ValueError(f"cannot absorb {bn}: need {self.out_planes} channels with "
                             "running statistics")
        if self.out_scale is not None:
            raise ValueError("this ODConv layer already absorbed a BatchNorm")
        with torch.no_grad():
            var = var.to(torch.float64)
            gamma = (torch.ones_like(var) if bn.weight is None
                     else bn.weight.detach().to(torch.float64))
            beta = (torch.zeros_like(var) if bn.bias is None
                    else bn.bias.detach().to(torch.float64))
            scale = gamma / torch.sqrt(var + bn.eps)
            shift = beta - mean.to(torch.float64) * scale
        dtype = self.weight.dtype
        self.out_scale = scale.to(dtype).reshape(1, self.out_planes, 1, 1)
        self.out_shift = shift.to(dtype)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor],
               recurse: bool = True) -> "ODConv2d":
        # ``Module.to(memory_format=torch.channels_last)`` rejects 5-D tensors; present the
        # candidate kernels to conversions as one 4-D [kernel_num * out, in/g, k, k] stack.
        def convert(t: torch.Tensor) -> torch.Tensor:
            if t.dim() == 5:
                return fn(t.reshape((-1,) + tuple(t.shape[2:]))).reshape(t.shape)
            return fn(t)

        return super()._apply(convert, recurse)

    def aggregated_kernels(self, spatial: Attn, kernel: Attn, batch: int) -> torch.Tensor:
        """Per-sample kernels ``sum_i a_w[b, i] * a_s[b] * W_i``: [B or 1, out, in/g, k, k]."""
        weight = self.weight
        if isinstance(kernel, torch.Tensor):
            agg = torch.matmul(kernel, weight.reshape(self.kernel_num, -1))
            agg = agg.reshape((batch,) + tuple(weight.shape[1:]))
        else:
            agg = weight[0].unsqueeze(0)
        if isinstance(spatial, torch.Tensor):
            agg = agg * spatial
        return agg

    def folded_kernel(self, agg: torch.Tensor, channel: torch.Tensor, filt: Attn) -> torch.Tensor:
        """One sample's kernel ``a_f * W * a_c`` [out, in/g, k, k] from ``agg`` [out, in/g, k, k].

        Output channel ``o`` of group ``g`` reads input channels ``g * in/g + j``, so the
        channel attention [1, in, 1, 1] is laid out per group along the kernel's second axis.
        """
        per_group = self.in_planes // self.groups
        a_c = channel.reshape(self.groups, 1, per_group).expand(
            self.groups, self.out_planes // self.groups, per_group)
        kernel = agg * a_c.reshape(self.out_planes, per_group, 1, 1)
        if isinstance(filt, torch.Tensor):
            kernel = kernel * filt.reshape(self.out_planes, 1, 1, 1)
        return kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.out_scale is not None:
            raise RuntimeError("an ODConv layer with an absorbed BatchNorm is for "
                               "inference only (eval mode)")
        channel, filt, spatial, kernel = self.attention(x)
        bias = self.out_shift
        if self.out_scale is not None:
            filt = filt * self.out_scale
        batch = x.shape[0]
        agg = self.aggregated_kernels(spatial, kernel, batch)
        if batch == 1 and agg[0].numel() <= x[0].numel():
            weight = self.folded_kernel(agg[0], channel, filt)
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                            self.groups)
        x = x * channel
        if agg.shape[0] == 1:
            out = F.conv2d(x, agg[0], None, self.stride, self.padding, self.dilation, self.groups)
        else:
            height, width = x.shape[-2:]
            out = F.conv2d(
                x.reshape(1, batch * self.in_planes, height, width),
                agg.reshape((batch * self.out_planes,) + tuple(agg.shape[2:])),
                None, self.stride, self.padding, self.dilation, self.groups * batch,
            )
            out = out.reshape((batch, self.out_planes) + tuple(out.shape[-2:]))
        out = out * filt
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_planes}, {self.out_planes}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, kernel_num={self.kernel_num}"
        )
