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

create or replace function sync_internal.is_bigint(v jsonb)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select v is not null
    and jsonb_typeof(v) = 'number'
    and v::text !~ '[.eE]'
    and v::numeric between -9223372036854775808 and 9223372036854775807
$$;

-- What is missing or ill-typed in a change, or null (the reason of an invalid_change).
create or replace function sync_internal.change_problem(ch jsonb)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  bad text;
begin
  if jsonb_typeof(ch) is distinct from 'object' then
    return 'a change must be a JSON object';
  end if;
  if not sync_internal.is_bigint(ch -> 'op_id') then
    return 'op_id must be an integer';
  end if;
  select format('%s must be a %s', f.name, f.want) into bad
  from (values (1, 'id', 'string'), (2, 'path', 'string'), (3, 'content', 'string'),
               (4, 'meta', 'object'), (5, 'content_hash', 'string'), (6, 'deleted', 'boolean')
       ) f(pos, name, want)
  where jsonb_typeof(ch -> f.name) is distinct from f.want
  order by f.pos
  limit 1;
  if bad is not null then
    return bad;
  end if;
  if not ch ? 'base_rev' then
    return 'base_rev is missing (null means create)';
  end if;
  if jsonb_typeof(ch -> 'base_rev') <> 'null' and not sync_internal.is_bigint(ch -> 'base_rev') then
    return 'base_rev must be an integer or null';
  end if;
  return null;
end
$$;

-- Why a path is not a valid blueprint path, or null. Paths are relative, '/'-separated.
create or replace function sync_internal.path_problem(p text)
returns text
language sql
immutable
set search_path = ''
as $$
  select case
    when p is null or p = '' then 'path is empty'
    when char_length(p) > 1024 then 'path is longer than 1024 characters'
    when left(p, 1) = '/' then 'path is absolute'
    when strpos(p, E'\\') > 0 then 'path contains a backslash'
    when '..' = any (string_to_array(p, '/')) then 'path contains ''..'''
    else null
  end
$$;

-- Whether an id is taken by another owner. SECURITY DEFINER because RLS hides other owners'
-- rows from the caller; it answers only yes/no, which is exactly what not_owner discloses.
create or replace function sync_internal.owned_by_other(row_id uuid, me uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.blueprints where id = row_id and owner <> me)
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

