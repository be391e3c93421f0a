-- LocalStore cloud schema, part 7: is this local copy a revision the server had?
--
-- A device that holds a blueprint without a sync base (its index was rebuilt by
-- `localstore check --fix`, or it imported an old bundle before its first sync) cannot tell an
-- older, unedited copy from an edit: the merge without a base turned such an ancestor into a
-- conflict copy. The server's history can tell: if the copy's content hash is one of the row's
-- accepted revisions, the copy is that revision, and the client takes the newer server version.
--
-- match_revisions(probes) answers a whole pull page or push batch in one call. Each probe is
-- {"id", "content_hash", "path"}; the answer has, in probe order, one
-- {"id", "rev", "path", "content_hash"} per probe that matches a live (not deleted) revision of
-- that id with that hash: the newest one at the probe's path, else the newest one (so the
-- client can tell a rename the server made since from one it made itself). Other users' rows
-- match nothing (RLS on blueprint_revisions, and the owner filter). At most 1000 probes.
--
-- New function only; nothing else changes. Safe to run again.

create or replace function public.match_revisions(probes jsonb)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  me uuid := sync_internal.require_uid();
begin
  if probes is null or jsonb_typeof(probes) <> 'array' then
    raise exception 'probes must be a JSON array' using errcode = '22023';
  end if;
  if jsonb_array_length(probes) > 1000 then
    raise exception 'too many probes: % > 1000', jsonb_array_length(probes)
      using errcode = '22023';
  end if;
  return (
    select coalesce(jsonb_agg(jsonb_build_object(
             'id', m.id, 'rev', m.rev, 'path', m.path, 'content_hash', m.content_hash)
             order by p.ord), '[]'::jsonb)
    from jsonb_array_elements(probes) with ordinality as p(probe, ord)
    -- One primary-key range of (id, rev) per probe: a blueprint's history, newest first.
    cross join lateral (
      select r.id, r.rev, r.path, r.content_hash
      from public.blueprint_revisions r
      where r.id = (p.probe ->> 'id')::uuid
        and r.owner = me
        and r.content_hash = p.probe ->> 'content_hash'
        and not r.deleted
      order by (r.path = p.probe ->> 'path') desc nulls last, r.rev desc
      limit 1
    ) m
  );
end
$$;

-- New functions are executable by PUBLIC (and, on Supabase, by anon through default
-- privileges): only signed-in users and service_role may call it, as the other RPCs.
revoke all on function public.match_revisions(jsonb) from public, anon;
grant execute on function public.match_revisions(jsonb) to authenticated, service_role;
