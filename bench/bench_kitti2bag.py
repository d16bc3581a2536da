"""kitti2bag throughput on a synthetic KITTI drive, MCAP vs sqlite3, against kitti2mcap.

Renders one synthetic drive (or reuses ``--data``), converts it with ``oe-depth
kitti2bag`` into MCAP and sqlite3 bags, and, when a ``kitti2mcap`` executable is
given or on PATH, converts the same drive with it. Every tool runs as a fresh
process (start-up included; best of ``--repeat`` runs) and in-process timings of
``convert`` are reported too.
Besides speed it records what each output holds: topics, messages, size, whether
``/tf_static`` carries a transient-local QoS, and the offset of the first image
stamp from KITTI's timestamp read as UTC, with the machine's time zone set to
Europe/Berlin (KITTI's local time) to expose time-zone-dependent parsing.

    .venv/bin/python bench/bench_kitti2bag.py [--frames 20] [--kitti2mcap PATH] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _common import write_json
from oe_depth_ros.bags.kitti2bag import convert
from oe_depth_ros.kitti.raw import KittiDrive

IMAGE_TOPICS = ("/kitti/camera_color_left/image_raw",)


def _mcap_facts(path: Path) -> dict[str, Any]:
    """Topics, counts, QoS of /tf_static and the first color image stamp of an MCAP file."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        topics = {ch.topic: {"type": summary.schemas[ch.schema_id].name,
                             "messages": int(counts.get(cid, 0)),
                             "qos": ch.metadata.get("offered_qos_profiles", "")}
                  for cid, ch in summary.channels.items()}
        image_topic = next((t for t in topics if t.endswith("camera_color_left/image_raw")),
                           None)
        first_stamp = None
        if image_topic:
            for _, _, _, msg in reader.iter_decoded_messages(topics=[image_topic]):
                first_stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                break
    tf_static = topics.get("/tf_static", {}).get("qos", "")
    return {"topics": sorted(topics), "messages": sum(t["messages"] for t in topics.values()),
            "tf_static_transient_local": "transient_local" in tf_static
            or "durability: 1" in tf_static,
            "first_image_stamp_ns": first_stamp}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file())


def _run(cmd: list[str], repeat: int, tz: str = "UTC") -> float:
    """Best wall time of ``repeat`` runs of ``cmd`` as a fresh process."""
    env = dict(os.environ, TZ=tz)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stderr[-2000:]}")
    return best


def _ours(drive: Path, out: Path, storage: str, compress: bool, frames: int,
          repeat: int) -> dict[str, Any]:
    label = storage + ("+zstd" if compress else "")
    bag = out / f"oe_{label.replace('+', '_')}"
    cmd = [sys.executable, "-m", "oe_depth_ros.cli", "kitti2bag", str(drive), str(bag),
           "--storage", storage, "--distro", "jazzy", "--no-progress", "--overwrite"]
    wall = _run(cmd + (["--compress"] if compress else []), repeat, tz="Europe/Berlin")
    inproc = min(convert(drive, out / f"{bag.name}_inproc", storage, "jazzy", compress=compress,
                         overwrite=True, progress=False).seconds for _ in range(repeat))
    meta_text = (bag / "metadata.yaml").read_text()
    meta = yaml.safe_load(meta_text)["rosbag2_bagfile_information"]
    if storage == "mcap":
        facts = _mcap_facts(bag / f"{bag.name}.mcap")
    else:
        facts = {"topics": sorted(t["topic_metadata"]["name"]
                                  for t in meta["topics_with_message_count"]),
                 "messages": meta["message_count"],
                 "tf_static_transient_local": "transient_local" in meta_text,
                 "first_image_stamp_ns": None}
    return {"tool": "oe-depth kitti2bag", "storage": label, "frames": frames,
            "wall_s": wall, "inprocess_s": inproc, "size_bytes": _size(bag),
            "layout": "rosbag2 directory (metadata.yaml v9)", **facts}


