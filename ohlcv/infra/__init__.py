"""Embedded infrastructure and the factories every entrypoint uses to reach Kafka and ClickHouse."""
