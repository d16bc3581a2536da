"""Progress bars show on a terminal only, and never when not wanted."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from oe_depth_ros.cli import main as cli_main
from oe_depth_ros.progress import bar_disabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drawn(stream: io.StringIO, wanted: bool) -> str:
    for _ in tqdm(range(3), file=stream, desc="work", disable=bar_disabled(wanted)):
        pass
    return stream.getvalue()


def test_wanted_bar_draws_on_a_terminal():
    assert "work" in _drawn(_Terminal(), wanted=True)


@pytest.mark.parametrize("stream, wanted", [(io.StringIO, True), (_Terminal, False),
                                            (io.StringIO, False)],
                         ids=["log-file", "terminal-unwanted", "log-file-unwanted"])
def test_bar_stays_out_of_logs_and_when_not_wanted(stream, wanted):
    assert _drawn(stream(), wanted) == ""


def _synth(tmp_path: Path, name: str) -> int:
    return cli_main(["synth", str(tmp_path / name), "--drives", "1", "--frames", "2",
                     "--width", "64", "--height", "32"])


def test_command_bar_draws_on_a_terminal_and_stays_out_of_a_log(tmp_path, capsys,
                                                                monkeypatch):
    assert _synth(tmp_path, "log") == 0
    assert "2/2" not in capsys.readouterr().err    # stderr captured: not a terminal
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert _synth(tmp_path, "terminal") == 0
    assert "synth" in terminal.getvalue() and "2/2" in terminal.getvalue()
