-- LocalStore cloud schema, part 2: the sync RPCs (protocol 1, docs/sync-protocol.md).
--
-- Every RPC is SECURITY INVOKER: it runs as the caller, so row-level security applies to
-- everything it reads and writes. Identity is auth.uid(); without one an RPC raises 42501.
-- Safe to run again (CREATE OR REPLACE; grants are idempotent).

-- -------------------------------------------------------------------------------------------
-- Internal helpers (schema sync_internal, not exposed by PostgREST).

-- The JSON shape of one server row, used in pulls, fetches and conflict results.
create or replace function sync_internal.row_json(b public.blueprints)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', b.id,
    'path', b.path,
    'content', b.content,
    'meta', b.meta,
    'content_hash', b.content_hash,
    'rev', b.rev,
    'seq', b.seq,
    'deleted', b.deleted,
    'device', b.device,
    'updated_at', b.updated_at
  )
$$;

-- Which of these ids belong to another owner. SECURITY DEFINER because RLS hides other owners'
-- rows from the caller; it answers only "taken", which is exactly what not_owner discloses.
create or replace function sync_internal.taken_ids(ids uuid[], me uuid)
returns uuid[]
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(array_agg(b.id), '{}') from public.blueprints b
  where b.id = any (ids) and b.owner <> me
$$;

create or replace function sync_internal.rejected(op_id bigint, id text, code text, message text)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'op_id', op_id, 'id', id, 'status', 'rejected', 'code', code, 'message', message)
$$;

create or replace function sync_internal.conflict(
  op_id bigint, id uuid, reason text, cur_row public.blueprints
)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'op_id', op_id, 'id', id, 'status', 'conflict', 'reason', reason,
    'current', case when cur_row.id is null then null else sync_internal.row_json(cur_row) end)
$$;

-- One change of a batch on its way through push_changes. push_changes works on the whole batch
-- at once (a handful of set-based statements, not a loop of statements per change), and this
-- composite type carries the batch between those statements as one array. CREATE TYPE has no
-- IF NOT EXISTS, hence the guard.
do $$
begin
  if to_regtype('sync_internal.push_item') is null then
    create type sync_internal.push_item as (
      ord integer,        -- position in the batch, from 1
      op bigint,          -- op_id; null when unusable (the answer is then not recorded)
      first_ord integer,  -- ord of the batch's first change with this op_id
      rid uuid,           -- the id, once the change passed validation
      pkey text,          -- lower(path)
      base_rev bigint,
      deleted boolean,
      action text,        -- stored | repeat | insert | update | serial, or null
      result jsonb        -- the answer, once known
    );
  end if;
end
$$;

