-- LocalStore cloud schema, part 6: the size and shape limits hold on every write path.
--
-- push_changes checked a change's content size (10 MiB) and path, but nothing bounded its meta,
-- its content_hash or the device name, and a user writing public.blueprints or
-- public.applied_ops directly through PostgREST (their grants allow it; RLS keeps it to their own
-- rows) skipped every check: a 500 MiB content, a path with '..', a gigabyte of meta.
--
-- * push_changes: a meta over 8 MiB (pg_column_size of the jsonb) is 'too_large', a content_hash
--   over 128 characters is 'invalid_change' (each for that change alone), a device name over 128
--   characters fails the call (22023). server_info announces the new limits. Why 8 MiB: every
--   meta a client holds must still go up, and a local meta file is at most 1 MiB of JSON text,
--   but jsonb is not smaller than text: it spends 4 bytes per key and element and 8 per number
--   (an array of one-digit numbers is 2 bytes of text and 12 of jsonb each: 6 MiB from 1 MiB).
--   At 1 MiB, as this file first had it, a meta file of 980 KB holding such an array (1.7 MB of
--   jsonb), pushed unchanged before, was refused for good.
-- * CHECK constraints on blueprints (content, path, meta, content_hash, device) and applied_ops
--   (result under 24 MiB: a conflict answer carries the current row, its 10 MiB of content and
--   up to 8 MiB of meta; device).
--   Added NOT VALID, so a project whose rows already break one still deploys; each is then
--   validated where the rows allow it, and a WARNING names any that could not be.
--
-- parse_changes, push_changes and server_info replace part 2's definitions (same signatures, so
-- grants stay). Safe to run again.

-- Checks 2-5 of docs/sync-protocol.md, now with the meta and content_hash limits.
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
          case when octet_length(p.ch ->> 'content') > 10485760
            then format('content is %s bytes, over 10485760', octet_length(p.ch ->> 'content'))
            else format('meta is %s bytes, over 8388608', pg_column_size(p.ch -> 'meta'))
          end)
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
          when octet_length(e.ch ->> 'content') > 10485760
            or pg_column_size(e.ch -> 'meta') > 8388608 then 'too_large'
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
            when char_length(e.ch ->> 'content_hash') > 128
              then 'content_hash is longer than 128 characters'
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

create or replace function public.server_info()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform sync_internal.require_uid();
  return jsonb_build_object('protocol', 1, 'max_batch', 500, 'max_content_bytes', 10485760,
                            'max_meta_bytes', 8388608, 'max_device_chars', 128);
end
$$;

-- -------------------------------------------------------------------------------------------
-- Table constraints: the backstop for writes that do not go through push_changes.

do $$
declare
  c record;
begin
  for c in
    select * from (values
      ('public.blueprints'::regclass, 'blueprints_content_size',
       'check (octet_length(content) <= 10485760)'),
      ('public.blueprints'::regclass, 'blueprints_path_valid',
       'check (path <> '''' and char_length(path) <= 1024 and left(path, 1) <> ''/'''
       || ' and strpos(path, E''\\'') = 0 and not (''..'' = any (string_to_array(path, ''/''))))'),
      ('public.blueprints'::regclass, 'blueprints_meta_size',
       'check (pg_column_size(meta) <= 8388608)'),
      ('public.blueprints'::regclass, 'blueprints_content_hash_length',
       'check (char_length(content_hash) <= 128)'),
      ('public.blueprints'::regclass, 'blueprints_device_length',
       'check (char_length(device) between 1 and 128)'),
      ('public.applied_ops'::regclass, 'applied_ops_result_size',
       'check (pg_column_size(result) <= 25165824)'),
      ('public.applied_ops'::regclass, 'applied_ops_device_length',
       'check (char_length(device) between 1 and 128)')
    ) as t(tbl, name, def)
  loop
    -- A project that ran this file's first version has the meta and result limits at 1 and
    -- 16 MiB (see the top): those two are replaced, then validated as the others.
    if exists (
      select 1 from pg_catalog.pg_constraint k
      where k.conrelid = c.tbl and k.conname = c.name
        and k.conname in ('blueprints_meta_size', 'applied_ops_result_size')
        and pg_catalog.pg_get_constraintdef(k.oid) ~ '\m(1048576|16777216)\M'
    ) then
      execute format('alter table %s drop constraint %I', c.tbl, c.name);
    end if;
    if not exists (
      select 1 from pg_catalog.pg_constraint k where k.conrelid = c.tbl and k.conname = c.name
    ) then
      execute format('alter table %s add constraint %I %s not valid', c.tbl, c.name, c.def);
    end if;
    begin
      execute format('alter table %s validate constraint %I', c.tbl, c.name);
    exception when check_violation then
      raise warning 'constraint % on % holds for new writes only', c.name, c.tbl
        using detail = 'Rows written before it break it.',
          hint = 'find them with: select id from ' || c.tbl::text || ' where not (' ||
            substr(c.def, 7) || '); then run this migration again';
    end;
  end loop;
end
$$;
