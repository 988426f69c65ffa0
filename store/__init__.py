"""Persistence shared by the agent and the trainer: call cache, blobs, traces, manifest, slugs.

Submodules are imported on demand (``from store.cache import CallCache``): the trainer imports only
``store.manifest`` and must not pull in aiosqlite through this package's ``__init__``.
"""
