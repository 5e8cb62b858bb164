"""How many ElectLeaders requests each sandbox broker has received, read from its JMX exporter.

The exporter exposes `kafka_network_requestmetrics_requests_total{request="ElectLeaders",version=..}`
(sandbox/resources/kafka/jmx-exporter.yaml). Kafka creates the meter of a version on the first
request of that version, and a restarted broker starts from zero, so an absent series reads as 0.
"""

from __future__ import annotations

import re
import urllib.request

from sandbox.kafka import KafkaCluster

SERIES = re.compile(r"^kafka_network_requestmetrics_requests_total\{([^}]*)\}\s+(\S+)", re.MULTILINE)


def elect_requests(cluster: KafkaCluster) -> dict[tuple[int, str], float]:
    """(broker id, version) -> ElectLeaders requests received, for every running broker."""
    counts: dict[tuple[int, str], float] = {}
    for broker, address in cluster.metrics_targets.items():
        if not cluster.broker_running(broker):
            continue
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for labels, value in SERIES.findall(text):
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if pairs.get("request") == "ElectLeaders":
                counts[(broker, pairs.get("version", "?"))] = float(value)
    return counts
