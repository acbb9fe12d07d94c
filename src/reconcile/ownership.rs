//! The ownership rule (pure): which AWS resources belong to which object of which cluster, what
//! adopting a resource requires, and when an orphan may be removed.
//!
//! A resource belongs to object O of cluster C iff its tags carry
//! `bedrock.privatelink.io/cluster=C` and `bedrock.privatelink.io/owner-uid=<O's uid>`.
//! Resources made before the cluster tag existed (owner-uid but no cluster tag) belong to the
//! object with that uid (uids are unique, so at most one cluster has it) and get the cluster
//! tag at its next reconcile (migration). Two clusters never both consider a resource theirs:
//! a cluster tag names exactly one cluster, and without one only the cluster holding the uid's
//! object claims it. Taking a resource from another owner rewrites both tags in one CreateTags
//! call, so ownership moves atomically.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::aws::{TAG_CLUSTER, TAG_DELETION_POLICY, TAG_NAME, TAG_NAMESPACE, TAG_OWNER_UID};

/// Who holds a resource, as seen by object `uid` of cluster `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No owner tag: made by hand, by Terraform, or by anything but this operator.
    Nobody,
    /// This object (cluster tag ours, or none yet: made before the cluster tag).
    This,
    /// Another object: of this cluster (`cluster` Some(ours)), of a cluster from before the
    /// cluster tag (`cluster` None), or of another cluster.
    Other(OtherOwner),
}

/// The owner a resource's tags name, when it is not the object asking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtherOwner {
    pub uid: String,
    pub cluster: Option<String>,
    pub namespace: String,
    pub name: String,
}

impl OtherOwner {
    pub fn of(tags: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            uid: tags.get(TAG_OWNER_UID)?.clone(),
            cluster: tags.get(TAG_CLUSTER).cloned(),
            namespace: tags.get(TAG_NAMESPACE).cloned().unwrap_or_default(),
            name: tags.get(TAG_NAME).cloned().unwrap_or_default(),
        })
    }

    /// Whether the owner may be an object of `cluster` (its tag says so, or it has none).
    pub fn may_be_in(&self, cluster: &str) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == cluster)
    }

    pub fn describe(&self) -> String {
        let cluster = match &self.cluster {
            Some(c) => format!("cluster {c}"),
            None => "a cluster that did not tag it".to_string(),
        };
        format!(
            "object {}/{} (uid {}) of {cluster}",
            self.namespace, self.name, self.uid
        )
    }
}

pub fn holder(tags: &BTreeMap<String, String>, cluster: &str, uid: &str) -> Holder {
    let Some(other) = OtherOwner::of(tags) else {
        return Holder::Nobody;
    };
    if other.uid == uid && other.may_be_in(cluster) {
        Holder::This
    } else {
        Holder::Other(other)
    }
}

/// The rule: does this resource belong to object `uid` of `cluster`?
/// (Allocates nothing: it runs for every endpoint of a VPC's shared answer.)
pub fn is_ours(tags: &BTreeMap<String, String>, cluster: &str, uid: &str) -> bool {
    tags.get(TAG_OWNER_UID).is_some_and(|u| u == uid)
        && tags.get(TAG_CLUSTER).is_none_or(|c| c == cluster)
}

/// Made before the cluster tag: ours, and to be tagged with the cluster (the desired tags
/// carry it, so the next tag plan adds it).
pub fn needs_migration(tags: &BTreeMap<String, String>) -> bool {
    tags.contains_key(TAG_OWNER_UID) && !tags.contains_key(TAG_CLUSTER)
}

/// Why a resource named in spec.adopt cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

pub const OWNED_BY_ANOTHER_CLUSTER: &str = "OwnedByAnotherCluster";
pub const OWNED_BY_ANOTHER_OBJECT: &str = "OwnedByAnotherObject";
pub const HANDED_OVER: &str = "HandedOver";

