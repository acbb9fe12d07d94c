"""The endpoint-policy evaluator (endpoint_policy.py), case by case.

The policies below are the shapes the operator renders (src/policy.rs) plus hand-written documents
for the grammar it does not produce (NotAction, NotResource, NotPrincipal, Deny, other operators).
README.md lists these cases in a table.
"""

from __future__ import annotations

import json

import pytest

import endpoint_policy as P

ACCOUNT = "123456789012"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
FM = f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"
FM_TITAN = f"arn:aws:bedrock:us-east-1::foundation-model/{TITAN}"
FM_WEST = f"arn:aws:bedrock:us-west-2::foundation-model/{HAIKU}"
PROFILE = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/us.{HAIKU}"
USER = f"arn:aws:iam::{ACCOUNT}:user/alice"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/team-a"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/team-a/pod-1"
OTHER = "arn:aws:iam::210987654321:user/mallory"
ORG = "o-a1b2c3d4e5"


def stmt(**kw):
    s = {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
    s.update(kw)
    return {k: v for k, v in s.items() if v is not None}


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


INVOKE = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
DEFAULT = {"Version": "2008-10-17",
           "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}
INVOKE_ONLY = doc(stmt(Sid="BedrockInvoke", Action=INVOKE))
MODELS = doc(stmt(Sid="BedrockInvoke", Action=INVOKE, Resource=[FM]))
PROFILE_POLICY = doc(stmt(Sid="BedrockInvoke", Action=INVOKE, Resource=[
    f"arn:aws:bedrock:us-east-1:*:inference-profile/us.{HAIKU}",
    f"arn:aws:bedrock:*::foundation-model/{HAIKU}"]))
PRINCIPALS = doc(stmt(Sid="BedrockInvoke", Action=INVOKE, Principal={"AWS": [ROLE, USER]}))
ORG_POLICY = doc(stmt(Sid="BedrockInvoke", Action=INVOKE,
                      Condition={"StringEquals": {"aws:PrincipalOrgID": ORG}}))
DENY_TITAN = doc(stmt(Sid="All"), stmt(Sid="NoTitan", Effect="Deny", Action="bedrock:Invoke*",
                                       Resource="arn:aws:bedrock:*::foundation-model/amazon.*"))


def ctx(arn, org=ORG):
    c = {"aws:PrincipalArn": arn, "aws:PrincipalAccount": arn.split(":")[4]}
    if org:
        c["aws:PrincipalOrgID"] = org
    return c


def req(action="bedrock:InvokeModel", resource=FM, principal=USER, org=ORG):
    return P.Request(action, resource, principal, ctx(principal, org) if principal else {})


CASES = [
    # (id, policy, request, expected result)
    ("default full access", DEFAULT, req(), P.ALLOW),
    ("default, anonymous", DEFAULT, req(principal=None), P.ALLOW),
    ("single statement object", {"Statement": stmt()}, req(), P.ALLOW),
    ("InvokeOnly: InvokeModel", INVOKE_ONLY, req(), P.ALLOW),
    ("InvokeOnly: stream", INVOKE_ONLY, req("bedrock:InvokeModelWithResponseStream"), P.ALLOW),
    ("InvokeOnly: other action", INVOKE_ONLY, req("bedrock:ApplyGuardrail"), P.IMPLICIT_DENY),
    ("action case-insensitive", INVOKE_ONLY, req("Bedrock:invokemodel"), P.ALLOW),
    ("action wildcard *", doc(stmt(Action="bedrock:Invoke*")), req("bedrock:InvokeModelWithResponseStream"), P.ALLOW),
    ("action wildcard ?", doc(stmt(Action="bedrock:InvokeMode?")), req(), P.ALLOW),
    ("action wildcard no match", doc(stmt(Action="bedrock:Get*")), req(), P.IMPLICIT_DENY),
    ("other service action", doc(stmt(Action="s3:*")), req(), P.IMPLICIT_DENY),
    ("NotAction excludes", doc(stmt(NotAction="bedrock:InvokeModel*", Action=None)), req(), P.IMPLICIT_DENY),
    ("NotAction admits others", doc(stmt(NotAction="bedrock:InvokeModelWithResponseStream", Action=None)), req(), P.ALLOW),
    ("models: listed model", MODELS, req(), P.ALLOW),
    ("models: other model", MODELS, req(resource=FM_TITAN), P.IMPLICIT_DENY),
    ("models: other region", MODELS, req(resource=FM_WEST), P.IMPLICIT_DENY),
    ("resource case-sensitive", MODELS, req(resource=FM.replace("anthropic", "Anthropic")), P.IMPLICIT_DENY),
    ("profile: profile ARN", PROFILE_POLICY, req(resource=PROFILE), P.ALLOW),
    ("profile: model in any region", PROFILE_POLICY, req(resource=FM_WEST), P.ALLOW),
    ("profile: other model", PROFILE_POLICY, req(resource=FM_TITAN), P.IMPLICIT_DENY),
    ("resource * inside a field only", doc(stmt(Resource="arn:aws:bedrock:*::foundation-model/anthropic.*")),
     req(resource=PROFILE), P.IMPLICIT_DENY),
    ("NotResource excludes", doc(stmt(NotResource=FM_TITAN, Resource=None)), req(resource=FM_TITAN), P.IMPLICIT_DENY),
    ("NotResource admits others", doc(stmt(NotResource=FM_TITAN, Resource=None)), req(), P.ALLOW),
    ("principals: listed user", PRINCIPALS, req(), P.ALLOW),
    ("principals: listed role's session", PRINCIPALS, req(principal=SESSION), P.ALLOW),
    ("principals: unlisted", PRINCIPALS, req(principal=OTHER), P.IMPLICIT_DENY),
    ("principals: anonymous", PRINCIPALS, req(principal=None), P.IMPLICIT_DENY),
    ("principal account id", doc(stmt(Principal={"AWS": ACCOUNT})), req(principal=SESSION), P.ALLOW),
    ("principal account root", doc(stmt(Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})), req(principal=OTHER),
     P.IMPLICIT_DENY),
    ("principal AWS *", doc(stmt(Principal={"AWS": "*"})), req(principal=OTHER), P.ALLOW),
    ("NotPrincipal", doc(stmt(NotPrincipal={"AWS": OTHER}, Principal=None)), req(principal=OTHER), P.IMPLICIT_DENY),
    ("org: same org", ORG_POLICY, req(), P.ALLOW),
    ("org: other org", ORG_POLICY, req(org="o-zzzzzzzzzz"), P.IMPLICIT_DENY),
    ("org: no org", ORG_POLICY, req(org=None), P.IMPLICIT_DENY),
    ("condition key case-insensitive", doc(stmt(Condition={"StringEquals": {"AWS:principalorgid": ORG}})), req(),
     P.ALLOW),
    ("StringEquals value case-sensitive", doc(stmt(Condition={"StringEquals": {"aws:PrincipalOrgID": ORG.upper()}})),
     req(), P.IMPLICIT_DENY),
    ("StringEqualsIgnoreCase", doc(stmt(Condition={"StringEqualsIgnoreCase": {"aws:PrincipalOrgID": ORG.upper()}})),
     req(), P.ALLOW),
    ("StringLike PrincipalArn", doc(stmt(Condition={"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/team-*"}})),
     req(principal=ROLE), P.ALLOW),
    ("StringLike no match", doc(stmt(Condition={"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/team-*"}})),
     req(principal=USER), P.IMPLICIT_DENY),
    ("StringLike any of values", doc(stmt(Condition={"StringLike": {"aws:PrincipalArn": ["*:user/bob", "*:user/al*"]}})),
     req(), P.ALLOW),
    ("StringNotEquals", doc(stmt(Condition={"StringNotEquals": {"aws:PrincipalOrgID": ORG}})), req(), P.IMPLICIT_DENY),
    ("StringNotLike missing key", doc(stmt(Condition={"StringNotLike": {"aws:PrincipalTag/team": "a*"}})), req(),
     P.ALLOW),
    ("IfExists missing key", doc(stmt(Condition={"StringEqualsIfExists": {"aws:PrincipalOrgID": ORG}})),
     req(org=None), P.ALLOW),
    ("two keys: both must hold", doc(stmt(Condition={"StringEquals": {"aws:PrincipalOrgID": ORG,
                                                                     "aws:PrincipalArn": ROLE}})),
     req(), P.IMPLICIT_DENY),
    ("two operators: both must hold", doc(stmt(Condition={"StringEquals": {"aws:PrincipalOrgID": ORG},
                                                          "StringLike": {"aws:PrincipalArn": "*:user/*"}})),
     req(), P.ALLOW),
    ("explicit deny wins", DENY_TITAN, req(resource=FM_TITAN), P.EXPLICIT_DENY),
    ("deny elsewhere leaves allow", DENY_TITAN, req(), P.ALLOW),
    ("deny by org (custom)", doc(stmt(), stmt(Effect="Deny", Condition={"StringNotEquals": {"aws:PrincipalOrgID": ORG}})),
     req(org="o-other"), P.EXPLICIT_DENY),
    ("empty statement list", {"Statement": []}, req(), P.IMPLICIT_DENY),
    ("unsupported operator: statement ignored", doc(stmt(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})),
     req(), P.IMPLICIT_DENY),
]


