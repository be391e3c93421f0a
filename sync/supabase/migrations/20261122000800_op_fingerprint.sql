-- LocalStore cloud schema, part 9: an op id reused for another change is never taken for a replay.
--
-- push_changes is idempotent by (owner, device, op_id): a stored answer is returned verbatim so
-- that a push whose response was lost can be resent. That assumed a device never uses an op id
-- twice. It does when its home goes back in time or is duplicated: a home restored from a backup
-- (its op counter rolls back) or copied to a second machine or folder and used beside the
-- original (both draw the same op ids under the same device id). The new change then got the
-- old change's stored answer: `applied` with the old rev and seq, so the client recorded its
-- edit as on the server while the server never saw it (silently lost), or an answer for another
-- id, which the client refused as a protocol error on every cycle (sync stuck).
--
-- Now every record keeps a fingerprint of the change it answered (id, base_rev, path,
-- content_hash, deleted: what a resent change repeats exactly). A stored op id whose change has
-- another fingerprint is answered
--   {"op_id", "id", "status": "rejected", "code": "op_id_reused", "message", "max_op_id"}
-- where max_op_id is the highest op id the server holds for this device; nothing is applied
-- and the stored record is left as it was. The client pushes the change again under an op id
-- above max_op_id. A change that repeats an op id of an earlier change of the same batch with
-- another fingerprint is answered the same way. Records written before this migration have no
-- fingerprint and are replayed as before. An older client sees a rejection it does not know and
-- parks the change in its quarantine (shown, retried on the next edit): visible, never lost.
--
-- Safe to run again (IF NOT EXISTS, CREATE OR REPLACE, a guarded constraint).

alter table public.applied_ops add column if not exists fingerprint text;

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_constraint k
    where k.conrelid = 'public.applied_ops'::regclass and k.conname = 'applied_ops_fingerprint_length'
  ) then
    -- The backstop for direct writes (users may insert their own records): an md5 in hex.
    alter table public.applied_ops add constraint applied_ops_fingerprint_length
      check (fingerprint is null or char_length(fingerprint) = 32);
  end if;
end
$$;

-- What makes a resent change the same change. The raw JSON values: a client resends exactly
-- what it sent (the same id spelling, the same path), and anything else is another change.
create or replace function sync_internal.change_fingerprint(ch jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
  select md5(jsonb_build_array(
    ch -> 'id', ch -> 'base_rev', ch -> 'path', ch -> 'content_hash', ch -> 'deleted')::text)
$$;

-- After mark_replays: a 'stored' answer whose change has another fingerprint, or a 'repeat' of
-- an earlier change of the batch with another fingerprint, becomes the op_id_reused rejection
-- (action 'stored', so it is neither decided nor recorded, and first_ord its own, so it is
-- answered on its own). One primary-key probe per replayed change, none for the others.
create or replace function sync_internal.mark_reused(
  me uuid, dev text, changes jsonb, items sync_internal.push_item[]
)
returns sync_internal.push_item[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(row(
      i.ord, i.op,
      case when r.reused then i.ord else i.first_ord end,
      i.rid, i.pkey, i.base_rev, i.deleted,
      case when r.reused then 'stored' else i.action end,
      case when r.reused then
        sync_internal.rejected(
          i.op, coalesce(i.rid::text, changes -> (i.ord - 1) ->> 'id', ''), 'op_id_reused',
          format(
            'op id %s of device %s was used for another change (a home restored from a '
            'backup, or copied); push it again above op id %s', i.op, dev, r.high))
        || jsonb_build_object('max_op_id', r.high)
      else i.result end
    )::sync_internal.push_item order by i.ord), '{}')
  from unnest(items) i
  cross join lateral (
    select x.reused,
      case when x.reused then greatest(
        (select max(a.op_id) from public.applied_ops a where a.owner = me and a.device = dev),
        (select max(j.op) from unnest(items) j)) end as high
    from (
      select case
        when i.action = 'stored' then coalesce((
          select a.fingerprint <> sync_internal.change_fingerprint(changes -> (i.ord - 1))
          from public.applied_ops a
          where a.owner = me and a.device = dev and a.op_id = i.op), false)
        when i.action = 'repeat' then
          sync_internal.change_fingerprint(changes -> (i.ord - 1))
            <> sync_internal.change_fingerprint(changes -> (i.first_ord - 1))
        else false
      end as reused
    ) x
  ) r
$$;

-- As part 6's push_changes, plus mark_reused and the fingerprint in every record.
create or replace function public.push_changes(changes jsonb, device text)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  items sync_internal.push_item[];
begin
  if jsonb_typeof(changes) is distinct from 'array' then
    raise exception 'changes must be a JSON array' using errcode = '22023';
  end if;
  if jsonb_array_length(changes) > 500 then
    raise exception 'too many changes' using errcode = '22023',
      detail = format('%s changes; at most 500 per call', jsonb_array_length(changes)),
      hint = 'push in batches of at most server_info().max_batch';
  end if;
  if device is null or device = '' or char_length(device) > 128 then
    raise exception 'device must be a non-empty string of at most 128 characters'
      using errcode = '22023';
  end if;
  -- Before anything is read or any seq drawn: one pusher per owner at a time (pull safety).
  perform sync_internal.lock_owner(me);
  items := sync_internal.parse_changes(changes);
  items := sync_internal.mark_replays(me, push_changes.device, items);
  items := sync_internal.mark_reused(me, push_changes.device, changes, items);
  items := sync_internal.decide_batch(me, items);
  items := sync_internal.write_batch(me, push_changes.device, changes, items);
  -- Every change has its answer now (a repeat copies its first's below); a gap would be a bug
  -- here, and failing the call is better than answering null.
  if exists (
    select 1 from unnest(items) i where i.result is null and i.action is distinct from 'repeat'
  ) then
    raise exception 'push_changes left a change unanswered' using errcode = 'XX000';
  end if;
  -- Every answer is recorded (conflicts and rejections too), once per op_id, with what it
  -- answered: a later change under the same op id is told apart by it (mark_reused).
  insert into public.applied_ops (owner, device, op_id, result, fingerprint)
  select me, push_changes.device, i.op, i.result,
    sync_internal.change_fingerprint(changes -> (i.ord - 1))
  from unnest(items) i
  where i.op is not null and i.action is distinct from 'stored'
    and i.action is distinct from 'repeat';
  return (
    select coalesce(jsonb_agg(f.result order by i.ord), '[]'::jsonb)
    from unnest(items) i
    join unnest(items) f on f.ord = i.first_ord
  );
end
$$;

-- New functions are executable by PUBLIC (and, on Supabase, by anon through default
-- privileges): only signed-in users and service_role may call them, as the other helpers.
revoke all on function sync_internal.change_fingerprint(jsonb) from public, anon;
grant execute on function sync_internal.change_fingerprint(jsonb) to authenticated, service_role;
revoke all on function sync_internal.mark_reused(uuid, text, jsonb, sync_internal.push_item[])
  from public, anon;
grant execute on function sync_internal.mark_reused(uuid, text, jsonb, sync_internal.push_item[])
  to authenticated, service_role;
