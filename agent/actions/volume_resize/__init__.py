"""Grow a PersistentVolumeClaim (openstorage.io.action.volume/resize).

`spec.py` says, purely, what the action is and how it is planned; `executor.py` carries it out;
`agent.actions.registry` pairs the two. Importing this package imports neither: the pure catalog
(`agent.actions.specs`) loads no executor.
"""
