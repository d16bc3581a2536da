# Copyright 2025 oe_depth_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Image sizes on command lines: WIDTHxHEIGHT in, (height, width) in code, errors named."""
import argparse

import pytest

from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, format_size, parse_size


def test_width_comes_first_in_text_and_second_in_code() -> None:
    assert parse_size("640x192") == (192, 640)
    assert parse_size(" 1242X375 ") == (375, 1242)
    assert format_size((192, 640)) == "640x192"
    assert parse_size(format_size((375, 1242))) == (375, 1242)
    assert format_size(DEFAULT_NETWORK_SIZE) == "640x192"  # the paper's KITTI size


@pytest.mark.parametrize("text", ["640", "640x192x3", "640 by 192", "x192", "0x192", "640x-1"])
def test_malformed_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        parse_size(text)


def test_argparse_shows_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=parse_size, default="416x128")
    assert parser.parse_args([]).size == (128, 416)
    assert parser.parse_args(["--size", "128x64"]).size == (64, 128)
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "big"])
    assert "expected WIDTHxHEIGHT such as 640x192, got 'big'" in capsys.readouterr().err
