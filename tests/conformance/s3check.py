"""Helpers of the real-server conformance script: talk to a store with boto3 (fill it, list it,
HEAD every object), run the s3meta binary, read its index, and compare the two.

The store's own answers (boto3's ListObjectsV2 in one stream with continuation tokens, and a
HEAD of every listed key) are the truth the index is compared with. What the fixtures wrote is
checked against that truth too, so a store that changed its behaviour shows up as a fixture
problem, not as an s3meta bug.
"""

import base64
import concurrent.futures as cf
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import quopri
import random
import re
import subprocess
import threading
import time
import urllib.parse

import boto3
import botocore.config
import botocore.exceptions
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SHOW = int(os.environ.get("S3META_CONFORMANCE_SHOW", "10"))  # differing keys shown per check
PROCS = max(1, min(4, os.cpu_count() or 1))  # boto3 is CPU-bound (GIL): processes x threads
THREADS = 16
TIMEOUT = int(os.environ.get("S3META_CONFORMANCE_TIMEOUT", "300"))  # seconds per s3meta command


class Server:
    """One S3 endpoint under test. `quirks` are checked facts about what the store does to what
    it is given, applied to the model of what was written (never to the truth)."""

    def __init__(self, name, endpoint, key, secret, quirks=()):
        self.name, self.endpoint, self.key, self.secret = name, endpoint, key, secret
        self.quirks = set(quirks)

    def as_tuple(self):
        return (self.name, self.endpoint, self.key, self.secret, tuple(self.quirks))

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=botocore.config.Config(
                max_pool_connections=THREADS * 2,
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"},
            ),
        )

    def env(self):
        """Environment for the s3meta binary: credentials from the environment only."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        e.update(
            AWS_ACCESS_KEY_ID=self.key,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_REGION="us-east-1",
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            AWS_EC2_METADATA_DISABLED="true",
        )
        return e


# ---- objects, the model of what was written ------------------------------------------------


class Obj:
    """An object as written: body, user metadata as sent, optional Content-Type; `parts` > 1
    writes it as a multipart upload of that many parts (5 MiB each but the last)."""

    __slots__ = ("body", "meta", "ctype", "parts")

    def __init__(self, body, meta=None, ctype=None, parts=1):
        self.body, self.meta, self.ctype, self.parts = body, dict(meta or {}), ctype, parts

    def etag(self):
        if self.parts > 1:
            return None  # "<md5 of the part md5s>-N": not checked against the model
        return hashlib.md5(self.body).hexdigest()


def expected_meta(server, meta):
    """What a HEAD of the store should return for metadata sent as `meta` (names lower-cased;
    values as sent, still RFC 2047 encoded)."""
    out = {k.lower(): v for k, v in meta.items()}
    if "drops-empty-meta" in server.quirks:
        out = {k: v for k, v in out.items() if v != ""}
    return out


_ENCODED_WORD = re.compile(r"^=\?([^?]+)\?([bBqQ])\?([^?]*)\?=$")


def decode_value(v):
    """The value s3meta stores for a metadata value the store returned: a value that is exactly
    one RFC 2047 encoded-word is decoded (the fixtures only send such single words), anything
    else is kept verbatim."""
    m = _ENCODED_WORD.match(v)
    if not m:
        return v
    charset, enc, text = m.groups()
    try:
        raw = base64.b64decode(text) if enc in "bB" else quopri.decodestring(text.replace("_", " ").encode())
        return raw.decode(charset)
    except Exception:
        return v


# ---- parallel store operations (processes x threads: boto3 spends ~1.8 ms CPU per request) --


def _worker(args):
    server_t, bucket, op, items = args
    server = Server(*server_t[:4], quirks=server_t[4])
    s3 = server.client()

    failed = []

    def put(item):
        if failed:                  # the store broke: fail fast instead of retrying every key
            return
        try:
            _put(item)
        except Exception as e:
            failed.append(e)

    def _put(item):
        key, o = item
        kw = dict(Bucket=bucket, Key=key, Body=o.body, Metadata=o.meta)
        if o.ctype:
            kw["ContentType"] = o.ctype
        s3.put_object(**kw)

    def head(key):
        if not BOTO3_HEAD:
            return key, raw_head(server, bucket, key)
        try:
            h = s3.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            return key, {"error": str(e)}
        return key, {
            "size": h["ContentLength"],
            "etag": h["ETag"].strip('"'),
            "last_modified": rfc3339(h["LastModified"], ms=False),
            "content_type": h.get("ContentType"),
            "raw_metadata": h["Metadata"],
            "date": h["ResponseMetadata"]["HTTPHeaders"].get("date"),
        }

    with cf.ThreadPoolExecutor(THREADS) as ex:
        if op == "put":
            list(ex.map(put, items))
            if failed:
                raise RuntimeError(f"PUT to {server.name} s3://{bucket} failed: {failed[0]}")
            return None
        if op == "head":
            return dict(ex.map(head, items))
    raise ValueError(op)


# HEAD through botocore's own SigV4 signer and http.client (the library under botocore's urllib3)
# costs a third of boto3's head_object in CPU (0.6 ms instead of 1.7), and the truth needs a HEAD
# of every object; the answer is read as botocore reads it (x-amz-meta-* names lower-cased and
# without the prefix, ETag unquoted). S3META_CONFORMANCE_BOTO3_HEAD=1 uses boto3's head_object.
BOTO3_HEAD = os.environ.get("S3META_CONFORMANCE_BOTO3_HEAD") == "1"
http.client._MAXHEADERS = 10_000    # SeaweedFS stores 95+ metadata names; boto3 stops at 100 headers
_local = threading.local()


def raw_head(server, bucket, key, attempts=5):
    u = urllib.parse.urlsplit(server.endpoint)
    path = f"/{bucket}/{urllib.parse.quote(key, safe='/~')}"
    req = AWSRequest(method="HEAD", url=server.endpoint + path)
    S3SigV4Auth(Credentials(server.key, server.secret), "s3", "us-east-1").add_auth(req)
    headers = dict(req.headers.items())
    for attempt in range(attempts):
        conn = getattr(_local, "conn", None)
        if conn is None:
            conn = _local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            conn.request("HEAD", path, headers=headers)
            r = conn.getresponse()
            r.read()
        except (http.client.HTTPException, OSError) as e:
            conn.close()
            _local.conn = None
            err = f"{type(e).__name__}: {e}"
        else:
            if r.status == 200:
                h = {}
                meta = {}
                for name, value in r.getheaders():
                    name = name.lower()
                    if name.startswith("x-amz-meta-"):
                        meta[name[len("x-amz-meta-"):]] = value
                    else:
                        h[name] = value
                return {
                    "size": int(h["content-length"]),
                    "etag": h.get("etag", "").strip('"'),
                    "last_modified": rfc3339(email.utils.parsedate_to_datetime(h["last-modified"]), ms=False),
                    "content_type": h.get("content-type"),
                    "raw_metadata": meta,
                    "date": h.get("date"),
                }
            err = f"HTTP {r.status}"
            if r.status < 500 and r.status != 429:
                break
        time.sleep(0.05 * 2 ** attempt)
    return {"error": f"HEAD {key!r}: {err}"}


def _fan_out(server, bucket, op, items):
    items = list(items)
    if not items:
        return []
    n = min(PROCS, max(1, len(items) // 200))
    if n == 1:
        return [_worker((server.as_tuple(), bucket, op, items))]
    chunks = [items[i::n] for i in range(n)]
    with mp.get_context("fork").Pool(n) as pool:
        return pool.map(_worker, [(server.as_tuple(), bucket, op, c) for c in chunks])


def put_many(server, bucket, objs):
    """Write {key: Obj}; multipart objects one at a time, the rest in parallel."""
    simple = [(k, o) for k, o in objs.items() if o.parts <= 1]
    _fan_out(server, bucket, "put", simple)
    s3 = server.client()
    for k, o in objs.items():
        if o.parts > 1:
            put_multipart(s3, bucket, k, o)


def put_multipart(s3, bucket, key, o):
    kw = dict(Bucket=bucket, Key=key, Metadata=o.meta)
    if o.ctype:
        kw["ContentType"] = o.ctype
    up = s3.create_multipart_upload(**kw)
    step = 5 * 1024 * 1024
    parts = []
    for i in range(o.parts):
        chunk = o.body[i * step : (i + 1) * step if i < o.parts - 1 else len(o.body)]
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=i + 1, Body=chunk)
        parts.append({"ETag": r["ETag"], "PartNumber": i + 1})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


def delete_many(server, bucket, keys):
    s3 = server.client()
    keys = list(keys)
    for i in range(0, len(keys), 1000):
        r = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )
        if r.get("Errors"):
            raise RuntimeError(f"DeleteObjects on {server.name}: {r['Errors'][:3]}")


def head_many(server, bucket, keys):
    out = {}
    for part in _fan_out(server, bucket, "head", keys):
        out.update(part)
    return out


# ---- the truth: what the store lists and HEADs ---------------------------------------------


def rfc3339(d, ms=True):
    """s3meta's time text: RFC 3339 UTC with milliseconds (HEAD times have whole seconds)."""
    d = d.astimezone(dt.timezone.utc)
    frac = d.microsecond // 1000 if ms else 0
    return f"{d:%Y-%m-%dT%H:%M:%S}.{frac:03d}Z"


