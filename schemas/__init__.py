"""Contracts shared by every room: kline and candle models, events, topics, DDL."""
