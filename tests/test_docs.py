"""The README stays a front door and the docs stay connected: short, links that resolve, every
page and command documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 220

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as shown, lowercased, punctuation except '-' and
    '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        slug = github_slug(match.group(2))
        n = seen.get(slug, 0)
        found.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return found


def test_github_slugs_follow_githubs_rules():
    assert github_slug("Compare models") == "compare-models"
    assert github_slug("Your work survives a reload") == "your-work-survives-a-reload"
    assert github_slug("`python -m core` train") == "python--m-core-train"
    assert github_slug("Speed: 2-core CPU (no GPU)") == "speed-2-core-cpu-no-gpu"
    assert github_slug("snake_case and dash-es") == "snake_case-and-dash-es"


def test_readme_is_a_short_front_door_that_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None and text.index("```bash") < text.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(path):
    broken = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists() or ROOT.resolve() not in dest.parents:
            broken.append(f"{target}: no file {dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT.resolve())}")
    assert broken == []


def test_the_docs_exist_and_the_readme_links_each_one():
    names = {p.name for p in DOCS}
    assert {"pages.md", "cli.md", "models.md", "speed.md", "development.md"} <= names
    links = {t.partition("#")[0] for t in LINK.findall(_prose(README.read_text()))}
    assert {f"docs/{name}" for name in names} <= links


def _registered_page_titles() -> list[str]:
    """The titles of the pages app.py registers with st.Page, hidden ones (the root redirect) left out."""
    titles = []
    for node in ast.walk(ast.parse((ROOT / "app.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            kw = {k.arg: k.value for k in node.keywords}
            hidden = isinstance(kw.get("visibility"), ast.Constant) and kw["visibility"].value == "hidden"
            if not hidden:
                titles.append(kw["title"].value)
    return titles


def test_every_page_in_the_app_has_a_section_in_the_page_manual():
    titles = _registered_page_titles()
    assert len(titles) >= 6, titles
    sections = anchors(ROOT / "docs" / "pages.md")
    assert [t for t in titles if github_slug(t) not in sections] == []
    readme_links = set(LINK.findall(_prose(README.read_text())))
    assert [t for t in titles if f"docs/pages.md#{github_slug(t)}" not in readme_links] == []


def test_every_command_line_subcommand_has_a_section_in_the_cli_reference():
    import argparse

    from workflows.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(sub.choices)
    assert len(commands) >= 10, commands
    sections = anchors(ROOT / "docs" / "cli.md")
    text = (ROOT / "docs" / "cli.md").read_text()
    assert [c for c in commands if c not in sections or f"python -m core {c}" not in text] == []
