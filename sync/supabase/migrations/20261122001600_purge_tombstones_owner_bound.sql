-- LocalStore cloud schema, part 17: a project-wide purge_tombstones holds at most 1000 owner locks.
--
-- A caller that bypasses RLS without a user (a pg_cron job as postgres, service_role) purged
-- every user's old tombstones in one transaction, and took the owner lock (a transaction-scoped
-- advisory lock) of every user it purged first, all held until its commit. Advisory locks live in
-- the server's shared lock table, which holds about max_locks_per_transaction (64) times
-- max_connections (plus background workers) entries for the whole server: a few thousand on a
-- small hosted project. Once more users than that had a tombstone past the window, the nightly
-- purge failed with 53200 "out of shared memory" ("You might need to increase
-- max_locks_per_transaction") on every run, forever, so no tombstone was purged again; and while
-- it filled the table, any other session of the project that needed a lock (a push, Auth, a
-- backup) could fail the same way. On the test cluster (max_connections 100) 17,000 owners
-- failed (tests/cloud_sql/test_maintenance.py).
--
-- A project-wide call now purges the tombstones of at most 1000 owners (the first ones by owner
-- id among those with a tombstone past the window) and returns how many rows it removed; the
-- caller calls again until it returns 0, committing in between so each call's locks are
-- released (docs/supabase-remote.md gives the pg_cron job: a DO block that loops and commits).
-- The owners it purges are locked as before, and the delete is limited to exactly those owners
-- (it used to delete by the window alone, so a tombstone that became old between the owner
-- list and the delete was removed without its owner's lock). A signed-in user's purge, which
-- only ever touches that user, is unchanged.
--
-- Only purge_tombstones changes (CREATE OR REPLACE, same signature, so grants stay). Clients
-- call it only for their own user, so the schema version they check stays 20261122000900. Safe
-- to run again.

create or replace function public.purge_tombstones(older_than interval)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  me uuid := auth.uid();
  cutoff timestamptz;
  owners uuid[];
  o uuid;
  purged bigint;
begin
  if older_than is null or older_than < interval '0' then
    raise exception 'older_than must be a non-negative interval' using errcode = '22023';
  end if;
  if me is null and not exists (
    select 1 from pg_catalog.pg_roles r
    where r.rolname = current_user and (r.rolsuper or r.rolbypassrls)
  ) then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  cutoff := now() - older_than;
  -- The owners this call purges: the caller alone, or up to 1000 of everyone (see the header:
  -- every owner lock stays held until the commit, and the lock table is shared and small).
  owners := array(
    select distinct b.owner from public.blueprints b
    where b.deleted and b.updated_at < cutoff and (me is null or b.owner = me)
    order by b.owner
    limit 1000
  );
  -- Same lock as the pushers, in a fixed order: no pusher of these owners is mid-transaction.
  foreach o in array owners loop
    perform sync_internal.lock_owner(o);
  end loop;
  delete from public.blueprints b
  where b.deleted and b.updated_at < cutoff and b.owner = any (owners);
  get diagnostics purged = row_count;
  return purged;
end
$$;
