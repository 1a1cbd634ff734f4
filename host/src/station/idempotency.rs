//! Idempotency keys: a call carrying an `Idempotency-Key` header runs once; every retry with the
//! same key gets the first answer back, marked `idempotent-replayed: true`.
//!
//! The answer is kept in the object's own state, under keys the host reserves
//! ([`RESERVED_PREFIX`]: objects can neither read nor write them, and the admin views hide them),
//! and is written in the same batch as the call's writes. So the answer is durable exactly when
//! the writes are, and it travels with the state: replication, migration and failover carry it
//! with nothing of their own. A record is kept for the station's TTL (24 h by default): each call
//! that stores a record also removes a few expired ones, oldest first, through a time-ordered
//! index in the same reserved namespace.
//!
//! A record also holds a fingerprint of the request (method, path, query, body): the same key
//! on a different request is refused (`422 idempotency_mismatch`) instead of replaying an
//! answer to a question that was not asked. Answers with a status of 500 or more are not kept:
//! the object failed, nothing was committed, and a retry runs again.
//!
//! The lookup and the store both happen inside the object's turn, so a retry that arrives while
//! the first call is still running waits for its turn and then finds the answer.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::{ObjectRequest, ObjectResponse};
use crate::store::{ObjectState, Write};

/// The request header that carries the key (lower case, as object requests carry them).
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Prefix of the state keys the host keeps inside an object's state for itself (the runtime
/// refuses an object's writes to them).
pub use crate::runtime::RESERVED_PREFIX;
/// Record of one key: `RECORD_PREFIX + key` → the JSON of [`Stored`].
const RECORD_PREFIX: &str = "\u{0}op/idem/k/";
/// Expiry index: `EXPIRY_PREFIX + at_ms (20 digits) + "/" + key` → empty.
const EXPIRY_PREFIX: &str = "\u{0}op/idem/t/";
/// Expired records one call removes at most (so a call's batch stays small; a busy object
/// removes them as fast as it adds them).
const PURGE_PER_CALL: usize = 16;

/// Whether `key` belongs to the host, not to the object.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty, too long, or with characters outside visible ASCII.
    #[error(
        "the Idempotency-Key header must be 1 to {MAX_KEY_BYTES} visible ASCII characters (got {0} bytes)"
    )]
    Invalid(usize),
    /// The header appears more than once.
    #[error("the Idempotency-Key header appears more than once")]
    Repeated,
}

/// The idempotency key of a request, if it has one.
pub fn key_of(request: &ObjectRequest) -> Result<Option<String>, KeyError> {
    let mut values = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(HEADER))
        .map(|(_, value)| value);
    let Some(key) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        return Err(KeyError::Invalid(key.len()));
    }
    Ok(Some(key.clone()))
}

/// The fingerprint a key's record is checked against: sha256 over the method, path, query and
/// body (each length-prefixed, so no two requests share one by shifting bytes between fields).
pub fn fingerprint(request: &ObjectRequest) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(request.method.as_bytes());
    field(request.path.as_bytes());
    field(&(request.query.len() as u64).to_be_bytes());
    for (name, value) in &request.query {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(&request.body);
    hex::encode(hash.finalize())
}

/// One kept answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// [`fingerprint`] of the request that produced it.
    fingerprint: String,
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, base64.
    body: String,
    /// When it was stored (station wall clock, ms since the epoch).
    at_ms: u64,
}

