-- LocalStore cloud schema, part 4: the internal helpers that take the caller's id check it.
--
-- The RPCs are SECURITY INVOKER, so they call the sync_internal helpers as the signed-in user,
-- who therefore holds EXECUTE on them (revoking it would break every push). PostgREST does not
-- expose sync_internal, but a direct SQL login as a user reaches it, and two helpers believed the
-- `me` / `owner_id` they were given:
--
-- * taken_ids(ids, me) is SECURITY DEFINER (it must see other users' ids to answer not_owner):
--   called with someone else's id it told the caller which ids that user owns.
-- * lock_owner(owner_id) took any user's owner lock (a way to stall their pushes). Note that
--   pg_advisory_xact_lock itself stays callable by every role, as on any Postgres: this closes
--   the helper, not the lock key.
--
-- Both now refuse (42501) an id that is not auth.uid(); lock_owner also serves a caller that
-- bypasses RLS without a user (service_role or postgres running purge_tombstones for everyone).
-- Same signatures (CREATE OR REPLACE), so grants and callers stay. Safe to run again.

create or replace function sync_internal.taken_ids(ids uuid[], me uuid)
returns uuid[]
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if me is null or me is distinct from auth.uid() then
    raise exception 'taken_ids answers for the signed-in user only' using errcode = '42501';
  end if;
  return (
    select coalesce(array_agg(b.id), '{}') from public.blueprints b
    where b.id = any (ids) and b.owner <> me
  );
end
$$;

create or replace function sync_internal.lock_owner(owner_id uuid)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  if owner_id is distinct from auth.uid() and not exists (
    select 1 from pg_catalog.pg_roles r
    where r.rolname = current_user and (r.rolsuper or r.rolbypassrls)
  ) then
    raise exception 'lock_owner takes the signed-in user''s lock only' using errcode = '42501';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('localstore.blueprints/' || owner_id::text, 0)
  );
end
$$;
