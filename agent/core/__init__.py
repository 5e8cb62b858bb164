"""Pure decision core: rule model, quantities, operators, matching, state machine, and the catalog
machinery actions describe themselves with (`catalog.py`, `inflight.py`).

Nothing here does I/O, reads the clock or uses asyncio; time and query results are passed in. Nothing
here knows a particular action: the actions' specs (agent/actions/*/spec.py) are handed in as a Catalog.
"""
