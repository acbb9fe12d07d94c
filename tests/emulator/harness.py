#!/usr/bin/env python3
"""EC2 emulator harness: moto in-process, plus the AWS rules moto lacks.

moto (pinned in requirements.txt) answers the EC2 Query API. This module wraps
moto's WSGI application in a middleware of ours that

* handles the VPC-endpoint calls itself (CreateVpcEndpoint, ModifyVpcEndpoint,
  DeleteVpcEndpoints, DescribeVpcEndpoints, DescribeVpcEndpointServices) on top
  of moto's backend objects, enforcing AWS's validation rules, endpoint state
  lifecycles, ClientToken idempotency and AWS-shaped DNS entries;
* checks DeleteSecurityGroup for dependent endpoints/ENIs before passing it on;
* passes every other request to moto unchanged;
* injects faults (errors, latency), counts calls, and serves a JSON control API
  under /_harness/ on the same port;
* serves several accounts and regions (issue 17): every EC2 call acts in the account
  of its access key (moto keys its backends by it; keys from STS AssumeRole belong to
  the role's account) and the region it is signed for. STS AssumeRole is checked
  against the seeded roles' trust (the caller's account, the external id) before moto
  answers it, sessions can be capped to a few seconds (config `session_seconds`), and
  an EC2 call signed with an expired session gets ExpiredToken. What it does not
  reproduce of STS: see README.md ("Accounts and STS").

Run: python tests/emulator/harness.py --host 127.0.0.1 --port P --region us-east-1 \
        --seed-out .rig/seed.json
See tests/emulator/README.md for the control API and the list of rules.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import socket
import string
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape as xml_escape

# Dummy credentials for anything in this process that might look for them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# moto loads ~1300 public AMIs into every fresh backend (0.2 s per reset); the
# harness needs none of them (seeded instances use a fixed image id).
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

from botocore.model import OperationNotFoundError  # noqa: E402
from werkzeug.datastructures import MultiDict  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import run_wsgi_app  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

import moto  # noqa: E402
from moto.core.parse import EC2QueryParser  # noqa: E402
from moto.core.serialize import XFormedAttributePicker, get_serializer_class  # noqa: E402
from moto.core.utils import get_service_model  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.iam.models import get_account_id_from  # noqa: E402
from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend  # noqa: E402
from moto.moto_api._internal.models import moto_api_backend  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.core import responses as moto_responses  # noqa: E402
from moto.ec2.models import security_groups as moto_security_groups  # noqa: E402
from moto.ec2.models.core import TaggedEC2Resource  # noqa: E402
from moto.ec2.models.tags import TagBackend  # noqa: E402
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix  # noqa: E402
from moto.ec2.utils import is_tag_filter as moto_is_tag_filter  # noqa: E402

LOG = logging.getLogger("bpl-harness")


# ------------------------------------------------------------ moto, faster
# With thousands of resources moto spends its time in a few places whose answers
# never change; these replacements give the same results without the scans.
# perf.py measures them (see README.md).

_MOTO_GET_TAGS = TaggedEC2Resource.get_tags
_FNMATCH_SPECIAL = frozenset("*?[]\\")


def _get_tags_by_id(self: Any) -> list[dict[str, str]]:
    """TaggedEC2Resource.get_tags without the walk over every tag of every resource.

    moto asks its TagBackend for `describe_tags(filters={"resource-id": [self.id]})`,
    which matches the id (an fnmatch pattern) against every tagged resource: for an id
    without pattern characters only the resource itself matches, so its own tag dict,
    in its order, is the answer.
    """
    rid = self.id
    if not rid:
        return []
    be = self.ec2_backend
    if (
        not isinstance(rid, str)
        or getattr(type(be), "describe_tags", None) is not TagBackend.describe_tags
        or not isinstance(getattr(be, "tags", None), dict)
        or not _FNMATCH_SPECIAL.isdisjoint(rid)
    ):
        return _MOTO_GET_TAGS(self)
    tags = be.tags.get(rid)
    if not tags:
        return []
    rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
    return [{"resource_id": rid, "key": k, "value": v, "resource_type": rtype} for k, v in tags.items()]


TaggedEC2Resource.get_tags = _get_tags_by_id  # type: ignore[method-assign]
# The response classes' method names (inspect.getmembers on every request).
moto_responses.method_names_from_class = functools.cache(moto_responses.method_names_from_class)


@functools.lru_cache(maxsize=4096)
def _api_pattern(pattern: str) -> re.Pattern[str]:
    """moto.core.utils.aws_api_matches's regex for a pattern, compiled once."""
    pattern, _ = re.subn(r"(?<!\\)\*", r".*", pattern)
    pattern, _ = re.subn(r"(?<!\\)\?", r".?", pattern)
    return re.compile(f"^{pattern}$")


def _aws_api_matches(pattern: str, string: Any) -> bool:
    return _api_pattern(pattern).match(str(string)) is not None


# Regex metacharacters: a group filter value without any is matched by moto as `^value$`.
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


def _api_literals(values: Any) -> set[str] | None:
    """The strings `^v$` matches for each value v, if every value is free of regex syntax."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    if any(not _REGEX_SPECIAL.isdisjoint(v) for v in values):
        return None
    return {v for v in values} | {v + "\n" for v in values}


def _get_security_group_from_id(self: Any, group_id: str) -> Any:
    """moto scans every group of every VPC; it keeps each group under its id."""
    for groups in list(self.groups.values()):
        group = groups.get(group_id)
        if group is not None and group.id == group_id:
            return group
    return None


def _describe_security_groups(
    self: Any,
    group_ids: list[str] | None = None,
    groupnames: list[str] | None = None,
    filters: Any = None,
) -> list[Any]:
    """moto 5.2.5's describe_security_groups, with exact group-name / group-id filter
    values applied first by a set lookup (what moto's anchored regex matches) before
    moto's own filter code runs on what is left."""
    all_groups = self.groups.copy()
    matches = list(itertools.chain(*[x.copy().values() for x in all_groups.values()]))
    if group_ids:
        matches = [grp for grp in matches if grp.id in group_ids]
        if len(group_ids) > len(matches):
            unknown_ids = set(group_ids) - set(matches)
            raise moto_security_groups.InvalidSecurityGroupNotFoundError(unknown_ids)
    if groupnames:
        matches = [grp for grp in matches if grp.name in groupnames]
        if len(groupnames) > len(matches):
            unknown_names = set(groupnames) - set(matches)
            raise moto_security_groups.InvalidSecurityGroupNotFoundError(unknown_names)
    if filters:
        # Only when moto knows every filter name: otherwise which groups get as far as
        # the unknown name (and fail there) must stay as in moto.
        if (
            isinstance(filters, dict)
            and matches
            and all(k in matches[0].filters or moto_is_tag_filter(k) for k in filters)
        ):
            for key, attr in (("group-name", "group_name"), ("group-id", "id"), ("vpc-id", "vpc_id")):
                allowed = _api_literals(filters.get(key)) if key in filters else None
                if allowed is not None:
                    matches = [grp for grp in matches if str(getattr(grp, attr)) in allowed]
        matches = [grp for grp in matches if grp.matches_filters(filters)]
    return matches


if moto.__version__ == "5.2.5":  # the replacements copy this version's code
    moto_security_groups.aws_api_matches = _aws_api_matches
    moto_security_groups.SecurityGroupBackend.get_security_group_from_id = _get_security_group_from_id
    moto_security_groups.SecurityGroupBackend.describe_security_groups = _describe_security_groups


def _cache_backend_for_host(app: DomainDispatcherApplication) -> None:
    """The dispatcher maps a host to a backend by a list of regexes on every request."""
    lookup = app.get_backend_for_host
    known: dict[str, Any] = {}

    def get_backend_for_host(host: str | None) -> Any:
        if host is not None and host in known:
            return known[host]
        backend = lookup(host)
        if host is not None and backend:
            known[host] = backend
        return backend

    app.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]

ACCOUNT_ID = "123456789012"  # moto's default account: the operator's own (key "testing")
DEFAULT_REGION = "us-east-1"
SECOND_REGION = "us-west-2"
# Further accounts, each with a role the operator's account may assume (issue 17).
# Account B's role requires an external id; account C's does not.
ACCOUNT_B = "111111111111"
ACCOUNT_C = "222222222222"
ROLE_NAME = "bedrock-privatelink-target"
EXTERNAL_ID_B = "bpl-rig-external-id"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
EC2_API_VERSION = "2016-11-15"

ENDPOINT_STATES = (
    "pendingAcceptance",
    "pending",
    "available",
    "deleting",
    "deleted",
    "rejected",
    "failed",
    "expired",
    "partial",
)
HOLD_STATES = ("pending", "pendingAcceptance", "partial")
FAIL_STATES = ("failed", "rejected", "expired")
# States in which an endpoint still owns its private DNS domain.
DNS_HOLDING_STATES = ("pendingAcceptance", "pending", "available", "deleting", "partial")
# States in which tick() may still have to change an endpoint.
UNSETTLED_STATES = ("pending", "pendingAcceptance", "partial", "deleting", "deleted")
# States from which a modification puts the endpoint back into `pending`.
MODIFY_TO_PENDING_STATES = ("pending", "available", "partial")

# Bedrock interface endpoint services, short name -> private DNS name template.
BEDROCK_SERVICES: dict[str, str] = {
    "bedrock": "bedrock.{region}.amazonaws.com",
    "bedrock-runtime": "bedrock-runtime.{region}.amazonaws.com",
    "bedrock-agent": "bedrock-agent.{region}.amazonaws.com",
    "bedrock-agent-runtime": "bedrock-agent-runtime.{region}.amazonaws.com",
    "bedrock-mantle": "bedrock-mantle.{region}.api.aws",
    "bedrock-data-automation": "bedrock-data-automation.{region}.amazonaws.com",
    "bedrock-data-automation-runtime": "bedrock-data-automation-runtime.{region}.amazonaws.com",
    "bedrock-agentcore": "bedrock-agentcore.{region}.amazonaws.com",
}

# Route 53 hosted zone ids of the regional `*.vpce.amazonaws.com` zones (the
# HostedZoneId AWS returns for regional and zonal endpoint DNS entries).
VPCE_HOSTED_ZONES = {
    "us-east-1": "Z7HUB22UULQXV",
    "us-west-2": "Z1YSA3EXCYUU9Z",
}

