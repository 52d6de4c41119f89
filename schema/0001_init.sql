-- s3meta schema, version 1.
--
-- Applied once, in one exclusive transaction, by src/db.rs; PRAGMA user_version records it.
-- A released migration is never edited: changes go into a new schema/NNNN_*.sql file.
--
-- Conventions:
--   * keys and metadata are stored exactly as S3 returned them (UTF-8 text compared with the
--     BINARY collation, i.e. byte order = S3's listing order); metadata values that S3 sent as
--     RFC 2047 encoded-words are stored decoded;
--   * times are RFC 3339 UTC text with milliseconds, `2026-11-26T15:39:21.000Z`, so they sort
--     and compare as text;
--   * ETags are stored without their surrounding quotes;
--   * key ranges and prefixes are tested with key comparisons, never LIKE or GLOB.

-- One row per (store, bucket). The store is the normalized endpoint URL, or `aws`, so the
-- same bucket name on two stores never merges.
CREATE TABLE buckets (
    bucket_id INTEGER PRIMARY KEY,
    store     TEXT NOT NULL,
    name      TEXT NOT NULL,
    UNIQUE (store, name)
);

-- One row per scan run (resumes continue the same row). A scan covers the keys of its bucket
-- that start with `prefix` and lie in (start_after, end_key] (NULL: unbounded); the bounds are
-- used by sharded scans (`scan --range-json`).
CREATE TABLE scans (
    scan_id         INTEGER PRIMARY KEY,
    bucket_id       INTEGER NOT NULL REFERENCES buckets (bucket_id),
    prefix          TEXT NOT NULL,
    start_after     TEXT,
    end_key         TEXT,
    mode            TEXT NOT NULL CHECK (mode IN ('full', 'rescan')),
    state           TEXT NOT NULL CHECK (state IN ('running', 'interrupted', 'complete', 'abandoned')),
    -- 1 when a completed scan covered this prefix before: new objects are then `created` changes
    record_created  INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT,
    -- counters, accumulated over every run (resume) of the scan
    objects_listed  INTEGER NOT NULL DEFAULT 0,
    heads_ok        INTEGER NOT NULL DEFAULT 0,
    heads_skipped   INTEGER NOT NULL DEFAULT 0,
    objects_gone    INTEGER NOT NULL DEFAULT 0,
    objects_failed  INTEGER NOT NULL DEFAULT 0,
    list_requests   INTEGER NOT NULL DEFAULT 0,
    head_requests   INTEGER NOT NULL DEFAULT 0,
    retries         INTEGER NOT NULL DEFAULT 0,
    throttled       INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT
);
CREATE INDEX scans_by_target ON scans (bucket_id, prefix, state);

-- The listing checkpoint. A scan lists one or more key ranges (start_after, end_key] of its
-- keyspace; each range's position is committed in the same transaction as the rows of the page
-- it covers. `token` lists the page after `last_key`; when a store rejects it, listing resumes
-- with StartAfter = last_key.
CREATE TABLE scan_ranges (
    scan_id     INTEGER NOT NULL REFERENCES scans (scan_id) ON DELETE CASCADE,
    range_no    INTEGER NOT NULL,
    start_after TEXT,
    end_key     TEXT,
    token       TEXT,
    last_key    TEXT,
    state       TEXT NOT NULL CHECK (state IN ('listing', 'done')),
    pages       INTEGER NOT NULL DEFAULT 0,
    keys_listed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scan_id, range_no)
);

