"""Quix Streams dataflows: pure builders plus thin runners that own Application, topics and sinks."""
