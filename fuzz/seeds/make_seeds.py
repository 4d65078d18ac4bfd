#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets, one folder per target, so that the fuzzer starts
from every BSON type, every option, every kind of _bulk item, change event and checkpoint instead
of discovering the formats: raw_to_json (first byte: options and rules, then a BSON document),
config_options, bulk_response, change_event and checkpoint (their layouts are described below and
in each target's source). Run: python3 fuzz/seeds/make_seeds.py"""
import json
import os
import re
import base64
import struct

os.chdir(os.path.dirname(os.path.abspath(__file__)))

def cstr(s):
    return s.encode() + b"\0"

def string(b):
    return struct.pack("<i", len(b) + 1) + b + b"\0"

def doc(fields):
    body = b"".join(bytes([tag]) + cstr(key) + value for key, tag, value in fields)
    return struct.pack("<i", len(body) + 5) + body + b"\0"

def array(values):
    return doc([(str(i), tag, value) for i, (tag, value) in enumerate(values)])

def code_with_scope(code, scope):
    return struct.pack("<i", 4 + len(string(code)) + len(scope)) + string(code) + scope

oid = bytes.fromhex("65a1b2c3d4e5f60718293a4b")
uuid = bytes.fromhex("0123456789abcdeffedcba9876543210")
every_type = [
    ("_id", 0x07, oid),
    ("d", 0x01, struct.pack("<d", 1.5)),
    ("nan", 0x01, struct.pack("<d", float("nan"))),
    ("s", 0x02, string("é\"\\\n".encode())),
    ("o", 0x03, doc([("a", 0x10, struct.pack("<i", 1)), ("$date", 0x12, struct.pack("<q", 5))])),
    ("items", 0x04, array([(0x03, doc([("sku", 0x02, string(b"x")), ("cost", 0x10, struct.pack("<i", 2))])), (0x10, struct.pack("<i", 3))])),
    ("bin", 0x05, struct.pack("<i", 3) + b"\x00abc"),
    ("old", 0x05, struct.pack("<i", 7) + b"\x02" + struct.pack("<i", 3) + b"abc"),
    ("uuid", 0x05, struct.pack("<i", 16) + b"\x04" + uuid),
    ("u", 0x06, b""),
    ("oid", 0x07, oid),
    ("t", 0x08, b"\x01"),
    ("at", 0x09, struct.pack("<q", 1704164645678)),
    ("far", 0x09, struct.pack("<q", -(2**62))),
    ("n", 0x0A, b""),
    ("re", 0x0B, cstr("a.b") + cstr("xi")),
    ("ptr", 0x0C, string(b"db.c") + oid),
    ("js", 0x0D, string(b"f()")),
    ("sym", 0x0E, string(b"sym")),
    ("cws", 0x0F, code_with_scope(b"f()", doc([("x", 0x10, struct.pack("<i", 1))]))),
    ("i", 0x10, struct.pack("<i", -7)),
    ("ts", 0x11, struct.pack("<II", 2, 7)),
    ("l", 0x12, struct.pack("<q", 2**53 + 1)),
    ("dec", 0x13, bytes.fromhex("0f000000000000000000000000003e30")),
    ("min", 0xFF, b""),
    ("max", 0x7F, b""),
]
seeds = {
    "empty": doc([]),
    "every_type": doc(every_type),
    "string_id": doc([("_id", 0x02, string(b"user:42")), ("a", 0x03, doc([("b", 0x10, struct.pack("<i", 1))]))]),
    "compound_id": doc([("_id", 0x03, doc([("b", 0x10, struct.pack("<i", 1)), ("a", 0x12, struct.pack("<q", 2))])), ("mongo_id", 0x02, string(b"clash"))]),
    "repeated_key": doc([("_id", 0x10, struct.pack("<i", 1)), ("a", 0x10, struct.pack("<i", 1)), ("a", 0x02, string(b"x"))]),
    "not_utf8": doc([("_id", 0x10, struct.pack("<i", 1)), ("a", 0x02, string(b"ok\xc3"))]),
    "nested": doc([("_id", 0x10, struct.pack("<i", 1)), ("a", 0x03, doc([("b", 0x03, doc([("c", 0x04, array([(0x04, array([(0x0A, b"")]))]))]))]))]),
}
os.makedirs("raw_to_json", exist_ok=True)
for name, body in seeds.items():
    for selector in (0, 2, 4, 16, 24, 32, 40, 48, 56):
        with open(os.path.join("raw_to_json", f"{name}-{selector}"), "wb") as f:
            f.write(bytes([selector]) + body)

# --- config_options: first byte (bit 0: YAML, else JSON; bit 1: a definition, else one sync's
# options), then the text.
# The fullest valid options tree, shared with the options property tests (src/binding/options_props.rs).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "binding", "testdata", "options-full.json")) as f:
    base = json.load(f)
minimal = {"name": "a", "mongo": {"uri": "mongodb://h/?replicaSet=r"}, "elasticsearch": {"node": "http://h:9200"}, "collections": ["a.b"]}
outputs = {"name": "export", "mongo": {"uri": "mongodb://h/?replicaSet=r"}, "collections": ["shop.orders"], "outputs": [
    {"type": "file", "path": "/tmp/changes.ndjson", "rotateBytes": 1000, "rotateSeconds": 60, "keepFiles": 2, "fsync": "never"},
    {"type": "tcp", "host": "127.0.0.1", "port": 9000, "connectTimeoutMs": 100, "writeTimeoutMs": 100, "replayBytes": 1000, "tls": {"rejectUnauthorized": False, "serverName": "h"}},
    {"type": "nats", "url": "nats://127.0.0.1:4222", "subject": "mongo.{db}.{coll}", "stream": "S", "createStream": False, "username": "u", "password": "p"},
]}
postgres = {"name": "pg", "postgres": {"uri": "postgres://sync:secret@127.0.0.1:5432/shop"},
            "tables": ["public.orders", {"table": "public.order_lines", "index": "lines", "fields": {"exclude": ["note"]}}],
            "elasticsearch": {"node": "https://127.0.0.1:9200", "apiKey": "a2V5", "tls": {"rejectUnauthorized": False}}}
mistakes = [
    {**minimal, "indexTemplte": "{coll}"},
    {**minimal, "batch": {"maxDocs": -1}},
    {**minimal, "batch": [10]},
    {**minimal, "onDrop": "deleteIndx"},
    {**minimal, "collections": [{"namespace": "a.b", "index": "Users"}]},
    {**minimal, "elasticsearch": {"node": "http://h:9200", "password": "p", "passwordFile": "/nonexistent"}},
    {**minimal, "mongo": {"uri": "enc:age:YWdl"}},
    [],
    "x",
]


def key(k):
    return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) else json.dumps(k)


