#!/usr/bin/env python3
"""TEMPORARY fallback seeder for the rig, used only when tests/emulator/harness.py is missing or wrote
no seed.json. Seeds the shape in docs/CONTRACTS.md into a plain moto server and writes seed.json.

usage: rig-seed-fallback.py ENDPOINT_URL REGION SEED_OUT
"""
import json
import os
import sys

import boto3

endpoint, region, out = sys.argv[1], sys.argv[2], sys.argv[3]
assert endpoint.startswith("http://127.0.0.1:"), "loopback only"
ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint,
                   aws_access_key_id="testing", aws_secret_access_key="testing")

vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=[
    {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "bpl-rig-cluster"}]}])["Vpc"]
vpc_id = vpc["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})

az_ids = {z["ZoneName"]: z.get("ZoneId", "") for z in ec2.describe_availability_zones()["AvailabilityZones"]}
images = ec2.describe_images(Owners=["amazon"])["Images"] or ec2.describe_images()["Images"]
ami = sorted(i["ImageId"] for i in images)[0]

subnets, instances = [], []
for n, suffix in enumerate("abc", start=1):
    az = f"{region}{suffix}"
    cidr = f"10.0.{n}.0/24"
    sn = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=az, TagSpecifications=[
        {"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": f"bpl-rig-private-{az}"},
                                             {"Key": "kubernetes.io/role/internal-elb", "Value": "1"}]}])["Subnet"]
    subnets.append({"id": sn["SubnetId"], "az": az, "az_id": sn.get("AvailabilityZoneId") or az_ids.get(az, ""),
                    "cidr": cidr})
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="m5.large",
                             SubnetId=sn["SubnetId"])["Instances"][0]
    instances.append({"id": inst["InstanceId"], "az": az, "subnet_id": sn["SubnetId"],
                      "private_ip": inst["PrivateIpAddress"], "private_dns": inst["PrivateDnsName"]})

seed = {"region": region, "vpc_id": vpc_id, "vpc_cidr": "10.0.0.0/16", "subnets": subnets, "instances": instances}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(seed, f, indent=2)
os.replace(tmp, out)
print(f"seeded {vpc_id} with {len(instances)} instances -> {out}", file=sys.stderr)
