//! Bad input, as a table: every case is either refused by the API server at `kubectl apply`
//! (with a message naming the field) or reaches Ready=False with a specific reason and a
//! Warning event; for none of them does anything appear in AWS. docs/bad-input.md lists the
//! same cases (the test checks that every case is documented).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, VpcEndpointType};
use common::*;
use kube::ResourceExt;
use serde_json::{Value, json};

fn manifest(ns: &str, name: &str, spec: &Value) -> String {
    json!({
        "apiVersion": "bedrock.privatelink.io/v1alpha1",
        "kind": "BedrockPrivateLink",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
    .to_string()
}

fn doc(statement: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": [statement]}).to_string()
}

fn allow_invoke() -> Value {
    json!({"Effect": "Allow", "Principal": "*", "Action": "bedrock:InvokeModel", "Resource": "*"})
}

/// (case, spec, what the API server's message must contain)
fn schema_cases() -> Vec<(&'static str, Value, &'static str)> {
    let custom = doc(allow_invoke());
    let long = |n: usize| "k".repeat(n);
    let many_tags: BTreeMap<String, String> =
        (0..31).map(|i| (format!("t{i}"), "v".into())).collect();
    vec![
        (
            "cidr-bad-octet",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["10.0.0.300/16"]}}}),
            "spec.securityGroup.allowFrom.cidrs",
        ),
        (
            "cidr-without-prefix",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["10.0.0.0"]}}}),
            "spec.securityGroup.allowFrom.cidrs",
        ),
        (
            "cidr-prefix-too-long",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["10.0.0.0/33"]}}}),
            "spec.securityGroup.allowFrom.cidrs",
        ),
        (
            "cidr-not-an-address",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["anywhere"]}}}),
            "spec.securityGroup.allowFrom.cidrs",
        ),
        (
            "cidr-ipv6-malformed",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["2600:1f18::zz/56"]}}}),
            "spec.securityGroup.allowFrom.cidrs",
        ),
        (
            "cidr-any-ipv4-unconfirmed",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["0.0.0.0/0"]}}}),
            "allowAnyAddress",
        ),
        (
            "cidr-any-ipv6-unconfirmed",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["::/0"]}}}),
            "allowAnyAddress",
        ),
        (
            "cidr-any-among-others",
            json!({"securityGroup": {"allowFrom": {"cidrs": ["10.0.0.0/16", "0.0.0.0/0"], "allowAnyAddress": false}}}),
            "allowAnyAddress",
        ),
        (
            "service-unknown",
            json!({"services": ["bedrock-fake"]}),
            "spec.services",
        ),
        (
            "service-wrong-case",
            json!({"services": ["Bedrock-Runtime"]}),
            "spec.services",
        ),
        (
            "service-duplicate",
            json!({"services": ["bedrock-runtime", "bedrock-runtime"]}),
            "spec.services[1]: Duplicate value",
        ),
        ("services-empty", json!({"services": []}), "spec.services"),
        (
            "custom-without-document",
            json!({"policy": {"preset": "Custom"}}),
            "spec.policy",
        ),
        (
            "document-with-default-preset",
            json!({"policy": {"document": custom}}),
            "spec.policy",
        ),
        (
            "document-with-invokeonly",
            json!({"policy": {"preset": "InvokeOnly", "document": custom}}),
            "spec.policy",
        ),
        (
            "document-with-fullaccess",
            json!({"policy": {"preset": "FullAccess", "document": custom}}),
            "spec.policy",
        ),
        (
            "custom-with-models",
            json!({"policy": {"preset": "Custom", "document": custom, "models": ["anthropic.claude-3-haiku-20240307-v1:0"]}}),
            "spec.policy",
        ),
        (
            "custom-with-principals",
            json!({"policy": {"preset": "Custom", "document": custom, "principals": ["arn:aws:iam::123456789012:role/app"]}}),
            "spec.policy",
        ),
        (
            "custom-with-organization",
            json!({"policy": {"preset": "Custom", "document": custom, "organizationId": "o-abcdefghij"}}),
            "spec.policy",
        ),
        (
            "preset-unknown",
            json!({"policy": {"preset": "Admin"}}),
            "spec.policy.preset",
        ),
        (
            "document-too-long",
            json!({"policy": {"preset": "Custom", "document": format!("{{\"Statement\":[],\"Id\":\"{}\"}}", long(20_480))}}),
            "spec.policy.document",
        ),
        (
            "document-too-short",
            json!({"policy": {"preset": "Custom", "document": "{"}}),
            "spec.policy.document",
        ),
        (
            "model-id-malformed",
            json!({"policy": {"models": ["Claude 3 Haiku"]}}),
            "spec.policy.models",
        ),
        (
            "model-arn-other-service",
            json!({"policy": {"models": ["arn:aws:s3:::my-bucket/model"]}}),
            "spec.policy.models",
        ),
        (
            "models-empty",
            json!({"policy": {"models": []}}),
            "spec.policy.models",
        ),
        (
            "principal-not-an-arn",
            json!({"policy": {"principals": ["bob"]}}),
            "spec.policy.principals",
        ),
        (
            "principal-short-account",
            json!({"policy": {"principals": ["arn:aws:iam::123:role/app"]}}),
            "spec.policy.principals",
        ),
        (
            "principal-other-service",
            json!({"policy": {"principals": ["arn:aws:s3:::123456789012:bucket"]}}),
            "spec.policy.principals",
        ),
        (
            "organization-id-malformed",
            json!({"policy": {"organizationId": "org-123"}}),
            "spec.policy.organizationId",
        ),
        (
            "vpc-id-uppercase",
            json!({"vpcId": "vpc-XYZ"}),
            "spec.vpcId",
        ),
        (
            "vpc-id-too-short",
            json!({"vpcId": "vpc-123"}),
            "spec.vpcId",
        ),
        (
            "vpc-id-wrong-kind",
            json!({"vpcId": "subnet-0123456789abcdef0"}),
            "spec.vpcId",
        ),
        (
            "subnet-id-malformed",
            json!({"subnets": {"ids": ["subnet-xyz"]}}),
            "spec.subnets.ids",
        ),
        (
            "subnet-id-wrong-kind",
            json!({"subnets": {"ids": ["sg-0123456789abcdef0"]}}),
            "spec.subnets.ids",
        ),
        (
            "subnet-ids-empty",
            json!({"subnets": {"ids": []}}),
            "spec.subnets.ids",
        ),
        (
            "subnet-ids-and-selector",
            json!({"subnets": {"ids": ["subnet-0123456789abcdef0"], "selector": {"tier": "private"}}}),
            "spec.subnets",
        ),
        (
            "existing-sg-malformed",
            json!({"securityGroup": {"existingIds": ["sg-zz"]}}),
            "spec.securityGroup.existingIds",
        ),
        (
            "existing-sg-wrong-kind",
            json!({"securityGroup": {"existingIds": ["vpc-0123456789abcdef0"]}}),
            "spec.securityGroup.existingIds",
        ),
        (
            "existing-sg-too-many",
            json!({"securityGroup": {"existingIds": ["sg-00000001", "sg-00000002", "sg-00000003", "sg-00000004", "sg-00000005", "sg-00000006"]}}),
            "spec.securityGroup.existingIds",
        ),
        (
            "allow-from-sg-malformed",
            json!({"securityGroup": {"allowFrom": {"securityGroupIds": ["sg-1"]}}}),
            "spec.securityGroup.allowFrom.securityGroupIds",
        ),
        (
            "existing-ids-with-allow-from",
            json!({"securityGroup": {"existingIds": ["sg-0123456789abcdef0"], "allowFrom": {"cidrs": ["10.0.0.0/16"]}}}),
            "spec.securityGroup",
        ),
        (
            "tag-key-aws-prefix",
            json!({"tags": {"aws:owner": "me"}}),
            "spec.tags",
        ),
        (
            "tag-key-operator-prefix",
            json!({"tags": {"bedrock.privatelink.io/owner-uid": "forged"}}),
            "spec.tags",
        ),
        (
            "tag-key-too-long",
            json!({"tags": {long(129): "v"}}),
            "spec.tags",
        ),
        (
            "tag-value-too-long",
            json!({"tags": {"team": long(257)}}),
            "spec.tags",
        ),
        ("tags-too-many", json!({"tags": many_tags}), "spec.tags"),
        (
            "config-map-name-invalid",
            json!({"workloadConfig": {"configMapName": "Bad_Name"}}),
            "spec.workloadConfig.configMapName",
        ),
        (
            "config-map-name-too-long",
            json!({"workloadConfig": {"configMapName": long(254)}}),
            "spec.workloadConfig.configMapName",
        ),
        (
            "region-malformed",
            json!({"region": "mars-1"}),
            "spec.region",
        ),
        (
            "deletion-policy-unknown",
            json!({"deletionPolicy": "Keep"}),
            "spec.deletionPolicy",
        ),
        (
            "private-dns-not-boolean",
            json!({"privateDns": "yes"}),
            "spec.privateDns",
        ),
        (
            "unknown-field",
            json!({"vpcID": "vpc-0123456789abcdef0"}),
            "spec.vpcID",
        ),
    ]
}

