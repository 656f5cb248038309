-- Jellyfin metadata backfill: atomic meta merge for studio_board.
--
-- PostgREST's PATCH replaces a jsonb column whole, so two writers (the backfill and any other service)
-- would lose each other's keys. This function merges in one statement, under the row lock:
--     meta = p_defaults || coalesce(meta, '{}') || p_patch
-- p_patch keys overwrite; p_defaults keys are only filled in when the row does not have them yet
-- (the backfill sends publish_event_sent_at there so an existing value is never overwritten).
--
-- Install once (psql, Supabase SQL editor, or a migration), then reload PostgREST's schema cache:
--     NOTIFY pgrst, 'reload schema';
-- Without it the backfill falls back to optimistic PATCHes that pin the old meta value.

create or replace function public.backfill_merge_meta(
    p_id bigint,
    p_patch jsonb,
    p_defaults jsonb default '{}'::jsonb
)
returns setof public.studio_board
language sql
volatile
security invoker
set search_path = public
as $$
    update public.studio_board
       set meta = coalesce(p_defaults, '{}'::jsonb) || coalesce(meta, '{}'::jsonb) || coalesce(p_patch, '{}'::jsonb)
     where id = p_id
    returning *;
$$;

comment on function public.backfill_merge_meta(bigint, jsonb, jsonb) is
    'Jellyfin backfill: merge p_patch into studio_board.meta (p_defaults only fill missing keys), atomically.';

-- Only the service role (which the backfill uses) may call it; RLS stays on for everyone else.
revoke all on function public.backfill_merge_meta(bigint, jsonb, jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function public.backfill_merge_meta(bigint, jsonb, jsonb) to service_role';
    end if;
end
$$;
