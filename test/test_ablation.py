"""The Table 3 ablation tool: label check, plateau and summary arithmetic, a tiny end-to-end run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.experiments.ablation import main
from training.experiments.ablation_report import difference, mean_std, plateau_step
from training.experiments.label_edges import BoundaryAgreement, boundary_agreement


def _columns(values: list[float], rows: int = 3) -> np.ndarray:
    """An image whose every row is ``values`` (no vertical edges anywhere)."""
    return np.tile(np.asarray(values), (rows, 1))


def test_boundary_agreement_hand_case() -> None:
    # depth jumps between columns 3|4 and 7|8 -> discontinuity columns {3, 4, 7, 8};
    # labels change between 3|4 and 9|10 -> label-boundary columns {3, 4, 9, 10}.
    depth = _columns([10.0] * 4 + [20.0] * 4 + [40.0] * 4).astype(np.float32)
    ids = _columns([0] * 4 + [1] * 6 + [2] * 2).astype(np.uint8)
    exact = boundary_agreement(depth, ids, tolerance=0.0)
    assert exact == BoundaryAgreement(12, 6, 12, 6)
    # within 1 px: label-near columns {2..5, 8..11} hold discontinuity columns 3, 4, 8;
    # discontinuity-near columns {2..9} hold label columns 3, 4, 9.
    one = boundary_agreement(depth, ids, tolerance=1.0)
    assert one == BoundaryAgreement(12, 9, 12, 9)
    assert one.discontinuity_fraction == pytest.approx(0.75)
    assert one.label_fraction == pytest.approx(0.75)
    two = boundary_agreement(depth, ids, tolerance=2.0)
    assert (two.discontinuity_fraction, two.label_fraction) == (1.0, 1.0)


def test_boundary_agreement_small_jumps_sky_and_void() -> None:
    # A 10 % step is below the 15 % threshold: no discontinuity, nothing to agree with.
    flat = boundary_agreement(_columns([10.0] * 4 + [11.0] * 4).astype(np.float32),
                              _columns([0] * 8).astype(np.uint8))
    assert flat == BoundaryAgreement()
    assert flat.discontinuity_fraction is None and flat.label_fraction is None
    # Sky (0) beside a wall: no edge unless the sky gets a depth; void labels never bound.
    depth = _columns([0.0] * 4 + [30.0] * 4).astype(np.float32)
    ids = _columns([10] * 4 + [2] * 4).astype(np.uint8)
    assert boundary_agreement(depth, ids).discontinuities == 0
    sky = boundary_agreement(depth, ids, sky_depth=250.0)
    assert sky == BoundaryAgreement(6, 6, 6, 6)
    void = boundary_agreement(depth, _columns([255] * 4 + [2] * 4).astype(np.uint8),
                              sky_depth=250.0)
    assert (void.discontinuities, void.label_boundaries) == (6, 0)
    with pytest.raises(ValueError, match="shape"):
        boundary_agreement(depth, ids[:2])


def test_plateau_and_statistics() -> None:
    # means 0.40, 0.30, 0.25, 0.24, 0.245 with std 0.02: from step 300 on every later mean
    # is within 0.02, while 0.25 -> 0.30 at step 200 is not.
    steps = [100, 200, 300, 400, 500]
    means = [0.40, 0.30, 0.25, 0.24, 0.245]
    assert plateau_step(steps, means, [0.02] * 5) == 300
    assert plateau_step(steps, means, [0.001] * 5) is None
    stat = mean_std([1.0, 2.0, 4.0])
    assert stat["mean"] == pytest.approx(7 / 3)
    assert stat["std"] == pytest.approx(np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                 + (4 - 7 / 3) ** 2) / 2))
    diff = difference(mean_std([3.0, 5.0]), mean_std([1.0, 2.0, 3.0]))
    assert diff is not None
    assert diff[0] == pytest.approx(2.0)
    assert diff[1] == pytest.approx(np.sqrt(2.0 / 2 + 1.0 / 3))
    assert difference(mean_std([3.0]), mean_std([1.0, 2.0])) is None


def _tiny(work: Path, rows: list[str], steps: int, warmup: int = 1) -> list[str]:
    return ["--work", str(work), "--rows", *rows, "--seeds", "0", "1", "--steps", str(steps),
            "--eval-every", "1", "--drives", "1", "--frames", "5", "--heldout-drives", "1",
            "--heldout-frames", "2", "--size", "128x64", "--warmup-steps", str(warmup),
            "data.height=32", "data.width=64", "optim.batch_size=1"]


def test_tiny_ablation_end_to_end_and_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    tiny = _tiny(tmp_path, ["baseline", "triplet_only"], 2)
    assert main(tiny) == 0
    out = capsys.readouterr().out
    assert "expected: 4 of 4 runs to do" in out
    table = json.loads((tmp_path / "table.json").read_text())
    md = (tmp_path / "table.md").read_text()
    assert "| baseline | - | - | 2 |" in md and "| triplet_only | - | ✓ | 2 |" in md
    assert "paper Table 3" in md and "0.109" in md and "Label check" in md
    base = table["rows"]["baseline"]
    per_seed = [base["per_seed"][s]["abs_rel"] for s in ("0", "1")]
    assert base["stats"]["abs_rel"]["mean"] == pytest.approx(np.mean(per_seed))
    assert base["stats"]["abs_rel"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert base["stats"]["edge_abs_rel"]["n"] == 2
    assert [p["step"] for p in table["curves"][0]["points"]] == [0, 1, 2]
    assert (tmp_path / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 <= table["label_check"]["tolerance_1px"]["discontinuity_fraction"] <= 1
    run = tmp_path / "runs" / "baseline" / "seed_0"
    record = json.loads((run / "points.json").read_text())
    assert sorted(record["points"]) == ["0", "1", "2"] and record["commit"] is not None
    stamp = (run / "last.pt").stat().st_mtime_ns

    # Second call: everything is done, nothing trains, the table is the same.
    assert main(tiny) == 0
    assert "expected: 0 of 4 runs to do" in capsys.readouterr().out
    assert (run / "last.pt").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "table.json").read_text())["rows"] == table["rows"]
    # The table at an earlier evaluated step, from the records alone.
    assert main([*tiny, "--report-only", "--table-step", "1"]) == 0
    early = json.loads((tmp_path / "table.json").read_text())
    assert early["table_step"] == 1
    assert early["rows"]["baseline"]["per_seed"]["0"]["abs_rel"] == \
        record["points"]["1"]["abs_rel"]
    assert (run / "last.pt").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="not an evaluated step"):
        main([*tiny, "--report-only", "--table-step", "7"])

    # A longer budget continues each run from its checkpoint instead of starting again.
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(_tiny(tmp_path, ["baseline"], 3, warmup=0)) == 0
    assert sum("resumed from" in r.getMessage() and "at step 2" in r.getMessage()
               for r in caplog.records) == 2
    record = json.loads((run / "points.json").read_text())
    assert sorted(record["points"]) == ["0", "1", "2", "3"]


def test_porcelain_paths_keep_the_first_character() -> None:
    """The leading space of an unstaged change is part of the status, not of the path."""
    from training.experiments.ablation import porcelain_paths

    status = " M training/ablation.py\nM  config/a.yaml\n?? oe_depth_ros/new.py\n"
    assert porcelain_paths(status) == ["config/a.yaml", "oe_depth_ros/new.py",
                                       "training/ablation.py"]
    assert porcelain_paths("") == []
