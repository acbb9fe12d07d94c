//! Each namespace's live objects in creation order with their asks, kept between reconciles.
//!
//! Judging one object needs the endpoints its older siblings hold. Built from the stores on
//! every reconcile that was a copy, an ask and a sort of every sibling: with 1000 objects in a
//! namespace, a million asks per resync and most of the operator's CPU. Now a namespace's
//! ledger is built once and reused while a fingerprint of its live objects (their number and
//! the sum of a hash of uid and generation: a spec change bumps the generation, a deletion
//! takes the object out) is unchanged; the fingerprint reads the stores in place, without
//! copying them, and only after the stores changed (the controllers count their watch events:
//! a steady resync reads no store at all). What the older objects hold under a set of rules is tallied once per ledger
//! for every position ([`super::tally`]), so a resync judges each object in constant time.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use super::{Ask, Home, Rules};
use crate::api::BedrockPrivateLink;

type Guarded = DeserializeGuard<BedrockPrivateLink>;

/// Creation order: creation time, then name.
type Key = (Option<jiff::Timestamp>, String);

fn key(o: &BedrockPrivateLink) -> Key {
    (
        o.metadata.creation_timestamp.as_ref().map(|t| t.0),
        o.name_any(),
    )
}

/// Objects being deleted do not count: their endpoints are on their way out.
fn live_in(o: &BedrockPrivateLink, namespace: &Option<String>) -> bool {
    o.metadata.deletion_timestamp.is_none() && &o.metadata.namespace == namespace
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    count: usize,
    sum: u64,
}

fn fingerprint(stores: &[Store<Guarded>], namespace: &Option<String>) -> Fingerprint {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let count = Cell::new(0usize);
    let sum = Cell::new(0u64);
    for store in stores {
        // `find` with a predicate that never matches: a walk under the store's read lock.
        let _ = store.find(|guard| {
            if let Ok(o) = &guard.0
                && live_in(o, namespace)
            {
                count.set(count.get() + 1);
                let h = hasher.hash_one((o.metadata.uid.as_deref(), o.metadata.generation));
                sum.set(sum.get().wrapping_add(h));
            }
            false
        });
    }
    Fingerprint {
        count: count.get(),
        sum: sum.get(),
    }
}

/// One namespace's live objects, oldest first.
struct Ledger {
    fingerprint: Fingerprint,
    keys: Vec<Key>,
    asks: Vec<Ask>,
    /// `names_home_vpc[i]`: one of the first `i` names a VPC in the operator's own account
    /// and region (then which VPCs are the cluster's matters).
    names_home_vpc: Vec<bool>,
    /// The stores' change count when the fingerprint last matched them (0: never).
    verified: AtomicU64,
    /// The last few tallies, by the rules and cluster VPCs they were made under.
    tallies: Mutex<Vec<Arc<Tally>>>,
}

struct Tally {
    rules: Vec<Rules>,
    cluster_vpcs: BTreeSet<String>,
    used: Vec<u32>,
}

/// Tallies kept per ledger: the rules differ between a namespace's objects only when the
/// cluster's VPCs are looked up for some of them and not for others.
const TALLIES: usize = 4;

