"""Tests of the EC2 emulator harness.

For each AWS rule the harness adds, the test first shows that plain moto
(`plain`, moto 5.2.5 in a subprocess, no middleware) lacks it, then that the
harness (`hx`) enforces it. Then the control API: faults, counters,
hold/release/fail, service AZs, config, reset, seeding, CLI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import HERE, REGION, http, make_topology, wait_state

import harness as H

RUNTIME = f"com.amazonaws.{REGION}.bedrock-runtime"
BEDROCK_SHORT = [
    "bedrock",
    "bedrock-runtime",
    "bedrock-agent",
    "bedrock-agent-runtime",
    "bedrock-mantle",
    "bedrock-data-automation",
    "bedrock-data-automation-runtime",
    "bedrock-agentcore",
]
REGIONAL_RE = re.compile(r"^vpce-[0-9a-f]{17}-[a-z0-9]{8}\.bedrock-runtime\.us-east-1\.vpce\.amazonaws\.com$")
ZONAL_RE = re.compile(r"^vpce-[0-9a-f]{17}-[a-z0-9]{8}-us-east-1[a-f]\.bedrock-runtime\.us-east-1\.vpce\.amazonaws\.com$")


def err(fn, *args, **kwargs) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as ei:
        fn(*args, **kwargs)
    r = ei.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def create(ec2, topo, subnets=("a", "b"), service=RUNTIME, **kw):
    args = dict(
        VpcId=topo["vpc"],
        ServiceName=service,
        VpcEndpointType="Interface",
        SubnetIds=[topo[s] for s in subnets],
        SecurityGroupIds=[topo["sg"]],
    )
    args.update(kw)
    return ec2.create_vpc_endpoint(**args)["VpcEndpoint"]


def describe(ec2, ep_id):
    return ec2.describe_vpc_endpoints(VpcEndpointIds=[ep_id])["VpcEndpoints"][0]


# --------------------------------------------------------------- subnet rules
def test_two_subnets_in_one_az_refused_on_create(plain, hx):
    t = make_topology(plain.ec2)
    assert create(plain.ec2, t, ("a", "a2"))["VpcEndpointId"]  # moto accepts

    t = make_topology(hx.ec2)
    code, msg, status = err(create, hx.ec2, t, ("a", "a2"))
    assert (code, status) == ("InvalidParameter", 400)
    assert msg == f"DuplicateSubnetsInSameZone: Found another VPC endpoint subnet in the availability zone of {t['a2']}"
    assert hx.ec2.describe_vpc_endpoints()["VpcEndpoints"] == []


def test_two_subnets_in_one_az_refused_on_modify(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t, ("a",))
    plain.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], AddSubnetIds=[t["a2"]])
    assert len(describe(plain.ec2, ep["VpcEndpointId"])["SubnetIds"]) == 2

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, ("a",))
    code, msg, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId=ep["VpcEndpointId"], AddSubnetIds=[t["a2"]])
    assert code == "InvalidParameter" and msg.startswith("DuplicateSubnetsInSameZone")
    # Swapping the subnet of an AZ in one call is fine.
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], AddSubnetIds=[t["a2"]], RemoveSubnetIds=[t["a"]])
    assert describe(hx.ec2, ep["VpcEndpointId"])["SubnetIds"] == [t["a2"]]


def test_subnet_in_az_the_service_does_not_offer(plain, hx):
    # moto offers every service in every AZ and has no way to change that.
    svc = plain.ec2.describe_vpc_endpoint_services(ServiceNames=[RUNTIME])["ServiceDetails"][0]
    assert len(svc["AvailabilityZones"]) == 6

    hx.control("POST", "service-azs", {"service": "bedrock-runtime", "azs": ["us-east-1a", "us-east-1b"]})
    svc = hx.ec2.describe_vpc_endpoint_services(ServiceNames=[RUNTIME])["ServiceDetails"][0]
    assert svc["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    assert svc["AvailabilityZoneIds"] == ["use1-az6", "use1-az1"]
    t = make_topology(hx.ec2)
    code, msg, _ = err(create, hx.ec2, t, ("a", "c"))
    assert code == "InvalidParameter"
    assert msg == f"The VPC endpoint service {RUNTIME} does not support the availability zone of the subnet: {t['c']}."
    ep = create(hx.ec2, t, ("a",))
    code, _, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId=ep["VpcEndpointId"], AddSubnetIds=[t["c"]])
    assert code == "InvalidParameter"
    # Other services keep all AZs.
    create(hx.ec2, t, ("c",), service=f"com.amazonaws.{REGION}.bedrock-agent-runtime")


def test_subnet_of_another_vpc(plain, hx):
    t, other = make_topology(plain.ec2), make_topology(plain.ec2, cidr="10.30.0.0/16")
    assert create(plain.ec2, t, subnets=())["VpcEndpointId"]
    plain.ec2.create_vpc_endpoint(VpcId=t["vpc"], ServiceName=RUNTIME, VpcEndpointType="Interface",
                                  SubnetIds=[other["b"]], PrivateDnsEnabled=False)

    t, other = make_topology(hx.ec2), make_topology(hx.ec2, cidr="10.30.0.0/16")
    code, msg, _ = err(hx.ec2.create_vpc_endpoint, VpcId=t["vpc"], ServiceName=RUNTIME,
                       VpcEndpointType="Interface", SubnetIds=[other["b"]])
    assert code == "InvalidParameter" and other["b"] in msg


def test_nonexistent_subnet_and_vpc(plain, hx):
    # moto already gets these right; the harness keeps them.
    for env in (plain, hx):
        t = make_topology(env.ec2)
        code, msg, _ = err(env.ec2.create_vpc_endpoint, VpcId=t["vpc"], ServiceName=RUNTIME,
                           VpcEndpointType="Interface", SubnetIds=["subnet-0123456789abcdef0"])
        assert code == "InvalidSubnetID.NotFound" and "subnet-0123456789abcdef0" in msg
        code, _, _ = err(env.ec2.create_vpc_endpoint, VpcId="vpc-0123456789abcdef0", ServiceName=RUNTIME,
                         VpcEndpointType="Interface", SubnetIds=[t["a"]])
        assert code == "InvalidVpcID.NotFound"


def test_nonexistent_security_group(plain, hx):
    t = make_topology(plain.ec2)
    assert create(plain.ec2, t, SecurityGroupIds=["sg-0123456789abcdef0"])["VpcEndpointId"]

    t = make_topology(hx.ec2)
    code, msg, _ = err(create, hx.ec2, t, SecurityGroupIds=["sg-0123456789abcdef0"])
    assert code == "InvalidGroup.NotFound" and "sg-0123456789abcdef0" in msg
    ep = create(hx.ec2, t)
    code, _, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId=ep["VpcEndpointId"],
                     AddSecurityGroupIds=["sg-0123456789abcdef0"])
    assert code == "InvalidGroup.NotFound"
    # A group of another VPC is not found in this one.
    other = make_topology(hx.ec2, cidr="10.30.0.0/16")
    code, _, _ = err(create, hx.ec2, t, SecurityGroupIds=[other["sg"]])
    assert code == "InvalidGroup.NotFound"


def test_unknown_service_name(plain, hx):
    t = make_topology(plain.ec2)
    assert create(plain.ec2, t, service="com.amazonaws.us-east-1.no-such-service")["VpcEndpointId"]

    t = make_topology(hx.ec2)
    code, msg, _ = err(create, hx.ec2, t, service="com.amazonaws.us-east-1.no-such-service")
    assert code == "InvalidServiceName"
    assert msg == "The Vpc Endpoint Service 'com.amazonaws.us-east-1.no-such-service' does not exist"
    code, msg, _ = err(create, hx.ec2, t, VpcEndpointType="Gateway")
    assert code == "InvalidParameter" and "does not match available service types" in msg


def test_default_security_group_when_none_given(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t, SecurityGroupIds=[])
    assert not ep.get("Groups")

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, SecurityGroupIds=[])
    default = hx.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    assert [g["GroupId"] for g in ep["Groups"]] == [default]


# ---------------------------------------------------------------- private DNS
def test_private_dns_requires_vpc_dns_attributes(plain, hx):
    t = make_topology(plain.ec2, dns=False)
    assert create(plain.ec2, t, PrivateDnsEnabled=True)["PrivateDnsEnabled"] is True

    t = make_topology(hx.ec2, dns=False)
    code, msg, _ = err(create, hx.ec2, t, PrivateDnsEnabled=True)
    assert code == "InvalidParameter"
    assert msg == ("Enabling private DNS requires both enableDnsSupport and enableDnsHostnames "
                   f"VPC attributes set to true for {t['vpc']}")
    # Default for interface endpoints is private DNS on: same error.
    assert err(create, hx.ec2, t)[0] == "InvalidParameter"
    hx.ec2.modify_vpc_attribute(VpcId=t["vpc"], EnableDnsHostnames={"Value": True})  # support is on by default
    assert create(hx.ec2, t)["PrivateDnsEnabled"] is True


def test_second_private_dns_endpoint_for_same_service(plain, hx):
    t = make_topology(plain.ec2)
    create(plain.ec2, t, ("a",))
    assert create(plain.ec2, t, ("b",))["VpcEndpointId"]  # moto accepts a second one

    t = make_topology(hx.ec2)
    first = create(hx.ec2, t, ("a",))
    code, msg, _ = err(create, hx.ec2, t, ("b",))
    assert code == "InvalidParameter"
    assert msg == ("private-dns-enabled cannot be set because there is already a conflicting DNS domain "
                   f"for bedrock-runtime.us-east-1.amazonaws.com in the VPC {t['vpc']}")
    # Without private DNS, or for another service, or in another VPC: fine.
    create(hx.ec2, t, ("b",), PrivateDnsEnabled=False)
    create(hx.ec2, t, ("b",), service=f"com.amazonaws.{REGION}.bedrock")
    other = make_topology(hx.ec2, cidr="10.30.0.0/16")
    create(hx.ec2, other, ("a",))
    # Once the first is gone, the domain is free again.
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[first["VpcEndpointId"]])
    assert err(create, hx.ec2, t, ("c",))[0] == "InvalidParameter"  # still deleting
    wait_state(hx.ec2, first["VpcEndpointId"], "deleted")
    create(hx.ec2, t, ("c",))


def test_modify_private_dns(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t)
    plain.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PrivateDnsEnabled=False)
    assert describe(plain.ec2, ep["VpcEndpointId"])["PrivateDnsEnabled"] is True  # ignored

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PrivateDnsEnabled=False)
    d = describe(hx.ec2, ep["VpcEndpointId"])
    assert d["PrivateDnsEnabled"] is False
    assert "bedrock-runtime.us-east-1.amazonaws.com" not in [e["DnsName"] for e in d["DnsEntries"]]
    # Another endpoint takes the domain; turning it back on conflicts.
    create(hx.ec2, t, ("c",))
    code, msg, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId=ep["VpcEndpointId"], PrivateDnsEnabled=True)
    assert code == "InvalidParameter" and "conflicting DNS domain" in msg
    # Turning it on needs the VPC attributes too.
    t2 = make_topology(hx.ec2, dns=False, cidr="10.30.0.0/16")
    ep2 = create(hx.ec2, t2, PrivateDnsEnabled=False)
    code, msg, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId=ep2["VpcEndpointId"], PrivateDnsEnabled=True)
    assert code == "InvalidParameter" and msg.startswith("Enabling private DNS requires")


# ---------------------------------------------------------- ModifyVpcEndpoint
def test_modify_reset_policy_and_policy_document(plain, hx):
    deny = json.dumps({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]})
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t, PolicyDocument=deny)
    plain.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], ResetPolicy=True)
    assert describe(plain.ec2, ep["VpcEndpointId"])["PolicyDocument"] == deny  # moto ignores ResetPolicy

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, PolicyDocument=deny)
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], ResetPolicy=True)
    assert json.loads(describe(hx.ec2, ep["VpcEndpointId"])["PolicyDocument"])["Statement"][0]["Effect"] == "Allow"
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PolicyDocument=deny)
    assert describe(hx.ec2, ep["VpcEndpointId"])["PolicyDocument"] == deny


def test_modify_subnets_keeps_one_eni_per_subnet(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t, ("a",))
    plain.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], AddSubnetIds=[t["b"]])
    d = describe(plain.ec2, ep["VpcEndpointId"])
    assert len(d["SubnetIds"]) == 2 and len(d["NetworkInterfaceIds"]) == 1  # moto: no ENI for the new subnet

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, ("a", "b"))
    ep_id = ep["VpcEndpointId"]
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep_id, AddSubnetIds=[t["c"]], RemoveSubnetIds=[t["a"]])
    d = describe(hx.ec2, ep_id)
    assert d["SubnetIds"] == [t["b"], t["c"]]
    enis = hx.ec2.describe_network_interfaces(NetworkInterfaceIds=d["NetworkInterfaceIds"])["NetworkInterfaces"]
    assert sorted(e["SubnetId"] for e in enis) == sorted([t["b"], t["c"]])
    old = set(ep["NetworkInterfaceIds"]) - set(d["NetworkInterfaceIds"])
    assert len(old) == 1
    code, _, _ = err(hx.ec2.describe_network_interfaces, NetworkInterfaceIds=list(old))
    assert code == "InvalidNetworkInterfaceID.NotFound"
    zonal = sorted(e["DnsName"].split(".")[0][-10:] for e in d["DnsEntries"] if ZONAL_RE.match(e["DnsName"]))
    assert zonal == ["us-east-1b", "us-east-1c"]


def test_modify_security_groups_updates_endpoint_and_enis(hx):
    t = make_topology(hx.ec2)
    sg2 = hx.ec2.create_security_group(GroupName="second", Description="d", VpcId=t["vpc"])["GroupId"]
    ep = create(hx.ec2, t)
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], AddSecurityGroupIds=[sg2],
                               RemoveSecurityGroupIds=[t["sg"]])
    d = describe(hx.ec2, ep["VpcEndpointId"])
    assert [g["GroupId"] for g in d["Groups"]] == [sg2]
    for eni in hx.ec2.describe_network_interfaces(NetworkInterfaceIds=d["NetworkInterfaceIds"])["NetworkInterfaces"]:
        assert [g["GroupId"] for g in eni["Groups"]] == [sg2]
    hx.ec2.delete_security_group(GroupId=t["sg"])  # no longer used


def test_modify_unknown_endpoint(hx):
    code, _, _ = err(hx.ec2.modify_vpc_endpoint, VpcEndpointId="vpce-0123456789abcdef0", ResetPolicy=True)
    assert code == "InvalidVpcEndpointId.NotFound"


# ------------------------------------------------------- DeleteSecurityGroup
def test_delete_security_group_in_use_by_endpoint(plain, hx):
    t = make_topology(plain.ec2)
    create(plain.ec2, t)
    plain.ec2.delete_security_group(GroupId=t["sg"])  # moto deletes it

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    code, msg, status = err(hx.ec2.delete_security_group, GroupId=t["sg"])
    assert (code, msg, status) == ("DependencyViolation", f"resource {t['sg']} has a dependent object", 400)
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    assert err(hx.ec2.delete_security_group, GroupId=t["sg"])[0] == "DependencyViolation"  # deleting
    wait_state(hx.ec2, ep["VpcEndpointId"], "deleted")
    hx.ec2.delete_security_group(GroupId=t["sg"])
    # The deleted endpoint still describes fine without its group.
    assert describe(hx.ec2, ep["VpcEndpointId"])["State"] == "deleted"


def test_delete_security_group_while_enis_linger(hx):
    hx.control("POST", "config", {"eni_linger_seconds": 1.0})
    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    wait_state(hx.ec2, ep["VpcEndpointId"], "deleted")
    assert err(hx.ec2.delete_security_group, GroupId=t["sg"])[0] == "DependencyViolation"
    time.sleep(1.05)
    hx.ec2.delete_security_group(GroupId=t["sg"])


# ------------------------------------------------------------- ClientToken
def test_client_token_idempotency(plain, hx):
    t = make_topology(plain.ec2)
    a = create(plain.ec2, t, PrivateDnsEnabled=False, ClientToken="tok-1")
    b = create(plain.ec2, t, PrivateDnsEnabled=False, ClientToken="tok-1")
    assert a["VpcEndpointId"] != b["VpcEndpointId"]  # moto makes a second endpoint

    t = make_topology(hx.ec2)
    a = create(hx.ec2, t, ClientToken="tok-1")
    b = create(hx.ec2, t, ClientToken="tok-1")
    assert a["VpcEndpointId"] == b["VpcEndpointId"]
    assert len(hx.ec2.describe_vpc_endpoints()["VpcEndpoints"]) == 1
    # Subnet order does not make a request different.
    c = hx.ec2.create_vpc_endpoint(VpcId=t["vpc"], ServiceName=RUNTIME, VpcEndpointType="Interface",
                                   SubnetIds=[t["b"], t["a"]], SecurityGroupIds=[t["sg"]], ClientToken="tok-1")
    assert c["VpcEndpoint"]["VpcEndpointId"] == a["VpcEndpointId"]
    code, _, status = err(create, hx.ec2, t, ("a", "c"), ClientToken="tok-1")
    assert (code, status) == ("IdempotentParameterMismatch", 400)
    code, _, _ = err(create, hx.ec2, t, ("c",), PrivateDnsEnabled=False, ClientToken="x" * 65)
    assert code == "InvalidParameterValue"
    assert create(hx.ec2, t, ("c",), PrivateDnsEnabled=False, ClientToken="y" * 64)["VpcEndpointId"]


# ---------------------------------------------------------------- lifecycle
def test_lifecycle_pending_available_deleting_deleted_gone(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t)
    assert ep["State"] == "available"  # moto: at once
    plain.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    assert describe(plain.ec2, ep["VpcEndpointId"])["State"] == "deleted"
    time.sleep(0.5)
    assert describe(plain.ec2, ep["VpcEndpointId"])["State"] == "deleted"  # forever

    hx.control("POST", "config", {"pending_seconds": 0.5, "deleting_seconds": 0.5, "deleted_seconds": 0.5})
    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    ep_id = ep["VpcEndpointId"]
    assert ep["State"] == "pending"
    assert describe(hx.ec2, ep_id)["State"] == "pending"
    assert wait_state(hx.ec2, ep_id, "available") == ["pending", "available"]
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=ep_id, ResetPolicy=True)
    assert describe(hx.ec2, ep_id)["State"] == "pending"
    wait_state(hx.ec2, ep_id, "available")
    out = hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep_id])
    assert out["Unsuccessful"] == []
    assert describe(hx.ec2, ep_id)["State"] == "deleting"
    assert hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep_id])["Unsuccessful"] == []  # again: fine
    assert wait_state(hx.ec2, ep_id, None) == ["deleting", "deleted", None]
    code, _, _ = err(hx.ec2.describe_vpc_endpoints, VpcEndpointIds=[ep_id])
    assert code == "InvalidVpcEndpointId.NotFound"
    # ENIs went with it.
    assert hx.ec2.describe_network_interfaces(
        Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]}])["NetworkInterfaces"] == []


def test_state_filter_and_pending_seconds_flag(hx):
    hx.control("POST", "config", {"pending_seconds": 30})
    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    f = [{"Name": "vpc-endpoint-state", "Values": ["pending"]}]
    assert [e["VpcEndpointId"] for e in hx.ec2.describe_vpc_endpoints(Filters=f)["VpcEndpoints"]] == [ep["VpcEndpointId"]]
    time.sleep(0.3)
    assert describe(hx.ec2, ep["VpcEndpointId"])["State"] == "pending"


def test_delete_unknown_endpoint_is_unsuccessful(plain, hx):
    assert plain.ec2.delete_vpc_endpoints(VpcEndpointIds=["vpce-0123456789abcdef0"])["Unsuccessful"] == []
    out = hx.ec2.delete_vpc_endpoints(VpcEndpointIds=["vpce-0123456789abcdef0"])["Unsuccessful"]
    assert out == [{"Error": {"Code": "InvalidVpcEndpoint.NotFound",
                              "Message": "The VpcEndpoint Id 'vpce-0123456789abcdef0' does not exist"},
                    "ResourceId": "vpce-0123456789abcdef0"}]


# -------------------------------------------------------------- DNS and ENIs
def test_dns_entries_look_like_aws(plain, hx):
    t = make_topology(plain.ec2)
    names = [e["DnsName"] for e in create(plain.ec2, t)["DnsEntries"]]
    assert not any(REGIONAL_RE.match(n) for n in names)

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, ("a", "b"))
    entries = ep["DnsEntries"]
    names = [e["DnsName"] for e in entries]
    assert REGIONAL_RE.match(names[0]), names
    assert names[0].startswith(ep["VpcEndpointId"] + "-")
    suffix = names[0].split(".")[0]
    assert names[1:3] == [
        f"{suffix}-us-east-1a.bedrock-runtime.us-east-1.vpce.amazonaws.com",
        f"{suffix}-us-east-1b.bedrock-runtime.us-east-1.vpce.amazonaws.com",
    ]
    assert names[3] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert {e["HostedZoneId"] for e in entries[:3]} == {"Z7HUB22UULQXV"}
    assert re.match(r"^Z[A-Z0-9]{12,}$", entries[3]["HostedZoneId"])
    assert describe(hx.ec2, ep["VpcEndpointId"])["DnsEntries"] == entries
    # Private DNS off: no private name. bedrock-mantle's private name is under api.aws.
    off = create(hx.ec2, t, ("c",), PrivateDnsEnabled=False, service=f"com.amazonaws.{REGION}.bedrock-agent")
    assert all("vpce.amazonaws.com" in e["DnsName"] for e in off["DnsEntries"])
    mantle = create(hx.ec2, t, ("c",), service=f"com.amazonaws.{REGION}.bedrock-mantle")
    assert mantle["DnsEntries"][-1]["DnsName"] == "bedrock-mantle.us-east-1.api.aws"
    assert mantle["DnsEntries"][0]["DnsName"].endswith(".bedrock-mantle.us-east-1.vpce.amazonaws.com")


def test_one_eni_per_subnet_with_endpoint_groups(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t)
    enis = plain.ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])["NetworkInterfaces"]
    assert all(e["InterfaceType"] == "interface" and e["Groups"][0]["GroupId"] != t["sg"] for e in enis)

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, ("a", "b", "c"))
    assert len(ep["NetworkInterfaceIds"]) == 3
    enis = hx.ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])["NetworkInterfaces"]
    assert sorted(e["SubnetId"] for e in enis) == sorted([t["a"], t["b"], t["c"]])
    for e in enis:
        assert e["InterfaceType"] == "vpc_endpoint"
        assert e["RequesterManaged"] is True
        assert e["Description"] == f"VPC Endpoint Interface {ep['VpcEndpointId']}"
        assert [g["GroupId"] for g in e["Groups"]] == [t["sg"]]
        assert e["PrivateIpAddress"].startswith("10.20.")


# ------------------------------------------------------ endpoint services
def test_bedrock_endpoint_services(plain, hx):
    missing = []
    for short in BEDROCK_SHORT:
        try:
            plain.ec2.describe_vpc_endpoint_services(ServiceNames=[f"com.amazonaws.{REGION}.{short}"])
        except ClientError:
            missing.append(short)
    assert missing == ["bedrock-mantle", "bedrock-data-automation", "bedrock-data-automation-runtime",
                       "bedrock-agentcore"]

    names = [f"com.amazonaws.{REGION}.{s}" for s in BEDROCK_SHORT]
    out = hx.ec2.describe_vpc_endpoint_services(ServiceNames=names)
    assert sorted(out["ServiceNames"]) == sorted(names)
    details = {d["ServiceName"]: d for d in out["ServiceDetails"]}
    for short in BEDROCK_SHORT:
        d = details[f"com.amazonaws.{REGION}.{short}"]
        assert d["ServiceType"] == [{"ServiceType": "Interface"}]
        assert d["AvailabilityZones"] == [f"us-east-1{x}" for x in "abcdef"]
        assert len(d["AvailabilityZoneIds"]) == 6
        want = "bedrock-mantle.us-east-1.api.aws" if short == "bedrock-mantle" else f"{short}.us-east-1.amazonaws.com"
        assert d["PrivateDnsName"] == want
    assert err(hx.ec2.describe_vpc_endpoint_services, ServiceNames=["com.amazonaws.us-east-1.nope"])[0] == "InvalidServiceName"
    flt = hx.ec2.describe_vpc_endpoint_services(Filters=[{"Name": "service-name", "Values": ["*.bedrock-agent*"]}])
    assert sorted(flt["ServiceNames"]) == sorted([f"com.amazonaws.{REGION}.bedrock-agent",
                                                  f"com.amazonaws.{REGION}.bedrock-agent-runtime",
                                                  f"com.amazonaws.{REGION}.bedrock-agentcore"])
    # Every new service is usable for an endpoint.
    t = make_topology(hx.ec2)
    create(hx.ec2, t, ("a",), service=f"com.amazonaws.{REGION}.bedrock-data-automation-runtime")


# --------------------------------------------------------------------- tags
def test_tag_filters_and_tag_specifications(plain, hx):
    spec = [{"ResourceType": "vpc-endpoint", "Tags": [{"Key": "bedrock.privatelink.io/owner-uid", "Value": "u-1"},
                                                       {"Key": "Name", "Value": "ep"}]}]
    sg_spec = [{"ResourceType": "security-group", "Tags": [{"Key": "bedrock.privatelink.io/owner-uid", "Value": "u-1"}]}]
    for env in (plain, hx):
        t = make_topology(env.ec2)
        ep = create(env.ec2, t, TagSpecifications=spec)
        create(env.ec2, t, ("c",), PrivateDnsEnabled=False)  # untagged
        assert {x["Key"] for x in ep["Tags"]} == {"bedrock.privatelink.io/owner-uid", "Name"}
        sg = env.ec2.create_security_group(GroupName="tagged", Description="d", VpcId=t["vpc"],
                                           TagSpecifications=sg_spec)["GroupId"]
        for flt, want in (
            ({"Name": "tag:bedrock.privatelink.io/owner-uid", "Values": ["u-1"]}, 1),
            ({"Name": "tag:bedrock.privatelink.io/owner-uid", "Values": ["u-2"]}, 0),
            ({"Name": "tag-key", "Values": ["bedrock.privatelink.io/owner-uid"]}, 1),
            ({"Name": "tag-key", "Values": ["nope"]}, 0),
        ):
            eps = env.ec2.describe_vpc_endpoints(Filters=[flt])["VpcEndpoints"]
            assert len(eps) == want, (env.url, flt)
            sgs = env.ec2.describe_security_groups(Filters=[flt])["SecurityGroups"]
            assert [g["GroupId"] for g in sgs] == ([sg] if want else []), (env.url, flt)


def test_describe_filters_moto_lacks(plain, hx):
    t = make_topology(plain.ec2)
    ep = create(plain.ec2, t)
    with pytest.raises(Exception):  # moto answers 500 to this filter
        plain.ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-endpoint-id", "Values": [ep["VpcEndpointId"]]}])

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    create(hx.ec2, t, ("c",), service=f"com.amazonaws.{REGION}.bedrock")
    for flt, want in (
        ({"Name": "vpc-endpoint-id", "Values": [ep["VpcEndpointId"]]}, 1),
        ({"Name": "vpc-id", "Values": [t["vpc"]]}, 2),
        ({"Name": "service-name", "Values": [RUNTIME]}, 1),
        ({"Name": "service-name", "Values": ["com.amazonaws.us-east-1.bedrock*"]}, 2),
        ({"Name": "vpc-endpoint-type", "Values": ["Interface"]}, 2),
    ):
        assert len(hx.ec2.describe_vpc_endpoints(Filters=[flt])["VpcEndpoints"]) == want, flt
    assert err(hx.ec2.describe_vpc_endpoints, Filters=[{"Name": "bogus", "Values": ["x"]}])[0] == "InvalidParameterValue"
    page = hx.ec2.describe_vpc_endpoints(MaxResults=5)
    assert len(page["VpcEndpoints"]) == 2 and "NextToken" not in page


# ------------------------------------------------------------- wire format
def test_raw_form_post_and_error_document(hx):
    """aws-sdk-rust sends a form-encoded POST with Action/Version; errors are EC2 XML."""
    body = urllib.parse.urlencode({
        "Action": "CreateVpcEndpoint", "Version": "2016-11-15", "VpcId": hx.harness.seed["vpc_id"],
        "ServiceName": "com.amazonaws.us-east-1.nope", "VpcEndpointType": "Interface",
    }).encode()
    req = urllib.request.Request(hx.url + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/ec2/aws4_request, "
                         "SignedHeaders=host, Signature=0",
    })
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 400
    xml = ei.value.read().decode()
    assert re.search(r"<Response><Errors><Error><Code>InvalidServiceName</Code><Message>[^<]+</Message>"
                     r"</Error></Errors><RequestID>[0-9a-f-]{36}</RequestID></Response>", xml), xml
    # Success answers carry a UUID request id, for our handlers and moto's alike.
    for action in ("DescribeVpcEndpoints", "DescribeVpcs"):
        body = urllib.parse.urlencode({"Action": action, "Version": "2016-11-15"}).encode()
        with urllib.request.urlopen(urllib.request.Request(hx.url + "/", data=body, method="POST"), timeout=10) as r:
            assert re.search(r"<requestId>[0-9a-f-]{36}</requestId>", r.read().decode())


# ============================================================ control API
def test_health_and_seed(hx):
    out = hx.control("GET", "health")
    assert out["ok"] is True and out["region"] == REGION and out["moto"] == "5.2.5"
    seed = hx.control("GET", "seed")
    assert set(seed) == {"region", "vpc_id", "vpc_cidr", "subnets", "instances",
                         # other accounts and the second region (issue 17; test_accounts.py)
                         "account", "second_region", "vpcs", "roles"}
    assert seed["vpc_cidr"] == "10.0.0.0/16"
    ec2 = hx.ec2
    vpc = ec2.describe_vpcs(VpcIds=[seed["vpc_id"]])["Vpcs"][0]
    assert {"Key": "Name", "Value": "bpl-rig-cluster"} in vpc["Tags"]
    for attr, key in (("enableDnsSupport", "EnableDnsSupport"), ("enableDnsHostnames", "EnableDnsHostnames")):
        assert ec2.describe_vpc_attribute(VpcId=seed["vpc_id"], Attribute=attr)[key]["Value"] is True
    assert [(s["az"], s["cidr"], s["az_id"]) for s in seed["subnets"]] == [
        ("us-east-1a", "10.0.1.0/24", "use1-az6"), ("us-east-1b", "10.0.2.0/24", "use1-az1"),
        ("us-east-1c", "10.0.3.0/24", "use1-az2")]
    subnets = ec2.describe_subnets(Filters=[{"Name": "tag:kubernetes.io/role/internal-elb", "Values": ["1"]}])["Subnets"]
    assert sorted(s["SubnetId"] for s in subnets) == sorted(s["id"] for s in seed["subnets"])
    tags = {s["SubnetId"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in subnets}
    assert tags[seed["subnets"][0]["id"]]["Name"] == "bpl-rig-private-us-east-1a"
    res = ec2.describe_instances(InstanceIds=[i["id"] for i in seed["instances"]])["Reservations"]
    insts = {i["InstanceId"]: i for r in res for i in r["Instances"]}
    for want in seed["instances"]:
        got = insts[want["id"]]
        assert got["SubnetId"] == want["subnet_id"]
        assert got["Placement"]["AvailabilityZone"] == want["az"]
        assert got["PrivateIpAddress"] == want["private_ip"]
        assert got["PrivateDnsName"] == want["private_dns"]
    # The seeded topology takes a bedrock-runtime endpoint with private DNS.
    ep = hx.ec2.create_vpc_endpoint(VpcId=seed["vpc_id"], ServiceName=RUNTIME, VpcEndpointType="Interface",
                                    SubnetIds=[s["id"] for s in seed["subnets"]])["VpcEndpoint"]
    assert ep["PrivateDnsEnabled"] is True


def test_reset_clears_everything(hx):
    old_seed = hx.harness.seed
    t = make_topology(hx.ec2)
    create(hx.ec2, t)
    hx.control("POST", "faults", {"action": "DescribeVpcs", "latency_ms": 1})
    hx.control("POST", "config", {"pending_seconds": 9})
    hx.control("POST", "service-azs", {"service": "bedrock", "azs": ["us-east-1a"]})
    out = hx.control("POST", "reset", {})
    assert out["seed"]["vpc_id"] != old_seed["vpc_id"]
    assert hx.ec2.describe_vpc_endpoints()["VpcEndpoints"] == []
    assert [v["VpcId"] for v in hx.ec2.describe_vpcs(VpcIds=[out["seed"]["vpc_id"]])["Vpcs"]] == [out["seed"]["vpc_id"]]
    assert err(hx.ec2.describe_vpcs, VpcIds=[t["vpc"]])[0] == "InvalidVpcID.NotFound"
    assert hx.control("GET", "faults") == {"faults": []}
    assert hx.control("GET", "config")["pending_seconds"] == 0.2
    assert hx.control("GET", "service-azs") == {"service_azs": {}}
    calls = hx.control("GET", "calls")
    assert calls == {"calls": {"DescribeVpcEndpoints": 1, "DescribeVpcs": 2}, "faulted": {}}
    # Reset without seed: an empty account (moto's default VPC only).
    out = hx.control("POST", "reset", {"seed": False})
    assert out["seed"] is None
    assert [v["IsDefault"] for v in hx.ec2.describe_vpcs()["Vpcs"]] == [True]


def test_fault_request_limit_exceeded(hx):
    hx.control("POST", "faults", {"action": "DescribeVpcEndpoints", "error": "RequestLimitExceeded", "rate": 1.0})
    code, msg, status = err(hx.ec2.describe_vpc_endpoints)
    assert (code, status) == ("RequestLimitExceeded", 503)
    hx.ec2.describe_vpcs()  # other actions unaffected
    hx.control("DELETE", "faults")
    hx.ec2.describe_vpc_endpoints()
    calls = hx.control("GET", "calls")
    assert calls["calls"]["DescribeVpcEndpoints"] == 2
    assert calls["faulted"] == {"DescribeVpcEndpoints": 1}


def test_fault_internal_error_and_unavailable_and_wildcard(hx):
    hx.control("POST", "faults", {"action": "*", "error": "InternalError", "rate": 1})
    assert err(hx.ec2.describe_vpcs)[::2] == ("InternalError", 500)
    hx.control("POST", "faults", {"action": "DescribeVpcs", "error": "Unavailable", "rate": 1})
    assert err(hx.ec2.describe_vpcs)[::2] == ("Unavailable", 503)  # the action's own rule goes first
    assert err(hx.ec2.describe_subnets)[::2] == ("InternalError", 500)
    hx.control("DELETE", "faults", {"action": "*"})
    hx.ec2.describe_subnets()
    assert hx.control("GET", "calls")["faulted"] == {"DescribeVpcs": 2, "DescribeSubnets": 1}


def test_fault_rate_is_deterministic_with_seed(hx):
    def pattern() -> list[bool]:
        hx.control("POST", "config", {"fault_seed": 42})
        hx.control("POST", "faults", {"action": "DescribeVpcs", "error": "RequestLimitExceeded", "rate": 0.5})
        out = []
        for _ in range(20):
            try:
                hx.ec2.describe_vpcs()
                out.append(False)
            except ClientError:
                out.append(True)
        return out

    a = pattern()
    b = pattern()
    assert a == b and 0 < sum(a) < 20
    assert hx.control("GET", "calls")["faulted"]["DescribeVpcs"] == sum(a) * 2


def test_fault_latency_and_count(hx):
    hx.control("POST", "faults", {"action": "DescribeVpcs", "latency_ms": 150})
    t0 = time.monotonic()
    hx.ec2.describe_vpcs()
    assert time.monotonic() - t0 >= 0.15
    hx.control("POST", "faults", {"action": "DescribeSubnets", "error": "Unavailable", "count": 2})
    assert err(hx.ec2.describe_subnets)[0] == "Unavailable"
    assert err(hx.ec2.describe_subnets)[0] == "Unavailable"
    hx.ec2.describe_subnets()
    faults = {f["action"]: f for f in hx.control("GET", "faults")["faults"]}
    assert faults["DescribeSubnets"]["count"] == 0


def test_fault_after_execution_then_retry_with_client_token(hx):
    """The call succeeds but its answer is lost: a retry with the same token finds the endpoint."""
    t = make_topology(hx.ec2)
    hx.control("POST", "faults", {"action": "CreateVpcEndpoint", "error": "InternalError", "count": 1, "phase": "after"})
    assert err(create, hx.ec2, t, ClientToken="retry-me")[0] == "InternalError"
    eps = hx.ec2.describe_vpc_endpoints()["VpcEndpoints"]
    assert len(eps) == 1
    again = create(hx.ec2, t, ClientToken="retry-me")
    assert again["VpcEndpointId"] == eps[0]["VpcEndpointId"]


def test_fault_api_validation(hx):
    for body in ({"error": "InternalError"}, {"action": "X", "error": "Nope"}, {"action": "X", "rate": 2},
                 {"action": "X", "latency_ms": -1}, {"action": "X", "phase": "during"}):
        status, out = hx.control_raw("POST", "faults", body)
        assert status == 400, body
    assert hx.control_raw("GET", "no-such-route")[0] == 404


def test_calls_counting_and_reset(hx):
    hx.control("POST", "calls/reset")
    hx.ec2.describe_vpcs()
    hx.ec2.describe_vpcs()
    err(hx.ec2.create_vpc_endpoint, VpcId="vpc-0123456789abcdef0", ServiceName=RUNTIME, VpcEndpointType="Interface")
    hx.control("GET", "health")  # control calls are not counted
    assert hx.control("GET", "calls") == {"calls": {"DescribeVpcs": 2, "CreateVpcEndpoint": 1}, "faulted": {}}
    hx.control("POST", "calls/reset")
    assert hx.control("GET", "calls") == {"calls": {}, "faulted": {}}


def test_hold_and_release(hx):
    t = make_topology(hx.ec2)
    ep_id = create(hx.ec2, t)["VpcEndpointId"]
    view = hx.control("POST", f"endpoints/{ep_id}/hold", {"state": "pendingAcceptance", "seconds": None})
    assert view["state"] == "pendingAcceptance" and view["held"] is True
    time.sleep(0.4)
    assert describe(hx.ec2, ep_id)["State"] == "pendingAcceptance"
    hx.control("POST", f"endpoints/{ep_id}/release")
    assert wait_state(hx.ec2, ep_id, "available")[-1] == "available"
    # A timed hold ends by itself.
    hx.control("POST", f"endpoints/{ep_id}/hold", {"state": "pending", "seconds": 0.6})
    assert describe(hx.ec2, ep_id)["State"] == "pending"
    wait_state(hx.ec2, ep_id, "available", timeout=3)
    assert hx.control_raw("POST", "endpoints/vpce-0123456789abcdef0/hold", {"state": "pending"})[0] == 404
    assert hx.control_raw("POST", f"endpoints/{ep_id}/hold", {"state": "available"})[0] == 400


def test_force_failed_and_rejected(hx):
    t = make_topology(hx.ec2)
    ep_id = create(hx.ec2, t)["VpcEndpointId"]
    hx.control("POST", f"endpoints/{ep_id}/fail",
               {"state": "failed", "code": "InsufficientCapacity", "message": "no capacity in us-east-1a"})
    d = describe(hx.ec2, ep_id)
    assert d["State"] == "failed"
    assert d["LastError"] == {"Code": "InsufficientCapacity", "Message": "no capacity in us-east-1a"}
    time.sleep(0.3)
    assert describe(hx.ec2, ep_id)["State"] == "failed"  # terminal
    ep2 = create(hx.ec2, t, ("c",), PrivateDnsEnabled=False)["VpcEndpointId"]
    hx.control("POST", f"endpoints/{ep2}/fail", {"state": "rejected"})
    assert describe(hx.ec2, ep2)["State"] == "rejected"
    # A failed endpoint can still be deleted.
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep_id])
    wait_state(hx.ec2, ep_id, None)


def test_new_endpoint_rules(hx):
    hx.control("POST", "new-endpoints", {"service": "bedrock-runtime", "hold": {"state": "pendingAcceptance"}, "count": 1})
    hx.control("POST", "new-endpoints", {"service": "bedrock", "fail": {"state": "failed", "code": "X", "message": "boom"}})
    t = make_topology(hx.ec2)
    held = create(hx.ec2, t, ("a",))
    assert held["State"] == "pendingAcceptance"
    failing = create(hx.ec2, t, ("b",), service=f"com.amazonaws.{REGION}.bedrock")
    assert failing["State"] == "pending"
    assert wait_state(hx.ec2, failing["VpcEndpointId"], "failed")[-1] == "failed"
    assert describe(hx.ec2, failing["VpcEndpointId"])["LastError"] == {"Code": "X", "Message": "boom"}
    assert describe(hx.ec2, held["VpcEndpointId"])["State"] == "pendingAcceptance"
    # count=1: the next bedrock-runtime endpoint is not held.
    t2 = make_topology(hx.ec2, cidr="10.30.0.0/16")
    assert create(hx.ec2, t2, ("a",))["State"] == "pending"
    hx.control("DELETE", "new-endpoints")
    assert hx.control("GET", "new-endpoints") == {"rules": []}


def test_deletes_linger(hx):
    t = make_topology(hx.ec2)
    ep_id = create(hx.ec2, t)["VpcEndpointId"]
    hx.control("POST", f"endpoints/{ep_id}/linger", {"seconds": 1.0})
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep_id])
    time.sleep(0.4)
    assert describe(hx.ec2, ep_id)["State"] == "deleting"
    wait_state(hx.ec2, ep_id, "deleted", timeout=3)
    # Globally, through config.
    hx.control("POST", "config", {"deleting_seconds": 1.0, "deleted_seconds": 0})
    ep2 = create(hx.ec2, t, ("c",))["VpcEndpointId"]
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[ep2])
    time.sleep(0.3)
    assert describe(hx.ec2, ep2)["State"] == "deleting"
    assert wait_state(hx.ec2, ep2, None, timeout=3)[-2:] == ["deleting", None]


def test_config_api(hx):
    out = hx.control("POST", "config", {"pending_seconds": 0.5, "deleting_seconds": 0.1, "eni_linger_seconds": 2})
    assert out["pending_seconds"] == 0.5 and out["eni_linger_seconds"] == 2.0
    assert hx.control("GET", "config")["deleting_seconds"] == 0.1
    assert hx.control_raw("POST", "config", {"pending_seconds": -1})[0] == 400
    assert hx.control_raw("POST", "config", {"bogus": 1})[0] == 400


def test_service_azs_api(hx):
    out = hx.control("POST", "service-azs", {"service": f"com.amazonaws.{REGION}.bedrock-agent", "azs": ["us-east-1c"]})
    assert out == {"service": f"com.amazonaws.{REGION}.bedrock-agent", "azs": ["us-east-1c"]}
    assert hx.control("GET", "service-azs") == {"service_azs": {f"com.amazonaws.{REGION}.bedrock-agent": ["us-east-1c"]}}
    out = hx.control("POST", "service-azs", {"service": "bedrock-agent", "azs": None})
    assert len(out["azs"]) == 6
    assert hx.control_raw("POST", "service-azs", {"service": "bedrock-agent", "azs": ["mars-1a"]})[0] == 400
    assert hx.control_raw("POST", "service-azs", {"service": "no-such", "azs": []})[0] == 404
    hx.control("POST", "service-azs", {"service": "bedrock-agent", "azs": []})
    assert hx.ec2.describe_vpc_endpoint_services(ServiceNames=[f"com.amazonaws.{REGION}.bedrock-agent"])["ServiceDetails"][0]["AvailabilityZones"] == []
    hx.control("DELETE", "service-azs")
    assert hx.control("GET", "service-azs") == {"service_azs": {}}


def test_endpoints_view(hx):
    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t)
    views = hx.control("GET", "endpoints")["endpoints"]
    assert [(v["id"], v["state"], v["subnet_ids"]) for v in views] == [(ep["VpcEndpointId"], "pending", [t["a"], t["b"]])]


# ------------------------------------------------------------------- CLI
def test_cli_seeds_and_serves_on_loopback(tmp_path):
    seed_out = tmp_path / "rig" / "seed.json"
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "harness.py"), "--host", "127.0.0.1", "--port", "0",
         "--region", REGION, "--seed-out", str(seed_out), "--port-file", str(port_file),
         "--pending-seconds", "0.1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(port_file.read_text().strip())
        status, health = http(f"http://127.0.0.1:{port}/_harness/health")
        assert status == 200 and health["config"]["pending_seconds"] == 0.1
        seed = json.loads(seed_out.read_text())
        assert seed["region"] == REGION and len(seed["subnets"]) == 3 and len(seed["instances"]) == 3
        assert all(set(s) == {"id", "az", "az_id", "cidr"} for s in seed["subnets"])
        assert all(set(i) == {"id", "az", "subnet_id", "private_ip", "private_dns"} for i in seed["instances"])
        # reset re-seeds and rewrites the seed file.
        status, out = http(f"http://127.0.0.1:{port}/_harness/reset", "POST", {})
        assert status == 200 and json.loads(seed_out.read_text())["vpc_id"] == out["seed"]["vpc_id"] != seed["vpc_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_refuses_non_loopback_address():
    with pytest.raises(SystemExit):
        H.require_loopback("0.0.0.0")
    H.require_loopback("127.0.0.1")
    H.require_loopback("localhost")


def test_concurrent_calls_are_serialised_safely(hx):
    """The server is threaded; moto is not thread-safe, so the harness serialises EC2 calls."""
    import threading

    t = make_topology(hx.ec2)
    hx.control("POST", "calls/reset")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            from conftest import ec2_client

            ec2 = ec2_client(hx.url)
            for _ in range(5):
                ec2.describe_vpc_endpoints()
                ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]}])
            ec2.create_security_group(GroupName=f"c{i}", Description="d", VpcId=t["vpc"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert errors == []
    calls = hx.control("GET", "calls")["calls"]
    assert calls == {"DescribeVpcEndpoints": 30, "DescribeSecurityGroups": 30, "CreateSecurityGroup": 6}


def test_dry_run(plain, hx):
    t = make_topology(plain.ec2)
    try:
        create(plain.ec2, t, DryRun=True)
    except ClientError:
        pass
    plain_count = len(plain.ec2.describe_vpc_endpoints()["VpcEndpoints"])

    t = make_topology(hx.ec2)
    code, _, status = err(create, hx.ec2, t, DryRun=True)
    assert (code, status) == ("DryRunOperation", 412)
    assert hx.ec2.describe_vpc_endpoints()["VpcEndpoints"] == []
    # Validation still comes first.
    assert err(create, hx.ec2, t, ("a", "a2"), DryRun=True)[0] == "InvalidParameter"
    assert plain_count == 1  # moto ignores DryRun here and creates the endpoint


# ------------------------------------------------- speed-ups keep behaviour
# The harness replaces a few of moto's scans (see "Speed" in README.md); these tests pin
# that the answers stay moto's / the harness's own.
def test_tags_rendered_as_moto_does_after_create_modify_delete(plain, hx):
    """Tags come from a lookup by resource id instead of moto's walk over all tags."""
    spec = [{"ResourceType": "security-group", "Tags": [{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}]}]
    seen = []
    for env in (plain, hx):
        t = make_topology(env.ec2)
        sg = env.ec2.create_security_group(GroupName="tg", Description="d", VpcId=t["vpc"],
                                           TagSpecifications=spec)["GroupId"]
        other = env.ec2.create_security_group(GroupName="tg2", Description="d", VpcId=t["vpc"])["GroupId"]
        env.ec2.create_tags(Resources=[sg, t["a"]], Tags=[{"Key": "c", "Value": "3"}, {"Key": "a", "Value": "9"}])
        env.ec2.delete_tags(Resources=[sg], Tags=[{"Key": "b"}])
        env.ec2.delete_tags(Resources=[sg], Tags=[{"Key": "c", "Value": "other"}])  # value differs: kept

        def tags(group_id):
            return env.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0].get("Tags", [])

        subnet_tags = env.ec2.describe_subnets(SubnetIds=[t["a"]])["Subnets"][0].get("Tags", [])
        described = env.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sg]}])["Tags"]
        seen.append((tags(sg), tags(other), subnet_tags, [(d["Key"], d["Value"], d["ResourceType"]) for d in described]))
    assert seen[0] == seen[1]
    assert seen[1][0] == [{"Key": "a", "Value": "9"}, {"Key": "c", "Value": "3"}]
    assert seen[1][1] == []

    t = make_topology(hx.ec2)
    ep = create(hx.ec2, t, TagSpecifications=[{"ResourceType": "vpc-endpoint", "Tags": [{"Key": "k", "Value": "v"}]}])
    hx.ec2.create_tags(Resources=[ep["VpcEndpointId"]], Tags=[{"Key": "k2", "Value": "v2"}])
    assert describe(hx.ec2, ep["VpcEndpointId"])["Tags"] == [{"Key": "k", "Value": "v"}, {"Key": "k2", "Value": "v2"}]
    hx.ec2.delete_tags(Resources=[ep["VpcEndpointId"]], Tags=[{"Key": "k"}])
    assert describe(hx.ec2, ep["VpcEndpointId"])["Tags"] == [{"Key": "k2", "Value": "v2"}]


