"""Move Kafka brokers off a failed node (kafka-autopilot.io.action.node/cordon-reschedule).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out;
`agent.actions.registry` pairs the two. Importing this package imports neither: the pure catalog
(`agent.actions.specs`) loads no executor.
"""
