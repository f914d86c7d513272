//! The on-disk half of the replicated state: what `apply` keeps out of memory.
//!
//! [`ClusterState`](crate::state::ClusterState) holds in memory only what decisions need (the
//! live tasks, the node, budget and rate maps). Finished task records, idempotency keys, the
//! retention index, applied spend ids and the live records' durable copies are written through
//! [`Disk`] by `apply` itself, in the same deterministic step, so every replica holds the same
//! bytes. The store implements [`Disk`] over a sled tree (one atomic batch per Raft entry);
//! [`MemDisk`] is the in-memory implementation for `apply`'s unit tests.
//!
//! Keys ([`key`]): `l/<id>` a live task's record, `t/<id>` a finished task's record,
//! `k/<idempotency key>` → task id, `f/<finished_at BE><id>` the retention index (oldest
//! finished first), `s/<spend id>` → applied time, `S/<time BE><spend id>` the spend ids' expiry
//! index. Values are [`openclaw_proto::codec`] envelopes (ids and keys are raw bytes).

use std::collections::BTreeMap;

/// Reading the on-disk state. Implementations must not fail: a store whose disk fails records
/// the error and turns it into a storage error after the batch.
pub trait DiskRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Up to `max` entries with keys in `[from, to)`, ascending.
    fn range(&self, from: &[u8], to: &[u8], max: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// The key-value store `apply` writes through. Reads see the writes made earlier in the same
/// batch.
pub trait Disk: DiskRead {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn del(&mut self, key: &[u8]);
}

/// [`Disk`] in memory: a sorted map (tests, and comparing replicas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDisk(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl DiskRead for MemDisk {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn range(&self, from: &[u8], to: &[u8], max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0
            .range(from.to_vec()..to.to_vec())
            .take(max)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Disk for MemDisk {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, value);
    }
    fn del(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}

/// A batch of writes over a read-only base: reads see the batch first. The store applies the
/// batch's writes to sled in one atomic batch after each entry.
pub struct Overlay<'a> {
    pub base: &'a dyn DiskRead,
    /// `None` is a delete.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn DiskRead) -> Overlay<'a> {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }
}

impl DiskRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.base.get(key),
        }
    }
    fn range(&self, from: &[u8], to: &[u8], max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        // Ask the base for enough to still fill `max` after the batch's deletes.
        let deletes = self
            .writes
            .range(from.to_vec()..to.to_vec())
            .filter(|(_, v)| v.is_none())
            .count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .range(from, to, max.saturating_add(deletes))
            .into_iter()
            .collect();
        for (k, v) in self.writes.range(from.to_vec()..to.to_vec()) {
            match v {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        merged.into_iter().take(max).collect()
    }
}

impl Disk for Overlay<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    fn del(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}

/// Key builders (see the module doc).
pub mod key {
    pub const LIVE: &[u8] = b"l/";
    pub const TASK: &[u8] = b"t/";
    pub const IDEMPOTENCY: &[u8] = b"k/";
    pub const FINISHED: &[u8] = b"f/";
    pub const SPEND: &[u8] = b"s/";
    pub const SPEND_AT: &[u8] = b"S/";

    pub fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut k = prefix.to_vec();
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }
    pub fn live(id: &str) -> Vec<u8> {
        join(LIVE, &[id.as_bytes()])
    }
    pub fn task(id: &str) -> Vec<u8> {
        join(TASK, &[id.as_bytes()])
    }
    pub fn idempotency(k: &str) -> Vec<u8> {
        join(IDEMPOTENCY, &[k.as_bytes()])
    }
    pub fn finished(at_ms: u64, id: &str) -> Vec<u8> {
        join(FINISHED, &[&at_ms.to_be_bytes(), id.as_bytes()])
    }
    pub fn spend(id: &str) -> Vec<u8> {
        join(SPEND, &[id.as_bytes()])
    }
    pub fn spend_at(at_ms: u64, id: &str) -> Vec<u8> {
        join(SPEND_AT, &[&at_ms.to_be_bytes(), id.as_bytes()])
    }
    /// The first key after every key starting with `prefix`.
    pub fn end(prefix: &[u8]) -> Vec<u8> {
        let mut k = prefix.to_vec();
        if let Some(last) = k.last_mut() {
            *last += 1;
        }
        k
    }
    /// The id in a `f/<time><id>` or `S/<time><id>` key, and the time.
    pub fn split_timed(key: &[u8]) -> Option<(u64, String)> {
        let rest = key.get(2..)?;
        let at: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        let id = std::str::from_utf8(rest.get(8..)?).ok()?;
        Some((u64::from_be_bytes(at), id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlay reads its own writes first, and a range merges them with the base's, deletes
    /// included, still returning `max` entries when the base has enough.
    #[test]
    fn overlay_reads_its_batch_first() {
        let mut base = MemDisk::default();
        for k in ["a1", "a2", "a3", "a4", "b1"] {
            base.put(k.as_bytes().to_vec(), k.as_bytes().to_vec());
        }
        let mut o = Overlay::new(&base);
        o.del(b"a1");
        o.del(b"a2");
        o.put(b"a25".to_vec(), b"new".to_vec());
        assert_eq!(o.get(b"a1"), None);
        assert_eq!(o.get(b"a3").as_deref(), Some(&b"a3"[..]));
        let keys: Vec<Vec<u8>> = o.range(b"a", b"b", 2).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a25".to_vec(), b"a3".to_vec()]);
        let all = o.range(b"a", &key::end(b"a"), 10);
        assert_eq!(all.len(), 3);
        assert_eq!(key::end(b"f/"), b"f0".to_vec());
        let timed = key::finished(7, "x");
        assert_eq!(key::split_timed(&timed), Some((7, "x".to_string())));
    }
}
