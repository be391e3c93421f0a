-- LocalStore cloud schema, part 13: fetch_rows takes at most 1000 ids.
--
-- fetch_rows took an id list of any length: a signed-in user could send a million ids and have
-- the server look each one up and build their rows into one jsonb (up to its 256 MiB limit), as
-- often as they liked. match_revisions has refused more than 1000 probes since it was made; the
-- client asks for 200 ids at a time (FETCH_CHUNK), and both remotes now refuse more than 1000
-- before sending (MAX_FETCH_IDS in sync/remote.py).
--
-- Only fetch_rows changes (CREATE OR REPLACE, same signature, so grants stay). No client sends
-- more, so the schema version clients check stays 20261122000900. Safe to run again.

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
  if cardinality(ids) > 1000 then
    raise exception 'too many ids: % > 1000', cardinality(ids)
      using errcode = '22023', hint = 'ask for at most 1000 ids per call';
  end if;
  return (
    select coalesce(jsonb_agg(sync_internal.row_json(b) order by b.id), '[]'::jsonb)
    from public.blueprints b
    where b.owner = me and b.id = any (coalesce(ids, '{}'::uuid[]))
  );
end
$$;
