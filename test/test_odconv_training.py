"""ODConv training details: temperature annealing (schedule, use, resume) and the static start."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from oe_depth_ros.config import ConfigError
from oe_depth_ros.model import ODConv2d, build_depth_net
from training.experiments.odconv_agreement import main as agreement_main
from training.odconv_temperature import TemperatureSchedule
from training.train_config import load_train_config
from training.trainer import Trainer

from test_training import tiny_overrides

torch.set_num_threads(1)


def test_schedule_against_hand_computed_values() -> None:
    # ODConv's reference: T = 1 + (30 - 1) * max(0, (N - k) / N) for the step that
    # completes k steps, N = 2 epochs x 4 steps = 8.
    s = TemperatureSchedule(initial=30.0, final=1.0, steps=8)
    assert s.after(0) == 30.0          # before training
    assert s.after(1) == 26.375        # the first step: 1 + 29 * 7/8
    assert s.after(4) == 15.5          # the middle: 1 + 29 * 4/8
    assert s.after(7) == 4.625         # 1 + 29 * 1/8
    assert s.after(8) == 1.0           # the last annealed step
    assert s.after(9) == 1.0 and s.after(10_000) == 1.0  # after it
    other = TemperatureSchedule(initial=10.0, final=2.0, steps=4)
    assert [other.after(k) for k in range(6)] == [10.0, 8.0, 6.0, 4.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="steps >= 1"):
        TemperatureSchedule(initial=30.0, final=1.0, steps=0)


def test_options_are_validated_with_the_key_named() -> None:
    cfg = load_train_config("oe_depth", ["odconv.anneal_epochs=10", "odconv.start=static"])
    assert (cfg.odconv.anneal_epochs, cfg.odconv.initial_temperature, cfg.odconv.start) == (
        10, 30.0, "static")
    for bad, message in (("odconv.anneal_epochs=-1", "odconv.anneal_epochs must be >= 0"),
                         ("odconv.initial_temperature=0", "odconv.initial_temperature must"),
                         ("odconv.anneal_epochs=1.5", "anneal_epochs.*expected an integer"),
                         ("odconv.start=warm", "odconv.*start"),
                         ("odconv.anneal=3", "odconv.*unknown key.*'anneal'")):
        with pytest.raises(ConfigError, match=message):
            load_train_config("oe_depth", [bad])


@pytest.mark.parametrize("name", ["oe_depth", "odconv_only", "oe_depth_ms", "oe_depth_1024x320",
                                  "ablation_oe_depth", "ablation_odconv_only"])
def test_paper_configs_keep_the_temperature_and_the_fresh_attention(name: str) -> None:
    """The decided default (docs/model.md): no annealing, the reference's attention init."""
    od = load_train_config(name).odconv
    assert (od.anneal_epochs, od.start) == (0, "fresh")


