"""Supabase-compatible local stack: a throw-away PostgreSQL cluster, the bootstrap that stands in
for what Supabase owns, the project's migrations, and (in ``gateway/``) the REST/auth/realtime
gateway.

Modules: ``cluster`` (PostgresCluster), ``schema`` (apply_bootstrap, apply_migrations).
"""
