-- LocalStore cloud schema, part 16: only public.blueprints may stream through Realtime.
--
-- Part 1 added public.blueprints to the supabase_realtime publication, and took a publication
-- created FOR ALL TABLES as already carrying it. Such a publication (or one holding the whole
-- schema, FOR TABLES IN SCHEMA public, or a dashboard toggle on one of these tables) also
-- streams applied_ops, blueprint_revisions and sync_horizon. Hosted Realtime cannot apply RLS
-- to a deleted row: it sends the primary key of every DELETE on a published table to every
-- subscriber whose role may SELECT the table, and `authenticated` may (push_changes,
-- pull_changes and match_revisions are SECURITY INVOKER and read these tables with the caller's
-- rights, so the grant cannot go). Any signed-in user of the project could then subscribe to
-- those tables and receive, from purge_applied_ops, every user's (owner uuid, device name,
-- op_id); from purge_revisions and purged tombstones, the (id, rev) of every removed revision;
-- from a deleted account, all of that plus its owner id in sync_horizon. No client needs a
-- change of these tables: clients only hear of blueprints.
--
-- So this file
-- * takes these three tables out of supabase_realtime where it lists them by name (they are
--   ours; nothing Supabase or another app relies on streams them);
-- * refuses to deploy (SQLSTATE 55000, nothing applied) while the publication still streams
--   their DELETEs some other way, FOR ALL TABLES or FOR TABLES IN SCHEMA public: neither can
--   leave a table out, and rebuilding a publication Supabase owns, which may carry the
--   project's other tables, is the operator's decision. The error says what to run (also in
--   docs/supabase-remote.md, "The Realtime publication"); run `db push` again afterwards.
-- A publication that does not publish deletes (publish = 'insert, update', ...) sends nothing
-- RLS cannot check, so it passes. No publication at all: nothing to do.
--
-- Clients send and expect nothing new: the schema version they check stays 20261122000900.
-- Safe to run again: every step checks the catalog first.

do $$
declare
  pub_oid oid;
  all_tables boolean;
  deletes boolean;
  ours text;
  streamed text;
begin
  select p.oid, p.puballtables, p.pubdelete into pub_oid, all_tables, deletes
  from pg_catalog.pg_publication p where p.pubname = 'supabase_realtime';
  if not found then
    return;
  end if;

  foreach ours in array array['applied_ops', 'blueprint_revisions', 'sync_horizon'] loop
    if exists (
      select 1 from pg_catalog.pg_publication_rel r
      where r.prpubid = pub_oid
        and r.prrelid = pg_catalog.to_regclass(pg_catalog.format('public.%I', ours))
    ) then
      execute pg_catalog.format('alter publication supabase_realtime drop table public.%I', ours);
      raise notice 'took public.% out of publication supabase_realtime: its deletes would reach '
        'every signed-in user', ours;
    end if;
  end loop;

  if not deletes then
    return;
  end if;
  select pg_catalog.string_agg(pg_catalog.format('%I.%I', t.schemaname, t.tablename), ', '
                               order by t.tablename)
    into streamed
  from pg_catalog.pg_publication_tables t
  where t.pubname = 'supabase_realtime' and t.schemaname = 'public'
    and t.tablename in ('applied_ops', 'blueprint_revisions', 'sync_horizon');
  if streamed is null then
    return;
  end if;

  if all_tables then
    raise exception using
      errcode = '55000',
      message = 'publication supabase_realtime is FOR ALL TABLES, so hosted Realtime would send '
        || 'the keys of every deleted row of ' || streamed || ' (user ids, device names) to any '
        || 'signed-in user. Recreate it with a table list, then db push again: begin; drop '
        || 'publication supabase_realtime; create publication supabase_realtime for table '
        || 'public.blueprints; commit; (add the other tables your project streams to that list)',
      detail = 'Realtime cannot apply row-level security to a DELETE; it sends the primary key '
        || 'to every subscriber whose role may SELECT the table, and authenticated may.',
      hint = 'docs/supabase-remote.md, "The Realtime publication", lists the options, and how '
        || 'to list what the publication streams now.';
  end if;
  raise exception using
    errcode = '55000',
    message = 'publication supabase_realtime streams the whole schema public, so hosted Realtime '
      || 'would send the keys of every deleted row of ' || streamed || ' (user ids, device '
      || 'names) to any signed-in user. List its tables instead, then db push again: begin; '
      || 'alter publication supabase_realtime drop tables in schema public; alter publication '
      || 'supabase_realtime add table public.blueprints; commit; (add the other tables your '
      || 'project streams to that list)',
    detail = 'Realtime cannot apply row-level security to a DELETE; it sends the primary key '
      || 'to every subscriber whose role may SELECT the table, and authenticated may.',
    hint = 'docs/supabase-remote.md, "The Realtime publication", lists the options, and how to '
      || 'list what the publication streams now.';
end
$$;
