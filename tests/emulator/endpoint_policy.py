"""VPC endpoint policy evaluation, as AWS applies it to a request arriving through the endpoint.

Pure functions, no I/O: `evaluate(policy, request)` says whether the endpoint policy allows one
action on one resource for one principal. The Bedrock stand-in (dataplane.py) calls it for every
request on an endpoint address; test_endpoint_policy.py holds the table of cases.

What is covered (AWS's IAM policy grammar, the parts endpoint policies use):
* Statement as an object or a list; Effect Allow/Deny; an explicit Deny wins over any Allow; no
  matching Allow is an implicit deny.
* Action / NotAction: `service:Action` patterns, case-insensitive, `*` and `?` wildcards.
* Resource / NotResource: ARN patterns, case-sensitive, `*`/`?` inside each of the five colon
  separated fields and the resource part; `"*"` alone matches every resource.
* Principal / NotPrincipal: `"*"`, `{"AWS": "*"}`, or `{"AWS": [...]}` with principal ARNs or
  account ids (`123456789012` or `arn:aws:iam::123456789012:root` stand for every principal of that
  account); a role ARN also matches that role's assumed-role sessions.
* Condition: StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase,
  StringLike, StringNotLike, each also with the `IfExists` suffix, on any context key (keys are
  case-insensitive). Several values of one key: any may match (the Not operators: none may); several
  keys or operators: all must hold. A missing key fails the positive operators and satisfies the
  negated ones (IfExists: satisfied either way).
* An operator outside that list makes its statement never apply (reported in `Decision.unsupported`);
  see README.md for what AWS does that this does not.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

ALLOW = "Allow"
EXPLICIT_DENY = "ExplicitDeny"
IMPLICIT_DENY = "ImplicitDeny"

STRING_OPERATORS = {
    "StringEquals": (False, False, False),  # (negated, like, ignore case)
    "StringNotEquals": (True, False, False),
    "StringEqualsIgnoreCase": (False, False, True),
    "StringNotEqualsIgnoreCase": (True, False, True),
    "StringLike": (False, True, False),
    "StringNotLike": (True, True, False),
}


class PolicyError(ValueError):
    """The document is not an IAM policy this module can read."""


@dataclass(frozen=True)
class Request:
    action: str  # e.g. bedrock:InvokeModel
    resource: str  # an ARN
    principal_arn: str | None  # None: anonymous (unsigned) caller
    context: dict[str, str] = field(default_factory=dict)  # aws:PrincipalOrgID, aws:PrincipalArn...


@dataclass
class Decision:
    result: str  # ALLOW, EXPLICIT_DENY or IMPLICIT_DENY
    statement: str | None = None  # Sid (or index) of the deciding statement
    unsupported: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.result == ALLOW


@functools.lru_cache(maxsize=2048)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # IAM has only * and ? (fnmatch would also read [...] classes).
    body = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )
    return re.compile(f"(?s:{body})\\Z", re.IGNORECASE if ignore_case else 0)


def _wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _glob(pattern, ignore_case).match(value) is not None


def action_matches(pattern: str, action: str) -> bool:
    return _wild(pattern, action, ignore_case=True)


def resource_matches(pattern: str, arn: str) -> bool:
    if pattern == "*":
        return True
    p_fields = pattern.split(":", 5)
    a_fields = arn.split(":", 5)
    if len(p_fields) != 6 or len(a_fields) != 6:
        return _wild(pattern, arn)
    return all(_wild(p, a) for p, a in zip(p_fields, a_fields))


def _account_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" else None


def _role_of_session(arn: str) -> str | None:
    """arn:aws:sts::A:assumed-role/R/S -> arn:aws:iam::A:role/R."""
    m = re.match(r"^arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/", arn)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else None


def principal_entry_matches(entry: str, principal_arn: str | None) -> bool:
    if entry == "*":
        return True
    if principal_arn is None:
        return False
    if entry == principal_arn:
        return True
    if re.fullmatch(r"\d{12}", entry):
        return _account_of(principal_arn) == entry
    m = re.fullmatch(r"arn:[^:]+:iam::(\d{12}):root", entry)
    if m:
        return _account_of(principal_arn) == m.group(1)
    return _role_of_session(principal_arn) == entry


def principal_matches(principal: Any, principal_arn: str | None) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        raise PolicyError(f"Principal must be \"*\" or an object, not {principal!r}")
    entries = _as_list(principal.get("AWS"))
    return any(principal_entry_matches(e, principal_arn) for e in entries)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise PolicyError(f"expected a string or a list of strings, not {value!r}")


def _string_condition(op: str, key_values: dict[str, Any], context: dict[str, str]) -> bool:
    if_exists = op.endswith("IfExists")
    base = op[: -len("IfExists")] if if_exists else op
    negated, like, ignore_case = STRING_OPERATORS[base]
    lowered = {k.lower(): v for k, v in context.items()}
    for key, wanted in key_values.items():
        value = lowered.get(key.lower())
        if value is None:
            if if_exists or negated:
                continue
            return False
        patterns = _as_list(wanted)
        if like:
            hit = any(_wild(p, value) for p in patterns)
        elif ignore_case:
            hit = any(p.lower() == value.lower() for p in patterns)
        else:
            hit = value in patterns
        if hit == negated:
            return False
    return True


def _conditions_hold(condition: Any, context: dict[str, str], unsupported: list[str]) -> bool:
    if condition is None:
        return True
    if not isinstance(condition, dict):
        raise PolicyError("Condition must be an object")
    for op, key_values in condition.items():
        base = op[: -len("IfExists")] if op.endswith("IfExists") else op
        if base not in STRING_OPERATORS:
            unsupported.append(op)
            return False
        if not isinstance(key_values, dict):
            raise PolicyError(f"Condition {op} must map keys to values")
        if not _string_condition(op, key_values, context):
            return False
    return True


def _statements(policy: Any) -> list[dict[str, Any]]:
    if isinstance(policy, (str, bytes)):
        try:
            policy = json.loads(policy)
        except ValueError as e:
            raise PolicyError(f"policy is not JSON: {e}") from e
    if not isinstance(policy, dict) or "Statement" not in policy:
        raise PolicyError("policy must be an object with a Statement")
    stmts = policy["Statement"]
    if isinstance(stmts, dict):
        stmts = [stmts]
    if not isinstance(stmts, list) or not all(isinstance(s, dict) for s in stmts):
        raise PolicyError("Statement must be an object or a list of objects")
    return stmts


def statement_applies(stmt: dict[str, Any], req: Request, unsupported: list[str]) -> bool:
    if "Action" in stmt:
        if not any(action_matches(p, req.action) for p in _as_list(stmt["Action"])):
            return False
    elif "NotAction" in stmt:
        if any(action_matches(p, req.action) for p in _as_list(stmt["NotAction"])):
            return False
    else:
        raise PolicyError("a statement needs Action or NotAction")
    if "Resource" in stmt:
        if not any(resource_matches(p, req.resource) for p in _as_list(stmt["Resource"])):
            return False
    elif "NotResource" in stmt:
        if any(resource_matches(p, req.resource) for p in _as_list(stmt["NotResource"])):
            return False
    else:
        raise PolicyError("a statement needs Resource or NotResource")
    if "Principal" in stmt:
        if not principal_matches(stmt["Principal"], req.principal_arn):
            return False
    elif "NotPrincipal" in stmt:
        if principal_matches(stmt["NotPrincipal"], req.principal_arn):
            return False
    else:
        raise PolicyError("an endpoint policy statement needs Principal or NotPrincipal")
    return _conditions_hold(stmt.get("Condition"), req.context, unsupported)


def evaluate(policy: Any, req: Request) -> Decision:
    """AWS's order: any applicable Deny -> explicit deny; else any applicable Allow -> allow."""
    unsupported: list[str] = []
    allow_sid = None
    for i, stmt in enumerate(_statements(policy)):
        effect = stmt.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"Effect must be Allow or Deny, not {effect!r}")
        if not statement_applies(stmt, req, unsupported):
            continue
        sid = str(stmt.get("Sid", i))
        if effect == "Deny":
            return Decision(EXPLICIT_DENY, sid, unsupported)
        if allow_sid is None:
            allow_sid = sid
    if allow_sid is not None:
        return Decision(ALLOW, allow_sid, unsupported)
    return Decision(IMPLICIT_DENY, None, unsupported)


def evaluate_all(policy: Any, action: str, resources: list[str], principal_arn: str | None,
                 context: dict[str, str]) -> tuple[Decision, str]:
    """A call that needs `action` on several resources (an inference profile and the models it
    routes to) is allowed only if every one is; returns the first refusal and its resource."""
    last = Decision(IMPLICIT_DENY)
    for resource in resources:
        last = evaluate(policy, Request(action, resource, principal_arn, context))
        if not last.allowed:
            return last, resource
    return last, resources[-1] if resources else ""


def denial_message(principal_arn: str | None, action: str, resource: str, decision: Decision) -> str:
    """AWS's wording for a request refused by a VPC endpoint policy."""
    who = principal_arn or "anonymous"
    if decision.result == EXPLICIT_DENY:
        why = "with an explicit deny in a VPC endpoint policy"
    else:
        why = f"because no VPC endpoint policy allows the {action} action"
    return f"User: {who} is not authorized to perform: {action} on resource: {resource} {why}"