/// May object `uid` of `cluster` take a resource held by `holder`? `owner_exists`: whether the
/// other owner's object exists in this cluster (only asked for owners that may be in it).
/// Nobody's: yes. Another object of this cluster that exists: never. Another cluster's, or an
/// object that no longer exists: only with takeOver.
pub fn may_adopt(
    resource: &str,
    holder: &Holder,
    cluster: &str,
    owner_exists: bool,
    take_over: bool,
) -> Result<(), Refusal> {
    let other = match holder {
        Holder::Nobody | Holder::This => return Ok(()),
        Holder::Other(o) => o,
    };
    let in_this_cluster = other.may_be_in(cluster);
    if in_this_cluster && owner_exists {
        return Err(Refusal {
            reason: OWNED_BY_ANOTHER_OBJECT,
            message: format!(
                "{resource} belongs to {}, which exists: an object's resources are never taken \
                 by another; delete that object with deletionPolicy Retain first",
                other.describe()
            ),
        });
    }
    if take_over {
        return Ok(());
    }
    let (reason, why) = if other.cluster.as_deref().is_some_and(|c| c != cluster) {
        (OWNED_BY_ANOTHER_CLUSTER, "another cluster's")
    } else if other.cluster.is_none() {
        (
            OWNED_BY_ANOTHER_CLUSTER,
            "tagged by an operator without a cluster identity, and no object here has that uid",
        )
    } else {
        (OWNED_BY_ANOTHER_OBJECT, "its owner no longer exists")
    };
    Err(Refusal {
        reason,
        message: format!(
            "{resource} belongs to {} ({why}); set spec.adopt.takeOver: true to take it over \
             (the previous owner then lets go of it)",
            other.describe()
        ),
    })
}

/// One owner's resources in this cluster's tags, as one orphan sweep saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrphanVerdict {
    /// The owner exists (or we could not tell): not an orphan; forget any first sighting.
    NotOrphan,
    /// An orphan seen first at this time, within the grace period: look again next sweep.
    Waiting(Instant),
    /// An orphan for longer than the grace period: remove its resources (Retain ones excepted).
    Remove,
}

/// `exists`: Some(true/false) from a direct API read of the owner, None if that read failed
/// (then nothing changes: a sighting is kept, none is started).
pub fn orphan_verdict(
    exists: Option<bool>,
    first_seen: Option<Instant>,
    now: Instant,
    grace: Duration,
) -> OrphanVerdict {
    match (exists, first_seen) {
        (Some(true), _) => OrphanVerdict::NotOrphan,
        (None, Some(at)) => OrphanVerdict::Waiting(at),
        (None, None) => OrphanVerdict::NotOrphan,
        (Some(false), None) if grace.is_zero() => OrphanVerdict::Remove,
        (Some(false), None) => OrphanVerdict::Waiting(now),
        (Some(false), Some(at)) if now.saturating_duration_since(at) >= grace => {
            OrphanVerdict::Remove
        }
        (Some(false), Some(at)) => OrphanVerdict::Waiting(at),
    }
}

