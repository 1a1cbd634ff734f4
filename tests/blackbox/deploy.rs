//! Deploying components: versions and digests, refusing what cannot run, rollback.

use crate::harness::*;

#[test]
fn deploy_reports_version_and_sha256_and_is_idempotent() {
    let st = Station::new();
    let bytes = fixture_bytes("hello");
    let sha = sha256_hex(&bytes);

    let v = st.put_component("hello", bytes.clone()).expect_json(201);
    assert_eq!(v["object_id"], "hello", "{v}");
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["sha256"], sha.as_str(), "{v}");
    assert_eq!(v["size"], bytes.len() as u64, "{v}");
    assert_eq!(v["unchanged"], false, "{v}");
    assert_eq!(v["ready"], true, "{v}");

    // The same bytes again change nothing.
    let v = st.put_component("hello", bytes.clone()).expect_json(200);
    assert_eq!(v["object_id"], "hello", "{v}");
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["sha256"], sha.as_str(), "{v}");
    assert_eq!(v["unchanged"], true, "{v}");

    // It answers right away.
    let hi = st.call("GET", "hello", "", Vec::new()).expect_json(200);
    assert_eq!(hi["message"], "Hello, world!", "{hi}");

    // Listed, with its version and digest.
    let list = st.get_json("/objects");
    let objects = list["objects"].as_array().expect("objects array");
    assert_eq!(objects.len(), 1, "{list}");
    assert_eq!(objects[0]["id"], "hello", "{list}");
    assert_eq!(objects[0]["version"], 1, "{list}");
    assert_eq!(objects[0]["sha256"], sha.as_str(), "{list}");
    assert!(objects[0]["replicas"].is_array(), "{list}");

    let health = st.get_json("/health");
    assert_eq!(health["objects"], 1, "{health}");

    // A second version, with a note.
    let counter = fixture_bytes("counter");
    let v2 = st
        .request(
            "PUT",
            "/admin/objects/hello?note=second%20try",
            counter.clone(),
        )
        .expect_json(201);
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(v2["sha256"], sha256_hex(&counter).as_str(), "{v2}");

    let versions = st.get_json("/objects/hello?versions=true");
    assert_eq!(versions["object_id"], "hello", "{versions}");
    assert_eq!(versions["current"], 2, "{versions}");
    let list = versions["versions"].as_array().expect("versions array");
    assert_eq!(list.len(), 2, "{versions}");
    assert_eq!(list[0]["version"], 1, "oldest first: {versions}");
    assert_eq!(list[0]["sha256"], sha.as_str(), "{versions}");
    assert_eq!(list[0]["size"], bytes.len() as u64, "{versions}");
    assert_eq!(list[1]["version"], 2, "{versions}");
    assert_eq!(list[1]["note"], "second try", "{versions}");
    let t1 = list[0]["deployed_at"].as_u64().expect("deployed_at ms");
    let t2 = list[1]["deployed_at"].as_u64().expect("deployed_at ms");
    assert!(
        t1 > 1_600_000_000_000 && t2 >= t1,
        "deployed_at in ms: {versions}"
    );

    // The admin route says the same.
    assert_eq!(st.get_json("/admin/objects/hello/versions"), versions);

    // The current version is the counter now.
    let c = st.call("POST", "hello", "", Vec::new()).expect_json(200);
    assert_eq!(c["count"], 1, "{c}");

    // Deployed versions survive a restart.
    let mut st = st;
    st.restart();
    assert_eq!(st.get_json("/objects/hello?versions=true"), versions);
    let c = st.call("GET", "hello", "", Vec::new()).expect_json(200);
    assert_eq!(c["count"], 1, "{c}");
}

#[test]
fn malformed_bytes_are_refused_and_nothing_is_deployed() {
    let st = Station::new();
    // Deterministic noise that is not a wasm header.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let cases: [(&str, Vec<u8>); 4] = [
        ("noise", noise),
        ("core-module", b"\0asm\x01\0\0\0".to_vec()),
        ("empty", Vec::new()),
        ("truncated", fixture_bytes("hello")[..64].to_vec()),
    ];
    for (id, bytes) in cases {
        st.put_component(id, bytes)
            .expect_error(400, "invalid_component");
        st.call("GET", id, "", Vec::new())
            .expect_error(404, "object_not_found");
        st.get(&format!("/objects/{id}?versions=true"))
            .expect_error(404, "object_not_found");
    }
    assert!(
        st.object_ids().is_empty(),
        "nothing deployed: {:?}",
        st.object_ids()
    );

    // A refused deploy leaves an existing object as it was.
    let hello = fixture_bytes("hello");
    st.put_component("keep", hello.clone()).expect(201);
    st.put_component("keep", b"garbage".to_vec())
        .expect_error(400, "invalid_component");
    let versions = st.get_json("/objects/keep?versions=true");
    assert_eq!(versions["current"], 1, "{versions}");
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    let hi = st.call("GET", "keep", "", Vec::new()).expect_json(200);
    assert_eq!(hi["message"], "Hello, world!", "{hi}");
}

