"""FastAPI: REST and WebSocket candle API, health and metrics."""
