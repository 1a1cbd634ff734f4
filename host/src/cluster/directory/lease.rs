//! Write leases: the rule that keeps one writer per object across failures and partitions.
//!
//! Every station asks the directory's leader for a lease every [`RENEW_EVERY`]; the leader grants
//! one only after confirming with a quorum that it still leads (openraft's
//! `ensure_linearizable`), and answers with its commit point. The station counts the lease from
//! the moment it *sent* the request, for [`LEASE`], and trusts it only once it has applied the
//! directory up to that commit point (so a returning station cannot act on a stale directory).
//! A home accepts writes only while its lease is valid.
//!
//! The leader moves objects off a station only when no lease it granted to that station can still
//! be valid: [`LEASE`] stretched by the clock-rate bound [`DRIFT`] plus [`MARGIN`] after its last
//! grant. After a change of leader, an earlier leader may have granted one just before it died;
//! the new leader waits [`Granted::after_election_wait`] after its own election, which credits
//! the time the election itself took at the least: an earlier leader grants a lease only after a
//! quorum acknowledged it *after* the station asked, and a voter refuses to vote for a new leader
//! until [`VOTE_QUIET`] (openraft's leader lease, `election_timeout_max`) has passed since it last
//! heard from the old one. A quorum that elects the new leader shares a voter with that one, so
//! the election happened at least `VOTE_QUIET` after the lease began. A station that restarted
//! has forgotten when it last heard from a leader: it refuses every vote request for
//! `VOTE_QUIET` after it starts ([`Granted::may_vote`]), and a new leader that started that
//! recently (it voted for itself) waits the whole [`expiry_wait`]. Clocks are only used to
//! measure durations (monotonic), so the assumption is on clock *rates*: no station's clock runs
//! more than 10 % slower than another's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a granted lease lasts, counted by the station from when it asked.
pub const LEASE: Duration = Duration::from_millis(1500);
/// How often a station renews.
pub const RENEW_EVERY: Duration = Duration::from_millis(300);
/// How long a voter refuses to vote for another leader after it last heard from its leader:
/// openraft's leader lease, which is its `election_timeout_max` (the directory's Raft config
/// takes it from here).
pub const VOTE_QUIET: Duration = Duration::from_millis(800);
/// Bound on how much faster one station's clock may run than another's (10 %).
pub const DRIFT: f64 = 0.10;
/// Extra wait on top of the drift-stretched lease.
pub const MARGIN: Duration = Duration::from_millis(200);

/// How long after its last grant (or its own election) the leader waits before it treats a
/// station's lease as expired.
pub fn expiry_wait() -> Duration {
    LEASE.mul_f64(1.0 + DRIFT) + MARGIN
}

/// The leader's answer to a renewal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Grant {
    /// Lease length in milliseconds.
    pub lease_ms: u64,
    /// The directory's commit index at the grant: the lease counts once applied up to it.
    pub applied_index: u64,
}

/// This station's lease.
#[derive(Debug, Default)]
pub struct Held {
    inner: Mutex<Option<(Instant, u64)>>,
}

impl Held {
    /// Records a grant for a renewal sent at `sent`.
    pub fn granted(&self, sent: Instant, grant: Grant) {
        let until = sent + Duration::from_millis(grant.lease_ms);
        let mut inner = self.inner.lock().expect("lease lock");
        if inner.is_none_or(|(u, _)| u <= until) {
            *inner = Some((until, grant.applied_index));
        }
    }

    /// Whether the lease is valid now, given the directory index applied here.
    pub fn valid(&self, applied_index: u64) -> bool {
        self.inner
            .lock()
            .expect("lease lock")
            .is_some_and(|(until, needed)| Instant::now() < until && applied_index >= needed)
    }