#[test]
fn foreign_import_is_refused_by_name() {
    let st = Station::new();
    let v = st
        .put_component("foreign", fixture_bytes("foreign"))
        .expect_error(400, "unsupported_import");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("example:foreign/thing"),
        "message should name the import: {msg:?}"
    );
    st.call("GET", "foreign", "", Vec::new())
        .expect_error(404, "object_not_found");
    assert!(st.object_ids().is_empty());
}

#[test]
fn rollback_deploys_old_bytes_as_a_new_version() {
    let st = Station::new();
    let hello = fixture_bytes("hello");
    let counter = fixture_bytes("counter");
    assert_eq!(
        st.put_component("obj", hello.clone()).expect_json(201)["version"],
        1
    );
    assert_eq!(
        st.put_component("obj", counter.clone()).expect_json(201)["version"],
        2
    );
    let c = st.call("POST", "obj", "", Vec::new()).expect_json(200);
    assert_eq!(c["count"], 1, "v2 is the counter: {c}");

    let v = st
        .request(
            "POST",
            "/admin/objects/obj/rollback",
            br#"{"version":1}"#.to_vec(),
        )
        .expect_json(201);
    assert_eq!(v["object_id"], "obj", "{v}");
    assert_eq!(v["version"], 3, "{v}");
    assert_eq!(v["sha256"], sha256_hex(&hello).as_str(), "{v}");

    let hi = st.call("GET", "obj", "", Vec::new()).expect_json(200);
    assert_eq!(hi["message"], "Hello, world!", "after rollback: {hi}");
    st.call("POST", "obj", "", Vec::new()).expect(405);

    let versions = st.get_json("/objects/obj?versions=true");
    assert_eq!(versions["current"], 3, "{versions}");
    let list = versions["versions"].as_array().unwrap();
    let nums: Vec<u64> = list
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, [1, 2, 3], "{versions}");
    assert_eq!(list[2]["sha256"], list[0]["sha256"], "{versions}");
    assert_eq!(
        list[1]["sha256"],
        sha256_hex(&counter).as_str(),
        "{versions}"
    );

    st.request(
        "POST",
        "/admin/objects/obj/rollback",
        br#"{"version":99}"#.to_vec(),
    )
    .expect_error(404, "version_not_found");
    st.request(
        "POST",
        "/admin/objects/nope/rollback",
        br#"{"version":1}"#.to_vec(),
    )
    .expect_error(404, "object_not_found");
    // The failed rollbacks changed nothing.
    assert_eq!(st.get_json("/objects/obj?versions=true"), versions);
}

#[test]
fn a_slow_compile_delays_only_its_own_deploy() {
    let st = Station::new();
    st.deploy_fixture("hello", "hello");
    // An 18 MB Python component takes seconds to compile on a fresh cache.
    let slow_bytes = fixture_bytes("py-kv");
    let slow_sha = sha256_hex(&slow_bytes);
    let (client, base) = (st.client(), st.url.clone());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let slow = std::thread::spawn(move || {
        let r = request_with(&client, &base, "PUT", "/admin/objects/slow", slow_bytes);
        let _ = done_tx.send(());
        r
    });
    poll(
        "the slow component's compile to start",
        std::time::Duration::from_secs(60),
        || {
            st.output()
                .lines()
                .any(|l| l.contains("compiling component") && l.contains(&slow_sha))
                .then_some(())
        },
    );

    // While it compiles: another object deploys (compiling too), and calls go on.
    let v = st
        .put_component("calc", fixture_bytes("calculator"))
        .expect_json(201);
    assert_eq!(v["ready"], true, "{v}");
    st.call("GET", "hello", "", Vec::new()).expect(200);
    let v = st
        .call("GET", "calc", "?a=2&b=3&op=add", Vec::new())
        .expect_json(200);
    assert_eq!(v["result"], 5.0, "{v}");
    assert!(
        done_rx.try_recv().is_err(),
        "the other deploy and calls only finished after the slow compile did"
    );

    let v = slow.join().expect("slow deploy thread").expect_json(201);
    assert_eq!(v["sha256"], slow_sha, "{v}");
    st.call("PUT", "slow", "/k", "v").expect(200);
}
