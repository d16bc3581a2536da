"""ODConv2d against an explicit per-sample evaluation of the ODConv formula."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oe_depth_ros.model import ODConv2d

torch.set_num_threads(2)


def randomize(m: ODConv2d, seed: int = 0) -> None:
    """Give every parameter and BN statistic non-trivial values so that all attentions matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        bn = m.attention.bn
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.2)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


def reference(m: ODConv2d, x: torch.Tensor, temperature: float = 1.0,
              batch_stats: bool = False) -> torch.Tensor:
    """y_b = a_f * conv(a_c * x_b, sum_i a_w[i] * a_s * W_i), one sample at a time.

    The attentions are recomputed by hand from the sub-layers' weights.
    """
    att = m.attention
    k = m.kernel_size
    pooled = x.mean(dim=(2, 3))                                   # [B, in]
    hidden = pooled @ att.fc.weight[:, :, 0, 0].t()              # [B, A]
    if batch_stats:
        mean, var = hidden.mean(0), hidden.var(0, unbiased=False)
    else:
        mean, var = att.bn.running_mean, att.bn.running_var
    hidden = (hidden - mean) / torch.sqrt(var + att.bn.eps) * att.bn.weight + att.bn.bias
    hidden = torch.clamp(hidden, min=0.0)

    def head(fc):
        return hidden @ fc.weight[:, :, 0, 0].t() + fc.bias

    outputs = []
    for b in range(x.shape[0]):
        a_c = 1.0 / (1.0 + torch.exp(-head(att.channel_fc)[b] / temperature))
        if att.filter_fc is not None:
            a_f = 1.0 / (1.0 + torch.exp(-head(att.filter_fc)[b] / temperature))
        else:
            a_f = torch.ones(m.out_planes)
        if att.spatial_fc is not None:
            a_s = (1.0 / (1.0 + torch.exp(-head(att.spatial_fc)[b] / temperature))).reshape(k, k)
        else:
            a_s = torch.ones(k, k)
        if att.kernel_fc is not None:
            logits = head(att.kernel_fc)[b] / temperature
            a_w = torch.exp(logits - logits.max())
            a_w = a_w / a_w.sum()
        else:
            a_w = torch.ones(1)
        kernel = torch.zeros_like(m.weight[0])
        for i in range(m.kernel_num):
            kernel = kernel + a_w[i] * m.weight[i] * a_s
        xb = x[b:b + 1] * a_c.reshape(1, -1, 1, 1)
        yb = F.conv2d(xb, kernel, None, m.stride, m.padding, m.dilation, m.groups)
        outputs.append(yb * a_f.reshape(1, -1, 1, 1))
    return torch.cat(outputs, 0)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("kernel_num", [1, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [(11, 13), (3, 2)])  # every kernel folded / most not
def test_matches_per_sample_formula(k, kernel_num, stride, batch, groups, size):
    m = ODConv2d(8, 12, k, stride=stride, padding=k // 2, groups=groups, kernel_num=kernel_num)
    randomize(m, seed=k * 100 + kernel_num * 10 + stride + batch + groups)
    m.eval()
    x = torch.randn(batch, 8, *size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        y = m(x)
        ref = reference(m, x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2, 8])  # 8: depthwise, no filter attention
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("size", [(11, 13), (3, 2)])  # folded kernel / scaled output
def test_absorbed_batchnorm_matches_layer_then_batchnorm(groups, batch, size):
    """An absorbed BatchNorm gives the formula followed by BN's running-statistics affine."""
    m = ODConv2d(8, 8, 3, padding=1, groups=groups, kernel_num=4)
    randomize(m, seed=11 + groups + batch)
    bn = torch.nn.BatchNorm2d(8, eps=1e-3)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(8, generator=g))
        bn.running_var.copy_(torch.rand(8, generator=g) + 0.1)
        bn.weight.copy_(torch.randn(8, generator=g))
        bn.bias.copy_(torch.randn(8, generator=g))
    m.eval()
    keys = set(m.state_dict())
    m.absorb_batchnorm(bn)
    assert set(m.state_dict()) == keys  # checkpoints are unchanged
    x = torch.randn(batch, 8, *size, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        y = m(x)
        ref = reference(m, x)
    by_hand = torch.empty_like(ref)
    for c in range(8):  # (y - mean) / sqrt(var + eps) * gamma + beta, channel by channel
        scale = bn.weight[c] / math.sqrt(float(bn.running_var[c]) + bn.eps)
        by_hand[:, c] = (ref[:, c] - bn.running_mean[c]) * scale + bn.bias[c]
    torch.testing.assert_close(y, by_hand.detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already absorbed"):
        m.absorb_batchnorm(bn)
    m.train()
    with pytest.raises(RuntimeError, match="inference only"):
        m(x)


def test_absorb_batchnorm_refuses_other_widths():
    with pytest.raises(ValueError, match="need 8 channels"):
        ODConv2d(4, 8, 3, padding=1).absorb_batchnorm(torch.nn.BatchNorm2d(6))


def test_training_mode_uses_batch_statistics_and_dilation():
    m = ODConv2d(6, 10, 3, padding=2, dilation=2, kernel_num=3)
    randomize(m, seed=3)
    m.train()
    x = torch.randn(4, 6, 9, 9, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = m(x)
        ref = reference(m, x, batch_stats=True)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_temperature_divides_logits():
    m = ODConv2d(8, 8, 3, padding=1, kernel_num=4)
    randomize(m, seed=5)
    m.eval()
    m.update_temperature(0.5)
    x = torch.randn(2, 8, 7, 7, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(y, reference(m, x, temperature=0.5), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(y, reference(m, x, temperature=1.0), atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        m.update_temperature(0.0)


def test_depthwise_has_no_filter_attention():
    m = ODConv2d(8, 8, 3, padding=1, groups=8, kernel_num=4)
    assert m.attention.filter_fc is None
    assert "attention.filter_fc.weight" not in m.state_dict()
    assert m.weight.shape == (4, 8, 1, 3, 3)
    randomize(m, seed=7)
    m.eval()
    x = torch.randn(3, 8, 10, 10, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        a_c, a_f, a_s, a_w = m.attention(x)
        assert a_f == 1.0
        torch.testing.assert_close(m(x), reference(m, x), rtol=1e-5, atol=1e-5)


def test_skipped_attentions_are_one():
    m = ODConv2d(8, 8, 1, kernel_num=1).eval()
    a_c, a_f, a_s, a_w = m.attention(torch.randn(2, 8, 5, 5))
    assert a_s == 1.0 and a_w == 1.0
    assert a_c.shape == (2, 8, 1, 1) and a_f.shape == (2, 8, 1, 1)
    assert m.attention.spatial_fc is None and m.attention.kernel_fc is None


def test_batch_independence_in_eval_mode():
    m = ODConv2d(8, 16, 3, padding=1, kernel_num=4)
    randomize(m, seed=9)
    m.eval()
    x = torch.randn(5, 8, 12, 12, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        together = m(x)
        alone = torch.cat([m(x[i:i + 1]) for i in range(5)])
        shuffled = m(x.flip(0)).flip(0)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together, shuffled, rtol=1e-5, atol=1e-6)


def test_constant_attentions_give_a_plain_convolution():
    cin, cout, k, kn = 6, 10, 3, 4
    m = ODConv2d(cin, cout, k, padding=1, kernel_num=kn)
    randomize(m, seed=11)
    g = torch.Generator().manual_seed(12)
    b_c, b_f, b_s, b_w = (torch.randn(n, generator=g) for n in (cin, cout, k * k, kn))
    att = m.attention
    with torch.no_grad():
        for fc, bias in ((att.channel_fc, b_c), (att.filter_fc, b_f), (att.spatial_fc, b_s),
                         (att.kernel_fc, b_w)):
            fc.weight.zero_()
            fc.bias.copy_(bias)
    m.eval()
    x = torch.randn(3, cin, 9, 9, generator=g)
    # Constant attentions fold into one static kernel.
    a_c = 1 / (1 + torch.exp(-b_c))
    a_f = 1 / (1 + torch.exp(-b_f))
    a_s = (1 / (1 + torch.exp(-b_s))).reshape(k, k)
    a_w = torch.exp(b_w) / torch.exp(b_w).sum()
    static = sum(a_w[i] * m.weight[i] for i in range(kn)) * a_s
    static = static * a_c.reshape(1, cin, 1, 1) * a_f.reshape(cout, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.conv2d(x, static, padding=1), rtol=1e-5, atol=1e-5)


def official_layout(cin: int, cout: int, k: int, kernel_num: int) -> dict[str, tuple]:
    """Parameter names and shapes of the reference ODConv module, written out by hand."""
    hidden = max(int(cin * 0.0625), 16)
    return {
        "weight": (kernel_num, cout, cin, k, k),
        "attention.fc.weight": (hidden, cin, 1, 1),
        "attention.bn.weight": (hidden,),
        "attention.bn.bias": (hidden,),
        "attention.bn.running_mean": (hidden,),
        "attention.bn.running_var": (hidden,),
        "attention.bn.num_batches_tracked": (),
        "attention.channel_fc.weight": (cin, hidden, 1, 1),
        "attention.channel_fc.bias": (cin,),
        "attention.filter_fc.weight": (cout, hidden, 1, 1),
        "attention.filter_fc.bias": (cout,),
        "attention.spatial_fc.weight": (k * k, hidden, 1, 1),
        "attention.spatial_fc.bias": (k * k,),
        "attention.kernel_fc.weight": (kernel_num, hidden, 1, 1),
        "attention.kernel_fc.bias": (kernel_num,),
    }


@pytest.mark.parametrize("cin", [32, 512])
def test_state_dict_names_and_shapes_match_official(cin):
    m = ODConv2d(cin, 64, 3, padding=1, kernel_num=4)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == official_layout(cin, 64, 3, 4)


def test_official_state_dict_round_trips():
    layout = official_layout(32, 48, 3, 4)
    g = torch.Generator().manual_seed(13)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.3
    m = ODConv2d(32, 48, 3, padding=1, kernel_num=4)
    m.load_state_dict(state, strict=True)
    for name, value in m.state_dict().items():
        assert torch.equal(value, state[name]), name
    m.eval()
    x = torch.randn(2, 32, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(m, x), rtol=1e-5, atol=1e-5)


def test_initialization_follows_kaiming_fan_out():
    m = ODConv2d(64, 128, 3, padding=1, kernel_num=4)
    expected_std = math.sqrt(2.0 / (128 * 9))
    for i in range(4):
        assert abs(m.weight[i].std().item() / expected_std - 1.0) < 0.05
    assert not torch.equal(m.weight[0], m.weight[1])
    att = m.attention
    assert torch.count_nonzero(att.channel_fc.bias) == 0
    assert torch.equal(att.bn.weight, torch.ones_like(att.bn.weight))


def test_every_parameter_gets_a_gradient():
    m = ODConv2d(8, 12, 3, padding=1, kernel_num=4).train()
    x = torch.randn(3, 8, 10, 10, generator=torch.Generator().manual_seed(14))
    (m(x) ** 2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_rejects_bad_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        ODConv2d(6, 8, 3, groups=4)


def test_channels_last_and_dtype_conversions():
    m = ODConv2d(8, 12, 3, padding=1, kernel_num=4)
    randomize(m, seed=15)
    m.eval()
    x = torch.randn(3, 8, 10, 10, generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        ref = reference(m, x)
        m.to(memory_format=torch.channels_last)  # plain Module.to rejects 5-D weights
        assert m.weight.shape == (4, 12, 8, 3, 3)
        y = m(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        m.double()
        assert m.weight.dtype == torch.float64 and m.attention.fc.weight.dtype == torch.float64


@pytest.mark.parametrize("k,kernel_num,groups,stride", [
    (3, 4, 1, 1), (3, 4, 1, 2), (3, 1, 1, 1), (1, 4, 1, 1), (3, 4, 8, 1), (3, 4, 2, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_static_start_equals_the_pretrained_convolution(k, kernel_num, groups, stride, batch):
    """Every candidate = W (as pretrained loading leaves them): the output is conv(x, W)."""
    cin = cout = 8
    m = ODConv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                 kernel_num=kernel_num)
    randomize(m, seed=13)  # attention heads far from constant before the start
    g = torch.Generator().manual_seed(14)
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    with torch.no_grad():
        m.weight.copy_(w.expand_as(m.weight))
    x = torch.randn(batch, cin, 9, 9, generator=g)
    static = F.conv2d(x, w, None, stride, k // 2, 1, groups)
    with torch.no_grad():
        m.train(batch > 1)
        assert not torch.allclose(m(x), static, rtol=1e-2, atol=1e-2)
        m.start_as_static_conv()
        for temperature in (1.0, 30.0):  # the start holds at any temperature
            m.update_temperature(temperature)
            for mode in ([True, False] if batch > 1 else [False]):
                m.train(mode)
                torch.testing.assert_close(m(x), static, rtol=1e-5, atol=1e-5)


def test_static_start_keeps_gradients_flowing_and_candidates_apart():
    m = ODConv2d(8, 8, 3, padding=1, kernel_num=4)
    with torch.no_grad():  # equal candidates, as pretrained loading leaves them
        m.weight.copy_(m.weight[0].expand_as(m.weight).clone())
    m.start_as_static_conv()
    m.train()
    x = torch.randn(4, 8, 9, 9, generator=torch.Generator().manual_seed(15))
    m(x).square().mean().backward()
    att = m.attention
    for fc in (att.channel_fc, att.filter_fc, att.spatial_fc):
        assert fc.weight.grad is not None and fc.weight.grad.abs().max() > 0
    # equal candidates: the kernel attention cannot matter yet, but the candidates are
    # pulled apart (each by its own attention), so it can from the next step on
    assert m.weight.grad is not None
    assert not torch.allclose(m.weight.grad[0], m.weight.grad[1])
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    m.zero_grad()
    m(x).square().mean().backward()
    assert att.kernel_fc.weight.grad is not None and att.kernel_fc.weight.grad.abs().max() > 0
