//! Object id validation: the one check that keeps ids usable as directory names.

/// Why an object id was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid object id {id:?}: {reason}")]
pub struct IdError {
    /// The id as received (cut to 200 characters).
    pub id: String,
    /// What rule it broke.
    pub reason: &'static str,
}

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Checks `[a-z0-9][a-z0-9_.-]{0,127}` with no `..`.
pub fn validate_object_id(id: &str) -> Result<(), IdError> {
    let fail = |reason| {
        Err(IdError {
            id: id.chars().take(200).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return fail("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return fail("it is longer than 128 characters");
    }
    let first = id.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return fail("it must start with a lower-case letter or a digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return fail("only lower-case letters, digits, '_', '.' and '-' are allowed");
    }
    // (Not `str::contains`: its general substring search costs more than the whole check.)
    if id.as_bytes().windows(2).any(|pair| pair == b"..") {
        return fail("it must not contain '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["counter", "a", "0", "my-object.v2", "a_b", &"x".repeat(128)] {
            assert!(validate_object_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_ids() {
        for id in [
            "",
            "..",
            "../x",
            "a/b",
            "a..b",
            ".hidden",
            "-x",
            "Upper",
            "a b",
            "é",
            &"x".repeat(129),
            "a\0b",
            "%2e%2e",
        ] {
            assert!(validate_object_id(id).is_err(), "{id:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever the input, an accepted id is one plain directory name under the data dir.
        #[test]
        fn an_accepted_id_is_one_safe_path_component(id in "\\PC{0,140}|[a-z0-9._/%-]{0,140}") {
            if validate_object_id(&id).is_ok() {
                let joined = std::path::Path::new("/data/objects").join(&id);
                proptest::prop_assert_eq!(joined.parent(), Some(std::path::Path::new("/data/objects")));
                proptest::prop_assert!(!id.contains(".."));
                proptest::prop_assert!(id.len() <= MAX_ID_LEN);
                proptest::prop_assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)));
            }
        }

        /// Every id the rule describes is accepted.
        #[test]
        fn every_id_of_the_rule_is_accepted(id in "[a-z0-9][a-z0-9_-]{0,127}") {
            proptest::prop_assert!(validate_object_id(&id).is_ok(), "{:?}", id);
        }
    }
}
