"""Runnable examples, shipped in the wheel: ``python -m eventstore_client.examples.quickstart
HOST:PORT`` (and ``quickstart_async``). Each appends, reads back and subscribes."""
