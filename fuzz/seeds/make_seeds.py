#!/usr/bin/env python3
"""Writes the seed inputs of the raw_to_json fuzz target (first byte: options and rules, then a
BSON document), so the fuzzer starts from every BSON type instead of discovering the format.
Run from this folder: python3 make_seeds.py"""
import os
import struct

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
