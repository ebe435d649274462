"""Kafka: the embedded broker, the producer and the dataflow input."""
