"""Audit trail: structlog setup and the sinks every evaluation, transition and action is recorded to."""