class Truth:
    """What the store said: `objects` {key: record}, plus facts about its listing."""

    def __init__(self, objects, pages, byte_order, seconds, head_errors, heads):
        self.objects, self.pages, self.byte_order = objects, pages, byte_order
        self.seconds, self.head_errors, self.heads = seconds, head_errors, heads


def list_all(s3, bucket):
    """One ListObjectsV2 stream, continuation tokens only (what any client does), in the store's
    order. Returns ([(key, size, etag, last_modified)], pages)."""
    out, pages = [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1000}):
        pages += 1
        for o in page.get("Contents", []):
            out.append((o["Key"], o["Size"], o.get("ETag", "").strip('"'), o["LastModified"]))
    return out, pages


FULL_HEAD = os.environ.get("S3META_CONFORMANCE_FULL_HEAD") == "1"
SAMPLE = 0.1


def truth(server, bucket, before=None, written=()):
    """List the bucket and HEAD every listed key. With `before` (the truth of an earlier state of
    the same bucket) and `written` (every key written since), only new keys, keys whose listing
    changed, written keys and a 10% sample of the rest are HEADed; the rest keep their earlier
    HEAD fields, and if any sampled object differs from `before` everything is HEADed again
    (S3 metadata only changes by a write; S3META_CONFORMANCE_FULL_HEAD=1 HEADs all anyway)."""
    t0 = time.time()
    listed, pages = list_all(server.client(), bucket)
    keys = [k for k, *_ in listed]
    dup = len(keys) - len(set(keys))
    if dup:
        raise RuntimeError(f"{server.name} listed {dup} keys twice in s3://{bucket}")
    reuse, sampled = {}, []
    if before is not None and not FULL_HEAD:
        written, rng = set(written), random.Random(bucket)
        for key, size, etag, modified in listed:
            b = before.objects.get(key)
            if b and key not in written and (b["list_size"], b["list_etag"], b["list_modified"]) == (
                    size, etag, rfc3339(modified)):
                if rng.random() < SAMPLE:
                    sampled.append(key)
                else:
                    reuse[key] = b
    heads = head_many(server, bucket, [k for k in keys if k not in reuse])
    if any(_record(before.objects[k], heads[k]) != before.objects[k] for k in sampled):
        heads, reuse = head_many(server, bucket, keys), {}
    objects, errors = {}, {}
    for key, size, etag, modified in listed:
        if key in reuse:
            objects[key] = reuse[key]
        elif "error" in heads[key]:
            errors[key] = heads[key]["error"]
        else:
            objects[key] = _record({"list_size": size, "list_etag": etag, "list_modified": rfc3339(modified)},
                                   heads[key])
    byte_order = keys == sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))
    return Truth(objects, pages, byte_order, time.time() - t0, errors, len(heads))


