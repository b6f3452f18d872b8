#!/usr/bin/env python3
"""Every OFREP response shape Guidon sends, validated against the OFREP spec.

The spec is the vendored copy in testdata/ofrep/ (openapi.yaml and
event-streams.yaml, see testdata/ofrep/README.md). This script drives a
running `guidon serve` through each response shape (single evaluation of
every value type, a variant, a disabled flag with and without off_variant,
404, 400s, 401, 403, bulk 200 with `eventStreams`, bulk 304, bulk 400) and
validates each body against the schema the spec gives for that operation and
status, with openapi-schema-validator's OAS31Validator and a `referencing`
registry holding both spec files (so every `$ref`, including
event-streams.yaml's `openapi.yaml#/...`, resolves). A status the spec does
not document for the operation is a failure too; a status the spec gives no
body schema for (304, 401, 403) is checked for that (304: no body at all).
It then follows the bulk answer's `eventStreams[0]`, changes a flag through
the admin API, reads one SSE event and validates it against `sseEvent` and
its data against `sseEventData`.

Spec corrections. Two of the spec's schemas make `evaluationSuccess`'s
`oneOf` unsatisfiable for every answer that carries a value (the spec's own
examples fail it): `codeDefaultFlag` (`type: object, properties: {}`)
matches any object, and an integer matches both `integerFlag` and
`floatFlag`. The script applies, in memory only, what their descriptions
say: `codeDefaultFlag` has no `value` ("This schema has no `value`
property"), and a `floatFlag` value is not an integer. The vendored files
stay as published; `--self-test` checks that the corrected schemas accept
the spec's own examples and reject hand-mutated bodies.

Prints one line per response, then `schema: N responses validated, F
failures`. Exit status: 0 when all conform, 1 on any mismatch, 2 when the
setup failed.

Usage: schema.py --server URL --admin-token SECRET [--spec-dir testdata/ofrep]
       schema.py --self-test
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import pathlib
import re
import sys
import urllib.parse
from typing import Any

import yaml
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from e2e import ENV, SetupError, expect_status
from e2e import http as api

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A base URI for the registry only: nothing is fetched from it.
BASE = "file:///ofrep-spec/"
ONE = "/ofrep/v1/evaluate/flags/{key}"
BULK = "/ofrep/v1/evaluate/flags"

# One flag per value type and answer shape, in flag-format.md's format.
FLAGS: dict[str, dict[str, Any]] = {
    "schema-boolean": {"enabled": True},
    "schema-string": {
        "enabled": True,
        "variants": [
            {"key": "blue", "weight": 100, "value": "#1e40af"},
            {"key": "green", "weight": 0, "value": "#15803d"},
        ],
    },
    "schema-integer": {
        "enabled": True,
        "variants": [
            {"key": "ten", "weight": 100, "value": 10},
            {"key": "fifty", "weight": 0, "value": 50},
        ],
    },
    "schema-float": {
        "enabled": True,
        "variants": [
            {"key": "half", "weight": 100, "value": 0.5},
            {"key": "quarter", "weight": 0, "value": 0.25},
        ],
    },
    "schema-object": {
        "enabled": True,
        "variants": [
            {"key": "single", "weight": 100, "value": {"layout": "single", "steps": 1}},
            {"key": "classic", "weight": 0, "value": {"layout": "classic", "steps": 3}},
        ],
    },
    # A rule and a percentage: metadata gets `rule` and `bucket`.
    "schema-targeted": {
        "enabled": True,
        "variants": [
            {"key": "standard", "weight": 100, "value": "Welcome"},
            {"key": "canada", "weight": 0, "value": "Bienvenue"},
        ],
        "rules": [
            {
                "name": "canada",
                "conditions": [{"attribute": "country", "operator": "eq", "values": ["CA"]}],
                "serve": {"enabled": True, "variant": "canada"},
            }
        ],
    },
    "schema-rollout": {"enabled": True, "rollout": {"percentage": 100}},
    # Disabled without off_variant: codeDefaultFlag (no value).
    "schema-disabled": {
        "enabled": False,
        "variants": [{"key": "on", "weight": 100, "value": "served only when enabled"}],
    },
    # Disabled with off_variant: the off variant's value.
    "schema-disabled-off": {
        "enabled": False,
        "off_variant": "control",
        "variants": [
            {"key": "treatment", "weight": 100, "value": "new"},
            {"key": "control", "weight": 0, "value": "old"},
        ],
    },
}

# Answers Guidon sends today that the spec rejects: each flag, the error the
# validator must report for it, and why. They live in an environment of
# their own (the bulk answer of ENV must conform in full), are printed as
# KNOWN lines, and do not fail the run; one that conforms does fail it, so
# that it moves to FLAGS.
KNOWN_ENV = "ofrep-schema-known"
KNOWN_VIOLATIONS: dict[str, tuple[dict[str, Any], str, str]] = {
    "schema-undecided": (
        {
            "enabled": True,
            "rules": [
                {
                    "name": "canada",
                    "conditions": [
                        {"attribute": "country", "operator": "eq", "values": ["CA"]}
                    ],
                    "serve": {"enabled": True},
                }
            ],
        },
        "'DEFAULT' is not one of",
        "targeting that does not decide on a flag without variants (flag-format.md "
        "§5 step 8) has reason DEFAULT, which OFREP's reason enum does not list",
    ),
    "schema-prerequisite": (
        {"enabled": True, "prerequisites": [{"flag": "schema-undecided", "enabled": False}]},
        "'DEFAULT' is not one of",
        "a prerequisite not met (§5 step 4) has reason DEFAULT, which OFREP's "
        "reason enum does not list",
    ),
    "schema-array": (
        {"enabled": True, "variants": [{"key": "list", "weight": 100, "value": [1, 2]}]},
        "is not valid under any of the given schemas",
        "an array variant value: OFREP has no array flag type",
    ),
    "schema-null": (
        {"enabled": True, "variants": [{"key": "nothing", "weight": 100}]},
        "is not valid under any of the given schemas",
        'a variant without value is sent as "value": null, which no OFREP flag '
        "type accepts (codeDefaultFlag has no value at all)",
    ),
}


# ---- the spec ----


def load_spec(spec_dir: pathlib.Path) -> tuple[dict[str, Any], Registry]:
    docs = {
        name: yaml.safe_load((spec_dir / name).read_text(encoding="utf-8"))
        for name in ("openapi.yaml", "event-streams.yaml")
    }
    correct(docs["openapi.yaml"])
    registry = Registry().with_resources(
        (BASE + name, DRAFT202012.create_resource(doc)) for name, doc in docs.items()
    )
    return docs["openapi.yaml"], registry


def correct(openapi: dict[str, Any]) -> None:
    """The two corrections the module docstring explains (in memory)."""
    schemas = openapi["components"]["schemas"]
    schemas["codeDefaultFlag"]["not"] = {"required": ["value"]}
    schemas["floatFlag"]["properties"]["value"]["not"] = {"type": "integer"}


def pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901), URI-fragment encoded."""
    escaped = (p.replace("~", "~0").replace("/", "~1") for p in parts)
    return "/" + "/".join(urllib.parse.quote(p, safe="~") for p in escaped)