def test_get_tags_lookup_matches_moto_walk(hx):
    be = hx.harness._backend(REGION)
    t = make_topology(hx.ec2)
    hx.ec2.create_tags(Resources=[t["vpc"], t["sg"]], Tags=[{"Key": "x", "Value": "1"}, {"Key": "y", "Value": ""}])
    resources = [*be.vpcs.values(), be.get_security_group_from_id(t["sg"]), be.get_security_group_from_id(t["sg"].upper())]
    resources = [r for r in resources if r is not None]
    assert len(resources) == len(be.vpcs) + 1
    for res in resources:
        assert H._get_tags_by_id(res) == H._MOTO_GET_TAGS(res), res.id


def test_settled_endpoints_do_not_hold_back_new_ones(hx):
    """tick() only visits endpoints in motion; the others must still behave."""
    t = make_topology(hx.ec2)
    first = create(hx.ec2, t, ("a",), PrivateDnsEnabled=False)["VpcEndpointId"]
    wait_state(hx.ec2, first, "available")
    hx.control("POST", "config", {"pending_seconds": 0.5})
    second = create(hx.ec2, t, ("b",), PrivateDnsEnabled=False)["VpcEndpointId"]
    assert describe(hx.ec2, second)["State"] == "pending"
    assert describe(hx.ec2, first)["State"] == "available"
    time.sleep(0.25)
    assert describe(hx.ec2, second)["State"] == "pending"
    time.sleep(0.35)
    assert describe(hx.ec2, second)["State"] == "available"
    # A settled endpoint that is modified, held, failed or deleted moves again.
    hx.ec2.modify_vpc_endpoint(VpcEndpointId=first, PolicyDocument=H.DEFAULT_POLICY)
    assert describe(hx.ec2, first)["State"] == "pending"
    wait_state(hx.ec2, first, "available")
    hx.control("POST", f"endpoints/{second}/hold", {"state": "partial", "seconds": 0.3})
    assert describe(hx.ec2, second)["State"] == "partial"
    wait_state(hx.ec2, second, "available")
    hx.control("POST", f"endpoints/{second}/fail", {"state": "rejected"})
    assert describe(hx.ec2, second)["State"] == "rejected"
    hx.ec2.delete_vpc_endpoints(VpcEndpointIds=[first, second])
    assert wait_state(hx.ec2, first, None)[-2:] == ["deleted", None]
    assert wait_state(hx.ec2, second, None)[-1] is None
    assert hx.harness.unsettled == {}


def test_exact_and_wildcard_endpoint_filters(hx):
    t = make_topology(hx.ec2)
    tag = lambda v: [{"ResourceType": "vpc-endpoint", "Tags": [{"Key": "o", "Value": v}]}]  # noqa: E731
    a = create(hx.ec2, t, ("a",), PrivateDnsEnabled=False, TagSpecifications=tag("u-1"))["VpcEndpointId"]
    b = create(hx.ec2, t, ("b",), PrivateDnsEnabled=False, TagSpecifications=tag("u-12"))["VpcEndpointId"]
    c = create(hx.ec2, t, ("c",), PrivateDnsEnabled=False)["VpcEndpointId"]
    other = make_topology(hx.ec2, cidr="10.30.0.0/16")
    d = create(hx.ec2, other, ("a",), PrivateDnsEnabled=False, TagSpecifications=tag("u-1"))["VpcEndpointId"]

    def ids(*filters):
        return [e["VpcEndpointId"] for e in hx.ec2.describe_vpc_endpoints(Filters=list(filters))["VpcEndpoints"]]

    assert ids({"Name": "tag:o", "Values": ["u-1"]}) == [a, d]
    assert ids({"Name": "tag:o", "Values": ["u-12", "u-1"]}) == [a, b, d]
    assert ids({"Name": "tag:o", "Values": ["u-1*"]}) == [a, b, d]
    assert ids({"Name": "tag:o", "Values": ["u-?"]}) == [a, d]
    assert ids({"Name": "tag:o", "Values": ["u-"]}) == []
    assert ids({"Name": "tag:o", "Values": ["u-1"]}, {"Name": "vpc-id", "Values": [t["vpc"]]}) == [a]
    assert ids({"Name": "vpc-id", "Values": [t["vpc"]]}) == [a, b, c]
    assert ids({"Name": "vpc-id", "Values": [t["vpc"], other["vpc"]]}) == [a, b, c, d]
    assert ids({"Name": "vpc-endpoint-id", "Values": [c, a]}) == [a, c]
    assert ids({"Name": "tag:nope", "Values": ["*"]}) == []
    # An unknown filter is refused while endpoints are left to test it on, as before.
    assert err(hx.ec2.describe_vpc_endpoints, Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]},
                                                      {"Name": "bogus", "Values": ["x"]}])[0] == "InvalidParameterValue"
    assert ids({"Name": "vpc-id", "Values": ["vpc-none"]}, {"Name": "bogus", "Values": ["x"]}) == []


def test_literal_matching_is_the_regex_match():
    values = ["abc", "abc\n", "ab", "abcd", "", "\n", "a.c", "x*y", "bpl-1", "bpl-12"]
    patterns = ["abc", "", "a.c", "bpl-1", "bpl-*", "a?c", "x\\*y", "bpl-1?", "[a]", "a|b"]
    for v in values:
        for p in patterns:
            assert H._matches_any(v, [p]) == bool(H._aws_wildcard(p).match(v)), (v, p)
            from moto.core.utils import aws_api_matches

            assert H._aws_api_matches(p, v) == aws_api_matches(p, v), (v, p)
            lits = H._api_literals([p])
            if lits is not None:
                assert (v in lits) == aws_api_matches(p, v), (v, p)


def test_security_group_filters_as_moto(plain, hx):
    """DescribeSecurityGroups narrows exact group-name/group-id/vpc-id values by set lookup first."""
    seen = []
    for env in (plain, hx):
        t = make_topology(env.ec2)
        other = make_topology(env.ec2, cidr="10.30.0.0/16")
        names = {}
        for vpc in (t["vpc"], other["vpc"]):
            for n in ("bpl-1", "bpl-12", "x.1"):
                names[(vpc, n)] = env.ec2.create_security_group(GroupName=n, Description="d", VpcId=vpc)["GroupId"]
        gid = names[(t["vpc"], "bpl-1")]
        out = []
        for filters in (
            [{"Name": "group-name", "Values": ["bpl-1"]}],
            [{"Name": "group-name", "Values": ["bpl-1", "x.1"]}, {"Name": "vpc-id", "Values": [t["vpc"]]}],
            [{"Name": "group-name", "Values": ["bpl-*"]}, {"Name": "vpc-id", "Values": [other["vpc"]]}],
            [{"Name": "group-name", "Values": ["x?1"]}],
            [{"Name": "group-name", "Values": ["nope"]}],
            [{"Name": "group-id", "Values": [gid]}],
            [{"Name": "vpc-id", "Values": [t["vpc"]]}],
        ):
            groups = env.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
            out.append(sorted((g["VpcId"] == t["vpc"], g["GroupName"].replace(t["vpc"], "VPC")) for g in groups))
        assert env.ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["GroupName"] == "bpl-1"
        out.append(err(env.ec2.describe_security_groups, GroupIds=["sg-0123456789abcdef0"])[0])
        seen.append(out)
    assert seen[0] == seen[1]
    assert seen[1][0] == [(False, "bpl-1"), (True, "bpl-1")]
    # An unknown filter name fails (moto: KeyError, a 500) only once a group gets as far as it.
    outcomes = []
    for filters in (
        [{"Name": "group-name", "Values": ["nope"]}, {"Name": "bogus", "Values": ["x"]}],
        [{"Name": "group-name", "Values": ["bpl-1"]}, {"Name": "bogus", "Values": ["x"]}],
    ):
        try:
            outcomes.append(len(hx.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]))
        except ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    assert outcomes == [0, "InternalError"]


def test_full_subnet_falls_back_to_its_first_address(hx):
    """ENI addresses: random free ones; once a subnet has none left, the first usable one."""
    vpc = hx.ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = hx.ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/28", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    sg = hx.ec2.create_security_group(GroupName="g", Description="d", VpcId=vpc)["GroupId"]
    ips = []
    for _ in range(13):  # offsets 4..14 are the 11 candidates
        ep = hx.ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=RUNTIME, VpcEndpointType="Interface",
                                        SubnetIds=[subnet], SecurityGroupIds=[sg], PrivateDnsEnabled=False)
        eni = ep["VpcEndpoint"]["NetworkInterfaceIds"][0]
        ips.append(hx.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]["PrivateIpAddress"])
    assert sorted(ips[:11], key=lambda ip: int(ip.split(".")[-1])) == [f"10.40.0.{k}" for k in range(4, 15)]
    assert ips[11:] == ["10.40.0.4", "10.40.0.4"]