/// What the record of a key says about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// No live record: run the call.
    Fresh,
    /// The request ran already: this was its answer (with [`REPLAYED_HEADER`] set).
    Replay(ObjectResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// Looks `key` up in `state` for a request with this `fingerprint`. A record older than
/// `ttl_ms` counts as absent.
pub fn lookup(
    state: &ObjectState,
    key: &str,
    fingerprint: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Lookup {
    let Some(stored) = read(state, key) else {
        return Lookup::Fresh;
    };
    if now_ms.saturating_sub(stored.at_ms) >= ttl_ms {
        return Lookup::Fresh;
    }
    if stored.fingerprint != fingerprint {
        return Lookup::Mismatch;
    }
    let Ok(body) = base64::engine::general_purpose::STANDARD.decode(&stored.body) else {
        // Written by this module only; a record it cannot read is treated as absent.
        return Lookup::Fresh;
    };
    let mut headers = stored.headers;
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case(REPLAYED_HEADER));
    headers.push((REPLAYED_HEADER.into(), "true".into()));
    Lookup::Replay(ObjectResponse {
        status: stored.status,
        headers,
        body,
    })
}

/// The writes that keep `response` as the answer to `key`, and remove up to
/// [`PURGE_PER_CALL`] records expired by `now_ms` (all to commit in the call's batch).
/// Nothing for an answer of 500 or more.
pub fn record_writes(
    state: &ObjectState,
    key: &str,
    fingerprint: &str,
    response: &ObjectResponse,
    now_ms: u64,
    ttl_ms: u64,
) -> Vec<Write> {
    if response.status >= 500 {
        return Vec::new();
    }
    let mut writes = Vec::new();
    // An expired record of the same key is replaced: its index entry goes.
    let replaced = read(state, key).map(|previous| expiry_key(previous.at_ms, key));
    if let Some(entry) = &replaced {
        writes.push(Write::Delete { key: entry.clone() });
    }
    let cutoff = now_ms.saturating_sub(ttl_ms);
    for entry in state.first_keys(EXPIRY_PREFIX, PURGE_PER_CALL) {
        let Some((at_ms, expired)) = parse_expiry_key(&entry) else {
            continue;
        };
        if at_ms > cutoff {
            break;
        }
        if replaced.as_ref() == Some(&entry) {
            continue;
        }
        if expired != key {
            writes.push(Write::Delete {
                key: format!("{RECORD_PREFIX}{expired}"),
            });
        }
        writes.push(Write::Delete { key: entry });
    }
    let stored = Stored {
        fingerprint: fingerprint.to_string(),
        status: response.status,
        headers: response.headers.clone(),
        body: base64::engine::general_purpose::STANDARD.encode(&response.body),
        at_ms: now_ms,
    };
    writes.push(Write::Set {
        key: format!("{RECORD_PREFIX}{key}"),
        value: serde_json::to_string(&stored).expect("a record serializes"),
    });
    writes.push(Write::Set {
        key: expiry_key(now_ms, key),
        value: String::new(),
    });
    writes
}

fn read(state: &ObjectState, key: &str) -> Option<Stored> {
    let text = state.get(&format!("{RECORD_PREFIX}{key}"))?;
    serde_json::from_str(&text).ok()
}

fn expiry_key(at_ms: u64, key: &str) -> String {
    format!("{EXPIRY_PREFIX}{at_ms:020}/{key}")
}

fn parse_expiry_key(entry: &str) -> Option<(u64, &str)> {
    let rest = entry.strip_prefix(EXPIRY_PREFIX)?;
    let (at_ms, key) = rest.split_once('/')?;
    Some((at_ms.parse().ok()?, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, StoreConfig};

    const TTL: u64 = 1_000;

    fn request(body: &str) -> ObjectRequest {
        ObjectRequest {
            method: "POST".into(),
            path: "/".into(),
            query: vec![("a".into(), "1".into())],
            headers: vec![(HEADER.into(), "k1".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn response(status: u16, body: &str) -> ObjectResponse {
        ObjectResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// An object's state, with its store (which must outlive it).
    fn state(dir: &std::path::Path) -> (Store, ObjectState) {
        let config = StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(dir.join("data"))
        };
        let store = Store::open(config).unwrap();
        let state = store.state("obj").unwrap();
        (store, state)
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length_and_given_once() {
        let mut request = request("");
        assert_eq!(key_of(&request), Ok(Some("k1".into())));
        request.headers = vec![(HEADER.into(), "x".repeat(MAX_KEY_BYTES + 1))];
        assert!(matches!(key_of(&request), Err(KeyError::Invalid(_))));
        request.headers = vec![(HEADER.into(), "tab\there".into())];
        assert!(matches!(key_of(&request), Err(KeyError::Invalid(_))));
        request.headers = vec![(HEADER.into(), "a".into()), (HEADER.into(), "b".into())];
        assert_eq!(key_of(&request), Err(KeyError::Repeated));
        request.headers.clear();
        assert_eq!(key_of(&request), Ok(None));
    }

    #[test]
    fn fingerprints_differ_when_any_part_of_the_request_does() {
        let base = request("body");
        let mut other = base.clone();
        other.body = b"bod".to_vec();
        other.query = vec![("a".into(), "1y".into())];
        assert_ne!(fingerprint(&base), fingerprint(&other));
        let mut method = base.clone();
        method.method = "PUT".into();
        assert_ne!(fingerprint(&base), fingerprint(&method));
        // Headers (the key itself included) are not part of the request's meaning.
        let mut headers = base.clone();
        headers.headers.push(("x-other".into(), "1".into()));
        assert_eq!(fingerprint(&base), fingerprint(&headers));
    }

    #[test]
    fn a_stored_answer_is_replayed_to_the_same_request_and_refused_to_another() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, state) = state(dir.path());
        let fp = fingerprint(&request("one"));
        assert_eq!(lookup(&state, "k1", &fp, 10, TTL), Lookup::Fresh);
        let writes = record_writes(&state, "k1", &fp, &response(201, "{\"n\":1}"), 10, TTL);
        state.commit(writes).unwrap();
        match lookup(&state, "k1", &fp, 500, TTL) {
            Lookup::Replay(answer) => {
                assert_eq!(answer.status, 201);
                assert_eq!(answer.body, b"{\"n\":1}");
                assert!(
                    answer
                        .headers
                        .contains(&(REPLAYED_HEADER.into(), "true".into()))
                );
                assert!(
                    answer
                        .headers
                        .contains(&("content-type".into(), "application/json".into()))
                );
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        let other = fingerprint(&request("two"));
        assert_eq!(lookup(&state, "k1", &other, 500, TTL), Lookup::Mismatch);
        // Past the TTL the key is free again.
        assert_eq!(lookup(&state, "k1", &other, 10 + TTL, TTL), Lookup::Fresh);
    }

    #[test]
    fn failures_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, state) = state(dir.path());
        let fp = fingerprint(&request("one"));
        assert!(record_writes(&state, "k1", &fp, &response(503, "busy"), 10, TTL).is_empty());
        assert!(!record_writes(&state, "k1", &fp, &response(404, "no"), 10, TTL).is_empty());
    }

    #[test]
    fn expired_records_are_removed_oldest_first_by_later_calls() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, state) = state(dir.path());
        let fp = fingerprint(&request("x"));
        for (n, at) in [(1, 100), (2, 200), (3, 5_000)] {
            let key = format!("k{n}");
            state
                .commit(record_writes(
                    &state,
                    &key,
                    &fp,
                    &response(200, "ok"),
                    at,
                    TTL,
                ))
                .unwrap();
        }
        // At 1,250 ms the first two are past the TTL; the third is not.
        state
            .commit(record_writes(
                &state,
                "k4",
                &fp,
                &response(200, "ok"),
                1_250,
                TTL,
            ))
            .unwrap();
        let left: Vec<String> = state
            .keys(RECORD_PREFIX)
            .into_iter()
            .map(|k| k[RECORD_PREFIX.len()..].to_string())
            .collect();
        assert_eq!(left, ["k3", "k4"]);
        assert_eq!(
            state.keys(EXPIRY_PREFIX).len(),
            2,
            "{:?}",
            state.keys(EXPIRY_PREFIX)
        );
        // Replacing an expired record of the same key leaves one index entry for it.
        state
            .commit(record_writes(
                &state,
                "k3",
                &fp,
                &response(200, "again"),
                9_000,
                TTL,
            ))
            .unwrap();
        let entries = state.keys(EXPIRY_PREFIX);
        assert_eq!(
            entries.iter().filter(|e| e.ends_with("/k3")).count(),
            1,
            "{entries:?}"
        );
        assert!(state.keys("").iter().all(|k| is_reserved(k)));
    }
}