-- The batch as push_items, with checks 2-5 (docs/sync-protocol.md) answered: invalid_change,
-- invalid_id, invalid_path, too_large. One pass with the checks written out: the first version
-- called five helper functions per change, and function calls dominated its cost.
create or replace function sync_internal.parse_changes(changes jsonb)
returns sync_internal.push_item[]
language sql
stable  -- format() is
set search_path = ''
as $$
  select coalesce(array_agg(row(
      p.ord, p.op, p.first_ord,
      case when p.code is null then p.raw_id::uuid end,
      lower(p.path), p.base_rev, p.deleted, null,
      case p.code
        when 'invalid_change' then sync_internal.rejected(
          coalesce(p.op, 0),
          case when jsonb_typeof(p.ch -> 'id') = 'string' then p.raw_id else '' end,
          p.code, p.problem)
        when 'invalid_id' then sync_internal.rejected(
          p.op, p.raw_id, p.code, format('id %L is not a uuid', p.raw_id))
        when 'invalid_path' then sync_internal.rejected(
          p.op, p.raw_id::uuid::text, p.code, p.path_problem)
        when 'too_large' then sync_internal.rejected(
          p.op, p.raw_id::uuid::text, p.code,
          format('content is %s bytes, over 10485760', octet_length(p.ch ->> 'content')))
      end
    )::sync_internal.push_item order by p.ord), '{}')
  from (
    select v.*,
      case when v.op is null then v.ord else min(v.ord) over (partition by v.op) end as first_ord
    from (
      select e.ord::integer as ord, e.ch, a.op, a.base_rev, a.raw_id, a.path, a.deleted,
        b.problem, b.path_problem,
        case
          when b.problem is not null then 'invalid_change'
          -- uuid_in's spellings with hyphens where they usually go, braces only as a pair.
          when a.raw_id !~* ('^(\{' || r.uuid_re || '\}|' || r.uuid_re || ')$') then 'invalid_id'
          when b.path_problem is not null then 'invalid_path'
          when octet_length(e.ch ->> 'content') > 10485760 then 'too_large'
        end as code
      from jsonb_array_elements(changes) with ordinality as e(ch, ord)
      cross join (
        select '[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}'::text as uuid_re
      ) r
      cross join lateral (
        select
          -- An integer that fits a bigint: '1.0' and 1e40 are not op ids. Nested CASEs, because
          -- only CASE promises that the casts run after the type test.
          case when jsonb_typeof(e.ch -> 'op_id') = 'number' then
            case when (e.ch -> 'op_id')::numeric between -9223372036854775808
                                                     and 9223372036854775807
                      and scale((e.ch -> 'op_id')::numeric) = 0
                 then (e.ch -> 'op_id')::numeric::bigint end
          end as op,
          case when jsonb_typeof(e.ch -> 'base_rev') = 'number' then
            case when (e.ch -> 'base_rev')::numeric between -9223372036854775808
                                                       and 9223372036854775807
                      and scale((e.ch -> 'base_rev')::numeric) = 0
                 then (e.ch -> 'base_rev')::numeric::bigint end
          end as base_rev,
          e.ch ->> 'id' as raw_id,
          e.ch ->> 'path' as path,
          case when jsonb_typeof(e.ch -> 'deleted') = 'boolean'
               then (e.ch -> 'deleted')::boolean end as deleted
        -- A fence: without it the planner inlines op and base_rev into every later use, and
        -- the casts run five times per change.
        offset 0
      ) a
      cross join lateral (
        select
          case
            when jsonb_typeof(e.ch) is distinct from 'object' then 'a change must be a JSON object'
            when a.op is null then 'op_id must be an integer'
            when jsonb_typeof(e.ch -> 'id') is distinct from 'string' then 'id must be a string'
            when jsonb_typeof(e.ch -> 'path') is distinct from 'string'
              then 'path must be a string'
            when jsonb_typeof(e.ch -> 'content') is distinct from 'string'
              then 'content must be a string'
            when jsonb_typeof(e.ch -> 'meta') is distinct from 'object'
              then 'meta must be an object'
            when jsonb_typeof(e.ch -> 'content_hash') is distinct from 'string'
              then 'content_hash must be a string'
            when jsonb_typeof(e.ch -> 'deleted') is distinct from 'boolean'
              then 'deleted must be a boolean'
            when not e.ch ? 'base_rev' then 'base_rev is missing (null means create)'
            when jsonb_typeof(e.ch -> 'base_rev') <> 'null' and a.base_rev is null
              then 'base_rev must be an integer or null'
          end as problem,
          -- Paths are relative and '/'-separated.
          case
            when a.path = '' then 'path is empty'
            when char_length(a.path) > 1024 then 'path is longer than 1024 characters'
            when left(a.path, 1) = '/' then 'path is absolute'
            when strpos(a.path, E'\\') > 0 then 'path contains a backslash'
            when '..' = any (string_to_array(a.path, '/')) then 'path contains ''..'''
          end as path_problem
      ) b
    ) v
  ) p
$$;

-- Answers a replay (check 1): a result stored for (owner, device, op_id) is returned verbatim
-- (action 'stored'); a change whose op_id came earlier in the batch gets that one's answer
-- (action 'repeat', filled in at the end).
create or replace function sync_internal.mark_replays(
  me uuid, dev text, items sync_internal.push_item[]
)
returns sync_internal.push_item[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(row(
      i.ord, i.op, i.first_ord, i.rid, i.pkey, i.base_rev, i.deleted,
      case when i.stored is not null then 'stored' when i.ord <> i.first_ord then 'repeat' end,
      coalesce(i.stored, i.result)
    )::sync_internal.push_item order by i.ord), '{}')
  from (
    -- A scalar subquery per change: always one primary-key probe each. As a join, or as
    -- op_id = any (array), the planner could (and with fresh statistics did) read all of the
    -- device's records and filter them, which grows with every push.
    select i.*, (
      select a.result from public.applied_ops a
      where a.owner = me and a.device = dev and a.op_id = i.op
    ) as stored
    from unnest(items) i
  ) i
$$;

-- Decides every change still open: not_owner, the compare-and-swap (exists, missing,
-- rev_mismatch) and path_taken against the rows as they were before the batch, and the write
-- (action insert or update) otherwise. That is only right for a change that nothing else in the
-- batch interacts with. A change that shares its id, or a path key (its new path, or the path
-- its row holds now), with another change of the batch depends on the order; it gets action
-- 'serial' and is decided one at a time, in batch order, by decide_change.
create or replace function sync_internal.decide_batch(me uuid, items sync_internal.push_item[])
returns sync_internal.push_item[]
language plpgsql
volatile
set search_path = ''
as $$
declare
  ids uuid[] := array(
    select i.rid from unnest(items) i where i.action is null and i.result is null);
  taken uuid[] := sync_internal.taken_ids(ids, me);
