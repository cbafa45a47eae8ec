"""The model registry: artifacts with checksums, the ClickHouse tables of models, jobs and
promotions, and the promotion rules."""