class Spec:
    def __init__(self, openapi: dict[str, Any], registry: Registry):
        self.openapi = openapi
        self.registry = registry

    def validator(self, document: str, ptr: str) -> OAS31Validator:
        return OAS31Validator(
            {"$ref": f"{BASE}{document}#{ptr}"},
            registry=self.registry,
            format_checker=oas31_format_checker,
        )

    def errors(self, document: str, ptr: str, instance: Any) -> list[str]:
        return [
            f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in self.validator(document, ptr).iter_errors(instance)
        ]

    def component(self, name: str, instance: Any) -> list[str]:
        return self.errors("openapi.yaml", pointer("components", "schemas", name), instance)

    def response(self, path: str, status: int, body: bytes,
                 content_type: str | None = None) -> list[str]:
        """The body (and, when given, its Content-Type) against the spec's
        schema for (POST path, status)."""
        responses = self.openapi["paths"][path]["post"]["responses"]
        documented = responses.get(str(status))
        if documented is None:
            return [f"status {status} is not documented (documented: {', '.join(responses)})"]
        content = documented.get("content")
        if content is None:
            if status == 304 and body:
                return [f"304 must have no body, got {body[:200]!r}"]
            return []
        media = (content_type or "").split(";")[0].strip().lower()
        if content_type is not None and media not in content:
            return [f"Content-Type {content_type!r}, the spec gives {', '.join(content)}"]
        try:
            instance = json.loads(body)
        except ValueError as e:
            return [f"body is not JSON ({e}): {body[:200]!r}"]
        ptr = pointer("paths", path, "post", "responses", str(status), "content",
                      "application/json", "schema")
        return self.errors("openapi.yaml", ptr, instance)

    def examples(self):
        """Each response example in the spec: (path, status, example)."""
        for path, item in self.openapi["paths"].items():
            for status, response in item["post"]["responses"].items():
                for media in (response.get("content") or {}).values():
                    if "example" in media:
                        yield path, int(status), media["example"]


