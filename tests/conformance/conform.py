#!/usr/bin/env python3
"""Real-server conformance scenarios for s3meta (started by tests/conformance/run, which
installs the tools, starts the servers and passes their endpoints).

Each scenario fills a bucket on a real server, scans it with the s3meta binary and DEFAULT scan
flags, and compares the index with what boto3 lists and HEADs (key set, sizes, ETags, metadata,
Content-Type, HEAD and listing times); then it rewrites, deletes and adds objects, rescans and
compares again, checks the changes table for phantom or missed changes, and scans the same
bucket as `plan --ranges 4` shards merged with `merge`. One line per scenario: PASS or FAIL with
counts and timings; a FAIL lists the first differing keys of each check. Exit 1 if any failed.

Scenarios (`--only`, comma-separated): seaweed, seaweed-deep, same-second, moto, seaweed-wide,
moto-tags, and the placeholders of
later issues (moto-versioned: issue 16, moto-sqs: issue 17, parquet: issue 19), which report
SKIP until the binary has the feature they need (run against an older binary).
"""

import argparse
import json
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s3check as c  # noqa: E402


class Ctx:
    def __init__(self, args):
        self.bin = args.bin
        self.work = args.work
        self.objects = args.objects
        # Development only: extra flags for every `scan` (e.g. "--list-parallelism 1" to see
        # whether a failure is the parallel listing's). CI never sets it; the output says so.
        self.scan_args = os.environ.get("S3META_CONFORMANCE_SCAN_ARGS", "").split()
        self.flags = "default flags" if not self.scan_args else "flags " + " ".join(self.scan_args)
        self.servers = {}
        if args.seaweed:
            # Checked facts (SeaweedFS 4.48): a metadata value "" is not stored.
            self.servers["seaweed"] = c.Server("SeaweedFS", args.seaweed, "weedkey", "weedsecret",
                                               quirks=["drops-empty-meta"])
        if args.moto:
            self.servers["moto"] = c.Server("moto", args.moto, "testing", "testing")


class Scenario:
    """Collects the outcome of each step of one scenario; never stops at the first failure, so
    one run reports everything that differs."""

    def __init__(self, name):
        self.name, self.t0, self.failures, self.notes = name, time.time(), [], []

    def step(self, label, problems, detail=""):
        mark = "ok  " if not problems else "FAIL"
        print(f"  [{mark}] {self.name}: {label}{(' — ' + detail) if detail else ''}", flush=True)
        for p in problems:
            print(f"         {p}", flush=True)
        if problems:
            self.failures.append(label)
        return not problems

    def note(self, text):
        self.notes.append(text)

    def finish(self):
        secs = time.time() - self.t0
        notes = "; ".join(self.notes)
        if self.failures:
            print(f"FAIL {self.name} ({secs:.0f}s): {', '.join(self.failures)} — {notes}", flush=True)
            return False
        print(f"PASS {self.name} ({secs:.0f}s): {notes}", flush=True)
        return True


# ---- fixtures -------------------------------------------------------------------------------

NAMES = ["owner", "project", "Checksum-SHA256", "Mixed-Case-Name", "team", "retention", "source"]
WORDS = ["alice", "bob", "carol", "dave", "apollo", "gemini", "mercury", "7", "2026-11-30", "a=b; c, \"d\""]
ENCODED = ["=?UTF-8?B?w6lsw6h2ZQ==?=", "=?utf-8?q?caf=C3=A9?=", "=?UTF-8?B?8J+YgA==?=", "=?UTF-8?Q?M=C3=BCller?="]


def metadata(rng, body, generation=0):
    """0-4 metadata names (~40% of objects have some), values varied per object and per
    generation (so a rewrite with new metadata really changes it)."""
    if rng.random() < 0.6:
        return {}
    meta = {}
    for name in rng.sample(NAMES, rng.randint(1, 4)):
        r = rng.random()
        if name == "Checksum-SHA256":
            v = c.hashlib.sha256(body).hexdigest()
        elif r < 0.08:
            v = rng.choice(ENCODED)
        elif r < 0.12:
            v = "x" * rng.randint(500, 1500)
        elif r < 0.15:
            v = ""
        else:
            v = f"{rng.choice(WORDS)}-{rng.randint(0, 999)}"
        if generation and name != "Checksum-SHA256":   # a rewrite changes every value
            v = encode_word(f"élève-g{generation}") if v in ENCODED else f"{v}-g{generation}"
        meta[name] = v
    return meta


def encode_word(text):
    return "=?UTF-8?B?" + c.base64.b64encode(text.encode()).decode() + "?="


def body(rng, key, generation=0):
    r = rng.random()
    n = rng.randint(1, 200) if r < 0.97 else rng.randint(10_000, 100_000)
    return (f"{key}|{generation}|".encode() + rng.randbytes(n))[: max(n, 1)]


def make_obj(rng, key, generation=0):
    b = body(rng, key, generation)
    ctype = rng.choice([None, None, None, "application/json", "text/csv; charset=utf-8", "image/png"])
    return c.Obj(b, metadata(rng, b, generation), ctype)


# Siblings of a name that sort before "/" in byte order (space ! # $ % & ' ( ) + , - .) and
# after it (0 = @ _ ~ é), the keys that expose a store listing in path-component order.
SIB_SUFFIXES = [" b", "!x", "#1", "$", "%2Fb", "&b", "'q", "(1)", "+b", ",b", "-b", "-old", ".c", ".txt",
                "0", "=1", "@b", "_x", "~x", "é", "b"]


