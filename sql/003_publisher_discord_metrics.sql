-- Jellyfin metadata backfill: the table PMOVES' publisher-discord records its Discord deliveries in.
--
-- PMOVES ships no DDL for it. publisher-discord (services/publisher-discord/main.py,
-- _persist_discord_rollup) upserts one row per event it handled, through the `supabase` package, with
-- `on_conflict=published_event_id`: without a UNIQUE constraint on that column PostgREST refuses every
-- record (400, 42P10). The columns are the ones it writes: the event's envelope id and topic, the
-- channel, whether Discord accepted the embed, the artifact, namespace and slug, when it handled the
-- event, and its publish telemetry. `producer verify --source metrics` reads it (DISCORD_METRICS_TABLE).
--
-- The table alone is not enough: publisher-discord's image lacks the `supabase` package, and without it
-- nothing is recorded (README, runbook step 7, says how to add it).
--
-- Install once (psql, Supabase SQL editor, or a migration), then reload PostgREST's schema cache:
--     NOTIFY pgrst, 'reload schema';
-- Safe to run again, and on a table created by hand before: missing columns and the constraint are added.

create table if not exists public.publisher_discord_metrics (
    id                       bigserial primary key,
    published_event_id       text,
    event_topic              text,
    channel                  text,
    webhook_success          boolean,
    artifact_uri             text,
    namespace                text,
    slug                     text,
    published_at             timestamptz,
    turnaround_seconds       double precision,
    approval_latency_seconds double precision,
    engagement               jsonb,
    cost                     jsonb
);

alter table public.publisher_discord_metrics
    add column if not exists id bigserial,
    add column if not exists published_event_id text,
    add column if not exists event_topic text,
    add column if not exists channel text,
    add column if not exists webhook_success boolean,
    add column if not exists artifact_uri text,
    add column if not exists namespace text,
    add column if not exists slug text,
    add column if not exists published_at timestamptz,
    add column if not exists turnaround_seconds double precision,
    add column if not exists approval_latency_seconds double precision,
    add column if not exists engagement jsonb,
    add column if not exists cost jsonb;

-- The constraint publisher-discord's upsert conflicts on (one record per envelope id).
do $$
begin
    if not exists (
        select 1
        from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = 'public.publisher_discord_metrics'::regclass
          and i.indisunique and i.indnkeyatts = 1 and i.indpred is null
          and a.attname = 'published_event_id'
    ) then
        alter table public.publisher_discord_metrics
            add constraint publisher_discord_metrics_published_event_id_key unique (published_event_id);
    end if;
end
$$;

create index if not exists publisher_discord_metrics_published_at_idx
    on public.publisher_discord_metrics (published_at);

comment on table public.publisher_discord_metrics is
    'publisher-discord: one row per content event it posted to Discord (webhook_success: accepted or not).';

-- Row level security as on PMOVES' tables: on, nothing for anyone but the service role, which
-- publisher-discord and the backfill use.
alter table public.publisher_discord_metrics enable row level security;
revoke all on table public.publisher_discord_metrics from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant select, insert, update on table public.publisher_discord_metrics to service_role';
        if pg_get_serial_sequence('public.publisher_discord_metrics', 'id') is not null then
            execute 'grant usage, select on sequence '
                || pg_get_serial_sequence('public.publisher_discord_metrics', 'id') || ' to service_role';
        end if;
        if not exists (
            select 1 from pg_policies
            where schemaname = 'public' and tablename = 'publisher_discord_metrics'
              and policyname = 'publisher_discord_metrics_service_role'
        ) then
            execute 'create policy publisher_discord_metrics_service_role'
                || ' on public.publisher_discord_metrics'
                || ' for all to service_role using (true) with check (true)';
        end if;
    end if;
end
$$;