# ---- talking to the server ----


def raw(server: str, method: str, path: str, headers: dict[str, str],
        body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    """One request with exact bytes and headers; (status, headers, body)."""
    url = urllib.parse.urlsplit(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Run:
    def __init__(self, spec: Spec, server: str):
        self.spec = spec
        self.server = server
        self.validated = 0
        self.failures = 0
        self.known = 0

    def check(self, what: str, path: str, expect_status: int, method_path: str,
              headers: dict[str, str], body: Any = None, raw_body: bytes | None = None,
              known: tuple[str, str] | None = None) -> tuple[dict[str, str], bytes]:
        """One request; its status and body checked against the spec. With
        `known` (expected error, why), the body must fail with that error."""
        data = raw_body if raw_body is not None else (
            None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **headers}
        status, got_headers, got = raw(self.server, "POST", method_path, hdrs, data)
        op = "evaluateFlag" if path == ONE else "evaluateFlagsBulk"
        problems = []
        if status != expect_status:
            problems.append(f"expected HTTP {expect_status}, got {status}")
        errors = self.spec.response(path, status, got, got_headers.get("content-type", ""))
        label = f"{op} {status} {what}"
        if known is None:
            self.report(label, problems + errors, got)
        elif not problems and any(known[0] in e for e in errors):
            self.validated += 1
            self.known += 1
            print(f"KNOWN {label}: {known[1]}")
            print(f"        {errors[0]}")
        else:
            problems += [f"{e} (known violation expected: {known[0]!r})" for e in errors]
            if not errors:
                problems.append("conforms now: move it from KNOWN_VIOLATIONS to FLAGS in schema.py")
            self.report(label, problems, got)
        return got_headers, got

    def report(self, label: str, problems: list[str], body: bytes | str) -> None:
        self.validated += 1
        if problems:
            self.failures += 1
            print(f"FAIL  {label}")
            for p in problems:
                print(f"        {p}")
            shown = body if isinstance(body, str) else body.decode("utf-8", "replace")
            # The channel is a credential (the spec: do not log the URL).
            shown = re.sub(r"channel=[^&\"\s]+", "channel=(redacted)", shown)
            print(f"        body: {shown[:500]}")
        else:
            print(f"PASS  {label}")


def setup(server: str, admin_token: str) -> dict[str, str]:
    """The flags, and tokens: sdk (production), metrics. Returns secrets."""
    expect_status(f"create environment {ENV}",
                  api("POST", f"{server}/api/v1/envs", admin_token, {"name": ENV}), 201, 409)
    for key, flag in FLAGS.items():
        expect_status(f"PUT flag {key}",
                      api("PUT", f"{server}/api/v1/envs/{ENV}/flags/{key}", admin_token,
                           {"description": f"OFREP schema check: {key}", **flag}), 200, 201)
    expect_status(f"create environment {KNOWN_ENV}",
                  api("POST", f"{server}/api/v1/envs", admin_token, {"name": KNOWN_ENV}), 201, 409)
    for key, (flag, _, why) in KNOWN_VIOLATIONS.items():
        expect_status(f"PUT flag {key} in {KNOWN_ENV}",
                      api("PUT", f"{server}/api/v1/envs/{KNOWN_ENV}/flags/{key}", admin_token,
                          {"description": f"OFREP schema check, known violation: {why}",
                           **flag}), 200, 201)
    tokens = {}
    for role in ("sdk", "metrics"):
        name = f"ofrep-schema-{role}-{os.getpid()}-{os.urandom(3).hex()}"
        spec = {"name": name, "role": role}
        if role == "sdk":
            spec["env"] = ENV
        body = expect_status(f"create {role} token",
                             api("POST", f"{server}/api/v1/tokens", admin_token, spec), 201)
        tokens[role] = body["token"]
    print(f"setup: {len(FLAGS)} flags in {ENV}, {len(KNOWN_VIOLATIONS)} in {KNOWN_ENV}, "
          "an sdk and a metrics token")
    return tokens


def drive(run: Run, admin_token: str, tokens: dict[str, str]) -> None:
    sdk = {"Authorization": f"Bearer {tokens['sdk']}"}
    admin = {"Authorization": f"Bearer {admin_token}", "X-Guidon-Environment": ENV}
    ctx = {"context": {"targetingKey": "user-1", "country": "FR"}}
    canadian = {"context": {"targetingKey": "user-2", "country": "CA"}}

    def one(key: str) -> str:
        return f"{BULK}/{urllib.parse.quote(key, safe='')}"

    for key in FLAGS:
        run.check(key, ONE, 200, one(key), sdk, ctx)
    run.check("schema-targeted, rule matches", ONE, 200, one("schema-targeted"), sdk, canadian)
    for key, (_, error, why) in KNOWN_VIOLATIONS.items():
        run.check(f"{key} (in {KNOWN_ENV})", ONE, 200, one(key),
                  {**admin, "X-Guidon-Environment": KNOWN_ENV}, ctx, known=(error, why))
    run.check("X-API-Key header", ONE, 200, one("schema-boolean"),
              {"X-API-Key": tokens["sdk"]}, ctx)
    run.check("admin token naming the environment", ONE, 200, one("schema-string"), admin, ctx)
    run.check("unknown flag", ONE, 404, one("schema-no-such-flag"), sdk, ctx)
    run.check("body not JSON", ONE, 400, one("schema-boolean"), sdk, raw_body=b"{not json")
    run.check("no context", ONE, 400, one("schema-boolean"), sdk, {})
    run.check("context not an object", ONE, 400, one("schema-boolean"), sdk, {"context": [1]})
    run.check("unknown environment (admin token)", ONE, 400, one("schema-boolean"),
              {**admin, "X-Guidon-Environment": "no-such-env"}, ctx)
    run.check("admin token naming no environment", ONE, 400, one("schema-boolean"),
              {"Authorization": f"Bearer {admin_token}"}, ctx)
    run.check("no token", ONE, 401, one("schema-boolean"), {}, ctx)
    run.check("unknown token", ONE, 401, one("schema-boolean"),
              {"Authorization": "Bearer not-a-token"}, ctx)
    run.check("sdk token naming another environment", ONE, 403, one("schema-boolean"),
              {**sdk, "X-Guidon-Environment": "staging"}, ctx)
    run.check("metrics token", ONE, 403, one("schema-boolean"),
              {"Authorization": f"Bearer {tokens['metrics']}"}, ctx)

    headers, body = run.check("every flag", BULK, 200, BULK, sdk, ctx)
    run.check("admin token naming the environment", BULK, 200, BULK, admin, ctx)
    etag = headers.get("etag")
    if not etag:
        run.report("evaluateFlagsBulk 200 ETag header", ["no ETag header"], body)
    else:
        run.check("If-None-Match: the ETag", BULK, 304, BULK, {**sdk, "If-None-Match": etag}, ctx)
        run.check("If-None-Match: the weak ETag", BULK, 304, BULK,
                  {**sdk, "If-None-Match": f"W/{etag}"}, ctx)
    run.check("body not JSON", BULK, 400, BULK, sdk, raw_body=b"[")
    run.check("no context", BULK, 400, BULK, sdk, {})
    run.check("unknown environment (admin token)", BULK, 400, BULK,
              {**admin, "X-Guidon-Environment": "no-such-env"}, ctx)
    run.check("no token", BULK, 401, BULK, {}, ctx)
    run.check("unknown token", BULK, 401, BULK, {"X-API-Key": "not-a-token"}, ctx)
    run.check("metrics token", BULK, 403, BULK,
              {"Authorization": f"Bearer {tokens['metrics']}"}, ctx)

    streams = json.loads(body).get("eventStreams") if body else None
    if not streams:
        run.report("evaluateFlagsBulk 200 eventStreams", ["no eventStreams in the bulk answer"],
                   body)
        return
    for i, stream in enumerate(streams):
        run.report(f"eventStream eventStreams[{i}]", run.spec.component("eventStream", stream),
                   json.dumps(stream))
    event_stream(run, admin_token, streams[0])


def event_stream(run: Run, admin_token: str, stream: dict[str, Any]) -> None:
    """Follows the stream (no auth header), changes a flag, reads one event."""
    label = "sseEvent after a flag change"
    endpoint = stream.get("endpoint") or {}
    target = endpoint.get("requestUri") or urllib.parse.urlsplit(stream.get("url", "")).path
    origin = endpoint.get("origin") or run.server
    url = urllib.parse.urlsplit(origin)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", target, headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        ctype = response.getheader("Content-Type", "")
        if response.status != 200 or not ctype.startswith("text/event-stream"):
            run.report(label, [f"GET {target}: HTTP {response.status} {ctype!r}"],
                       response.read().decode("utf-8", "replace"))
            return
        expect_status("PUT a flag change",
                      api("PUT", f"{run.server}/api/v1/envs/{ENV}/flags/schema-boolean",
                           admin_token, {"description": "changed", "enabled": False}), 200, 201)
        event: dict[str, Any] = {}
        lines = []
        # One event: lines up to a blank line, skipping comments
        # (heartbeats); bounded so a silent stream ends the check.
        for _ in range(1000):
            line = response.readline()
            if not line:
                break
            text = line.decode("utf-8").rstrip("\r\n")
            lines.append(text)
            if text == "":
                if "data" in event:
                    break
                continue
            if text.startswith(":"):
                continue
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "retry":
                event[field] = int(value) if value.isdigit() else value
            elif field in ("data", "event", "id"):
                event[field] = event[field] + "\n" + value if field in event else value
    except (OSError, http.client.HTTPException) as e:
        run.report(label, [f"GET {target}: {e}"], "")
        return
    finally:
        conn.close()
    if "data" not in event:
        run.report(label, ["no event with data within the read"], "\n".join(lines))
        return
    run.report(f"{label}: {json.dumps(event)}", run.spec.component("sseEvent", event),
               json.dumps(event))
    try:
        data = json.loads(event["data"])
    except ValueError as e:
        run.report("sseEventData", [f"data is not JSON: {e}"], event["data"])
        return
    # event-streams.yaml's item schema is openapi.yaml's sseEvent; its data
    # (contentSchema, an annotation in JSON Schema) is checked here.
    item = run.spec.errors("event-streams.yaml", pointer(
        "components", "pathItems", "eventStreamConnection", "get", "responses", "200",
        "content", "text/event-stream", "itemSchema"), event)
    run.report("sseEvent via event-streams.yaml itemSchema", item, json.dumps(event))
    problems = run.spec.component("sseEventData", data)
    if data.get("type") != "refetchEvaluation":
        problems.append(f"type is {data.get('type')!r}, expected 'refetchEvaluation'")
    run.report("sseEventData", problems, event["data"])


# The spec's own examples that its schemas reject, and why. Guidon sends no
# such item (a bulk answer lists only flags that exist).
KNOWN_BAD_EXAMPLES = {
    (BULK, 200): "its flags[2] has errorCode FLAG_NOT_FOUND, which evaluationFailure's "
    "errorCode enum does not list",
}


def self_test(spec: Spec) -> int:
    """The corrected schemas accept the spec's own examples, and reject
    hand-mutated bodies: the validator can fail."""
    failures = 0
    for path, status, example in spec.examples():
        errors = spec.response(path, status, json.dumps(example).encode())
        known = KNOWN_BAD_EXAMPLES.get((path, status))
        ok = bool(errors) == bool(known)
        failures += not ok
        verdict = f"rejected as known ({known}): {errors[0]}" if errors and known else (
            errors or "valid")
        print(f"{'PASS' if ok else 'FAIL'}  spec example {path} {status}: {verdict}")
    good = {"key": "f", "reason": "STATIC", "variant": "on", "value": True,
            "metadata": {"flag_version": 3}}
    mutations = {
        "reason not in the enum": {**good, "reason": "DEFAULT"},
        "no key": {k: v for k, v in good.items() if k != "key"},
        "metadata value an object": {**good, "metadata": {"x": {"y": 1}}},
        "value null": {**good, "value": None},
    }
    bulk_good = {"flags": [good], "eventStreams": [
        {"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events?env=e&channel=c"}}]}
    bulk = {
        "eventStream with url and endpoint": {"flags": [good], "eventStreams": [
            {**bulk_good["eventStreams"][0], "url": "http://127.0.0.1/x"}]},
        "requestUri not starting with /": {"flags": [good], "eventStreams": [
            {"type": "sse", "endpoint": {"requestUri": "ofrep/v1/events"}}]},
        "no flags": {"eventStreams": bulk_good["eventStreams"]},
    }
    cases = [(ONE, 200, name, body, False) for name, body in mutations.items()]
    cases += [(ONE, 200, "unmutated", good, True), (BULK, 200, "unmutated", bulk_good, True)]
    cases += [(BULK, 200, name, body, False) for name, body in bulk.items()]
    cases += [(ONE, 404, "errorCode GENERAL on 404",
               {"key": "f", "errorCode": "GENERAL"}, False),
              (BULK, 400, "no errorCode", {"errorDetails": "x"}, False),
              (BULK, 418, "undocumented status", {}, False)]
    for name, schema, body, valid in [
        ("unmutated", "sseEventData", {"type": "refetchEvaluation", "etag": "x"}, True),
        ("no type", "sseEventData", {"etag": "x"}, False),
        ("lastModified negative", "sseEventData", {"type": "t", "lastModified": -1}, False),
        ("data an object", "sseEvent", {"data": {"type": "refetchEvaluation"}}, False),
        ("no data", "sseEvent", {"id": "3"}, False),
    ]:
        errors = spec.component(schema, body)
        ok = (not errors) == valid
        failures += not ok
        verdict = "accepted" if not errors else f"rejected: {errors[0]}"
        print(f"{'PASS' if ok else 'FAIL'}  {schema} {name}: {verdict}")
    for path, status, name, body, valid in cases:
        errors = spec.response(path, status, json.dumps(copy.deepcopy(body)).encode())
        ok = (not errors) == valid
        failures += not ok
        verdict = "accepted" if not errors else f"rejected: {errors[0]}"
        print(f"{'PASS' if ok else 'FAIL'}  {path} {status} {name}: {verdict}")
    print(f"schema self-test: {failures} failures")
    return 0 if failures == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server")
    parser.add_argument("--admin-token")
    parser.add_argument("--spec-dir", type=pathlib.Path, default=ROOT / "testdata" / "ofrep")
    parser.add_argument("--self-test", action="store_true",
                        help="check the validator on the spec's examples and mutated bodies")
    args = parser.parse_args()
    spec = Spec(*load_spec(args.spec_dir))
    if args.self_test:
        return self_test(spec)
    if not args.server or not args.admin_token:
        parser.error("--server and --admin-token are required (or --self-test)")
    server = args.server.rstrip("/")
    run = Run(spec, server)
    try:
        tokens = setup(server, args.admin_token)
        drive(run, args.admin_token, tokens)
    except SetupError as e:
        print(f"ofrep-python schema: setup failed: {e}", file=sys.stderr)
        return 2
    known = f" ({run.known} known violations, the KNOWN lines above)" if run.known else ""
    print(f"schema: {run.validated} responses validated against the OFREP spec, "
          f"{run.failures} failures{known}")
    return 0 if run.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
