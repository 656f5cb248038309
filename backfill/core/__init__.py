"""The pure core: rules and records with no I/O.

Nothing here imports asyncio, aiohttp, nats or `backfill.adapters` (tests/unit/test_architecture.py).
"""
