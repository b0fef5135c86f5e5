//! Slot groups: how the `redis` store spreads its keys over a Redis Cluster
//! while every script still touches one slot only.
//!
//! A script may only touch keys of one hash slot in a cluster. A client's
//! keys must therefore share a slot with the keys its scripts also touch
//! (the `active` index, the figures, its channels' member sets, the shared
//! payloads). So the keys are grouped: each client belongs to one **slot
//! group** (by a CRC16 of its id), and every key of a group carries the
//! group's hash tag: `<prefix>{<tag>}c:<id>`, `<prefix>{<tag>}active`, ...
//! A channel has one member set per group holding its members of that group,
//! and a channel message is stored once per group that has members.
//!
//! With one server there is one group whose base is the bare prefix (no
//! tag): one script per batch, as before. With a cluster there are
//! [`CLUSTER_GROUPS`] groups, whose tags are chosen so that group `n` lies in
//! the `n`-th sixteenth of the slot space: `redis-cli --cluster create`
//! hands out contiguous slot ranges, so the groups spread evenly over up to
//! 16 masters. The count is fixed (every node must agree, and changing it
//! would move clients to other groups).

/// Slot groups in a Redis Cluster.
pub const CLUSTER_GROUPS: usize = 16;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a hash tag's content.
pub fn slot(tag: &str) -> usize {
    usize::from(crc16(tag.as_bytes())) % SLOTS
}

/// The groups' key bases, each ending where a key's own name starts.
#[derive(Clone, Debug)]
pub struct Groups(Vec<String>);

impl Groups {
    /// One server: one group, keys as `<prefix><name>`.
    pub fn single(prefix: &str) -> Self {
        Groups(vec![prefix.to_owned()])
    }

    /// A cluster: [`CLUSTER_GROUPS`] groups, keys as `<prefix>{<tag>}<name>`.
    pub fn cluster(prefix: &str) -> Self {
        let width = SLOTS / CLUSTER_GROUPS;
        let bases = (0..CLUSTER_GROUPS)
            .map(|n| {
                // The first `g<n>.<k>` whose slot is in the group's range
                // (a few tries: one range is a sixteenth of the slots).
                let tag = (0u32..)
                    .map(|k| format!("g{n}.{k}"))
                    .find(|t| slot(t) / width == n)
                    .expect("some tag hashes into every range");
                format!("{prefix}{{{tag}}}")
            })
            .collect();
        Groups(bases)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: there is at least one group.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The group of client `id`.
    pub fn of(&self, id: &str) -> usize {
        if self.0.len() == 1 {
            return 0;
        }
        slot(id) * self.0.len() / SLOTS
    }

    /// Group `g`'s key base (`KEYS[1]` of its scripts).
    pub fn base(&self, g: usize) -> &str {
        &self.0[g]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_redis_clusters() {
        // The check value of CRC16/XMODEM, and slots Redis documents
        // (`CLUSTER KEYSLOT foo` = 12182, `bar` = 5061).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
    }

    #[test]
    fn cluster_groups_cover_the_slot_space_in_order() {
        let g = Groups::cluster("cb:");
        assert_eq!(g.len(), CLUSTER_GROUPS);
        for n in 0..CLUSTER_GROUPS {
            let base = g.base(n);
            let tag = &base[base.find('{').unwrap() + 1..base.len() - 1];
            assert!(base.starts_with("cb:{") && base.ends_with('}'), "{base}");
            assert_eq!(slot(tag) * CLUSTER_GROUPS / SLOTS, n, "{base}");
        }
        // Clients spread over every group.
        let mut seen = [0usize; CLUSTER_GROUPS];
        for i in 0..10_000 {
            seen[g.of(&format!("client-{i}"))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 400), "{seen:?}");
        assert_eq!(Groups::single("cb:").of("anyone"), 0);
        assert_eq!(Groups::single("cb:").base(0), "cb:");
    }
}
