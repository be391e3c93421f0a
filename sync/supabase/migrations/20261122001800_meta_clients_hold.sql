-- LocalStore cloud schema, part 19: push_changes refuses a meta that clients cannot hold.
--
-- jsonb holds numbers and nesting that the client cannot: an integer of more than 4300 digits
-- (Python's int() refuses to convert it: sys.int_info.default_max_str_digits), a decimal past a
-- double's range (9...9.5 with 400 nines reads as infinity, which no meta file holds), and
-- nesting deeper than 64 levels (localstore.blueprint.MAX_META_DEPTH: the meta object is level 1).
-- push_changes stored such a meta and answered 'applied'; every other device then parked that
-- row as 'invalid_remote' (sync.remote.meta_problem) and the pushing device never heard of it.
--
-- Now such a change is answered, for that change alone,
--   {"op_id", "id", "status": "rejected", "code": "invalid_meta", "message"}
-- where the message says what is wrong and how to fix it; nothing is stored, so nothing reaches
-- another device. The client parks the change in its quarantine with that message. The check
-- comes after the other per-change checks (docs/sync-protocol.md), so a meta over 8 MiB is still
-- 'too_large' and is never walked.
--
-- The limits are the client's (sync/remote.py: MAX_META_DEPTH, MAX_META_INT_DIGITS; the double's
-- range is the IEEE one): sync_internal.meta_problem below is the server's copy, and
-- tests/cloud_sql/test_meta_clients_hold.py holds the two to each other at each boundary.
--
-- Why jsonpath and no loop of our own: `strict $.**{64}` and `strict $.**{1 to 64}` descend at
-- most 64 levels whatever the meta's depth (jsonpath's walk over the jsonb as stored, nothing
-- copied), so a meta nested thousands deep meets no recursion or stack limit. A loop over
-- jsonb_each / jsonb_array_elements gets every nested value as a copy, once per level above it.
--
-- parse_changes replaces part 6's definition (same signature, so grants stay). Clients rely on
-- nothing new (an older schema answers 'applied' as before), so the schema version they check
-- stays 20261122000900. Safe to run again (CREATE OR REPLACE).

-- Why no client could hold this meta (the invalid_meta message), or null. The texts are
-- sync.remote.invalid_meta's. A number is read by the client as an integer when its text has no
-- '.' (scale 0: jsonb never writes an exponent), else as a double: a double rounds to infinity
-- from 2^1024 - 2^970 (half a unit above the largest double) on. Both bounds are above the
-- largest double, so only numbers past it are looked at twice.
create or replace function sync_internal.meta_problem(meta jsonb)
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when jsonb_path_exists(meta, 'strict $.**{64} ? (@.type() == "object" || @.type() == "array")')
      then 'its meta is nested deeper than 64 levels; no other device could read it: flatten it '
        || 'to at most 64 levels of objects and arrays'
    -- Past a double's range a number has 309 digits before its point, and jsonb writes a value
    -- after '[', ', ' or ': ': a meta whose text has no such run there (nearly all) skips the
    -- walk over its numbers (370 ms on 8 MiB of them; the test ~40 ms). A string holding one
    -- only costs the walk. (A regex repeats at most 255 times.)
    when meta::text !~ '(\[|, |: )-?[0-9]{200}[0-9]{109}' then null
    else (
      select case when scale(x.n) = 0
        then 'its meta holds an integer of more than 4300 digits; no other device could read '
          || 'it: write that number as a string'
        else 'its meta holds a number out of a double''s range (it reads as infinity); no other '
          || 'device could read it: write that number as a string'
      end
      from jsonb_path_query(meta, 'strict $.**{1 to 64} ? (@.type() == "number"
        && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') q(v)
      cross join lateral (select v::numeric as n) x
      where abs(x.n) >= case when scale(x.n) = 0 then 1e4300
                             else 2::numeric ^ 1024 - 2::numeric ^ 970 end
      limit 1
    )
  end
$$;

revoke all on function sync_internal.meta_problem(jsonb) from public, anon;
grant execute on function sync_internal.meta_problem(jsonb) to authenticated, service_role;

-- Checks 2-6 of docs/sync-protocol.md: part 6's, then invalid_meta.
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
        when 'invalid_meta' then sync_internal.rejected(
          p.op, p.raw_id::uuid::text, p.code, p.meta_problem)
      end
    )::sync_internal.push_item order by p.ord), '{}')
  from (
    select v.*,
      case when v.op is null then v.ord else min(v.ord) over (partition by v.op) end as first_ord
    from (
      select e.ord::integer as ord, e.ch, a.op, a.base_rev, a.raw_id, a.path, a.deleted,
        b.problem, b.path_problem, m.meta_problem,
        case
          when b.problem is not null then 'invalid_change'
          -- uuid_in's spellings with hyphens where they usually go, braces only as a pair.
          when a.raw_id !~* ('^(\{' || r.uuid_re || '\}|' || r.uuid_re || ')$') then 'invalid_id'
          when b.path_problem is not null then 'invalid_path'
          when octet_length(e.ch ->> 'content') > 10485760
            or pg_column_size(e.ch -> 'meta') > 8388608 then 'too_large'
          when m.meta_problem is not null then 'invalid_meta'
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
      cross join lateral (
        -- Only a well-typed meta within the size limit is walked (the walk costs time in
        -- proportion to its size). A fence, so that it is walked once per change.
        select case
          when b.problem is null and pg_column_size(e.ch -> 'meta') <= 8388608
            then sync_internal.meta_problem(e.ch -> 'meta')
        end as meta_problem
        offset 0
      ) m
    ) v
  ) p
$$;
