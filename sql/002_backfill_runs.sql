-- Jellyfin metadata backfill: optional log of producer runs (one row per run id).
--
-- The producer writes a row when a run starts (id, started_at, mode, options) and completes it when the
-- run finishes (finished_at, counts). Every row a run touched also carries the id in
-- studio_board.meta.backfill_run_id, so `where meta->>'backfill_run_id' = id` lists them.
-- Optional: without this table the producer prints one notice and carries on.
--
-- Install once (psql, Supabase SQL editor, or a migration), then reload PostgREST's schema cache:
--     NOTIFY pgrst, 'reload schema';

create table if not exists public.backfill_runs (
    id          text primary key,
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    mode        text,
    options     jsonb not null default '{}'::jsonb,
    counts      jsonb
);

comment on table public.backfill_runs is
    'Jellyfin backfill: one row per producer run (start, finish, mode, options, counts).';

-- Only the service role (which the backfill uses) reads and writes it; RLS stays on for everyone else.
alter table public.backfill_runs enable row level security;
revoke all on table public.backfill_runs from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update on table public.backfill_runs to service_role';
    end if;
end
$$;