def yaml(value, indent=0):
    """Block YAML of a JSON value (flow style for empty containers, plain keys where they can be)."""
    pad = "  " * indent
    if isinstance(value, dict) and value:
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key(k)}:\n{yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{key(k)}: {json.dumps(v)}")
        return "\n".join(lines)
    if isinstance(value, list) and value:
        lines = []
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = yaml(v, indent + 1).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
        return "\n".join(lines)
    return pad + json.dumps(value)


def write(target, name, data):
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)


def definition(*trees):
    syncs = {}
    for tree in trees:
        sync = {k: v for k, v in tree.items() if k != "name"}
        syncs[tree["name"]] = sync
    return {"version": 1, "syncs": syncs}


for i, tree in enumerate([base, minimal, outputs, postgres] + mistakes):
    write("config_options", f"json-{i}", b"\x00" + json.dumps(tree).encode())
    write("config_options", f"yaml-{i}", b"\x01" + yaml(tree).encode())
defs = [definition(base, minimal), definition(outputs), definition(postgres), {"syncs": {}}, {"version": 2, "syncs": {"a": minimal}}, {"syncs": {"a": []}}]
for i, tree in enumerate(defs):
    write("config_options", f"def-json-{i}", b"\x02" + json.dumps(tree).encode())
    write("config_options", f"def-yaml-{i}", b"\x03" + yaml(tree).encode())
