//! Hot deploy: `--watch DIR` deploys `*.wasm` files dropped into DIR.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Poll `GET /objects/{id}?versions=true` until the current version is `version`.
fn wait_for_version(st: &Station, id: &str, version: u64) -> Value {
    poll(
        &format!("{id} to be at version {version}"),
        Duration::from_secs(30),
        || {
            let r = st.get(&format!("/objects/{id}?versions=true"));
            if r.status != 200 {
                return None;
            }
            let v = r.json();
            (v["current"].as_u64() == Some(version)).then_some(v)
        },
    )
}

#[test]
fn dropped_files_are_deployed_and_redeployed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let st = Station::start(Opts::new().arg("--watch").arg(dir.path().to_str().unwrap()));
    let hot = dir.path().join("hot.wasm");

    std::fs::copy(fixture("counter"), &hot).expect("copy counter.wasm");
    let v = wait_for_version(&st, "hot", 1);
    assert_eq!(
        v["versions"][0]["sha256"],
        sha256_hex(&fixture_bytes("counter")).as_str(),
        "{v}"
    );
    assert_eq!(
        st.call("POST", "hot", "", Vec::new()).expect_json(200),
        json!({"count": 1})
    );

    // Garbage and other files are not deployed and do not stop the watcher.
    std::fs::write(dir.path().join("bad.wasm"), b"not a component").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();

    std::fs::copy(fixture("hello"), &hot).expect("copy hello.wasm over it");
    let v = wait_for_version(&st, "hot", 2);
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{v}");
    assert_eq!(
        versions[1]["sha256"],
        sha256_hex(&fixture_bytes("hello")).as_str(),
        "a partially written file must not be deployed: {v}"
    );
    let hi = st.call("GET", "hot", "", Vec::new()).expect_json(200);
    assert_eq!(hi["message"], "Hello, world!", "{hi}");

    st.get("/objects/bad?versions=true")
        .expect_error(404, "object_not_found");
    st.get("/objects/notes?versions=true")
        .expect_error(404, "object_not_found");
    assert_eq!(st.object_ids(), ["hot"]);
}