    /// Time left on the lease (zero when expired).
    pub fn remaining(&self) -> Duration {
        self.inner
            .lock()
            .expect("lease lock")
            .map(|(until, _)| until.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// What the leader granted, per station.
#[derive(Debug)]
pub struct Granted {
    inner: Mutex<GrantedInner>,
    /// When this station started (its Raft node with it).
    started: Instant,
}

impl Default for Granted {
    fn default() -> Granted {
        Granted {
            inner: Mutex::default(),
            started: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
struct GrantedInner {
    /// Station → when its last lease was granted.
    last: HashMap<String, Instant>,
    /// When this station last became leader (`None`: not leader).
    leader_since: Option<Instant>,
}

impl Granted {
    /// Records a grant to `station` now.
    pub fn record(&self, station: &str) {
        self.inner
            .lock()
            .expect("grants lock")
            .last
            .insert(station.to_string(), Instant::now());
    }

    /// This station became leader now (or stopped leading: `false`).
    pub fn set_leader(&self, leading: bool) {
        let mut inner = self.inner.lock().expect("grants lock");
        match (leading, inner.leader_since) {
            (true, None) => inner.leader_since = Some(Instant::now()),
            (false, _) => {
                inner.leader_since = None;
                inner.last.clear();
            }
            _ => {}
        }
    }

    /// How long after its election, at `leader_since`, this leader treats leases granted by an
    /// earlier leader as possibly valid: [`expiry_wait`] less the least time the election took
    /// ([`VOTE_QUIET`] on the slowest clock), or all of it when this station started too recently
    /// to have kept from voting for itself within `VOTE_QUIET` of an earlier leader's last word.
    pub fn after_election_wait(&self, leader_since: Instant) -> Duration {
        let quiet_since_start = leader_since.saturating_duration_since(self.started);
        if quiet_since_start < VOTE_QUIET.mul_f64(1.0 + DRIFT) {
            expiry_wait()
        } else {
            expiry_wait().saturating_sub(VOTE_QUIET.div_f64(1.0 + DRIFT))
        }
    }

    /// Whether this station may vote in an election: not within [`VOTE_QUIET`] (stretched by the
    /// drift bound) of its start, when it cannot know how recently it heard from a leader.
    pub fn may_vote(&self) -> bool {
        self.started.elapsed() >= VOTE_QUIET.mul_f64(1.0 + DRIFT)
    }

    /// Whether `station` may still hold a valid lease granted by this leader or an earlier one.
    /// `true` when this station is not the leader (it cannot tell).
    pub fn may_hold(&self, station: &str) -> bool {
        let inner = self.inner.lock().expect("grants lock");
        let Some(since) = inner.leader_since else {
            return true;
        };
        if since.elapsed() < self.after_election_wait(since) {
            return true;
        }
        inner
            .last
            .get(station)
            .is_some_and(|t| t.elapsed() < expiry_wait())
    }

    /// Whether `station` has not renewed for longer than `quiet` (counting from this leader's
    /// election when it never renewed since). `false` when this station is not the leader.
    pub fn silent_for(&self, station: &str, quiet: Duration) -> bool {
        self.silent_since(station)
            .is_some_and(|silent| silent > quiet)
    }

    /// How long `station` has not renewed (counting from this leader's election when it never
    /// renewed since); `None` when this station is not the leader.
    pub fn silent_since(&self, station: &str) -> Option<Duration> {
        let inner = self.inner.lock().expect("grants lock");
        let since = inner.leader_since?;
        let last = inner.last.get(station).copied().unwrap_or(since).max(since);
        Some(last.elapsed())
    }

    /// Whether `station` renewed its lease recently (within one lease): it is up and reaches the
    /// leader.
    pub fn is_fresh(&self, station: &str) -> bool {
        let inner = self.inner.lock().expect("grants lock");
        inner.last.get(station).is_some_and(|t| t.elapsed() < LEASE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_needs_time_left_and_the_directory_applied_up_to_the_grant() {
        let held = Held::default();
        assert!(!held.valid(10));
        held.granted(
            Instant::now(),
            Grant {
                lease_ms: 60_000,
                applied_index: 7,
            },
        );
        assert!(!held.valid(6), "the directory here is behind the grant");
        assert!(held.valid(7));
        let expired = Held::default();
        expired.granted(
            Instant::now() - Duration::from_secs(5),
            Grant {
                lease_ms: 1000,
                applied_index: 0,
            },
        );
        assert!(!expired.valid(100));
    }

    #[test]
    fn a_new_leader_assumes_every_station_may_hold_a_lease_until_the_wait_has_passed() {
        let granted = Granted::default();
        assert!(granted.may_hold("a"), "not leader: cannot tell");
        granted.set_leader(true);
        assert!(
            granted.may_hold("a"),
            "just elected: an old leader may have granted one"
        );
        granted.inner.lock().unwrap().leader_since =
            Some(Instant::now() - expiry_wait() - Duration::from_millis(1));
        assert!(!granted.may_hold("a"));
        granted.record("a");
        assert!(granted.may_hold("a") && granted.is_fresh("a"));
        granted.set_leader(false);
        assert!(granted.may_hold("b"));
    }

    #[test]
    fn the_wait_after_an_election_credits_the_election_unless_this_station_just_started() {
        let now = Instant::now();
        let long_running = Granted {
            inner: Mutex::default(),
            started: now - Duration::from_secs(60),
        };
        let reduced = long_running.after_election_wait(now);
        assert_eq!(
            reduced,
            expiry_wait() - VOTE_QUIET.div_f64(1.0 + DRIFT),
            "credits the quiet period a voter kept"
        );
        assert!(reduced < expiry_wait());
        assert!(long_running.may_vote());
        let just_started = Granted::default();
        assert!(
            !just_started.may_vote(),
            "refuses votes right after a start"
        );
        assert_eq!(
            just_started.after_election_wait(Instant::now()),
            expiry_wait(),
            "elected right after its start: the whole wait"
        );
        // A new leader may move a station's objects once the reduced wait is over.
        long_running.set_leader(true);
        long_running.inner.lock().unwrap().leader_since =
            Some(Instant::now() - reduced - Duration::from_millis(1));
        assert!(!long_running.may_hold("a"));
    }
}
