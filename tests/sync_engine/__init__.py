"""Tests of the sync engine (sync/engine.py) with MemoryRemote and real stores."""
