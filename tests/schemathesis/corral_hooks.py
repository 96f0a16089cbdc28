"""Schemathesis hooks for the OpenAPI fuzz test (tests/tests/openapi_fuzz.rs).

- Generated clusters only ever point at loopback, and never carry an exec plugin, AWS
  authentication or a proxy: the control plane contacts a cluster's API server (credential
  rotation) and would otherwise send traffic off the machine or run a generated command.
- The run's own API token is never revoked by it (a DeleteToken aimed at it is turned into one
  for a token that does not exist), or every later call would be refused.
- A check: a request the API rejects (4xx) changes nothing stored. Every call is bracketed by two
  reads of what the API holds (clusters and accounts), made with the fuzzing account's token.
"""

import json
import os
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import schemathesis

BASE = os.environ["CORRAL_FUZZ_BASE"]
TOKEN = os.environ["CORRAL_FUZZ_TOKEN"]
TOKEN_ID = os.environ["CORRAL_FUZZ_TOKEN_ID"]
SNAPSHOTS = {}


def _loopback(server):
    try:
        parts = urlsplit(server)
    except ValueError:
        return server
    if not parts.netloc:
        return server
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = "127.0.0.1" if port is None else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _contained(cluster):
    if not isinstance(cluster, dict):
        return cluster
    cluster = dict(cluster)
    if isinstance(cluster.get("server"), str):
        cluster["server"] = _loopback(cluster["server"])
    config = cluster.get("config")
    if isinstance(config, dict):
        config = dict(config)
        for key in ("execProviderConfig", "awsAuthConfig", "proxyUrl"):
            config.pop(key, None)
        cluster["config"] = config
    return cluster


def _read(path):
    request = urllib.request.Request(BASE + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stored():
    clusters = sorted(_read("/api/v1/clusters").get("items", []), key=lambda c: c.get("server", ""))
    accounts = sorted(_read("/api/v1/account").get("items", []), key=lambda a: a.get("name", ""))
    return {"clusters": clusters, "accounts": accounts}


@schemathesis.hook
def before_call(context, case, kwargs):
    # Here rather than in the generation hooks: every request of every phase passes here,
    # examples and the stateful phase's linked calls included.
    params = case.path_parameters
    if isinstance(params, dict) and isinstance(params.get("id"), str) and "://" in params["id"]:
        params["id"] = _loopback(params["id"])
    if isinstance(case.body, dict):
        if isinstance(case.body.get("cluster"), dict):
            case.body = {**case.body, "cluster": _contained(case.body["cluster"])}
        else:
            case.body = _contained(case.body)
    if case.path == "/api/v1/account/{name}/token/{id}" and case.path_parameters.get("id") == TOKEN_ID:
        case.path_parameters["id"] = "not-" + TOKEN_ID
    SNAPSHOTS[id(case)] = _stored()


@schemathesis.check
def rejected_requests_change_nothing(ctx, response, case):
    before = SNAPSHOTS.pop(id(case), None)
    if before is None or response.status_code < 400:
        return None
    after = _stored()
    if after != before:
        raise AssertionError(
            f"{case.method} {case.path} was refused with {response.status_code} but changed what is stored"
        )
    return None
