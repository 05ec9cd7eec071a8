"""Plain-text tables: aligned, and streamed a block at a time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice
from typing import Any

from tracker.render import table, table_lines, tree, width

HEADERS = ["n", "name", "cost"]
ROWS: list[list[Any]] = [[1, "a", 0.5], [22, "bbbb", None], [333, "cc", 12.25]]


def test_a_table_aligns_text_left_and_numbers_right() -> None:
    assert table(HEADERS, ROWS).splitlines() == [
        "n    name  cost",
        "---  ----  -----",
        "  1  a       0.5",
        " 22  bbbb      -",
        "333  cc    12.25",
    ]
    assert table(HEADERS, []).splitlines() == ["n  name  cost", "-  ----  ----"]


def test_wide_characters_take_two_columns_and_combining_marks_none() -> None:
    """CJK and emoji ids take two terminal columns each; a combining accent takes none."""
    rows = [["代理人", 1], ["agent-🙂", 22], ["cafe\u0301", 3], ["plain", 4]]
    assert table(["agent", "n"], rows).splitlines() == [
        "agent     n",
        "--------  --",
        "代理人     1",
        "agent-🙂  22",
        "cafe\u0301       3",
        "plain      4",
    ]
    assert [width(text) for text in ("代理人", "agent-🙂", "cafe\u0301", "")] == [6, 8, 4, 0]


def test_streamed_blocks_show_the_same_cells_with_the_widths_seen_so_far() -> None:
    lines = list(table_lines(HEADERS, ROWS, block=2))
    whole = table(HEADERS, ROWS).splitlines()
    assert [line.split() for line in lines[2:]] == [line.split() for line in whole[2:]]
    assert lines[:4] == ["n   name  cost", "--  ----  ----", " 1  a      0.5", "22  bbbb     -"]
    assert lines[4] == "333  cc    12.25"  # a later block widens its columns


def test_a_streamed_table_reads_one_block_ahead_at_most() -> None:
    read = []

    def rows() -> Iterator[list[Any]]:
        for n in range(10_000):
            read.append(n)
            yield [n, "x"]

    first = list(islice(table_lines(["n", "x"], rows(), block=100), 2 + 150))
    assert first[-1].split() == ["149", "x"]
    assert len(read) == 200  # two blocks, not the 10,000 rows


def test_a_tree_branches_off_the_elder_child_at_a_fork_and_runs_on_in_a_column() -> None:
    nodes = [("a", None, "a"), ("b", "a", "b"), ("c", "b", "c"), ("c1", "c", "c1")]
    nodes += [("d", "b", "d"), ("e", "d", "e"), ("r", "gone", "r")]  # r's parent is unknown
    assert tree(nodes).splitlines() == [
        "├── a",
        "│   b",
        "│   ├── c",
        "│   │   c1",
        "│   d",
        "│   e",
        "└── r",
    ]


def parents_drawn(drawing: str) -> dict[str, str | None]:
    """Read a drawn tree back: a label after a branch hangs from the last label one column
    to the left (none: a root), a label alone goes on from the last one in its column."""
    last_in: dict[int, str] = {}  # column of a label -> the last label seen there
    parents: dict[str, str | None] = {}
    for line in drawing.splitlines():
        label = line.lstrip(" │├└─")
        column = len(line) - len(label)
        branched = line[column - 4 : column] in ("├── ", "└── ")
        parents[label] = last_in.get(column - 4) if branched else last_in[column]
        last_in = {c: n for c, n in last_in.items() if c < column} | {column: label}
    return parents


def test_any_forest_drawn_reads_back_to_its_parents() -> None:
    rng = random.Random(7)
    for size in range(1, 300, 7):
        nodes: list[tuple[str, str | None, str]] = []
        for k in range(size):  # a parent among the earlier nodes, or a root
            parent = rng.choice([None, *(n for n, _, _ in nodes[-5:]), nodes[0][0] if k else None])
            nodes.append((f"s{k}", parent, f"s{k}"))
        assert parents_drawn(tree(nodes)) == {n: p for n, p, _ in nodes}, size


def test_a_chain_that_forks_at_every_turn_stays_a_column() -> None:
    nodes: list[tuple[str, str | None, str]] = [("s0", None, "s0")]
    for k in range(1, 3000):  # s(k-1) forks: a short-lived branch, then the one that goes on
        nodes += [(f"b{k}", f"s{k - 1}", f"b{k}"), (f"s{k}", f"s{k - 1}", f"s{k}")]
    lines = tree(nodes).splitlines()
    assert max(map(len, lines)) == len("    ├── b2999")  # 4 columns of lead, whatever the depth
    assert lines[-3:] == ["    s2998", "    ├── b2999", "    s2999"]


def test_a_chain_of_thousands_is_a_column() -> None:
    chain = [(f"s{k}", f"s{k - 1}" if k else None, f"s{k}") for k in range(5000)]
    lines = tree(chain).splitlines()  # no recursion: no RecursionError
    assert (len(lines), lines[0], lines[-1]) == (5000, "└── s0", "    s4999")


def test_a_column_of_nones_alone_is_not_taken_for_numbers() -> None:
    rows: list[list[Any]] = [[1, None], [2, None], [3, "abc"]]
    lines = list(table_lines(["n", "session"], rows, block=2))
    assert lines[2:] == ["1  -", "2  -", "3  abc"]  # text, left-aligned
