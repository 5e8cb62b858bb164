"""The actions: one folder each (`spec.py` pure, `executor.py` plan -> apply -> verify and idempotent,
`__init__.py` exposing its `ACTION`), listed once in `registry.py`; `base.py` and `mutations.py` are
what every executor shares."""
