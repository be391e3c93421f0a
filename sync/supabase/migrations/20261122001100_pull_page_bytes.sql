-- LocalStore cloud schema, part 12: a pull page is bounded by bytes, not only by rows.
--
-- pull_changes returned up to `lim` (at most 1000) rows in one jsonb, whatever their size, and a
-- row may hold 10 MiB of content and 8 MiB of meta. 27 blueprints of 10 MiB, each pushed alone
-- as push_changes allows, are over jsonb's 256 MiB: every pull across them failed with 54000
-- ("total size of jsonb array elements exceeds the maximum"), on every retry, so a new device of
-- that user never got past them (and a page well under that limit still ran into the 8 s
-- statement timeout Supabase gives `authenticated`, 57014, with the same effect). Any signed-in
-- user could also make the server build a quarter of a gigabyte per call.
--
-- A page now stops at the first row that would take the content and meta bytes of the rows
-- already on it past 16 MiB; it always carries at least one row, so a page is at most 16 MiB
-- plus one row (34 MiB). `next` and `more` work as before: the client pulls the rest from
-- `next`, as it does after a page that `lim` cut short. A first loop reads only the sizes, and
-- only up to the cut: the content's from its TOAST header (octet_length does not decompress) and
-- the meta's as text (pg_column_size would give its compressed size, and a meta of 8 MiB of
-- repeated keys compresses to almost nothing); then one query builds the page.
--
-- Only pull_changes changes (CREATE OR REPLACE, same signature, so grants stay). Clients do not
-- rely on it (a short page with `more` was always allowed), so the schema version clients check
-- stays 20261122000900. Safe to run again.

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
  taken bigint := 0;
  r record;
begin
  if since is null or since < 0 then
    raise exception 'since must be a non-negative integer' using errcode = '22023';
  end if;
  select coalesce(max(h.horizon), 0) into hz from public.sync_horizon h where h.owner = me;
  if since < hz then
    return jsonb_build_object('changes', '[]'::jsonb, 'next', since, 'more', false,
                              'horizon', hz, 'reset_required', true);
  end if;
  -- Where the page ends: rows in seq order while the ones already taken hold less than the
  -- budget (the first row always goes). Only the sizes are read here, and only up to the cut.
  for r in
    select b.seq,
      octet_length(b.content)::bigint + octet_length(b.meta::text)::bigint as bytes
    from public.blueprints b where b.owner = me and b.seq > since
    order by b.seq limit n
  loop
    exit when taken >= 16777216;
    last_seq := r.seq;
    taken := taken + r.bytes;
  end loop;
  -- The same snapshot as the loop (a STABLE function's statements share the caller's).
  select coalesce(jsonb_agg(sync_internal.row_json(b) order by b.seq), '[]'::jsonb)
  into page
  from public.blueprints b
  where b.owner = me and b.seq > since and b.seq <= last_seq;
  more := last_seq is not null
    and exists (select 1 from public.blueprints b where b.owner = me and b.seq > last_seq);
  return jsonb_build_object('changes', page, 'next', coalesce(last_seq, since), 'more', more,
                            'horizon', hz, 'reset_required', false);
end
$$;
