"""Fixtures: the harness in-process, and plain moto (no rules) in a subprocess.

Everything binds to 127.0.0.1. Plain moto runs in its own process so that its
backends never share state with the harness's (moto's backends are global).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
    os.environ.pop(_var, None)

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

import harness as H  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

REGION = "us-east-1"
FAST = {"pending_seconds": 0.2, "deleting_seconds": 0.2, "deleted_seconds": 0.2, "eni_linger_seconds": 0.0}

PLAIN_MOTO = r"""
import sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
sys.stdin.read()   # run until the parent closes our stdin
s.stop()
"""


def ec2_client(url: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def http(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class Env:
    """One side of a comparison: an EC2 client plus (for the harness) its control API."""

    def __init__(self, url: str, harness: H.Harness | None = None):
        self.url = url
        self.ec2 = ec2_client(url)
        self.harness = harness

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, out = http(f"{self.url}/_harness/{path}", method, body)
        assert status == 200, (status, out)
        return out

    def control_raw(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http(f"{self.url}/_harness/{path}", method, body)


@pytest.fixture(scope="session")
def harness_server():
    h = H.Harness(region=REGION, **FAST)
    server = H.HarnessServer(h, "127.0.0.1", 0).start()
    yield server
    server.stop()


@pytest.fixture
def hx(harness_server) -> Env:
    """The harness, reset (and re-seeded) before each test."""
    env = Env(harness_server.url, harness_server.harness)
    env.control("POST", "reset", {})
    return env


@pytest.fixture(scope="session")
def plain_url():
    env = dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false")
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAIN_MOTO],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        port = int(proc.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def plain(plain_url) -> Env:
    """Plain moto 5.2.5 (no harness rules), reset before each test."""
    status, _ = http(f"{plain_url}/moto-api/reset", "POST", {})
    assert status == 200
    return Env(plain_url)


def make_topology(ec2: Any, dns: bool = True, cidr: str = "10.20.0.0/16") -> dict[str, Any]:
    """A VPC with subnets in us-east-1a (two), 1b, 1c and one security group."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    if dns:
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    base = cidr.split(".")
    prefix = f"{base[0]}.{base[1]}"

    def subnet(n: int, az: str) -> str:
        return ec2.create_subnet(VpcId=vpc, CidrBlock=f"{prefix}.{n}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]

    topo = {
        "vpc": vpc,
        "a": subnet(1, "us-east-1a"),
        "a2": subnet(4, "us-east-1a"),
        "b": subnet(2, "us-east-1b"),
        "c": subnet(3, "us-east-1c"),
    }
    topo["sg"] = ec2.create_security_group(GroupName=f"sg-{vpc}", Description="t", VpcId=vpc)["GroupId"]
    return topo


def wait_state(ec2: Any, ep_id: str, state: str | None, timeout: float = 5.0) -> list[str]:
    """Poll until the endpoint is in `state` (None = gone). Returns the states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        eps = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-endpoint-id", "Values": [ep_id]}])["VpcEndpoints"]
        cur = eps[0]["State"] if eps else None
        if not seen or seen[-1] != cur:
            seen.append(cur)
        if cur == state:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{ep_id} never reached {state}; saw {seen}")
        time.sleep(0.03)
