"""The one exception root. Messages name the setting, topic, table or value at fault."""

from __future__ import annotations


class OhlcvError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(OhlcvError):
    """A setting is invalid; the message names the variable and the expected form."""


class BrokerUnavailableError(OhlcvError):
    """The Kafka broker cannot be reached or the embedded one would not start."""


class ClickHouseUnavailableError(OhlcvError):
    """ClickHouse cannot be reached, or refused a statement."""


class MigrationError(OhlcvError):
    """A migration file failed or was changed after it ran."""