struct RuntimeCase {
    name: &'static str,
    spec: Value,
    reason: &'static str,
    /// The Ready message must contain this.
    says: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_at_apply_or_reported_and_nothing_is_created() {
    let started = Instant::now();
    // An emulator of our own: one service is offered only in a zone our subnets are not in.
    let rig = Rig::with_private_emulator(&[]).await;
    install_crd(&rig).await;
    rig.harness(
        "POST",
        "service-azs",
        json!({"service": "bedrock-agent", "azs": ["us-east-1d"]}),
    )
    .await;
    let docs = std::fs::read_to_string(repo_root().join("docs/bad-input.md")).unwrap_or_default();

    // ---- refused by the API server (nothing reaches the operator)
    let schema_ns = rig.namespace("bad-schema").await;
    let cases = schema_cases();
    // Every case runs and reports; the test fails at the end with the list of failed cases.
    let mut failures: Vec<String> = Vec::new();
    let mut jobs = Vec::new();
    for (i, (case, spec, needle)) in cases.iter().enumerate() {
        let m = manifest(&schema_ns, &format!("s{i}"), spec);
        let kubectl = rig.bin("kubectl");
        let kubeconfig = rig.env["KUBECONFIG"].clone();
        let (case, needle) = (*case, *needle);
        jobs.push(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(kubectl)
                .args(["apply", "-f", "-"])
                .env("KUBECONFIG", kubeconfig)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            (case, needle, out.status.success(), err)
        }));
        if jobs.len() >= 4 {
            let (case, needle, ok, err) = jobs.remove(0).await.unwrap();
            failures.extend(check_refused(case, needle, ok, &err));
        }
    }
    for j in jobs {
        let (case, needle, ok, err) = j.await.unwrap();
        failures.extend(check_refused(case, needle, ok, &err));
    }
    let stored = rig
        .bpls(&schema_ns)
        .list(&Default::default())
        .await
        .unwrap();
    for o in &stored.items {
        failures.push(format!(
            "{}: stored although it should be refused",
            o.name_any()
        ));
    }
    let schema_done = started.elapsed();

    // ---- accepted, then judged by the operator
    let ns = rig.namespace("bad-runtime").await;
    let a = rig.network(&format!("{ns}-a")).await;
    let b = rig.network(&format!("{ns}-b")).await;
    let no_hostnames = rig.network(&format!("{ns}-nohost")).await;
    let no_dns = rig.network(&format!("{ns}-nodns")).await;
    let taken = rig.network(&format!("{ns}-taken")).await;
    rig.ec2
        .modify_vpc_attribute()
        .vpc_id(&no_hostnames.vpc_id)
        .enable_dns_hostnames(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .unwrap();
    for attr in ["hostnames", "support"] {
        let req = rig.ec2.modify_vpc_attribute().vpc_id(&no_dns.vpc_id);
        let v = AttributeBooleanValue::builder().value(false).build();
        let req = if attr == "support" {
            req.enable_dns_support(v)
        } else {
            req.enable_dns_hostnames(v)
        };
        req.send().await.unwrap();
    }
    // Someone else's endpoint already serves bedrock-runtime with private DNS in `taken`.
    let foreign = rig
        .ec2
        .create_vpc_endpoint()
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .vpc_id(&taken.vpc_id)
        .service_name("com.amazonaws.us-east-1.bedrock-runtime")
        .set_subnet_ids(Some(taken.subnet_ids()))
        .private_dns_enabled(true)
        .send()
        .await
        .unwrap();
    let foreign_id = foreign
        .vpc_endpoint()
        .unwrap()
        .vpc_endpoint_id()
        .unwrap()
        .to_string();
    let b_group = rig
        .ec2
        .create_security_group()
        .group_name(format!("{ns}-other-vpc"))
        .description("a group of another VPC")
        .vpc_id(&b.vpc_id)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();

    let at = |net: &Network, extra: Value| {
        let mut s = json!({"vpcId": net.vpc_id, "subnets": {"ids": net.subnet_ids()}});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let custom = |document: String| json!({"policy": {"preset": "Custom", "document": document}});
    let nowhere = "subnet-0000000000000dead".to_string();
    let runtime = vec![
        RuntimeCase {
            name: "policy-not-json",
            spec: at(&a, custom("{nope".into())),
            reason: "InvalidPolicy",
            says: "not valid JSON".into(),
        },
        RuntimeCase {
            name: "policy-json-array",
            spec: at(&a, custom("[1, 2]".into())),
            reason: "InvalidPolicy",
            says: "JSON object".into(),
        },
        RuntimeCase {
            name: "policy-json-string",
            spec: at(&a, custom("\"Allow\"".into())),
            reason: "InvalidPolicy",
            says: "JSON object".into(),
        },
        RuntimeCase {
            name: "policy-no-statement",
            spec: at(&a, custom(json!({"Version": "2012-10-17"}).to_string())),
            reason: "InvalidPolicy",
            says: "Statement".into(),
        },
        RuntimeCase {
            name: "policy-empty-statement",
            spec: at(
                &a,
                custom(json!({"Version": "2012-10-17", "Statement": []}).to_string()),
            ),
            reason: "InvalidPolicy",
            says: "Statement".into(),
        },
        RuntimeCase {
            name: "policy-bad-effect",
            spec: at(
                &a,
                custom(doc(
                    json!({"Effect": "Maybe", "Principal": "*", "Action": "bedrock:*", "Resource": "*"}),
                )),
            ),
            reason: "InvalidPolicy",
            says: "Effect".into(),
        },
        RuntimeCase {
            name: "policy-no-action",
            spec: at(
                &a,
                custom(doc(
                    json!({"Effect": "Allow", "Principal": "*", "Resource": "*"}),
                )),
            ),
            reason: "InvalidPolicy",
            says: "Action".into(),
        },
        RuntimeCase {
            name: "policy-action-and-notaction",
            spec: at(
                &a,
                custom(doc(
                    json!({"Effect": "Allow", "Principal": "*", "Action": "bedrock:*", "NotAction": "bedrock:Delete*", "Resource": "*"}),
                )),
            ),
            reason: "InvalidPolicy",
            says: "NotAction".into(),
        },
        RuntimeCase {
            name: "policy-unknown-top-level-key",
            spec: at(
                &a,
                custom(
                    json!({"Version": "2012-10-17", "Statement": [allow_invoke()], "Rules": []})
                        .to_string(),
                ),
            ),
            reason: "InvalidPolicy",
            says: "Rules".into(),
        },
        RuntimeCase {
            name: "policy-unknown-statement-key",
            spec: at(
                &a,
                custom(doc(
                    json!({"Effect": "Allow", "Principal": "*", "Action": "bedrock:*", "Resource": "*", "Allow": true}),
                )),
            ),
            reason: "InvalidPolicy",
            says: "unknown key".into(),
        },
        RuntimeCase {
            name: "policy-bad-version",
            spec: at(
                &a,
                custom(json!({"Version": "2024-01-01", "Statement": [allow_invoke()]}).to_string()),
            ),
            reason: "InvalidPolicy",
            says: "Version".into(),
        },
        RuntimeCase {
            name: "vpc-nonexistent",
            spec: json!({"vpcId": "vpc-0000000000000dead", "subnets": {"ids": a.subnet_ids()}}),
            reason: "VpcNotFound",
            says: "vpc-0000000000000dead".into(),
        },
        RuntimeCase {
            name: "subnet-nonexistent",
            spec: json!({"vpcId": a.vpc_id, "subnets": {"ids": [a.subnet_ids()[0].clone(), nowhere.clone()]}}),
            reason: "SubnetNotFound",
            says: nowhere.clone(),
        },
        RuntimeCase {
            name: "subnet-of-another-vpc",
            spec: json!({"vpcId": a.vpc_id, "subnets": {"ids": [a.subnet_ids()[0].clone(), b.subnet_ids()[1].clone()]}}),
            reason: "SubnetNotInVpc",
            says: b.subnet_ids()[1].clone(),
        },
        RuntimeCase {
            name: "existing-sg-nonexistent",
            spec: at(
                &a,
                json!({"securityGroup": {"existingIds": ["sg-0000000000000dead"]}}),
            ),
            reason: "SecurityGroupNotFound",
            says: "sg-0000000000000dead".into(),
        },
        RuntimeCase {
            name: "existing-sg-of-another-vpc",
            spec: at(
                &a,
                json!({"securityGroup": {"existingIds": [b_group.clone()]}}),
            ),
            reason: "SecurityGroupNotInVpc",
            says: b_group.clone(),
        },
        RuntimeCase {
            name: "allow-from-sg-nonexistent",
            spec: at(
                &a,
                json!({"securityGroup": {"allowFrom": {"securityGroupIds": ["sg-0000000000000dead"]}}}),
            ),
            reason: "SecurityGroupNotFound",
            says: "sg-0000000000000dead".into(),
        },
        RuntimeCase {
            name: "region-mismatch",
            spec: at(&a, json!({"region": "eu-west-1"})),
            // Issue 17: another region is a tenancy rule (no grant lists eu-west-1).
            reason: "RegionNotAllowed",
            says: "eu-west-1".into(),
        },
        RuntimeCase {
            name: "private-dns-conflict",
            spec: at(&taken, json!({})),
            reason: "PrivateDnsConflict",
            says: foreign_id.clone(),
        },
        RuntimeCase {
            name: "vpc-without-dns-hostnames",
            spec: at(&no_hostnames, json!({})),
            reason: "PrivateDnsUnsupported",
            says: "enableDnsHostnames".into(),
        },
        RuntimeCase {
            name: "vpc-without-dns-support",
            spec: at(&no_dns, json!({})),
            reason: "PrivateDnsUnsupported",
            says: "enableDnsSupport".into(),
        },
        RuntimeCase {
            name: "selector-matches-nothing",
            spec: json!({"vpcId": a.vpc_id, "subnets": {"selector": {"tier": "nonexistent"}}}),
            reason: "NoUsableSubnets",
            says: "spec.subnets.selector".into(),
        },
        RuntimeCase {
            name: "selector-matches-another-vpc-only",
            spec: json!({"vpcId": a.vpc_id, "subnets": {"selector": {"Name": format!("{ns}-b-us-east-1a")}}}),
            reason: "NoUsableSubnets",
            says: "spec.subnets.selector".into(),
        },
        RuntimeCase {
            name: "service-not-in-subnet-zones",
            spec: at(&a, json!({"services": ["bedrock-agent"]})),
            reason: "NoUsableSubnets",
            says: "us-east-1d".into(),
        },
    ];

    let op = rig.operator(&ns, &["--concurrency", "16"]);
    let objs = futures::future::join_all(
        runtime
            .iter()
            .map(|c| create_bpl(&rig, &ns, c.name, c.spec.clone())),
    )
    .await;
    let uids: Vec<String> = objs
        .iter()
        .map(|o| o.metadata.uid.clone().unwrap())
        .collect();
    let judged = futures::future::join_all(
        runtime
            .iter()
            .zip(&uids)
            .map(|(c, uid)| run_case(c.name, judge(&rig, &ns, c, uid))),
    )
    .await;
    let mut rows = Vec::new();
    for (c, result) in runtime.iter().zip(judged) {
        match result {
            Ok(message) => rows.push(format!(
                "| `{}` | operator | `{}`: {} |",
                c.name,
                c.reason,
                message.replace('|', "\\|")
            )),
            Err(failure) => failures.push(failure),
        }
    }

    // ---- immutable fields: the change is refused; the object keeps its old spec
    // (`kubectl apply` leaves alone a field it did not set, so removals use replace.)
    let transitions = [
        (
            "vpc-id-changed",
            "apply",
            "vpc-nonexistent",
            json!({"vpcId": a.vpc_id, "subnets": {"ids": a.subnet_ids()}}),
            "spec.vpcId is immutable",
        ),
        (
            "vpc-id-removed",
            "replace",
            "vpc-nonexistent",
            json!({"subnets": {"ids": a.subnet_ids()}}),
            "spec.vpcId is immutable",
        ),
        (
            "region-changed",
            "apply",
            "region-mismatch",
            json!({"vpcId": a.vpc_id, "subnets": {"ids": a.subnet_ids()}, "region": "us-east-1"}),
            "spec.region is immutable",
        ),
        (
            "region-removed",
            "replace",
            "region-mismatch",
            json!({"vpcId": a.vpc_id, "subnets": {"ids": a.subnet_ids()}}),
            "spec.region is immutable",
        ),
    ];
    for (case, verb, object, spec, needle) in &transitions {
        let (ok, _, err) = rig.kubectl_stdin(&[verb, "-f", "-"], &manifest(&ns, object, spec));
        failures.extend(check_refused(case, needle, ok, &err));
    }
    for (object, reason) in [
        ("vpc-nonexistent", "VpcNotFound"),
        ("region-mismatch", "RegionNotAllowed"),
    ] {
        let o = rig.bpls(&ns).get(object).await.unwrap();
        let got = condition(&o, "Ready").map(|c| c.reason.clone());
        if got.as_deref() != Some(reason) {
            failures.push(format!("{object}: kept its spec? Ready reason {got:?}"));
        }
    }

    // Nothing of anybody's in AWS but the foreign endpoint: no endpoint, no tagged group.
    let all = rig.ec2.describe_vpc_endpoints().send().await.unwrap();
    let ids: Vec<&str> = all
        .vpc_endpoints()
        .iter()
        .filter_map(|e| e.vpc_endpoint_id())
        .collect();
    if ids != vec![foreign_id.as_str()] {
        failures.push(format!("only the foreign endpoint should exist: {ids:?}"));
    }
    let tagged = rig
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag-key").values(OWNER_TAG).build())
        .send()
        .await
        .unwrap();
    if !tagged.security_groups().is_empty() {
        failures.push(format!(
            "groups were created: {:?}",
            tagged.security_groups()
        ));
    }
    let calls = rig.emulator_calls().await;
    for a in [
        "CreateVpcEndpoint",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "ModifyVpcEndpoint",
    ] {
        let n = calls.get(a).copied().unwrap_or(0);
        let by_test = match a {
            "CreateVpcEndpoint" | "CreateSecurityGroup" => 1,
            _ => 0,
        };
        if n != by_test {
            failures.push(format!("{a}: {n} calls, {by_test} of them by the test"));
        }
    }
    drop(op);

    // The doc lists every case.
    let mut missing = Vec::new();
    for name in cases
        .iter()
        .map(|c| c.0)
        .chain(runtime.iter().map(|c| c.name))
        .chain(transitions.iter().map(|t| t.0))
    {
        if !docs.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    eprintln!(
        "bad input: {} refused at apply, {} judged by the operator, {} immutable-field changes refused; apply cases {schema_done:?}, total {:?}",
        cases.len(),
        runtime.len(),
        transitions.len(),
        started.elapsed()
    );
    if !missing.is_empty() {
        for r in &rows {
            eprintln!("{r}");
        }
        failures.push(format!("docs/bad-input.md lacks {missing:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs one named case; a failed assertion in it becomes that case's report, not the end of
/// the test.
async fn run_case<T>(name: &str, f: impl Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .map_err(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("{name}: {why}")
        })
}

/// One runtime case: Ready=False with its reason, a message that names the problem, a
/// Warning event, and nothing in AWS. Returns the Ready message.
async fn judge(rig: &Rig, ns: &str, c: &RuntimeCase, uid: &str) -> String {
    let o = wait_ready(
        rig,
        ns,
        c.name,
        "False",
        Some(c.reason),
        Duration::from_secs(60),
    )
    .await;
    let r = condition(&o, "Ready").unwrap();
    assert!(
        r.message.contains(&c.says),
        "Ready message should mention {}: {}",
        c.says,
        r.message
    );
    assert!(r.message.len() <= 1024, "a short message: {}", r.message);
    eventually(
        Duration::from_secs(15),
        &format!("Warning event {}", c.reason),
        || async { (!warning_events(rig, ns, uid, c.reason).await.is_empty()).then_some(()) },
    )
    .await;
    assert!(
        rig.owned_endpoints(uid).await.is_empty(),
        "an endpoint was created"
    );
    assert!(
        rig.owned_groups(uid).await.is_empty(),
        "a group was created"
    );
    r.message.clone()
}

/// The report row of a case refused at apply, or why it is not.
fn check_refused(case: &str, needle: &str, ok: bool, err: &str) -> Option<String> {
    if ok {
        return Some(format!("{case}: should be refused at apply"));
    }
    if !err.contains(needle) {
        return Some(format!("{case}: the message should name {needle}: {err}"));
    }
    eprintln!(
        "| `{case}` | API server | {} |",
        err.trim().replace('\n', " ").replace('|', "\\|")
    );
    None
}
