"""The one Markdown table renderer every report, sweep and replication table goes through."""

from __future__ import annotations

import pytest

from vidssl.evaluate.report import markdown_table


def test_markdown_table_left_aligns_the_first_column_and_right_aligns_numbers():
    table = markdown_table(("split", "videos"), [("train", "3"), ("val", "")])
    assert table == "| split | videos |\n|---|---:|\n| train | 3 |\n| val |  |"


def test_markdown_table_takes_one_alignment_letter_a_column():
    assert markdown_table(("a", "b"), [], align="rl") == "| a | b |\n|---:|---|"
    with pytest.raises(ValueError, match="align 'r'"):
        markdown_table(("a", "b"), [], align="r")
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        markdown_table(("a", "b"), [("x",)])
