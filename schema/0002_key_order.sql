-- s3meta schema, version 2: each bucket's listing order, and objects whose listing cannot
-- prove them unchanged.
--
-- Applied by src/db.rs after 0001, in one exclusive transaction.

-- How the store lists this bucket (issue 12): 'byte' (S3's UTF-8 byte order) or 'path'
-- (path-component order, `/` before every other character: SeaweedFS). NULL: not known yet
-- (the listings seen so far look the same in both orders). Recorded once a listing or a
-- probe has shown it; every key comparison of a scan of the bucket is made in this order.
ALTER TABLE buckets ADD COLUMN key_order TEXT CHECK (key_order IN ('byte', 'path'));

-- The order this scan's key ranges were cut in. NULL: not cut, or cut by a release that
-- assumed byte order.
ALTER TABLE scans ADD COLUMN key_order TEXT CHECK (key_order IN ('byte', 'path'));

-- For objects of 'path' buckets: the key's bytes with `/` as 0x00 and the bytes below it
-- moved up by one, so that BLOB comparison (memcmp) is path-component order and key ranges
-- in that order are index ranges (src/keyspace.rs, `path_key`). NULL for other buckets.
ALTER TABLE objects ADD COLUMN path_key BLOB;
CREATE INDEX objects_by_path_key ON objects (bucket_id, path_key) WHERE path_key IS NOT NULL;
CREATE INDEX objects_head_due_by_path_key ON objects (bucket_id, path_key)
    WHERE head_due = 1 AND path_key IS NOT NULL;

-- 1 when the object's last HEAD came within a second of its Last-Modified (by the store's
-- own Date header): a rewrite of the same body in that second would leave the listing
-- (ETag, size, Last-Modified to the second) unchanged, so the next rescan HEADs it again.
ALTER TABLE objects ADD COLUMN recheck INTEGER NOT NULL DEFAULT 0;
