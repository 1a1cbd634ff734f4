//! Admin routes: object ids are checked, undeploy and purge, the inspection views.

use std::path::Path;

use serde_json::json;

use crate::harness::*;

/// Every file and directory under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn bad_object_ids_are_refused_and_nothing_escapes_the_data_dir() {
    let st = Station::new();
    let hello = fixture_bytes("hello");
    let workdir = st.workdir().to_path_buf();
    let outside_before: Vec<String> = tree(&workdir)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();

    // Sent raw, byte for byte: percent-encoded slashes and dots must not become paths.
    let long = "a".repeat(300);
    let too_long = "a".repeat(129);
    let bad = [
        "Hello",
        "UPPER",
        "-lead",
        "_lead",
        ".hidden",
        "a..b",
        "sp%20ace",
        "a%2Fb",
        "%2e%2e",
        "..%2Fx",
        "..%2f..%2fetc",
        long.as_str(),
        too_long.as_str(),
        "caf%C3%A9",
    ];
    for id in bad {
        st.raw("PUT", &format!("/admin/objects/{id}"), &hello)
            .expect_error(400, "invalid_object_id");
        st.raw("GET", &format!("/objects/{id}"), &[])
            .expect_error(400, "invalid_object_id");
        st.raw("POST", &format!("/objects/{id}/some/path"), b"x")
            .expect_error(400, "invalid_object_id");
        st.raw("GET", &format!("/objects/{id}?versions=true"), &[])
            .expect_error(400, "invalid_object_id");
        st.raw("GET", &format!("/admin/objects/{id}/logs"), &[])
            .expect_error(400, "invalid_object_id");
        st.raw(
            "POST",
            &format!("/admin/objects/{id}/rollback"),
            br#"{"version":1}"#,
        )
        .expect_error(400, "invalid_object_id");
        st.raw("DELETE", &format!("/admin/objects/{id}?purge=true"), &[])
            .expect_error(400, "invalid_object_id");
    }
    // Empty ids: no route may deploy them.
    for path in ["/admin/objects/", "/admin/objects//", "/admin/objects"] {
        let r = st.raw("PUT", path, &hello);
        assert!(
            matches!(r.status, 400 | 404 | 405),
            "PUT {path} answered {} {}",
            r.status,
            r.text()
        );
    }
    assert!(
        st.object_ids().is_empty(),
        "something was deployed: {:?}",
        st.object_ids()
    );

    // The longest valid id, and ids using every allowed character, work.
    let max = "b".repeat(128);
    for id in [max.as_str(), "0", "a.b-c_d", "9lives"] {
        st.put_component(id, hello.clone()).expect(201);
        st.call("GET", id, "", Vec::new()).expect(200);
    }

    // Nothing was written outside the data directory.
    let outside_after: Vec<String> = tree(&workdir)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();
    assert_eq!(
        outside_after, outside_before,
        "files appeared beside the data dir"
    );
    for p in tree(st.data_dir()) {
        let parts: Vec<&str> = p.split('/').collect();
        assert!(
            !parts
                .iter()
                .any(|c| *c == "etc" || *c == "x" || c.contains("..")),
            "suspicious path in the data dir: {p}"
        );
        assert!(
            !p.contains("Hello") && !p.contains("UPPER"),
            "a refused id left a trace: {p}"
        );
    }
}

#[test]
fn undeploy_keeps_state_unless_purged() {
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    for _ in 0..3 {
        st.call("POST", "counter", "", Vec::new()).expect(200);
    }

    let v = st
        .request("DELETE", "/admin/objects/counter", Vec::new())
        .expect_json(200);
    assert_eq!(
        v,
        json!({"object_id": "counter", "undeployed": true, "purged": false})
    );
    st.call("POST", "counter", "", Vec::new())
        .expect_error(404, "object_not_found");
    st.call("GET", "counter", "", Vec::new())
        .expect_error(404, "object_not_found");
    assert!(!st.object_ids().contains(&"counter".to_string()));
    st.request("DELETE", "/admin/objects/never", Vec::new())
        .expect_error(404, "object_not_found");

    // Redeployed, it finds its state.
    st.deploy_fixture("counter", "counter");
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": 3})
    );
    assert!(st.object_ids().contains(&"counter".to_string()));

    let v = st
        .request("DELETE", "/admin/objects/counter?purge=true", Vec::new())
        .expect_json(200);
    assert_eq!(
        v,
        json!({"object_id": "counter", "undeployed": true, "purged": true})
    );
    st.call("GET", "counter", "", Vec::new())
        .expect_error(404, "object_not_found");
    st.deploy_fixture("counter", "counter");
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": 0}),
        "purged state came back"
    );
    // And purge survives a restart.
    let mut st = st;
    st.restart();
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": 0})
    );
}

#[test]
fn inspection_views_agree() {
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    let sha = sha256_hex(&fixture_bytes("counter"));
    st.call("POST", "counter", "", Vec::new()).expect(200);
    st.call("POST", "counter", "", Vec::new()).expect(200);

    let state = st.get_json("/objects/counter?state=true");
    assert_eq!(state["object_id"], "counter", "{state}");
    assert!(
        state["seq"].as_u64().expect("seq") >= 2,
        "two commits: {state}"
    );
    let map = state["state"].as_object().expect("state map");
    let (key, value) = map
        .iter()
        .find(|(_, v)| v.as_str() == Some("2"))
        .unwrap_or_else(|| panic!("no key holds the count 2: {state}"));
    assert_eq!(value, "2");
    assert_eq!(st.get_json("/admin/objects/counter/state"), state);

    let with_key = st.get_json(&format!("/objects/counter?state=true&key={}", pct(key)));
    let hist = with_key["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {with_key}"));
    let values: Vec<&str> = hist
        .iter()
        .map(|h| h["value"].as_str().expect("value"))
        .collect();
    assert_eq!(values, ["2", "1"], "{with_key}");
    assert_eq!(
        st.get_json(&format!("/admin/objects/counter/state?key={}", pct(key))),
        with_key
    );

    let meta = st.get_json("/objects/counter?metadata=true");
    assert_eq!(meta["object_id"], "counter", "{meta}");
    assert_eq!(meta["version"], 1, "{meta}");
    assert_eq!(meta["sha256"], sha.as_str(), "{meta}");
    assert_eq!(meta["calls"], 2, "{meta}");
    assert_eq!(meta["traps"], 0, "{meta}");
    assert!(meta["active"].is_boolean(), "{meta}");
    assert!(meta["deployed_at"].as_u64().is_some(), "{meta}");
    assert_eq!(st.get_json("/admin/objects/counter/metadata"), meta);

    // The reserved query keys are views, not calls: the count did not move.
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": 2})
    );
    st.get("/objects/nope?metadata=true")
        .expect_error(404, "object_not_found");
    st.get("/admin/objects/nope/state")
        .expect_error(404, "object_not_found");
}
