"""The Supabase-compatible gateway of the local stack: PostgREST, GoTrue and Realtime subsets.

Public surface: :class:`Gateway` (asyncio), :class:`GatewayThread` (a gateway on a background loop),
:class:`GatewayConfig` and :class:`ProjectKeys`. See docs/localcloud.md.
"""

from sync.localcloud.gateway.keys import ProjectKeys
from sync.localcloud.gateway.server import Gateway, GatewayConfig, GatewayThread

__all__ = ["Gateway", "GatewayConfig", "GatewayThread", "ProjectKeys"]
