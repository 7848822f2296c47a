"""What drives the pipeline from Kafka: the confluent-kafka worker loop and its inference thread."""
