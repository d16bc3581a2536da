"""KittiRawMonoDataset on a tiny hand-built KITTI raw layout (and the synthetic world)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from oe_depth_ros.geometry import KITTI_NORMALIZED_K
from training.datasets import Augmentation, KittiRawMonoDataset, collate

torch.set_num_threads(2)

DATE = "2011_09_26"
DRIVE = f"{DATE}/{DATE}_drive_0001_sync"
ORIG_H, ORIG_W = 50, 120
P_RECT_02 = np.array([[100.0, 0.0, 61.0, 4.5], [0.0, 98.0, 23.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def make_layout(root: Path, frames: int = 5, ext: str = ".png") -> Path:
    """A one-drive KITTI raw layout with random images, labels, GT and a split file."""
    rng = np.random.default_rng(0)
    img_dir = root / DRIVE / "image_02" / "data"
    img_dir.mkdir(parents=True)
    seg_dir = root / "segmentation" / DRIVE / "image_02"
    seg_dir.mkdir(parents=True)
    gt_dir = root / DRIVE / "proj_depth" / "groundtruth" / "image_02"
    gt_dir.mkdir(parents=True)
    for i in range(frames):
        img = rng.integers(0, 256, size=(ORIG_H, ORIG_W, 3), dtype=np.uint8)
        cv2.imwrite(str(img_dir / f"{i:010d}{ext}"), img)
        labels = np.full((ORIG_H, ORIG_W), 7, np.uint8)  # road
        labels[:, ORIG_W // 2:] = 26  # car on the right half
        labels[:5] = 0  # unlabeled strip at the top
        cv2.imwrite(str(seg_dir / f"{i:010d}.png"), labels)
        gt = (rng.random((ORIG_H, ORIG_W)) * 50 * 256).astype(np.uint16)
        cv2.imwrite(str(gt_dir / f"{i:010d}.png"), gt)
    write_calibration(root / DATE)
    split = root / "split.txt"
    split.write_text("".join(f"{DRIVE} {i} l\n" for i in range(1, frames - 1)))
    return split


def _values(array: np.ndarray) -> str:
    return " ".join(f"{v:.6e}" for v in np.asarray(array, dtype=np.float64).ravel())


def write_calibration(date_dir: Path) -> None:
    """KITTI's three calibration files; camera 2's P_rect is P_RECT_02, the others plain."""
    lines = ["calib_time: 09-Jan-2012 13:57:47"]
    for cam in range(4):
        p_rect = P_RECT_02 if cam == 2 else np.hstack([P_RECT_02[:, :3], np.zeros((3, 1))])
        for name, value in (("S", [ORIG_W, ORIG_H]), ("K", np.eye(3)), ("D", np.zeros(5)),
                            ("R", np.eye(3)), ("T", np.zeros(3)), ("S_rect", [ORIG_W, ORIG_H]),
                            ("R_rect", np.eye(3)), ("P_rect", p_rect)):
            lines.append(f"{name}_{cam:02d}: {_values(value)}")
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    rigid = f"R: {_values(np.eye(3))}\nT: {_values(np.zeros(3))}\n"
    (date_dir / "calib_velo_to_cam.txt").write_text(rigid)
    (date_dir / "calib_imu_to_velo.txt").write_text(rigid)


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path, make_layout(tmp_path)


def test_missing_files_listed_at_construction(layout: tuple[Path, Path]) -> None:
    root, split = layout
    for i in (0, 4):
        (root / DRIVE / "image_02" / "data" / f"{i:010d}.png").unlink()
    (root / "segmentation" / DRIVE / "image_02" / f"{2:010d}.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        KittiRawMonoDataset(root, split, 32, 64, use_semantics=True)
    msg = str(info.value)
    assert msg.startswith("3 file(s) needed by split")
    assert f"{0:010d}.png" in msg and f"{4:010d}.png" in msg and "segmentation" in msg
    # without semantics only the two images are missing
    with pytest.raises(FileNotFoundError, match=r"^2 file\(s\)"):
        KittiRawMonoDataset(root, split, 32, 64)


def test_many_missing_files_list_only_ten(layout: tuple[Path, Path]) -> None:
    root, split = layout
    split.write_text("".join(f"{DRIVE} {i} l\n" for i in range(1, 30)))
    with pytest.raises(FileNotFoundError) as info:
        KittiRawMonoDataset(root, split, 32, 64)
    msg = str(info.value)
    assert msg.startswith("26 file(s)")  # frames 5..30 (0..4 exist)
    assert msg.count(".png") == 10


def test_missing_drive_folder_is_named(tmp_path: Path) -> None:
    split = tmp_path / "split.txt"
    split.write_text(f"{DRIVE} 1 l\n{DRIVE} 2 l\n")
    with pytest.raises(FileNotFoundError, match=r"^1 file\(s\)(.|\n)*drive_0001_sync$"):
        KittiRawMonoDataset(tmp_path, split, 32, 64)


def test_sample_layout_and_normalized_intrinsics(layout: tuple[Path, Path]) -> None:
    root, split = layout
    ds = KittiRawMonoDataset(root, split, 32, 64)
    assert len(ds) == 3
    sample = ds[0]
    for f in (0, -1, 1):
        for s in range(4):
            assert sample[("color", f, s)].shape == (3, 32 // 2 ** s, 64 // 2 ** s)
            assert sample[("color", f, s)].dtype == torch.float32
            torch.testing.assert_close(sample[("color_aug", f, s)], sample[("color", f, s)])
    # frame -1 of sample 0 is file 0, resized with INTER_AREA
    img = cv2.cvtColor(cv2.imread(str(root / DRIVE / "image_02" / "data" / f"{0:010d}.png")),
                       cv2.COLOR_BGR2RGB)
    ref = cv2.resize(img, (64, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    np.testing.assert_allclose(sample[("color", -1, 0)].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    for s in range(4):
        w, h = 64 // 2 ** s, 32 // 2 ** s
        k = sample[("K", s)].numpy()
        np.testing.assert_allclose(k[0], KITTI_NORMALIZED_K[0] * w, rtol=1e-6)
        np.testing.assert_allclose(k[1], KITTI_NORMALIZED_K[1] * h, rtol=1e-6)
        np.testing.assert_allclose(sample[("inv_K", s)].numpy() @ k, np.eye(4), atol=1e-5)


def test_calibration_intrinsics(layout: tuple[Path, Path]) -> None:
    root, split = layout
    ds = KittiRawMonoDataset(root, split, 32, 64, intrinsics="calibration")
    sample = ds[1]
    for s in range(4):
        w, h = 64 // 2 ** s, 32 // 2 ** s
        sx, sy = w / ORIG_W, h / ORIG_H
        k = sample[("K", s)].numpy()
        # pixel-center convention: u' + 0.5 = s (u + 0.5)
        assert k[0, 0] == pytest.approx(100.0 * sx, rel=1e-6)
        assert k[1, 1] == pytest.approx(98.0 * sy, rel=1e-6)
        assert k[0, 2] == pytest.approx((61.0 + 0.5) * sx - 0.5, rel=1e-6)
        assert k[1, 2] == pytest.approx((23.0 + 0.5) * sy - 0.5, rel=1e-6)


def test_jitter_drawn_once_per_sample(layout: tuple[Path, Path]) -> None:
    root, split = layout
    # brightness only: every jittered pixel is the original times one factor
    ds = KittiRawMonoDataset(root, split, 32, 64, augment=Augmentation(
        color_aug_prob=1.0, flip_prob=0.0, contrast=0.0, saturation=0.0, hue=0.0))
    for index in range(len(ds)):
        sample = ds[index]
        factors = []
        for f in (0, -1, 1):
            for s in range(4):
                c, a = sample[("color", f, s)], sample[("color_aug", f, s)]
                ok = (a < 0.999) & (c > 0.05)
                factors.append((a[ok] / c[ok]).median().item())
                assert torch.allclose(a[ok], c[ok] * factors[-1], rtol=1e-4, atol=1e-5)
        assert max(factors) - min(factors) < 1e-5, factors
        assert abs(factors[0] - 1.0) > 1e-4


def test_full_jitter_equals_torchvision_ops_per_image(layout: tuple[Path, Path]) -> None:
    root, split = layout
    ds = KittiRawMonoDataset(root, split, 32, 64,
                             augment=Augmentation(color_aug_prob=1.0, flip_prob=0.0))
    sample = ds[2]
    _, params = ds.draw_augmentation(2)
    assert params is not None and sorted(params.order) == [0, 1, 2, 3]
    for f in (0, -1, 1):
        for s in range(4):
            img = sample[("color", f, s)]
            for op in params.order:
                img = [lambda x: TF.adjust_brightness(x, params.brightness),
                       lambda x: TF.adjust_contrast(x, params.contrast),
                       lambda x: TF.adjust_saturation(x, params.saturation),
                       lambda x: TF.adjust_hue(x, params.hue)][op](img)
            # OpenCV computes the same operations in float32: equal to rounding
            torch.testing.assert_close(sample[("color_aug", f, s)], img, atol=1e-5, rtol=0)


def test_draws_depend_on_seed_epoch_index_only(layout: tuple[Path, Path]) -> None:
    root, split = layout
    a = KittiRawMonoDataset(root, split, 32, 64, augment=Augmentation(seed=3))
    b = KittiRawMonoDataset(root, split, 32, 64, augment=Augmentation(seed=3))
    torch.manual_seed(123)  # the global generator must not matter
    draws_a = [a.draw_augmentation(i) for i in range(3)]
    torch.manual_seed(999)
    draws_b = [b.draw_augmentation(i) for i in reversed(range(3))][::-1]
    assert draws_a == draws_b
    epochs = []
    for e in range(8):
        a.set_epoch(e)
        epochs.append([a.draw_augmentation(i) for i in range(3)])
    assert len({repr(d) for d in epochs}) == 8


def test_flip_applies_to_images_and_labels(layout: tuple[Path, Path]) -> None:
    root, split = layout
    ds = KittiRawMonoDataset(root, split, 32, 64, use_semantics=True,
                             augment=Augmentation(flip_prob=1.0, color_aug_prob=0.0))
    plain = KittiRawMonoDataset(root, split, 32, 64, use_semantics=True)
    s_flip, s_plain = ds[0], plain[0]
    assert s_flip["flip"] and not s_plain["flip"]
    for f in (0, -1, 1):
        torch.testing.assert_close(s_flip[("color", f, 0)], s_plain[("color", f, 0)].flip(-1))
    torch.testing.assert_close(s_flip["semantics"], s_plain["semantics"].flip(-1))
    torch.testing.assert_close(s_flip[("K", 0)], s_plain[("K", 0)])  # flip keeps K
    lab = s_plain["semantics"][0]
    assert lab.shape == (32, 64) and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) == {0, 13, 255}
    assert lab[10, 5] == 0 and lab[10, 60] == 13 and lab[0, 5] == 255


def test_jpg_auto_detection_and_gt(tmp_path: Path) -> None:
    split = make_layout(tmp_path, ext=".jpg")
    ds = KittiRawMonoDataset(tmp_path, split, 32, 64, load_gt=True, frame_ids=(0,), num_scales=1)
    assert ds.img_ext == ".jpg" and ds.has_gt
    sample = ds[0]
    raw = cv2.imread(str(tmp_path / DRIVE / "proj_depth" / "groundtruth" / "image_02"
                         / f"{1:010d}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(sample["depth_gt"][0].numpy(), raw / 256.0, rtol=1e-6)
    batch = collate([ds[0], ds[1]])
    assert isinstance(batch["depth_gt"], list) and len(batch["depth_gt"]) == 2
    assert batch[("color", 0, 0)].shape == (2, 3, 32, 64)


def test_bad_sizes_rejected(layout: tuple[Path, Path]) -> None:
    root, split = layout
    with pytest.raises(ValueError, match="divisible"):
        KittiRawMonoDataset(root, split, 36, 64)
    with pytest.raises(ValueError, match="img_ext"):
        KittiRawMonoDataset(root, split, 32, 64, img_ext=".bmp")


def test_labels_from_palette_and_grayscale_pngs(tmp_path: Path) -> None:
    from PIL import Image

    from training.semantic_labels import read_label_ids, read_train_ids

    ids = np.full((6, 8), 7, np.uint8)  # road
    ids[:, 4:] = 26  # car
    ids[0] = 0  # unlabeled
    gray = tmp_path / "gray.png"
    Image.fromarray(ids, mode="L").save(gray)
    palette = tmp_path / "palette.png"
    pal_img = Image.fromarray(ids, mode="L").convert("P")
    pal_img.putpalette([(i * 37) % 256 for i in range(768)])  # colors unrelated to the ids
    pal_img.putdata(ids.ravel().tolist())
    pal_img.save(palette)
    assert Image.open(palette).mode == "P"
    # OpenCV expands the palette into colors; this is why labels are read with PIL
    assert cv2.imread(str(palette), cv2.IMREAD_UNCHANGED).ndim == 3
    expected = np.where(ids == 7, 0, np.where(ids == 26, 13, 255))
    for path in (gray, palette):
        np.testing.assert_array_equal(read_label_ids(path), ids)
        np.testing.assert_array_equal(read_train_ids(path), expected)
        np.testing.assert_array_equal(read_train_ids(path, flip=True), expected[:, ::-1])
        assert read_train_ids(path, (3, 4)).tolist() == expected[::2, ::2].tolist()
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.dstack([ids] * 3), mode="RGB").save(rgb)
    with pytest.raises(ValueError, match="mode L or P.*'RGB'"):
        read_label_ids(rgb)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="cannot decode label image"):
        read_label_ids(tmp_path / "broken.png")


def test_stereo_frame_is_the_other_camera(layout: tuple[Path, Path]) -> None:
    root, split = layout
    right = root / DRIVE / "image_03" / "data"
    right.mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(right / f"{i:010d}.png"), np.full((ORIG_H, ORIG_W, 3), 10 * i, np.uint8))
    split.write_text(f"{DRIVE} 2 l\n{DRIVE} 3 r\n")
    ds = KittiRawMonoDataset(root, split, 32, 64, frame_ids=(0, -1, "s"))
    left_sample, right_sample = ds[0], ds[1]
    assert left_sample[("color", "s", 0)].mul(255).round().unique().tolist() == [20.0]
    # for a right-camera entry, frame 0 is image_03 and "s" is image_02
    assert right_sample[("color", 0, 0)].mul(255).round().unique().tolist() == [30.0]
    img2 = cv2.cvtColor(cv2.imread(str(root / DRIVE / "image_02" / "data" / f"{3:010d}.png")),
                        cv2.COLOR_BGR2RGB)
    ref = cv2.resize(img2, (64, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    np.testing.assert_allclose(right_sample[("color", "s", 0)].permute(1, 2, 0).numpy(), ref,
                               atol=1e-6)
    assert left_sample["stereo_T"][0, 3].item() == pytest.approx(-0.1)
    assert right_sample["stereo_T"][0, 3].item() == pytest.approx(0.1)
    flipped = KittiRawMonoDataset(root, split, 32, 64, frame_ids=(0, "s"),
                                  augment=Augmentation(flip_prob=1.0, color_aug_prob=0.0))
    assert flipped[0]["stereo_T"][0, 3].item() == pytest.approx(0.1)
    np.testing.assert_array_equal(flipped[0]["stereo_T"].numpy()[:3, :3], np.eye(3))
    (right / f"{2:010d}.png").unlink()
    with pytest.raises(FileNotFoundError, match="image_03"):
        KittiRawMonoDataset(root, split, 32, 64, frame_ids=(0, "s"))
