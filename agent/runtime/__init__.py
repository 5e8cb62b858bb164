"""The asyncio runtime: loops, watch-driven triggers, webhook receiver, health and metrics server."""
