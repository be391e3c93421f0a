-- LocalStore cloud schema, part 8: a user's purge_tombstones reads only that user's tombstones.
--
-- A signed-in user's purge_tombstones deletes `where deleted and updated_at < cutoff and owner =
-- me` (RLS adds the same owner test). Part 1 indexed tombstones by (updated_at) alone, for the
-- project-wide purge a cron job runs, so a user's purge had two ways in: that index, which reads
-- every tombstone of every user older than the cutoff and throws away the other owners' ones, or
-- (owner, seq), which reads all of the user's rows, live ones too. Either grows with data the
-- caller does not touch, under the 8 s statement timeout Supabase gives `authenticated`.
-- (owner, updated_at) over tombstones only goes straight to the caller's old tombstones. The
-- (updated_at) index stays: the project-wide purge has no owner to start from.
--
-- Found while checking the schema against Supabase's Performance Advisor (splinter); see
-- docs/sync-protocol.md, "Supabase Security and Performance Advisors". Building it reads the
-- table once and blocks writes to blueprints until it is done (a migration runs in a transaction,
-- so not CONCURRENTLY); the index holds tombstones only. Safe to run again.

create index if not exists blueprints_owner_tombstones_idx
  on public.blueprints (owner, updated_at) where deleted;
