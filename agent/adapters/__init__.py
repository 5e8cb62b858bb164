"""Adapters to external systems (Prometheus, Kubernetes, Kafka, storage pools), each behind a Protocol."""
