-- s3meta schema, version 3: the whole object (issue 16) — every header HEAD returns that a
-- user may query, and object tags.
--
-- Applied by src/db.rs after 0002, in one exclusive transaction. Objects HEADed by an earlier
-- release have NULL in every new column (not known) until a scan HEADs them again: a rescan
-- HEADs only what changed, so `s3meta scan --full` refreshes them all.

-- What HEAD says besides content headers and metadata. Text as the store sent it, except
-- lock_retain_until (RFC 3339 UTC with milliseconds, as every time here) and the flags.
ALTER TABLE objects ADD COLUMN sse TEXT;                    -- x-amz-server-side-encryption: AES256, aws:kms, aws:kms:dsse
ALTER TABLE objects ADD COLUMN sse_kms_key_id TEXT;         -- x-amz-server-side-encryption-aws-kms-key-id
ALTER TABLE objects ADD COLUMN sse_bucket_key INTEGER;      -- x-amz-server-side-encryption-bucket-key-enabled (1/0)
ALTER TABLE objects ADD COLUMN sse_customer_algorithm TEXT; -- x-amz-server-side-encryption-customer-algorithm (SSE-C)
ALTER TABLE objects ADD COLUMN checksum_algorithm TEXT;     -- CRC32, CRC32C, CRC64NVME, SHA1, SHA256, … (x-amz-checksum-*)
ALTER TABLE objects ADD COLUMN checksum TEXT;               -- its base64 value, as sent
ALTER TABLE objects ADD COLUMN checksum_type TEXT;          -- x-amz-checksum-type: FULL_OBJECT, COMPOSITE
ALTER TABLE objects ADD COLUMN lock_mode TEXT;              -- x-amz-object-lock-mode: GOVERNANCE, COMPLIANCE
ALTER TABLE objects ADD COLUMN lock_retain_until TEXT;      -- x-amz-object-lock-retain-until-date
ALTER TABLE objects ADD COLUMN legal_hold TEXT;             -- x-amz-object-lock-legal-hold: ON, OFF
ALTER TABLE objects ADD COLUMN replication_status TEXT;     -- x-amz-replication-status
ALTER TABLE objects ADD COLUMN restore TEXT;                -- x-amz-restore: ongoing-request="…", expiry-date="…"
ALTER TABLE objects ADD COLUMN archive_status TEXT;         -- x-amz-archive-status
ALTER TABLE objects ADD COLUMN website_redirect TEXT;       -- x-amz-website-redirect-location
-- The N of a multipart upload's ETag `…-N`; NULL for a single-part ETag (or no HEAD yet).
ALTER TABLE objects ADD COLUMN parts_count INTEGER;
-- x-amz-tagging-count; NULL when HEAD sent none, which is "not known", never 0.
ALTER TABLE objects ADD COLUMN tagging_count INTEGER;
-- The scan that last read the object's tags (GetObjectTagging, or a HEAD whose count was 0);
-- NULL: its tags were never read, so they are not known.
ALTER TABLE objects ADD COLUMN tags_scan INTEGER;
-- The scan (scan_id) that owes the object a tags read (GetObjectTagging) although it needs no
-- HEAD (`--tags` rescans: tags change without touching the listing); 0: none. A resume of that
-- scan reads these first; other scans leave them be.
ALTER TABLE objects ADD COLUMN tags_due INTEGER NOT NULL DEFAULT 0;
-- The last tags read's failure (e.g. `HTTP 403 AccessDenied: …` without s3:GetObjectTagging);
-- the object itself stays `ok`. NULL: none.
ALTER TABLE objects ADD COLUMN tags_error TEXT;
CREATE INDEX objects_tags_due ON objects (bucket_id, key) WHERE tags_due != 0;
CREATE INDEX objects_tags_due_by_path_key ON objects (bucket_id, path_key)
    WHERE tags_due != 0 AND path_key IS NOT NULL;

-- The part count of objects HEADed by an earlier release, from the ETag they stored.
UPDATE objects SET parts_count = CAST(substr(etag, instr(etag, '-') + 1) AS INTEGER)
WHERE etag GLOB '*-[1-9]*' AND substr(etag, instr(etag, '-') + 1) NOT GLOB '*[^0-9]*';