def sibling_keys(n_big):
    """Fixed sibling families (~n_big keys): a file, a directory and their byte-order neighbours."""
    keys = []
    for base in ["a", "logs", "data", "img"]:
        keys.append(base)                      # a file next to the directory of the same name
        keys += [base + s for s in SIB_SUFFIXES]
        keys += [f"{base}/b", f"{base}/c/d", f"{base}/z", f"{base}/ b", f"{base}/!x", f"{base}/.c"]
    for i in range(n_big // 2):                # big directories next to big siblings
        keys.append(f"logs/2026/{1 + i % 12:02d}/{1 + i % 28:02d}/part-{i:05d}.json")
    for i in range(n_big // 4):
        keys.append(f"logs-old/2025/{1 + i % 12:02d}/part-{i:05d}.json")
    for i in range(n_big // 8):
        keys.append(f"logs.d/conf-{i:04d}")
        keys.append(f"logs!/x-{i:04d}")
    return keys


def deep_keys(n, dirs=10, subs=5):
    """d00..d09/sub0..sub4/obj-NNNNNN, with files and directories beside the directories."""
    keys = [f"d{i % dirs:02d}/sub{(i // dirs) % subs}/obj-{i:06d}" for i in range(n)]
    for d in ["d03", "d06"]:
        keys += [d, d + ".bak", d + "!", d + "-old/obj-000001", d + "-old/obj-000002", d + "/sub3",
                 d + "/sub3-x", d + "/sub3.txt", d + "/sub3/deep/er/obj-1", d + "/sub3/deep/er/obj-2"]
    return keys


def seaweed_fixture(n, rng):
    sib = sibling_keys(min(4000, n // 5))
    keys = list(dict.fromkeys(sib + deep_keys(max(0, n - len(sib) - 25)) + [
        "é/x", "zé", "emoji😀/x", "sp ace/ x ", "lt<gt>&amp;", "q?x=1&y=2", "star*[", "hash#frag",
        "tab\tkey", "cr\rkey", "a%2Fb", "a%20b", "caf\u00e9", "cafe\u0301", "zw\u200bx", "big/multipart",
    ]))
    model = {k: make_obj(rng, k) for k in keys}
    model["big/multipart"] = c.Obj(rng.randbytes(5 * 1024 * 1024 + 1234), {"kind": "multipart"}, parts=2)
    return model


# Keys moto accepts that other stores change or refuse (checked: moto 5.2.5 keeps them all).
MOTO_HOSTILE = [
    "/lead", "//double", "x//y", "back\\slash", "./dot", "../up", "t/./u", "t/../v", ".", "..",
    "tab\tkey", "cr\rkey", "ctl\x01key", "ctl\x1fkey", "del\x7fkey", "lt<gt>", "amp&amp;", "cdata]]>",
    "<![CDATA[x]]>", "a%2Fb", "a%20b", "%C3%A9", "a b", "a+b", "star*q?[br", "caf\u00e9", "cafe\u0301",
    "\ufeffbom", "zw\u200bx", "rtl\u202ex", "nonchar\uffff", "max\U0010ffff", "k" * 1024, "\u00e9" * 512,
    "\U0001F600" * 256, "s/" * 511 + "x", " ", "\t", "dir/", "dir/x", "emoji😀/x", "sp ace/ x ", 'q"uote',
    "apo'st", "semi;colon", "hash#frag", "qm?x=1&y=2",
]


def moto_fixture(rng):
    keys = list(dict.fromkeys(MOTO_HOSTILE + sibling_keys(160) + deep_keys(200, dirs=4, subs=3)))
    model = {k: make_obj(rng, k) for k in keys}
    model["dir/"] = c.Obj(b"", {"kind": "folder-marker"})
    model["empty-object"] = c.Obj(b"", {"kind": "empty"})
    model["big/multipart"] = c.Obj(rng.randbytes(5 * 1024 * 1024 + 1234), {"kind": "multipart"}, parts=2)
    return model


def modifications(rng, model, scale, new_keys):
    """Rewrite (new body + new metadata, same body + new metadata, new body + same metadata),
    delete and add. Returns (writes {key: Obj}, deletes [key], expected changes {key: kinds})."""
    keys = sorted(k for k in model if model[k].parts <= 1)
    rng.shuffle(keys)
    n = max(1, scale)
    rw_both, rw_meta, rw_body, dels = keys[:3 * n], keys[3 * n:4 * n], keys[4 * n:5 * n], keys[5 * n:10 * n]
    dels += [k for k in ("a!x", "a.c", "d06", "logs-old/2025/01/part-00000.json") if k in model and k not in keys[:10 * n]]
    writes, expect = {}, {}
    for k in rw_both:
        o = model[k]
        b = body(rng, k, 1)
        writes[k] = c.Obj(b, metadata(random.Random(k), b, 1) or {"rewritten": "1"}, o.ctype)
        expect[k] = {"metadata"}
    for k in rw_meta:
        o = model[k]
        writes[k] = c.Obj(o.body, {**o.meta, "rewritten": "same-body"}, o.ctype)
        expect[k] = {"metadata"}
    for k in rw_body:
        o = model[k]
        b = body(rng, k, 2)
        if b == o.body:
            b += b"!"
        writes[k] = c.Obj(b, o.meta, o.ctype)
        expect[k] = {"modified"}
    for k in dels:
        expect[k] = {"deleted"}
    for k in new_keys:
        if k not in model:
            writes[k] = make_obj(rng, k, 3)
            expect[k] = {"created"}
    return writes, dels, expect


def new_sibling_keys(n):
    """Keys added by the modification step: new siblings of existing files and directories.
    (No key ending in "/": on SeaweedFS a PUT of "logs/" turns into the directory entry, size 0
    and no metadata, and deletes the file "logs".)"""
    keys = ["a.d", "a/b/c", "a!y", "a", "logs-new/x", "logs!new", "d06-new", "d06/sub3.bak",
            "d07.txt", "d07/sub9/obj-new", "zz/new"]
    keys += [f"logs-new/2026/part-{i:05d}.json" for i in range(n // 2)]
    keys += [f"d06/sub2-new/obj-{i:06d}" for i in range(n // 4)]
    keys += [f"new!/obj-{i:06d}" for i in range(n // 4)]
    return keys


# ---- the generic bucket scenario --------------------------------------------------------------


def scenario_dir(ctx, sc):
    """A fresh directory for the scenario's databases, logs and summaries."""
    d = os.path.join(ctx.work, "scenarios", sc.name)   # (the servers' data is in work/servers)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def rows_or_problem(ctx, db, bucket, env, run, what):
    """The index's rows after a scan, and the problems so far (a failed scan, an unreadable db)."""
    probs = [f"{what}: {run.brief()}"] if run.rc != 0 else []
    try:
        return c.index_objects(ctx.bin, db, bucket, env), probs
    except RuntimeError as e:
        return {}, probs + [str(e)]


def bucket_scenario(ctx, sc, server, bucket, model, mod_scale, new_keys, ranges=4, hooks=(),
                    rescan_reference=False):
    """Fill, full scan, modify, rescan (+ changes), plan/scan/merge; compare each with boto3.
    With `rescan_reference`, a reference index is also made with `--list-parallelism 1` and the
    rescan (default flags) starts from it: a rescan of a correct index must record exactly the
    changes made, whatever the full scan with default flags did."""
    env = server.env()
    d = scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    url = f"s3://{bucket}"
    ep = ["--endpoint-url", server.endpoint]
    rng = random.Random(f"{sc.name}-modify")

    s3 = server.client()
    s3.create_bucket(Bucket=bucket)
    t = time.time()
    c.put_many(server, bucket, model)
    filled = time.time()
    sc.note(f"{len(model):,} objects written in {filled - t:.0f}s")

    tr = c.truth(server, bucket)
    sc.step("store holds what was written", c.check_model(server, model, tr),
            f"{len(tr.objects):,} listed in {tr.pages} pages, HEADed in {tr.seconds:.0f}s"
            f"{'' if tr.byte_order else '; listing NOT in byte order'}")

    db = os.path.join(d, "index.db")
    r = c.s3meta(ctx.bin, ["scan", url, *ep, "--db", db, *ctx.scan_args], env, log, os.path.join(d, "scan1.json"))
    rows, probs = rows_or_problem(ctx, db, bucket, env, r, "scan")
    probs += c.compare(tr, rows)
    sc.step(f"full scan ({ctx.flags}) equals the store", probs,
            f"{len(rows):,} of {len(tr.objects):,} objects indexed, {r.seconds:.1f}s, exit {r.rc}")
    sc.note(f"full scan {len(rows):,}/{len(tr.objects):,} in {r.seconds:.1f}s")

    if rescan_reference:
        db = os.path.join(d, "reference.db")
        rr = c.s3meta(ctx.bin, ["scan", url, *ep, "--db", db, "--list-parallelism", "1"], env, log,
                      os.path.join(d, "reference.json"))
        rows_r, probs = rows_or_problem(ctx, db, bucket, env, rr, "scan --list-parallelism 1")
        probs += c.compare(tr, rows_r)
        sc.step("reference scan (--list-parallelism 1) equals the store", probs,
                f"{len(rows_r):,} of {len(tr.objects):,} objects indexed, {rr.seconds:.1f}s, exit {rr.rc}")

    # Rewrites must land in a later second than the first writes (Last-Modified has 1 s
    # resolution; the same-second case is its own scenario).
    time.sleep(max(0.0, filled + 1.2 - time.time()))
    writes, dels, expect = modifications(rng, model, mod_scale, new_keys)
    c.put_many(server, bucket, writes)
    c.delete_many(server, bucket, dels)
    for k in dels:
        model.pop(k, None)
    model.update(writes)
    counts = {}
    for kinds in expect.values():
        for k in kinds:
            counts[k] = counts.get(k, 0) + 1
    tr2 = c.truth(server, bucket, before=tr, written=writes)
    sc.step("store holds what was written after the changes", c.check_model(server, model, tr2),
            f"{len(writes) - counts.get('created', 0):,} rewritten, {len(dels):,} deleted, "
            f"{counts.get('created', 0):,} added → {len(tr2.objects):,} objects, {tr2.heads:,} HEADed in {tr2.seconds:.0f}s")

    r2 = c.s3meta(ctx.bin, ["scan", url, *ep, "--db", db, *ctx.scan_args], env, log, os.path.join(d, "scan2.json"))
    rows2, probs = rows_or_problem(ctx, db, bucket, env, r2, "rescan")
    probs += c.compare(tr2, rows2)
    heads = (r2.summary or {}).get("objects", {}).get("headed")
    mode = (r2.summary or {}).get("mode")
    if mode not in (None, "rescan"):
        probs.append(f"second scan ran as {mode!r}, not as a rescan")
    sc.step(f"rescan ({ctx.flags}) of the {'reference' if rescan_reference else 'first'} index equals the store", probs,
            f"{len(rows2):,} of {len(tr2.objects):,} objects indexed, {r2.seconds:.1f}s, {heads} HEADs, exit {r2.rc}")
    sc.note(f"rescan {len(rows2):,}/{len(tr2.objects):,} in {r2.seconds:.1f}s ({heads} HEADs)")

    try:
        changes = c.index_changes(ctx.bin, db, bucket, env)
        all_rows = c.index_objects(ctx.bin, db, bucket, env, include_gone=True)
    except RuntimeError as e:
        changes, all_rows = [], {}
        sc.step("rescan's changes are readable", [str(e)])
    scan_id = (r2.summary or {}).get("scan_id")
    if scan_id is not None:
        changes = [x for x in changes if x["scan_id"] == scan_id]
    gone = {k for k, row in all_rows.items() if row["state"] == "gone"}
    probs = c.check_changes(changes, expect)
    if gone != set(dels):
        probs.append(f"objects marked gone: {len(gone):,}, really deleted: {len(dels):,} "
                     f"(phantom: {c._first(sorted(gone - set(dels)))}; missed: {c._first(sorted(set(dels) - gone))})")
    kinds = {}
    for x in changes:
        kinds[x["kind"]] = kinds.get(x["kind"], 0) + 1
    sc.step("rescan's changes are exactly what was done", probs,
            f"recorded {dict(sorted(kinds.items()))}, expected {dict(sorted(counts.items()))}")

    # plan + one scan per range + merge, on the changed bucket
    sh = os.path.join(d, "shards")
    os.makedirs(sh, exist_ok=True)
    t = time.time()
    rp = c.s3meta(ctx.bin, ["plan", url, *ep, "--ranges", str(ranges)], env, log)
    lines = [x for x in rp.out.splitlines() if x.strip()]
    probs = [f"plan: {rp.brief()}"] if rp.rc != 0 or not lines else []
    shard_dbs = []
    for i, line in enumerate(lines):
        sdb = os.path.join(sh, f"shard-{i}.db")
        rs = c.s3meta(ctx.bin, ["scan", "--range-json", line, *ep, "--db", sdb, *ctx.scan_args], env, log,
                      os.path.join(sh, f"shard-{i}.json"))
        if rs.rc != 0:
            probs.append(f"shard {i} ({line}): {rs.brief()}")
        shard_dbs.append(sdb)
    all_db = os.path.join(sh, "all.db")
    rows3 = {}
    if shard_dbs:
        rm = c.s3meta(ctx.bin, ["merge", all_db, *shard_dbs], env, log)
        if rm.rc != 0:
            probs.append(f"merge: {rm.brief()}")
        else:
            rows3 = c.index_objects(ctx.bin, all_db, bucket, env)
            probs += c.compare(tr2, rows3)
    sc.step(f"plan --ranges {ranges} + scan --range-json + merge equals the store", probs,
            f"{len(lines)} ranges, {len(rows3):,} of {len(tr2.objects):,} objects merged, {time.time() - t:.1f}s")
    sc.note(f"plan+merge {len(lines)} ranges {len(rows3):,}/{len(tr2.objects):,}")

    for hook in hooks:                          # later checks on the same index (issue 19, ...)
        hook(ctx, sc, server, bucket, db, tr2)
    return tr2


def scenario_seaweed(ctx):
    """SeaweedFS (issue 12), ~20,000 objects with sibling keys (logs/, logs-old, a!x, a.c, a0, a/b)."""
    sc = Scenario("seaweed")
    server = ctx.servers["seaweed"]
    rng = random.Random(12)
    model = seaweed_fixture(ctx.objects, rng)
    scale = max(1, ctx.objects // 100)          # 20,000 objects: 600 + 200 + 200 rewritten, 1,000 deleted
    bucket_scenario(ctx, sc, server, "conf-seaweed", model, scale,
                    new_sibling_keys(max(12, ctx.objects // 20)), hooks=[check_parquet_export])
    return sc.finish()


def scenario_seaweed_deep(ctx):
    """SeaweedFS, 5,000 objects in deep directories only (d00/sub0/obj-000000), no siblings.
    A listing-order check alone lets this bucket through; split points such as "d06" do not
    (StartAfter=d06 skips d06/ on SeaweedFS). The rescan starts from a one-stream index."""
    sc = Scenario("seaweed-deep")
    server = ctx.servers["seaweed"]
    rng = random.Random(121)
    n = max(500, ctx.objects // 4)
    keys = [f"d{i % 10:02d}/sub{(i // 10) % 5}/obj-{i:06d}" for i in range(n)]
    model = {k: make_obj(rng, k) for k in keys}
    new_keys = [f"d{i % 10:02d}/sub{(i // 10) % 5}/obj-{n + i:06d}" for i in range(n // 20)]
    bucket_scenario(ctx, sc, server, "conf-seaweed-deep", model, max(1, n // 100), new_keys,
                    rescan_reference=True)
    return sc.finish()


def scenario_moto(ctx):
    """moto, ~540 objects with hostile but valid keys, metadata, an empty and a multipart object."""
    sc = Scenario("moto")
    server = ctx.servers["moto"]
    rng = random.Random(16)
    model = moto_fixture(rng)
    bucket_scenario(ctx, sc, server, "conf-moto", model, 10, new_sibling_keys(40) + ["/new-lead", "new\ttab", " x", "logs/", "dir2/"],
                    hooks=[check_parquet_export])
    return sc.finish()


def scenario_same_second(ctx):
    """SeaweedFS, issue 12.3: same-body rewrite with new metadata within the second of a scan.
    Put x (v=A), scan, put the same body with v=B within the same second; the rescan must end
    with v=B (the listing cannot tell the two writes apart)."""
    sc = Scenario("same-second")
    server = ctx.servers["seaweed"]
    env = server.env()
    d = scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    s3 = server.client()
    bucket = "conf-same-second"
    s3.create_bucket(Bucket=bucket)
    ep = ["--endpoint-url", server.endpoint]
    for attempt in range(1, 6):
        db = os.path.join(d, f"index-{attempt}.db")
        time.sleep(1.02 - time.time() % 1)      # just after a second boundary
        s3.put_object(Bucket=bucket, Key="x", Body=b"same body", Metadata={"v": "A"})
        first = s3.head_object(Bucket=bucket, Key="x")
        r = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db, *ctx.scan_args], env, log)
        s3.put_object(Bucket=bucket, Key="x", Body=b"same body", Metadata={"v": "B"})
        second = s3.head_object(Bucket=bucket, Key="x")
        if r.rc == 0 and first["LastModified"] == second["LastModified"] and first["ETag"] == second["ETag"]:
            break
        sc.note(f"attempt {attempt}: the rewrite fell in another second or the scan failed ({r.brief()})")
    else:  # a slow machine: not s3meta's fault, and nothing was checked
        return skip(sc.name, "5 attempts, none put both writes within one second (see "
                    f"{log}); nothing checked")
    time.sleep(1.1)
    r2 = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db, *ctx.scan_args], env, log, os.path.join(d, "rescan.json"))
    tr = c.truth(server, bucket)
    rows, probs = rows_or_problem(ctx, db, bucket, env, r2, "rescan")
    probs += c.compare(tr, rows)
    heads = (r2.summary or {}).get("objects", {}).get("headed")
    sc.step("rescan after a same-second rewrite (same ETag, same Last-Modified) has the new metadata", probs,
            f"index {rows.get('x', {}).get('metadata')}, store {tr.objects['x']['metadata']}, rescan HEADs {heads}")
    sc.note(f"metadata after rescan {rows.get('x', {}).get('metadata')} (store {tr.objects['x']['metadata']})")
    return sc.finish()


def scenario_seaweed_wide(ctx):
    """SeaweedFS, issue 16 §1: an object with 95 metadata names (hyper's default of 100 headers
    made it unreadable) is indexed whole, beside objects with 1 and 40 names."""
    sc = Scenario("seaweed-wide")
    server = ctx.servers["seaweed"]
    env, d = server.env(), scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    bucket = "conf-seaweed-wide"
    s3 = server.client()
    s3.create_bucket(Bucket=bucket)
    for n in (1, 40, 95):
        s3.put_object(Bucket=bucket, Key=f"wide/{n:03d}", Body=b"w" * n,
                      Metadata={f"name-{i:03d}": f"value {i} of {n}" for i in range(n)})
    truth = {o["Key"]: {k: c.decode_value(v) for k, v in s3.head_object(Bucket=bucket, Key=o["Key"])["Metadata"].items()}
             for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    db = os.path.join(d, "index.db")
    r = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", "--endpoint-url", server.endpoint, "--db", db,
                           *ctx.scan_args], env, log)
    rows, probs = rows_or_problem(ctx, db, bucket, env, r, "scan")
    for key, meta in truth.items():
        got = rows.get(key, {})
        if got.get("state") != "ok" or got.get("metadata") != meta:
            probs.append(f"{key}: store has {len(meta)} names, index {got.get('state')} with "
                         f"{len(got.get('metadata') or {})}: {c._short(got.get('error_message'))}")
    widest = max((len(m) for m in truth.values()), default=0)
    sc.step("objects with up to 95 metadata names are indexed whole", probs,
            f"the store kept {widest} names on the widest object, exit {r.rc}")
    sc.note(f"widest object {widest} names")
    return sc.finish()


# Headers moto sends on HEAD that s3meta records (issue 16 §4), by index column.
HEADER_COLUMNS = {
    "sse": "x-amz-server-side-encryption",
    "website_redirect": "x-amz-website-redirect-location",
    "lock_mode": "x-amz-object-lock-mode",
    "legal_hold": "x-amz-object-lock-legal-hold",
    "checksum_type": "x-amz-checksum-type",
}


def scenario_moto_tags(ctx):
    """moto, issue 16 §2 and §4: tags (`scan --tags`, then tag-only changes found by a `--tags`
    rescan) and the further HEAD headers (encryption, redirect, object lock, checksums) vs boto3."""
    if not has_feature(ctx, "scan", "--tags"):
        return skip("moto-tags", "the binary has no `scan --tags` yet (issue 16)")
    sc = Scenario("moto-tags")
    server = ctx.servers["moto"]
    env, d = server.env(), scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    bucket = "conf-moto-tags"
    s3 = server.client()
    # Object lock needs a bucket created with it (moto then versions the bucket too).
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    rng = random.Random(162)
    keys = [f"t/{i:03d}" for i in range(60)] + ["t/café é", "t/sp ace", "t/emoji😀"]
    for i, key in enumerate(keys):
        kw = dict(Bucket=bucket, Key=key, Body=body(rng, key), Metadata={"i": str(i)})
        if i % 2 == 0:
            kw["Tagging"] = urllib.parse.urlencode({"team": rng.choice(WORDS[:4]), "n": str(i)})
        if i % 5 == 0:
            kw["ServerSideEncryption"] = "AES256"
        if i % 7 == 0:
            kw["WebsiteRedirectLocation"] = f"/moved/{i}"
        if i % 9 == 0:
            kw["ObjectLockMode"] = "GOVERNANCE"
            kw["ObjectLockRetainUntilDate"] = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        if i % 11 == 0:
            kw["ObjectLockLegalHoldStatus"] = "ON"
        if i % 4 == 1:
            kw["ChecksumAlgorithm"] = "SHA256"
        s3.put_object(**kw)

    def truth():
        out = {}
        for key in keys:
            h = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            raw = h["ResponseMetadata"]["HTTPHeaders"]
            tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
            row = {"tags": tags}
            for col, header in HEADER_COLUMNS.items():
                row[col] = raw.get(header)
            row["checksum_algorithm"] = next((k[len("x-amz-checksum-"):].upper() for k in raw
                                              if k.startswith("x-amz-checksum-") and k != "x-amz-checksum-type"), None)
            row["lock_retain_until"] = (c.rfc3339(h["ObjectLockRetainUntilDate"])
                                        if h.get("ObjectLockRetainUntilDate") else None)
            out[key] = row
        return out

    def compare(tr, rows):
        probs = []
        for key, want in tr.items():
            got = rows.get(key)
            if got is None:
                probs.append(f"{key!r}: not in the index")
                continue
            for field, value in want.items():
                if got.get(field) != value:
                    probs.append(f"{key!r} {field}: store {c._short(value)}, index {c._short(got.get(field))}")
        return probs[:20]

    db = os.path.join(d, "index.db")
    ep = ["--endpoint-url", server.endpoint]
    tr = truth()
    r = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db, "--tags", *ctx.scan_args], env, log,
                 os.path.join(d, "scan1.json"))
    rows, probs = rows_or_problem(ctx, db, bucket, env, r, "scan --tags")
    probs += compare(tr, rows)
    tagged = sum(1 for t in tr.values() if t["tags"])
    gets = ((r.summary or {}).get("requests") or {}).get("tags")
    sc.step("scan --tags records tags and HEAD's further headers as boto3 reads them", probs,
            f"{len(rows)} objects, {tagged} tagged, {gets} GetObjectTagging, exit {r.rc}")

    # Tag-only changes: ETag and Last-Modified stay, the listing shows nothing.
    changed = {}
    for i, key in enumerate(keys[:12]):
        new = {} if i % 3 == 0 else {"team": "moved", "step": str(i)}
        if new:
            s3.put_object_tagging(Bucket=bucket, Key=key,
                                  Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in new.items()]})
        else:
            s3.delete_object_tagging(Bucket=bucket, Key=key)
        if new != tr[key]["tags"]:
            changed[key] = new
    tr2 = truth()
    r2 = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db, "--tags", *ctx.scan_args], env, log,
                  os.path.join(d, "scan2.json"))
    rows2, probs = rows_or_problem(ctx, db, bucket, env, r2, "rescan --tags")
    probs += compare(tr2, rows2)
    try:
        recorded = {x["key"] for x in c.index_changes(ctx.bin, db, bucket, env)
                    if x["kind"] == "tags" and x["scan_id"] == (r2.summary or {}).get("scan_id")}
    except RuntimeError as e:
        recorded = set()
        probs.append(str(e))
    if recorded != set(changed):
        probs.append(f"tag changes recorded for {sorted(recorded)}, made on {sorted(changed)}")
    heads = ((r2.summary or {}).get("requests") or {}).get("head")
    sc.step("a --tags rescan finds the tag-only changes (kind `tags`) and nothing else", probs,
            f"{len(changed)} changed, {len(recorded)} recorded, {heads} HEADs, exit {r2.rc}")
    sc.note(f"{tagged} tagged of {len(keys)}; {len(changed)} tag-only changes found")
    return sc.finish()


# ---- extension points of later issues ---------------------------------------------------------


def has_feature(ctx, *args):
    """Does the binary know this subcommand or flag (`--help` exits 0 and mentions it)?"""
    p = subprocess.run([ctx.bin, *args[:-1], "--help"], capture_output=True, text=True)
    return p.returncode == 0 and args[-1] in p.stdout


def skip(name, why):
    print(f"SKIP {name}: {why}", flush=True)
    return True


def scenario_moto_versioned(ctx):
    """moto, issue 16 §3: a versioned, tagged bucket (2-3 versions a key, delete markers) vs
    `scan --all-versions --tags` (pages of 7 entries, so keys' versions span pages), then a
    night of changes (new versions, versions deleted for good, new markers) vs its rescan,
    which must HEAD only the new versions; and a plain scan into the same database, which
    must see the current versions only."""
    if not has_feature(ctx, "scan", "--all-versions"):
        return skip("moto-versioned", "the binary has no `scan --all-versions` yet (issue 16 §3)")
    sc = Scenario("moto-versioned")
    server = ctx.servers["moto"]
    env, d = server.env(), scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    bucket = "conf-moto-versioned"
    rng = random.Random(161)
    tr = versioned_fixture(server, bucket, rng)
    db = os.path.join(d, "index.db")
    ep = ["--endpoint-url", server.endpoint]
    scan = ["scan", f"s3://{bucket}", *ep, "--db", db, "--all-versions", "--tags", "--page-size", "7"]

    def index():
        r = c.s3meta(ctx.bin, ["query", "--db", db, "--all-versions", "--format", "jsonl"], env)
        if r.rc != 0:
            raise RuntimeError(f"s3meta query --all-versions: {r.brief()}")
        rows = {}
        for line in r.out.splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row["key"], row["version_id"])] = row
        return rows

    def compare(tr, rows):
        probs = []
        for (key, vid), want in tr["versions"].items():
            got = rows.get((key, vid))
            if got is None:
                probs.append(f"version {key!r} {vid}: not in the index")
                continue
            if got["delete_marker"] != 0 or bool(got["is_latest"]) != want["is_latest"]:
                probs.append(f"version {key!r} {vid}: is_latest {want['is_latest']}, index {got['is_latest']}")
            for field in ("size", "etag", "metadata"):
                if got.get(field) != want[field]:
                    probs.append(f"version {key!r} {vid} {field}: store {c._short(want[field])}, index {c._short(got.get(field))}")
            tags = tr["tags"].get((key, vid), {})
            if (got.get("tags") or {}) != tags:
                probs.append(f"version {key!r} {vid} tags: store {tags}, index {got.get('tags')}")
        for (key, vid), want in tr["markers"].items():
            got = rows.get((key, vid))
            if got is None or got["delete_marker"] != 1 or bool(got["is_latest"]) != want["is_latest"]:
                probs.append(f"delete marker {key!r} {vid}: store latest={want['is_latest']}, index {got and {k: got[k] for k in ('delete_marker', 'is_latest')}}")
        extra = set(rows) - set(tr["versions"]) - set(tr["markers"])
        if extra:
            probs.append(f"{len(extra)} versions in the index the store does not list: {c._first(sorted(extra))}")
        return probs[:20]

    def step(what, r, tr):
        probs = [f"{what}: {r.brief()}"] if r.rc != 0 else []
        try:
            rows = index()
        except RuntimeError as e:
            rows, probs = {}, probs + [str(e)]
        return rows, probs + compare(tr, rows)

    r = c.s3meta(ctx.bin, scan, env, log, os.path.join(d, "scan1.json"))
    rows, probs = step("scan --all-versions", r, tr)
    heads = ((r.summary or {}).get("requests") or {}).get("head")
    if heads is not None and heads != len(tr["versions"]):
        probs.append(f"{heads} HEADs for {len(tr['versions'])} versions")
    sc.step("scan --all-versions --tags records every version and delete marker as boto3 reads them", probs,
            f"{len(tr['versions'])} versions, {len(tr['markers'])} markers, {len(tr['tags'])} tagged; "
            f"{len(rows)} rows, {heads} HEADs, exit {r.rc}")

    # A night: new versions of some keys, versions deleted for good, new delete markers.
    s3 = server.client()
    keys = sorted({k for k, _ in tr["versions"]} | {k for k, _ in tr["markers"]})
    new_versions, purged = 0, set()
    for i, key in enumerate(keys):
        if i % 6 == 0:
            b = body(rng, key, 9)
            s3.put_object(Bucket=bucket, Key=key, Body=b, Metadata=metadata(rng, b, 9))
            new_versions += 1
        elif i % 6 == 1:
            vids = sorted(v for k, v in tr["versions"] if k == key)
            if vids:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=vids[0])
                purged.add((key, vids[0]))
        elif i % 6 == 2:
            s3.delete_object(Bucket=bucket, Key=key)
    tr2 = versioned_truth(server, bucket)
    r2 = c.s3meta(ctx.bin, scan, env, log, os.path.join(d, "scan2.json"))
    rows2, probs = step("rescan --all-versions", r2, tr2)
    heads = ((r2.summary or {}).get("requests") or {}).get("head")
    if (r2.summary or {}).get("mode") not in (None, "rescan"):
        probs.append(f"second scan ran as {(r2.summary or {}).get('mode')!r}, not as a rescan")
    if heads is not None and heads != new_versions:
        probs.append(f"the rescan sent {heads} HEADs for {new_versions} new versions")
    try:
        r = c.s3meta(ctx.bin, ["query", "--db", db, "--all-versions", "--format", "jsonl",
                               "-w", "@state=gone"], env)
        gone = {(row["key"], row["version_id"]) for row in map(json.loads, filter(str.strip, r.out.splitlines()))}
    except (RuntimeError, ValueError) as e:
        gone = set()
        probs.append(str(e))
    if gone != purged:
        probs.append(f"versions recorded gone: {c._first(sorted(gone))}, deleted for good: {c._first(sorted(purged))}")
    sc.step("a rescan HEADs only the new versions and records the purged ones as gone", probs,
            f"{new_versions} new versions, {len(purged)} purged, {heads} HEADs, exit {r2.rc}")

    # A plain scan into the same database: current versions only, the versions untouched.
    r3 = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db], env, log, os.path.join(d, "scan3.json"))
    probs = [f"plain scan: {r3.brief()}"] if r3.rc != 0 else []
    current = {k: v for (k, _), v in tr2["versions"].items() if v["is_latest"]}
    try:
        plain = c.index_objects(ctx.bin, db, bucket, env)
        if set(plain) != set(current):
            probs.append(f"plain scan indexed {len(plain)} keys, the store has {len(current)} current "
                         f"(only in index: {c._first(sorted(set(plain) - set(current)))}; "
                         f"missing: {c._first(sorted(set(current) - set(plain)))})")
        if len(index()) != len(rows2):
            probs.append("the plain scan changed the versions' rows")
    except RuntimeError as e:
        probs.append(str(e))
    sc.step("a plain scan of the same bucket into the same database sees the current versions only", probs,
            f"{len(current)} current keys, exit {r3.rc}")
    sc.note(f"{len(tr2['versions'])} versions, {len(tr2['markers'])} markers after the night")
    return sc.finish()


def versioned_fixture(server, bucket, rng, n=60):
    """Versions (2-3 per key), delete markers and tags on a versioned bucket; returns the truth
    from ListObjectVersions, HEAD ?versionId and GetObjectTagging ?versionId."""
    s3 = server.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(n):
        key = f"v/{i:03d}" if i % 5 else f"v/{i:03d}!sib"
        for g in range(1 + i % 3):
            b = body(rng, key, g)
            kw = dict(Bucket=bucket, Key=key, Body=b, Metadata=metadata(rng, b, g))
            if rng.random() < 0.5:
                kw["Tagging"] = urllib.parse.urlencode({"team": rng.choice(WORDS[:4]), "gen": str(g)})
            s3.put_object(**kw)
        if i % 7 == 0:
            s3.delete_object(Bucket=bucket, Key=key)     # a delete marker
    return versioned_truth(server, bucket)


def versioned_truth(server, bucket):
    s3 = server.client()
    versions, markers, tags = {}, {}, {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            h = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            versions[(v["Key"], v["VersionId"])] = {
                "is_latest": v["IsLatest"], "size": v["Size"], "etag": v["ETag"].strip('"'),
                "metadata": {k: c.decode_value(x) for k, x in h["Metadata"].items()},
                "tagging_count": int(h["ResponseMetadata"]["HTTPHeaders"].get("x-amz-tagging-count", 0)),
            }
            if versions[(v["Key"], v["VersionId"])]["tagging_count"]:
                t = s3.get_object_tagging(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                tags[(v["Key"], v["VersionId"])] = {x["Key"]: x["Value"] for x in t["TagSet"]}
        for m in page.get("DeleteMarkers", []):
            markers[(m["Key"], m["VersionId"])] = {"is_latest": m["IsLatest"]}
    return {"versions": versions, "markers": markers, "tags": tags}


def scenario_moto_sqs(ctx):
    """moto, issue 17: real S3 -> SQS notifications (PutBucketNotificationConfiguration) vs
    `s3meta follow --sqs-queue-url URL --once`: after a full scan, steps of puts (hostile keys),
    overwrites, deletes, re-creates and metadata changes, each followed and then compared with
    what boto3 lists and HEADs; at the end a rescan must HEAD nothing and record no change
    (moto sends no sequencer: a HEAD after each event decides)."""
    if not has_feature(ctx, "follow", "--sqs-queue-url"):
        return skip("moto-sqs", "the binary has no `follow --sqs-queue-url` yet (issue 17)")
    sc = Scenario("moto-sqs")
    server = ctx.servers["moto"]
    env, d = server.env(), scenario_dir(ctx, sc)
    log = os.path.join(d, "s3meta.log")
    bucket = "conf-moto-sqs"
    rng = random.Random(17)
    queue_url = sqs_fixture(server, bucket)
    s3 = server.client()
    keys = [f"base/{i:03d}" for i in range(30)]
    for k in keys:
        b = body(rng, k)
        s3.put_object(Bucket=bucket, Key=k, Body=b, Metadata=metadata(rng, b))
    # Not a synchronization: an object HEADed within a second of its Last-Modified (by the
    # store's Date) is HEADed again by the next rescan (the same-second rule, the exception
    # the issue allows); HEADs a second after the writes keep those few, and the final rescan
    # must send exactly one HEAD per such object, no more.
    settle = lambda: time.sleep(1.1)
    settle()
    db = os.path.join(d, "index.db")
    ep = ["--endpoint-url", server.endpoint]
    follow = ["follow", f"s3://{bucket}", *ep, "--sqs-queue-url", queue_url, "--once",
              "--wait-seconds", "1", "--db", db]
    r = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db], env, log)
    probs = [f"scan: {r.brief()}"] if r.rc != 0 else []
    n = [0]

    def followed(what):
        n[0] += 1
        r = c.s3meta(ctx.bin, follow, env, log)
        summary = {}
        try:
            summary = json.loads(c.s3meta(ctx.bin, ["status", "--db", db, "--format", "json", "--last", "0"], env).out)
        except ValueError:
            pass
        probs = [f"follow after {what}: {r.brief()}"] if r.rc != 0 else []
        try:
            probs += c.compare(c.truth(server, bucket), c.index_objects(ctx.bin, db, bucket, env))
        except RuntimeError as e:
            probs.append(str(e))
        sessions = [x for x in summary.get("scans", []) if x.get("follow")]
        applied = sum(x.get("events_applied", 0) for x in sessions)
        return probs[:20], applied, r.rc

    # The scan's own objects' events are in the queue too: following them changes nothing.
    p, applied, rc = followed("the initial puts")
    changes = c.index_changes(ctx.bin, db, bucket, env)
    if changes:
        p.append(f"events of objects the scan had indexed recorded {len(changes)} changes: {c._first(changes)}")
    sc.step("following the events of what a full scan indexed changes nothing", probs + p,
            f"{applied} events applied, exit {rc}")
    hostile = ["new/a b+c.txt", "new/caf\u00e9 \u2713", "new/100%", "new/x=y&z?q"]
    steps = [
        ("put", lambda: [s3.put_object(Bucket=bucket, Key=k, Body=b"new " + k.encode(),
                                       Metadata={"owner": "ann"}) for k in hostile]),
        ("overwrite", lambda: s3.put_object(Bucket=bucket, Key=keys[0], Body=b"rewritten",
                                            Metadata={"owner": "bob"})),
        ("delete", lambda: [s3.delete_object(Bucket=bucket, Key=k) for k in (keys[1], hostile[0])]),
        ("re-create", lambda: s3.put_object(Bucket=bucket, Key=hostile[0], Body=b"again",
                                            Metadata={"owner": "cy"})),
        ("metadata change", lambda: s3.copy_object(Bucket=bucket, Key=keys[2],
                                                   CopySource={"Bucket": bucket, "Key": keys[2]},
                                                   Metadata={"owner": "dee", "reviewed": "yes"},
                                                   MetadataDirective="REPLACE")),
    ]
    for what, act in steps:
        act()
        settle()
        p, applied, rc = followed(what)
        sc.step(f"after a {what}, follow --once makes the index what boto3 reads", p,
                f"{applied} events applied in all, exit {rc}")
    kinds = sorted({(ch.get("kind"), ch.get("key")) for ch in c.index_changes(ctx.bin, db, bucket, env)})
    # A rewrite that also changes the metadata is a `metadata` change, as rescans record it.
    want = [({"created"}, hostile[1]), ({"modified", "metadata"}, keys[0]), ({"metadata"}, keys[2]),
            ({"deleted"}, keys[1]), ({"deleted"}, hostile[0]), ({"created"}, hostile[0])]
    p = [f"no {'/'.join(sorted(k))} change of {key!r} (changes: {c._first(kinds)})"
         for k, key in want if not any((x, key) in kinds for x in k)]
    sc.step("follow recorded the changes a rescan would", p, f"{len(kinds)} distinct changes")
    before = len(c.index_changes(ctx.bin, db, bucket, env))
    import sqlite3
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rechecks = conn.execute("SELECT count(*) FROM objects WHERE recheck AND state = 'ok'").fetchone()[0]
    summary = os.path.join(d, "rescan.json")
    r = c.s3meta(ctx.bin, ["scan", f"s3://{bucket}", *ep, "--db", db], env, log, summary)
    heads = ((r.summary or {}).get("requests") or {}).get("head")
    after = len(c.index_changes(ctx.bin, db, bucket, env))
    p = [f"rescan: {r.brief()}"] if r.rc != 0 else []
    if after != before:
        p.append(f"the rescan after following recorded {after - before} changes")
    if heads != rechecks:
        p.append(f"the rescan after following sent {heads} HEADs, not one per same-second object ({rechecks})")
    sc.step("a rescan after following finds nothing to change", p,
            f"{heads} HEADs (objects HEADed within a second of their Last-Modified: {rechecks}), exit {r.rc}")
    return sc.finish()


def sqs_fixture(server, bucket):
    import boto3
    sqs = boto3.client("sqs", endpoint_url=server.endpoint, aws_access_key_id=server.key,
                       aws_secret_access_key=server.secret, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3 = server.client()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    return url


def check_parquet_export(ctx, sc, server, bucket, db, tr):
    """Issue 19 (a hook of the SeaweedFS and moto scenarios): `s3meta export --format parquet`
    of the rescanned index, read with DuckDB (`read_parquet(..., hive_partitioning=true)`):
    the count, every key, the metadata of every object, a metadata filter and its count equal
    `s3meta query`. Then the same export to `s3://` on the store itself (multipart uploads),
    its `LATEST` pointer followed, and the files it names compared with the local export."""
    if not has_feature(ctx, "export", "parquet"):
        sc.note("parquet export: SKIP (no `s3meta export` yet, issue 19)")
        return
    try:
        import duckdb
    except ImportError:
        sc.step("parquet export read by DuckDB equals the index", ["python duckdb is not installed"])
        return
    env = server.env()
    d = os.path.dirname(db)
    log = os.path.join(d, "s3meta.log")
    out = os.path.join(d, "export")
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    r = c.s3meta(ctx.bin, ["export", "--db", db, "--format", "parquet", "--out", out], env, log)
    probs = [f"export: {r.brief()}"] if r.rc != 0 else []
    rows = c.index_objects(ctx.bin, db, bucket, env)
    got, names, filtered, n_filtered = {}, (), [], None
    meta_name, meta_value = None, None
    for row in rows.values():                      # a name and value some objects carry
        for k, v in sorted((row.get("metadata") or {}).items()):
            meta_name, meta_value = k, v
            break
        if meta_name:
            break
    if not probs:
        con = duckdb.connect()
        glob = os.path.join(out, "**", "*.parquet")
        src = f"read_parquet('{glob}', hive_partitioning=true)"
        names = tuple(x[0] for x in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall())
        for key, bkt, meta in con.execute(f"SELECT key, bucket, metadata FROM {src}").fetchall():
            if bkt != bucket:
                probs.append(f"{key!r}: partition bucket={bkt!r}, not {bucket!r}")
            if key in got:
                probs.append(f"{key!r} twice in the export")
            got[key] = dict(meta) if meta is not None else None
        if meta_name is not None:
            filtered = sorted(x[0] for x in con.execute(
                f"SELECT key FROM {src} WHERE metadata[?] = ?", [meta_name, meta_value]).fetchall())
            n_filtered = con.execute(
                f"SELECT count(*) FROM {src} WHERE list_contains(map_keys(metadata), ?)", [meta_name]).fetchone()[0]
    if not probs:
        if set(got) != set(rows):
            probs.append(f"keys: {len(set(rows) - set(got)):,} missing ({c._first(sorted(set(rows) - set(got)))}), "
                         f"{len(set(got) - set(rows)):,} extra ({c._first(sorted(set(got) - set(rows)))})")
        bad = [k for k in rows if k in got and got[k] != (rows[k].get("metadata"))]
        if bad:
            probs.append(f"metadata differs for {len(bad):,} objects: {c._first(sorted(bad))}")
        if meta_name is not None:
            q = c.s3meta(ctx.bin, ["query", "--db", db, "--bucket", bucket, "--format", "jsonl",
                                   "--where", f"{meta_name}={meta_value}"], env, log)
            want = sorted(json.loads(x)["key"] for x in q.out.splitlines() if x.strip())
            if filtered != want:
                probs.append(f"metadata[{meta_name!r}] = {meta_value!r}: DuckDB {len(filtered):,}, query {len(want):,}")
            qc = c.s3meta(ctx.bin, ["query", "--db", db, "--bucket", bucket, "--count", "--where", meta_name], env, log)
            if qc.out.strip() != str(n_filtered):
                probs.append(f"objects with {meta_name!r}: DuckDB {n_filtered}, query {qc.out.strip()}")
        if "bucket" not in names or "metadata" not in names:
            probs.append(f"columns: {names}")
    sc.step("parquet export read by DuckDB equals the index", probs,
            f"{len(got):,} of {len(rows):,} rows, filter {meta_name}={meta_value!r}: {len(filtered):,} rows, "
            f"{n_filtered} with the name, {time.time() - t:.1f}s")

    # The same export to the store itself: multipart uploads, a run prefix, the pointer last.
    s3 = server.client()
    dest = f"{bucket}-export"
    probs = []
    try:
        s3.create_bucket(Bucket=dest)
    except Exception as e:                           # noqa: BLE001 (any store error is a problem)
        probs.append(f"create bucket {dest}: {e}")
    if not probs:
        r = c.s3meta(ctx.bin, ["export", "--db", db, "--out", f"s3://{dest}/nightly",
                               "--endpoint-url", server.endpoint], env, log)
        if r.rc != 0:
            probs.append(f"export to s3://: {r.brief()}")
    if not probs:
        pointer = s3.get_object(Bucket=dest, Key="nightly/LATEST")["Body"].read().decode().strip()
        prefix = pointer.removeprefix(f"s3://{dest}/")
        listed = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=dest, Prefix=prefix)
                        for o in page.get("Contents", []))
        local = sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(out) for f in fs)
        if [k.removeprefix(prefix) for k in listed] != local:
            probs.append(f"{pointer}: {listed[:5]} vs local {local[:5]}")
        for rel in local:
            if rel.endswith(".parquet"):
                body = s3.get_object(Bucket=dest, Key=prefix + rel)["Body"].read()
                path = os.path.join(d, "from-s3.parquet")
                with open(path, "wb") as f:
                    f.write(body)
                con = duckdb.connect()
                n = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
                m = con.execute(f"SELECT count(*) FROM read_parquet('{os.path.join(out, rel)}')").fetchone()[0]
                if n != m:
                    probs.append(f"{rel}: {n} rows from the store, {m} local")
    sc.step("parquet export to s3:// on the store, found through LATEST", probs,
            f"pointer {'written' if not probs else 'checked'}")


# ---- raw protocol facts (informational) --------------------------------------------------------


def probe_facts(ctx):
    """Print what each server sends that s3meta's parsing relies on: <IsTruncated> in every
    ListObjectsV2 body, a Date header on HEAD, listing order, StartAfter. Never fails."""
    import urllib3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    http = urllib3.PoolManager()
    for key, server in ctx.servers.items():
        bucket = f"conf-probe-{key}"
        s3 = server.client()
        s3.create_bucket(Bucket=bucket)
        keys = ["a", "a/b", "a/c/d", "a b", "a!x", "a.c", "a0", "d06/sub0/obj-1", "d07/x"]
        for k in keys:
            s3.put_object(Bucket=bucket, Key=k, Body=b"x")

        def raw(method, path):
            req = AWSRequest(method=method, url=server.endpoint + path)
            S3SigV4Auth(Credentials(server.key, server.secret), "s3", "us-east-1").add_auth(req)
            return http.request(method, server.endpoint + path, headers=dict(req.headers.items()))

        truncated = []
        for q in ["list-type=2&max-keys=2", "list-type=2&max-keys=1000", "list-type=2&prefix=zzz",
                  "delimiter=%2F&list-type=2&max-keys=1", "list-type=2&max-keys=2&start-after=a"]:
            r = raw("GET", f"/{bucket}?{q}")
            truncated.append("<IsTruncated>" in r.data.decode())
        h = raw("HEAD", f"/{bucket}/a")
        h404 = raw("HEAD", f"/{bucket}/nope")
        order = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        sa = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, StartAfter="a", MaxKeys=2).get("Contents", [])]
        sa2 = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, StartAfter="d06", MaxKeys=1).get("Contents", [])]
        print(f"INFO {server.name}: <IsTruncated> in {sum(truncated)}/{len(truncated)} ListObjectsV2 bodies; "
              f"HEAD 200 Date: {'yes' if h.headers.get('Date') else 'NO'}, HEAD 404 Date: "
              f"{'yes' if h404.headers.get('Date') else 'NO'}; listing order "
              f"{'= byte order' if order == sorted(keys) else '≠ byte order: ' + repr(order)}; "
              f"StartAfter=a → {sa}, StartAfter=d06 → {sa2}", flush=True)


