//! The object's durable, versioned key/value state.
//!
//! Keys and values are strings. Writes made during one call are buffered by the
//! station and commit atomically when the handler returns a status below 500; a panic
//! (trap), a timeout or a status of 500 or more discards them all. Reads see the call's
//! own earlier writes.
//!
//! ```
//! use object_primitive::state;
//!
//! state::set("greeting", "hello");
//! assert_eq!(state::get("greeting").as_deref(), Some("hello"));
//! assert_eq!(state::increment("visits", 2), 2);
//! assert!(state::compare_and_swap("greeting", Some("hello"), Some("hi")));
//! assert_eq!(state::keys(""), ["greeting", "visits"]);
//! assert_eq!(state::history("greeting", 10)[0].value.as_deref(), Some("hi"));
//! assert!(state::delete("greeting"));
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys;

/// One past value of a state key, as returned by [`history`]. Serializes as
/// `{"seq":..,"at_ms":..,"value":..|null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The commit sequence number that wrote this value (per object, increasing).
    pub seq: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The value written, or `None` when the key was deleted.
    pub value: Option<String>,
}

/// The current value of `key`, if any.
pub fn get(key: &str) -> Option<String> {
    sys::state_get(key)
}

/// Sets `key` to `value`.
pub fn set(key: &str, value: &str) {
    sys::state_set(key, value)
}

/// Deletes `key`; `true` if it existed.
pub fn delete(key: &str) -> bool {
    sys::state_delete(key)
}

/// Every existing key that starts with `prefix`, sorted (`""` lists all keys).
pub fn keys(prefix: &str) -> Vec<String> {
    sys::state_keys(prefix)
}

/// Adds `delta` to the integer stored at `key` (absent counts as 0) and returns the new
/// value.
///
/// The station traps the call (nothing commits) if the current value is not a decimal
/// integer or the sum overflows an `i64`.
pub fn increment(key: &str, delta: i64) -> i64 {
    sys::state_increment(key, delta)
}

/// Replaces the value of `key` with `new` (`None` deletes it) only if it currently
/// equals `expected` (`None` = absent). `true` if the swap happened.
pub fn compare_and_swap(key: &str, expected: Option<&str>, new: Option<&str>) -> bool {
    sys::state_compare_and_swap(key, expected, new)
}

/// Up to `limit` committed versions of `key`, newest first. Deletes appear as versions
/// whose value is `None`. Writes of the current call are not committed yet, so they do
/// not appear.
pub fn history(key: &str, limit: u32) -> Vec<Version> {
    sys::state_history(key, limit)
}

/// The value of `key` parsed as JSON into `T`; `None` if the key is absent or its value
/// is not valid JSON for `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|v| serde_json::from_str(&v).ok())
}

/// Sets `key` to `value` serialized as JSON.
///
/// # Panics
/// If `value` cannot be serialized (for example a map with non-string keys); the panic
/// traps the call, so nothing it wrote commits.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) {
    let json = serde_json::to_string(value).expect("state value serializes to JSON");
    set(key, &json)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_keys() {
        crate::testing::reset();
        assert_eq!(get("a"), None);
        set("a", "1");
        set("ab", "2");
        set("b", "3");
        assert_eq!(get("a").as_deref(), Some("1"));
        assert_eq!(keys("a"), ["a", "ab"]);
        assert_eq!(keys(""), ["a", "ab", "b"]);
        assert!(keys("c").is_empty());
        assert!(delete("a"));
        assert!(!delete("a"));
        assert_eq!(keys(""), ["ab", "b"]);
    }

    #[test]
    fn increment_and_cas() {
        crate::testing::reset();
        assert_eq!(increment("n", 5), 5);
        assert_eq!(increment("n", -7), -2);
        assert!(!compare_and_swap("n", Some("5"), Some("0")));
        assert!(compare_and_swap("n", Some("-2"), None));
        assert_eq!(get("n"), None);
        assert!(compare_and_swap("n", None, Some("x")));
        assert!(!compare_and_swap("n", None, Some("y")));
        assert_eq!(get("n").as_deref(), Some("x"));
    }

    #[test]
    #[should_panic(expected = "not a decimal integer")]
    fn increment_of_text_panics() {
        crate::testing::reset();
        set("t", "abc");
        increment("t", 1);
    }

    #[test]
    fn history_newest_first_with_deletes() {
        crate::testing::reset();
        set("k", "v1");
        set("other", "x");
        set("k", "v2");
        delete("k");
        let h = history("k", 10);
        let values: Vec<_> = h.iter().map(|v| v.value.as_deref()).collect();
        assert_eq!(values, [None, Some("v2"), Some("v1")]);
        assert!(h[0].seq > h[1].seq && h[1].seq > h[2].seq);
        assert_eq!(history("k", 1).len(), 1);
        assert!(history("none", 5).is_empty());
        let json = serde_json::to_string(&h[0]).unwrap();
        assert!(json.ends_with(r#""value":null}"#), "{json}");
    }

    #[test]
    fn json_values() {
        crate::testing::reset();
        set_json("j", &vec![1, 2, 3]);
        assert_eq!(get("j").as_deref(), Some("[1,2,3]"));
        assert_eq!(get_json::<Vec<u8>>("j"), Some(vec![1, 2, 3]));
        assert_eq!(get_json::<String>("j"), None);
        assert_eq!(get_json::<i64>("missing"), None);
    }
}
