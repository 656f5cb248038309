-- Jellyfin metadata backfill: atomic meta merge for studio_board.
--
-- PostgREST's PATCH replaces a jsonb column whole, so two writers (the backfill and any other service)
-- would lose each other's keys. This function merges in one statement, under the row lock:
--     meta = p_defaults || coalesce(meta, '{}') || p_patch
-- p_patch keys overwrite; p_defaults keys are only filled in when the row does not have them yet
-- (the backfill sends publish_event_sent_at there so an existing value is never overwritten).
-- A row whose meta is JSON but not an object (an array, say) is left alone and not returned: `||`
-- would append to the array instead of merging. The backfill reads such a row back and reports it.
--
-- backfill_merge_meta_many(p_items) does the same for many rows in one statement; p_items is a JSON
-- array of {"id": <bigint>, "patch": {...}, "defaults": {...}}, each id at most once. A worker merges
-- the rows it finished in the same moment with one call instead of one call per row.
--
-- Install once (psql, Supabase SQL editor, or a migration), then reload PostgREST's schema cache:
--     NOTIFY pgrst, 'reload schema';
-- Running this file again is safe (create or replace) and is how an older install gains the batched
-- function. Without backfill_merge_meta_many the worker merges row by row; without
-- backfill_merge_meta it falls back to optimistic PATCHes that pin the old meta value.

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
       and jsonb_typeof(coalesce(meta, '{}'::jsonb)) = 'object'
    returning *;
$$;

comment on function public.backfill_merge_meta(bigint, jsonb, jsonb) is
    'Jellyfin backfill: merge p_patch into studio_board.meta (p_defaults only fill missing keys), atomically.';

create or replace function public.backfill_merge_meta_many(p_items jsonb)
returns setof public.studio_board
language plpgsql
volatile
security invoker
set search_path = public
as $$
begin
    if jsonb_typeof(p_items) is distinct from 'array' then
        raise exception 'p_items must be a JSON array of {"id", "patch", "defaults"} objects'
            using errcode = '22023';
    end if;
    if exists (select 1 from jsonb_array_elements(p_items) as item where jsonb_typeof(item) <> 'object') then
        raise exception 'every item of p_items must be a JSON object' using errcode = '22023';
    end if;
    if exists (select 1 from jsonb_to_recordset(p_items) as item(id bigint) where item.id is null) then
        raise exception 'every item of p_items needs an "id"' using errcode = '22023';
    end if;
    if (select count(*) <> count(distinct item.id) from jsonb_to_recordset(p_items) as item(id bigint)) then
        -- one update cannot apply two patches to one row: it would keep one of them at random
        raise exception 'p_items names a row more than once' using errcode = '22023';
    end if;
    -- lock the rows in id order first, so two overlapping batches wait for each other, never deadlock
    perform 1
       from public.studio_board as board
      where board.id in (select item.id from jsonb_to_recordset(p_items) as item(id bigint))
      order by board.id
        for update;
    return query
        with merged as (
            update public.studio_board as board
               set meta = coalesce(item.defaults, '{}'::jsonb)
                          || coalesce(board.meta, '{}'::jsonb)
                          || coalesce(item.patch, '{}'::jsonb)
              from jsonb_to_recordset(p_items) as item(id bigint, patch jsonb, defaults jsonb)
             where board.id = item.id
               and jsonb_typeof(coalesce(board.meta, '{}'::jsonb)) = 'object'
            returning board.*
        )
        select * from merged;
end
$$;

comment on function public.backfill_merge_meta_many(jsonb) is
    'Jellyfin backfill: backfill_merge_meta for many rows in one statement; p_items = [{id, patch, defaults}].';

-- Only the service role (which the backfill uses) may call them; RLS stays on for everyone else.
revoke all on function public.backfill_merge_meta(bigint, jsonb, jsonb) from public;
revoke all on function public.backfill_merge_meta_many(jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function public.backfill_merge_meta(bigint, jsonb, jsonb) to service_role';
        execute 'grant execute on function public.backfill_merge_meta_many(jsonb) to service_role';
    end if;
end
$$;
