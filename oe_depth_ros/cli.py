"""The ``oe-depth`` command: one entry point, one module per subcommand.

Each subcommand lives in ``oe_depth_ros.commands.<module>`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; its module docstring's first line
is the help text. Modules are imported only when their subcommand runs, so that
``oe-depth synth`` does not pay for torch or onnxruntime.

Other installed packages add subcommands through the entry-point group
``oe_depth_ros.commands`` (``name = package.module``, a module with the same two
functions): the training package registers ``demo`` this way, so that this package
never imports ``training``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points
from types import ModuleType
from typing import Sequence

from oe_depth_ros import __version__

#: subcommand name -> (module under oe_depth_ros.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "render a synthetic driving world in the KITTI raw layout"),
    "export-onnx": ("export_onnx", "export a depth network to ONNX (batch 1, static shape)"),
    "check-precision": ("check_precision", "float32/float16 conditioning of a depth network "
                        "against float64 (before an fp16 engine build)"),
    "build-engine": ("build_engine", "compile an ONNX file into a cached TensorRT engine"),
    "kitti2bag": ("kitti2bag", "convert a KITTI raw drive into a rosbag2 (MCAP or sqlite3)"),
    "process-bag": ("process_bag",
                    "run depth over a bag's images and write depth, clouds, metrics"),
}
#: Entry-point group of subcommands from other packages.
PLUGIN_GROUP = "oe_depth_ros.commands"


def plugin_commands() -> dict[str, ModuleType]:
    """Subcommand name -> module, of the ``oe_depth_ros.commands`` entry points.

    Plugin modules are loaded for their help text, so they must import cheaply; one
    that fails to load is left out (logged at debug level).
    """
    found = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in COMMANDS:
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not break the other commands
            logging.getLogger("oe-depth").debug("subcommand %s (%s) not loaded: %s",
                                                ep.name, ep.value, exc)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oe-depth`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = plugin_commands()
    # Load only the chosen subcommand's arguments (cheap start-up, no heavy imports).
    chosen = next((a for a in argv if a in COMMANDS or a in plugins), None)
    parser = argparse.ArgumentParser(prog="oe-depth", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"oe_depth_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {name: help_text for name, (_, help_text) in COMMANDS.items()}
    helps.update({name: (module.__doc__ or name).splitlines()[0].rstrip(".")
                  for name, module in plugins.items()})
    modules = {}
    for name, help_text in helps.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = plugins.get(name) or importlib.import_module(
                f"oe_depth_ros.commands.{COMMANDS[name][0]}")
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("oe-depth").error("interrupted")
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        logging.getLogger("oe-depth").error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
