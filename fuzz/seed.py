#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/TARGET from
testdata/ and examples/ (each target's input layout is in its source).
Run once before a first fuzzing run; run.sh minimizes the corpus after."""
import datetime
import hashlib
import json
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
SPECS = sorted((ROOT / "testdata/spec").glob("*.json"))


def put(target, data):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def yaml_of(value, indent=0):
    """A small YAML writer (block style) for flag files."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = ""
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out += f"{pad}{k}:\n" + yaml_of(v, indent + 1)
            else:
                out += f"{pad}{k}: {json.dumps(v)}\n"
        return out
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = ""
        for v in value:
            body = yaml_of(v, indent + 1) if isinstance(v, (dict, list)) and v else pad + "  " + json.dumps(v) + "\n"
            out += pad + "- " + body.lstrip()
        return out
    return pad + json.dumps(value) + "\n"


flag_files = [json.loads((ROOT / "examples/flags.json").read_text())]
for spec in SPECS:
    flag_files.append(json.loads(spec.read_text())["flags"])
for path in sorted((ROOT / "testdata/validation").glob("*.json")):
    for case in json.loads(path.read_text()).get("cases", []):
        if isinstance(case.get("flags"), (dict, list)):
            flag_files.append(case["flags"])

for f in flag_files:
    put("flagfile", b"\x00" + json.dumps(f, indent=1).encode())
    put("flagfile", b"\x01" + yaml_of(f).encode())

for index, spec in enumerate(SPECS):
    for case in json.loads(spec.read_text()).get("cases", []):
        now = case.get("now", "2026-11-24T12:00:00Z").replace("Z", "+00:00")
        seconds = int(datetime.datetime.fromisoformat(now).timestamp())
        put("evaluate", bytes([index]) + struct.pack("<q", seconds) + json.dumps(case.get("context", {})).encode())

stream = [
    b": heartbeat\n\n",
    b"event: snapshot\nid: 3\ndata: {\"type\":\"snapshot\",\"revision\":3,\"flags\":{\"flags\":[]}}\n\n",
    b"event:update\r\nid:4\r\ndata:{\"type\":\"update\",\n data: \"revision\":4}\r\r\n",
    b"data: a\r\n\r\ndata: b\rdata: c\n\n: x\nevent: resync\ndata\n\n",
]
for i, s in enumerate(stream):
    put("sse", bytes([i]) + bytes(range(1, i + 1)) + s)
put("sse", b"\x03\x05\x09\x02" + b"".join(stream))

bodies = [
    (0, 1, {"flag": "dark_mode", "context": {"user_id": "u1", "country": "US"}, "explain": True}),
    (0, 0, {"context": {"user_id": "u1"}}),
    (1, 1, {"context": {"targetingKey": "u1", "plan": "pro"}}),
    (2, 1, {"name": "staging"}),
    (3, 1, {"version": 3}),
    (4, 1, {"to": "production"}),
    (5, 1, {"name": "ci", "role": "sdk", "env": "production"}),
    (6, 1, flag_files[0]),
    (7, 1, flag_files[0]["flags"][0]),
    (8, 1, (flag_files[0].get("segments") or [{"key": "s", "conditions": []}])[0]),
    (9, 3, {"enabled": True, "rollout": None, "description": "patched"}),
    (10, 1, {"events": []}),
]
for route, content_type, body in bodies:
    put("request_body", bytes([route, content_type]) + json.dumps(body).encode())
put("request_body", bytes([6, 2]) + yaml_of(flag_files[0]).encode())
put("request_body", bytes([7, 2]) + yaml_of(flag_files[0]["flags"][0]).encode())

at = "2026-11-24T12:00:00Z"
events = [
    {"type": "exposure", "event_id": "e1", "flag": "new_checkout", "variant": "control",
     "context": {"user_id": "u1"}, "timestamp": at},
    {"type": "conversion", "event_id": "e2", "metric": "purchase", "value": 99.99,
     "context": {"user_id": "u1"}, "timestamp": at},
    {"type": "exposure", "event_id": "e3", "flag": "dark_mode", "variant": "x",
     "context": {"user_id": 7}, "timestamp": "1969-12-31T23:59:59Z"},
    {"type": "conversion", "event_id": "", "metric": "bad metric", "context": [], "timestamp": 5},
    {"type": "click"},
    17,
]
put("events", json.dumps({"events": events}))
for e in events:
    put("events", json.dumps({"events": [e]}))
