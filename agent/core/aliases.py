"""Named PromQL expressions (`keyAlias`) for the conditions SREs write most often.

An alias saves typing and, more importantly, fixes the join labels: each expansion keeps the identity
labels the matcher needs for its target kind (see agent.core.matching). The table below is the
documentation; `kafka-autopilot lint --aliases` prints it.

| alias                            | target     | meaning                                                       |
|----------------------------------|------------|---------------------------------------------------------------|
| VolumeUsagePercentage            | PVC        | used / capacity of the volume, in percent (kubelet metrics)   |
| PxVolumeUsagePercentage          | PVC        | the same from the storage layer's px_volume_* metrics         |
| PoolUsagePercentage              | pool       | used / total of a storage pool, in percent                    |
| UnderReplicatedPartitions        | broker     | partitions this broker leads that miss a replica              |
| UnderMinIsrPartitions            | broker     | partitions this broker leads with ISR below min.insync        |
| IsrShrinkRate                    | broker     | ISR shrinks per second over the last 5 minutes                |
| OfflinePartitions                | cluster    | partitions with no leader (reported by the active controller) |
| PreferredReplicaImbalance        | cluster    | partitions not led by their preferred replica (controller)    |
| LeaderCountDeviationPercentage   | broker     | how far a broker's leader count is from the brokers' mean, %  |

"cluster" expansions carry no identity label: in a KafkaBroker rule their one sample applies to every
selected broker; in a PVC, node or pool rule it is no data for every object (agent.core.matching).
"""

from __future__ import annotations

from types import MappingProxyType

KEY_ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "VolumeUsagePercentage": ("100 * (kubelet_volume_stats_used_bytes / kubelet_volume_stats_capacity_bytes)"),
        "PxVolumeUsagePercentage": "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)",
        "PoolUsagePercentage": "100 * (px_pool_stats_used_bytes / px_pool_stats_total_bytes)",
        "UnderReplicatedPartitions": "kafka_server_replicamanager_underreplicatedpartitions",
        "UnderMinIsrPartitions": "kafka_server_replicamanager_underminisrpartitioncount",
        "IsrShrinkRate": "rate(kafka_server_replicamanager_isrshrinks_total[5m])",
        "OfflinePartitions": "max(kafka_controller_kafkacontroller_offlinepartitionscount)",
        "PreferredReplicaImbalance": ("max(kafka_controller_kafkacontroller_preferredreplicaimbalancecount)"),
        "LeaderCountDeviationPercentage": (
            "100 * (kafka_server_replicamanager_leadercount"
            " - scalar(avg(kafka_server_replicamanager_leadercount)))"
            " / scalar(avg(kafka_server_replicamanager_leadercount))"
        ),
    }
)