impl Ledger {
    fn build(stores: &[Store<Guarded>], namespace: &Option<String>, home: &Home) -> Ledger {
        let mut objects: Vec<(Key, Ask, Option<String>, Option<i64>)> = Vec::new();
        for store in stores {
            for guard in store.state_filter(|g| g.0.as_ref().is_ok_and(|o| live_in(o, namespace))) {
                if let Ok(o) = &guard.0 {
                    objects.push((
                        key(o),
                        Ask::of(&o.spec, home),
                        o.metadata.uid.clone(),
                        o.metadata.generation,
                    ));
                }
            }
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        // The fingerprint of exactly what was read (the stores may have moved since).
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        let fingerprint = Fingerprint {
            count: objects.len(),
            sum: objects.iter().fold(0u64, |sum, (_, _, uid, generation)| {
                sum.wrapping_add(hasher.hash_one((uid.as_deref(), *generation)))
            }),
        };
        let mut names_home_vpc = Vec::with_capacity(objects.len() + 1);
        names_home_vpc.push(false);
        let (mut keys, mut asks) = (Vec::new(), Vec::new());
        for (k, ask, _, _) in objects {
            let names = ask.vpc.is_some() && ask.account.is_none() && ask.home_region;
            names_home_vpc.push(names || *names_home_vpc.last().unwrap_or(&false));
            keys.push(k);
            asks.push(ask);
        }
        Ledger {
            fingerprint,
            keys,
            asks,
            names_home_vpc,
            verified: AtomicU64::new(0),
            tallies: Mutex::new(Vec::new()),
        }
    }

    fn tally(&self, rules: &[Rules], cluster_vpcs: &BTreeSet<String>) -> Arc<Tally> {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = tallies
            .iter()
            .position(|t| t.rules == rules && &t.cluster_vpcs == cluster_vpcs)
        {
            let t = tallies.remove(i);
            tallies.insert(0, t.clone());
            return t;
        }
        let t = Arc::new(Tally {
            rules: rules.to_vec(),
            cluster_vpcs: cluster_vpcs.clone(),
            used: super::tally(&self.asks, rules, cluster_vpcs),
        });
        tallies.insert(0, t.clone());
        tallies.truncate(TALLIES);
        t
    }
}

/// The namespace's objects older than one object.
pub struct Earlier {
    ledger: Arc<Ledger>,
    upto: usize,
}

impl Earlier {
    /// One of them names a VPC in the operator's own account and region.
    pub fn names_home_vpc(&self) -> bool {
        self.ledger.names_home_vpc[self.upto]
    }

    /// The endpoints they hold under `rules` (see [`super::tally`]).
    pub fn used(&self, rules: &[Rules], cluster_vpcs: &BTreeSet<String>) -> u32 {
        self.ledger.tally(rules, cluster_vpcs).used[self.upto]
    }

    /// Their asks, oldest first.
    #[cfg(test)]
    pub fn asks(&self) -> &[Ask] {
        &self.ledger.asks[..self.upto]
    }
}

/// Every namespace's ledger.
#[derive(Default)]
pub struct Ledgers {
    by_namespace: Mutex<HashMap<Option<String>, Arc<Ledger>>>,
}

impl Ledgers {
    /// The live objects of `obj`'s namespace created before it. `changes`: how many changes
    /// the stores had seen (read before this call; 0: unknown, always reread the stores).
    pub fn earlier(
        &self,
        stores: &[Store<Guarded>],
        changes: u64,
        obj: &BedrockPrivateLink,
        home: &Home,
    ) -> Earlier {
        let namespace = &obj.metadata.namespace;
        let cached = {
            let by_namespace = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
            by_namespace.get(namespace).cloned()
        };
        let current = cached.filter(|l| {
            if changes != 0 && l.verified.load(Ordering::Acquire) == changes {
                return true;
            }
            let fits = l.fingerprint == fingerprint(stores, namespace);
            if fits {
                l.verified.fetch_max(changes, Ordering::AcqRel);
            }
            fits
        });
        let ledger = match current {
            Some(l) => l,
            None => {
                // Built outside the lock: another namespace's reconciles do not wait for it.
                let built = Arc::new(Ledger::build(stores, namespace, home));
                built.verified.store(changes, Ordering::Release);
                let mut by_namespace = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
                if built.fingerprint.count == 0 {
                    by_namespace.remove(namespace);
                } else {
                    by_namespace.insert(namespace.clone(), built.clone());
                }
                built
            }
        };
        let mine = key(obj);
        let upto = ledger.keys.partition_point(|k| k < &mine);
        Earlier { ledger, upto }
    }

