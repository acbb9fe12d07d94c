//! The private path check (issue 14): do the names workloads use lead to the endpoint?
//!
//! An endpoint that EC2 calls `available` is only half the job: the most common failure after
//! that is DNS. With private DNS, `bedrock-runtime.<region>.amazonaws.com` must resolve, inside
//! the VPC, to the endpoint's network interfaces; custom DNS servers in the DHCP options, cluster
//! DNS forwarding elsewhere or a Route 53 Resolver rule make it resolve to public addresses and
//! calls leave the VPC without any error. For each available endpoint the operator resolves the
//! names a pod would use (the standard hostname with private DNS, and always the endpoint's
//! regional `vpce-...` name) with the system resolver, as the pod it runs in does, and compares
//! the answers with the interfaces' addresses (DescribeNetworkInterfaces, cached per interface:
//! an interface's address never changes).
//!
//! The result is the `PrivatePathVerified` condition. It does not change Ready: Ready says the
//! AWS resources are as the spec asks, which the operator can fix; DNS is the network's (the
//! operator reports it, with an Event when it changes, and checks again every reconcile).
//! `decide` is pure; `check` does the looking up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::api::EndpointStatus;
use crate::aws::Ec2;

use super::status::Verdict;

pub const PRIVATE_PATH: &str = "PrivatePathVerified";

/// Reasons of `PrivatePathVerified`.
pub const VERIFIED: &str = "Verified";
pub const RESOLVES_ELSEWHERE: &str = "ResolvesElsewhere";
pub const NOT_RESOLVABLE: &str = "NotResolvable";
pub const NOT_AVAILABLE: &str = "EndpointNotAvailable";
pub const ADDRESSES_UNKNOWN: &str = "AddressesUnknown";

const LIKELY_CAUSES: &str = "likely causes: custom DNS servers in the VPC's DHCP options set, \
cluster DNS (CoreDNS) forwarding to a resolver outside the VPC, a Route 53 Resolver rule or \
private hosted zone for amazonaws.com, or private DNS turned off on the endpoint";

/// One name, where it must lead and where it led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCheck {
    pub name: String,
    pub endpoint_id: String,
    /// The endpoint's interface addresses (empty: unknown).
    pub expected: BTreeSet<IpAddr>,
    /// What the resolver answered, or why it did not.
    pub resolved: Result<BTreeSet<IpAddr>, String>,
}

/// The names a workload uses for an endpoint: the standard hostname when private DNS is on,
/// and the endpoint's regional `vpce-...` name (the first of its DNS names).
pub fn names(e: &EndpointStatus) -> Vec<String> {
    e.private_dns_name
        .iter()
        .chain(e.dns_names.first())
        .cloned()
        .collect()
}

fn list(addrs: &BTreeSet<IpAddr>) -> String {
    let v: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    v.join(", ")
}

