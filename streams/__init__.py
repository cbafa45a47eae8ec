"""Sources that put data on Kafka: Binance websocket and REST, file importers, replay, RSS."""