# ---- main ---------------------------------------------------------------------------------------

SCENARIOS = {
    "seaweed": (scenario_seaweed, "seaweed"),
    "seaweed-deep": (scenario_seaweed_deep, "seaweed"),
    "same-second": (scenario_same_second, "seaweed"),
    "moto": (scenario_moto, "moto"),
    "seaweed-wide": (scenario_seaweed_wide, "seaweed"),
    "moto-tags": (scenario_moto_tags, "moto"),
    "moto-versioned": (scenario_moto_versioned, "moto"),
    "moto-sqs": (scenario_moto_sqs, "moto"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=False)
    ap.add_argument("--work", default=".")
    ap.add_argument("--objects", type=int, default=20000)
    ap.add_argument("--only", default="")
    ap.add_argument("--seaweed", help="SeaweedFS S3 endpoint URL")
    ap.add_argument("--moto", help="moto endpoint URL")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()
    if args.list:
        for name, (fn, srv) in SCENARIOS.items():
            print(f"{name:15} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    ctx = Ctx(args)
    wanted = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"conformance: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    t0 = time.time()
    if ctx.scan_args:
        print(f"WARNING: S3META_CONFORMANCE_SCAN_ARGS={' '.join(ctx.scan_args)}: scans do NOT use default flags", flush=True)
    try:
        probe_facts(ctx)
    except Exception as e:  # informational only
        print(f"INFO probes failed: {e}", flush=True)
    ok, results = True, []
    for name in wanted:
        fn, srv = SCENARIOS[name]
        if srv not in ctx.servers:
            results.append(skip(name, f"no {srv} server was started"))
            continue
        try:
            passed = fn(ctx)
        except Exception as e:
            import traceback
            traceback.print_exc()
            print(f"FAIL {name}: the scenario itself failed: {type(e).__name__}: {e}", flush=True)
            passed = False
        ok &= passed
    print(f"== conformance: {'PASS' if ok else 'FAIL'} in {time.time() - t0:.0f}s "
          f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
