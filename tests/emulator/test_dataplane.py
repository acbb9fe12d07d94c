"""The VPC's resolver and the Bedrock stand-in (dataplane.py), inside a throwaway network namespace.

Each module run creates a namespace of its own (root is needed: `ip netns add`), serves the data
plane in it, and runs its clients in it: DNS questions from a thread that joined the namespace, and
boto3's bedrock-runtime client in a process started with `ip netns exec` (which gives it the
namespace's resolv.conf, pointing at the VPC resolver, as a pod's DNS chain ends there). Nothing
leaves the namespace; the harness's EC2 API stays on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from dnslib import QTYPE, RCODE, DNSRecord

import dataplane as D
import harness as H
from conftest import FAST, REGION, ec2_client, http

HERE = os.path.dirname(os.path.abspath(__file__))
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
RUNTIME = f"bedrock-runtime.{REGION}.amazonaws.com"
RESOLVER = "10.0.0.2"
PUBLIC = D.DEFAULT_PUBLIC_ADDRESS
SERVICE = f"com.amazonaws.{REGION}.bedrock-runtime"


def _can_make_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


pytestmark = pytest.mark.skipif(_can_make_netns() is not None, reason=str(_can_make_netns()))


@pytest.fixture(scope="module")
def netns():
    name = f"bpl-dp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    etc = f"/etc/netns/{name}"
    os.makedirs(etc, exist_ok=True)
    with open(f"{etc}/resolv.conf", "w") as f:
        f.write(f"nameserver {RESOLVER}\noptions timeout:1 attempts:2\n")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


class Rig:
    def __init__(self, netns: str, tls_dir: str):
        self.netns = netns
        self.h = H.Harness(region=REGION, **FAST)
        self.plane = D.DataPlane(self.h, f"/run/netns/{netns}", tls_dir, H.BEDROCK_SERVICES,
                                 sync_seconds=0.05, drop_hold_seconds=2)
        self.h.dataplane = self.plane.start()
        self.server = H.HarnessServer(self.h, "127.0.0.1", 0).start()
        self.url = self.server.url
        self.ec2 = ec2_client(self.url)
        self.ca = self.plane.tls["ca"]
        self.client_ns = D.Netns(f"/run/netns/{netns}")  # our side of the namespace
        self._client: subprocess.Popen | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.stdin.close()  # type: ignore[union-attr]
            self._client.wait(timeout=10)
        self.client_ns.close()
        self.server.stop()
        self.plane.stop()

    # ------------------------------------------------------------ helpers
    @property
    def seed(self) -> dict[str, Any]:
        return self.h.seed  # type: ignore[return-value]

    def control(self, method: str, route: str, body: Any = None) -> Any:
        status, answer = http(f"{self.url}/_harness/{route}", method, body)
        assert status == 200, answer
        return answer

    def dns(self, name: str, qtype: str = "A") -> tuple[str, list[str]]:
        def ask():
            q = DNSRecord.question(name, qtype)
            return DNSRecord.parse(q.send(RESOLVER, 53, timeout=3))

        reply = self.client_ns.call(ask)
        return RCODE[reply.header.rcode], sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)

    def call(self, op: str = "converse", model: str = HAIKU, **kw: Any) -> dict[str, Any]:
        """One call by boto3 inside the namespace (a long-lived client process, new client per call)."""
        if self._client is None:
            self._client = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, os.path.join(HERE, "bedrock_client.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")},
            )
        req = {"op": op, "model": model, "ca": self.ca, "connect_timeout": 2, **kw}
        self._client.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
        self._client.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._client.stdout.readline())  # type: ignore[union-attr]

    def connect_from(self, source: str, address: str, timeout: float = 1.5) -> str:
        """A bare TCP connect to address:443 from `source` (added to the namespace's lo)."""
        subprocess.run(["ip", "-n", self.netns, "addr", "replace", f"{source}/32", "dev", "lo"], check=True)

        def attempt():
            s = socket.socket()
            s.settimeout(timeout)
            try:
                s.bind((source, 0))
                s.connect((address, 443))
                return "connected"
            except socket.timeout:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"
            except OSError as e:  # ENETUNREACH: the address is gone from the namespace
                return os.strerror(e.errno) if e.errno else str(e)
            finally:
                s.close()

        return self.client_ns.call(attempt)

    def group(self, cidr: str = "10.0.0.0/16") -> str:
        gid = self.ec2.create_security_group(GroupName=f"bpl-{time.monotonic_ns()}", Description="t",
                                             VpcId=self.seed["vpc_id"])["GroupId"]
        self.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}])
        return gid

    def endpoint(self, policy: Any = None, private_dns: bool = True, groups: list[str] | None = None,
                 wait: bool = True) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if policy is not None:
            kw["PolicyDocument"] = json.dumps(policy)
        ep = self.ec2.create_vpc_endpoint(
            VpcId=self.seed["vpc_id"], ServiceName=SERVICE, VpcEndpointType="Interface",
            SubnetIds=[s["id"] for s in self.seed["subnets"]], SecurityGroupIds=groups or [self.group()],
            PrivateDnsEnabled=private_dns, **kw)["VpcEndpoint"]
        if wait:
            self.wait_state(ep["VpcEndpointId"], "available")
        return ep

    def wait_state(self, ep_id: str, state: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            eps = self.ec2.describe_vpc_endpoints(VpcEndpointIds=[ep_id])["VpcEndpoints"]
            if eps and eps[0]["State"] == state:
                rig_sync(self)
                return
            time.sleep(0.05)
        raise AssertionError(f"{ep_id} not {state}")

    def eni_addresses(self, ep: dict[str, Any]) -> dict[str, str]:
        enis = self.ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])
        return {e["PrivateIpAddress"]: e["AvailabilityZone"] for e in enis["NetworkInterfaces"]}

    def netns_addresses(self) -> set[str]:
        out = subprocess.run(["ip", "-n", self.netns, "-4", "-o", "addr", "show", "dev", "lo"],
                             capture_output=True, text=True, check=True).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def calls(self) -> list[dict[str, Any]]:
        return self.control("GET", "bedrock/calls")["calls"]


@pytest.fixture(scope="module")
def rig_(netns, tmp_path_factory):
    r = Rig(netns, str(tmp_path_factory.mktemp("tls")))
    yield r
    r.close()


@pytest.fixture
def rig(rig_):
    rig_.control("POST", "reset")
    rig_sync(rig_)  # the old endpoints' listeners go
    return rig_


def rig_sync(rig: Rig) -> None:
    """What the data plane's loop does every 50 ms, now (tests need not sleep for it)."""
    rig.plane.sync()


# ---------------------------------------------------------------- resolver
def test_resolver_follows_endpoint_state(rig):
    assert rig.dns(RUNTIME) == ("NOERROR", [PUBLIC])
    ep = rig.endpoint(wait=False)
    assert rig.dns(RUNTIME) == ("NOERROR", [PUBLIC])  # pending: no private zone yet
    rig.wait_state(ep["VpcEndpointId"], "available")
    enis = rig.eni_addresses(ep)
    assert len(enis) == 3
    assert rig.dns(RUNTIME) == ("NOERROR", sorted(enis))
    regional, *zonal = [d["DnsName"] for d in ep["DnsEntries"] if "vpce.amazonaws.com" in d["DnsName"]]
    assert rig.dns(regional) == ("NOERROR", sorted(enis))
    for name in zonal:
        az = name.split(".")[0].rsplit("-", 3)[-3:]
        assert rig.dns(name)[1] == [a for a, z in enis.items() if z == "-".join(az)]
    assert rig.dns(RUNTIME, "AAAA") == ("NOERROR", [])

    rig.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PrivateDnsEnabled=False)
    rig.wait_state(ep["VpcEndpointId"], "available")
    assert rig.dns(RUNTIME) == ("NOERROR", [PUBLIC])
    assert rig.dns(regional) == ("NOERROR", sorted(enis))  # the vpce-... names stay

    rig.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    rig.wait_state(ep["VpcEndpointId"], "deleted")
    assert rig.dns(regional) == ("NXDOMAIN", [])
    assert rig.dns(RUNTIME) == ("NOERROR", [PUBLIC])
    assert rig.dns("example.com") == ("NXDOMAIN", [])