/// The condition from the checks of every available endpoint (`checks` empty: none is
/// available yet). The first problem found is named; the message lists every name when all
/// lead to their endpoint.
pub fn decide(checks: &[NameCheck]) -> Verdict {
    if checks.is_empty() {
        return Verdict::new(
            PRIVATE_PATH,
            false,
            NOT_AVAILABLE,
            "no endpoint is available yet; the path is checked once one is",
        );
    }
    for c in checks {
        if c.expected.is_empty() {
            return Verdict::new(
                PRIVATE_PATH,
                false,
                ADDRESSES_UNKNOWN,
                format!(
                    "the network interface addresses of {} are not known yet; checking again",
                    c.endpoint_id
                ),
            );
        }
    }
    for c in checks {
        match &c.resolved {
            Err(why) => {
                return Verdict::new(
                    PRIVATE_PATH,
                    false,
                    NOT_RESOLVABLE,
                    format!(
                        "{} does not resolve ({why}): workloads cannot reach {} by that name; \
                         check the pods' DNS configuration and that the VPC has DNS support",
                        c.name, c.endpoint_id
                    ),
                );
            }
            Ok(got) if got.is_empty() || !got.is_subset(&c.expected) => {
                return Verdict::new(
                    PRIVATE_PATH,
                    false,
                    RESOLVES_ELSEWHERE,
                    format!(
                        "{} resolves to {}, not to the addresses of {} ({}): calls by that name \
                         do not take the private path; {LIKELY_CAUSES}",
                        c.name,
                        if got.is_empty() {
                            "nothing".to_string()
                        } else {
                            list(got)
                        },
                        c.endpoint_id,
                        list(&c.expected)
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    let parts: Vec<String> = checks
        .iter()
        .map(|c| {
            let got = c.resolved.as_ref().map(list).unwrap_or_default();
            format!("{} -> {got} ({})", c.name, c.endpoint_id)
        })
        .collect();
    Verdict::new(
        PRIVATE_PATH,
        true,
        VERIFIED,
        format!("resolved as a pod resolves them: {}", parts.join("; ")),
    )
}

/// Interface addresses by interface id, kept for the process's life (an interface keeps its
/// address; a replaced endpoint has new interfaces).
#[derive(Default)]
pub struct InterfaceAddresses {
    known: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl InterfaceAddresses {
    /// The addresses of `ids`, asking EC2 (one call) only for the ones not known yet. An error
    /// leaves them unknown (the check says so and runs again at the next reconcile).
    async fn of(&self, ec2: &Ec2, ids: &[String]) -> BTreeMap<String, Vec<IpAddr>> {
        let missing: Vec<String> = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter()
                .filter(|id| !known.contains_key(*id))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            match ec2.describe_network_interfaces(&missing).await {
                Ok(found) => {
                    let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                    for f in found {
                        known.insert(f.id, f.private_ips);
                    }
                }
                Err(e) => tracing::debug!(error = %e.summary(), "interface addresses unknown"),
            }
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter_map(|id| Some((id.clone(), known.get(id)?.clone())))
            .collect()
    }

    /// Forgets interfaces (the endpoint is gone).
    pub fn forget(&self, ids: &[String]) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            known.remove(id);
        }
    }
}

/// How long one name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves `name` with the system resolver (getaddrinfo: the pod's /etc/resolv.conf).
pub async fn resolve(name: &str) -> Result<BTreeSet<IpAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 443))).await {
        Err(_) => Err(format!("no answer within {}s", RESOLVE_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
    }
}

/// Checks every available endpoint of `statuses` (see the module's notes).
pub async fn check(
    ec2: &Ec2,
    interfaces: &InterfaceAddresses,
    statuses: &[EndpointStatus],
) -> Verdict {
    let available: Vec<&EndpointStatus> = statuses
        .iter()
        .filter(|e| e.state.eq_ignore_ascii_case("available"))
        .collect();
    let ids: Vec<String> = available
        .iter()
        .flat_map(|e| e.network_interface_ids.iter().cloned())
        .collect();
    let addresses = if ids.is_empty() {
        BTreeMap::new()
    } else {
        interfaces.of(ec2, &ids).await
    };
    let mut checks = Vec::new();
    for e in available {
        let expected: BTreeSet<IpAddr> = e
            .network_interface_ids
            .iter()
            .flat_map(|id| addresses.get(id).into_iter().flatten().copied())
            .collect();
        for name in names(e) {
            let resolved = resolve(&name).await;
            checks.push(NameCheck {
                name,
                endpoint_id: e.vpc_endpoint_id.clone(),
                expected: expected.clone(),
                resolved,
            });
        }
    }
    decide(&checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    fn check(name: &str, expected: &[&str], resolved: Result<&[&str], &str>) -> NameCheck {
        NameCheck {
            name: name.into(),
            endpoint_id: "vpce-1".into(),
            expected: set(expected),
            resolved: resolved.map(set).map_err(str::to_string),
        }
    }

    const STD: &str = "bedrock-runtime.us-east-1.amazonaws.com";
    const VPCE: &str = "vpce-1-ab.bedrock-runtime.us-east-1.vpce.amazonaws.com";

    #[test]
    fn names_are_the_standard_one_with_private_dns_and_the_regional_vpce_one() {
        let mut e = EndpointStatus {
            vpc_endpoint_id: "vpce-1".into(),
            dns_names: vec![VPCE.into(), format!("vpce-1-ab-us-east-1a{}", &VPCE[9..])],
            private_dns_name: Some(STD.into()),
            ..Default::default()
        };
        assert_eq!(names(&e), vec![STD.to_string(), VPCE.to_string()]);
        e.private_dns_name = None;
        assert_eq!(names(&e), vec![VPCE.to_string()]);
    }

    #[test]
    fn verified_when_every_name_leads_to_the_interfaces() {
        let v = decide(&[
            check(
                STD,
                &["10.0.1.5", "10.0.2.6"],
                Ok(&["10.0.1.5", "10.0.2.6"]),
            ),
            check(VPCE, &["10.0.1.5", "10.0.2.6"], Ok(&["10.0.2.6"])),
        ]);
        assert!(v.status, "{v:?}");
        assert_eq!(v.reason, VERIFIED);
        assert!(
            v.message
                .contains(&format!("{STD} -> 10.0.1.5, 10.0.2.6 (vpce-1)"))
        );
    }

    #[test]
    fn a_public_answer_is_named_with_the_likely_causes() {
        let v = decide(&[
            check(VPCE, &["10.0.1.5"], Ok(&["10.0.1.5"])),
            check(STD, &["10.0.1.5"], Ok(&["10.0.1.5", "203.0.113.10"])),
        ]);
        assert!(!v.status);
        assert_eq!(v.reason, RESOLVES_ELSEWHERE);
        assert!(
            v.message.contains("resolves to 10.0.1.5, 203.0.113.10"),
            "{}",
            v.message
        );
        assert!(v.message.contains("DHCP options"), "{}", v.message);
        assert!(v.message.starts_with(STD), "{}", v.message);
    }

    #[test]
    fn no_answer_is_not_resolvable_and_no_interfaces_is_unknown() {
        let v = decide(&[check(STD, &["10.0.1.5"], Err("NXDOMAIN"))]);
        assert_eq!((v.status, v.reason.as_str()), (false, NOT_RESOLVABLE));
        assert!(v.message.contains("NXDOMAIN"));
        let v = decide(&[check(STD, &[], Ok(&["10.0.1.5"]))]);
        assert_eq!(v.reason, ADDRESSES_UNKNOWN);
        let v = decide(&[check(STD, &["10.0.1.5"], Ok(&[]))]);
        assert_eq!(v.reason, RESOLVES_ELSEWHERE);
        let v = decide(&[]);
        assert_eq!((v.status, v.reason.as_str()), (false, NOT_AVAILABLE));
    }

    #[tokio::test]
    async fn interface_addresses_are_asked_for_once() {
        use crate::aws::fake::{self, FakeEc2};
        let fake = FakeEc2::standard();
        let ec2 = fake.handle();
        let ids = vec!["eni-x-0".to_string(), "eni-x-1".to_string()];
        fake.with(|w| {
            w.endpoints.insert(
                "vpce-x".into(),
                crate::aws::EndpointFacts {
                    id: "vpce-x".into(),
                    network_interface_ids: ids.clone(),
                    ..Default::default()
                },
            );
        });
        let known = InterfaceAddresses::default();
        let first = known.of(&ec2, &ids).await;
        let again = known.of(&ec2, &ids).await;
        assert_eq!(first, again);
        assert_eq!(first["eni-x-1"], vec![fake::fake_eni_address("eni-x-1", 1)]);
        let asked = fake.with(|w| {
            w.calls
                .iter()
                .filter(|c| **c == "DescribeNetworkInterfaces")
                .count()
        });
        assert_eq!(asked, 1);
    }
}
