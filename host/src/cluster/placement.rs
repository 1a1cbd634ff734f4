//! Placement hints: pure functions over a gossip [`View`]: which stations to assign as replicas
//! of a new object, which station is least loaded, where a stateless call runs. No I/O. Where a
//! stateful object lives is the directory's (`cluster::directory`), not a function of the view.

use std::hash::{Hash, Hasher};

use super::membership::{CodeClaim, Member, View};

/// Rendezvous (highest-random-weight) score of a station for an object: stable, and moving one
/// station in or out changes the replicas of only the objects that station scored high for.
pub fn rendezvous(station: &str, object: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (station, object).hash(&mut hasher);
    hasher.finish()
}

/// The `count` live stations other than `home` that replicate `object`, best first.
pub fn replicas_of(view: &View, object: &str, home: &str, count: usize) -> Vec<String> {
    let mut candidates: Vec<&Member> = view.live().filter(|m| m.id != home).collect();
    candidates.sort_by_key(|m| std::cmp::Reverse(rendezvous(&m.id, object)));
    candidates
        .into_iter()
        .take(count)
        .map(|m| m.id.clone())
        .collect()
}

/// The live, ready station with the lowest load score (ties: the smallest id).
pub fn least_loaded(view: &View) -> Option<&Member> {
    view.live().filter(|m| m.ready).min_by(|a, b| {
        a.load
            .score()
            .partial_cmp(&b.load.score())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    })
}

/// The newest claim on a stateless object's code among live stations (see
/// [`CodeClaim::precedence`]), with a station making it.
pub fn newest_code<'v>(view: &'v View, object: &str) -> Option<(&'v Member, &'v CodeClaim)> {
    view.live()
        .filter_map(|m| m.code.get(object).map(|c| (m, c)))
        .max_by(|(a, ca), (b, cb)| {
            ca.precedence()
                .cmp(&cb.precedence())
                .then_with(|| b.id.cmp(&a.id))
        })
}

/// The live, ready stations that hold this sha256 of a stateless object's code.
pub fn code_holders<'v>(view: &'v View, object: &str, sha256: &str) -> Vec<&'v Member> {
    view.live()
        .filter(|m| m.ready)
        .filter(|m| {
            m.code
                .get(object)
                .is_some_and(|c| c.sha256.as_deref() == Some(sha256))
        })
        .collect()
}

/// How much lower another station's load score must be before a stateless call is sent there
/// instead of running here: one call in flight (score 10) plus noise, so calls do not bounce
/// between equally loaded stations.
pub const STATELESS_FORWARD_MARGIN: f64 = 15.0;

/// Where a call to a stateless object should run, from station `here`: the least-loaded station
/// holding the newest code, unless `here` holds it and is within [`STATELESS_FORWARD_MARGIN`] of
/// that station. `None` if no live station holds the newest code.
pub fn stateless_target<'v>(view: &'v View, object: &str, here: &str) -> Option<&'v Member> {
    let (_, newest) = newest_code(view, object)?;
    let sha = newest.sha256.as_deref()?;
    let holders = code_holders(view, object, sha);
    let best = holders.iter().copied().min_by(|a, b| {
        a.load
            .score()
            .total_cmp(&b.load.score())
            .then_with(|| a.id.cmp(&b.id))
    })?;
    match holders.iter().find(|m| m.id == here) {
        Some(me) if me.load.score() - best.load.score() < STATELESS_FORWARD_MARGIN => Some(me),
        _ => Some(best),
    }
}

/// Every stateless object whose newest code a live station holds: the newest claim and the
/// stations holding it, sorted.
pub fn stateless_objects(
    view: &View,
) -> std::collections::BTreeMap<String, (CodeClaim, Vec<String>)> {
    let mut objects = std::collections::BTreeMap::new();
    let ids: std::collections::BTreeSet<&String> =
        view.live().flat_map(|m| m.code.keys()).collect();
    for id in ids {
        if let Some((_, newest)) = newest_code(view, id)
            && let Some(sha) = newest.sha256.as_deref()
        {
            let stations = code_holders(view, id, sha)
                .into_iter()
                .map(|m| m.id.clone())
                .collect();
            objects.insert(id.clone(), (newest.clone(), stations));
        }
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::load::Load;
    use crate::cluster::membership::MemberState;

    fn member(id: &str, state: MemberState, _objects: &[(&str, u64)], in_flight: u64) -> Member {
        Member {
            id: id.into(),
            address: format!("http://{id}"),
            state,
            load: Load {
                cpu: 1.0,
                memory: 1.0,
                in_flight,
            },
            ready: true,
            code: Default::default(),
            generation: 1,
        }
    }

    fn with_code(mut m: Member, object: &str, version: u32, sha: Option<&str>) -> Member {
        m.code.insert(
            object.into(),
            CodeClaim {
                version,
                sha256: sha.map(str::to_string),
            },
        );
        m
    }

    #[test]
    fn stateless_calls_stay_local_unless_a_holder_is_clearly_less_loaded() {
        let view = View {
            members: vec![
                with_code(member("a", MemberState::Alive, &[], 1), "s", 2, Some("x")),
                with_code(member("b", MemberState::Alive, &[], 0), "s", 2, Some("x")),
                with_code(member("c", MemberState::Alive, &[], 0), "s", 1, Some("old")),
            ],
        };
        assert_eq!(stateless_target(&view, "s", "a").unwrap().id, "a");
        // c holds an older version: calls there go to a holder of the newest.
        assert_eq!(stateless_target(&view, "s", "c").unwrap().id, "b");
        let busy = View {
            members: vec![
                with_code(member("a", MemberState::Alive, &[], 4), "s", 2, Some("x")),
                with_code(member("b", MemberState::Alive, &[], 0), "s", 2, Some("x")),
            ],
        };
        assert_eq!(stateless_target(&busy, "s", "a").unwrap().id, "b");
        assert_eq!(stateless_objects(&busy)["s"].1, vec!["a", "b"]);
    }

    #[test]
    fn an_undeploy_of_the_newest_version_removes_a_stateless_object() {
        let view = View {
            members: vec![
                with_code(member("a", MemberState::Alive, &[], 0), "s", 2, None),
                with_code(member("b", MemberState::Alive, &[], 0), "s", 2, Some("x")),
            ],
        };
        assert_eq!(newest_code(&view, "s").unwrap().1.sha256, None);
        assert!(stateless_target(&view, "s", "b").is_none());
        assert!(stateless_objects(&view).is_empty());
    }

    #[test]
    fn replicas_exclude_the_home_and_the_dead_and_are_stable() {
        let view = View {
            members: vec![
                member("a", MemberState::Alive, &[], 0),
                member("b", MemberState::Alive, &[], 0),
                member("c", MemberState::Alive, &[], 0),
                member("d", MemberState::Dead, &[], 0),
            ],
        };
        let replicas = replicas_of(&view, "x", "a", 2);
        assert_eq!(replicas.len(), 2);
        assert!(!replicas.contains(&"a".to_string()) && !replicas.contains(&"d".to_string()));
        assert_eq!(replicas, replicas_of(&view, "x", "a", 2));
        assert_eq!(
            replicas_of(&view, "x", "a", 5).len(),
            2,
            "capped by cluster size"
        );
    }

    #[test]
    fn least_loaded_prefers_fewer_calls_in_flight() {
        let view = View {
            members: vec![
                member("a", MemberState::Alive, &[], 5),
                member("b", MemberState::Alive, &[], 0),
            ],
        };
        assert_eq!(least_loaded(&view).unwrap().id, "b");
    }
}