begin
  return (
    -- The current rows and the live rows at the wanted paths are scalar subqueries: one index
    -- probe per change, whatever the size of the owner's table (see mark_replays). The current
    -- rows stay locked until commit, as an UPDATE would lock them: a concurrent direct delete of
    -- one (purging a tombstone) cannot slip between this decision and the write.
    with open_items as (
      select i.*,
        (select b from public.blueprints b where b.owner = me and b.id = i.rid for update) as cur
      from unnest(items) i
      where i.action is null and i.result is null
    ),
    keys as (
      select distinct o.ord, k.key from open_items o
      cross join lateral (
        values (o.pkey), (case when not (o.cur).deleted then (o.cur).path_key end)
      ) k(key)
      where k.key is not null
    ),
    serial as (
      select k.ord from (
        select k.ord, count(*) over (partition by k.key) as n from keys k
      ) k where k.n > 1
      union
      select o.ord from (
        select o.ord, count(*) over (partition by o.rid) as n from open_items o
      ) o where o.n > 1
    ),
    checked as (
      select o.*, s.ord is not null as is_serial,
        -- path_key, not lower(path): under RLS only it can use the unique index.
        case when not o.deleted then (
          select b from public.blueprints b
          where b.owner = me and b.path_key = o.pkey and not b.deleted
        ) end as holder
      from open_items o
      left join serial s on s.ord = o.ord
    ),
    decided as (
      select c.ord, c.is_serial, (c.cur).id is null as is_new,
        case
          when c.is_serial then null
          when (c.cur).id is null and c.rid = any (taken) then
            sync_internal.rejected(c.op, c.rid::text, 'not_owner', 'id belongs to another user')
          when c.base_rev is null and (c.cur).id is not null then
            sync_internal.conflict(c.op, c.rid, 'exists', c.cur)
          when c.base_rev is not null and (c.cur).id is null then
            sync_internal.conflict(c.op, c.rid, 'missing', null)
          when (c.cur).id is not null and c.base_rev <> (c.cur).rev then
            sync_internal.conflict(c.op, c.rid, 'rev_mismatch', c.cur)
          when (c.holder).id <> c.rid then
            sync_internal.conflict(c.op, c.rid, 'path_taken', c.holder)
        end as result
      from checked c
    )
    select coalesce(array_agg(row(
        i.ord, i.op, i.first_ord, i.rid, i.pkey, i.base_rev, i.deleted,
        case
          when d.ord is null then i.action
          when d.is_serial then 'serial'
          when d.result is null and d.is_new then 'insert'
          when d.result is null then 'update'
        end,
        coalesce(i.result, d.result)
      )::sync_internal.push_item order by i.ord), '{}')
    from unnest(items) i
    left join decided d on d.ord = i.ord
  );
end
$$;

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
    returning * into written;
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

create or replace function sync_internal.require_uid()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  me uuid := auth.uid();
begin
  if me is null then
    raise exception 'not signed in' using errcode = '42501',
      hint = 'call the sync RPCs with a user''s access token';
  end if;
  return me;
end
$$;

-- -------------------------------------------------------------------------------------------
-- RPCs (schema public)