-- Which objects the scan reads the tags of (`--tags`): 'all', 'skip-unchanged', NULL (none),
-- recorded with the scan row. A resume keeps its scan's choice.
ALTER TABLE scans ADD COLUMN tags TEXT CHECK (tags IN ('all', 'skip-unchanged'));
-- 1: `--trust-tag-count` (a HEAD without x-amz-tagging-count means no tags); kept by a resume.
ALTER TABLE scans ADD COLUMN trust_tag_count INTEGER NOT NULL DEFAULT 0;
-- GetObjectTagging requests (attempts), accumulated over every run as the other counters;
-- tags_read: objects whose tags were read (or counted 0 by HEAD).
ALTER TABLE scans ADD COLUMN tag_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scans ADD COLUMN tags_read INTEGER NOT NULL DEFAULT 0;

-- Object tags, one row per (object, tag key), as GetObjectTagging returned them.
CREATE TABLE tags (
    object_id INTEGER NOT NULL REFERENCES objects (object_id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (object_id, key)
) WITHOUT ROWID;
CREATE INDEX tags_by_key_value ON tags (key, value);

-- Changes gain the kind `tags` (only the tags changed: old_tags/new_tags hold JSON objects;
-- a `modified` or `metadata` row whose tags changed too keeps its kind and has both pairs). SQLite cannot
-- alter a CHECK, so the table is rebuilt; its views go first and come back below.
DROP VIEW v_changes;
DROP VIEW v_objects;
CREATE TABLE changes_v3 (
    change_id     INTEGER PRIMARY KEY,
    scan_id       INTEGER NOT NULL,
    object_id     INTEGER NOT NULL REFERENCES objects (object_id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('created', 'modified', 'metadata', 'tags', 'deleted')),
    old_etag      TEXT,
    old_size      INTEGER,
    old_modified  TEXT,
    new_etag      TEXT,
    new_size      INTEGER,
    new_modified  TEXT,
    old_metadata  TEXT,
    new_metadata  TEXT,
    at            TEXT NOT NULL,
    old_tags      TEXT,
    new_tags      TEXT
);
INSERT INTO changes_v3 (change_id, scan_id, object_id, kind, old_etag, old_size, old_modified,
                        new_etag, new_size, new_modified, old_metadata, new_metadata, at)
SELECT change_id, scan_id, object_id, kind, old_etag, old_size, old_modified,
       new_etag, new_size, new_modified, old_metadata, new_metadata, at
FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v3 RENAME TO changes;
CREATE INDEX changes_by_object ON changes (object_id, scan_id);
CREATE INDEX changes_by_scan ON changes (scan_id);

-- The views, with the new columns appended (existing columns keep their places).
-- `tags` is a JSON object when known ('{}' when HEAD counted 0), else NULL.
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
       e.status AS error_status, e.code AS error_code, e.message AS error_message,
       o.sse, o.sse_kms_key_id, o.sse_bucket_key, o.sse_customer_algorithm,
       o.checksum_algorithm, o.checksum, o.checksum_type,
       o.lock_mode, o.lock_retain_until, o.legal_hold,
       o.replication_status, o.restore, o.archive_status, o.website_redirect,
       o.parts_count,
       CASE WHEN o.headed_scan IS NULL THEN NULL ELSE o.parts_count IS NOT NULL END AS is_multipart,
       o.tagging_count,
       CASE WHEN o.tags_scan IS NULL THEN NULL
            ELSE (SELECT json_group_object(t.key, t.value) FROM tags t
                   WHERE t.object_id = o.object_id) END AS tags,
       o.tags_error
FROM objects o
JOIN buckets b USING (bucket_id)
LEFT JOIN object_errors e USING (object_id);

CREATE VIEW v_tags AS
SELECT b.store, b.name AS bucket, o.key, o.state, t.key AS tag, t.value
FROM tags t
JOIN objects o USING (object_id)
JOIN buckets b USING (bucket_id);

CREATE VIEW v_changes AS
SELECT c.change_id, c.scan_id, c.at, c.kind, b.store, b.name AS bucket, o.key,
       c.old_etag, c.old_size, c.old_modified, c.new_etag, c.new_size, c.new_modified,
       c.old_metadata, c.new_metadata, c.old_tags, c.new_tags
FROM changes c
JOIN objects o USING (object_id)
JOIN buckets b USING (bucket_id);
