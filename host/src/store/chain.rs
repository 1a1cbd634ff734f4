//! The hash chain over an object's batches: batch `n`'s chain hash is sha256 of batch `n-1`'s
//! chain hash and batch `n`'s content, so two copies with the same hash at a seq hold the same
//! history up to it.
//!
//! Every batch carries its predecessor's hash ([`super::Batch::prev`]) when it travels to a
//! replica; the replica applies it only if that equals its own hash at the previous seq, and
//! otherwise asks for a snapshot instead of keeping a different history under the same seqs
//! (a home that lost unsynced batches in a power loss and committed others in their place).
//! `state.tsv` keeps the hash in the key field of each batch's `commit` line (compaction keeps it
//! on the last one), so a copy knows its hash after a restart.

use sha2::{Digest, Sha256};

use super::state::Record;

/// Length of a chain hash in hex.
pub const HASH_HEX_LEN: usize = 64;

/// The chain hash of the batch at `seq` with `records`, following `prev` (`None`: a copy whose
/// earlier history has no hash, written before chains existed).
pub fn chain_hash(prev: Option<&str>, seq: u64, records: &[Record]) -> String {
    let mut h = Sha256::new();
    let prev = prev.unwrap_or("");
    h.update((prev.len() as u64).to_be_bytes());
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update((records.len() as u64).to_be_bytes());
    for r in records {
        h.update((r.key.len() as u64).to_be_bytes());
        h.update(r.key.as_bytes());
        match &r.value {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
        h.update(r.hlc.to_be_bytes());
    }
    hex::encode(h.finalize())
}

/// True if `field` is a chain hash as written in a commit line (lowercase hex of the right length).
pub fn is_hash(field: &[u8]) -> bool {
    field.len() == HASH_HEX_LEN && field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>, hlc: u64) -> Record {
        Record {
            key: key.into(),
            value: value.map(Into::into),
            hlc,
        }
    }

    #[test]
    fn the_hash_depends_on_every_part_and_on_the_history_before() {
        let base = chain_hash(None, 1, &[rec("a", Some("1"), 7)]);
        assert!(is_hash(base.as_bytes()));
        let variants = [
            chain_hash(Some(&base), 1, &[rec("a", Some("1"), 7)]),
            chain_hash(None, 2, &[rec("a", Some("1"), 7)]),
            chain_hash(None, 1, &[rec("b", Some("1"), 7)]),
            chain_hash(None, 1, &[rec("a", Some("2"), 7)]),
            chain_hash(None, 1, &[rec("a", None, 7)]),
            chain_hash(None, 1, &[rec("a", Some(""), 7)]),
            chain_hash(None, 1, &[rec("a", Some("1"), 8)]),
            chain_hash(None, 1, &[rec("a", Some("1"), 7), rec("a", Some("1"), 7)]),
            // Field boundaries are length-prefixed: moving a byte between key and value differs.
            chain_hash(None, 1, &[rec("a1", Some(""), 7)]),
        ];
        for v in &variants {
            assert_ne!(v, &base);
        }
        assert_eq!(base, chain_hash(None, 1, &[rec("a", Some("1"), 7)]));
    }
}
