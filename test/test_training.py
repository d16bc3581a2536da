"""Trainer: configs, exact resume, the non-finite guard, checkpoints and the CLI."""
from __future__ import annotations

import hashlib
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oe_depth_ros.config import ConfigError
from oe_depth_ros.model import load_depth_net
from oe_depth_ros.paths import config_dir
from training.checkpointing import load_checkpoint, rng_state, set_rng_state
from training.losses import semantic_triplet_loss
from training.train import main as train_main
from training.train_config import load_train_config
from training.trainer import Trainer, TrainingDivergedError

torch.set_num_threads(1)


def tiny_overrides(world, **extra: object) -> list[str]:
    """oe_depth_small at 64x192, batch 2, on the session's synthetic world."""
    values = {
        "data.data_path": world.root, "data.train_split": world.split_files["train"],
        "data.val_split": world.split_files["val"], "data.height": 64, "data.width": 192,
        "data.num_workers": 0, "data.intrinsics": "calibration", "model.depth": "oe_depth_small",
        "optim.batch_size": 2, "optim.epochs": 3, "optim.lr_milestones": [1],
        "checkpoint_every": 1, "keep_epoch_checkpoints": False, "log_every": 1,
        "image_log_every": 1, "progress": False, "cpu_threads": 1,
        "model.depth_pretrained": "none", "model.pose_pretrained": "none",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def test_shipped_configs_are_the_table3_rows() -> None:
    names = ("baseline", "odconv_only", "triplet_only", "oe_depth", "oe_depth_1024x320",
             "synth_small")
    rows = {name: load_train_config(name) for name in names}
    table3 = {name: (rows[name].model.depth, rows[name].loss.use_triplet) for name in names[:4]}
    assert table3 == {"baseline": ("diffnet", False), "odconv_only": ("oe_depth", False),
                      "triplet_only": ("diffnet", True), "oe_depth": ("oe_depth", True)}
    paper = rows["oe_depth"]
    assert (paper.loss.triplet_weight, paper.loss.triplet_margin) == (0.1, 0.3)
    assert (paper.data.height, paper.data.width, paper.optim.batch_size) == (192, 640, 16)
    assert (paper.optim.lr, paper.optim.epochs, paper.optim.lr_milestones) == (1e-4, 20, [14])
    high = rows["oe_depth_1024x320"]
    assert (high.data.height, high.data.width, high.model.depth) == (320, 1024, "oe_depth")
    assert load_train_config(None) == paper  # the default is the paper's model


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optim.*unknown key.*'lr_rate'"):
        load_train_config("oe_depth", ["optim.lr_rate=1"])
    with pytest.raises(ConfigError, match="multiples of 32"):
        load_train_config("oe_depth", ["data.height=100"])
    cyc = tmp_path / "a.yaml"
    cyc.write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_train_config(cyc)
    with pytest.raises(ConfigError, match="unknown training config"):
        load_train_config("no_such_config")
    with pytest.raises(ConfigError, match="cpu_threads must be >= 1, got 0"):
        load_train_config("oe_depth", ["cpu_threads=0"])
    assert load_train_config("oe_depth", ["cpu_threads=1"]).cpu_threads == 1


def test_numbers_in_exponent_notation_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads "1e-4" as a string; a float option takes it as the number."""
    assert load_train_config("oe_depth", ["optim.lr=1e-4"]).optim.lr == 1e-4
    assert load_train_config("oe_depth", ["optim.lr=5E+0"]).optim.lr == 5.0
    config = tmp_path / "lr.yaml"
    base = config_dir() / "training" / "oe_depth.yaml"
    config.write_text(f"inherit: {base}\noptim:\n  lr: 3e-5\n")
    assert load_train_config(config).optim.lr == 3e-5
    for bad in ("1e", "e-4", "fast", "1e-4x"):
        with pytest.raises(ConfigError, match="optim.*lr.*expected a number"):
            load_train_config("oe_depth", [f"optim.lr={bad}"])
    with pytest.raises(ConfigError, match="expected an integer"):  # ints stay exact
        load_train_config("oe_depth", ["optim.batch_size=1e1"])


def test_on_and_off_read_as_yaml_booleans_are_the_words(tmp_path: Path) -> None:
    """YAML 1.1 reads "on"/"off" as booleans; the on/off/auto options take them as the words."""
    config = tmp_path / "cl.yaml"
    base = config_dir() / "training" / "oe_depth.yaml"
    config.write_text(f"inherit: {base}\nchannels_last: on\namp: off\n")
    cfg = load_train_config(config)
    assert (cfg.channels_last, cfg.amp) == ("on", "off")
    assert load_train_config("oe_depth", ["channels_last=off", "amp=on"]).amp == "on"
    assert load_train_config("oe_depth", ["channels_last='on'"]).channels_last == "on"
    with pytest.raises(ConfigError, match="channels_last.*'fast' is not one of"):
        load_train_config("oe_depth", ["channels_last=fast"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_equals_uninterrupted(synth_world, tmp_path: Path, caplog) -> None:
    # 5 training samples at batch 2: 2 steps per epoch; 3 steps cross an epoch end
    # (validation + learning-rate drop). Interrupt after step 1, resume to step 3.
    straight = Trainer(load_train_config("oe_depth", tiny_overrides(synth_world, max_steps=3)),
                       out_dir=tmp_path / "straight")
    assert straight.steps_per_epoch == 2
    history = straight.fit()
    straight.close()
    assert [h["step"] for h in history] == [1, 2, 3]
    assert straight.val_history and straight.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)

    assert train_main(["--config", "oe_depth", *tiny_overrides(synth_world, max_steps=1),
                       "--out", str(tmp_path / "split")]) == 0
    first = load_checkpoint(tmp_path / "split" / "last.pt")
    assert first["step"] == 1 and first["epoch"] == 0
    assert train_main(["--config", "oe_depth", *tiny_overrides(synth_world, max_steps=3),
                       "--out", str(tmp_path / "split"),
                       "--resume", str(tmp_path / "split" / "last.pt")]) == 0
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["step"] == b["step"] == 3 and a["epoch"] == b["epoch"] == 1
    for part in ("depth", "pose"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"]
    import json
    hist_b = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["step"] for h in hist_b] == [1, 2, 3]
    for ha, hb in zip(history, hist_b):
        assert ha == pytest.approx(hb, rel=1e-6, abs=1e-9)
    # the checkpoint is what inference loads, without unpickling (weights_only=True)
    with caplog.at_level(logging.WARNING):
        net = load_depth_net(tmp_path / "split" / "last.pt")
    assert not any("unpickling" in r.getMessage() for r in caplog.records)
    assert net.config.name == "oe_depth_small" and not net.training
    assert (tmp_path / "split" / "tensorboard").is_dir()
    assert load_checkpoint(tmp_path / "split" / "best.pt")["step"] == 2  # the one validation


def test_rng_state_survives_a_weights_only_load(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(4)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    torch.manual_seed(5)
    path = tmp_path / "rng.pt"
    torch.save({"rng": rng_state()}, path)
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert random.random() == expected[0]
    assert np.random.standard_normal(3).tolist() == expected[1].tolist()
    assert torch.equal(torch.rand(3), expected[2])


def test_non_finite_loss_stops_and_keeps_checkpoint(synth_world, tmp_path: Path) -> None:
    cfg = load_train_config("oe_depth", tiny_overrides(
        synth_world, max_steps=1, validate=False,
        **{"loss.triplet_weight": 0.0, "model.depth": "diffnet_small"}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    trainer.fit()
    last = tmp_path / "last.pt"
    digest = _sha(last)
    with torch.no_grad():  # weights gone bad (e.g. an exploding update)
        next(trainer.depth_net.decoder.parameters()).fill_(float("nan"))
    trainer.cfg.max_steps = 3
    expected = r"non-finite loss at step 2 .*smoothness/0 = nan.*total = nan"
    with pytest.raises(TrainingDivergedError, match=expected):
        trainer.fit()
    trainer.close()
    assert _sha(last) == digest and load_checkpoint(last)["step"] == 1


def test_missing_data_is_reported_before_training(synth_world, tmp_path: Path) -> None:
    split = tmp_path / "split.txt"
    split.write_text("2020_06_01/2020_06_01_drive_0001_sync 99 l\n")
    with pytest.raises(FileNotFoundError, match=r"^4 file\(s\) needed by split"):
        Trainer(load_train_config("oe_depth", tiny_overrides(
            synth_world, **{"data.train_split": split})), out_dir=tmp_path / "run")
    assert train_main(["--config", "oe_depth", *tiny_overrides(
        synth_world, **{"data.train_split": split}), "--out", str(tmp_path / "run")]) == 1
    assert train_main(["--config", "oe_depth", "optim.bogus=1"]) == 2


def test_the_cli_reads_the_device_name_once(synth_world, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py resolves ``device`` and hands it to the trainer, which does not parse it again."""
    from oe_depth_ros import devices

    names: list[str] = []
    parse = devices.parse_device

    def counted(name: str, *args: object, **kwargs: object) -> devices.Device:
        names.append(name)
        return parse(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(devices, "parse_device", counted)
    overrides = tiny_overrides(synth_world, max_steps=1, device="cpu")
    assert train_main(["--config", "oe_depth", *overrides, "--out", str(tmp_path / "run")]) == 0
    assert names == ["cpu"]


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
def test_triplet_term_is_added_once_after_the_scale_loop(synth_world, tmp_path: Path,
                                                         distance: str) -> None:
    """total = mean_s(reprojection_s + w_sm * smooth_s / 2^s) + w_t * sum_s L_s / 2^s."""
    cfg = load_train_config("oe_depth", tiny_overrides(
        synth_world, validate=False, **{"loss.triplet_distance": distance}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    batch = next(iter(trainer.loader))
    inputs = trainer._to_device(batch)
    with torch.no_grad():
        outputs, transforms = trainer.forward(inputs)
        total, terms, _ = trainer.compute_losses(inputs, outputs, transforms)
        labels = inputs["semantics"].float()
        triplet = 0.0
        for s in (1, 2, 3):
            feat = outputs[("feat", s)]
            lab = torch.nn.functional.interpolate(labels, size=feat.shape[-2:]).long()
            term = semantic_triplet_loss(feat, lab, 5, 0.3, distance)
            assert terms[f"triplet/{s}"].item() == pytest.approx(term.item(), rel=1e-6)
            triplet += term.item() / 2 ** s
    assert triplet > 0, "the synthetic labels must give anchors"
    mono = np.mean([terms[f"reprojection/{s}"].item() + 1e-3 * terms[f"smoothness/{s}"].item()
                    / 2 ** s for s in range(4)])
    assert total.item() == pytest.approx(mono + 0.1 * triplet, rel=1e-5)


def test_kitti_config_without_weights_stops_with_the_options(synth_world, tmp_path: Path) -> None:
    values = tiny_overrides(synth_world)
    unset = [v for v in values if not v.startswith("model.depth_pretrained")]
    with pytest.raises(ConfigError) as err:
        Trainer(load_train_config("oe_depth", unset), out_dir=tmp_path)
    text = str(err.value)
    assert text.startswith("model.depth_pretrained not set")
    assert "hrnet_w18.ms_in1k" in text and "model.depth_pretrained=none" in text
    both = [v for v in unset if not v.startswith("model.pose_pretrained")]
    with pytest.raises(ConfigError, match=r"model.depth_pretrained and model.pose_pretrained "
                                          r"not set(.|\n)*ResNet18_Weights.IMAGENET1K_V1"):
        Trainer(load_train_config("oe_depth", both), out_dir=tmp_path)
    assert train_main(["--config", "oe_depth", *both, "--out", str(tmp_path / "cli")]) != 0
    # the synthetic config trains without weights; explicit opt-out is accepted
    synth = load_train_config("synth_small")
    synth.model.check_pretrained()
    assert synth.model.depth_weights is None and synth.model.pose_weights is None
    assert load_train_config("oe_depth", ["model.depth_pretrained=/w/h.pth"]).model.depth_weights \
        == "/w/h.pth"


def test_mono_plus_stereo_trains_on_the_synthetic_world(synth_world, tmp_path: Path) -> None:
    for name in ("oe_depth_ms", "baseline_ms"):
        ms = load_train_config(name)
        assert ms.data.stereo and ms.data.all_frame_ids == [0, -1, 1, "s"]
    cfg = load_train_config("oe_depth_ms", tiny_overrides(
        synth_world, max_steps=2, validate=False, **{"model.depth": "diffnet_small",
                                                     "loss.triplet_weight": 0.0}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    assert trainer.source_ids == [-1, 1, "s"]
    batch = next(iter(trainer.loader))
    _, transforms = trainer.forward(trainer._to_device(batch))
    torch.testing.assert_close(transforms["s"], batch["stereo_T"])  # fixed, not estimated
    history = trainer.fit()
    trainer.close()
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h["total"]) for h in history)
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["data"]["stereo"] is True


def test_best_checkpoint_by_photometric_loss_without_ground_truth(synth_world,
                                                                  tmp_path: Path) -> None:
    from training.datasets import KittiRawMonoDataset

    cfg = load_train_config("oe_depth", tiny_overrides(
        synth_world, max_steps=4, **{"model.depth": "diffnet_small", "loss.triplet_weight": 0.0,
                                     "optim.lr_milestones": [5]}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    assert trainer.val_set is not None and trainer.val_set.has_gt  # the synthetic world has GT
    d = cfg.data
    trainer.val_set = KittiRawMonoDataset(d.data_path, d.val_split, d.height, d.width,
                                          intrinsics=d.intrinsics)  # as a split without GT
    trainer.fit()
    trainer.close()
    import json
    val = json.loads((tmp_path / "validation.json").read_text())
    assert [sorted(v) for v in val] == [["epoch", "photometric", "step"]] * 2
    best = load_checkpoint(tmp_path / "best.pt")["step"]
    losses = {v["step"]: v["photometric"] for v in val}
    assert best == min(losses, key=losses.get)


def test_metric_model_validates_its_metres_and_best_is_by_them(synth_world, oxts_splits,
                                                               tmp_path: Path) -> None:
    """A metric model's validation adds the unscaled Abs Rel and the median GT/pred ratio.

    best.pt is the epoch of lowest unscaled Abs Rel (trainer.BEST_BY); the figures equal
    a naive computation on the validation frames.
    """
    import json

    from oe_depth_ros.metrics import EIGEN_MIN_DEPTH, valid_mask

    cfg = load_train_config("synth_small_oxts", tiny_overrides(
        synth_world, max_steps=2, **{"model.depth": "diffnet_small", "loss.triplet_weight": 0.0,
                                     "optim.lr_milestones": [5],
                                     "data.train_split": oxts_splits["train"],
                                     "data.val_split": oxts_splits["val"]}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    trainer.fit()
    val = json.loads((tmp_path / "validation.json").read_text())
    assert len(val) == 2
    assert all({"abs_rel", "abs_rel_metric", "ratio_median"} <= set(v) for v in val)
    assert load_checkpoint(tmp_path / "best.pt")["step"] == \
        min(val, key=lambda v: v["abs_rel_metric"])["step"]
    d = cfg.data
    abs_rel, ratios = [], []
    for i in range(len(trainer.val_set)):
        sample = trainer.val_set[i]
        gt = sample["depth_gt"][0].numpy()
        pred = trainer.predict_depth(sample[("color", 0, 0)][None], gt.shape)[0]
        mask = valid_mask(gt, d.val_crop, EIGEN_MIN_DEPTH, d.val_max_depth)
        clipped = np.clip(pred[mask], EIGEN_MIN_DEPTH, d.val_max_depth)
        abs_rel.append(np.mean(np.abs(gt[mask] - clipped) / gt[mask]))
        ratios.append(np.median(gt[mask]) / np.median(pred[mask]))
    last = trainer.validate()
    trainer.close()
    assert last["abs_rel_metric"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
    assert last["ratio_median"] == pytest.approx(np.median(ratios), rel=1e-5)
    assert last["abs_rel_metric"] != pytest.approx(last["abs_rel"], rel=1e-3)


def test_oxts_ego_motion_trains_without_a_pose_network(synth_world, oxts_splits,
                                                       tmp_path: Path) -> None:
    """model.ego_motion=oxts: the batch's drive motion replaces the pose network."""
    demo = load_train_config("synth_small_oxts")
    assert (demo.model.ego_motion, demo.model.init_depth) == ("oxts", 3.16)
    assert demo.data.frame_ids == [0, -2, 2]
    cfg = load_train_config("synth_small_oxts", tiny_overrides(
        synth_world, max_steps=2, validate=False, **{"model.depth": "diffnet_small",
                                                     "loss.triplet_weight": 0.0,
                                                     "data.train_split": oxts_splits["train"]}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    assert trainer.pose_net is None and len(trainer.networks()) == 1
    assert len(trainer.params) == len(list(trainer.depth_net.parameters()))
    batch = next(iter(trainer.loader))
    _, transforms = trainer.forward(trainer._to_device(batch))
    for f in (-2, 2):
        torch.testing.assert_close(transforms[f], batch[("T", f)])
    # the synthetic car drives forward (0.25-0.5 m per frame): two frames back the camera
    # is behind, two frames on ahead
    assert (batch[("T", -2)][:, 2, 3] > 0.4).all() and (batch[("T", 2)][:, 2, 3] < -0.4).all()
    history = trainer.fit()
    trainer.close()
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h["total"]) for h in history)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["pose"] is None and ckpt["train_config"]["model"]["ego_motion"] == "oxts"
    # a run with a pose network cannot continue from it, and says why
    with_pose = Trainer(load_train_config("synth_small", tiny_overrides(
        synth_world, validate=False, **{"model.depth": "diffnet_small"})), out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="has no pose network.*ego_motion is pose_net"):
        with_pose.resume(tmp_path / "last.pt")


def test_ego_motion_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="data.stereo needs model.ego_motion=pose_net"):
        load_train_config("oe_depth_ms", ["model.ego_motion=oxts"])
    with pytest.raises(ConfigError, match="model.*ego_motion"):
        load_train_config("oe_depth", ["model.ego_motion=gps"])
    with pytest.raises(ConfigError, match="model.init_depth must be positive"):
        load_train_config("oe_depth", ["model.init_depth=-1"])
    # without a pose network its weights need no choosing; the depth encoder's still do
    oxts = load_train_config("oe_depth", ["model.ego_motion=oxts", "model.depth_pretrained=none"])
    oxts.model.check_pretrained()
    with pytest.raises(ConfigError, match=r"^model.depth_pretrained not set"):
        load_train_config("oe_depth", ["model.ego_motion=oxts"]).model.check_pretrained()


def test_velocity_supervision_trains_the_pose_network_in_metres(synth_world,
                                                                tmp_path: Path) -> None:
    """loss.velocity_weight: the pose network stays; its translation norm meets the OXTS one."""
    from training.losses import velocity_loss

    shipped = load_train_config("oe_depth_velocity")
    assert (shipped.loss.velocity_weight, shipped.data.width, shipped.model.ego_motion) == (
        0.1, 640, "pose_net")
    cfg = load_train_config("synth_small_velocity", tiny_overrides(
        synth_world, max_steps=2, validate=False, **{"model.depth": "diffnet_small",
                                                     "loss.triplet_weight": 0.0}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    assert trainer.pose_net is not None and len(trainer.networks()) == 2
    batch = trainer._to_device(next(iter(trainer.loader)))
    outputs, transforms = trainer.forward(batch)
    # the pose network's estimate is used, the drive's motion only supervises its norm
    assert not torch.allclose(transforms[1], batch[("T", 1)])
    total, terms, _ = trainer.compute_losses(batch, outputs, transforms)
    expected = velocity_loss([transforms[-1], transforms[1]], [batch[("T", -1)], batch[("T", 1)]])
    assert terms["velocity"].item() == pytest.approx(expected.item(), rel=1e-6)
    cfg.loss.velocity_weight = 0.0  # the same batch without the term: 0.1 x it less
    assert (total - trainer.compute_losses(batch, outputs, transforms)[0]).item() == \
        pytest.approx(0.1 * expected.item(), rel=1e-4)
    cfg.loss.velocity_weight = 0.1
    history = trainer.fit()
    trainer.close()
    assert [h["step"] for h in history] == [1, 2] and all("velocity" in h for h in history)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["pose"] is not None
    assert ckpt["units"] == {"scale_source": "velocity", "metres_per_unit": 1.0}


def test_velocity_recipes_start_the_pose_network_straight_ahead(
        synth_world, tmp_path: Path) -> None:
    """model.init_pose=forward: translation bias (0, 0, -median OXTS step) / scale."""
    from oe_depth_ros.synthetic.rig import SPEED_RANGE
    from training.pose_agreement import oxts_translations

    assert {load_train_config(n).model.init_pose for n in
            ("oe_depth_velocity", "synth_small_velocity")} == {"forward"}
    assert load_train_config("oe_depth").model.init_pose == "random"
    cfg = load_train_config("synth_small_velocity", tiny_overrides(
        synth_world, validate=False, **{"model.depth": "diffnet_small"}))
    trainer = Trainer(cfg, out_dir=tmp_path)
    # independently: every consecutive pair of the training entries' drives, by drive
    entries = {tuple(line.split()[:2]) for line in
               Path(synth_world.split_files["train"]).read_text().splitlines()}
    steps = {folder: np.linalg.norm(oxts_translations(Path(synth_world.root) / folder), axis=1)
             for folder in {f for f, _ in entries}}
    expected = np.median([steps[folder][i] for folder, frame in entries
                          for i in (int(frame) - 1, int(frame))])
    low, high = SPEED_RANGE
    assert 0.9 * low / 10 < expected < 1.1 * high / 10  # 10 Hz frames
    decoder = trainer.pose_net.decoder
    bias = decoder.pose2.bias.view(-1, 6)[:, 3:]
    torch.testing.assert_close(bias, torch.tensor([0.0, 0.0, -expected / decoder.scale],
                                                  dtype=bias.dtype).expand_as(bias),
                               rtol=1e-5, atol=1e-5)
    trainer.close()
    plain_cfg = load_train_config("synth_small", tiny_overrides(
        synth_world, validate=False, **{"model.depth": "diffnet_small"}))
    plain = Trainer(plain_cfg, out_dir=tmp_path / "plain")
    assert plain.pose_net.decoder.pose2.bias.view(-1, 6)[:, 5].abs().max() < 1.0
    plain.close()


def test_velocity_and_oxts_refuse_drives_without_oxts_data(synth_world, tmp_path: Path) -> None:
    """A drive without its OXTS packet or IMU calibration stops training, naming the file."""
    import shutil

    root = tmp_path / "world"
    shutil.copytree(synth_world.root, root)
    first = (root / synth_world.split_files["train"].relative_to(synth_world.root)
             ).read_text().split()
    packet = root / first[0] / "oxts" / "data" / f"{int(first[1]) + 1:010d}.txt"
    packet.unlink()
    # the world's splits are for the sources -1 and +1, which every config here then uses
    overrides = tiny_overrides(synth_world, validate=False,
                               **{"model.depth": "diffnet_small", "loss.triplet_weight": 0.0,
                                  "data.frame_ids": [0, -1, 1]})
    overrides = [o.replace(str(synth_world.root), str(root)) for o in overrides]
    for config in ("synth_small_velocity", "synth_small_oxts"):
        with pytest.raises(FileNotFoundError, match=rf"missing.*\n.*{packet.name}"):
            Trainer(load_train_config(config, overrides), out_dir=tmp_path / config)
    # the pose network alone needs no OXTS data
    Trainer(load_train_config("synth_small", overrides), out_dir=tmp_path / "plain").close()
    (packet.parents[3] / "calib_imu_to_velo.txt").unlink()
    with pytest.raises(FileNotFoundError, match="calib_imu_to_velo.txt"):
        Trainer(load_train_config("synth_small_velocity", overrides), out_dir=tmp_path / "v")


def test_velocity_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="velocity_weight must be >= 0"):
        load_train_config("oe_depth", ["loss.velocity_weight=-0.1"])
    with pytest.raises(ConfigError, match="velocity_weight supervises the pose network"):
        load_train_config("synth_small_oxts", ["loss.velocity_weight=0.1"])
    with pytest.raises(ConfigError, match="cannot be combined with data.stereo"):
        load_train_config("oe_depth_ms", ["loss.velocity_weight=0.1"])
    with pytest.raises(ConfigError, match=r"^model.init_pose=forward .*velocity_weight > 0"):
        load_train_config("synth_small", ["model.init_pose=forward"])
    with pytest.raises(ConfigError, match="init_pose"):
        load_train_config("synth_small_velocity", ["model.init_pose=sideways"])


_FILE_SIZE_LIMITED_SAVE = """
import resource, signal, sys
import torch
from training.checkpointing import save_checkpoint
path = sys.argv[1]
save_checkpoint(path, {"step": 1, "w": torch.zeros(10)})  # small: fits
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    save_checkpoint(path, {"step": 2, "w": torch.zeros(1 << 20)})  # 4 MB: cannot be written
except RuntimeError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_checkpoint_that_cannot_be_written_names_it_and_keeps_the_last(tmp_path) -> None:
    """A full disk mid-save (a real 1 MB file-size limit here): a clear error, nothing lost."""
    path = tmp_path / "last.pt"
    proc = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMITED_SAVE, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"could not write checkpoint {path}" in proc.stdout
    assert "MB free on its file system; an earlier last.pt is unchanged" in proc.stdout
    assert torch.load(path, weights_only=True)["step"] == 1  # the earlier one survived
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind
