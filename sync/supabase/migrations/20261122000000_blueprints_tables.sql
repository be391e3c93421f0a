-- LocalStore cloud schema, part 1: tables, row-level security, bookkeeping triggers, realtime.
--
-- Deployed unchanged to a hosted Supabase project (`supabase db push`) and to the local stack.
-- It creates nothing Supabase owns (no roles, no auth tables, no publication) and is safe to run
-- again: IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF EXISTS + CREATE for policies, and guarded
-- DO blocks. See docs/sync-protocol.md.

-- Internal helpers live outside the API schema so PostgREST never exposes them as RPCs.
create schema if not exists sync_internal;
revoke all on schema sync_internal from public;
grant usage on schema sync_internal to authenticated, service_role;

-- The server change order (the pull cursor). One sequence for all owners; a pull only ever sees
-- its owner's rows, so gaps from other owners are harmless.
create sequence if not exists sync_internal.blueprint_seq as bigint;
revoke all on sequence sync_internal.blueprint_seq from public;

-- -------------------------------------------------------------------------------------------
-- Tables

create table if not exists public.blueprints (
  id uuid primary key,
  owner uuid not null default auth.uid() references auth.users (id) on delete cascade,
  path text not null,
  -- lower(path), stored: under RLS only leakproof operators can drive an index scan, and lower()
  -- is not leakproof, so "lower(path) = $1" would scan every row of the owner.
  path_key text generated always as (lower(path)) stored,
  content text not null default '',
  meta jsonb not null default '{}'::jsonb,
  content_hash text not null,
  rev bigint not null,
  seq bigint not null,
  deleted boolean not null default false,
  device text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint blueprints_meta_object check (jsonb_typeof(meta) = 'object'),
  constraint blueprints_tombstone_empty check (not deleted or content = '')
);
comment on table public.blueprints is
  'LocalStore blueprints: one row per blueprint id, tombstones included. Written through push_changes.';

-- The pull: WHERE owner = $1 AND seq > $2 ORDER BY seq.
create unique index if not exists blueprints_owner_seq_idx on public.blueprints (owner, seq);
-- Full reconcile (verify_rows) pages by id within an owner.
create index if not exists blueprints_owner_id_idx on public.blueprints (owner, id);
-- One live blueprint per case-insensitive path per owner: push_changes's path_taken lookup, and
-- the backstop should two writers ever race past it.
create unique index if not exists blueprints_owner_live_path_key_idx
  on public.blueprints (owner, path_key) where not deleted;
-- purge_tombstones.
create index if not exists blueprints_tombstones_idx
  on public.blueprints (updated_at) where deleted;

-- No foreign keys: their checks (two per revision row) were a quarter of a bulk push's write.
-- Revisions go with their blueprint through the blueprints_drop_revisions trigger, which also
-- covers a user's deletion (it cascades to blueprints); only the triggers write here.
create table if not exists public.blueprint_revisions (
  id uuid not null,
  rev bigint not null,
  seq bigint not null,
  owner uuid not null,
  path text not null,
  content text not null,
  meta jsonb not null,
  content_hash text not null,
  deleted boolean not null,
  device text not null,
  created_at timestamptz not null default now(),
  primary key (id, rev)
);
create index if not exists blueprint_revisions_owner_idx on public.blueprint_revisions (owner);
comment on table public.blueprint_revisions is
  'Every accepted write of a blueprint (maintained by a trigger; read-only for users).';

create table if not exists public.applied_ops (
  owner uuid not null references auth.users (id) on delete cascade,
  device text not null,
  op_id bigint not null,
  result jsonb not null,
  created_at timestamptz not null default now(),
  primary key (owner, device, op_id)
);
create index if not exists applied_ops_created_at_idx on public.applied_ops (created_at);
comment on table public.applied_ops is
  'Idempotency: the stored result of every (owner, device, op_id) push_changes has seen.';

create table if not exists public.sync_horizon (
  owner uuid primary key references auth.users (id) on delete cascade,
  horizon bigint not null default 0,
  updated_at timestamptz not null default now()
);
comment on table public.sync_horizon is
  'Per owner: the highest seq of any purged row. A pull cursor below it must do a full reconcile.';

