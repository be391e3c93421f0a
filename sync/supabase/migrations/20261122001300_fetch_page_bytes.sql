-- LocalStore cloud schema, part 14: a fetch is bounded by bytes, as a pull page is.
--
-- fetch_rows took up to 1000 ids and built all their rows into one jsonb, whatever their size:
-- 1000 blueprints of 10 MiB of content and 8 MiB of meta each were an answer of up to 18 GB.
-- Past jsonb's 256 MiB the call failed (54000), and well before that it ran into the 8 s statement
-- timeout (57014) and held the server's and the client's memory for the whole answer. The
-- library's client asked for 200 ids at a time and halved a call refused so, but the server
-- still built what any caller asked for, as often as they liked.
--
-- fetch_rows_page(ids) answers {"rows": [...], "rest": [...]}: the caller's rows for those ids in
-- id order, ending at the first row that would come after 16 MiB of content and meta (the same
-- budget and rule as pull_changes since 20261122001100: at least one row, so at most 16 MiB plus
-- one row), and in `rest` the asked ids after the last row sent when the budget cut the answer
-- short (empty when it did not). The client asks again for `rest` until it is empty. Unknown and
-- foreign ids are silently absent, as in fetch_rows; `rest` only repeats the caller's own ids.
--
-- fetch_rows keeps its signature and its answer (an array) for clients older than this file, but
-- refuses with 54000 instead of building more than that budget (the same cut: one row alone is
-- always answered). Those clients already ask for a fetch refused so in halves, so they still
-- get every row, in more calls.
--
-- Clients do not need this file: the library falls back to fetch_rows (which it halves) when
-- fetch_rows_page is missing (PGRST202), so the schema version clients check stays
-- 20261122000900. Safe to run again (CREATE OR REPLACE, idempotent grants).

create or replace function public.fetch_rows_page(ids uuid[])
returns jsonb
language plpgsql
stable  -- one snapshot for the whole call: the sizes, the rows and `rest` agree
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  wanted uuid[] := coalesce(ids, '{}'::uuid[]);
  taken bigint := 0;
  last_id uuid;
  cut boolean := false;
  page jsonb;
  rest jsonb := '[]'::jsonb;
  r record;
begin
  if cardinality(wanted) > 1000 then
    raise exception 'too many ids: % > 1000', cardinality(wanted)
      using errcode = '22023', hint = 'ask for at most 1000 ids per call';
  end if;
  -- Where the answer ends: rows in id order while the ones already taken hold less than the
  -- budget (the first row always goes). Only the sizes are read here, as pull_changes reads them
  -- (the content's from its TOAST header, the meta's as text), and only up to the cut.
  for r in
    select b.id,
      octet_length(b.content)::bigint + octet_length(b.meta::text)::bigint as bytes
    from public.blueprints b where b.owner = me and b.id = any (wanted)
    order by b.id
  loop
    if taken >= 16777216 then
      cut := true;
      exit;
    end if;
    last_id := r.id;
    taken := taken + r.bytes;
  end loop;
  select coalesce(jsonb_agg(sync_internal.row_json(b) order by b.id), '[]'::jsonb)
  into page
  from public.blueprints b
  where b.owner = me and b.id = any (wanted) and b.id <= last_id;
  if cut then
    select coalesce(jsonb_agg(u.id order by u.id), '[]'::jsonb)
    into rest
    from (select distinct w as id from unnest(wanted) w where w > last_id) u;
  end if;
  return jsonb_build_object('rows', page, 'rest', rest);
end
$$;

-- New functions are executable by PUBLIC (and, on Supabase, by anon through default privileges):
-- only signed-in users and service_role may call it, as the other RPCs.
revoke all on function public.fetch_rows_page(uuid[]) from public, anon;
grant execute on function public.fetch_rows_page(uuid[]) to authenticated, service_role;

create or replace function public.fetch_rows(ids uuid[])
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
  wanted uuid[] := coalesce(ids, '{}'::uuid[]);
  taken bigint := 0;
  r record;
begin
  if cardinality(wanted) > 1000 then
    raise exception 'too many ids: % > 1000', cardinality(wanted)
      using errcode = '22023', hint = 'ask for at most 1000 ids per call';
  end if;
  -- fetch_rows_page's cut: where it would end the answer short, this one refuses instead.
  for r in
    select octet_length(b.content)::bigint + octet_length(b.meta::text)::bigint as bytes
    from public.blueprints b where b.owner = me and b.id = any (wanted)
    order by b.id
  loop
    if taken >= 16777216 then
      raise exception 'the rows of these % ids are over 16777216 bytes', cardinality(wanted)
        using errcode = '54000', hint = 'ask for fewer ids per call, or call fetch_rows_page';
    end if;
    taken := taken + r.bytes;
  end loop;
  return (
    select coalesce(jsonb_agg(sync_internal.row_json(b) order by b.id), '[]'::jsonb)
    from public.blueprints b
    where b.owner = me and b.id = any (wanted)
  );
end
$$;