    /// Drops the ledgers of namespaces that have no live object left.
    pub fn prune(&self, stores: &[Store<Guarded>]) {
        let mut by_namespace = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        by_namespace.retain(|namespace, _| fingerprint(stores, namespace).count > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    fn object(name: &str, namespace: &str, created: i64, services: usize) -> BedrockPrivateLink {
        let services: Vec<&str> =
            ["bedrock-runtime", "bedrock", "bedrock-agent-runtime"][..services].to_vec();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "bedrock.privatelink.io/v1alpha1",
            "kind": "BedrockPrivateLink",
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                "generation": 1,
                "creationTimestamp": jiff::Timestamp::from_second(1_800_000_000 + created).unwrap().to_string(),
            },
            "spec": {"services": services, "privateDns": false},
        }))
        .unwrap()
    }

    fn apply(w: &mut kube::runtime::reflector::store::Writer<Guarded>, o: &BedrockPrivateLink) {
        w.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(o.clone()))));
    }

    fn endpoints(e: &Earlier) -> Vec<u32> {
        e.asks().iter().map(|a| a.endpoints).collect()
    }

    #[test]
    fn the_ledger_follows_creation_order_specs_and_deletions() {
        let home = Home {
            region: "us-east-1".into(),
            account: None,
        };
        let (store, mut w) = kube::runtime::reflector::store::<Guarded>();
        let stores = [store];
        let ledgers = Ledgers::default();
        let a = object("a", "team", 10, 1);
        let b = object("b", "team", 20, 2);
        let c = object("c", "team", 20, 3); // same second as b: the name decides
        let other = object("z", "elsewhere", 0, 1);
        for o in [&c, &a, &other, &b] {
            apply(&mut w, o);
        }
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 0, &c, &home)),
            vec![1, 2]
        );
        assert_eq!(endpoints(&ledgers.earlier(&stores, 0, &b, &home)), vec![1]);
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 0, &a, &home)),
            Vec::<u32>::new()
        );
        // The tally: the built-in rules allow 5 endpoints; c (3) does not fit after a and b.
        let rules = [Rules::builtin()];
        let none = BTreeSet::new();
        let after_c = object("d", "team", 30, 1);
        assert_eq!(
            ledgers
                .earlier(&stores, 0, &after_c, &home)
                .used(&rules, &none),
            3
        );

        // A spec change (new generation) is seen.
        let mut b2 = object("b", "team", 20, 1);
        b2.metadata.generation = Some(2);
        apply(&mut w, &b2);
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 0, &c, &home)),
            vec![1, 1]
        );
        assert_eq!(
            ledgers
                .earlier(&stores, 0, &after_c, &home)
                .used(&rules, &none),
            5
        );

        // An object being deleted no longer counts; one deleted is gone.
        let mut a2 = a.clone();
        a2.metadata.deletion_timestamp = b2.metadata.creation_timestamp.clone();
        apply(&mut w, &a2);
        assert_eq!(endpoints(&ledgers.earlier(&stores, 0, &c, &home)), vec![1]);
        w.apply_watcher_event(&watcher::Event::Delete(DeserializeGuard(Ok(b2.clone()))));
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 0, &c, &home)),
            Vec::<u32>::new()
        );

        // With a change count, the stores are reread only when it moves.
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 7, &c, &home)),
            Vec::<u32>::new()
        );
        apply(&mut w, &object("b0", "team", 5, 2));
        assert_eq!(
            endpoints(&ledgers.earlier(&stores, 7, &c, &home)),
            Vec::<u32>::new()
        );
        assert_eq!(endpoints(&ledgers.earlier(&stores, 8, &c, &home)), vec![2]);
        w.apply_watcher_event(&watcher::Event::Delete(DeserializeGuard(Ok(object(
            "b0", "team", 5, 2,
        )))));

        // The last object of a namespace gone: its ledger is dropped.
        w.apply_watcher_event(&watcher::Event::Delete(DeserializeGuard(Ok(c.clone()))));
        w.apply_watcher_event(&watcher::Event::Delete(DeserializeGuard(Ok(a2))));
        ledgers.earlier(&stores, 0, &other, &home);
        ledgers.prune(&stores);
        let kept: Vec<Option<String>> = ledgers
            .by_namespace
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(kept, vec![Some("elsewhere".to_string())]);
    }
}