def test_resolver_overrides_simulate_custom_dns(rig):
    ep = rig.endpoint()
    rig.control("POST", "dns/overrides", {"name": RUNTIME, "addresses": ["198.51.100.7"]})
    assert rig.dns(RUNTIME) == ("NOERROR", ["198.51.100.7"])
    rig.control("POST", "dns/overrides", {"name": RUNTIME.upper() + ".", "nxdomain": True})
    assert rig.dns(RUNTIME) == ("NXDOMAIN", [])
    rig.control("DELETE", "dns/overrides", {"name": RUNTIME})
    assert rig.dns(RUNTIME) == ("NOERROR", sorted(rig.eni_addresses(ep)))
    status, answer = http(f"{rig.url}/_harness/dns/overrides", "POST", {"name": RUNTIME, "addresses": ["x"]})
    assert status == 400 and "x" in answer["error"]
    queries = rig.control("GET", "dns/queries")["queries"]
    assert {"name": RUNTIME, "type": "A", "answer": "NXDOMAIN"}.items() <= queries[-2].items()


# ---------------------------------------------------------------- stand-in
@pytest.mark.parametrize("op", ["converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream"])
def test_private_and_public_paths_are_told_apart(rig, op):
    public = rig.call(op)
    assert public["ok"], public
    assert public["resolved"] == [PUBLIC] and "public path" in public["text"]
    ep = rig.endpoint()
    private = rig.call(op)
    assert private["ok"], private
    assert private["resolved"] == sorted(rig.eni_addresses(ep))
    assert f"private path through {ep['VpcEndpointId']}" in private["text"]
    first, second = rig.calls()
    assert (first["path_kind"], first["endpoint"], first["address"]) == ("public", "public", PUBLIC)
    assert (second["path_kind"], second["endpoint"]) == ("private", ep["VpcEndpointId"])
    assert second["address"] in rig.eni_addresses(ep)
    expected_op = {"converse": "Converse", "converse_stream": "ConverseStream", "invoke_model": "InvokeModel",
                   "invoke_model_with_response_stream": "InvokeModelWithResponseStream"}[op]
    assert (second["operation"], second["model"], second["decision"]) == (expected_op, HAIKU, "allowed")
    assert second["principal"] == D.DEFAULT_PRINCIPALS["testing"]["arn"]


def test_vpce_name_reaches_an_endpoint_without_private_dns(rig):
    ep = rig.endpoint(private_dns=False)
    regional = ep["DnsEntries"][0]["DnsName"]
    assert rig.call()["resolved"] == [PUBLIC]
    r = rig.call(endpoint_url=f"https://{regional}")
    assert r["ok"] and ep["VpcEndpointId"] in r["text"], r


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


INVOKE = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
HAIKU_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/{HAIKU}"


def test_endpoint_policy_is_enforced_and_follows_changes(rig):
    ep = rig.endpoint(policy(
        {"Effect": "Allow", "Principal": "*", "Action": INVOKE, "Resource": [HAIKU_ARN]}))
    assert rig.call("converse")["ok"]
    assert rig.call("converse_stream")["ok"]
    denied = rig.call("converse", TITAN)
    assert (denied["ok"], denied["error"], denied["status"]) == (False, "AccessDeniedException", 403)
    who = D.DEFAULT_PRINCIPALS["testing"]["arn"]
    assert denied["message"] == (
        f"User: {who} is not authorized to perform: bedrock:InvokeModel on resource: "
        f"arn:aws:bedrock:{REGION}::foundation-model/{TITAN} because no VPC endpoint policy allows the "
        "bedrock:InvokeModel action")
    assert rig.calls()[-1]["decision"] == "denied"
    # No call reached the public address meanwhile.
    assert {c["endpoint"] for c in rig.calls()} == {ep["VpcEndpointId"]}

    # The stand-in enforces the document EC2 holds now.
    rig.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PolicyDocument=json.dumps(policy(
        {"Effect": "Allow", "Principal": "*", "Action": "bedrock:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "bedrock:InvokeModelWithResponseStream", "Resource": "*"})))
    rig.wait_state(ep["VpcEndpointId"], "available")
    assert rig.call("converse", TITAN)["ok"]
    denied = rig.call("converse_stream")
    assert denied["error"] == "AccessDeniedException"
    assert denied["message"].endswith("with an explicit deny in a VPC endpoint policy")


def test_principals_and_organization(rig):
    team = "arn:aws:iam::123456789012:role/team-a"
    rig.control("POST", "bedrock/principals", {"access_key": "AKIATEAMA", "arn": team, "org_id": "o-bplrig0001"})
    rig.control("POST", "bedrock/principals", {"access_key": "AKIAOTHER", "arn": "arn:aws:iam::210987654321:user/x",
                                               "org_id": "o-elsewhere1"})
    ep = rig.endpoint(policy({"Effect": "Allow", "Principal": {"AWS": [team]}, "Action": INVOKE, "Resource": "*"}))
    assert rig.call(key="AKIATEAMA")["ok"]
    assert rig.call(key="testing")["error"] == "AccessDeniedException"
    unknown = rig.call(key="AKIANOBODY")
    assert unknown["error"] == "UnrecognizedClientException", unknown

    rig.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PolicyDocument=json.dumps(policy(
        {"Effect": "Allow", "Principal": "*", "Action": INVOKE, "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-bplrig0001"}}})))
    rig.wait_state(ep["VpcEndpointId"], "available")
    assert rig.call(key="testing")["ok"]
    assert rig.call(key="AKIAOTHER")["error"] == "AccessDeniedException"


