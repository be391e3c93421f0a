-- LocalStore cloud schema, part 18: blueprints and sync_horizon cannot be truncated.
--
-- Every removal of a blueprint row is supposed to raise its owner's horizon (the
-- blueprints_horizon trigger of part 1), so that a device whose pull cursor is older is told to
-- reconcile instead of pulling a delta that no longer shows the removal. TRUNCATE fires no DELETE
-- trigger: `truncate public.blueprints` (the dashboard's Table Editor offers it, and the service
-- role and postgres hold the privilege) removed every row and raised no horizon, so each device
-- kept every blueprint it had, pulled nothing, and was never told (its next edit of such a row
-- came back as a `missing` conflict). The history of the truncated rows stayed behind too.
-- Truncating sync_horizon lowered every horizon to nothing: a device with a cursor from before a
-- purge then pulled a delta without the purged tombstones, and the blueprints deleted on other
-- devices came back on it.
--
-- A BEFORE TRUNCATE trigger on each now refuses (42501) with what to run instead: a DELETE, which
-- raises the horizons and takes the history with it. TRUNCATE ... CASCADE from auth.users is
-- refused the same way; deleting users deletes their rows. applied_ops and blueprint_revisions
-- may still be truncated: losing them costs replays and revision matches, never a missed removal.
--
-- New objects only; clients rely on nothing new, so the schema version they check stays
-- 20261122000900. Safe to run again (CREATE OR REPLACE).

create or replace function sync_internal.refuse_truncate()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception 'truncating %.% is refused: it would hide removed blueprints from devices',
    tg_table_schema, tg_table_name
    using errcode = '42501',
      detail = 'TRUNCATE fires no DELETE trigger, so no owner''s horizon rises and devices keep '
        || 'every truncated blueprint without being told to reconcile.',
      hint = case tg_table_name
        when 'blueprints' then 'delete from public.blueprints (with a where clause for some '
          || 'owners); a delete raises their horizons and removes the rows'' history'
        else 'leave sync_horizon alone: each row is the highest seq its owner ever had removed; '
          || 'it goes away with its user'
      end;
end
$$;

revoke all on function sync_internal.refuse_truncate() from public;

create or replace trigger blueprints_refuse_truncate
  before truncate on public.blueprints
  for each statement execute function sync_internal.refuse_truncate();

create or replace trigger sync_horizon_refuse_truncate
  before truncate on public.sync_horizon
  for each statement execute function sync_internal.refuse_truncate();
