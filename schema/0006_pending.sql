-- s3meta schema, version 6: metadata not yet read is unknown, not empty (issue 18).
--
-- Applied by src/store/db.rs after 0005, in one exclusive transaction. No table changes.
-- An object listed but never HEADed (state `pending` in a first scan, or `error` when every
-- HEAD failed) has no metadata rows because nobody has read them, not because it has none:
-- `metadata` is NULL for it, as `tags` is for an object whose tags were never read. An object
-- HEADed once keeps its last-read metadata while a rescan owes it a new HEAD (state `pending`
-- again) or after a later HEAD failed (state `error`). The columns and their order are 0003's
-- and 0004's.

DROP VIEW v_objects;
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
       CASE WHEN o.headed_scan IS NULL THEN NULL
            ELSE (SELECT json_group_object(m.name, m.value) FROM metadata m
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
            ELSE (SELECT json_group_object(t.key, t.value) FROM tags t
                   WHERE t.object_id = o.object_id) END AS tags,
       o.tags_error
FROM objects o
JOIN buckets b USING (bucket_id)
LEFT JOIN object_errors e USING (object_id);

DROP VIEW v_versions;
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
       CASE WHEN o.delete_marker OR o.headed_scan IS NULL THEN NULL
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