class AttentionProbe:
    """Records, per training-mode forward of every ODConv layer, T, the logits and attentions."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.layers = [m for m in net.modules() if isinstance(m, ODConv2d)]
        self.records: list[list[tuple[float, ...]]] = [[] for _ in self.layers]
        self.logits: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            att = layer.attention
            att.channel_fc.register_forward_hook(self._keep("channel"))
            att.kernel_fc.register_forward_hook(self._keep("kernel"))
            att.register_forward_hook(self._hook(i))

    def _keep(self, name: str):
        def hook(module, args, out) -> None:
            self.logits[name] = out.detach().flatten(1)
        return hook

    def _hook(self, i: int):
        def hook(module, args, out) -> None:
            if module.training:
                channel, _, _, kernel = out
                self.records[i].append((module.temperature, self.logits["channel"],
                                        channel.detach().flatten(1), self.logits["kernel"],
                                        kernel.detach()))
        return hook

    def temperatures(self) -> list[list[float]]:
        return [[r[0] for r in layer] for layer in self.records]


def test_annealing_reaches_every_odconv_layer_and_resumes_exactly(synth_world,
                                                                  tmp_path: Path) -> None:
    # 2 steps per epoch, annealing over 2 epochs: N = 4 steps from 30 to the model's 1.
    expected = [1 + 29 * 3 / 4, 1 + 29 * 2 / 4, 1 + 29 * 1 / 4]  # 22.75, 15.5, 8.25
    anneal = {"odconv.anneal_epochs": 2}
    overrides = tiny_overrides(synth_world, max_steps=3, **anneal)
    straight = Trainer(load_train_config("oe_depth", overrides), out_dir=tmp_path / "straight")
    assert straight.steps_per_epoch == 2
    assert all(m.attention.temperature == 30.0 for m in straight.depth_net.odconv_layers())
    probe = AttentionProbe(straight.depth_net)
    assert len(probe.layers) == len(straight.depth_net.odconv_names) > 10
    straight.fit()
    straight.close()
    assert probe.temperatures() == [expected] * len(probe.layers)
    # the temperature is the one the forward used: attention = sigmoid(z / T), softmax(z / T)
    for layer in probe.records:
        for t, z_c, a_c, z_k, a_k in layer:
            torch.testing.assert_close(a_c, torch.sigmoid(z_c / t), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(a_k, torch.softmax(z_k / t, dim=1), rtol=1e-5, atol=1e-6)
            assert not torch.allclose(a_c, torch.sigmoid(z_c), atol=1e-3)

    first = Trainer(load_train_config("oe_depth", tiny_overrides(synth_world, max_steps=1,
                                                                 **anneal)),
                    out_dir=tmp_path / "split")
    first.fit()
    first.close()
    resumed = Trainer(load_train_config("oe_depth", overrides), out_dir=tmp_path / "split")
    resumed.resume(tmp_path / "split" / "last.pt")
    # after resuming: the temperature the interrupted run's last step used
    assert {m.attention.temperature for m in resumed.depth_net.odconv_layers()} == {expected[0]}
    probe = AttentionProbe(resumed.depth_net)
    resumed.fit()
    resumed.close()
    assert probe.temperatures() == [expected[1:]] * len(probe.layers)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["depth"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["depth"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs after resume"


def test_trainer_static_start_and_its_warning_without_odconv(synth_world, tmp_path: Path,
                                                             caplog) -> None:
    cfg = load_train_config("oe_depth", tiny_overrides(synth_world, **{"odconv.start": "static"}))
    trainer = Trainer(cfg, out_dir=tmp_path / "static")
    layers = trainer.depth_net.odconv_layers()
    assert layers and all(not m.attention.channel_fc.weight.detach().any() for m in layers)
    trainer.close()
    with caplog.at_level(logging.WARNING):
        Trainer(load_train_config("baseline", tiny_overrides(
            synth_world, **{"model.depth": "diffnet_small", "odconv.start": "static",
                            "odconv.anneal_epochs": 1})), out_dir=tmp_path / "plain").close()
    text = caplog.text
    assert "odconv.start=static has no effect" in text and "odconv.anneal_epochs has no" in text


def test_static_start_makes_the_odconv_network_the_pretrained_static_one(tmp_path: Path) -> None:
    """Through the pretrained-loading path: oe_depth_small at step 0 = diffnet_small."""
    import timm

    torch.manual_seed(3)
    weights = tmp_path / "hrnet.pth"
    torch.save(timm.create_model("hrnet_w18_small", pretrained=False).state_dict(), weights)
    static = build_depth_net("diffnet_small", pretrained=weights)
    odconv = build_depth_net("oe_depth_small", pretrained=weights)
    odconv.decoder.load_state_dict(static.decoder.state_dict())
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = static.train()(x)[("disp", 0)]
        assert not torch.allclose(odconv.train()(x)[("disp", 0)], want, atol=1e-3)
        odconv.start_odconv_as_static()
        torch.testing.assert_close(odconv(x)[("disp", 0)], want, rtol=1e-4, atol=1e-5)


def test_agreement_tool_reports_each_start(synth_world, tmp_path: Path, capsys) -> None:
    out = tmp_path / "agreement.json"
    assert agreement_main(["--world", str(synth_world.root), "--model", "oe_depth_small",
                           "--frames", "4", "--height", "64", "--width", "96",
                           "--threads", "1", "--json", str(out)]) == 0
    import json
    report = {r["start"]: r for r in json.loads(out.read_text())}
    assert set(report) == {"fresh", "fresh_t30", "static"}
    assert report["static"]["min"] > 0.9999  # exact up to float rounding
    assert report["static"]["encoder"] > 0.9999  # the whole encoder is the static one
    assert report["fresh"]["encoder"] < 0.9999
    assert report["fresh"]["mean"] < report["fresh_t30"]["mean"] < report["static"]["mean"]
    assert "mean cosine" in capsys.readouterr().out
