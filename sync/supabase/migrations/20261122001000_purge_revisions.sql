-- LocalStore cloud schema, part 11: an operator can bound the revision history.
--
-- Every accepted write keeps a full copy of the blueprint in public.blueprint_revisions (content
-- up to 10 MiB, meta up to 8 MiB), and nothing removed them except the purge of the blueprint
-- itself: a project that syncs a handful of users' edits for a year holds every version of every
-- file, the largest table by far, while tombstones and idempotency records had purge functions.
--
-- purge_revisions(older_than) deletes revisions written more than older_than ago, except each
-- blueprint's current revision. For the operator only (service_role, or postgres from a pg_cron
-- job; both bypass RLS), like purge_applied_ops: a user's history is also what match_revisions
-- reads for their other devices. What pruning costs: a device that holds a copy without a sync
-- base (an index rebuilt by `localstore check --fix`, an old bundle imported before its first
-- sync) can no longer recognise a copy older than the window as a revision the server had, and
-- merges it without a base (a conflict copy at worst, never a lost edit). Sync itself (push,
-- pull, verify, conflicts) never reads the history.
--
-- No index on created_at: it would cost every push a write to serve a nightly job; the delete
-- reads the table once. New function only; clients do not rely on it, so the schema version
-- clients check stays 20261122000900. Safe to run again.

create or replace function public.purge_revisions(older_than interval)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  purged bigint;
begin
  if older_than is null or older_than < interval '0' then
    raise exception 'older_than must be a non-negative interval' using errcode = '22023';
  end if;
  if not exists (
    select 1 from pg_catalog.pg_roles r
    where r.rolname = current_user and (r.rolsuper or r.rolbypassrls)
  ) then
    raise exception 'purge_revisions is for service_role' using errcode = '42501';
  end if;
  delete from public.blueprint_revisions r
  where r.created_at < now() - older_than
    and not exists (
      select 1 from public.blueprints b where b.id = r.id and b.rev = r.rev
    );
  get diagnostics purged = row_count;
  return purged;
end
$$;

-- New functions are executable by PUBLIC (and, on Supabase, by anon and authenticated through
-- default privileges): only service_role may call this one.
revoke all on function public.purge_revisions(interval) from public, anon, authenticated;
grant execute on function public.purge_revisions(interval) to service_role;
