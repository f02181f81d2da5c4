"""The user docs hold together: every relative link resolves, test files are named for what they
test (not for the issue that asked for them), and shipped files carry no build-machine paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: folders whose files ship in the wheel or are read by the shipped code
SHIPPED = ("configs", "checkpoints", "deepaq/examples")
BUILD_PATHS = re.compile(r"(?<![\w.])/(?:work|root|tmp|home)/")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def test_there_are_user_docs():
    assert (REPO / "README.md").is_file() and len(DOCS) > 1


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        missing_anchor = (dest.suffix == ".md" and dest.is_file() and anchor
                          and anchor not in _anchors(dest.read_text(encoding="utf-8")))
        if not dest.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_no_test_file_is_named_after_an_issue():
    named = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*")
             if "issue" in p.name.lower()]
    assert not named, named


def test_shipped_files_hold_no_build_machine_paths():
    import gzip

    found = []
    for folder in SHIPPED:
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".yaml", ".json", ".jsonl", ".md", ".txt"):
                text = path.read_text(encoding="utf-8", errors="replace")
            elif path.name.endswith(".jsonl.gz"):
                text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            else:
                continue
            found += [f"{path.relative_to(REPO)}: {m.group(0)}"
                      for m in BUILD_PATHS.finditer(text)][:1]
    assert not found, found
