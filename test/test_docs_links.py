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
"""Every relative link in README.md and docs/ leads to an existing file and heading.

Anchors are checked against the headings of the target page, slugged as GitHub does
(lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats).
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or anchor does not exist."""
    broken = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{target} (no file {dest})")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_slug_follows_github():
    assert slug("Performance (this machine: 2 shared CPU cores, no GPU)") == \
        "performance-this-machine-2-shared-cpu-cores-no-gpu"
    assert slug("Inference backends (`bench/bench_inference.py`)") == \
        "inference-backends-benchbench_inferencepy"
    assert slug("The demo: no ROS, no GPU, no download") == "the-demo-no-ros-no-gpu-no-download"


def test_checker_finds_broken_links_and_accepts_good_ones(tmp_path):
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## A section (`x.py`)\n\n## A section (`x.py`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n[ok](other.md) [ok](other.md#a-section-xpy) [ok](other.md#a-section-xpy-1) "
        "[ok](#top) [web](https://example.org/x.md)\n"
        "[bad](missing.md) [bad](other.md#no-such-heading) ![bad](img/none.png)\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored.md)`\n")
    assert broken_links(page) == [
        f"missing.md (no file {tmp_path / 'missing.md'})",
        "other.md#no-such-heading (no heading #no-such-heading in other.md)",
        f"img/none.png (no file {tmp_path / 'img' / 'none.png'})",
    ]


def test_every_relative_link_in_the_docs_resolves():
    found = {str(p.relative_to(REPO)): broken_links(p) for p in pages()}
    assert len(found) > 10
    broken = {page: links for page, links in found.items() if links}
    assert not broken, f"broken links: {broken}"
