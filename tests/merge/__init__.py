"""Tests of the merge ladder (sync/merge.py)."""
