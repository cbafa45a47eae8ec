"""Every statement of README's "Analyst SQL" runs against the migrated schema (real chDB), so
the documented queries name tables and columns that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

pytestmark = [pytest.mark.clickhouse]
README = Path(__file__).resolve().parent.parent / "README.md"


def _statements() -> list[str]:
    text = README.read_text()
    block = text[text.index("## Analyst SQL") :]
    block = block[block.index("```sql") + 6 :]
    block = block[: block.index("```")]
    return [s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]


def test_the_analyst_sql_runs(ch: Client, ch_db: str) -> None:
    stmts = _statements()
    assert len(stmts) >= 10
    for sql in stmts:
        ch.query(sql.replace("ohlcv.", f"`{ch_db}`."))
