"""The documentation's relative links resolve: README.md, SECURITY.md and every docs/**/*.md.

A link [text](path) or ![alt](path) must name a file or folder that exists relative to the linking file's folder;
path#anchor into a Markdown file, and #anchor alone (into the linking file), must name one of that file's headings
by GitHub's slug rule. http(s):// and mailto: links are not checked. Code (fenced blocks and inline code spans) is
not Markdown and is skipped. README.md stays a front page: at most 300 lines, the reference lives in docs/.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

DOC_FILES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md"),
                    *(ROOT / "experiments").glob("*/README.md")])

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_EXTERNAL = ("http://", "https://", "mailto:")


def _markdown_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, inline code spans blanked."""
    lines = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, _INLINE_CODE.sub("``", line)))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lowercase, punctuation but '-' and '_' dropped, ' ' -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return "".join(ch for ch in text if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def _headings(path: Path) -> list[tuple[int, str]]:
    """(line number, heading text) of the headings outside fenced code blocks (inline code kept: it is text)."""
    headings = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            headings.append((number, match.group(1)))
    return headings


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does (x, x-1, x-2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in _headings(path):
        slug = github_slug(line)
        if slug in seen:
            seen[slug] += 1
            result.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            result.add(slug)
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and image in a Markdown file."""
    return [(number, m.group(1)) for number, line in _markdown_lines(path) for m in _LINK.finditer(line)]


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    """One message per link of `path` whose target or anchor does not exist."""
    problems = []
    for number, target in links(path):
        if target.startswith(_EXTERNAL):
            continue
        where = f"{_show(path)}:{number}: [{target}]"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / urllib.parse.unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: {_show(dest)} does not exist")
            continue
        if anchor and dest.suffix == ".md":
            known = anchors(dest)
            if urllib.parse.unquote(anchor) not in known:
                problems.append(f"{where}: no heading with anchor #{anchor} in {_show(dest)} "
                                f"(anchors: {', '.join(sorted(known))})")
    return problems


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_relative_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move reference material into a docs/ page "
        "and link it from the README's Reference list")


def test_github_slug_rule() -> None:
    assert github_slug("Results: does the rooted objective help? (animals -> dogs, 5 seeds)") == \
        "results-does-the-rooted-objective-help-animals---dogs-5-seeds"
    assert github_slug("Another resolution: `--adapt-resolution`") == "another-resolution---adapt-resolution"
    assert github_slug("1. `upfirdn2d`: upsample, pad, FIR filter, downsample") == \
        "1-upfirdn2d-upsample-pad-fir-filter-downsample"
    assert github_slug("Mean ± sd_over [seeds](x.md)") == "mean--sd_over-seeds"


def test_link_parser_skips_code_and_finds_images(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('# Title\n\nSee [a](a.md#title) and ![b](img/b.png "caption"), not `[c](c.md)`.\n'
                    "```\n[d](d.md)\n# not a heading\n```\n## Title\n", encoding="utf-8")
    assert links(page) == [(3, "a.md#title"), (3, "img/b.png")]
    assert anchors(page) == {"title", "title-1"}


def test_broken_targets_and_anchors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[ok](other.md#other-page) [ok](#page) [ok](https://x.org/#y)\n"
                    "[gone](missing.md) [bad](other.md#nope) [bad](#nope)\n", encoding="utf-8")
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "missing.md does not exist" in problems[0]
    assert "no heading with anchor #nope in" in problems[1] and "other-page" in problems[1]
    assert "page.md:3: [#nope]" in problems[2]