-- Set-based: about ten statements per batch whatever its size (parse, replays, lock, decide,
-- one INSERT, one UPDATE, the idempotency records, the answer), instead of three or four per
-- change. See docs/sync-protocol.md, "How push_changes runs".
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
  if device is null or device = '' then
    raise exception 'device must be a non-empty string' using errcode = '22023';
  end if;
  -- Before anything is read or any seq drawn: one pusher per owner at a time (pull safety).
  perform sync_internal.lock_owner(me);
  items := sync_internal.parse_changes(changes);
  items := sync_internal.mark_replays(me, push_changes.device, items);
  items := sync_internal.decide_batch(me, items);
  items := sync_internal.write_batch(me, push_changes.device, changes, items);
  -- Every change has its answer now (a repeat copies its first's below); a gap would be a bug
  -- here, and failing the call is better than answering null.
  if exists (
    select 1 from unnest(items) i where i.result is null and i.action is distinct from 'repeat'
  ) then
    raise exception 'push_changes left a change unanswered' using errcode = 'XX000';
  end if;
  -- Every answer is recorded (conflicts and rejections too), once per op_id.
  insert into public.applied_ops (owner, device, op_id, result)
  select me, push_changes.device, i.op, i.result
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

create or replace function public.pull_changes(since bigint, lim integer default 500)
returns jsonb
language plpgsql
stable  -- one snapshot for the whole call: rows, "more" and the horizon agree
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  n integer := greatest(1, least(coalesce(lim, 500), 1000));
  hz bigint;
  page jsonb;
  last_seq bigint;
  more boolean;
begin
  if since is null or since < 0 then
    raise exception 'since must be a non-negative integer' using errcode = '22023';
  end if;
  select coalesce(max(h.horizon), 0) into hz from public.sync_horizon h where h.owner = me;
  if since < hz then
    return jsonb_build_object('changes', '[]'::jsonb, 'next', since, 'more', false,
                              'horizon', hz, 'reset_required', true);
  end if;
  select coalesce(jsonb_agg(sync_internal.row_json(p) order by p.seq), '[]'::jsonb), max(p.seq)
  into page, last_seq
  from (
    select * from public.blueprints b where b.owner = me and b.seq > since order by b.seq limit n
  ) p;
  more := last_seq is not null
    and exists (select 1 from public.blueprints b where b.owner = me and b.seq > last_seq);
  return jsonb_build_object('changes', page, 'next', coalesce(last_seq, since), 'more', more,
                            'horizon', hz, 'reset_required', false);
end
$$;

create or replace function public.verify_rows(after uuid default null, lim integer default 1000)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  n integer := greatest(1, least(coalesce(lim, 1000), 1000));
  page jsonb;
  last_id uuid;
  more boolean;
begin
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', p.id, 'rev', p.rev, 'content_hash', p.content_hash, 'deleted', p.deleted,
           'seq', p.seq) order by p.id), '[]'::jsonb),
         (array_agg(p.id order by p.id desc))[1]
  into page, last_id
  from (
    select b.id, b.rev, b.content_hash, b.deleted, b.seq from public.blueprints b
    where b.owner = me and (after is null or b.id > after)
    order by b.id limit n
  ) p;
  more := last_id is not null
    and exists (select 1 from public.blueprints b where b.owner = me and b.id > last_id);
  return jsonb_build_object('rows', page, 'next', last_id, 'more', more);
end
$$;

create or replace function public.fetch_rows(ids uuid[])
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
begin
  return (
    select coalesce(jsonb_agg(sync_internal.row_json(b) order by b.id), '[]'::jsonb)
    from public.blueprints b
    where b.owner = me and b.id = any (coalesce(ids, '{}'::uuid[]))
  );
end
$$;

-- Delete tombstones last written more than older_than ago; the owner's horizon rises to the
-- highest purged seq (trigger blueprints_horizon). A signed-in user purges their own; a caller
-- that bypasses RLS without a user (service_role, a cron job as postgres) purges everyone's.
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
  -- Same lock as the pushers, in a fixed order: no pusher of these owners is mid-transaction.
  for o in
    select distinct b.owner from public.blueprints b
    where b.deleted and b.updated_at < cutoff and (me is null or b.owner = me)
    order by b.owner
  loop
    perform sync_internal.lock_owner(o);
  end loop;
  delete from public.blueprints b
  where b.deleted and b.updated_at < cutoff and (me is null or b.owner = me);
  get diagnostics purged = row_count;
  return purged;
end
$$;

-- Forget idempotency records older than older_than (the replay window). A replay older than
-- that is still safe: its compare-and-swap no longer matches and it comes back as a conflict.
create or replace function public.purge_applied_ops(older_than interval)
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
    raise exception 'purge_applied_ops is for service_role' using errcode = '42501';
  end if;
  delete from public.applied_ops a where a.created_at < now() - older_than;
  get diagnostics purged = row_count;
  return purged;
end
$$;

create or replace function public.server_info()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform sync_internal.require_uid();
  return jsonb_build_object('protocol', 1, 'max_batch', 500, 'max_content_bytes', 10485760);
end
$$;

-- -------------------------------------------------------------------------------------------
-- Privileges: new functions are executable by PUBLIC (and, on Supabase, by anon through default
-- privileges). Only signed-in users and service_role may call them.

do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where (n.nspname = 'public' and p.proname in ('push_changes', 'pull_changes', 'verify_rows',
             'fetch_rows', 'purge_tombstones', 'purge_applied_ops', 'server_info'))
       or (n.nspname = 'sync_internal' and p.prorettype <> 'trigger'::regtype)
  loop
    execute format('revoke all on function %s from public, anon', f);
    execute format('grant execute on function %s to authenticated, service_role', f);
  end loop;
end
$$;