FAULT_ERRORS: dict[str, tuple[int, str]] = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "InternalError": (500, "An internal error has occurred."),
    "Unavailable": (503, "The server is overloaded and can't handle the request."),
}

DEFAULT_POLICY = json.dumps(
    {
        "Version": "2008-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}],
    }
)

MAX_CLIENT_TOKEN = 64
SEED_VPC_CIDR = "10.0.0.0/16"


class Ec2Error(Exception):
    """An EC2 API error, rendered as EC2's XML error document."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


@functools.lru_cache(maxsize=4096)
def _aws_wildcard(pattern: str) -> re.Pattern[str]:
    """EC2 filter values: `*` any run, `?` one char, `\\` escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def _is_literal(pattern: str) -> bool:
    return "*" not in pattern and "?" not in pattern and "\\" not in pattern


def _matches_any(value: Any, patterns: list[str]) -> bool:
    values = value if isinstance(value, (list, tuple, set)) else [value]
    for v in values:
        if v is None:
            continue
        s = str(v)
        for p in patterns:
            if _is_literal(p):
                # What the anchored regex of a literal matches (`$` also before a final newline).
                if s == p or (s[-1:] == "\n" and s[:-1] == p):
                    return True
            elif _aws_wildcard(p).match(s):
                return True
    return False


def _new_request_id() -> str:
    return str(uuid.uuid4())


def error_response(code: str, message: str, status: int = 400) -> Response:
    rid = _new_request_id()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{xml_escape(code)}</Code>"
        f"<Message>{xml_escape(message)}</Message></Error></Errors>"
        f"<RequestID>{rid}</RequestID></Response>"
    )
    return Response(
        body,
        status=status,
        content_type="text/xml;charset=UTF-8",
        headers={"x-amzn-RequestId": rid},
    )


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n",
                    status=status, content_type="application/json")


@dataclass
class HarnessConfig:
    pending_seconds: float = 1.0
    deleting_seconds: float = 1.0
    deleted_seconds: float = 1.0
    eni_linger_seconds: float = 0.0
    # Longest lifetime of an AssumeRole session (0: as asked, moto's default 1 h).
    session_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "pending_seconds": self.pending_seconds,
            "deleting_seconds": self.deleting_seconds,
            "deleted_seconds": self.deleted_seconds,
            "eni_linger_seconds": self.eni_linger_seconds,
            "session_seconds": self.session_seconds,
        }


@dataclass
class FaultRule:
    action: str
    error: str | None = None
    rate: float = 1.0
    latency_ms: float = 0.0
    count: int | None = None  # how many faults this rule may still inject; None = no limit
    phase: str = "before"  # before: call not executed; after: executed, answer replaced
    account: str | None = None  # only calls in this account (None: any)
    region: str | None = None  # only calls in this region (None: any)

    def key(self) -> str:
        return "|".join((self.action, self.account or "", self.region or ""))

    def matches(self, account: str, region: str) -> bool:
        return (self.account is None or self.account == account) and (
            self.region is None or self.region == region
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "account": self.account,
            "region": self.region,
            "error": self.error,
            "rate": self.rate,
            "latency_ms": self.latency_ms,
            "count": self.count,
            "phase": self.phase,
        }


@dataclass
class EndpointMeta:
    """Harness-side state of one VPC endpoint (moto holds the rest)."""

    region: str
    suffix: str
    private_zone_id: str
    account: str = ACCOUNT_ID
    pending_until: float = 0.0
    hold_state: str | None = None
    hold_until: float | None = None
    fail_after_pending: dict[str, str] | None = None
    deleting_override: float | None = None
    deleting_started: float | None = None
    deleting_until: float | None = None
    vanish_at: float | None = None


@dataclass
class Role:
    """A seeded IAM role: who may assume it (accounts) and the external id it requires."""

    arn: str
    account: str
    trusted_accounts: tuple[str, ...]
    external_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "account": self.account,
            "trusted_accounts": list(self.trusted_accounts),
            "external_id": self.external_id,
        }


@dataclass
class TokenRecord:
    fingerprint: str
    endpoint: Any  # moto VPCEndPoint (kept even after it vanished)