-- Contents compress with lz4 where the server has it (PostgreSQL 14+ built with lz4, as Supabase's
-- images are since 2023): pglz compressing every written row, and its copy in the history, took a
-- quarter of a bulk push's CPU; lz4 is several times faster both ways at a similar ratio. Without
-- lz4 the server's default (pglz) stays. Re-running it changes nothing.
do $$
begin
  alter table public.blueprints alter column content set compression lz4;
  alter table public.blueprint_revisions alter column content set compression lz4;
exception when feature_not_supported then
  raise notice 'lz4 compression is not available: blueprint contents stay pglz-compressed';
end
$$;

-- Realtime sends the primary key of changed rows (RLS tables never get more for DELETE), and
-- writes are soft deletes (UPDATEs), so the default identity is enough; FULL would copy up to
-- 10 MiB of old content into the WAL on every write.
alter table public.blueprints replica identity default;

-- -------------------------------------------------------------------------------------------
-- Bookkeeping triggers. SECURITY DEFINER so users cannot forge seq, rev, history or horizon;
-- trigger functions cannot be called as RPCs.

-- The per-owner lock every writer takes before it draws a seq (see docs/sync-protocol.md,
-- "Pull safety"). Transaction-scoped: released only after the commit is visible.
create or replace function sync_internal.lock_owner(owner_id uuid)
returns void
language sql
volatile
set search_path = ''
as $$
  select pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('localstore.blueprints/' || owner_id::text, 0)
  )
$$;

create or replace function sync_internal.stamp_blueprint()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' then
    if new.id is distinct from old.id or new.owner is distinct from old.owner then
      raise exception 'a blueprint''s id and owner cannot change'
        using errcode = '42501';
    end if;
    new.rev := old.rev + 1;
    new.created_at := old.created_at;
  else
    new.rev := 1;
    new.created_at := now();
  end if;
  -- Lock first, then draw: within one owner, seq order is commit order. The same key as
  -- lock_owner, spelled out: this runs once per written row, and calling lock_owner (a SQL
  -- function with its own search_path) here cost more than the rest of the trigger together.
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('localstore.blueprints/' || new.owner::text, 0)
  );
  new.seq := nextval('sync_internal.blueprint_seq');
  new.updated_at := now();
  if new.deleted then
    new.content := '';
  end if;
  return new;
end
$$;

-- One revision row per written row, for a whole statement at once (transition table `written`):
-- a row-level trigger ran one INSERT per row, a third of a bulk push's time.
create or replace function sync_internal.record_revisions()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.blueprint_revisions
    (id, rev, seq, owner, path, content, meta, content_hash, deleted, device)
  select w.id, w.rev, w.seq, w.owner, w.path, w.content, w.meta, w.content_hash, w.deleted,
         w.device
  from written w;
  return null;
end
$$;

