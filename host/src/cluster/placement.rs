//! Placement: pure functions over a [`View`] that say where an object lives, which stations
//! replicate it and which station is least loaded. No I/O; every station computes the same answers
//! from the same view.

use std::hash::{Hash, Hasher};

use super::membership::{Member, ObjectClaim, View};

/// Where an object is homed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Station id.
    pub station: String,
    /// Its HTTP base URL.
    pub address: String,
    /// The claim it gossips.
    pub claim: ObjectClaim,
}

/// Where `object` lives: the highest epoch among live stations' claims (ties: a station's own
/// claim before a forwarding claim pointing at it, then the smallest station id). A forwarding
/// claim (`moved_to`) names the station the object moved to, if that station is live.
pub fn home_of(view: &View, object: &str) -> Option<Home> {
    view.live()
        .filter_map(|m| {
            let claim = m.objects.get(object)?;
            let home = match &claim.moved_to {
                None => m,
                Some(target) => view.member(target).filter(|t| t.is_live())?,
            };
            Some((home, claim, claim.moved_to.is_none()))
        })
        .max_by(|(a, ca, direct_a), (b, cb, direct_b)| {
            ca.epoch
                .cmp(&cb.epoch)
                .then(direct_a.cmp(direct_b))
                .then_with(|| b.id.cmp(&a.id))
        })
        .map(|(m, claim, _)| Home {
            station: m.id.clone(),
            address: m.address.clone(),
            claim: ObjectClaim {
                moved_to: None,
                ..claim.clone()
            },
        })
}

/// A station the failure detector declared dead that claims `object` directly: its home is down
/// and a replica is about to take over.
pub fn claimed_by_dead(view: &View, object: &str) -> Option<String> {
    view.members
        .iter()
        .filter(|m| !m.is_live())
        .find(|m| m.objects.get(object).is_some_and(|c| c.moved_to.is_none()))
        .map(|m| m.id.clone())
}

/// Every object claimed by a live station, with its home.
pub fn all_objects(view: &View) -> std::collections::BTreeMap<String, Home> {
    let mut objects = std::collections::BTreeMap::new();
    for member in view.live() {
        for object in member.objects.keys() {
            if !objects.contains_key(object)
                && let Some(home) = home_of(view, object)
            {
                objects.insert(object.clone(), home);
            }
        }
    }
    objects
}

/// Rendezvous (highest-random-weight) score of a station for an object: stable, and moving one
/// station in or out changes the replicas of only the objects that station scored high for.
fn rendezvous(station: &str, object: &str) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::load::Load;
    use crate::cluster::membership::MemberState;

    fn member(id: &str, state: MemberState, objects: &[(&str, u64)], in_flight: u64) -> Member {
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
            objects: objects
                .iter()
                .map(|(o, e)| {
                    (
                        o.to_string(),
                        ObjectClaim {
                            epoch: *e,
                            version: 1,
                            sha256: "s".into(),
                            moved_to: None,
                        },
                    )
                })
                .collect(),
            generation: 1,
        }
    }

    #[test]
    fn the_highest_live_epoch_is_home() {
        let view = View {
            members: vec![
                member("a", MemberState::Alive, &[("x", 1)], 0),
                member("b", MemberState::Alive, &[("x", 2)], 0),
                member("c", MemberState::Dead, &[("x", 3)], 0),
            ],
        };
        assert_eq!(home_of(&view, "x").unwrap().station, "b");
        assert_eq!(home_of(&view, "y"), None);
    }

    #[test]
    fn a_forwarding_claim_points_at_the_new_home() {
        let mut old = member("a", MemberState::Alive, &[("x", 2)], 0);
        old.objects.get_mut("x").unwrap().moved_to = Some("b".into());
        let view = View {
            members: vec![old, member("b", MemberState::Alive, &[], 0)],
        };
        assert_eq!(home_of(&view, "x").unwrap().station, "b");
        let view = View {
            members: vec![member("a", MemberState::Dead, &[("x", 1)], 0)],
        };
        assert_eq!(home_of(&view, "x"), None);
        assert_eq!(claimed_by_dead(&view, "x").as_deref(), Some("a"));
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
