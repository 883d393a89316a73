"""The clinical basis of the defaults is in the repository, so a reader can follow every citation.

Comments, docstrings and docs point to sections of ``docs/clinical-basis.md`` by anchor: the
page's path followed by ``#`` and the anchor, or, in a file that names the page, a bare ``#name``.
Notes kept outside the repository must not be cited at all: nobody reading the project could open
them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASIS = ROOT / "docs" / "clinical-basis.md"
SKIPPED_DIRS = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist"}

# Written so that this file does not match the search it performs.
OUTSIDE_NOTES = re.compile(r"\b(?:clinical|ble)\.md\b|shared[/]reference")
LINKED = re.compile(r"clinical-basis\.md#([a-z0-9-]+)")
BARE = re.compile(r"(?<![\w/&`])#([a-z][a-z0-9-]+)\b")


def _sources() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).parts
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative):
            continue
        if path.suffix in {".py", ".toml", ".md"} and path.is_file():
            yield path


def _anchors() -> set[str]:
    return set(re.findall(r'<a id="([a-z0-9-]+)"></a>', BASIS.read_text(encoding="utf-8")))


def test_nothing_cites_notes_kept_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_every_citation_names_a_section_of_the_clinical_basis() -> None:
    anchors = _anchors()
    assert {"status", "mdma-defaults", "psilocybin-defaults", "simulator"} <= anchors
    unknown = []
    citing = 0
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if path == BASIS or "clinical-basis.md" not in text:
            continue
        citing += 1
        cited = set(LINKED.findall(text))
        if path.suffix != ".md":  # Markdown's own in-page links are not citations
            cited |= set(BARE.findall(text))
        unknown += [f"{path.relative_to(ROOT)}: #{name}" for name in sorted(cited - anchors)]
    assert citing >= 10
    assert not unknown, "\n".join(unknown)


def test_the_basis_says_what_the_defaults_are_and_who_signs_them_off() -> None:
    text = BASIS.read_text(encoding="utf-8")
    assert "not a medical device" in text.lower()
    assert "study physician" in text
    sources = ("Vizeli P, Liechti ME (2017)", "Royal College of Physicians (2017)", "IEC 60601-1-8")
    for reference in sources:
        assert reference in text
