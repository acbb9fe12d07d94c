#!/usr/bin/env python3
"""How fast the harness answers the operator's calls with many objects in one VPC.

Starts the harness in this process on a free 127.0.0.1 port, then, with boto3 against it:

* create: for each of N objects, the operator's create sequence (as src/aws and
  src/reconcile send it): DescribeVpcEndpoints by owner tag, DescribeSecurityGroups by
  group name, CreateSecurityGroup (tagged), AuthorizeSecurityGroupIngress (443 from the
  VPC CIDR), RevokeSecurityGroupEgress (the default allow-all), CreateVpcEndpoint
  (Interface, 3 subnets, the group, a policy, tags, ClientToken, private DNS off);
* steady: one sweep of whole-VPC describes, paginated by 100 (DescribeVpcEndpoints by
  vpc-id; DescribeSecurityGroups by vpc-id and group-name bpl-*);
* delete: for each object DescribeVpcEndpoints by tag, DeleteVpcEndpoints,
  DescribeVpcEndpoints by tag again, DescribeSecurityGroups by name, DeleteSecurityGroup.

Prints, per phase, the wall time, the time spent inside the harness (its WSGI call,
server side; the rest is boto3 and HTTP) and the harness time per 100 objects of each
block of 100. `--profile FILE` writes a cProfile of the harness side (all phases) to FILE
(read it with `python -m pstats FILE`, then `sort cumtime`, `stats 30`).

    ~/.cache/bpl-rig/venv/bin/python tests/emulator/perf.py --objects 1000
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
    os.environ.pop(_var, None)

import harness as H  # noqa: E402  (sets dummy credentials)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

OWNER = "bedrock.privatelink.io/owner-uid"
SERVICE = "com.amazonaws.{region}.bedrock-runtime"
PAGE = 100
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "bedrock:InvokeModel", "Resource": "*"}
        ],
    }
)


class Timed:
    """Wraps the harness's WSGI call: adds up the time spent in it (and profiles it)."""

    def __init__(self, app: H.Harness, profile: cProfile.Profile | None):
        self.app = app
        self.profile = profile
        self.busy = 0.0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        t0 = time.perf_counter()
        if self.profile is not None:
            with self.lock:  # one profiler, one thread at a time (the client is sequential)
                self.profile.enable()
                try:
                    out = list(self.app(environ, start_response))
                finally:
                    self.profile.disable()
        else:
            out = list(self.app(environ, start_response))
        self.busy += time.perf_counter() - t0
        return out


def paginate(call: Any, key: str, **kw: Any) -> list[Any]:
    out, token = [], None
    while True:
        args = dict(kw, MaxResults=PAGE)
        if token:
            args["NextToken"] = token
        r = call(**args)
        out += r[key]
        token = r.get("NextToken")
        if not token:
            return out