def _record(listed, h):
    """A HEAD answer as a truth record, with the listing fields of `listed`."""
    if "error" in h:
        return None
    return {
        "size": h["size"], "etag": h["etag"], "last_modified": h["last_modified"],
        "content_type": h["content_type"],
        "metadata": {k: decode_value(v) for k, v in h["raw_metadata"].items()},
        "raw_metadata": h["raw_metadata"],
        "list_size": listed["list_size"], "list_etag": listed["list_etag"], "list_modified": listed["list_modified"],
    }


def check_model(server, model, tr):
    """Does the store hold what the fixtures wrote? Problems here are the store's (or a fixture
    the store mangles), reported apart from s3meta's."""
    problems = []
    want, got = set(model), set(tr.objects)
    if tr.head_errors:
        problems.append(f"{len(tr.head_errors)} listed keys fail HEAD: {_first(tr.head_errors.items())}")
    if want - got:
        problems.append(f"{len(want - got)} written keys not listed: {_first(sorted(want - got))}")
    if got - want:
        problems.append(f"{len(got - want)} listed keys never written: {_first(sorted(got - want))}")
    bad = []
    for k in sorted(want & got):
        o, t = model[k], tr.objects[k]
        if t["size"] != len(o.body):
            bad.append((k, "size", len(o.body), t["size"]))
        if o.etag() and t["etag"] != o.etag():
            bad.append((k, "etag", o.etag(), t["etag"]))
        if t["raw_metadata"] != expected_meta(server, o.meta):
            bad.append((k, "metadata", expected_meta(server, o.meta), t["raw_metadata"]))
    if bad:
        problems.append(f"{len(bad)} objects differ from what was written: {_first(bad)}")
    return problems


# ---- the index ------------------------------------------------------------------------------


class Run:
    def __init__(self, argv, rc, seconds, out, err, summary):
        self.argv, self.rc, self.seconds, self.out, self.err, self.summary = argv, rc, seconds, out, err, summary

    def brief(self):
        tail = " | ".join(line for line in self.err.strip().splitlines()[-3:])
        return f"exit {self.rc} after {self.seconds:.1f}s: {tail}"


