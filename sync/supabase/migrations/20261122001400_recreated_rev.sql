-- LocalStore cloud schema, part 15: a row created again under a purged id never reuses a rev.
--
-- push_changes takes a change as a fast-forward when its base_rev equals the row's current rev.
-- Revs started at 1 on every create, so an id whose tombstone purge_tombstones removed, and
-- which its owner then created again, went through the same revs a second time. A device still
-- holding the purged row at rev N (it had not pulled since the purge, or is a client without the
-- horizon check of the sync engine's push) pushed an edit with base_rev N; once the new row had
-- reached rev N, that edit applied over it: the other device's write was gone from the row
-- without a conflict (tests/cloud_sql/test_recreated_ids.py).
--
-- A create now starts at its owner's horizon + 1 (the horizon is the highest seq of any removed
-- row of the owner, raised by the blueprints_horizon trigger on every delete). Every row has
-- rev <= seq (rev 1 with seq >= 1, then rev + 1 with a seq above the last), so every rev a
-- removed row ever had is <= the horizon, and every rev of a row created after the removal is
-- above it: a base_rev from the old row is a rev_mismatch (current = the new row) whatever the
-- new row's history, an answer every client already merges or keeps as a conflict copy. An
-- owner who never purged has horizon 0 and their creates still start at 1. The guard is the
-- server's, so it holds for every client, old and third-party ones included; clients send
-- nothing new, and compare revs for equality only, so the schema version they check stays
-- 20261122000900.
--
-- Rejected alternatives: a base content hash in the change (old clients do not send one, and
-- they are the ones the client-side check does not cover); keeping a record of every purged id
-- and its last rev (the purge exists to let those rows go); matching base_rev against
-- blueprint_revisions (a purge removes the row's history with it, and purge_revisions thins it).
--
-- The horizon is read after the owner lock: purge_tombstones holds that lock until its commit,
-- so a create waiting on it sees the horizon the purge raised. (A direct DELETE through the table
-- endpoint takes no owner lock, but push_changes reads the row it creates FOR UPDATE first and
-- so waits for such a delete's commit too; only a direct INSERT racing a direct DELETE of the
-- same id could read the horizon before it rose, and direct writes skip the compare-and-swap
-- anyway.) Rows created again before this file keep their revs: the server cannot tell them from
-- new ids, so a stale device of such a row is covered only by the client's horizon check.
--
-- Correction to 20261122001300_fetch_page_bytes.sql (its SQL is deployed, so the file stays as
-- it is): its comment says fetch_rows_page's first loop reads the sizes "as pull_changes reads
-- them ... and only up to the cut". It does not stop there: its query (owner = me and id =
-- any(ids), order by id) is planned on PostgreSQL 15 as a scan of the (owner, id) index under a
-- Sort, and a Sort computes its input for every row before it returns the first, so the sizes of
-- all the asked rows are computed (each meta detoasted and printed as text) before the loop sees
-- one; the same holds for fetch_rows' loop. Only the answer itself is built up to the cut. The
-- answers are as documented; the cost of the sizing is not bounded by the budget.
-- docs/sync-protocol.md says so.
--
-- Safe to run again (CREATE OR REPLACE keeps the trigger function's owner and grants).

create or replace function sync_internal.stamp_blueprint()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' then
    if new.id is distinct from old.id or new.owner is distinct from old.owner then
      raise exception 'a blueprint''s id and owner cannot change'
        using errcode = '42501';
    end if;
    new.rev := old.rev + 1;
    new.created_at := old.created_at;
  else
    new.created_at := now();
  end if;
  -- Lock first, then draw: within one owner, seq order is commit order. The same key as
  -- lock_owner, spelled out: this runs once per written row, and calling lock_owner (a SQL
  -- function with its own search_path) here cost more than the rest of the trigger together.
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('localstore.blueprints/' || new.owner::text, 0)
  );
  if tg_op = 'INSERT' then
    -- Above every rev a removed row of this owner had (see the header): a stale base_rev of a
    -- purged id is a rev_mismatch, never a fast-forward onto the row created again. Read after
    -- the lock, so a purge that held it is committed and its horizon visible.
    new.rev := coalesce(
      (select h.horizon from public.sync_horizon h where h.owner = new.owner), 0
    ) + 1;
  end if;
  new.seq := nextval('sync_internal.blueprint_seq');
  new.updated_at := now();
  if new.deleted then
    new.content := '';
  end if;
  return new;
end
$$;

revoke all on function sync_internal.stamp_blueprint() from public;
