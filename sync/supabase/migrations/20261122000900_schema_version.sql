-- LocalStore cloud schema, part 10: a client can ask how new the schema is.
--
-- Clients rely on what the migrations do, and a project applies them only when an operator runs
-- `supabase db push`. A client newer than the project's schema kept working on the older
-- behaviour without noticing: against a project without part 9 (op fingerprints), a home restored
-- from a backup or copied to a second machine had its edits answered with another change's stored
-- reply and silently never applied.
--
-- localstore_schema_version() answers the version (the file's timestamp) of the newest migration
-- that changed what clients rely on. The client reads it once per session before its first push
-- and refuses to push to an older schema, with a hint to apply these migrations. A project that
-- predates this file has no such function (PostgREST answers PGRST202): the client refuses it too.
--
-- Convention for later files: a migration whose behaviour clients need replaces this function
-- (CREATE OR REPLACE keeps the grants below) to answer its own timestamp, so every such
-- migration is detectable; migrations clients do not depend on leave it alone.
--
-- Safe to run again (CREATE OR REPLACE, idempotent grants).

create or replace function public.localstore_schema_version()
returns bigint
language sql
immutable
security invoker
set search_path = ''
as $$
  select 20261122000900::bigint
$$;

-- New functions are executable by PUBLIC (and, on Supabase, by anon through default privileges):
-- only signed-in users and service_role may call it, as the other RPCs.
revoke all on function public.localstore_schema_version() from public, anon;
grant execute on function public.localstore_schema_version() to authenticated, service_role;
