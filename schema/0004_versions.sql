-- s3meta schema, version 4: versioned buckets (issue 16 §3) — every version and delete marker
-- that `s3meta scan --all-versions` lists (ListObjectVersions).
--
-- Applied by src/db.rs after 0003, in one exclusive transaction. Nothing existing changes:
-- a versions scan is a target of its own (`scans.versions = 1`) whose rows live in the tables
-- below, so plain scans (current versions, `objects`) and versions scans of one bucket share a
-- database and never overwrite each other, in either order.

-- 1: the scan lists every version (`--all-versions`); 0: current versions only.
ALTER TABLE scans ADD COLUMN versions INTEGER NOT NULL DEFAULT 0;

-- One row per (store, bucket, key, version id) ever listed by a versions scan: versions and
-- delete markers. The columns mean what they mean in `objects` (same names, so the same code
-- writes both); besides:
--   version_id     as ListObjectVersions returned it (`null` for an object written before
--                  versioning was enabled, as S3 names it)
--   is_latest      1: the key's current version (or a delete marker: the key is deleted)
--   delete_marker  1: a delete marker (no HEAD: it has no content, metadata or tags)
--   state          pending / ok / error as for objects; `gone` when a later listing no longer
--                  had the version (lifecycle expiry, a permanent delete), `gone_scan` says
--                  which scan saw it missing. Versions are immutable: a rescan HEADs only
--                  version ids it has never seen.
-- `object_id` is the version's own id (an object version is an object), the key of its
-- metadata, tags and error rows.
CREATE TABLE versions (
    object_id           INTEGER PRIMARY KEY,
    bucket_id           INTEGER NOT NULL REFERENCES buckets (bucket_id),
    key                 TEXT NOT NULL,
    version_id          TEXT NOT NULL,
    is_latest           INTEGER NOT NULL,
    delete_marker       INTEGER NOT NULL,
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
    missing_meta        INTEGER,
    listed_scan         INTEGER,
    headed_scan         INTEGER,
    headed_at           TEXT,
    gone_scan           INTEGER,
    recheck             INTEGER NOT NULL DEFAULT 0,
    path_key            BLOB,
    sse                    TEXT,
    sse_kms_key_id         TEXT,
    sse_bucket_key         INTEGER,
    sse_customer_algorithm TEXT,
    checksum_algorithm     TEXT,
    checksum               TEXT,
    checksum_type          TEXT,
    lock_mode              TEXT,
    lock_retain_until      TEXT,
    legal_hold             TEXT,
    replication_status     TEXT,
    restore                TEXT,
    archive_status         TEXT,
    website_redirect       TEXT,
    parts_count            INTEGER,
    tagging_count          INTEGER,
    tags_scan              INTEGER,
    tags_due               INTEGER NOT NULL DEFAULT 0,
    tags_error             TEXT,
    UNIQUE (bucket_id, key, version_id)
);
CREATE INDEX versions_head_due ON versions (bucket_id, key) WHERE head_due = 1;
CREATE INDEX versions_head_due_by_path_key ON versions (bucket_id, path_key)
    WHERE head_due = 1 AND path_key IS NOT NULL;
CREATE INDEX versions_by_path_key ON versions (bucket_id, path_key) WHERE path_key IS NOT NULL;
-- Never used (versions scans owe no tags reads of their own); present so the statements
-- shared with `objects` name an index of each table.
CREATE INDEX versions_tags_due ON versions (bucket_id, key) WHERE tags_due != 0;
CREATE INDEX versions_tags_due_by_path_key ON versions (bucket_id, path_key)
    WHERE tags_due != 0 AND path_key IS NOT NULL;

CREATE TABLE version_metadata (
    object_id INTEGER NOT NULL REFERENCES versions (object_id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (object_id, name)
) WITHOUT ROWID;
CREATE INDEX version_metadata_by_name_value ON version_metadata (name, value);

CREATE TABLE version_tags (
    object_id INTEGER NOT NULL REFERENCES versions (object_id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (object_id, key)
) WITHOUT ROWID;
CREATE INDEX version_tags_by_key_value ON version_tags (key, value);

CREATE TABLE version_errors (
    object_id INTEGER PRIMARY KEY REFERENCES versions (object_id) ON DELETE CASCADE,
    scan_id   INTEGER NOT NULL,
    status    INTEGER,
    code      TEXT,
    message   TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    at        TEXT NOT NULL
);

-- Every version as `v_objects` shows an object (same columns, same order), then the
-- version's own: is_latest, delete_marker, gone_scan.
CREATE VIEW v_versions AS
SELECT b.store, b.name AS bucket, o.key, o.state,
       COALESCE(o.size, o.list_size) AS size,
       COALESCE(o.etag, o.list_etag) AS etag,
       COALESCE(o.last_modified, o.list_modified) AS last_modified,
       COALESCE(o.storage_class, o.list_storage_class) AS storage_class,
       o.content_type, o.cache_control, o.content_encoding, o.content_language,
       o.content_disposition, o.expires, o.version_id, o.missing_meta,
       o.list_etag, o.list_size, o.list_modified, o.list_storage_class,
       o.head_due, o.headed_at,
       CASE WHEN o.delete_marker THEN NULL
            ELSE (SELECT json_group_object(m.name, m.value) FROM version_metadata m
                   WHERE m.object_id = o.object_id) END AS metadata,
       e.status AS error_status, e.code AS error_code, e.message AS error_message,
       o.sse, o.sse_kms_key_id, o.sse_bucket_key, o.sse_customer_algorithm,
       o.checksum_algorithm, o.checksum, o.checksum_type,
       o.lock_mode, o.lock_retain_until, o.legal_hold,
       o.replication_status, o.restore, o.archive_status, o.website_redirect,
       o.parts_count,
       CASE WHEN o.headed_scan IS NULL THEN NULL ELSE o.parts_count IS NOT NULL END AS is_multipart,
       o.tagging_count,
       CASE WHEN o.tags_scan IS NULL THEN NULL
            ELSE (SELECT json_group_object(t.key, t.value) FROM version_tags t
                   WHERE t.object_id = o.object_id) END AS tags,
       o.tags_error,
       o.is_latest, o.delete_marker, o.gone_scan
FROM versions o
JOIN buckets b USING (bucket_id)
LEFT JOIN version_errors e USING (object_id);

CREATE VIEW v_version_metadata AS
SELECT b.store, b.name AS bucket, o.key, o.version_id, o.state, m.name, m.value
FROM version_metadata m
JOIN versions o USING (object_id)
JOIN buckets b USING (bucket_id);

CREATE VIEW v_version_tags AS
SELECT b.store, b.name AS bucket, o.key, o.version_id, o.state, t.key AS tag, t.value
FROM version_tags t
JOIN versions o USING (object_id)
JOIN buckets b USING (bucket_id);
