"""Kafka clients and their books: consumer, producer and deliveries, offsets, micro-batching."""
