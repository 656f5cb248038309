"""NATS JetStream: the only package that imports nats-py."""