write("config_options", "yaml-anchors", b"\x03" + b"""version: 1
x-common: &common
  mongo: { uri: "mongodb://h/?replicaSet=r" }
syncs:
  a: { <<: *common, collections: [a.b], elasticsearch: { node: "http://h:9200" } }
""")

# --- bulk_response: first byte: the status (index into the target's table: 0 is 200, 8 is 413,
# 9 is 429, 10 is 500, 14 is 400, 16 is 403, 18 is 409); second: writes sent (mod 16); the body.
items = [
    {"index": {"_index": "i", "_id": "1", "_version": 5, "result": "created", "status": 201}},
    {"delete": {"_index": "i", "_id": "2", "status": 404, "result": "not_found"}},
    {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "[1]: version conflict"}}},
    {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}},
    {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [a]",
                                        "caused_by": {"type": "illegal_argument_exception", "reason": "x"}}}},
    {"delete": {"status": 200, "result": "deleted"}},
    {"index": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "index [i] blocked"}}},
    {"delete": {"status": 400, "error": {"type": "index_closed_exception", "reason": "closed"}}},
    {"create": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "no shard"}}},
    {"update": {"status": 200, "result": "noop"}},
]
bulk = json.dumps({"took": 3, "errors": True, "items": items}).encode()
write("bulk_response", "every-item", bytes([0, len(items)]) + bulk)
write("bulk_response", "pretty", bytes([7, len(items)]) + json.dumps({"took": 3, "errors": True, "items": items}, indent=2).encode())
write("bulk_response", "one", bytes([0, 1]) + json.dumps({"errors": False, "items": items[:1]}).encode())
write("bulk_response", "empty", bytes([0, 0]) + b'{"took":0,"errors":false,"items":[]}')
write("bulk_response", "truncated", bytes([0, len(items)]) + bulk[: len(bulk) // 2])
write("bulk_response", "count-mismatch", bytes([0, 3]) + json.dumps({"items": items[:2]}).encode())
write("bulk_response", "item-without-action", bytes([0, 1]) + b'{"items":[{}]}')
write("bulk_response", "too-large", bytes([8, 1]) + b'{"error":"content too long"}')
write("bulk_response", "overloaded", bytes([9, 1]) + b'{"error":{"type":"es_rejected_execution_exception","reason":"busy"},"status":429}')
write("bulk_response", "blocked", bytes([16, 1]) + b'{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":403}')
write("bulk_response", "refused", bytes([14, 1]) + b'{"error":{"type":"illegal_argument_exception","reason":"bad"},"status":400}')
write("bulk_response", "html", bytes([10, 1]) + b"<html><body>502 Bad Gateway</body></html>")

# --- change_event: first byte even: a MongoDB change event (raw BSON).
ts = struct.pack("<II", 1, 1700000000)
token = doc([("_data", 0x02, string(b"8265F0C0FF000000012B022C0100296E5A1004"))])
ns = doc([("db", 0x02, string(b"d")), ("coll", 0x02, string(b"c"))])
full = doc([("_id", 0x07, oid), ("a", 0x10, struct.pack("<i", 1)), ("l", 0x12, struct.pack("<q", 2**53 + 1))])
key = doc([("_id", 0x07, oid)])


def event(op, *extra):
    return doc([("_id", 0x03, token), ("operationType", 0x02, string(op)), ("clusterTime", 0x11, ts), ("ns", 0x03, ns)] + list(extra))


changes = {
    "insert": event(b"insert", ("documentKey", 0x03, key), ("fullDocument", 0x03, full)),
    "update": event(b"update", ("documentKey", 0x03, key), ("fullDocument", 0x03, full),
                    ("updateDescription", 0x03, doc([("updatedFields", 0x03, doc([("a", 0x10, struct.pack("<i", 1))])), ("removedFields", 0x04, array([]))]))),
    "update-gone": event(b"update", ("documentKey", 0x03, key), ("fullDocument", 0x0A, b"")),
    "replace": event(b"replace", ("documentKey", 0x03, doc([("_id", 0x02, string(b"user:42"))])), ("fullDocument", 0x03, doc([("_id", 0x02, string(b"user:42"))]))),
    "delete": event(b"delete", ("documentKey", 0x03, doc([("_id", 0x03, doc([("tenant", 0x02, string(b"t")), ("n", 0x10, struct.pack("<i", 1))]))]))),
    "drop": event(b"drop"),
    "dropDatabase": event(b"dropDatabase"),
    "rename": event(b"rename", ("to", 0x03, doc([("db", 0x02, string(b"d")), ("coll", 0x02, string(b"other"))]))),
    "invalidate": event(b"invalidate"),
    "createIndexes": event(b"createIndexes"),
    "no-operation": doc([("_id", 0x03, token)]),
}
# Resume tokens whose keys look like extended JSON (opaque to the engine: saved verbatim).
changes["token-dollar-keys"] = doc([("_id", 0x03, doc([("_id", 0x03, doc([("$code", 0x02, string(b"8265F0C0FF"))])), ("$oid", 0x02, string(b"zz"))])),
                                    ("operationType", 0x02, string(b"insert")), ("clusterTime", 0x11, ts), ("ns", 0x03, ns),
                                    ("documentKey", 0x03, key), ("fullDocument", 0x03, full)])
for name, body in changes.items():
    write("change_event", f"mongo-{name}", b"\x00" + body)
# Inputs that crashed a target once (CI, 2026-11-30: a token {_id: {$code: …}} did not load back).
write("change_event", "regression-token-code", base64.b64decode("AOgAAAADX2lkADcAAAACJGNvZGUAJwAAADgyNjVGMEMwRkYwMDAwMDAwMTJCMDIyQzAxMDAyOTZFNUExMDA0AAACb3BlcmF0aW9uVHlwZQAHAAAAaW5zZXJ0ABFjbHVzdGVyVGltZQABAAAAAPFTZQNucwAbAAAAAmRiAAIAAABkAAJjb2xsAAIAAABjAAADZG9jdW1lbnRLZXkAFgAAAAdfaWQAZaGyw9Tl9gcYKTpLAANmdWxsRG9jdW1lbnQAKAAAAAdfPAAAAKGyw9Tl9gcYKTpLEGGAAQAAABJsAAEABAAAAAAAAAA="))


# First byte odd: the column count - 1, each column's type byte (type index << 2, bit 1: an
# array, bit 0: in the key), then a pgoutput message.
def be16(n):
    return struct.pack(">H", n)


def be32(n):
    return struct.pack(">I", n)


def text(s):
    return b"t" + be32(len(s)) + s


def tuple_(*values):
    return be16(len(values)) + b"".join(values)


# types: 0 int4, 1 int8, 2 bool, 3 float4, 4 numeric, 5 bytea, 6 jsonb, 7 timestamptz, 8 timestamp, 9 text, 10 int2, 11 uuid
columns = bytes([0 << 2 | 1, 9 << 2, 4 << 2, 6 << 2, 5 << 2, 7 << 2, 0 << 2 | 2, 9 << 2 | 2])
row = tuple_(text(b"7"), text(b"a \"b\""), text(b"12.50"), text(b'{"k":[1,2.5,null]}'), text(b"\\x00ff"), text(b"2024-05-01 10:00:00.123+00"),
             text(b"{1,NULL,3}"), text(b'{"a","b,c",NULL,{"d"}}'))
relation = b"R" + be32(16384) + b"public\0t\0" + b"d" + be16(2) + b"\x01c0\0" + be32(23) + be32(0xFFFFFFFF) + b"\x00c1\0" + be32(25) + be32(0xFFFFFFFF)
pg = {
    "insert": b"I" + be32(16384) + b"N" + row,
    "update": b"U" + be32(16384) + b"K" + tuple_(text(b"7")) + b"N" + row,
    "update-plain": b"U" + be32(16384) + b"N" + row,
    "delete": b"D" + be32(16384) + b"K" + tuple_(text(b"7"), b"n"),
    "toasted": b"I" + be32(16384) + b"N" + tuple_(text(b"7"), b"u", b"n"),
    "relation": relation,
    "truncate": b"T" + be32(1) + b"\x00" + be32(16384),
}
for name, message in pg.items():
    write("change_event", f"pg-{name}", b"\x01" + bytes([len(columns) - 1]) + columns + message)
composite = bytes([0 << 2 | 1, 9 << 2 | 1])
write("change_event", "pg-composite-key", b"\x01" + bytes([1]) + composite + b"I" + be32(1) + b"N" + tuple_(text(b"7"), text(b"a:b\\c")))

# --- checkpoint: first byte even: a stored document (raw BSON); odd: stored JSON text.
schema = lambda n: ("schema", 0x10, struct.pack("<i", n))
checkpoint_fields = [
    ("_id", 0x02, string(b"sync:shop.orders")),
    ("name", 0x02, string(b"sync")),
    ("namespace", 0x02, string(b"shop.orders")),
    ("startAt", 0x11, ts),
    ("copyRanges", 0x04, array([
        (0x03, doc([("lower", 0x0A, b""), ("upper", 0x03, doc([("v", 0x07, oid)])), ("lastId", 0x03, doc([("v", 0x0A, b"")])), ("done", 0x08, b"\x01"), ("singleType", 0x08, b"\x01")])),
        (0x03, doc([("lower", 0x03, doc([("v", 0x07, oid)])), ("upper", 0x0A, b""), ("lastId", 0x0A, b""), ("done", 0x08, b"\x00"), ("singleType", 0x08, b"\x00")])),
    ])),
    ("copyDone", 0x08, b"\x00"),
    ("copied", 0x12, struct.pack("<q", 1234)),
    ("resumeToken", 0x03, token),
    ("tokenIsInvalidate", 0x08, b"\x00"),
    ("physicalIndex", 0x02, string(b"orders-2")),
    ("generation", 0x10, struct.pack("<i", 2)),
    ("replaces", 0x0A, b""),
    ("historyLostResyncs", 0x10, struct.pack("<i", 0)),
    ("updatedAt", 0x09, struct.pack("<q", 1700000000000)),
    ("term", 0x12, struct.pack("<q", 3)),
]
write("checkpoint", "mongo-schema-3", b"\x00" + doc(checkpoint_fields + [schema(3)]))
write("checkpoint", "mongo-schema-1", b"\x00" + doc(checkpoint_fields[:12]))
write("checkpoint", "mongo-newer", b"\x00" + doc([schema(99)]))
write("checkpoint", "mongo-nulls", b"\x00" + doc([("_id", 0x02, string(b"x")), ("startAt", 0x0A, b""), ("copyRanges", 0x0A, b""), ("resumeToken", 0x0A, b"")]))
write("checkpoint", "mongo-mistyped", b"\x00" + doc([("copied", 0x02, string(b"lots")), ("copyRanges", 0x04, array([(0x10, struct.pack("<i", 1))]))]))
pg_checkpoint = {
    "startAt": {"$timestamp": {"t": 1700000000, "i": 1}},
    "copyRanges": [{"lower": None, "upper": {"v": {"$numberLong": "100"}}, "lastId": {"v": {"$numberInt": "7"}}, "done": False, "singleType": True},
                   {"lower": {"v": {"$oid": "65f0c0ffee00000000000001"}}, "upper": None, "lastId": None, "done": True, "singleType": False}],
    "copyDone": True, "copied": {"$numberLong": "1234"}, "resumeToken": {"_data": "000000001A2B3C4D"}, "tokenIsInvalidate": False,
    "physicalIndex": None, "generation": {"$numberInt": "0"}, "replaces": None, "historyLostResyncs": {"$numberInt": "0"}, "schema": {"$numberInt": "3"},
}
write("checkpoint", "pg-schema-3", b"\x01" + json.dumps(pg_checkpoint).encode())
write("checkpoint", "pg-empty", b"\x01{}")
write("checkpoint", "pg-dates", b"\x01" + json.dumps({"startAt": {"$date": "2024-01-01T00:00:00Z"}, "copyRanges": [{"lower": {"v": {"$numberDecimal": "1.5"}}}]}).encode())
write("checkpoint", "pg-not-a-document", b"\x01[1,2]")
