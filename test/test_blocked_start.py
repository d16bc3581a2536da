"""The node executables' blocked-start shebang (oe_depth_ros/blocked_start.py)."""
from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oe_depth_ros.blocked_start import (ENV, MAX_SHEBANG_BYTES, blocked_shebang,
                                        env_blocks_signals, with_blocked_start)

#: Prints the signals blocked in the started interpreter (its first statement).
PRINT_BLOCKED = ("import signal, sys\n"
                 "print(sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))\n")
SCRIPT = f"#!{sys.executable}\n{PRINT_BLOCKED}"
needs_env = pytest.mark.skipif(not env_blocks_signals(),
                               reason=f"{ENV} has no --block-signal (coreutils < 8.31)")


def run_script(path: Path, contents: str) -> list[int]:
    """Write an executable script, run it (nothing blocked here), return its blocked signals."""
    path.write_text(contents)
    path.chmod(0o755)
    with_nothing_blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGINT not in with_nothing_blocked
    result = subprocess.run([str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout)  # the list of ints PRINT_BLOCKED prints


def test_the_shebang_names_env_the_signals_and_the_interpreter() -> None:
    assert blocked_shebang("/usr/bin/python3") == \
        "#!/usr/bin/env -S --block-signal=INT,TERM /usr/bin/python3"
    assert blocked_shebang("/usr/bin/python3 -E") == \
        "#!/usr/bin/env -S --block-signal=INT,TERM /usr/bin/python3 -E"


@pytest.mark.parametrize("interpreter", [
    "python",  # a wheel's placeholder: the installer rewrites it
    '"/opt/my env/bin/python"',  # setuptools quotes a path with spaces
    "/opt/$HOME/python", "/opt/a'b/python", '/opt/a"b/python', "/opt/a\\b/python",
    "/opt/#/python",
    "/" + "p" * (MAX_SHEBANG_BYTES - 40),
])
def test_interpreters_env_would_misread_keep_their_shebang(interpreter: str) -> None:
    contents = f"#!{interpreter}\nprint()\n"
    assert with_blocked_start(contents, supported=True) == contents
    assert blocked_shebang(interpreter) is None


def test_no_rewrite_without_env_support_or_without_a_shebang() -> None:
    assert with_blocked_start(SCRIPT, supported=False) == SCRIPT
    assert with_blocked_start(PRINT_BLOCKED, supported=True) == PRINT_BLOCKED
    rewritten = with_blocked_start(SCRIPT, supported=True)
    assert rewritten == blocked_shebang(sys.executable) + "\n" + PRINT_BLOCKED


def test_an_env_without_block_signal_is_detected(tmp_path: Path) -> None:
    assert not env_blocks_signals(str(tmp_path / "no-such-env"))
    assert not env_blocks_signals("/bin/false")


@needs_env
def test_the_interpreter_starts_with_both_signals_blocked(tmp_path: Path) -> None:
    """The real check: run a script with each shebang and read the interpreter's mask."""
    assert run_script(tmp_path / "plain", SCRIPT) == []
    blocked = run_script(tmp_path / "blocked", with_blocked_start(SCRIPT, supported=True))
    assert blocked == sorted([int(signal.SIGINT), int(signal.SIGTERM)])