def tags_for(i: int, uid: str, service: str | None = None) -> list[dict[str, str]]:
    tags = {
        OWNER: uid,
        "bedrock.privatelink.io/name": f"obj-{i}",
        "bedrock.privatelink.io/namespace": "bench",
    }
    if service:
        tags["bedrock.privatelink.io/service"] = service
        tags["Name"] = f"bpl-bench-obj-{i}-{service}"
    else:
        tags["Name"] = f"bpl-bench-obj-{i}"
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--pending-seconds", type=float, default=1.0)
    ap.add_argument("--deleting-seconds", type=float, default=0.0,
                    help="0 (default) so that each group can be deleted right after its endpoint")
    ap.add_argument("--deleted-seconds", type=float, default=1.0)
    ap.add_argument("--profile", help="write a cProfile of the harness side here")
    ap.add_argument("--json", help="also write the figures here as JSON")
    args = ap.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    region = H.DEFAULT_REGION
    h = H.Harness(region=region, pending_seconds=args.pending_seconds,
                  deleting_seconds=args.deleting_seconds, deleted_seconds=args.deleted_seconds)
    profile = cProfile.Profile() if args.profile else None
    timed = Timed(h, profile)
    server = H.HarnessServer(h, "127.0.0.1", 0)
    server.server.app = timed  # werkzeug's server calls self.app
    server.start()
    ec2 = boto3.client(
        "ec2", region_name=region, endpoint_url=server.url,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=300),
    )
    seed = h.seed
    assert seed is not None
    vpc_id, cidr = seed["vpc_id"], seed["vpc_cidr"]
    subnets = [s["id"] for s in seed["subnets"]]
    service = SERVICE.format(region=region)
    n = args.objects
    uids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    figures: dict[str, Any] = {"objects": n}

    def phase(name: str, body: Any, per_object: bool = True) -> None:
        t0, b0, c0 = time.perf_counter(), timed.busy, time.process_time()
        blocks: list[float] = []
        if per_object:
            mark = timed.busy
            for i in range(n):
                body(i)
                if (i + 1) % 100 == 0 or i + 1 == n:
                    blocks.append(timed.busy - mark)
                    mark = timed.busy
        else:
            body()
        wall, busy = time.perf_counter() - t0, timed.busy - b0
        cpu = time.process_time() - c0
        figures[name] = {"wall_s": round(wall, 2), "harness_s": round(busy, 2),
                         "process_cpu_s": round(cpu, 2),
                         "harness_s_per_100": [round(b, 2) for b in blocks]}
        line = f"{name:7s} wall {wall:7.2f} s  harness {busy:7.2f} s  process cpu {cpu:7.2f} s"
        print(line, flush=True)
        if blocks:
            print("        harness s per 100 objects: " + " ".join(f"{b:.2f}" for b in blocks), flush=True)

    groups: list[str] = [""] * n

    def create(i: int) -> None:
        uid = uids[i]
        assert paginate(ec2.describe_vpc_endpoints, "VpcEndpoints",
                        Filters=[{"Name": f"tag:{OWNER}", "Values": [uid]}]) == []
        name = f"bpl-{uid}"
        assert paginate(ec2.describe_security_groups, "SecurityGroups",
                        Filters=[{"Name": "group-name", "Values": [name]}]) == []
        gid = ec2.create_security_group(
            GroupName=name, Description=f"Bedrock PrivateLink endpoints of bench/obj-{i} (HTTPS in only)",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags_for(i, uid)}],
        )["GroupId"]
        groups[i] = gid
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}])
        ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        ep = ec2.create_vpc_endpoint(
            VpcEndpointType="Interface", VpcId=vpc_id, ServiceName=service, SubnetIds=subnets,
            SecurityGroupIds=[gid], PrivateDnsEnabled=False, PolicyDocument=POLICY,
            ClientToken=f"bpl-{uid}-0",
            TagSpecifications=[{"ResourceType": "vpc-endpoint", "Tags": tags_for(i, uid, "bedrock-runtime")}],
        )["VpcEndpoint"]
        assert ep["State"] == "pending" or args.pending_seconds == 0, ep["State"]

    def steady() -> None:
        eps = paginate(ec2.describe_vpc_endpoints, "VpcEndpoints",
                       Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        sgs = paginate(ec2.describe_security_groups, "SecurityGroups",
                       Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                {"Name": "group-name", "Values": ["bpl-*"]}])
        assert len(eps) == n and len(sgs) == n, (len(eps), len(sgs))
        assert all(any(t["Key"] == OWNER for t in e["Tags"]) for e in eps)

    def delete(i: int) -> None:
        uid = uids[i]
        by_tag = [{"Name": f"tag:{OWNER}", "Values": [uid]}]
        eps = paginate(ec2.describe_vpc_endpoints, "VpcEndpoints", Filters=by_tag)
        assert len(eps) == 1, eps
        r = ec2.delete_vpc_endpoints(VpcEndpointIds=[eps[0]["VpcEndpointId"]])
        assert not r.get("Unsuccessful"), r
        eps = paginate(ec2.describe_vpc_endpoints, "VpcEndpoints", Filters=by_tag)
        assert all(e["State"] in ("deleting", "deleted") for e in eps), eps
        sgs = paginate(ec2.describe_security_groups, "SecurityGroups",
                       Filters=[{"Name": "group-name", "Values": [f"bpl-{uid}"]}])
        assert [g["GroupId"] for g in sgs] == [groups[i]], sgs
        ec2.delete_security_group(GroupId=groups[i])

    print(f"{n} objects, pending {args.pending_seconds} s, deleting {args.deleting_seconds} s, "
          f"deleted {args.deleted_seconds} s", flush=True)
    try:
        phase("create", create)
        phase("steady", steady, per_object=False)
        phase("delete", delete)
    finally:
        server.stop()
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile of the harness side: {args.profile}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