class Harness:
    """WSGI application: our rules and control API in front of moto."""

    def __init__(
        self,
        region: str = DEFAULT_REGION,
        pending_seconds: float = 1.0,
        deleting_seconds: float = 1.0,
        deleted_seconds: float = 1.0,
        eni_linger_seconds: float = 0.0,
        fault_seed: int | None = None,
        session_seconds: float = 0.0,
        seed_topology: bool = True,
        seed_out: str | None = None,
    ):
        self.region = region
        self.second_region = SECOND_REGION if region != SECOND_REGION else DEFAULT_REGION
        self._tls = threading.local()  # the account of the request being handled
        self._initial_config = HarnessConfig(
            pending_seconds=float(pending_seconds),
            deleting_seconds=float(deleting_seconds),
            deleted_seconds=float(deleted_seconds),
            eni_linger_seconds=float(eni_linger_seconds),
            session_seconds=float(session_seconds),
        )
        self.fault_seed = fault_seed
        self._initial_fault_seed = fault_seed
        self.seed_topology_enabled = seed_topology
        self.seed_out = seed_out
        self.started = time.time()

        self.moto_app = DomainDispatcherApplication(create_backend_app)
        _cache_backend_for_host(self.moto_app)
        self.ec2_model = get_service_model("ec2")
        self.serializer_cls = get_serializer_class("ec2", "ec2")

        self.lock = threading.RLock()  # EC2 model + harness state
        self.stats_lock = threading.Lock()  # counters + faults
        self._svc_cache: dict[str, list[dict[str, Any]]] = {}
        self._svc_index: dict[str, dict[str, dict[str, Any]]] = {}  # region -> name -> first entry
        self._names = random.Random()  # DNS suffixes, zone ids (not the fault RNG)

        self.handlers = {
            "CreateVpcEndpoint": self._create_vpc_endpoint,
            "ModifyVpcEndpoint": self._modify_vpc_endpoint,
            "DeleteVpcEndpoints": self._delete_vpc_endpoints,
            "DescribeVpcEndpoints": self._describe_vpc_endpoints,
            "DescribeVpcEndpointServices": self._describe_vpc_endpoint_services,
            "DeleteSecurityGroup": self._delete_security_group,
        }
        self.seed: dict[str, Any] | None = None
        self.dataplane: Any = None  # dataplane.DataPlane when --data-netns is given
        # Bumped by everything that may change EC2 state (a call other than a Describe, an
        # endpoint's clock, the control API): the data plane re-reads the state only when it moved.
        self.changes = 0
        self.reset(seed=seed_topology)

    # ------------------------------------------------------------------ state
    def reset(self, seed: bool | None = None) -> dict[str, Any] | None:
        """Clear moto's backends and every harness table; re-seed if asked."""
        with self.lock:
            with self.stats_lock:
                moto_api_backend.reset()
                self.config = copy.deepcopy(self._initial_config)
                self.meta: dict[str, EndpointMeta] = {}
                # Endpoints tick() must look at: every one whose meta was touched since tick
                # last found it settled (available/failed/... with no hold). Settled endpoints
                # need nothing from tick until the harness changes them, which it does only
                # after `_meta_for`, so the clock costs O(endpoints in motion), not O(all).
                # Each maps to the monotonic time from which tick() has work for it.
                self.unsettled: dict[str, float] = {}
                # Per (account, region): (backend, ENI ids, subnet id -> primary ENI addresses).
                self._eni_ips: dict[tuple[str, str], tuple[Any, set[str], dict[str, set[Any]]]] = {}
                self.tokens: dict[tuple[str, str, str], TokenRecord] = {}  # (account, region, token)
                self.sg_linger: list[tuple[str, str, str, float]] = []  # (account, region, sg id, until)
                # STS (issue 17): the roles, the sessions handed out (access key -> account,
                # role, wall-clock expiry), AssumeRole outcomes per role, ExpiredToken answers.
                self.roles: dict[str, Role] = {}
                self.sessions: dict[str, tuple[str, str, float]] = {}
                self.assume_role: dict[str, dict[str, int]] = {}
                self.expired_rejections: dict[str, int] = {}
                self.calls_by_scope: dict[str, dict[str, int]] = {}  # "account/region" -> action -> n
                self.service_azs: dict[str, list[str]] = {}
                self.new_endpoint_rules: list[dict[str, Any]] = []
                self.faults: dict[str, FaultRule] = {}
                self.calls: dict[str, int] = {}
                self.faulted: dict[str, int] = {}
                self.fault_seed = self._initial_fault_seed
                self.rng = random.Random(self.fault_seed)
                self.seed = None
            if self.dataplane is not None:
                self.dataplane.reset()
            self._service_catalog(self.region)  # warm: the first build takes ~1 s
            if self.seed_topology_enabled if seed is None else seed:
                self.seed = self._seed_topology()
                if self.seed_out:
                    self._write_seed(self.seed_out, self.seed)
            return self.seed

    def _account(self) -> str:
        """The account of the request being handled (the operator's own outside a request)."""
        return getattr(self._tls, "account", None) or ACCOUNT_ID

    def _backend(self, region: str, account: str | None = None) -> Any:
        return ec2_backends[account or self._account()][region]

    @staticmethod
    def _access_key(environ: dict[str, Any], values: MultiDict) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION", "") or ""
        m = re.search(r"Credential=([^/,\s]+)/", auth)
        if m:
            return m.group(1)
        cred = values.get("X-Amz-Credential")
        return cred.split("/")[0] if cred else None

    @staticmethod
    def _zones(region: str) -> list[Any]:
        return sorted(RegionsAndZonesBackend.zones.get(region, []), key=lambda z: z.name)

    def _zone_ids(self, region: str) -> dict[str, str]:
        return {z.name: z.zone_id for z in self._zones(region)}

    # --------------------------------------------------------------- seeding
    def _seed_topology(self) -> dict[str, Any]:
        seed = self._seed_cluster()
        seed["account"] = ACCOUNT_ID
        seed["second_region"] = self.second_region
        # Other accounts and the second region (issue 17): a VPC with subnets in each, and a
        # role per account that the operator's account may assume.
        others = []
        for n, (account, region) in enumerate(
            [(ACCOUNT_B, self.region), (ACCOUNT_B, self.second_region),
             (ACCOUNT_C, self.region), (ACCOUNT_ID, self.second_region)], start=1):
            others.append(self._seed_vpc(account, region, f"10.{100 + n}.0.0/16"))
        seed["vpcs"] = others
        roles = [
            Role(f"arn:aws:iam::{ACCOUNT_B}:role/{ROLE_NAME}", ACCOUNT_B, (ACCOUNT_ID,), EXTERNAL_ID_B),
            Role(f"arn:aws:iam::{ACCOUNT_C}:role/{ROLE_NAME}", ACCOUNT_C, (ACCOUNT_ID,)),
        ]
        self.roles = {r.arn: r for r in roles}
        seed["roles"] = [r.as_dict() for r in roles]
        return seed

    def _seed_vpc(self, account: str, region: str, cidr: str) -> dict[str, Any]:
        """A VPC with DNS support and one subnet in each of the region's first three zones."""
        be = self._backend(region, account)
        vpc = be.create_vpc(cidr)
        be.create_tags([vpc.id], {"Name": f"bpl-rig-{account}-{region}"})
        be.modify_vpc_attribute(vpc.id, "enable_dns_support", True)
        be.modify_vpc_attribute(vpc.id, "enable_dns_hostnames", True)
        zone_ids = self._zone_ids(region)
        net = ipaddress.IPv4Network(cidr)
        subnets = []
        for i, az in enumerate([z.name for z in self._zones(region)][:3], start=1):
            sub = str(list(net.subnets(new_prefix=24))[i])
            sn = be.create_subnet(vpc.id, sub, availability_zone=az)
            be.create_tags([sn.id], {"Name": f"bpl-rig-private-{az}", "kubernetes.io/role/internal-elb": "1"})
            subnets.append({"id": sn.id, "az": az, "az_id": zone_ids.get(az), "cidr": sub})
        return {"account": account, "region": region, "vpc_id": vpc.id, "vpc_cidr": cidr, "subnets": subnets}

    def _seed_cluster(self) -> dict[str, Any]:
        region = self.region
        be = self._backend(region, ACCOUNT_ID)
        vpc = be.create_vpc(SEED_VPC_CIDR)
        be.create_tags([vpc.id], {"Name": "bpl-rig-cluster"})
        be.modify_vpc_attribute(vpc.id, "enable_dns_support", True)
        be.modify_vpc_attribute(vpc.id, "enable_dns_hostnames", True)
        zone_ids = self._zone_ids(region)
        azs = [z.name for z in self._zones(region)][:3]
        image_id = next(iter(getattr(be, "amis", {}) or {}), "ami-12c6146b")
        subnets, instances = [], []
        for i, az in enumerate(azs, start=1):
            cidr = f"10.0.{i}.0/24"
            sn = be.create_subnet(vpc.id, cidr, availability_zone=az)
            be.create_tags(
                [sn.id],
                {"Name": f"bpl-rig-private-{az}", "kubernetes.io/role/internal-elb": "1"},
            )
            subnets.append({"id": sn.id, "az": az, "az_id": zone_ids.get(az), "cidr": cidr})
            reservation = be.run_instances(
                image_id,
                1,
                None,
                [],
                instance_type="m5.large",
                is_instance_type_default=False,
                placement=az,
                placement_hostid=None,
                region_name=region,
                subnet_id=sn.id,
                key_name=None,
                security_group_ids=[],
                nics=[],
                private_ip=None,
                associate_public_ip=None,
                tags={"instance": {"Name": f"bpl-rig-node-{az}"}},
                ebs_optimized=False,
                disable_api_stop=False,
                instance_market_options={},
                instance_initiated_shutdown_behavior=None,
                launch_template={},
                hibernation_options={},
                iam_instance_profile_name=None,
                iam_instance_profile_arn=None,
                monitoring_state="disabled",
                ipv6_address_count=None,
                metadata_options={},
                client_token=None,
            )
            inst = reservation.instances[0]
            instances.append(
                {
                    "id": inst.id,
                    "az": az,
                    "subnet_id": sn.id,
                    "private_ip": inst.private_ip,
                    "private_dns": inst.private_dns_name,
                }
            )
        return {
            "region": region,
            "vpc_id": vpc.id,
            "vpc_cidr": SEED_VPC_CIDR,
            "subnets": subnets,
            "instances": instances,
        }

    @staticmethod
    def _write_seed(path: str, seed: dict[str, Any]) -> None:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(seed, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)

    # ------------------------------------------------------------ lifecycle
    def _meta_for(self, ep: Any, region: str) -> EndpointMeta:
        m = self.meta.get(ep.id)
        if m is None:
            m = EndpointMeta(region=region, suffix=self._suffix(), private_zone_id=self._zone_id(),
                             account=self._account())
            self.meta[ep.id] = m
        self.unsettled[ep.id] = -math.inf
        return m

    def _suffix(self) -> str:
        return "".join(self._names.choice(string.ascii_lowercase + string.digits) for _ in range(8))

    def _zone_id(self) -> str:
        return "Z" + "".join(
            self._names.choice(string.ascii_uppercase + string.digits) for _ in range(20)
        )

    def tick(self) -> None:
        """Advance every endpoint's state to what the clock says."""
        with self.lock:
            now = time.monotonic()
            backends: dict[tuple[str, str], Any] = {}
            for ep_id, due in list(self.unsettled.items()):
                if now < due:
                    continue
                m = self.meta.get(ep_id)
                if m is None:
                    del self.unsettled[ep_id]
                    continue
                be = backends.get((m.account, m.region))
                if be is None:
                    be = backends[(m.account, m.region)] = self._backend(m.region, m.account)
                ep = be.vpc_end_points.get(ep_id)
                if ep is None:
                    del self.meta[ep_id]
                    del self.unsettled[ep_id]
                    continue
                self._tick_one(be, ep, m, now)
                self.changes += 1
                if ep_id not in self.meta or (not m.hold_state and ep.state not in UNSETTLED_STATES):
                    del self.unsettled[ep_id]  # gone, or nothing to do until it is touched again
                else:
                    self.unsettled[ep_id] = self._due(ep, m)

    @staticmethod
    def _due(ep: Any, m: EndpointMeta) -> float:
        """When _tick_one next has something to do for an endpoint nobody touches."""
        if m.hold_state:  # held: only the end of the hold changes anything
            return m.hold_until if m.hold_until is not None else math.inf
        if ep.state == "deleting":
            return m.deleting_until if m.deleting_until is not None else math.inf
        if ep.state == "deleted":
            return m.vanish_at if m.vanish_at is not None else math.inf
        return m.pending_until

    def _tick_one(self, be: Any, ep: Any, m: EndpointMeta, now: float) -> None:
        ep_id = ep.id
        if m.hold_state and m.hold_until is not None and now >= m.hold_until:
            m.hold_state, m.hold_until = None, None
        state = ep.state
        if state == "deleting":
            if m.deleting_until is not None and now >= m.deleting_until:
                self._finish_delete(be, ep, m, now)
                if ep_id not in self.meta:
                    return  # vanished at once (deleted_seconds == 0)
                state = ep.state
        if state == "deleted":
            if m.vanish_at is not None and now >= m.vanish_at:
                be.vpc_end_points.pop(ep_id, None)
                del self.meta[ep_id]
            return
        if state == "deleting":
            return
        if m.hold_state:
            ep.state = m.hold_state
            return
        if state in ("pending", "pendingAcceptance", "partial") and now >= m.pending_until:
            if m.fail_after_pending:
                f = m.fail_after_pending
                m.fail_after_pending = None
                ep.state = f["state"]
                ep.last_error = {"Code": f["code"], "Message": f["message"]}
            else:
                ep.state = "available"

    def _finish_delete(self, be: Any, ep: Any, m: EndpointMeta, now: float) -> None:
        if self.config.eni_linger_seconds > 0:
            for gid in ep.security_group_ids:
                self.sg_linger.append((m.account, m.region, gid, now + self.config.eni_linger_seconds))
        if not ep.vpc_endpoint_type:
            ep.vpc_endpoint_type = "Gateway"
        be.delete_vpc_endpoints(vpce_ids=[ep.id])  # removes ENIs / routes, state=deleted
        ep.state = "deleted"
        m.vanish_at = now + max(0.0, self.config.deleted_seconds)
        if self.config.deleted_seconds <= 0:
            be.vpc_end_points.pop(ep.id, None)
            self.meta.pop(ep.id, None)

    # ----------------------------------------------------------- catalogue
    def _service_catalog(self, region: str) -> list[dict[str, Any]]:
        """Endpoint services of a region, with harness additions and AZ overrides."""
        be = self._backend(region)
        base = self._base_catalog(region)
        zone_ids = self._zone_ids(region)
        custom = [c.to_dict() for c in getattr(be, "configurations", {}).values()]
        return [self._service_view(svc, zone_ids) for svc in base + custom]

    def _service_view(self, svc: dict[str, Any], zone_ids: dict[str, str]) -> dict[str, Any]:
        """A catalogue entry as described: AZ override applied, AZ ids added."""
        azs = self.service_azs.get(svc["ServiceName"])
        if azs is not None or "AvailabilityZoneIds" not in svc:
            svc = dict(svc)
            if azs is not None:
                svc["AvailabilityZones"] = list(azs)
            svc["AvailabilityZoneIds"] = [
                zone_ids[a] for a in svc.get("AvailabilityZones", []) if a in zone_ids
            ]
        return svc

    def _base_catalog(self, region: str) -> list[dict[str, Any]]:
        """moto's default services plus the Bedrock ones, built once per region."""
        be = self._backend(region)
        base = self._svc_cache.get(region)
        if base is None:
            base = copy.deepcopy(be._collect_default_endpoint_services(be.account_id, region))
            by_name = {s["ServiceName"]: s for s in base}
            zones = [z.name for z in self._zones(region)]
            for short, tmpl in BEDROCK_SERVICES.items():
                full = f"com.amazonaws.{region}.{short}"
                pdns = tmpl.format(region=region)
                svc = by_name.get(full)
                if svc is None:
                    svc = {
                        "AcceptanceRequired": False,
                        "AvailabilityZones": list(zones),
                        "BaseEndpointDnsNames": [f"{short}.{region}.vpce.amazonaws.com"],
                        "ManagesVpcEndpoints": False,
                        "Owner": "amazon",
                        "ServiceId": "vpce-svc-" + hashlib.sha256(full.encode()).hexdigest()[:17],
                        "ServiceName": full,
                        "ServiceType": [{"ServiceType": "Interface"}],
                        "Tags": [],
                        "VpcEndpointPolicySupported": True,
                    }
                    base.append(svc)
                svc["PrivateDnsName"] = pdns
                svc["PrivateDnsNames"] = [{"PrivateDnsName": pdns}]
                svc["PrivateDnsNameVerificationState"] = "verified"
            for svc in base:
                svc.setdefault("ServiceRegion", region)
                svc.setdefault("SupportedIpAddressTypes", ["ipv4"])
            base.sort(key=lambda s: s["ServiceName"])
            self._svc_cache[region] = base
            self._svc_index[region] = {}
            for svc in base:
                self._svc_index[region].setdefault(svc["ServiceName"], svc)
        return base

    def _service(self, region: str, name: str) -> dict[str, Any] | None:
        """The first catalogue entry named `name` (as in _service_catalog's order)."""
        self._base_catalog(region)
        svc = self._svc_index[region].get(name)
        if svc is None:
            be = self._backend(region)
            svc = next(
                (d for d in (c.to_dict() for c in getattr(be, "configurations", {}).values())
                 if d["ServiceName"] == name),
                None,
            )
            if svc is None:
                return None
        return self._service_view(svc, self._zone_ids(region))

    def full_service_name(self, service: str, region: str | None = None) -> str:
        if service.startswith("com.amazonaws.") or service.startswith("aws.") or "." in service:
            return service
        return f"com.amazonaws.{region or self.region}.{service}"

    # ------------------------------------------------------------ WSGI entry
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self._tls.account = None
        path = environ.get("PATH_INFO", "") or ""
        if path == "/_harness" or path.startswith("/_harness/"):
            return self._control(environ, start_response)
        body = self._buffer_body(environ)
        values = self._form_values(environ, body)
        action = values.get("Action")
        service, region = self._service_region(environ, values)
        key = self._access_key(environ, values)
        if service == "sts" and action == "AssumeRole":
            return self._assume_role(key, values, environ)(environ, start_response)
        if service != "ec2" or not action:
            return self.moto_app(environ, start_response)
        expired = self._expired(key)
        if expired is not None:
            return expired(environ, start_response)
        self._tls.account = get_account_id_from(key) if key else ACCOUNT_ID
        if not environ.get("HTTP_AUTHORIZATION"):
            # Unsigned EC2 call (recognised by its Version): tell moto which service it is.
            environ["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential=testing/20200101/{region}/ec2/aws4_request, "
                "SignedHeaders=host, Signature=0"
            )
        response = self._handle_ec2(action, region, values, environ)
        return response(environ, start_response)

    # ------------------------------------------------------------------ STS
    @staticmethod
    def _sts_error(code: str, message: str, status: int) -> Response:
        rid = _new_request_id()
        body = (
            f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>Sender</Type><Code>{xml_escape(code)}</Code>'
            f"<Message>{xml_escape(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        )
        return Response(body, status=status, content_type="text/xml",
                        headers=[("x-amzn-RequestId", rid)])

    def _count_assume(self, role_arn: str, outcome: str) -> None:
        with self.stats_lock:
            per = self.assume_role.setdefault(role_arn, {})
            per[outcome] = per.get(outcome, 0) + 1

    def _assume_role(self, key: str | None, values: MultiDict, environ: dict[str, Any]) -> Response:
        """AssumeRole as IAM would judge it for the seeded roles: the role must exist, trust the
        caller's account, and get the external id it requires; then moto answers (its key maps
        to the role's account), with the session capped to `session_seconds` if set."""
        role_arn = values.get("RoleArn") or ""
        caller_account = get_account_id_from(key) if key else ACCOUNT_ID
        caller = f"arn:aws:iam::{caller_account}:user/moto"
        with self.stats_lock:
            caller_session = self.sessions.get(key or "")
        if caller_session is not None:
            caller = f"arn:aws:sts::{caller_session[0]}:assumed-role/{caller_session[1].split('/')[-1]}/session"
            if time.time() >= caller_session[2]:
                self._count_assume(role_arn, "ExpiredToken")
                return self._sts_error("ExpiredToken", "The security token included in the request is expired", 400)
        role = self.roles.get(role_arn)
        denied = f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        if role is None or caller_account not in role.trusted_accounts:
            self._count_assume(role_arn, "AccessDenied")
            return self._sts_error("AccessDenied", denied, 403)
        if role.external_id is not None and values.get("ExternalId") != role.external_id:
            self._count_assume(role_arn, "AccessDenied")
            return self._sts_error("AccessDenied", denied, 403)
        environ["wsgi.input"].seek(0)
        app_iter, status, headers = run_wsgi_app(self.moto_app, environ, buffered=True)
        try:
            data = b"".join(app_iter).decode()
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        if not str(status).startswith("200"):
            self._count_assume(role_arn, "error")
            return Response(data, status=status, headers=headers)
        m = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", data)
        asked = int(values.get("DurationSeconds") or 3600)
        lifetime = float(asked)
        if self.config.session_seconds > 0:
            lifetime = min(lifetime, self.config.session_seconds)
        expiry = time.time() + lifetime
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expiry)) + f".{int(expiry % 1 * 1000):03d}Z"
        data = re.sub(r"<Expiration>[^<]*</Expiration>", f"<Expiration>{stamp}</Expiration>", data, count=1)
        if m:
            with self.stats_lock:
                self.sessions[m.group(1)] = (role.account, role.arn, expiry)
        self._count_assume(role_arn, "ok")
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return Response(data, status=status, headers=headers)

    def _expired(self, key: str | None) -> Response | None:
        """ExpiredToken for a call signed with a session past its expiry."""
        if not key:
            return None
        with self.stats_lock:
            session = self.sessions.get(key)
            if session is None or time.time() < session[2]:
                return None
            self.expired_rejections[session[1]] = self.expired_rejections.get(session[1], 0) + 1
        return error_response("ExpiredToken", "The security token included in the request is expired", 400)

    @staticmethod
    def _buffer_body(environ: dict[str, Any]) -> bytes:
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH")
        body = b""
        if stream is not None:
            if length:
                body = stream.read(int(length))
            elif environ.get("wsgi.input_terminated"):
                body = stream.read()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    @staticmethod
    def _form_values(environ: dict[str, Any], body: bytes) -> MultiDict:
        pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        ctype = environ.get("CONTENT_TYPE", "") or ""
        if body and (ctype.startswith("application/x-www-form-urlencoded") or not ctype):
            try:
                pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                pass
        return MultiDict(pairs)

    def _service_region(self, environ: dict[str, Any], values: MultiDict) -> tuple[str | None, str]:
        auth = environ.get("HTTP_AUTHORIZATION", "") or ""
        scope = None
        m = re.search(r"Credential=([^,\s]+)", auth)
        if m:
            scope = m.group(1)
        elif values.get("X-Amz-Credential"):
            scope = values.get("X-Amz-Credential")
        if scope:
            parts = scope.split("/")
            if len(parts) >= 5:
                return parts[3].lower(), parts[2]
        if values.get("Action") and values.get("Version") == EC2_API_VERSION:
            return "ec2", self.region
        return None, self.region

    # ------------------------------------------------------------- EC2 calls
    def _handle_ec2(self, action: str, region: str, values: MultiDict, environ: dict[str, Any]) -> Response:
        latency, fault = self._pick_fault(action, self._account(), region)
        if latency > 0:
            time.sleep(latency)
        if fault is not None and fault.phase == "before":
            return self._fault_response(fault)
        with self.lock:
            self.tick()
            try:
                handler = self.handlers.get(action)
                if handler is not None:
                    params = self._parse(action, values)
                    response = handler(region, params, values, environ)
                else:
                    response = self._passthrough(environ)
            except Ec2Error as e:
                response = error_response(e.code, e.message, e.status)
            except Exception as e:  # noqa: BLE001 - a harness bug must still answer in EC2's format
                LOG.exception("harness failure in %s", action)
                response = error_response("InternalError", f"harness: {type(e).__name__}: {e}", 500)
            if not action.startswith("Describe"):
                self.changes += 1
        if fault is not None:
            return self._fault_response(fault)
        return response

    def _fault_response(self, fault: FaultRule) -> Response:
        status, message = FAULT_ERRORS[fault.error]  # type: ignore[index]
        return error_response(fault.error, message, status)  # type: ignore[arg-type]

    def _passthrough(self, environ: dict[str, Any]) -> Response:
        environ["wsgi.input"].seek(0)
        app_iter, status, headers = run_wsgi_app(self.moto_app, environ, buffered=True)
        try:
            data = b"".join(app_iter)
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        if b"<requestId>request-id</requestId>" in data:
            # moto writes a placeholder; AWS sends a UUID.
            data = data.replace(
                b"<requestId>request-id</requestId>",
                f"<requestId>{_new_request_id()}</requestId>".encode(),
                1,
            )
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return Response(data, status=status, headers=headers)

    def _parse(self, action: str, values: MultiDict) -> dict[str, Any]:
        try:
            op = self.ec2_model.operation_model(action)
        except OperationNotFoundError:
            return {}
        parsed = EC2QueryParser(op).parse(
            {
                "method": "POST",
                "values": values,
                "headers": {},
                "body": b"",
                "url_path": "/",
                "url_params": {},
            }
        )
        return dict(parsed)

    def _serialize(self, action: str, result: dict[str, Any]) -> Response:
        op = self.ec2_model.operation_model(action)
        ser = self.serializer_cls(
            operation_model=op, pretty_print=False, value_picker=XFormedAttributePicker()
        )
        out = ser.serialize(result)
        rid = _new_request_id()
        body = re.sub(r"<requestId>[^<]*</requestId>", f"<requestId>{rid}</requestId>", out["body"], count=1)
        headers = dict(out.get("headers") or {})
        headers["x-amzn-RequestId"] = rid
        return Response(body, status=out.get("status_code", 200), headers=headers)

    @staticmethod
    def _dry_run(p: dict[str, Any]) -> None:
        """Called once a request has passed validation: DryRun stops it there, as in AWS."""
        if p.get("DryRun"):
            raise Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)

    # ----------------------------------------------------------- validation
    def _get_vpc(self, be: Any, vpc_id: str | None) -> Any:
        vpc = be.vpcs.get(vpc_id) if vpc_id else None
        if vpc is None:
            raise Ec2Error("InvalidVpcID.NotFound", f"The vpc ID '{vpc_id}' does not exist")
        return vpc

    def _get_subnet(self, be: Any, subnet_id: str) -> Any:
        for subnets in be.subnets.values():
            if subnet_id in subnets:
                return subnets[subnet_id]
        raise Ec2Error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist")

    def _get_group(self, be: Any, group_id: str, vpc_id: str) -> Any:
        sg = be.get_security_group_from_id(group_id)
        if sg is None:
            raise Ec2Error("InvalidGroup.NotFound", f"The security group '{group_id}' does not exist")
        if sg.vpc_id != vpc_id:
            raise Ec2Error(
                "InvalidGroup.NotFound",
                f"The security group '{group_id}' does not exist in VPC '{vpc_id}'",
            )
        return sg

    def _check_subnets(
        self,
        be: Any,
        vpc_id: str,
        service: dict[str, Any],
        new_subnet_ids: list[str],
        existing_subnet_ids: list[str],
    ) -> None:
        """AWS's subnet rules for an interface endpoint."""
        supported = set(service.get("AvailabilityZones") or [])
        taken: dict[str, str] = {}
        for sid in existing_subnet_ids:
            try:
                taken[self._get_subnet(be, sid).availability_zone] = sid
            except Ec2Error:
                continue
        for sid in new_subnet_ids:
            sn = self._get_subnet(be, sid)
            if sn.vpc_id != vpc_id:
                raise Ec2Error(
                    "InvalidParameter",
                    f"The subnet ID '{sid}' does not belong to the VPC '{vpc_id}'",
                )
            if sn.availability_zone not in supported:
                raise Ec2Error(
                    "InvalidParameter",
                    f"The VPC endpoint service {service['ServiceName']} does not support the "
                    f"availability zone of the subnet: {sid}.",
                )
            if sn.availability_zone in taken:
                raise Ec2Error(
                    "InvalidParameter",
                    "DuplicateSubnetsInSameZone: Found another VPC endpoint subnet in the "
                    f"availability zone of {sid}",
                )
            taken[sn.availability_zone] = sid

    def _check_private_dns(self, be: Any, vpc: Any, service: dict[str, Any], exclude_id: str | None) -> None:
        if not (_truthy(vpc.enable_dns_support) and _truthy(vpc.enable_dns_hostnames)):
            raise Ec2Error(
                "InvalidParameter",
                "Enabling private DNS requires both enableDnsSupport and enableDnsHostnames "
                f"VPC attributes set to true for {vpc.id}",
            )
        domain = service.get("PrivateDnsName")
        if not domain:
            return
        for other in be.vpc_end_points.values():
            if other.id == exclude_id or other.vpc_id != vpc.id:
                continue
            if other.state not in DNS_HOLDING_STATES or not _truthy(other.private_dns_enabled):
                continue
            other_svc = self._service(self.meta[other.id].region if other.id in self.meta else self.region,
                                      other.service_name)
            if other_svc and other_svc.get("PrivateDnsName") == domain:
                raise Ec2Error(
                    "InvalidParameter",
                    "private-dns-enabled cannot be set because there is already a conflicting "
                    f"DNS domain for {domain} in the VPC {vpc.id}",
                )

    # --------------------------------------------------------------- ENIs
    def _subnet_eni_ips(self, be: Any, region: str) -> dict[str, set[Any]]:
        """subnet id -> primary addresses of its ENIs; rebuilt when moto's ENIs are not the
        ones we last indexed (an ENI's subnet and primary address never change)."""
        cached = self._eni_ips.get((be.account_id, region))
        if cached is not None and cached[0] is be and be.enis.keys() == cached[1]:
            return cached[2]
        by_subnet: dict[str, set[Any]] = {}
        for eni in be.enis.values():
            by_subnet.setdefault(getattr(eni.subnet, "id", None), set()).add(eni.private_ip_address)
        self._eni_ips[(be.account_id, region)] = (be, set(be.enis.keys()), by_subnet)
        return by_subnet

    def _note_new_eni(self, be: Any, region: str, eni: Any) -> None:
        cached = self._eni_ips.get((be.account_id, region))
        if cached is None or cached[0] is not be or eni.id in cached[1] or len(be.enis) != len(cached[1]) + 1:
            self._eni_ips.pop((be.account_id, region), None)
            return
        cached[1].add(eni.id)
        cached[2].setdefault(getattr(eni.subnet, "id", None), set()).add(eni.private_ip_address)

    def _pick_ip(self, be: Any, subnet: Any, region: str) -> str:
        net = ipaddress.IPv4Network(subnet.cidr_block)
        used = set(self._subnet_eni_ips(be, region).get(subnet.id, ()))
        for inst in getattr(be, "all_instances", lambda: [])():
            used.add(getattr(inst, "private_ip", None))
        hosts = net.num_addresses
        top = max(5, hosts - 1)
        if len(used) >= top - 4 and all(str(net.network_address + k) in used for k in range(4, top)):
            # Every candidate is taken: the 200 random tries below would all miss.
            return str(net.network_address + 4)
        for _ in range(200):
            # AWS reserves the first four addresses and the last one.
            ip = str(net.network_address + self._names.randrange(4, max(5, hosts - 1)))
            if ip not in used:
                return ip
        return str(net.network_address + 4)

    def _create_eni(self, be: Any, ep: Any, subnet_id: str, region: str) -> str:
        subnet = self._get_subnet(be, subnet_id)
        eni = be.create_network_interface(
            subnet,
            self._pick_ip(be, subnet, region),
            group_ids=list(ep.security_group_ids),
            description=f"VPC Endpoint Interface {ep.id}",
        )
        self._note_new_eni(be, region, eni)
        eni.interface_type = "vpc_endpoint"
        eni.requester_managed = True
        eni.requester_id = "727180483921"
        eni.status = "in-use"
        return eni.id

    def _sync_eni_groups(self, be: Any, ep: Any) -> None:
        groups = [g for g in (be.get_security_group_from_id(i) for i in ep.security_group_ids) if g]
        for eni_id in ep.network_interface_ids:
            eni = be.enis.get(eni_id)
            if eni is not None:
                eni._group_set = list(groups)

    def _refresh_dns(self, be: Any, ep: Any, region: str) -> None:
        m = self._meta_for(ep, region)
        svc = self._service(region, ep.service_name) or {}
        base_names = svc.get("BaseEndpointDnsNames") or [
            f"{ep.service_name.split('.')[-1]}.{region}.vpce.amazonaws.com"
        ]
        base = base_names[0]
        hz = VPCE_HOSTED_ZONES.get(region) or (
            "Z" + hashlib.sha256(region.encode()).hexdigest()[:12].upper()
        )
        entries = [{"DnsName": f"{ep.id}-{m.suffix}.{base}", "HostedZoneId": hz}]
        azs = set()
        for sid in ep.subnet_ids or []:
            try:
                azs.add(self._get_subnet(be, sid).availability_zone)
            except Ec2Error:
                pass
        for az in sorted(azs):
            entries.append({"DnsName": f"{ep.id}-{m.suffix}-{az}.{base}", "HostedZoneId": hz})
        if _truthy(ep.private_dns_enabled) and svc.get("PrivateDnsName"):
            entries.append({"DnsName": svc["PrivateDnsName"], "HostedZoneId": m.private_zone_id})
        ep.dns_entries = entries

    # ------------------------------------------------------- CreateVpcEndpoint
    @staticmethod
    def _fingerprint(values: MultiDict) -> str:
        single: dict[str, list[str]] = {}
        grouped: dict[str, list[str]] = {}
        for key, value in values.items(multi=True):
            if key in ("Action", "Version", "ClientToken", "DryRun") or key.startswith("X-Amz-"):
                continue
            m = re.match(r"^(SubnetId|SecurityGroupId|RouteTableId)\.\d+$", key)
            if m:
                grouped.setdefault(m.group(1), []).append(value)
            else:
                single.setdefault(key, []).append(value)
        canon = {
            "single": sorted(single.items()),
            "grouped": sorted((k, sorted(v)) for k, v in grouped.items()),
        }
        return hashlib.sha256(json.dumps(canon).encode()).hexdigest()

    def _create_vpc_endpoint(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        be = self._backend(region)
        token = p.get("ClientToken")
        if token is not None:
            if len(token) > MAX_CLIENT_TOKEN or not token.isascii():
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"Value ({token}) for parameter clientToken is invalid. "
                    f"The client token must be at most {MAX_CLIENT_TOKEN} ASCII characters.",
                )
            fp = self._fingerprint(values)
            rec = self.tokens.get((self._account(), region, token))
            if rec is not None:
                if rec.fingerprint != fp:
                    raise Ec2Error(
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a request that "
                        "had different parameters.",
                    )
                return self._serialize(
                    "CreateVpcEndpoint", {"VpcEndpoint": rec.endpoint, "ClientToken": token}
                )

        ep_type = p.get("VpcEndpointType") or "Gateway"
        vpc = self._get_vpc(be, p.get("VpcId"))
        service_name = p.get("ServiceName") or ""
        svc = self._service(region, service_name)
        if svc is None:
            raise Ec2Error("InvalidServiceName", f"The Vpc Endpoint Service '{service_name}' does not exist")
        svc_types = [t.get("ServiceType") for t in svc.get("ServiceType", [])]
        if ep_type not in svc_types:
            raise Ec2Error(
                "InvalidParameter",
                f"Endpoint type ({ep_type}) does not match available service types ({svc_types}).",
            )
        for spec in p.get("TagSpecifications") or []:
            if spec.get("ResourceType") not in (None, "vpc-endpoint"):
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.",
                )
        if ep_type != "Interface":
            # Gateway and other types: moto's behaviour, plus the lifecycle and token.
            response = self._passthrough(environ)
            if response.status_code == 200:
                newest = list(be.vpc_end_points.values())[-1]
                self._meta_for(newest, region)
                if token is not None:
                    self.tokens[(self._account(), region, token)] = TokenRecord(self._fingerprint(values), newest)
            return response

        subnet_ids = list(p.get("SubnetIds") or [])
        self._check_subnets(be, vpc.id, svc, subnet_ids, [])
        sg_ids = list(dict.fromkeys(p.get("SecurityGroupIds") or []))
        for gid in sg_ids:
            self._get_group(be, gid, vpc.id)
        if not sg_ids:
            default = be.get_default_security_group(vpc.id)
            if default is not None:
                sg_ids = [default.id]
        private_dns = p.get("PrivateDnsEnabled")
        private_dns = True if private_dns is None else bool(private_dns)
        if private_dns:
            self._check_private_dns(be, vpc, svc, exclude_id=None)

        self._dry_run(p)
        tags: dict[str, str] = {}
        for spec in p.get("TagSpecifications") or []:
            for t in spec.get("Tags") or []:
                tags[t["Key"]] = t.get("Value", "")

        ep = be.create_vpc_endpoint(
            vpc_id=vpc.id,
            service_name=service_name,
            endpoint_type="Interface",
            policy_document=p.get("PolicyDocument") or DEFAULT_POLICY,
            route_table_ids=[],
            subnet_ids=[],
            client_token=token,
            security_group_ids=sg_ids,
            tags=tags,
            private_dns_enabled=private_dns,
        )
        ep.subnet_ids = subnet_ids
        ep.network_interface_ids = [self._create_eni(be, ep, sid, region) for sid in subnet_ids]
        ep.ip_address_type = p.get("IpAddressType") or "ipv4"
        ep.dns_options = {"DnsRecordIpType": "ipv4"}
        ep.requester_managed = False
        ep.last_error = None
        m = self._meta_for(ep, region)
        now = time.monotonic()
        m.pending_until = now + self.config.pending_seconds
        ep.state = "pending"
        self._apply_new_endpoint_rules(ep, m, now)
        self._refresh_dns(be, ep, region)
        if token is not None:
            self.tokens[(self._account(), region, token)] = TokenRecord(self._fingerprint(values), ep)
        self.tick()
        return self._serialize("CreateVpcEndpoint", {"VpcEndpoint": ep, "ClientToken": token})

    def _apply_new_endpoint_rules(self, ep: Any, m: EndpointMeta, now: float) -> None:
        for rule in list(self.new_endpoint_rules):
            if rule.get("service") and rule["service"] != ep.service_name:
                continue
            if rule.get("remaining") is not None:
                if rule["remaining"] <= 0:
                    continue
                rule["remaining"] -= 1
            hold = rule.get("hold")
            if hold:
                m.hold_state = hold["state"]
                m.hold_until = None if hold.get("seconds") is None else now + float(hold["seconds"])
                ep.state = hold["state"]
            fail = rule.get("fail")
            if fail:
                m.fail_after_pending = dict(fail)
            return

    # ------------------------------------------------------- ModifyVpcEndpoint
    def _endpoint(self, be: Any, ep_id: str | None) -> Any:
        ep = be.vpc_end_points.get(ep_id) if ep_id else None
        if ep is None:
            raise Ec2Error(
                "InvalidVpcEndpointId.NotFound", f"The VpcEndpoint Id '{ep_id}' does not exist"
            )
        return ep

    def _modify_vpc_endpoint(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        be = self._backend(region)
        ep = self._endpoint(be, p.get("VpcEndpointId"))
        if ep.state == "deleted":
            raise Ec2Error(
                "InvalidVpcEndpointId.NotFound", f"The VpcEndpoint Id '{ep.id}' does not exist"
            )
        if ep.state == "deleting":
            raise Ec2Error("IncorrectState", f"The VPC endpoint {ep.id} is in the deleting state.")
        if p.get("ResetPolicy") and p.get("PolicyDocument"):
            raise Ec2Error(
                "InvalidParameterCombination",
                "ResetPolicy and PolicyDocument cannot be specified together.",
            )
        vpc = self._get_vpc(be, ep.vpc_id)
        svc = self._service(region, ep.service_name) or {
            "ServiceName": ep.service_name,
            "AvailabilityZones": [z.name for z in self._zones(region)],
        }
        interface = (ep.vpc_endpoint_type or "").lower() == "interface"

        add_subnets = [s for s in dict.fromkeys(p.get("AddSubnetIds") or []) if s not in (ep.subnet_ids or [])]
        remove_subnets = list(dict.fromkeys(p.get("RemoveSubnetIds") or []))
        add_sgs = [g for g in dict.fromkeys(p.get("AddSecurityGroupIds") or []) if g not in ep.security_group_ids]
        remove_sgs = list(dict.fromkeys(p.get("RemoveSecurityGroupIds") or []))
        pdns = p.get("PrivateDnsEnabled")

        if interface:
            kept = [s for s in (ep.subnet_ids or []) if s not in remove_subnets]
            self._check_subnets(be, vpc.id, svc, add_subnets, kept)
            for gid in add_sgs:
                self._get_group(be, gid, vpc.id)
            if pdns is not None and bool(pdns) and not _truthy(ep.private_dns_enabled):
                self._check_private_dns(be, vpc, svc, exclude_id=ep.id)
        elif add_subnets or remove_subnets or add_sgs or remove_sgs or pdns is not None:
            raise Ec2Error(
                "InvalidParameter",
                f"Subnets, security groups and private DNS apply to interface endpoints only ({ep.id}).",
            )

        self._dry_run(p)
        # Apply.
        if p.get("ResetPolicy"):
            ep.policy_document = DEFAULT_POLICY
        elif p.get("PolicyDocument"):
            ep.policy_document = p["PolicyDocument"]
        if p.get("AddRouteTableIds") or p.get("RemoveRouteTableIds"):
            ep.modify(None, None, None, p.get("AddRouteTableIds"), p.get("RemoveRouteTableIds"), None, None)
        if interface:
            if remove_subnets:
                keep_subnets, keep_enis = [], []
                for sid in ep.subnet_ids or []:
                    if sid in remove_subnets:
                        continue
                    keep_subnets.append(sid)
                for eni_id in ep.network_interface_ids:
                    eni = be.enis.get(eni_id)
                    if eni is not None and getattr(eni.subnet, "id", None) in remove_subnets:
                        be.enis.pop(eni_id, None)
                        continue
                    keep_enis.append(eni_id)
                ep.subnet_ids, ep.network_interface_ids = keep_subnets, keep_enis
            if remove_sgs:
                ep.security_group_ids = [g for g in ep.security_group_ids if g not in remove_sgs]
            if add_sgs:
                ep.security_group_ids = list(ep.security_group_ids) + add_sgs
            for sid in add_subnets:
                ep.subnet_ids = list(ep.subnet_ids or []) + [sid]
                ep.network_interface_ids = list(ep.network_interface_ids) + [self._create_eni(be, ep, sid, region)]
            if add_sgs or remove_sgs:
                self._sync_eni_groups(be, ep)
            if pdns is not None:
                ep.private_dns_enabled = bool(pdns)
            self._refresh_dns(be, ep, region)
        m = self._meta_for(ep, region)
        if ep.state in MODIFY_TO_PENDING_STATES:
            m.pending_until = time.monotonic() + self.config.pending_seconds
            if not m.hold_state:
                ep.state = "pending"
        self.tick()
        return self._serialize("ModifyVpcEndpoint", {"Return": True})

    # ------------------------------------------------------ DeleteVpcEndpoints
    def _delete_vpc_endpoints(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        be = self._backend(region)
        self._dry_run(p)
        unsuccessful = []
        now = time.monotonic()
        for ep_id in p.get("VpcEndpointIds") or []:
            ep = be.vpc_end_points.get(ep_id)
            if ep is None:
                unsuccessful.append(
                    {
                        "Error": {
                            "Code": "InvalidVpcEndpoint.NotFound",
                            "Message": f"The VpcEndpoint Id '{ep_id}' does not exist",
                        },
                        "ResourceId": ep_id,
                    }
                )
                continue
            if ep.state in ("deleting", "deleted"):
                continue
            m = self._meta_for(ep, region)
            m.hold_state, m.hold_until, m.fail_after_pending = None, None, None
            ep.state = "deleting"
            seconds = m.deleting_override if m.deleting_override is not None else self.config.deleting_seconds
            m.deleting_started = now
            m.deleting_until = now + max(0.0, seconds)
        self.tick()
        return self._serialize("DeleteVpcEndpoints", {"Unsuccessful": unsuccessful})

    # ---------------------------------------------------- DescribeVpcEndpoints
    def _endpoint_filter_value(self, be: Any, ep: Any, name: str) -> Any:
        if name == "vpc-endpoint-id":
            return ep.id
        if name == "vpc-id":
            return ep.vpc_id
        if name == "service-name":
            return ep.service_name
        if name == "vpc-endpoint-state":
            return ep.state
        if name == "vpc-endpoint-type":
            return ep.vpc_endpoint_type
        if name == "ip-address-type":
            return getattr(ep, "ip_address_type", "ipv4")
        if name == "service-region":
            return self.meta[ep.id].region if ep.id in self.meta else self.region
        tags = be.tags.get(ep.id, {})
        if name == "tag-key":
            return list(tags.keys())
        if name == "tag-value":
            return list(tags.values())
        if name.startswith("tag:"):
            return tags.get(name[4:])
        raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")

    def _filter_endpoints(self, be: Any, eps: list[Any], name: str, vals: list[str]) -> list[Any]:
        """The endpoints `name` in `vals` keeps (EC2 wildcards), in order."""
        literals = None
        if all(isinstance(v, str) and _is_literal(v) for v in vals):
            # What _matches_any makes of values without wildcards, as a set lookup.
            literals = {v for v in vals} | {v + "\n" for v in vals}
        if literals is not None and name.startswith("tag:"):
            key, tags, none = name[4:], be.tags, {}
            out = []
            for ep in eps:
                value = tags.get(ep.id, none).get(key)
                if value in literals if type(value) is str else _matches_any(value, vals):
                    out.append(ep)
            return out
        if literals is not None and name in ("vpc-id", "vpc-endpoint-id"):
            attr = "vpc_id" if name == "vpc-id" else "id"
            out = []
            for ep in eps:
                value = getattr(ep, attr)
                if value in literals if type(value) is str else _matches_any(value, vals):
                    out.append(ep)
            return out
        return [ep for ep in eps if _matches_any(self._endpoint_filter_value(be, ep, name), vals)]

    @staticmethod
    def _paginate(items: list[Any], p: dict[str, Any]) -> tuple[list[Any], str | None]:
        start = 0
        token = p.get("NextToken")
        if token:
            try:
                start = int(token)
            except ValueError:
                raise Ec2Error("InvalidNextToken", "The token provided is invalid.")
        max_results = p.get("MaxResults")
        if not max_results:
            return items[start:], None
        max_results = int(max_results)
        if max_results < 5 or max_results > 1000:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Value ( {max_results} ) for parameter maxResults is invalid. "
                "Expecting a value between 5 and 1000.",
            )
        page = items[start : start + max_results]
        nxt = str(start + max_results) if start + max_results < len(items) else None
        return page, nxt

    def _describe_vpc_endpoints(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        be = self._backend(region)
        self._dry_run(p)
        eps = list(be.vpc_end_points.values())
        ids = p.get("VpcEndpointIds") or []
        if ids:
            known = {ep.id for ep in eps}
            for i in ids:
                if i not in known:
                    raise Ec2Error(
                        "InvalidVpcEndpointId.NotFound", f"The VpcEndpoint Id '{i}' does not exist"
                    )
            eps = [ep for ep in eps if ep.id in set(ids)]
        for flt in p.get("Filters") or []:
            name = flt.get("Name", "")
            vals = flt.get("Values") or []
            eps = self._filter_endpoints(be, eps, name, vals)
        page, nxt = self._paginate(eps, p)
        result: dict[str, Any] = {"VpcEndpoints": page}
        if nxt:
            result["NextToken"] = nxt
        return self._serialize("DescribeVpcEndpoints", result)

    # --------------------------------------------- DescribeVpcEndpointServices
    def _describe_vpc_endpoint_services(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        self._dry_run(p)
        services = self._service_catalog(region)
        names = p.get("ServiceNames") or []
        known = {s["ServiceName"] for s in services}
        for n in names:
            if n not in known:
                raise Ec2Error("InvalidServiceName", f"The Vpc Endpoint Service '{n}' does not exist")
        if names:
            services = [s for s in services if s["ServiceName"] in set(names)]
        for flt in p.get("Filters") or []:
            name, vals = flt.get("Name", ""), flt.get("Values") or []

            def value(s: dict[str, Any], name: str = name) -> Any:
                if name == "service-name":
                    return s["ServiceName"]
                if name == "service-type":
                    return [t.get("ServiceType") for t in s.get("ServiceType", [])]
                if name == "owner":
                    return s.get("Owner")
                if name == "service-region":
                    return s.get("ServiceRegion", region)
                if name == "supported-ip-address-types":
                    return s.get("SupportedIpAddressTypes", ["ipv4"])
                tags = {t["Key"]: t.get("Value") for t in s.get("Tags", [])}
                if name == "tag-key":
                    return list(tags)
                if name.startswith("tag:"):
                    return tags.get(name[4:])
                raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")

            services = [s for s in services if _matches_any(value(s), vals)]
        page, nxt = self._paginate(services, p)
        result: dict[str, Any] = {
            "ServiceNames": [s["ServiceName"] for s in page],
            "ServiceDetails": page,
        }
        if nxt:
            result["NextToken"] = nxt
        return self._serialize("DescribeVpcEndpointServices", result)

    # ----------------------------------------------------- DeleteSecurityGroup
    def _delete_security_group(self, region: str, p: dict[str, Any], values: MultiDict, environ: dict[str, Any]) -> Response:
        be = self._backend(region)
        gid = p.get("GroupId")
        if not gid and p.get("GroupName"):
            sg = be.get_security_group_by_name_or_id(p["GroupName"])
            gid = sg.id if sg is not None else None
        if gid and be.get_security_group_from_id(gid) is not None:
            now = time.monotonic()
            dependent = any(
                gid in ep.security_group_ids and ep.state != "deleted"
                for ep in be.vpc_end_points.values()
            )
            self.sg_linger = [x for x in self.sg_linger if x[3] > now]
            dependent = dependent or any(
                a == be.account_id and r == region and g == gid for a, r, g, _ in self.sg_linger
            )
            dependent = dependent or any(
                g.id == gid for eni in be.enis.values() for g in eni.group_set
            )
            if dependent and not p.get("DryRun"):
                raise Ec2Error("DependencyViolation", f"resource {gid} has a dependent object")
        response = self._passthrough(environ)
        if response.status_code == 200 and gid:
            # Deleted endpoints keep their group list; drop the gone group so that
            # describing them does not trip over a missing group.
            for ep in be.vpc_end_points.values():
                if gid in ep.security_group_ids:
                    ep.security_group_ids = [g for g in ep.security_group_ids if g != gid]
        return response

    # ------------------------------------------------------------- faults
    def _pick_fault(self, action: str, account: str = ACCOUNT_ID,
                    region: str = DEFAULT_REGION) -> tuple[float, FaultRule | None]:
        with self.stats_lock:
            self.calls[action] = self.calls.get(action, 0) + 1
            scope = self.calls_by_scope.setdefault(f"{account}/{region}", {})
            scope[action] = scope.get(action, 0) + 1
            rules = [r for r in self.faults.values()
                     if r.action in (action, "*") and r.matches(account, region)]
            # Most specific first: this action before "*", an account/region filter before none.
            rules.sort(key=lambda r: (r.action == "*", r.account is None, r.region is None))
            latency = sum(r.latency_ms for r in rules) / 1000.0
            chosen = None
            for r in rules:
                if not r.error or (r.count is not None and r.count <= 0):
                    continue
                if r.rate >= 1.0 or self.rng.random() < r.rate:
                    if r.count is not None:
                        r.count -= 1
                    chosen = r
                    break
            if chosen is not None:
                self.faulted[action] = self.faulted.get(action, 0) + 1
            return latency, chosen

    # -------------------------------------------------------- control API
    def _control(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        try:
            body: Any = None
            raw = req.get_data(cache=False)
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ControlError("body must be JSON")
            resp = self._route(req.method, req.path, body if body is not None else {})
            if req.method != "GET":
                with self.lock:
                    self.changes += 1
        except ControlError as e:
            resp = json_response({"error": e.message}, e.status)
        except Exception as e:  # noqa: BLE001 - report, don't kill the server
            LOG.exception("control API failure")
            resp = json_response({"error": f"{type(e).__name__}: {e}"}, 500)
        return resp(environ, start_response)

    def _route(self, method: str, path: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ControlError("body must be a JSON object")
        parts = [x for x in path.split("/") if x][1:]  # drop "_harness"
        route = "/".join(parts)
        if self.dataplane is not None:
            answer = self.dataplane.route(method, route, body)
            if answer is not None:
                return json_response(answer[1], answer[0])
        if route == "health" and method == "GET":
            return json_response(
                {
                    "ok": True,
                    "region": self.region,
                    "account": ACCOUNT_ID,
                    "accounts": sorted({ACCOUNT_ID, *[r.account for r in self.roles.values()]}),
                    "regions": [self.region, self.second_region],
                    "moto": moto.__version__,
                    "uptime_seconds": round(time.time() - self.started, 3),
                    "config": self.config.as_dict(),
                }
            )
        if route == "reset" and method == "POST":
            seed = body.get("seed")
            if seed is not None and not isinstance(seed, bool):
                raise ControlError("seed must be true or false")
            result = self.reset(seed=seed)
            return json_response({"ok": True, "seed": result})
        if route == "seed" and method == "GET":
            return json_response(self.seed)
        if route == "calls" and method == "GET":
            with self.stats_lock:
                return json_response({"calls": dict(self.calls), "faulted": dict(self.faulted)})
        if route == "calls/reset" and method == "POST":
            with self.stats_lock:
                self.calls, self.faulted, self.calls_by_scope = {}, {}, {}
            return json_response({"ok": True})
        if route == "calls/by-scope" and method == "GET":
            with self.stats_lock:
                return json_response({"calls": copy.deepcopy(self.calls_by_scope)})
        if route == "sts" and method == "GET":
            with self.stats_lock:
                return json_response({
                    "roles": [r.as_dict() for r in self.roles.values()],
                    "assume_role": copy.deepcopy(self.assume_role),
                    "expired_rejections": dict(self.expired_rejections),
                    "sessions": len(self.sessions),
                    "session_seconds": self.config.session_seconds,
                })
        if route == "config":
            if method == "GET":
                return json_response(self.config.as_dict())
            if method == "POST":
                return json_response(self._set_config(body))
        if route == "service-azs":
            if method == "GET":
                return json_response({"service_azs": self.service_azs})
            if method == "POST":
                return json_response(self._set_service_azs(body))
            if method == "DELETE":
                with self.lock:
                    self.service_azs = {}
                return json_response({"ok": True})
        if route == "faults":
            if method == "GET":
                with self.stats_lock:
                    return json_response({"faults": [r.as_dict() for r in self.faults.values()]})
            if method == "POST":
                return json_response(self._set_fault(body))
            if method == "DELETE":
                with self.stats_lock:
                    action = body.get("action")
                    if action:
                        self.faults = {k: r for k, r in self.faults.items() if r.action != action}
                    else:
                        self.faults = {}
                return json_response({"ok": True})
        if route == "new-endpoints":
            if method == "GET":
                return json_response({"rules": self.new_endpoint_rules})
            if method == "POST":
                return json_response(self._add_new_endpoint_rule(body))
            if method == "DELETE":
                with self.lock:
                    self.new_endpoint_rules = []
                return json_response({"ok": True})
        if route == "endpoints" and method == "GET":
            return json_response({"endpoints": self._endpoint_views()})
        if len(parts) == 3 and parts[0] == "endpoints" and method == "POST":
            return json_response(self._endpoint_action(parts[1], parts[2], body))
        raise ControlError(f"no route {method} {path}", 404)

    def _set_config(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"pending_seconds", "deleting_seconds", "deleted_seconds", "eni_linger_seconds", "fault_seed",
                   "session_seconds"}
        unknown = set(body) - allowed
        if unknown:
            raise ControlError(f"unknown config keys: {sorted(unknown)}")
        with self.lock:
            for k, v in body.items():
                if k == "fault_seed":
                    if v is not None and not isinstance(v, int):
                        raise ControlError("fault_seed must be an integer or null")
                    with self.stats_lock:
                        self.fault_seed = v
                        self.rng = random.Random(v)
                    continue
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise ControlError(f"{k} must be a non-negative number")
                setattr(self.config, k, float(v))
            out: dict[str, Any] = self.config.as_dict()
            out["fault_seed"] = self.fault_seed
            return out

    def _set_service_azs(self, body: dict[str, Any]) -> dict[str, Any]:
        service = body.get("service")
        if not service or not isinstance(service, str):
            raise ControlError("service is required")
        full = self.full_service_name(service)
        azs = body.get("azs")
        with self.lock:
            if self._service(self.region, full) is None:
                raise ControlError(f"unknown service {full}", 404)
            if azs is None:
                self.service_azs.pop(full, None)
            else:
                if not isinstance(azs, list) or not all(isinstance(a, str) for a in azs):
                    raise ControlError("azs must be a list of AZ names or null")
                zones = self._zone_ids(self.region)
                bad = [a for a in azs if a not in zones]
                if bad:
                    raise ControlError(f"unknown availability zones: {bad}")
                self.service_azs[full] = list(azs)
            svc = self._service(self.region, full)
            return {"service": full, "azs": svc["AvailabilityZones"]}  # type: ignore[index]

    def _set_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        if not action or not isinstance(action, str):
            raise ControlError("action is required (an EC2 action name or '*')")
        error = body.get("error")
        if error is not None and error not in FAULT_ERRORS:
            raise ControlError(f"error must be one of {sorted(FAULT_ERRORS)} or null")
        rate = body.get("rate", 1.0)
        latency = body.get("latency_ms", 0)
        count = body.get("count")
        phase = body.get("phase", "before")
        account = body.get("account")
        region = body.get("region")
        for name, v in (("account", account), ("region", region)):
            if v is not None and not isinstance(v, str):
                raise ControlError(f"{name} must be a string or null")
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ControlError("rate must be a number in [0, 1]")
        if not isinstance(latency, (int, float)) or latency < 0:
            raise ControlError("latency_ms must be a non-negative number")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ControlError("count must be a non-negative integer or null")
        if phase not in ("before", "after"):
            raise ControlError("phase must be 'before' or 'after'")
        rule = FaultRule(action=action, error=error, rate=float(rate), latency_ms=float(latency),
                         count=count, phase=phase, account=account, region=region)
        with self.stats_lock:
            if error is None and not latency:
                self.faults.pop(rule.key(), None)
            else:
                self.faults[rule.key()] = rule
        return rule.as_dict()

    @staticmethod
    def _check_hold(hold: Any) -> dict[str, Any]:
        if not isinstance(hold, dict) or hold.get("state", "pending") not in HOLD_STATES:
            raise ControlError(f"hold.state must be one of {list(HOLD_STATES)}")
        seconds = hold.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
            raise ControlError("seconds must be a non-negative number or null")
        return {"state": hold.get("state", "pending"), "seconds": seconds}

    @staticmethod
    def _check_fail(fail: Any) -> dict[str, str]:
        if not isinstance(fail, dict) or fail.get("state", "failed") not in FAIL_STATES:
            raise ControlError(f"fail.state must be one of {list(FAIL_STATES)}")
        return {
            "state": fail.get("state", "failed"),
            "code": str(fail.get("code") or "InternalFailure"),
            "message": str(fail.get("message") or "The VPC endpoint failed."),
        }

    def _add_new_endpoint_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        rule: dict[str, Any] = {"service": None, "hold": None, "fail": None, "remaining": None}
        if body.get("service"):
            rule["service"] = self.full_service_name(str(body["service"]))
        if body.get("hold") is not None:
            rule["hold"] = self._check_hold(body["hold"])
        if body.get("fail") is not None:
            rule["fail"] = self._check_fail(body["fail"])
        if not rule["hold"] and not rule["fail"]:
            raise ControlError("give hold and/or fail")
        count = body.get("count")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ControlError("count must be a non-negative integer or null")
        rule["remaining"] = count
        with self.lock:
            self.new_endpoint_rules.append(rule)
        return rule

    def _scopes(self) -> set[tuple[str, str]]:
        """Every (account, region) that may hold endpoints."""
        return {(ACCOUNT_ID, self.region), *[(m.account, m.region) for m in self.meta.values()]}

    def _find_endpoint(self, ep_id: str) -> tuple[Any, str]:
        for account, region in self._scopes():
            ep = self._backend(region, account).vpc_end_points.get(ep_id)
            if ep is not None:
                self._tls.account = account
                return ep, region
        raise ControlError(f"no endpoint {ep_id}", 404)

    def _endpoint_view(self, ep: Any) -> dict[str, Any]:
        m = self.meta.get(ep.id)
        return {
            "id": ep.id,
            "account": m.account if m else ACCOUNT_ID,
            "region": m.region if m else self.region,
            "state": ep.state,
            "service": ep.service_name,
            "vpc_id": ep.vpc_id,
            "private_dns_enabled": _truthy(ep.private_dns_enabled),
            "subnet_ids": list(ep.subnet_ids or []),
            "security_group_ids": list(ep.security_group_ids),
            "network_interface_ids": list(ep.network_interface_ids),
            "last_error": getattr(ep, "last_error", None),
            "held": bool(m and m.hold_state),
            # Wall-clock time (Unix seconds) at which the endpoint's pending ends (it was, or
            # will be, `available` from then on unless held or failed): benchmarks measure how
            # soon after it the operator noticed.
            "pending_until": (time.time() + m.pending_until - time.monotonic()) if m else None,
        }

    def _endpoint_views(self) -> list[dict[str, Any]]:
        with self.lock:
            self.tick()
            out = []
            for account, region in self._scopes():
                out += [self._endpoint_view(ep)
                        for ep in self._backend(region, account).vpc_end_points.values()]
            return out

    def _endpoint_action(self, ep_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.tick()
            ep, region = self._find_endpoint(ep_id)
            m = self._meta_for(ep, region)
            now = time.monotonic()
            if verb == "hold":
                if ep.state in ("deleting", "deleted"):
                    raise ControlError(f"{ep_id} is {ep.state}", 409)
                hold = self._check_hold(body)
                m.hold_state = hold["state"]
                m.hold_until = None if hold["seconds"] is None else now + float(hold["seconds"])
                ep.state = hold["state"]
            elif verb == "release":
                m.hold_state, m.hold_until = None, None
                if ep.state in HOLD_STATES and ep.state != "pending":
                    ep.state = "pending"
            elif verb == "fail":
                if ep.state in ("deleting", "deleted"):
                    raise ControlError(f"{ep_id} is {ep.state}", 409)
                fail = self._check_fail(body)
                m.hold_state, m.hold_until, m.fail_after_pending = None, None, None
                ep.state = fail["state"]
                ep.last_error = {"Code": fail["code"], "Message": fail["message"]}
            elif verb == "linger":
                seconds = body.get("seconds")
                if not isinstance(seconds, (int, float)) or seconds < 0:
                    raise ControlError("seconds must be a non-negative number")
                m.deleting_override = float(seconds)
                if ep.state == "deleting" and m.deleting_started is not None:
                    m.deleting_until = m.deleting_started + float(seconds)
            else:
                raise ControlError(f"unknown endpoint action {verb}", 404)
            self.tick()
            return self._endpoint_view(ep)


# ---------------------------------------------------------------- serving
def require_loopback(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise SystemExit(f"cannot resolve {host}: {e}")
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise SystemExit(f"refusing to bind {host}: the harness binds to loopback only")


class HarnessServer:
    """A threaded werkzeug server for a Harness, in a background thread."""

    def __init__(self, harness: Harness, host: str = "127.0.0.1", port: int = 0):
        require_loopback(host)
        self.harness = harness
        self.server = make_server(host, port, harness, threaded=True, request_handler=MotoRequestHandler)
        self.host = host
        self.port = self.server.server_address[1]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HarnessServer":
        self.thread = threading.Thread(target=self.server.serve_forever, name="bpl-harness", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (0 = pick a free one; see --port-file)")
    ap.add_argument("--region", default=DEFAULT_REGION)
    ap.add_argument("--seed-out", help="write the seeded topology here as JSON (seed.json)")
    ap.add_argument("--no-seed", action="store_true", help="start with an empty account")
    ap.add_argument("--pending-seconds", type=float, default=1.0)
    ap.add_argument("--deleting-seconds", type=float, default=1.0)
    ap.add_argument("--deleted-seconds", type=float, default=1.0,
                    help="how long a deleted endpoint is still described as `deleted`")
    ap.add_argument("--eni-linger-seconds", type=float, default=0.0,
                    help="DeleteSecurityGroup gets DependencyViolation this long after an endpoint is deleted")
    ap.add_argument("--fault-seed", type=int, default=None, help="seed for the random fault choice")
    ap.add_argument("--session-seconds", type=float, default=0.0,
                    help="longest lifetime of an STS AssumeRole session (0: as asked)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--quiet", action="store_true", help="no per-request log lines")
    ap.add_argument("--data-netns", help="network namespace (e.g. /run/netns/NAME) in which to serve the VPC's "
                    "resolver and the Bedrock stand-in (dataplane.py); without it neither runs")
    ap.add_argument("--tls-dir", help="where the stand-in keeps the rig CA (ca.pem) and its certificate "
                    "(default: <dir of --seed-out>/bedrock-tls, else ./bedrock-tls)")
    ap.add_argument("--public-address", default=None,
                    help="the address public Bedrock names resolve to, inside the namespace (default 203.0.113.10)")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING if args.quiet else logging.INFO)
    require_loopback(args.host)

    harness = Harness(
        region=args.region,
        pending_seconds=args.pending_seconds,
        deleting_seconds=args.deleting_seconds,
        deleted_seconds=args.deleted_seconds,
        eni_linger_seconds=args.eni_linger_seconds,
        fault_seed=args.fault_seed,
        session_seconds=args.session_seconds,
        seed_topology=not args.no_seed,
        seed_out=args.seed_out,
    )
    plane = None
    if args.data_netns:
        import dataplane

        tls_dir = args.tls_dir or os.path.join(os.path.dirname(os.path.abspath(args.seed_out or "x")), "bedrock-tls")
        plane = dataplane.DataPlane(harness, args.data_netns, tls_dir, BEDROCK_SERVICES,
                                    public_address=args.public_address or dataplane.DEFAULT_PUBLIC_ADDRESS)
        harness.dataplane = plane.start()
    server = HarnessServer(harness, args.host, args.port)
    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    print(f"bpl-harness listening on {server.url} (region {args.region}, moto {moto.__version__})", flush=True)
    if plane is not None:
        print(f"bpl-harness data plane in {args.data_netns}: resolver {plane.dns[0] if plane.dns else None}, "
              f"public {plane.public_address}, CA {plane.tls['ca']}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    if plane is not None:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
