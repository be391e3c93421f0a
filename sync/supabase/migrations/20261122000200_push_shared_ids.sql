-- LocalStore cloud schema, part 3: a create that races another user's create of the same id is
-- one rejected change, not a failed batch.
--
-- Blueprint ids are one space for the whole project (blueprints.id is the primary key), and a
-- bundle import keeps ids, so two users can hold the same id. decide_batch / decide_change answer
-- not_owner from taken_ids, which cannot see another user's insert that has not committed yet:
-- the insert then waited for it and failed the whole push with 23505 blueprints_pkey (every other
-- change of the batch with it). The inserts now skip a taken id (ON CONFLICT (id) DO NOTHING,
-- which waits for the other transaction like the failing insert did) and a skipped create is
-- answered not_owner: the caller holds its own owner lock and found no row of its own with that
-- id, so the row in the way can only be another user's.
--
-- Only the two functions that insert change; replaces part 2's definitions (CREATE OR REPLACE,
-- same signatures, so the grants stay). Safe to run again.

-- Decides and writes one change the way a batch of one would be (the 'serial' changes of
-- decide_batch). The caller holds the owner lock; the change is valid and not a replay.
create or replace function sync_internal.decide_change(
  me uuid, dev text, it sync_internal.push_item, ch jsonb
)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  cur public.blueprints;
  other public.blueprints;
  written public.blueprints;
begin
  select * into cur from public.blueprints b where b.id = it.rid and b.owner = me for update;
  if not found and it.rid = any (sync_internal.taken_ids(array[it.rid], me)) then
    return sync_internal.rejected(it.op, it.rid::text, 'not_owner', 'id belongs to another user');
  end if;
  if it.base_rev is null and cur.id is not null then
    return sync_internal.conflict(it.op, it.rid, 'exists', cur);
  elsif it.base_rev is not null and cur.id is null then
    return sync_internal.conflict(it.op, it.rid, 'missing', null);
  elsif cur.id is not null and it.base_rev <> cur.rev then
    return sync_internal.conflict(it.op, it.rid, 'rev_mismatch', cur);
  end if;
  if not it.deleted then
    -- No LIMIT: the unique index allows one match, and a LIMIT invites a sequential scan.
    select * into other from public.blueprints b
    where b.owner = me and b.path_key = it.pkey and not b.deleted and b.id <> it.rid;
    if found then
      return sync_internal.conflict(it.op, it.rid, 'path_taken', other);
    end if;
  end if;
  if cur.id is null then
    insert into public.blueprints
      (id, owner, path, content, meta, content_hash, deleted, device, rev, seq)
    values
      (it.rid, me, ch ->> 'path', ch ->> 'content', ch -> 'meta', ch ->> 'content_hash',
       it.deleted, dev, 0, 0)
    -- Another user's create of this id committed after taken_ids looked (see the header).
    on conflict (id) do nothing
    returning * into written;
    if not found then
      return sync_internal.rejected(
        it.op, it.rid::text, 'not_owner', 'id belongs to another user');
    end if;
  else
    update public.blueprints b
    set path = ch ->> 'path', content = ch ->> 'content', meta = ch -> 'meta',
        content_hash = ch ->> 'content_hash', deleted = it.deleted, device = dev
    where b.id = it.rid
    returning * into written;
  end if;
  return jsonb_build_object(
    'op_id', it.op, 'id', it.rid, 'status', 'applied', 'rev', written.rev, 'seq', written.seq);
end
$$;

-- Writes the changes decide_batch cleared (one INSERT, one UPDATE), then the serial ones; fills
-- in their 'applied' answers (rev, seq and updated_at come from the trigger).
create or replace function sync_internal.write_batch(
  me uuid, dev text, changes jsonb, items sync_internal.push_item[]
)
returns sync_internal.push_item[]
language plpgsql
volatile
set search_path = ''
as $$
declare
  w_ids uuid[];
  w_revs bigint[];
  w_seqs bigint[];
  s_ords integer[] := '{}';
  s_results jsonb[] := '{}';
  upd_ids uuid[];
  it sync_internal.push_item;
begin
  -- In batch order, so that the seqs of a batch's creates follow it. The changes' fields come
  -- from the batch itself by position: the items do not carry them (copying 500 contents from
  -- array to array cost more than the checks).
  with w as (
    insert into public.blueprints as b
      (id, owner, path, content, meta, content_hash, deleted, device, rev, seq)
    select i.rid, me, c.ch ->> 'path', c.ch ->> 'content', c.ch -> 'meta',
           c.ch ->> 'content_hash', i.deleted, dev, 0, 0
    from unnest(items) i
    cross join lateral (select changes -> (i.ord - 1) as ch) c
    where i.action = 'insert'
    order by i.ord
    -- A row another user created since decide_batch looked: skipped here, not_owner below.
    on conflict (id) do nothing
    returning b.id, b.rev, b.seq
  )
  select array_agg(w.id), array_agg(w.rev), array_agg(w.seq) into w_ids, w_revs, w_seqs from w;
  upd_ids := array(select i.rid from unnest(items) i where i.action = 'update');
  with w as (
    update public.blueprints b
    set path = c.ch ->> 'path', content = c.ch ->> 'content', meta = c.ch -> 'meta',
        content_hash = c.ch ->> 'content_hash', deleted = c.deleted, device = dev
    from (
      select i.rid, i.deleted, changes -> (i.ord - 1) as ch
      from unnest(items) i where i.action = 'update'
    ) c
    -- The id list, besides the join: a primary-key probe per row whatever join the planner picks.
    where b.owner = me and b.id = any (upd_ids) and b.id = c.rid
    returning b.id, b.rev, b.seq
  )
  select coalesce(w_ids, '{}') || array_agg(w.id), coalesce(w_revs, '{}') || array_agg(w.rev),
         coalesce(w_seqs, '{}') || array_agg(w.seq)
  into w_ids, w_revs, w_seqs from w;
  for it in select * from unnest(items) i where i.action = 'serial' order by i.ord loop
    s_ords := s_ords || it.ord;
    s_results := s_results || sync_internal.decide_change(me, dev, it, changes -> (it.ord - 1));
  end loop;
  return (
    select coalesce(array_agg(row(
        i.ord, i.op, i.first_ord, i.rid, i.pkey, i.base_rev, i.deleted, i.action,
        case
          when w.id is not null then jsonb_build_object(
            'op_id', i.op, 'id', i.rid, 'status', 'applied', 'rev', w.rev, 'seq', w.seq)
          when i.action = 'insert' then sync_internal.rejected(
            i.op, i.rid::text, 'not_owner', 'id belongs to another user')
          else coalesce(i.result, s.result)
        end
      )::sync_internal.push_item order by i.ord), '{}')
    from unnest(items) i
    left join unnest(w_ids, w_revs, w_seqs) w(id, rev, seq)
      on w.id = i.rid and i.action in ('insert', 'update')
    left join unnest(s_ords, s_results) s(ord, result) on s.ord = i.ord
  );
end
$$;
