"""Kubernetes: the one access layer (`client`) and the stores built on it.

- `client`: KubeClient and `connect`, typed reads, single-call writes, watches, Leases, Events, and
  the generic custom-resource calls; its public names are re-exported here;
- `statestore`: the per-(rule, object) AutopilotRuleObject state; `statuscodec`: its encoding;
- `approvals`: the ActionApproval store; `clusterrules`: AutopilotRules stored in the cluster;
- `crds`: the agent's CRDs and `install_crds`.

Only `client` talks to kubernetes_asyncio; the stores call the client.
"""

from agent.adapters.kubernetes.client import (
    REPORTING_CONTROLLER,
    USER_AGENT,
    ConflictError,
    EventTarget,
    KubeClient,
    KubeError,
    LeaseInfo,
    NodeInfo,
    NotFoundError,
    OwnerReference,
    PodInfo,
    PvcCondition,
    PvcInfo,
    StorageClassInfo,
    Taint,
    VolumeAttachmentInfo,
    WatchEvent,
    connect,
)

__all__ = [
    "REPORTING_CONTROLLER",
    "USER_AGENT",
    "ConflictError",
    "EventTarget",
    "KubeClient",
    "KubeError",
    "LeaseInfo",
    "NodeInfo",
    "NotFoundError",
    "OwnerReference",
    "PodInfo",
    "PvcCondition",
    "PvcInfo",
    "StorageClassInfo",
    "Taint",
    "VolumeAttachmentInfo",
    "WatchEvent",
    "connect",
]
