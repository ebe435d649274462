"""The Binance WebSocket ingestor: combined stream -> validated, sequenced trades -> Kafka."""
