"""kafka-autopilot: evaluates AutopilotRule YAML against Prometheus and remediates Kafka on Kubernetes."""

__version__ = "0.1.0"
