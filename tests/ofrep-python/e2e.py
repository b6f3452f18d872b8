#!/usr/bin/env python3
"""End-to-end: a stock OpenFeature client against a running `guidon serve`.

The client is the OpenFeature Python SDK with its OFREP provider, both from
PyPI (pinned in requirements.txt); nobody here wrote them. This script

1. creates flags in the environment `production` through Guidon's admin API
   (stdlib urllib, no client library of ours),
2. creates an sdk token for that environment,
3. resolves every flag through the OpenFeature client and asserts value,
   variant, reason, error code and metadata.

Every check prints one line (PASS/FAIL). A failing check also prints what
the client reported and the raw OFREP response Guidon sent for the same
request, so the cause can be told apart (server or provider). Exit status:
0 when every check passed, 1 otherwise, 2 when the setup itself failed.

Usage: e2e.py --server http://127.0.0.1:8080 --admin-token SECRET [--verbose]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

ENV = "production"

# The flags, in flag-format.md's format. Weights of 100/0 keep the chosen
# variant independent of the hash, so the expectations below need no bucket
# arithmetic.
FLAGS: dict[str, dict[str, Any]] = {
    # A boolean flag: no variants, enabled, nothing else -> on for everyone,
    # reason STATIC (§5 step 8), value `enabled` = true, variant named "on"
    # (Guidon names the state when a flag has no variant to name).
    "e2e-boolean": {
        "description": "OFREP e2e: boolean flag",
        "enabled": True,
    },
    "e2e-string": {
        "description": "OFREP e2e: string variants",
        "enabled": True,
        "variants": [
            {"key": "blue", "weight": 100, "value": "#1e40af"},
            {"key": "green", "weight": 0, "value": "#15803d"},
        ],
    },
    "e2e-integer": {
        "description": "OFREP e2e: integer variants",
        "enabled": True,
        "variants": [
            {"key": "ten", "weight": 100, "value": 10},
            {"key": "fifty", "weight": 0, "value": 50},
        ],
    },
    "e2e-object": {
        "description": "OFREP e2e: object variant",
        "enabled": True,
        "variants": [
            {
                "key": "single_page",
                "weight": 100,
                "value": {"layout": "single_page", "steps": 1, "express": True},
            },
            {"key": "classic", "weight": 0, "value": {"layout": "classic", "steps": 3}},
        ],
    },
    # A rule: country == CA -> variant `canada` (TARGETING_MATCH). Everyone
    # else falls through to the weight split, which serves `standard`:
    # reason SPLIT (§5 step 8: a flag with variants falls through to SPLIT).
    "e2e-targeted": {
        "description": "OFREP e2e: targeting rule",
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
    # Disabled, and no off_variant: Guidon answers OFREP's codeDefaultFlag
    # (reason DISABLED, no value), so the client must use its code default.
    "e2e-disabled": {
        "description": "OFREP e2e: disabled flag without an off variant",
        "enabled": False,
        "variants": [{"key": "on", "weight": 100, "value": "served only when enabled"}],
    },
}

UNKNOWN_FLAG = "e2e-no-such-flag"


class SetupError(Exception):
    pass


def http(
    method: str,
    url: str,
    token: str,
    body: Any = None,
    header: str = "Authorization",
) -> tuple[int, Any]:
    """One JSON request; returns (status, decoded body or raw text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if header == "Authorization":
        request.add_header("Authorization", f"Bearer {token}")
    else:
        request.add_header(header, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except urllib.error.URLError as e:
        raise SetupError(f"{method} {url}: {e.reason}") from e
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def expect_status(what: str, got: tuple[int, Any], *allowed: int) -> Any:
    status, body = got
    if status not in allowed:
        raise SetupError(f"{what}: HTTP {status} (expected {allowed}): {body}")
    return body


def setup(server: str, admin_token: str) -> tuple[str, dict[str, int]]:
    """Creates the environment (if needed), the flags and an sdk token.
    Returns the token's secret and each flag's version."""
    expect_status(
        f"create environment {ENV}",
        http("POST", f"{server}/api/v1/envs", admin_token, {"name": ENV}),
        201,
        409,  # already there (the server may create it on first start)
    )
    versions = {}
    for key, flag in FLAGS.items():
        body = expect_status(
            f"PUT flag {key}",
            http("PUT", f"{server}/api/v1/envs/{ENV}/flags/{key}", admin_token, flag),
            200,
            201,
        )
        versions[key] = body["version"]
        print(f"setup: flag {key} written (version {body['version']})")
    # A fresh name per run, so the script can run twice against one server.
    name = f"ofrep-e2e-{os.getpid()}-{os.urandom(3).hex()}"
    body = expect_status(
        "create sdk token",
        http(
            "POST",
            f"{server}/api/v1/tokens",
            admin_token,
            {"name": name, "role": "sdk", "env": ENV},
        ),
        201,
    )
    print(f"setup: sdk token {name!r} for {ENV} created")
    return body["token"], versions


MISSING = object()


@dataclass
class Check:
    name: str
    flag: str
    # client method name: get_boolean_details, get_string_details, ...
    method: str
    default: Any
    context: EvaluationContext
    value: Any
    reason: str
    variant: str | None = None
    error_code: str | None = None
    # Entries that must be in flag_metadata (others may be there too).
    metadata: dict[str, Any] = field(default_factory=dict)


def same(expected: Any, got: Any) -> bool:
    """Equal and of the same JSON type (10 is not 10.0, 1 is not True)."""
    if type(expected) is not type(got):
        return False
    if isinstance(expected, dict):
        return expected.keys() == got.keys() and all(same(v, got[k]) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(got) and all(same(a, b) for a, b in zip(expected, got))
    return expected == got


def plain(x: Any) -> Any:
    """An enum member (Reason, ErrorCode) as its string value."""
    return getattr(x, "value", x)


def run_check(client, check: Check, raw: Callable[[Check], str]) -> bool:
    details = getattr(client, check.method)(check.flag, check.default, check.context)
    got_value = details.value
    got_reason = plain(details.reason)
    got_error = plain(details.error_code)
    problems = []
    if not same(check.value, got_value):
        problems.append(f"value: expected {check.value!r}, got {got_value!r}")
    if got_reason != check.reason:
        problems.append(f"reason: expected {check.reason!r}, got {got_reason!r}")
    if details.variant != check.variant:
        problems.append(f"variant: expected {check.variant!r}, got {details.variant!r}")
    if got_error != check.error_code:
        problems.append(f"error code: expected {check.error_code!r}, got {got_error!r}")
    metadata = dict(details.flag_metadata or {})
    for k, v in check.metadata.items():
        if not same(v, metadata.get(k, MISSING)):
            problems.append(
                f"metadata[{k!r}]: expected {v!r}, got {metadata.get(k, '<absent>')!r}"
            )
    summary = (
        f"{check.flag} via {check.method}: value={got_value!r} variant={details.variant!r} "
        f"reason={got_reason} error_code={got_error}"
    )
    if not problems:
        print(f"PASS  {check.name}: {summary}")
        return True
    print(f"FAIL  {check.name}: {summary}")
    for p in problems:
        print(f"        {p}")
    if details.error_message:
        print(f"        client error message: {details.error_message!r}")
    print(f"        Guidon's OFREP response to the same request: {raw(check)}")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="base URL of guidon serve")
    parser.add_argument("--admin-token", required=True)
    parser.add_argument(
        "--verbose", action="store_true", help="show the SDK's and provider's logs"
    )
    args = parser.parse_args()
    server = args.server.rstrip("/")
    # The SDK logs a provider's unexpected exception with a traceback; the
    # check's FAIL line already names it, so only show logs when asked.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)

    try:
        sdk_token, versions = setup(server, args.admin_token)
    except SetupError as e:
        print(f"ofrep-python e2e: setup failed: {e}", file=sys.stderr)
        return 2

    def raw(check: Check) -> str:
        """What Guidon answers the request the provider makes for a check."""
        ctx: dict[str, Any] = {}
        if check.context.targeting_key:
            ctx["targetingKey"] = check.context.targeting_key
        ctx.update(check.context.attributes)
        status, body = http(
            "POST",
            f"{server}/ofrep/v1/evaluate/flags/{check.flag}",
            sdk_token,
            {"context": ctx},
            header="X-API-Key",
        )
        return f"HTTP {status} {json.dumps(body, sort_keys=True)}"

    api.set_provider(
        OFREPProvider(
            base_url=server,
            headers_factory=lambda: {"Authorization": f"Bearer {sdk_token}"},
            timeout=10.0,
        )
    )
    client = api.get_client("guidon-ofrep-e2e")

    user = EvaluationContext(targeting_key="user-1", attributes={"country": "FR"})
    canadian = EvaluationContext(targeting_key="user-2", attributes={"country": "CA"})

    def version(key: str) -> dict[str, Any]:
        return {"flag_version": versions[key]}

    checks = [
        Check(
            "boolean flag",
            "e2e-boolean",
            "get_boolean_details",
            False,
            user,
            value=True,
            reason="STATIC",
            variant="on",
            metadata=version("e2e-boolean"),
        ),
        Check(
            "string flag",
            "e2e-string",
            "get_string_details",
            "code default",
            user,
            value="#1e40af",
            reason="SPLIT",
            variant="blue",
            metadata=version("e2e-string"),
        ),
        Check(
            "integer flag",
            "e2e-integer",
            "get_integer_details",
            -1,
            user,
            value=10,
            reason="SPLIT",
            variant="ten",
            metadata=version("e2e-integer"),
        ),
        Check(
            "object flag",
            "e2e-object",
            "get_object_details",
            {"layout": "code default"},
            user,
            value={"layout": "single_page", "steps": 1, "express": True},
            reason="SPLIT",
            variant="single_page",
            metadata=version("e2e-object"),
        ),
        Check(
            "targeting match (country CA)",
            "e2e-targeted",
            "get_string_details",
            "code default",
            canadian,
            value="Bienvenue",
            reason="TARGETING_MATCH",
            variant="canada",
            metadata={**version("e2e-targeted"), "rule": "canada"},
        ),
        Check(
            "targeting no match (country FR)",
            "e2e-targeted",
            "get_string_details",
            "code default",
            user,
            value="Welcome",
            reason="SPLIT",
            variant="standard",
            metadata=version("e2e-targeted"),
        ),
        # OpenFeature: DISABLED = "the resolved value was the result of the
        # flag being disabled in the management system". Guidon serves no
        # value (OFREP codeDefaultFlag), so the client's own default is the
        # value, the variant names the state ("off"), and it is not an error.
        Check(
            "disabled flag",
            "e2e-disabled",
            "get_string_details",
            "code default",
            user,
            value="code default",
            reason="DISABLED",
            variant="off",
            metadata=version("e2e-disabled"),
        ),
        # OFREP: 404 flagNotFound -> OpenFeature error FLAG_NOT_FOUND, the
        # code default, reason ERROR.
        Check(
            "unknown flag",
            UNKNOWN_FLAG,
            "get_boolean_details",
            True,
            user,
            value=True,
            reason="ERROR",
            variant=None,
            error_code="FLAG_NOT_FOUND",
        ),
    ]

    passed = 0
    try:
        for check in checks:
            passed += run_check(client, check, raw)
    finally:
        api.shutdown()
    failed = len(checks) - passed
    print(
        f"ofrep-python e2e: {passed}/{len(checks)} checks passed"
        + (f", {failed} FAILED" if failed else "")
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
