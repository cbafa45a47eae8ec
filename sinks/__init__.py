"""Writers: Quix BatchingSinks into ClickHouse."""
