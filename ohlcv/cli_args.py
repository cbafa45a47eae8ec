"""Option parsing shared by ``ohlcv`` commands; errors are one-line ``ConfigError``s."""

from __future__ import annotations

from ohlcv.errors import ConfigError


def time_bounds(start: str | None, end: str | None, *, empty: str) -> tuple[int | None, int | None]:
    """``--from``/``--to`` (epoch ms or ISO UTC) as ms; ``empty`` ends the message when from is
    not before to."""
    from streams.continuity import iso_ms, parse_time_ms

    bounds: dict[str, int | None] = {"from": None, "to": None}
    for name, text in (("from", start), ("to", end)):
        if text is not None:
            try:
                bounds[name] = parse_time_ms(text)
            except ValueError as exc:
                raise ConfigError(f"--{name}: {exc}") from exc
    start_ms, end_ms = bounds["from"], bounds["to"]
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ConfigError(f"--from {iso_ms(start_ms)} is not before --to {iso_ms(end_ms)}: {empty}")
    return start_ms, end_ms