def s3meta(bin_, args, env, log=None, summary=None):
    argv = [bin_] + list(args)
    if summary:
        argv += ["--summary-json", summary]
    t0 = time.time()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        p = subprocess.CompletedProcess(argv, 124, out, err + f"\n(killed by the conformance script after {TIMEOUT}s)")
    seconds = time.time() - t0
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n# exit {p.returncode} after {seconds:.2f}s\n{p.stderr}\n")
    summ = None
    if summary and os.path.exists(summary):
        try:
            with open(summary) as f:
                summ = json.load(f)
        except ValueError:
            pass
    return Run(argv, p.returncode, seconds, p.stdout, p.stderr, summ)


def index_objects(bin_, db, bucket, env, include_gone=False):
    args = ["query", "--db", db, "--bucket", bucket, "--format", "jsonl"]
    if include_gone:
        args.append("--include-gone")
    r = s3meta(bin_, args, env)
    if r.rc != 0:
        raise RuntimeError(f"s3meta query on {db}: {r.brief()}")
    rows, dups = {}, []
    for line in r.out.splitlines():
        if line.strip():
            row = json.loads(line)
            if row["key"] in rows:
                dups.append(row["key"])
            rows[row["key"]] = row
    if dups:
        raise RuntimeError(f"s3meta query on {db} returned {len(dups)} keys twice: {_first(dups)}")
    return rows


def index_changes(bin_, db, bucket, env):
    r = s3meta(bin_, ["changes", "--db", db, "--bucket", bucket, "--format", "jsonl"], env)
    if r.rc != 0:
        raise RuntimeError(f"s3meta changes on {db}: {r.brief()}")
    return [json.loads(line) for line in r.out.splitlines() if line.strip()]


# ---- comparison -----------------------------------------------------------------------------

FIELDS = ("size", "etag", "metadata", "content_type", "last_modified", "list_size", "list_etag", "list_modified")


def compare(tr, rows):
    """Differences between the truth and the index's rows (state ok, not gone), as lines; empty
    when they agree exactly."""
    want, got = set(tr.objects), set(rows)
    lines = []
    missing, extra = sorted(want - got), sorted(got - want)
    if missing:
        lines.append(f"{len(missing)} of {len(want)} objects on the store are missing from the index: {_first(missing)}")
    if extra:
        lines.append(f"{len(extra)} objects in the index are not on the store: {_first(extra)}")
    not_ok = [(k, rows[k]["state"], rows[k].get("error_status"), rows[k].get("error_message"))
              for k in sorted(want & got) if rows[k]["state"] != "ok" or rows[k].get("head_due")]
    if not_ok:
        lines.append(f"{len(not_ok)} objects not in state ok: {_first(not_ok)}")
    for field in FIELDS:
        bad = [(k, tr.objects[k][field], rows[k].get(field)) for k in sorted(want & got)
               if tr.objects[k][field] != rows[k].get(field)]
        if bad:
            lines.append(f"{len(bad)} objects differ in {field} (key, store, index): {_first(bad)}")
    return lines


def check_changes(changes, expect):
    """`expect` is {key: set of allowed kinds} for the rescan; every recorded change must be
    expected (no phantom), every expected key must have exactly one change."""
    lines = []
    by_key = {}
    for c in changes:
        by_key.setdefault(c["key"], []).append(c["kind"])
    phantom = sorted((k, kinds) for k, kinds in by_key.items() if k not in expect)
    if phantom:
        kinds = {}
        for _, ks in phantom:
            for x in ks:
                kinds[x] = kinds.get(x, 0) + 1
        lines.append(f"{len(phantom)} keys with changes that never happened ({kinds}): {_first(phantom)}")
    missing = sorted(k for k in expect if k not in by_key)
    if missing:
        lines.append(f"{len(missing)} real changes not recorded: {_first([(k, sorted(expect[k])) for k in missing])}")
    wrong = sorted((k, sorted(expect[k]), by_key[k]) for k in expect
                   if k in by_key and (len(by_key[k]) != 1 or by_key[k][0] not in expect[k]))
    if wrong:
        lines.append(f"{len(wrong)} changes of the wrong kind (key, expected, recorded): {_first(wrong)}")
    deleted = {k for k, ks in by_key.items() if "deleted" in ks}
    really = {k for k, ks in expect.items() if "deleted" in ks}
    if deleted != really:
        lines.append(f"deleted changes: {len(deleted)} recorded, {len(really)} keys really deleted "
                     f"({len(deleted - really)} phantom, {len(really - deleted)} missed)")
    return lines


def _first(items, n=None):
    items = list(items)
    n = SHOW if n is None else n
    shown = ", ".join(_short(x) for x in items[:n])
    return shown + (f", … ({len(items) - n} more)" if len(items) > n else "")


def _short(x, limit=160):
    s = repr(x)
    return s if len(s) <= limit else s[: limit - 1] + "…"