def test_inference_profile_needs_profile_and_models(rig):
    profile = f"us.{HAIKU}"
    rig.endpoint(policy({"Effect": "Allow", "Principal": "*", "Action": INVOKE, "Resource": [
        f"arn:aws:bedrock:{REGION}:*:inference-profile/{profile}", f"arn:aws:bedrock:*::foundation-model/{HAIKU}"]}))
    assert rig.call(model=profile)["ok"]
    ep2_policy = policy({"Effect": "Allow", "Principal": "*", "Action": INVOKE, "Resource": [HAIKU_ARN]})
    ep = rig.ec2.describe_vpc_endpoints()["VpcEndpoints"][0]
    rig.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PolicyDocument=json.dumps(ep2_policy))
    rig.wait_state(ep["VpcEndpointId"], "available")
    denied = rig.call(model=profile)
    assert denied["error"] == "AccessDeniedException"
    assert f"inference-profile/{profile}" in denied["message"]
    assert rig.call(model=HAIKU)["ok"]


# ---------------------------------------------------------------- security group and state
def test_security_group_drops_refused_sources(rig):
    ep = rig.endpoint(groups=[rig.group("10.0.1.0/24")])
    address = sorted(rig.eni_addresses(ep))[0]
    assert rig.connect_from("10.0.1.200", address) == "connected"
    assert rig.connect_from("10.0.2.200", address) == "timeout"  # no answer: a dropped SYN
    assert rig.connect_from("10.0.2.200", PUBLIC) == "connected"

    # Widening the group admits the other subnet at once; narrowing it drops everyone.
    gid = ep["Groups"][0]["GroupId"]
    rig.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}])
    rig_sync(rig)
    assert rig.connect_from("10.0.2.200", address) == "connected"
    rig.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.2.0/24"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.1.0/24"}]}])
    rig_sync(rig)
    assert rig.connect_from("10.0.1.200", address) == "timeout"
    failed = rig.call()
    assert (failed["ok"], failed["error"]) == (False, "timeout"), failed
    assert rig.calls() == []  # nothing served


def test_rule_for_another_port_admits_nobody(rig):
    ep = rig.endpoint(groups=[rig.group("10.0.0.0/16")])
    gid = ep["Groups"][0]["GroupId"]
    rig.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}])
    rig.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    rig_sync(rig)
    assert rig.connect_from("10.0.1.200", sorted(rig.eni_addresses(ep))[0]) == "timeout"


def test_endpoint_state_and_listeners_follow_the_enis(rig):
    ep = rig.endpoint()
    enis = rig.eni_addresses(ep)
    assert set(enis) <= rig.netns_addresses()
    address = sorted(enis)[0]
    rig.control("POST", f"endpoints/{ep['VpcEndpointId']}/hold", {"state": "pending"})
    rig_sync(rig)
    assert rig.connect_from("10.0.1.200", address) == "timeout"  # not available: nothing answers
    assert rig.dns(RUNTIME)[1] == [PUBLIC]
    rig.control("POST", f"endpoints/{ep['VpcEndpointId']}/release")
    rig.wait_state(ep["VpcEndpointId"], "available")
    assert rig.connect_from("10.0.1.200", address) == "connected"
    view = rig.control("GET", "dataplane")
    assert {(lst["address"], lst["endpoint"]) for lst in view["listeners"]} >= {(a, ep["VpcEndpointId"]) for a in enis}
    assert view["resolver"] == RESOLVER and view["public_address"] == PUBLIC

    rig.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    rig.wait_state(ep["VpcEndpointId"], "deleted")
    assert not set(enis) & rig.netns_addresses()
    assert rig.connect_from("10.0.1.200", address) == "Network is unreachable"
    r = rig.call()
    assert r["ok"] and r["resolved"] == [PUBLIC]


