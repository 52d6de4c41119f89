-- s3meta schema, version 5: following the store's event notifications (issue 17).
--
-- Applied by src/db.rs after 0004, in one exclusive transaction. Nothing existing changes
-- meaning: the new columns default to what scans always did.

-- 1: a `follow` session, not a scan. It has no ranges and covers nothing (a rescan is never
-- skipped because of it); its rows in `changes` are what the events it applied changed.
-- While `follow` runs its state is `running` (it takes the database's lock only to commit,
-- so `status` tells it by `updated_at`, not by the lock); it ends `complete`.
ALTER TABLE scans ADD COLUMN follow INTEGER NOT NULL DEFAULT 0;
-- Events applied (each changed the index or confirmed it), ignored (outside the target, test
-- events, kinds without meaning for the index), stale (older than what the index holds, by
-- the key's sequencer), and the newest applied event's time as the store sent it.
ALTER TABLE scans ADD COLUMN events_applied INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN events_ignored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN events_stale INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN last_event_time TEXT;

-- The sequencer of the newest event applied to the key (S3's per-key order of PUTs and
-- DELETEs, hex); an older event never overwrites a newer state. NULL: none applied, or the
-- store sends none (then a HEAD made after the event decides).
ALTER TABLE objects ADD COLUMN event_sequencer TEXT;
-- 1: list_etag/list_size/list_modified/list_storage_class were written by `follow` from a HEAD,
-- not by a listing (events carry no listing fields). The next listing compares with them at
-- one-second precision (HEAD's Last-Modified has no milliseconds) and an absent storage class
-- as STANDARD, then writes its own; an object unchanged since costs no HEAD and no change row.
ALTER TABLE objects ADD COLUMN list_from_head INTEGER NOT NULL DEFAULT 0;