-- One row per object ever listed. `state` is the last thing known of the object:
--   pending  listed, never HEADed yet
--   ok       HEAD succeeded; the head fields and metadata rows are what it said
--   error    HEAD failed for good; see object_errors
--   gone     deleted: HEAD answered 404, or a later listing no longer had the key
-- `head_due` = 1 marks the work queue: listed (new, or changed since the last HEAD) and not
-- yet HEADed by the scan that listed it. A resumed scan HEADs these first. Keeping it apart
-- from `state` means an interrupted rescan still knows each object's previous state.
-- The list_* fields are what the listing said, the others what HEAD said: they are kept apart
-- (a listing's Last-Modified has milliseconds, HEAD's has seconds; rescans compare listings).
CREATE TABLE objects (
    object_id           INTEGER PRIMARY KEY,
    bucket_id           INTEGER NOT NULL REFERENCES buckets (bucket_id),
    key                 TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'ok', 'error', 'gone')),
    head_due            INTEGER NOT NULL DEFAULT 0,
    list_etag           TEXT,
    list_size           INTEGER,
    list_modified       TEXT,
    list_storage_class  TEXT,
    etag                TEXT,
    size                INTEGER,
    last_modified       TEXT,
    content_type        TEXT,
    cache_control       TEXT,
    content_encoding    TEXT,
    content_language    TEXT,
    content_disposition TEXT,
    expires             TEXT,
    storage_class       TEXT,
    version_id          TEXT,
    missing_meta        INTEGER,
    listed_scan         INTEGER,
    headed_scan         INTEGER,
    headed_at           TEXT,
    gone_scan           INTEGER,
    UNIQUE (bucket_id, key)
);
-- Resume finds the HEADs still owed without walking the whole prefix.
CREATE INDEX objects_head_due ON objects (bucket_id, key) WHERE head_due = 1;

-- Custom metadata (x-amz-meta-*), one row per (object, name); names lower-case as S3 returns them.
CREATE TABLE metadata (
    object_id INTEGER NOT NULL REFERENCES objects (object_id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (object_id, name)
) WITHOUT ROWID;
CREATE INDEX metadata_by_name_value ON metadata (name, value);

-- The current HEAD error of objects in state `error` (403, 400, or still failing after retries).
CREATE TABLE object_errors (
    object_id INTEGER PRIMARY KEY REFERENCES objects (object_id) ON DELETE CASCADE,
    scan_id   INTEGER NOT NULL,
    status    INTEGER,
    code      TEXT,
    message   TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    at        TEXT NOT NULL
);

-- What changed between scans, one row per object and scan:
--   created   a new key (not recorded by the first scan of a prefix)
--   modified  the listing's ETag, size or Last-Modified changed; metadata unchanged
--   metadata  the custom metadata changed (old_metadata/new_metadata hold JSON objects)
--   deleted   the key disappeared from the listing, or HEAD answered 404
CREATE TABLE changes (
    change_id     INTEGER PRIMARY KEY,
    scan_id       INTEGER NOT NULL,
    object_id     INTEGER NOT NULL REFERENCES objects (object_id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('created', 'modified', 'metadata', 'deleted')),
    old_etag      TEXT,
    old_size      INTEGER,
    old_modified  TEXT,
    new_etag      TEXT,
    new_size      INTEGER,
    new_modified  TEXT,
    old_metadata  TEXT,
    new_metadata  TEXT,
    at            TEXT NOT NULL
);
CREATE INDEX changes_by_object ON changes (object_id, scan_id);
CREATE INDEX changes_by_scan ON changes (scan_id);

-- Stable views for `s3meta query --sql` and for sqlite3/DuckDB users.
CREATE VIEW v_objects AS
SELECT b.store, b.name AS bucket, o.key, o.state,
       COALESCE(o.size, o.list_size) AS size,
       COALESCE(o.etag, o.list_etag) AS etag,
       COALESCE(o.last_modified, o.list_modified) AS last_modified,
       COALESCE(o.storage_class, o.list_storage_class) AS storage_class,
       o.content_type, o.cache_control, o.content_encoding, o.content_language,
       o.content_disposition, o.expires, o.version_id, o.missing_meta,
       o.list_etag, o.list_size, o.list_modified, o.list_storage_class,
       o.head_due, o.headed_at,
       (SELECT json_group_object(m.name, m.value) FROM metadata m
         WHERE m.object_id = o.object_id) AS metadata,
       e.status AS error_status, e.code AS error_code, e.message AS error_message
FROM objects o
JOIN buckets b USING (bucket_id)
LEFT JOIN object_errors e USING (object_id);

CREATE VIEW v_metadata AS
SELECT b.store, b.name AS bucket, o.key, o.state, m.name, m.value
FROM metadata m
JOIN objects o USING (object_id)
JOIN buckets b USING (bucket_id);

CREATE VIEW v_changes AS
SELECT c.change_id, c.scan_id, c.at, c.kind, b.store, b.name AS bucket, o.key,
       c.old_etag, c.old_size, c.old_modified, c.new_etag, c.new_size, c.new_modified,
       c.old_metadata, c.new_metadata
FROM changes c
JOIN objects o USING (object_id)
JOIN buckets b USING (bucket_id);
