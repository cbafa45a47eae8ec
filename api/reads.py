"""One ClickHouse read for the routes that answer plain rows (news, risk): the pool's client, a
failed query as a 503 naming what was read, and ``<time>_ms`` columns (an alias named like its
column would shadow it in WHERE) back under their own name."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from api.errors import StoreUnavailableError


def read_rows(
    pool: Any, sql: str, params: dict[str, Any], *, what: str, times: Collection[str] = ()
) -> list[dict[str, Any]]:
    with pool.client() as client:
        try:
            res = client.query(sql, parameters=params)
        except Exception as exc:
            raise StoreUnavailableError(f"{what} read failed: {exc}") from exc
    names = [n[:-3] if n.endswith("_ms") and n[:-3] in times else n for n in res.column_names]
    return [dict(zip(names, r, strict=True)) for r in res.result_rows]
