"""Pure decision core: rule model, quantities, operators, matching, state machine and planners.

Nothing here does I/O, reads the clock or uses asyncio; time and query results are passed in.
"""
