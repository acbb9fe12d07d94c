//! Our ConfigMaps by owner uid, from the ConfigMap watch's store.
//!
//! Every reconcile asks where its object's ConfigMaps are (to remove copies from namespaces no
//! longer selected). Scanning the store for that is O(N) per reconcile, O(N²) per resync of N
//! objects; the index is rebuilt only after the watch brought a change, so a steady-state
//! resync reads it N times for one scan.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

/// (namespace, name) of each ConfigMap an object owns.
type Index = HashMap<String, Vec<(String, String)>>;

/// The index and the change count it was built at (None: never built).
type Built = Option<(u64, Arc<Index>)>;

/// The ConfigMap store and an owner index over it.
#[derive(Clone)]
pub struct ConfigMaps {
    store: Store<ConfigMap>,
    /// Bumped after each watch event is in the store (see `changed`).
    changes: Arc<AtomicU64>,
    built: Arc<Mutex<Built>>,
}

impl ConfigMaps {
    pub fn new(store: Store<ConfigMap>) -> Self {
        Self {
            store,
            changes: Arc::default(),
            built: Arc::default(),
        }
    }

    /// To be called after the store took in a watch event.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self, key: &ObjectRef<ConfigMap>) -> Option<Arc<ConfigMap>> {
        self.store.get(key)
    }

    pub fn store(&self) -> &Store<ConfigMap> {
        &self.store
    }

    /// (namespace, name) of the ConfigMaps labelled with owner `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<(String, String)> {
        self.index().get(uid).cloned().unwrap_or_default()
    }

    fn index(&self) -> Arc<Index> {
        // Read before the scan: a change during it bumps the count, and the next call rebuilds.
        let at = self.changes.load(Ordering::Acquire);
        let mut built = self.built.lock().expect("index lock");
        if let Some((n, index)) = built.as_ref()
            && *n == at
        {
            return index.clone();
        }
        let mut index = Index::new();
        for cm in self.store.state() {
            if let Some(uid) = cm.labels().get(super::OWNER_UID_LABEL) {
                index
                    .entry(uid.clone())
                    .or_default()
                    .push((cm.namespace().unwrap_or_default(), cm.name_any()));
            }
        }
        let index = Arc::new(index);
        *built = Some((at, index.clone()));
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn cm(ns: &str, name: &str, owner: Option<&str>) -> ConfigMap {
        let labels = owner.map(|u| [(super::super::OWNER_UID_LABEL.to_string(), u.to_string())]);
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: labels.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_index_follows_the_store_after_each_change() {
        let (store, mut writer) = reflector::store();
        let maps = ConfigMaps::new(store);
        writer.apply_watcher_event(&Event::Apply(cm("a", "x", Some("u1"))));
        writer.apply_watcher_event(&Event::Apply(cm("b", "x", Some("u1"))));
        writer.apply_watcher_event(&Event::Apply(cm("a", "y", Some("u2"))));
        writer.apply_watcher_event(&Event::Apply(cm("a", "z", None)));
        maps.changed();
        let mut u1 = maps.owned_by("u1");
        u1.sort();
        assert_eq!(u1, [("a".into(), "x".into()), ("b".into(), "x".into())]);
        assert_eq!(maps.owned_by("u2"), [("a".to_string(), "y".to_string())]);
        assert!(maps.owned_by("u3").is_empty());

        // Without a change the index is reused; after one it is rebuilt.
        writer.apply_watcher_event(&Event::Delete(cm("b", "x", Some("u1"))));
        assert_eq!(
            maps.owned_by("u1").len(),
            2,
            "not rebuilt before the change is counted"
        );
        maps.changed();
        assert_eq!(maps.owned_by("u1"), [("a".to_string(), "x".to_string())]);
    }
}
