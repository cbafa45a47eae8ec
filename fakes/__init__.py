"""Test and demo doubles of the outside world (the fake Binance; more fakes, e.g. RSS feeds, go here).

No product module imports this package; only the tests, the benchmarks and the demo composition
(``ohlcv.demo``) do.
"""
