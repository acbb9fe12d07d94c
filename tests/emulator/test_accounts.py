"""Several accounts and regions, and STS (issue 17): the harness's own rules."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import harness as H
from conftest import REGION

CFG = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


def client(url: str, service: str, region: str = REGION, creds: dict[str, str] | None = None) -> Any:
    creds = creds or {"AccessKeyId": "testing", "SecretAccessKey": "testing"}
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken"),
        config=CFG,
    )


def role(hx: Any, account: str) -> dict[str, Any]:
    return next(r for r in hx.control("GET", "seed")["roles"] if r["account"] == account)


def assume(hx: Any, account: str, external_id: str | None = None) -> dict[str, str]:
    r = role(hx, account)
    kwargs = {"RoleArn": r["arn"], "RoleSessionName": "tt"}
    if external_id is not None:
        kwargs["ExternalId"] = external_id
    return client(hx.url, "sts").assume_role(**kwargs)["Credentials"]


def vpc_of(hx: Any, account: str, region: str) -> dict[str, Any]:
    return next(v for v in hx.control("GET", "seed")["vpcs"]
                if v["account"] == account and v["region"] == region)


def test_the_seed_has_accounts_regions_and_roles(hx):
    seed = hx.control("GET", "seed")
    assert seed["account"] == H.ACCOUNT_ID
    assert seed["second_region"] == H.SECOND_REGION
    scopes = {(v["account"], v["region"]) for v in seed["vpcs"]}
    assert {(H.ACCOUNT_B, REGION), (H.ACCOUNT_B, H.SECOND_REGION), (H.ACCOUNT_C, REGION)} <= scopes
    for v in seed["vpcs"]:
        assert len(v["subnets"]) == 3, v
    b = role(hx, H.ACCOUNT_B)
    assert b["external_id"] == H.EXTERNAL_ID_B and b["trusted_accounts"] == [H.ACCOUNT_ID]
    assert role(hx, H.ACCOUNT_C)["external_id"] is None


def test_assumed_credentials_act_in_the_roles_account_only(hx):
    creds = assume(hx, H.ACCOUNT_B, H.EXTERNAL_ID_B)
    ident = client(hx.url, "sts", creds=creds).get_caller_identity()
    assert ident["Account"] == H.ACCOUNT_B
    own = client(hx.url, "sts").get_caller_identity()
    assert own["Account"] == H.ACCOUNT_ID
    b_vpc = vpc_of(hx, H.ACCOUNT_B, REGION)["vpc_id"]
    in_b = client(hx.url, "ec2", creds=creds).describe_vpcs()["Vpcs"]
    assert b_vpc in {v["VpcId"] for v in in_b}
    in_own = client(hx.url, "ec2").describe_vpcs()["Vpcs"]
    assert b_vpc not in {v["VpcId"] for v in in_own}
    # The second region of account B is another VPC, seen only there.
    west = vpc_of(hx, H.ACCOUNT_B, H.SECOND_REGION)["vpc_id"]
    in_b_west = client(hx.url, "ec2", region=H.SECOND_REGION, creds=creds).describe_vpcs()["Vpcs"]
    assert west in {v["VpcId"] for v in in_b_west} and b_vpc not in {v["VpcId"] for v in in_b_west}


def test_an_endpoint_is_made_in_the_callers_account_and_region(hx):
    creds = assume(hx, H.ACCOUNT_C)
    v = vpc_of(hx, H.ACCOUNT_C, REGION)
    ec2 = client(hx.url, "ec2", creds=creds)
    ep = ec2.create_vpc_endpoint(
        VpcId=v["vpc_id"], ServiceName=f"com.amazonaws.{REGION}.bedrock-runtime",
        VpcEndpointType="Interface", SubnetIds=[v["subnets"][0]["id"]], PrivateDnsEnabled=False,
    )["VpcEndpoint"]
    views = {e["id"]: e for e in hx.control("GET", "endpoints")["endpoints"]}
    assert views[ep["VpcEndpointId"]]["account"] == H.ACCOUNT_C
    assert views[ep["VpcEndpointId"]]["region"] == REGION
    own = client(hx.url, "ec2").describe_vpc_endpoints()["VpcEndpoints"]
    assert ep["VpcEndpointId"] not in {e["VpcEndpointId"] for e in own}
    by_scope = hx.control("GET", "calls/by-scope")["calls"]
    assert by_scope[f"{H.ACCOUNT_C}/{REGION}"]["CreateVpcEndpoint"] == 1
    assert "CreateVpcEndpoint" not in by_scope.get(f"{H.ACCOUNT_ID}/{REGION}", {})


@pytest.mark.parametrize("external_id", [None, "wrong"])
def test_a_role_that_requires_an_external_id_refuses_without_it(hx, external_id):
    with pytest.raises(ClientError) as e:
        assume(hx, H.ACCOUNT_B, external_id)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert hx.control("GET", "sts")["assume_role"][role(hx, H.ACCOUNT_B)["arn"]] == {"AccessDenied": 1}


def test_unknown_roles_and_untrusted_callers_are_refused(hx):
    sts = client(hx.url, "sts")
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=f"arn:aws:iam::{H.ACCOUNT_C}:role/nope", RoleSessionName="tt")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # Account C's credentials are not trusted by account B's role.
    c = assume(hx, H.ACCOUNT_C)
    with pytest.raises(ClientError) as e:
        client(hx.url, "sts", creds=c).assume_role(
            RoleArn=role(hx, H.ACCOUNT_B)["arn"], RoleSessionName="tt", ExternalId=H.EXTERNAL_ID_B)
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_capped_sessions_expire_and_then_get_expired_token(hx):
    hx.control("POST", "config", {"session_seconds": 1})
    creds = assume(hx, H.ACCOUNT_C)
    lifetime = creds["Expiration"].timestamp() - time.time()
    assert 0 < lifetime <= 1.5, lifetime
    ec2 = client(hx.url, "ec2", creds=creds)
    ec2.describe_vpcs()
    time.sleep(1.2)
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs()
    assert e.value.response["Error"]["Code"] == "ExpiredToken"
    assert hx.control("GET", "sts")["expired_rejections"] == {role(hx, H.ACCOUNT_C)["arn"]: 1}
    # A fresh session works again.
    client(hx.url, "ec2", creds=assume(hx, H.ACCOUNT_C)).describe_vpcs()


def test_faults_can_target_one_account(hx):
    hx.control("POST", "faults", {"action": "DescribeVpcs", "error": "RequestLimitExceeded",
                                  "account": H.ACCOUNT_C})
    with pytest.raises(ClientError) as e:
        client(hx.url, "ec2", creds=assume(hx, H.ACCOUNT_C)).describe_vpcs()
    assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
    client(hx.url, "ec2").describe_vpcs()  # the operator's own account is not throttled
    client(hx.url, "ec2", creds=assume(hx, H.ACCOUNT_B, H.EXTERNAL_ID_B)).describe_vpcs()
