"""Commands that are not the worker: local broker, dev loop, load generator, tail, topics, demo."""