def _theirs(exe: str, drive: Path, out: Path, frames: int, repeat: int) -> dict[str, Any]:
    date, number = drive.parent.name, drive.name.split("_drive_")[1].split("_")[0]
    target = out / "kitti2mcap.mcap"
    cmd = [exe, "--date", date, "--drive", number, "--kitti-dir", str(drive.parent.parent),
           "--output", str(target)]
    target.unlink(missing_ok=True)
    wall = _run(cmd, repeat, tz="Europe/Berlin")
    return {"tool": "kitti2mcap", "storage": "mcap", "frames": frames, "wall_s": wall,
            "inprocess_s": None, "size_bytes": _size(target),
            "layout": "single .mcap file (no metadata.yaml)", **_mcap_facts(target)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames of the synthetic drive")
    parser.add_argument("--width", type=int, default=1242)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--data", type=Path, default=None,
                        help="a synthetic root to reuse (rendered there if missing)")
    parser.add_argument("--kitti2mcap", default=shutil.which("kitti2mcap"),
                        help="kitti2mcap executable (default: from PATH)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; best is kept")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    from oe_depth_ros.synthetic.dataset import drive_name, generate_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_kitti2bag_"))
    try:
        root = args.data or work / "synth"
        drive = root / "2020_06_01" / drive_name(1)
        if not drive.is_dir() or KittiDrive(drive).num_frames != args.frames:
            print(f"rendering {args.frames} synthetic frames at {args.width}x{args.height} "
                  f"into {root} ...", flush=True)
            generate_dataset(root, drives=1, frames=args.frames, seed=0, width=args.width,
                             height=args.height)
        rows = [_ours(drive, work, storage, compress, args.frames, args.repeat)
                for storage in ("mcap", "sqlite3") for compress in (False, True)]
        baseline_note = "kitti2mcap not available: pass --kitti2mcap PATH"
        if args.kitti2mcap:
            rows.append(_theirs(args.kitti2mcap, drive, work, args.frames, args.repeat))
            baseline_note = f"kitti2mcap = {args.kitti2mcap}"
        utc_first = int(KittiDrive(drive).timestamps("image_02")[0])
        base = rows[-1] if args.kitti2mcap else rows[0]
        print(f"\nkitti2bag vs {base['tool']} ({base['storage']}) on a {args.frames}-frame "
              f"{args.width}x{args.height} synthetic drive; {baseline_note}")
        head = (f"{'tool':<20} {'storage':<12} {'wall s':>7} {'frames/s':>9} {'x base':>7} "
                f"{'in-proc s':>9} {'MB':>7} {'topics':>6} {'msgs':>5} {'tf_static TL':>12} "
                f"{'stamp-UTC s':>11}")
        print(head)
        print("-" * len(head))
        for row in rows:
            row["frames_per_s"] = row["frames"] / row["wall_s"]
            row["speed_vs_base"] = row["frames_per_s"] / (base["frames"] / base["wall_s"])
            stamp = row["first_image_stamp_ns"]
            row["first_stamp_minus_utc_s"] = None if stamp is None else (stamp - utc_first) / 1e9
            inproc = "-" if row["inprocess_s"] is None else f"{row['inprocess_s']:.2f}"
            offset = ("-" if row["first_stamp_minus_utc_s"] is None
                      else f"{row['first_stamp_minus_utc_s']:+.0f}")
            print(f"{row['tool']:<20} {row['storage']:<12} {row['wall_s']:7.2f} "
                  f"{row['frames_per_s']:9.2f} {row['speed_vs_base']:7.2f} {inproc:>9} "
                  f"{row['size_bytes'] / 1e6:7.1f} {len(row['topics']):6d} "
                  f"{row['messages']:5d} {str(row['tf_static_transient_local']):>12} "
                  f"{offset:>11}")
        for row in rows:
            print(f"  {row['tool']} {row['storage']}: {row['layout']}; topics: "
                  f"{', '.join(row['topics'])}")
        if args.json:
            write_json(args.json, {"frames": args.frames, "width": args.width,
                                   "height": args.height, "repeat": args.repeat,
                                   "baseline": base["tool"], "rows": rows})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
