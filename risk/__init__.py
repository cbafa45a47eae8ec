"""Risk that is not a stream: limits, stored books, the batch backtest, the books ' gauges."""
