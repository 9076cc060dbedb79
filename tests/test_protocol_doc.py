"""docs/protocol.md and the schema module say the same: every message type, field, error code
and minor-version addition of ``foley_protocol.protocol`` is in the prose, and everything the
prose's tables list is in the schema (the doc is parsed here: headings and table rows)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from foley_protocol.protocol import (
    ERROR_CODES,
    MINOR_ADDITIONS,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    REPLY_SCHEMAS,
    REQUEST_SCHEMAS,
    Field,
)

DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
TICKED = re.compile(r"`([^`]+)`")


def sections(level: str) -> dict[str, str]:
    """Heading line -> text up to the next heading of this level or above."""
    stops = {"##": r"^#{1,2} ", "###": r"^#{1,3} "}[level]
    found, heading, lines = {}, None, []
    for line in DOC.splitlines():
        if re.match(stops, line):
            if heading is not None:
                found[heading] = "\n".join(lines)
            heading, lines = (line, []) if line.startswith(level + " ") else (None, [])
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        found[heading] = "\n".join(lines)
    return found


def chapter(number: int) -> dict[str, str]:
    """The ### sections of ``## <number>.``: message type(s) in the heading -> section text."""
    text = next(t for h, t in sections("##").items() if h.startswith(f"## {number}."))
    found = {}
    for heading, body in re.findall(r"^### [\d.]+ (.*)\n((?:(?!^### ).*\n?)*)", text, re.M):
        for name in TICKED.findall(heading):
            found[name] = body
    return found


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row that is not a header or separator."""
    rows = []
    for block in re.findall(r"(?:^[ \t]*\|.*\|[ \t]*$\n?)+", text, re.M):
        lines = block.strip().splitlines()
        for line in lines[2:]:  # header, separator
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def field_names(fields: dict[str, Field]) -> set[str]:
    """Every field name of a schema, nested ones included."""
    names = set()
    for name, spec in fields.items():
        names.add(name)
        for inner in (spec.fields, spec.item.fields if spec.item is not None else None):
            if inner:
                names |= field_names(inner)
    return names


@pytest.mark.parametrize("number, schemas", [(3, REQUEST_SCHEMAS), (4, REPLY_SCHEMAS)],
                         ids=["requests", "replies"])
def test_every_message_type_has_its_section_and_no_other(number, schemas):
    assert set(chapter(number)) == set(schemas)


@pytest.mark.parametrize("mtype", [*REQUEST_SCHEMAS, *REPLY_SCHEMAS])
def test_every_field_of_a_message_is_in_its_section_and_every_listed_field_in_the_schema(mtype):
    text = chapter(3 if mtype in REQUEST_SCHEMAS else 4)[mtype]
    names = field_names({**REQUEST_SCHEMAS, **REPLY_SCHEMAS}[mtype])
    mentioned = set(TICKED.findall(text))
    assert not names - mentioned, f"{mtype}: not in docs/protocol.md: {names - mentioned}"
    listed = {name for row in table_rows(text) for name in TICKED.findall(row[0])}
    assert not listed - names, f"{mtype}: in docs/protocol.md, not in the schema: " \
                               f"{listed - names}"


def test_every_error_code_is_in_the_table_and_no_other():
    text = next(t for h, t in sections("##").items() if h.startswith("## 5."))
    listed = [name for row in table_rows(text) for name in TICKED.findall(row[0])]
    assert sorted(listed) == sorted(ERROR_CODES)


def test_the_changelog_is_the_minor_additions_table():
    text = next(t for h, t in sections("###").items() if h == "### Changelog")
    rows = {(row[0], name) for row in table_rows(text) for name in TICKED.findall(row[1])}
    expected = {(f"{PROTOCOL_VERSION}.{minor}", entry)
                for minor, entries in MINOR_ADDITIONS.items() for entry in entries}
    assert rows == expected
    assert f"(version {PROTOCOL_VERSION}.{PROTOCOL_MINOR})" in DOC.splitlines()[0]