@pytest.mark.parametrize("policy,request_,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case(policy, request_, expected):
    assert P.evaluate(policy, request_).result == expected
    # The document as the EC2 API stores it (a JSON string) gives the same answer.
    assert P.evaluate(json.dumps(policy), request_).result == expected


def test_deciding_statement_and_unsupported_are_reported():
    d = P.evaluate(DENY_TITAN, req(resource=FM_TITAN))
    assert (d.result, d.statement) == (P.EXPLICIT_DENY, "NoTitan")
    d = P.evaluate(doc(stmt(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})), req())
    assert d.unsupported == ["IpAddress"]


def test_profile_needs_every_resource():
    # An inference profile call is authorized on the profile and on each routed-to model.
    only_profile = doc(stmt(Action=INVOKE, Resource=[f"arn:aws:bedrock:us-east-1:*:inference-profile/us.{HAIKU}"]))
    d, refused = P.evaluate_all(only_profile, "bedrock:InvokeModel", [PROFILE, FM, FM_WEST], USER, ctx(USER))
    assert (d.result, refused) == (P.IMPLICIT_DENY, FM)
    d, _ = P.evaluate_all(PROFILE_POLICY, "bedrock:InvokeModel", [PROFILE, FM, FM_WEST], USER, ctx(USER))
    assert d.allowed


@pytest.mark.parametrize("bad", [
    "not json", {"Statement": "x"}, {"Version": "2012-10-17"},
    {"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "*", "Resource": "*"}]},
    {"Statement": [{"Effect": "Allow", "Principal": "*", "Resource": "*"}]},
    {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
])
def test_unreadable_policy_is_an_error(bad):
    with pytest.raises(P.PolicyError):
        P.evaluate(bad, req())


def test_denial_wording():
    implicit = P.denial_message(USER, "bedrock:InvokeModel", FM, P.Decision(P.IMPLICIT_DENY))
    assert implicit == (f"User: {USER} is not authorized to perform: bedrock:InvokeModel on resource: {FM} "
                        "because no VPC endpoint policy allows the bedrock:InvokeModel action")
    explicit = P.denial_message(USER, "bedrock:InvokeModel", FM, P.Decision(P.EXPLICIT_DENY, "x"))
    assert explicit.endswith("with an explicit deny in a VPC endpoint policy")
