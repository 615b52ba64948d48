"""The CLI's table renderer: rows under a header, through no deprecated click API."""

from __future__ import annotations

import warnings

from obdsync import render


def test_a_table_prints_its_rows_and_warns_nothing(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # click.get_text_stream warned DeprecationWarning (gone in click 9)
        render.table(["signal", "value"], [["RPM", 850], ["SPEED", 42]], right=["value"], title="now")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("signal" in line and "value" in line for line in lines)
    assert any("RPM" in line and "850" in line for line in lines)
    assert any("SPEED" in line and "42" in line for line in lines)