-- Any removed row (a purged tombstone, an admin's hard delete) raises its owner's horizon, so a
-- client whose cursor is older cannot miss the removal: it is told to reconcile.
create or replace function sync_internal.raise_horizon()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.sync_horizon as h (owner, horizon)
  select g.owner, max(g.seq)
  from gone g
  -- Skip owners being deleted themselves (cascade from auth.users): nothing left to sync.
  where exists (select 1 from auth.users u where u.id = g.owner)
  group by g.owner
  on conflict (owner) do update
    set horizon = greatest(h.horizon, excluded.horizon), updated_at = now();
  return null;
end
$$;

-- A removed blueprint takes its history with it (set-based, once per statement).
create or replace function sync_internal.drop_revisions()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.blueprint_revisions r using gone g where r.id = g.id;
  return null;
end
$$;

revoke all on function sync_internal.lock_owner(uuid) from public;
grant execute on function sync_internal.lock_owner(uuid) to authenticated, service_role;
revoke all on function sync_internal.stamp_blueprint() from public;
revoke all on function sync_internal.record_revisions() from public;
revoke all on function sync_internal.raise_horizon() from public;
revoke all on function sync_internal.drop_revisions() from public;

create or replace trigger blueprints_stamp
  before insert or update on public.blueprints
  for each row execute function sync_internal.stamp_blueprint();

-- Transition tables allow one event per trigger, hence two.
create or replace trigger blueprints_history_insert
  after insert on public.blueprints
  referencing new table as written
  for each statement execute function sync_internal.record_revisions();

create or replace trigger blueprints_history_update
  after update on public.blueprints
  referencing new table as written
  for each statement execute function sync_internal.record_revisions();

create or replace trigger blueprints_horizon
  after delete on public.blueprints
  referencing old table as gone
  for each statement execute function sync_internal.raise_horizon();

create or replace trigger blueprints_drop_revisions
  after delete on public.blueprints
  referencing old table as gone
  for each statement execute function sync_internal.drop_revisions();

-- -------------------------------------------------------------------------------------------
-- Privileges. Supabase's default privileges grant ALL on new public tables to anon and
-- authenticated; take that back and give each role exactly what the protocol needs.

revoke all on table public.blueprints, public.blueprint_revisions, public.applied_ops,
  public.sync_horizon from public, anon, authenticated;
grant select, insert, update, delete on table public.blueprints to authenticated;
grant select, insert on table public.applied_ops to authenticated;
grant select on table public.blueprint_revisions, public.sync_horizon to authenticated;
grant all on table public.blueprints, public.blueprint_revisions, public.applied_ops,
  public.sync_horizon to service_role;

-- -------------------------------------------------------------------------------------------
-- Row-level security: a user reads and writes only their own rows; anon matches no policy.
-- (select auth.uid()) is evaluated once per statement (Supabase lint 0003_auth_rls_initplan).

alter table public.blueprints enable row level security;
alter table public.blueprint_revisions enable row level security;
alter table public.applied_ops enable row level security;
alter table public.sync_horizon enable row level security;

drop policy if exists blueprints_select_own on public.blueprints;
create policy blueprints_select_own on public.blueprints
  for select to authenticated using (owner = (select auth.uid()));

drop policy if exists blueprints_insert_own on public.blueprints;
create policy blueprints_insert_own on public.blueprints
  for insert to authenticated with check (owner = (select auth.uid()));

drop policy if exists blueprints_update_own on public.blueprints;
create policy blueprints_update_own on public.blueprints
  for update to authenticated
  using (owner = (select auth.uid())) with check (owner = (select auth.uid()));

-- Only tombstones may be removed by their owner (purge_tombstones); a live row is deleted by
-- pushing a tombstone, so other devices learn of it.
drop policy if exists blueprints_delete_own_tombstones on public.blueprints;
create policy blueprints_delete_own_tombstones on public.blueprints
  for delete to authenticated using (owner = (select auth.uid()) and deleted);

drop policy if exists blueprint_revisions_select_own on public.blueprint_revisions;
create policy blueprint_revisions_select_own on public.blueprint_revisions
  for select to authenticated using (owner = (select auth.uid()));

drop policy if exists applied_ops_select_own on public.applied_ops;
create policy applied_ops_select_own on public.applied_ops
  for select to authenticated using (owner = (select auth.uid()));

drop policy if exists applied_ops_insert_own on public.applied_ops;
create policy applied_ops_insert_own on public.applied_ops
  for insert to authenticated with check (owner = (select auth.uid()));

drop policy if exists sync_horizon_select_own on public.sync_horizon;
create policy sync_horizon_select_own on public.sync_horizon
  for select to authenticated using (owner = (select auth.uid()));

-- -------------------------------------------------------------------------------------------
-- Realtime: changes to blueprints are pushed to subscribers (RLS decides who sees what). The
-- publication belongs to Supabase; only add the table, and only once.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    raise notice 'publication supabase_realtime not found: realtime hints stay off';
  elsif exists (
    select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime' and puballtables
  ) then
    null;  -- a FOR ALL TABLES publication already carries blueprints
  elsif not exists (
    select 1 from pg_catalog.pg_publication_tables
    where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'blueprints'
  ) then
    alter publication supabase_realtime add table public.blueprints;
  end if;
end
$$;
