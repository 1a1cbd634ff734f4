//! Partitions that are real (issue 9): stations bound to 127.0.0.2, 127.0.0.3 and 127.0.0.4
//! whose traffic to each other is cut with nftables rules on those loopback addresses (every
//! station sends from its own address, so the rules cut HTTP and gossip alike).
//!
//! Needs `nft` and root. CI installs nftables (`scripts/setup.sh`) and runs as root; elsewhere a
//! test that cannot use nftables says so and returns. Every rule lives in a table of its own,
//! deleted when the test ends, however it ends.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// An nftables table of drop rules between loopback addresses; deleted on drop.
struct Firewall {
    table: String,
}

fn nft(args: &[&str]) -> Result<(), String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Firewall {
    /// A fresh table, or `None` (with the reason printed) where nftables cannot be used outside
    /// CI. In CI a missing nftables is a failure: the set-up installs it.
    fn new() -> Option<Firewall> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "op_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let made = nft(&["add", "table", "inet", &table]).and_then(|()| {
            nft(&[
                "add",
                "chain",
                "inet",
                &table,
                "out",
                "{ type filter hook output priority 0; }",
            ])
        });
        match made {
            Ok(()) => Some(Firewall { table }),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("nftables is needed for the partition tests in CI: {e}")
            }
            Err(e) => {
                eprintln!("skipped: nftables cannot be used here ({e})");
                None
            }
        }
    }

    /// Drops all traffic between `a` and `b`, both ways.
    fn cut(&self, a: &str, b: &str) {
        for (from, to) in [(a, b), (b, a)] {
            nft(&[
                "add",
                "rule",
                "inet",
                &self.table,
                "out",
                "ip",
                "saddr",
                from,
                "ip",
                "daddr",
                to,
                "drop",
            ])
            .expect("add a drop rule");
        }
    }

    /// Removes every rule.
    fn heal(&self) {
        nft(&["flush", "chain", "inet", &self.table, "out"]).expect("flush the rules");
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

/// One acknowledged write: the key, its value, and when it was sent and answered.
struct Acked {
    key: String,
    value: String,
    sent: Instant,
    at: Instant,
}

fn put(st: &Station, key: &str, value: &str) -> Option<Acked> {
    let sent = Instant::now();
    let r = st
        .try_request(
            "PUT",
            &format!("/objects/kv/{key}"),
            value.as_bytes().to_vec(),
            Duration::from_secs(15),
        )
        .ok()?;
    (r.status == 200).then(|| Acked {
        key: key.to_string(),
        value: value.to_string(),
        sent,
        at: Instant::now(),
    })
}

/// The committed state a station holds of an object (home or replica): each key with its seq
/// and latest value.
fn state_of(st: &Station, id: &str) -> Vec<(String, Value, Value)> {
    let snapshot = st.get_json(&format!("/cluster/internal/objects/{id}/snapshot"));
    snapshot["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            let last = k["versions"].as_array().and_then(|v| v.last()).cloned();
            let last = last.unwrap_or(Value::Null);
            (
                k["key"].as_str().unwrap_or("").to_string(),
                last["seq"].clone(),
                last["value"].clone(),
            )
        })
        .collect()
}

#[test]
fn an_isolated_home_stops_and_the_majority_serves_without_losing_an_acknowledged_write() {
    let Some(firewall) = Firewall::new() else {
        return;
    };
    let opts = Opts::new().fsync().flag("--sync-replicas", 1);
    let mut cluster = Cluster::reserve(3);
    let a = cluster.start(opts.clone().bind("127.0.0.2"));
    let b = cluster.start(opts.clone().bind("127.0.0.3").join(&a));
    let c = cluster.start(opts.clone().bind("127.0.0.4").join(&a));
    let st = [a, b, c];
    let ids: Vec<String> = st.iter().map(Station::station_id).collect();
    for s in &st {
        s.wait_ready();
        s.wait_alive(&ids);
    }
    st[0].deploy_fixture("kv", "kv");
    let mut acked: Vec<Acked> = (0..10)
        .map(|n| put(&st[n % 3], &format!("before{n}"), &n.to_string()).expect("PUT before"))
        .collect();
    wait_replicas_caught_up(&st[0], &ids[0], &[&st[1], &st[2]], "kv");

    // Cut the home (which also founded the directory, so it leads it) from the other two.
    let cut = Instant::now();
    firewall.cut("127.0.0.2", "127.0.0.3");
    firewall.cut("127.0.0.2", "127.0.0.4");

    // The isolated side: keep writing through it for a while; nothing is acknowledged after
    // its lease (2 s) could have run out.
    let mut isolated = Vec::new();
    let mut n = 0;
    while cut.elapsed() < Duration::from_secs(6) {
        if let Some(ack) = put(&st[0], &format!("isolated{n}"), &n.to_string()) {
            isolated.push(ack);
        }
        n += 1;
    }
    for ack in &isolated {
        assert!(
            ack.sent < cut + Duration::from_millis(2500),
            "the isolated home acknowledged {} sent {:?} after the cut, past its lease",
            ack.key,
            ack.sent - cut
        );
    }

    // The majority elects a leader, moves the object to an in-sync replica and serves.
    let first = poll("the majority to accept a write", CLUSTER_TIMEOUT, || {
        put(&st[1], "majority0", "0")
    });
    let taken_over = first.at - cut;
    acked.push(first);
    for n in 1..20 {
        acked.push(put(&st[1 + n % 2], &format!("majority{n}"), &n.to_string()).expect("PUT"));
    }
    let majority_first = acked
        .iter()
        .filter(|a| a.key.starts_with("majority"))
        .map(|a| a.sent)
        .min();
    if let (Some(last_isolated), Some(first_majority)) =
        (isolated.iter().map(|a| a.at).max(), majority_first)
    {
        assert!(
            last_isolated < first_majority,
            "both sides acknowledged writes at the same time"
        );
    }
    let new_home = st[1].object_entry("kv").expect("kv listed")["home"]
        .as_str()
        .expect("a home")
        .to_string();
    assert!(
        ids[1..].contains(&new_home),
        "the majority homes kv: {new_home}"
    );
    println!(
        "partition: the majority served its first write {taken_over:?} after the cut; the \
         isolated home acknowledged {} writes, all within its lease",
        isolated.len()
    );
    acked.extend(isolated);

    // Heal: the old home learns its demotion, takes the new home's history, and follows it.
    firewall.heal();
    let h = ids.iter().position(|i| *i == new_home).unwrap();
    let others: Vec<&Station> = (0..3).filter(|i| *i != h).map(|i| &st[i]).collect();
    wait_replicas_caught_up(&st[h], &new_home, &others, "kv");
    for s in &st {
        assert_eq!(s.object_entry("kv").unwrap()["home"], new_home, "{}", s.url);
    }
    // Every acknowledged write is there, once, with its value, through every station, and every
    // copy holds the same state.
    let home_state = state_of(&st[h], "kv");
    for ack in &acked {
        for s in &st {
            let v = s
                .call("GET", "kv", &format!("/{}", ack.key), Vec::new())
                .expect_json(200);
            assert_eq!(v["value"], ack.value, "{} through {}", ack.key, s.url);
        }
    }
    for s in &others {
        assert_eq!(
            state_of(s, "kv"),
            home_state,
            "the copy on {} differs from the home's",
            s.url
        );
    }
}
