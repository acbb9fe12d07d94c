#!/usr/bin/env python3
"""One-shot stand-in for kube-controller-manager's clusterrole-aggregation controller, which the rig
does not run: fills the rules of every ClusterRole that has an aggregationRule (admin, edit, view, and
any a chart adds) from the ClusterRoles its selectors match. Run by `scripts/rig up` and
`scripts/rig aggregate-roles` (run it again after installing roles labelled aggregate-to-*).

usage: rig-aggregate-roles.py KUBECTL KUBECONFIG
"""
import json
import subprocess
import sys

kubectl, kubeconfig = sys.argv[1], sys.argv[2]


def kc(*args, stdin=None):
    return subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], input=stdin, check=True,
                          capture_output=True, text=True).stdout


def matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


roles = {r["metadata"]["name"]: r for r in json.loads(kc("get", "clusterroles", "-o", "json"))["items"]}
aggregated = [r for r in roles.values() if r.get("aggregationRule")]
# Aggregated roles can feed each other (admin <- edit <- view): iterate to a fixed point.
for _ in range(len(aggregated) + 1):
    changed = False
    for agg in aggregated:
        rules = []
        for sel in agg["aggregationRule"].get("clusterRoleSelectors") or []:
            for name in sorted(roles):
                src = roles[name]
                if name == agg["metadata"]["name"] or not matches(sel, src["metadata"].get("labels") or {}):
                    continue
                for rule in src.get("rules") or []:
                    if rule not in rules:
                        rules.append(rule)
        if rules != (agg.get("rules") or []):
            agg["rules"] = rules
            changed = True
    if not changed:
        break

n = 0
for agg in aggregated:
    if agg.get("rules"):
        kc("patch", "clusterrole", agg["metadata"]["name"], "--type=merge", "-p", json.dumps({"rules": agg["rules"]}))
        n += 1
print(f"aggregated {n} clusterroles", file=sys.stderr)