def test_unsigned_and_unknown_operations(rig):
    rig.endpoint()

    def raw(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return rig.plane.serve(sorted(rig.plane.snapshot().by_address())[0], "10.0.1.5", "POST", path, headers, b"{}")

    status, headers, body = raw(f"/model/{HAIKU}/converse", {})
    assert (status, json.loads(body)) == (403, {"message": "Missing Authentication Token"})
    assert headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException:")
    status, _, body = raw("/guardrail/g/version/1/apply", {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/x"})
    assert status == 404


# ---------------------------------------------------------------- pure parts
def test_event_stream_messages_parse_with_botocore():
    status, headers, body = D.canned_answer("ConverseStream", HAIKU, b'{"messages": [{"role": "user"}]}', "here")
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    buf = EventStreamBuffer()
    buf.add_data(body)
    events = [(m.headers[":event-type"], json.loads(m.payload)) for m in buf]
    assert events[0] == ("messageStart", {"role": "assistant"})
    assert "".join(e["delta"]["text"] for t, e in events if t == "contentBlockDelta").strip() == \
        "Hello from the Bedrock stand-in (here)."
    assert [t for t, _ in events[-3:]] == ["contentBlockStop", "messageStop", "metadata"]
    _, _, body = D.canned_answer("InvokeModelWithResponseStream", HAIKU, b"{}", "here")
    buf = EventStreamBuffer()
    buf.add_data(body)
    chunks = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in buf]
    assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"


def test_model_resources():
    assert D.model_resources(HAIKU, REGION, "111122223333") == [HAIKU_ARN]
    assert D.model_resources(f"us.{HAIKU}", REGION, "111122223333") == [
        f"arn:aws:bedrock:{REGION}:111122223333:inference-profile/us.{HAIKU}",
        *[f"arn:aws:bedrock:{r}::foundation-model/{HAIKU}" for r in ("us-east-1", "us-east-2", "us-west-2")]]
    assert D.model_resources(HAIKU_ARN, REGION, "1") == [HAIKU_ARN]


def test_ingress_filter_program_shape():
    import ipaddress

    prog = D.ingress_filter([ipaddress.ip_network("10.0.1.0/24"), ipaddress.ip_network("0.0.0.0/0")])
    assert len(prog) == 8 * (3 * 2 + 2)
    assert D.ingress_filter([]) == bytes.fromhex("0600000000000000") + bytes.fromhex("0600000000000400")


def test_without_a_namespace_the_harness_has_no_data_plane():
    h = H.Harness(region=REGION, **FAST)
    server = H.HarnessServer(h, "127.0.0.1", 0).start()
    try:
        status, _ = http(f"{server.url}/_harness/dataplane")
        assert status == 404
    finally:
        server.stop()


def test_namespace_joined_when_it_appears_and_again_when_replaced(tmp_path):
    name = f"bpl-dp-late-{os.getpid()}"
    h = H.Harness(region=REGION, **FAST)
    plane = D.DataPlane(h, f"/run/netns/{name}", str(tmp_path), H.BEDROCK_SERVICES, sync_seconds=3600)
    plane.start()

    def addresses() -> set[str]:
        out = subprocess.run(["ip", "-n", name, "-4", "-o", "addr", "show", "dev", "lo"],
                             capture_output=True, text=True, check=True).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    try:
        assert plane.netns is None  # not there yet: nothing served, nothing fails
        for _ in range(2):  # created, then deleted and created anew (rig down/up)
            subprocess.run(["ip", "netns", "add", name], check=True)
            plane.sync()
            assert plane.netns is not None
            assert {PUBLIC, RESOLVER} <= addresses()
            view = plane.route("GET", "dataplane", {})[1]
            assert view["attached"] and view["resolver"] == RESOLVER
            subprocess.run(["ip", "netns", "del", name], check=True)
        plane.sync()
        assert plane.netns is None
    finally:
        plane.stop()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