/// Whether a resource's tags ask to keep it when its owner goes (deletionPolicy Retain).
pub fn retained(tags: &BTreeMap<String, String>) -> bool {
    tags.get(TAG_DELETION_POLICY).map(String::as_str) == Some("Retain")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_rule_needs_both_the_cluster_and_the_uid() {
        let ours = tags(&[(TAG_CLUSTER, "blue"), (TAG_OWNER_UID, "u1")]);
        let table: [(&BTreeMap<String, String>, &str, &str, bool); 5] = [
            (&ours, "blue", "u1", true),
            (&ours, "green", "u1", false),
            (&ours, "blue", "u2", false),
            (&tags(&[]), "blue", "u1", false),
            (&tags(&[("Name", "by-hand")]), "blue", "u1", false),
        ];
        for (t, cluster, uid, expected) in table {
            assert_eq!(is_ours(t, cluster, uid), expected, "{t:?} {cluster} {uid}");
            let this = holder(t, cluster, uid) == Holder::This;
            assert_eq!(this, expected, "holder agrees: {t:?} {cluster} {uid}");
        }
    }

    #[test]
    fn two_clusters_never_both_claim_a_resource() {
        let cases = [
            tags(&[(TAG_CLUSTER, "blue"), (TAG_OWNER_UID, "u1")]),
            tags(&[(TAG_OWNER_UID, "u1")]),
            tags(&[]),
        ];
        for t in &cases {
            // Same uid in both clusters is the worst case (uids are random in practice).
            let claims = ["blue", "green"]
                .iter()
                .filter(|c| is_ours(t, c, "u1"))
                .count();
            assert!(
                claims <= 1 || !t.contains_key(TAG_CLUSTER),
                "{t:?} claimed {claims} times"
            );
        }
        // Without a cluster tag only the uid decides: each cluster claims only its own uid.
        let legacy = tags(&[(TAG_OWNER_UID, "u1")]);
        assert!(is_ours(&legacy, "blue", "u1"));
        assert!(!is_ours(&legacy, "green", "u2"));
    }

    #[test]
    fn resources_from_before_the_cluster_tag_are_ours_and_migrated() {
        let legacy = tags(&[(TAG_OWNER_UID, "u1"), (TAG_NAMESPACE, "team")]);
        assert_eq!(holder(&legacy, "blue", "u1"), Holder::This);
        assert!(needs_migration(&legacy));
        let migrated = tags(&[(TAG_OWNER_UID, "u1"), (TAG_CLUSTER, "blue")]);
        assert!(!needs_migration(&migrated));
        assert!(!needs_migration(&tags(&[])), "nobody's is not ours to tag");
    }

    #[test]
    fn adoption_table() {
        let other_cluster = holder(
            &tags(&[(TAG_CLUSTER, "green"), (TAG_OWNER_UID, "u9")]),
            "blue",
            "u1",
        );
        let same_cluster = holder(
            &tags(&[(TAG_CLUSTER, "blue"), (TAG_OWNER_UID, "u9")]),
            "blue",
            "u1",
        );
        let untagged_cluster = holder(&tags(&[(TAG_OWNER_UID, "u9")]), "blue", "u1");
        let r = |h: &Holder, exists, take| may_adopt("vpce-1", h, "blue", exists, take);
        assert_eq!(r(&Holder::Nobody, false, false), Ok(()));
        assert_eq!(r(&Holder::This, false, false), Ok(()));
        // Another cluster's: only with takeOver (its existence there is not ours to know).
        assert_eq!(
            r(&other_cluster, false, false).unwrap_err().reason,
            OWNED_BY_ANOTHER_CLUSTER
        );
        assert_eq!(r(&other_cluster, false, true), Ok(()));
        assert_eq!(r(&other_cluster, true, true), Ok(()), "not asked for");
        // Another object here: never while it exists, with takeOver once it is gone.
        assert_eq!(
            r(&same_cluster, true, true).unwrap_err().reason,
            OWNED_BY_ANOTHER_OBJECT
        );
        assert_eq!(
            r(&same_cluster, false, false).unwrap_err().reason,
            OWNED_BY_ANOTHER_OBJECT
        );
        assert_eq!(r(&same_cluster, false, true), Ok(()));
        // No cluster tag and no such object here: treated as another cluster's.
        assert_eq!(
            r(&untagged_cluster, false, false).unwrap_err().reason,
            OWNED_BY_ANOTHER_CLUSTER
        );
        assert_eq!(
            r(&untagged_cluster, true, true).unwrap_err().reason,
            OWNED_BY_ANOTHER_OBJECT
        );
        let msg = r(&other_cluster, false, false).unwrap_err().message;
        assert!(msg.contains("takeOver") && msg.contains("green"), "{msg}");
    }

    #[test]
    fn orphans_are_removed_only_after_the_grace_period() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let later = t0 + Duration::from_secs(61);
        let soon = t0 + Duration::from_secs(10);
        use OrphanVerdict::*;
        let table = [
            (Some(true), None, t0, NotOrphan),
            (Some(true), Some(t0), later, NotOrphan),
            (Some(false), None, t0, Waiting(t0)),
            (Some(false), Some(t0), soon, Waiting(t0)),
            (Some(false), Some(t0), later, Remove),
            // The read failed: keep what we had, start nothing.
            (None, None, later, NotOrphan),
            (None, Some(t0), later, Waiting(t0)),
        ];
        for (exists, first, now, expected) in table {
            assert_eq!(
                orphan_verdict(exists, first, now, grace),
                expected,
                "{exists:?} {first:?}"
            );
        }
        assert_eq!(
            orphan_verdict(Some(false), None, t0, Duration::ZERO),
            Remove
        );
        assert!(retained(&tags(&[(TAG_DELETION_POLICY, "Retain")])));
        assert!(!retained(&tags(&[(TAG_DELETION_POLICY, "Delete")])));
        assert!(!retained(&tags(&[])));
    }
}
