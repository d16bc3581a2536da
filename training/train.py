"""Train OE-Depth: ``python -m training.train --config <config.yaml> [key=value ...]``.

One GPU or CPU: run it directly. Several GPUs or nodes: launch the same command with
``torchrun --nproc_per_node N -m training.train ...``; the per-process batch is
``optim.batch_size`` and the global batch is that times the number of processes.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from oe_depth_ros.config import ConfigError

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None,
                        help="training YAML, or a name in config/training/ (default: oe_depth)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.batch_size=8 data.data_path=/kitti")
    parser.add_argument("--resume", type=Path, default=None,
                        help="checkpoint to continue from (exactly where it stopped)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: out_dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    from oe_depth_ros.devices import DeviceError, resolve_torch_device

    from .distributed import init_distributed, shutdown_distributed
    from .train_config import load_train_config
    from .trainer import Trainer, TrainingDivergedError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_train_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        LOG.error("%s", exc)
        return 2
    try:
        device = resolve_torch_device(cfg.device)
    except DeviceError as exc:  # an unknown name, or CUDA without a GPU
        LOG.error("%s", exc)
        return 1
    env = init_distributed(device.type == "cuda")
    if not env.is_main and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    trainer = None
    try:
        trainer = Trainer(cfg, out_dir=args.out, env=env, device=device)
        if args.resume is not None:
            trainer.resume(args.resume)
        trainer.fit()
        LOG.info("done: step %d, checkpoints in %s", trainer.step, trainer.out_dir)
        return 0
    except TrainingDivergedError as exc:
        LOG.error("%s", exc)
        return 3
    except KeyboardInterrupt:
        where = trainer.out_dir if trainer is not None else cfg.out_dir
        LOG.error("interrupted; continue with --resume %s/last.pt", where)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        LOG.error("%s", exc)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        shutdown_distributed(env)


if __name__ == "__main__":
    sys.exit(main())
