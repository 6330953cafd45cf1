"""Every relative link in README.md, CHANGELOG.md and docs/*.md resolves: the file exists, and an anchor names a
heading of the page it points to, as GitHub makes its slugs. External links are not fetched. The README stays a
page a newcomer reads in five minutes: at most 250 lines."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
# [text](target) and [text](target "title"); not images' sizes, not footnotes.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (hyphens, underscores kept),
    spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2 ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return LINK.findall(text)


def broken(page: Path) -> list[str]:
    wrong = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        goal = (page.parent / unquote(path)).resolve() if path else page
        if not goal.exists():
            wrong.append(f"{target}: no file {goal.relative_to(ROOT) if goal.is_relative_to(ROOT) else goal}")
        elif anchor and goal.suffix == ".md" and unquote(anchor) not in anchors(goal):
            wrong.append(f"{target}: no heading #{anchor} in {goal.relative_to(ROOT)}")
    return wrong


def test_github_slugs():
    assert slug("1. Register the app in Microsoft Entra ID") == "1-register-the-app-in-microsoft-entra-id"
    assert slug("Deploying again after `azd down`") == "deploying-again-after-azd-down"
    assert slug("Try it: two commands") == "try-it-two-commands"
    assert slug("Teardown, upgrade and redeploy") == "teardown-upgrade-and-redeploy"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_link_resolves(page: Path):
    assert links(page) or page.name not in ("README.md",), "the README links nowhere"
    wrong = broken(page)
    assert not wrong, f"{page.relative_to(ROOT)} has links that resolve nowhere: " + "; ".join(wrong)


def test_the_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines; move details to docs/ (at most 250)"
