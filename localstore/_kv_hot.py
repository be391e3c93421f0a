"""The app-data store's hot tier: an LRU of plaintext bounded by item count and bytes, with its own
time-to-live (``localstore.kv`` keeps it coherent with the index).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localstore.kv import KVItem

_ENTRY_OVERHEAD = 96  # rough per-entry bookkeeping bytes counted against hot_bytes


def _meta_cost(item: KVItem) -> int:
    """Rough bytes the tier holds for an item's metadata and tags (JSON text length)."""
    # Counted, or a small value with megabytes of metadata would pass for a small entry and the
    # tier could hold hot_items times that, far past hot_bytes. ({} is the common case: free.)
    cost = sum(len(tag) + 4 for tag in item.tags)
    if item.metadata:
        cost += len(json.dumps(item.metadata, ensure_ascii=False, separators=(",", ":")))
    return cost


@dataclass(slots=True)
class _HotEntry:
    item: KVItem  # value is None; the plaintext is decoded and metadata copied per hit
    plain: bytes
    cached_at: float
    cost: int


class _HotTier:
    """LRU of plaintext, bounded by item count and bytes, entries live at most ``ttl`` seconds."""

    def __init__(self, max_items: int, max_bytes: int, ttl: float) -> None:
        self.max_items = max(0, max_items)
        self.max_bytes = max(0, max_bytes)
        self.ttl = ttl
        self._data: OrderedDict[str, _HotEntry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        # ttl 0: every entry is stale at once. Never served, it was still kept (a decrypted secret
        # too) until evicted or close(): off, as with no room, so nothing is held in memory.
        return self.max_items > 0 and self.max_bytes > 0 and self.ttl > 0

    def get(self, key: str, now: float) -> _HotEntry | None:
        entry = self._data.get(key)
        if entry is not None:
            expired = entry.item.expires is not None and entry.item.expires <= now
            if expired or now - entry.cached_at >= self.ttl or now < entry.cached_at:
                self.discard(key)
                entry = None
            else:
                self._data.move_to_end(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, item: KVItem, plain: bytes, now: float) -> None:
        self.discard(key)
        cost = len(plain) + len(key) + _meta_cost(item) + _ENTRY_OVERHEAD
        if not self.enabled or cost > self.max_bytes:
            return
        self._data[key] = _HotEntry(item, plain, now, cost)
        self._bytes += cost
        while len(self._data) > self.max_items or self._bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self._bytes -= old.cost

    def discard(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old.cost

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def stats(self) -> dict[str, int]:
        return {
            "items": len(self._data),
            "bytes": self._bytes,
            "hits": self.hits,
            "misses": self.misses,
        }
