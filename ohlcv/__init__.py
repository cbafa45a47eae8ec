"""Settings, the ``ohlcv`` command line and the supervision of embedded infrastructure."""

__version__ = "0.1.0"
