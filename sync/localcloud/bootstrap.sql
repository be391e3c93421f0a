-- Bootstrap for the local Supabase-compatible stack: the objects a hosted Supabase project already
-- has and the project's migrations assume. It never runs against hosted Supabase.
--
-- Modelled on supabase/postgres migrations/db/init-scripts (initial-schema, auth-schema,
-- realtime-schema), supabase/auth (auth.uid/role/email/jwt, copied verbatim) and supabase/realtime
-- (realtime.cast, the send/broadcast_changes signatures). Differences are listed in
-- docs/sync-protocol.md ("Local stack").
--
-- Idempotent: safe to run any number of times (roles and the publication are created only when
-- missing, tables with IF NOT EXISTS, functions with CREATE OR REPLACE).

-- ---------------------------------------------------------------------------------------------
-- Roles (supabase/postgres 00000000000000-initial-schema.sql; the API roles were later altered to
-- INHERIT by 20230529180330_alter_api_roles_for_inherit.sql).
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin inherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin inherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin inherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
-- The login role's own limits (supabase/postgres 20221028101028_set_authenticator_timeout.sql,
-- 20231130133139_set_lock_timeout_to_authenticator_role.sql). Every API session starts with them,
-- and PostgREST only overrides what the impersonated role sets itself: so a request waits at most
-- 8 s for any lock (55P03 after that, e.g. a push queued behind the same user's owner lock), and
-- service_role requests, which set no timeout of their own, stop after 8 s too.
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

-- ---------------------------------------------------------------------------------------------
-- Extensions live in their own schema, as on Supabase (call them qualified: extensions.crypt()).
create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;
grant usage on schema extensions to anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- public: usable by the API roles, and everything the migration runner creates there is granted
-- to them by default (projects revoke what they do not want, as they must on Supabase).
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- auth: the tables the gateway's GoTrue subset uses and project FKs/triggers may touch.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  instance_id uuid,
  id uuid not null default gen_random_uuid(),
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  is_super_admin boolean,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  phone text,
  phone_confirmed_at timestamptz,
  banned_until timestamptz,
  deleted_at timestamptz,
  is_sso_user boolean not null default false,
  is_anonymous boolean not null default false,
  constraint users_pkey primary key (id)
);
-- GoTrue keeps emails unique among non-SSO users (users_email_partial_key).
create unique index if not exists users_email_partial_key on auth.users (email)
  where is_sso_user = false;
create index if not exists users_instance_id_idx on auth.users (instance_id);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';

create table if not exists auth.sessions (
  id uuid not null default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  factor_id uuid,
  aal text not null default 'aal1',
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text,
  constraint sessions_pkey primary key (id)
);
create index if not exists sessions_user_id_idx on auth.sessions (user_id);

create table if not exists auth.refresh_tokens (
  instance_id uuid,
  id bigserial not null,
  token varchar(255),
  user_id varchar(255),
  revoked boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  parent varchar(255),
  session_id uuid references auth.sessions (id) on delete cascade,
  constraint refresh_tokens_pkey primary key (id),
  constraint refresh_tokens_token_unique unique (token)
);
create index if not exists refresh_tokens_session_id_revoked_idx
  on auth.refresh_tokens (session_id, revoked);
create index if not exists refresh_tokens_parent_idx on auth.refresh_tokens (parent);

-- supabase/auth migrations/20240624145325_recreate_auth_functions.up.sql (verbatim, namespace auth).
create or replace function auth.uid()
returns uuid
set search_path to ''
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$ language sql stable;

comment on function auth.uid() is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';

create or replace function auth.role()
returns text
set search_path to ''
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$ language sql stable;

comment on function auth.role() is 'Deprecated. Use auth.jwt() -> ''role'' instead.';

create or replace function auth.email()
returns text
set search_path to ''
as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$ language sql stable;

comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';

create or replace function auth.jwt()
returns jsonb
set search_path to ''
as $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$ language sql stable;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Realtime: the (empty) publication projects add their tables to, and the database-side
-- broadcast API with the hosted signatures. Delivery here is NOTIFY on 'gw_realtime_send' (the
-- gateway LISTENs): the payload is {"topic","event","payload","private"}; NOTIFY caps it at
-- 8000 bytes, so bigger messages become a WARNING, as realtime.send turns its errors into
-- warnings on Supabase.
do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

-- supabase/realtime tenant migration FixByteaDoubleEncodingInCast (verbatim).
create or replace function realtime.cast(val text, type_ regtype)
  returns jsonb
  immutable
  language plpgsql
as $$
declare
  res jsonb;
begin
  if type_::text = 'bytea' then
    return to_jsonb(val);
  end if;
  execute format('select to_jsonb(%L::'|| type_::text || ')', val) into res;
  return res;
end
$$;

create or replace function realtime.send(
  payload jsonb, event text, topic text, private boolean default true
) returns void
language plpgsql
set search_path to ''
as $$
declare
  body jsonb := coalesce(payload, '{}'::jsonb);
begin
  if not body ? 'id' then
    body := body || jsonb_build_object('id', gen_random_uuid());
  end if;
  perform pg_notify(
    'gw_realtime_send',
    jsonb_build_object('topic', topic, 'event', event, 'payload', body, 'private', private)::text
  );
exception
  when others then
    raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
end
$$;

create or replace function realtime.broadcast_changes(
  topic_name text,
  event_name text,
  operation text,
  table_name text,
  table_schema text,
  new record,
  old record,
  level text default 'ROW'
) returns void
language plpgsql
set search_path to ''
as $$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation in ('INSERT', 'UPDATE', 'DELETE') then
    row_data := jsonb_build_object(
      'old_record', case when old is null then null else to_jsonb(old) end,
      'record', case when new is null then null else to_jsonb(new) end,
      'operation', operation,
      'table', table_name,
      'schema', table_schema
    );
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
end
$$;

grant execute on function realtime.cast(text, regtype), realtime.send(jsonb, text, text, boolean),
  realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to anon, authenticated, service_role;
