//! Object state: survives restarts, commits atomically, round-trips any string.

use serde_json::json;

use crate::harness::*;

/// `(inode, mtime)` of a file: unchanged means nobody rewrote it.
fn file_identity(path: &std::path::Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.modified().expect("mtime"))
}

per_lang! {
    /// State survives restarts, in each language; a restart serves the objects from the
    /// compiled artifacts in `data/cache` (not rewritten: loaded, not compiled again).
    fn state_survives_a_graceful_restart(lang: Lang) {
        let mut st = Station::new();
        let counter_sha = lang.deploy(&st, "counter", "counter")["sha256"]
            .as_str()
            .expect("sha256 in the deploy answer")
            .to_string();
        lang.deploy(&st, "kv", "kv");
        for i in 1..=5 {
            let v = st.call("POST", "counter", "", Vec::new()).expect_json(200);
            assert_eq!(v["count"], i, "{v}");
        }
        st.call("PUT", "kv", "/k", "one");
        st.call("PUT", "kv", "/k", "two");
        st.call("PUT", "kv", "/gone", "x");
        st.call("DELETE", "kv", "/gone", Vec::new()).expect(200);

        let cached = st.cache_files(&counter_sha);
        assert_eq!(
            cached.len(),
            1,
            "{lang:?}: one compiled artifact data/cache/{counter_sha}-*.cwasm: {cached:?}"
        );
        let before = file_identity(&cached[0]);

        st.restart();

        assert_eq!(
            st.call("GET", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 5})
        );
        assert_eq!(
            st.call("POST", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 6})
        );
        assert_eq!(
            st.cache_files(&counter_sha),
            cached,
            "{lang:?}: the artifact is still there"
        );
        assert_eq!(
            file_identity(&cached[0]),
            before,
            "{lang:?}: {} was rewritten: the restart compiled the counter again",
            cached[0].display()
        );
        let v = st.call("GET", "kv", "/k", Vec::new()).expect_json(200);
        assert_eq!(v["value"], "two", "{v}");
        st.call("GET", "kv", "/gone", Vec::new()).expect(404);
        let h = st
            .call("GET", "kv", "/k?history=10", Vec::new())
            .expect_json(200);
        let values: Vec<&str> = h["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|e| e["value"].as_str().expect("value"))
            .collect();
        assert_eq!(values, ["two", "one"], "history after restart: {h}");

        // Once more, so the state written after the first restart is durable too.
        st.restart();
        assert_eq!(
            st.call("GET", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 6})
        );
    }
}

#[test]
fn a_trap_or_a_5xx_commits_nothing() {
    let st = Station::new();
    st.deploy_fixture("mb", "misbehave");

    st.call("POST", "mb", "/ok", "one").expect(200);
    let before = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(before["x"], "one", "{before}");

    let v = st
        .call("POST", "mb", "/trap", "two")
        .expect_error(500, "trapped");
    let after = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(after, before, "a trap committed something ({v})");

    let r = st.call("POST", "mb", "/fail", "three");
    assert_eq!(r.status, 500, "/fail: {}", r.text());
    let after = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(after, before, "a 500 answer committed something");

    // The same object keeps serving, and commits again.
    st.call("POST", "mb", "/ok", "four").expect(200);
    let v = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(v["x"], "four", "{v}");
    assert_ne!(
        v["writes"], before["writes"],
        "writes moved on: {v} vs {before}"
    );

    let meta = st.get_json("/objects/mb?metadata=true");
    assert_eq!(meta["traps"], 1, "{meta}");
    assert_eq!(
        meta["calls"], 8,
        "ok, GET, trap, GET, fail, GET, ok, GET: {meta}"
    );
}

/// Strings users actually store.
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "plain",
        "tab\there",
        "new\nline",
        "carriage\rreturn",
        "crlf\r\nend",
        "back\\slash\\",
        "\"quoted\"",
        "\"\"",
        "'single'",
        "",
        " leading and trailing ",
        "emoji 😀🎉👩‍👩‍👧",
        "RTL: שלום עולם مرحبا",
        "combining e\u{301} a\u{308}",
        "nul-free control \u{1}\u{7f}",
        "=1+1",
        "a\tb\nc\r\nd\\e\"f",
        "{\"json\": [1, 2]}",
        "%41%2F",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // 100 KB, with separators sprinkled in.
    let mut big = String::new();
    while big.len() < 100_000 {
        big.push_str("0123456789abcdef\t\"\\\n");
    }
    v.push(big);
    v
}

fn hostile_keys() -> Vec<String> {
    [
        "a/b",
        "100%",
        "a/b%2F/c",
        "tab\tkey",
        "line\nkey",
        "ünï😀",
        "sp ace",
        "q\"uote",
        "..",
        ".",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

per_lang! {
    /// Any string round-trips through the kv object's state, in each language.
    fn hostile_strings_round_trip(lang: Lang) {
        let mut st = Station::new();
        lang.deploy(&st, "kv", "kv");

        let mut pairs: Vec<(String, String)> = hostile_values()
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("v{i}"), v))
            .collect();
        let values = hostile_values();
        for (i, k) in hostile_keys().into_iter().enumerate() {
            pairs.push((k, values[(i + 1) % values.len()].clone()));
        }

        for (k, v) in &pairs {
            let r = st.call("PUT", "kv", "", json!({"key": k, "value": v}).to_string());
            assert!(
                (200..300).contains(&r.status),
                "PUT / {k:?}: {} {}",
                r.status,
                r.text()
            );
        }

        let check = |st: &Station, when: &str| {
            for (k, v) in &pairs {
                // Raw, so that keys such as `..` reach the station as sent.
                let got = st
                    .raw("GET", &format!("/objects/kv/{}", pct_all(k)), &[])
                    .expect_json(200);
                assert_eq!(got["key"].as_str(), Some(k.as_str()), "{when}: key {k:?}");
                assert!(
                    got["value"].as_str() == Some(v.as_str()),
                    "{when}: value of {k:?} differs: got {:?}, want {:?}",
                    got["value"]
                        .as_str()
                        .map(|s| s.chars().take(80).collect::<String>()),
                    v.chars().take(80).collect::<String>()
                );
            }
            let state = st.get_json("/objects/kv?state=true");
            for (k, v) in &pairs {
                assert!(
                    state["state"][k.as_str()].as_str() == Some(v.as_str()),
                    "{when}: ?state=true value of {k:?} differs"
                );
            }
            let keys = st.call("GET", "kv", "", Vec::new()).expect_json(200);
            let mut want: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            want.sort();
            let got: Vec<&str> = keys["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k.as_str().expect("key string"))
                .collect();
            assert_eq!(got, want, "{when}: key listing");
        };
        check(&st, "before restart");

        // Stopped gracefully, the file is complete: check it as a user's TSV tools would.
        st.stop();
        let tsv = st.data_dir().join("state/kv/state.tsv");
        let rows = read_state_tsv(&tsv);
        for (k, v) in &pairs {
            assert!(
                rows.iter()
                    .any(|r| r[2] == "set" && &r[3] == k && &r[4] == v),
                "{}: no `set` row for key {k:?} with its exact value",
                tsv.display()
            );
        }
        let mut last = 0u64;
        for r in &rows {
            let seq: u64 = r[0].parse().unwrap();
            assert!(
                seq >= last,
                "{}: seq goes backwards at {seq}",
                tsv.display()
            );
            last = seq;
        }

        st.restart();
        check(&st, "after restart");
    }
}
