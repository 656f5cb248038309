"""The README stays an entry a newcomer finishes, and the reference it points to stays whole and reachable:
every setting the programs read is in docs/configuration.md, every relative link in the README, docs/
and the deployment and bench pages reaches a file and, with `#anchor`, a heading GitHub names so.

Anchors follow GitHub's rule: the heading's text in lower case, punctuation dropped (letters, digits,
`_`, `-` and spaces kept), each space a hyphen; a repeated heading gets `-1`, `-2`, ... Code blocks and
code spans hold no links or headings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.artifacts import settings_env_names

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
DOCUMENTS = sorted(
    [
        README,
        *(REPO / "docs").glob("*.md"),
        REPO / "deploy" / "README.md",
        REPO / "deploy" / "prometheus" / "README.md",
        REPO / "bench" / "README.md",
    ]
)
README_LIMIT = 18_000  # bytes: the entry, not the reference (about 15 KB)

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+).*?\1")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    document: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{shown(self.document)}:{self.line}: ({self.target})"


def shown(path: Path) -> str:
    """A path as a failure names it: from the repository's root when it lies there."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def numbered_lines(markdown: str) -> Iterator[tuple[int, str, bool]]:
    """Each line but the fences themselves, numbered from 1, and whether it is inside a code block."""
    fenced = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        yield number, line, fenced


def prose_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """Each line outside fenced code blocks, numbered from 1."""
    return ((number, line) for number, line, fenced in numbered_lines(markdown) if not fenced)


def code_lines(markdown: str) -> list[str]:
    """Each line inside a fenced code block."""
    return [line for _, line, fenced in numbered_lines(markdown) if fenced]


def slug(heading: str) -> str:
    """The anchor GitHub derives from one heading's text."""
    text = INLINE_LINK_TEXT.sub(r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Every anchor a document's headings define, repeated headings numbered as GitHub numbers them."""
    seen: Counter[str] = Counter()
    anchors = set()
    for _, line in prose_lines(markdown):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        anchors.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return anchors


def relative_links(document: Path) -> list[Link]:
    """The links of a document that point inside the repository (no scheme), code left out."""
    return [
        Link(document, number, target)
        for number, line in prose_lines(document.read_text())
        for target in LINK.findall(CODE_SPAN.sub("", line))
        if not EXTERNAL.match(target)
    ]


def broken(link: Link) -> str | None:
    """Why a relative link leads nowhere, or None when its file (and heading) exist."""
    path, _, anchor = link.target.partition("#")
    target = (link.document.parent / path).resolve() if path else link.document
    if not target.exists():
        return f"{link}: no file {path}"
    if anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text()):
        return f"{link}: {shown(target)} has no heading for #{anchor}"
    if anchor and target.suffix != ".md":
        return f"{link}: #{anchor} on a file that is not markdown"
    return None


def documented_variables() -> set[str]:
    """The variables the configuration table lists: the backquoted names in each row's first cell."""
    text = CONFIGURATION.read_text()
    table = text[text.index("## Environment variables") :].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split(" | ", 1)[0]))
    return names


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Keeping it done: `producer watch`", "keeping-it-done-producer-watch"),
        ("Undo / re-run a row", "undo--re-run-a-row"),
        ("1. PMOVES contracts and services", "1-pmoves-contracts-and-services"),
        ("Settings: PMOVES' env files, then `./.env`", "settings-pmoves-env-files-then-env"),
        ("Agent Zero's outages are waited out", "agent-zeros-outages-are-waited-out"),
        ("BACKFILL_WATCH_INTERVAL and [a link](x.md)", "backfill_watch_interval-and-a-link"),
    ],
)
def test_a_heading_anchor_is_the_one_github_gives(heading: str, anchor: str) -> None:
    """Lower case, punctuation dropped, spaces as hyphens, underscores kept, a link's text only."""
    assert slug(heading) == anchor


def test_repeated_headings_and_headings_in_code_are_anchored_as_github_does() -> None:
    """The second `## Notes` is `#notes-1`; a `# comment` inside a fenced block is no heading."""
    markdown = "# Title\n\n## Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n"
    assert heading_anchors(markdown) == {"title", "notes", "notes-1"}


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    """The checker itself: a missing file, a missing heading and a link in code are told apart."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n[ok](#here) [gone](#elsewhere) [none](missing.md) `[code](missing.md)`\n"
        "[web](https://example.com/x.md)\n\n```\n[fenced](missing.md)\n```\n"
    )
    links = relative_links(page)
    assert [link.target for link in links] == ["#here", "#elsewhere", "missing.md"]
    verdicts = [broken(link) for link in links]
    assert verdicts[0] is None
    assert verdicts[1] is not None and "no heading for #elsewhere" in verdicts[1]
    assert verdicts[2] is not None and "no file missing.md" in verdicts[2]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(document: Path) -> None:
    """A link that points inside the repository names a file that exists and, with #anchor, a heading."""
    problems = [problem for link in relative_links(document) if (problem := broken(link))]
    assert not problems, "\n".join(problems)


def test_every_variable_the_settings_read_is_in_the_configuration_table() -> None:
    """An operator finds every environment variable the programs read (and its aliases) in one table."""
    missing = settings_env_names() - documented_variables()
    assert not missing, f"add to docs/configuration.md's table: {sorted(missing)}"


def test_the_configuration_table_lists_no_variable_the_settings_do_not_read() -> None:
    """A documented variable that nothing reads would be set in vain."""
    unread = documented_variables() - settings_env_names()
    assert not unread, f"docs/configuration.md lists variables no setting reads: {sorted(unread)}"


def test_the_readme_is_an_entry_with_the_two_commands() -> None:
    """The README stays short (the reference lives in docs/) and shows `make demo` and `make test` as
    commands to type, at the start of a line in a code block."""
    text = README.read_text()
    size = len(text.encode())
    assert size < README_LIMIT, f"README.md is {size} bytes: move reference material to docs/"
    code = code_lines(text)
    for command in ("make demo", "make test"):
        assert any(line.startswith(command) for line in code), f"README.md shows no `{command}` command"


def test_every_reference_page_is_linked_from_the_readme() -> None:
    """Each page in docs/ is reachable from the README."""
    linked = {
        (README.parent / link.target.partition("#")[0]).resolve()
        for link in relative_links(README)
        if link.target.partition("#")[0]
    }
    unlinked = [path.name for path in sorted((REPO / "docs").glob("*.md")) if path.resolve() not in linked]
    assert not unlinked, f"README.md links none of: {unlinked}"