-- Decide one change: rejection, compare-and-swap conflict, or write. The caller holds the owner
-- lock and handles idempotency. Checks run in the documented order.
create or replace function sync_internal.decide_change(me uuid, device text, ch jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  op bigint := (ch ->> 'op_id')::bigint;
  raw_id text := ch ->> 'id';
  rid uuid;
  new_path text := ch ->> 'path';
  new_deleted boolean := (ch ->> 'deleted')::boolean;
  base_rev bigint := (ch ->> 'base_rev')::bigint;
  problem text;
  cur public.blueprints;
  other public.blueprints;
  written public.blueprints;
begin
  if raw_id !~* '^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$' then
    return sync_internal.rejected(op, raw_id, 'invalid_id', format('id %L is not a uuid', raw_id));
  end if;
  rid := raw_id::uuid;
  problem := sync_internal.path_problem(new_path);
  if problem is not null then
    return sync_internal.rejected(op, rid::text, 'invalid_path', problem);
  end if;
  if octet_length(ch ->> 'content') > 10485760 then
    return sync_internal.rejected(op, rid::text, 'too_large',
      format('content is %s bytes, over 10485760', octet_length(ch ->> 'content')));
  end if;

  select * into cur from public.blueprints b where b.id = rid and b.owner = me for update;
  if not found and sync_internal.owned_by_other(rid, me) then
    return sync_internal.rejected(op, rid::text, 'not_owner', 'id belongs to another user');
  end if;

  if base_rev is null and cur.id is not null then
    return sync_internal.conflict(op, rid, 'exists', cur);
  elsif base_rev is not null and cur.id is null then
    return sync_internal.conflict(op, rid, 'missing', null);
  elsif cur.id is not null and base_rev <> cur.rev then
    return sync_internal.conflict(op, rid, 'rev_mismatch', cur);
  end if;
  -- A live row keeping its path (up to case) cannot collide: the unique index already holds.
  if not new_deleted
     and (cur.id is null or cur.deleted or cur.path_key <> lower(new_path)) then
    -- path_key (not lower(path)) so the unique index serves it under RLS. No LIMIT: the index
    -- allows one match, and a LIMIT invites a sequential scan hoping to stop early.
    select * into other from public.blueprints b
    where b.owner = me and b.path_key = lower(new_path) and not b.deleted and b.id <> rid;
    if found then
      return sync_internal.conflict(op, rid, 'path_taken', other);
    end if;
  end if;

  -- rev, seq, updated_at and the revision row come from the triggers.
  if cur.id is null then
    insert into public.blueprints
      (id, owner, path, content, meta, content_hash, deleted, device, rev, seq)
    values
      (rid, me, new_path, ch ->> 'content', ch -> 'meta', ch ->> 'content_hash', new_deleted,
       device, 0, 0)
    returning * into written;
  else
    update public.blueprints b
    set path = new_path, content = ch ->> 'content', meta = ch -> 'meta',
        content_hash = ch ->> 'content_hash', deleted = new_deleted, device = decide_change.device
    where b.id = rid
    returning * into written;
  end if;
  return jsonb_build_object(
    'op_id', op, 'id', rid, 'status', 'applied', 'rev', written.rev, 'seq', written.seq);
end
$$;

-- One change without idempotency: an invalid_change rejection or decide_change's answer.
create or replace function sync_internal.push_one(me uuid, device text, ch jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  problem text := sync_internal.change_problem(ch);
begin
  if problem is null then
    return sync_internal.decide_change(me, device, ch);
  end if;
  return sync_internal.rejected(
    case when sync_internal.is_bigint(ch -> 'op_id') then (ch ->> 'op_id')::bigint else 0 end,
    case when jsonb_typeof(ch -> 'id') = 'string' then ch ->> 'id' else '' end,
    'invalid_change', problem);
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

create or replace function public.push_changes(changes jsonb, device text)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  stored jsonb;
  op_ids bigint[];
  -- Results and new idempotency records are collected in arrays: appending to a PL/pgSQL array
  -- is amortised O(1), while jsonb || jsonb copies the whole value (quadratic for 500 results
  -- that may each carry a large conflicting row).
  results jsonb[] := '{}';
  fresh_ops bigint[] := '{}';
  fresh_results jsonb[] := '{}';
  ch jsonb;
  op bigint;
  pos integer;
  result jsonb;
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
  -- Idempotency: results already stored for these (owner, device, op_id), in one query. The op
  -- ids go into an array first: as an IN (subquery) the subquery can run once per stored row.
  select coalesce(array_agg((e.value ->> 'op_id')::bigint), '{}') into op_ids
  from jsonb_array_elements(changes) e
  where jsonb_typeof(e.value) = 'object' and sync_internal.is_bigint(e.value -> 'op_id');
  select coalesce(jsonb_object_agg(a.op_id::text, a.result), '{}'::jsonb) into stored
  from public.applied_ops a
  where a.owner = me and a.device = push_changes.device and a.op_id = any (op_ids);
  for ch in select e.value from jsonb_array_elements(changes) with ordinality e order by e.ordinality
  loop
    op := case when jsonb_typeof(ch) = 'object' and sync_internal.is_bigint(ch -> 'op_id')
               then (ch ->> 'op_id')::bigint end;
    pos := case when op is null then null else array_position(fresh_ops, op) end;
    if op is not null and stored ? op::text then
      result := stored -> op::text;
    elsif pos is not null then
      result := fresh_results[pos];  -- the same op_id earlier in this batch: a replay
    else
      result := sync_internal.push_one(me, device, ch);
      if op is not null then
        fresh_ops := fresh_ops || op;
        fresh_results := fresh_results || result;
      end if;
    end if;
    results := results || result;
  end loop;
  insert into public.applied_ops (owner, device, op_id, result)
  select me, push_changes.device, f.op, f.result
  from unnest(fresh_ops, fresh_results) as f(op, result);
  return to_jsonb(results);
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
