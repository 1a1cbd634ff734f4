//! The trust boundary (issue 10, item 1): headers that steer a station are honoured only from
//! another station, and an object never sees the cluster secret or the admin token.

use serde_json::Value;

use crate::harness::*;

const TOKEN: &str = "admin-t0ken-for-tests";
const SECRET: &str = "cluster-s3cret-for-tests";

/// The header names (lowercase) the misbehave fixture says it received on `POST /headers`.
fn seen_by_object(answer: &Value) -> Vec<(String, String)> {
    answer["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_ascii_lowercase(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Deploys the misbehave fixture as `id` with the CLI and the admin token.
fn deploy_misbehave(st: &Station, id: &str) {
    let path = fixture("misbehave");
    cli(
        &[
            "deploy",
            path.to_str().unwrap(),
            "--id",
            id,
            "--station",
            &st.url,
        ],
        &[("OP_ADMIN_TOKEN", TOKEN)],
    )
    .ok();
}

fn secured() -> Opts {
    Opts::new()
        .flag("--admin-token", TOKEN)
        .flag("--cluster-secret", SECRET)
}

#[test]
fn station_headers_from_a_client_steer_nothing_and_no_credential_reaches_an_object() {
    let st = Station::start(secured());
    deploy_misbehave(&st, "m");
    // A chain naming the object itself, a deadline of 1 ms, a hop count past the limit, the
    // cluster secret and the admin token: from a client, none of it counts or passes.
    let r = st.request_with_headers(
        "POST",
        "/objects/m/headers",
        &[
            ("x-op-chain", "m"),
            ("x-op-deadline-ms", "1"),
            ("x-op-hop", "9"),
            ("x-op-cluster-secret", SECRET),
            ("authorization", &format!("Bearer {TOKEN}")),
            ("x-app", "kept"),
        ],
        Vec::new(),
    );
    let answer = r.expect_json(200);
    let seen = seen_by_object(&answer);
    assert!(
        seen.iter().all(|(name, value)| !name.starts_with("x-op-")
            && !value.contains(SECRET)
            && !value.contains(TOKEN)),
        "the object saw {seen:?}"
    );
    assert!(seen.contains(&("x-app".into(), "kept".into())), "{seen:?}");

    // An application's own Authorization header reaches the object unchanged.
    let answer = st
        .request_with_headers(
            "POST",
            "/objects/m/headers",
            &[("authorization", "Bearer app-session-token")],
            Vec::new(),
        )
        .expect_json(200);
    assert!(
        seen_by_object(&answer)
            .contains(&("authorization".into(), "Bearer app-session-token".into())),
        "{answer}"
    );

    // `host call` never sends the admin token to an object, even with OP_ADMIN_TOKEN set.
    let out = cli(
        &[
            "call",
            "m",
            "POST",
            "--path",
            "/headers",
            "--station",
            &st.url,
        ],
        &[("OP_ADMIN_TOKEN", TOKEN)],
    );
    let answer: Value = serde_json::from_str(out.ok().trim()).expect("JSON from host call");
    let seen = seen_by_object(&answer);
    assert!(
        seen.iter()
            .all(|(name, value)| name != "authorization" && !value.contains(TOKEN)),
        "host call sent {seen:?}"
    );
}

#[test]
fn a_call_forwarded_between_stations_keeps_the_secret_from_the_object() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, secured());
    deploy_misbehave(&st[0], "m");
    let home = st[0].station_id();
    st[1].wait_home("m", &home);
    // Through the other station: forwarded over the link with the cluster secret, which the
    // home checks and never hands to the object.
    let r = st[1].request_with_headers("POST", "/objects/m/headers", &[("x-app", "1")], Vec::new());
    assert_eq!(
        r.header("x-op-station"),
        Some(home.as_str()),
        "served by the home"
    );
    let seen = seen_by_object(&r.expect_json(200));
    assert!(
        seen.iter()
            .all(|(name, value)| !name.starts_with("x-op-") && !value.contains(SECRET)),
        "the object saw {seen:?}"
    );
    // A station's internal routes still need the secret.
    st[0]
        .get("/cluster/internal/objects/m/position")
        .expect_error(401, "unauthorized");
}

#[test]
fn another_object_never_gets_an_admin_view_through_call_object() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new());
    let (a, b) = (st[0].station_id(), st[1].station_id());
    st[0].deploy_fixture("kv", "kv");
    st[1].deploy_fixture("m", "misbehave");
    st[1].wait_home("kv", &a);
    st[0].wait_home("m", &b);
    st[0].call("PUT", "kv", "/password", "hunter2").expect(200);
    // An administrator on loopback (no token configured) gets the state view, through either
    // station.
    for s in &st {
        let view = s.get_json("/objects/kv?state=true");
        assert!(view.to_string().contains("hunter2"), "{view}");
    }
    // An object on the other station (`m`) and one on kv's own station (`m2`) ask for the same
    // view with `call-object`: the call reaches kv as an ordinary GET (kv lists its keys), never
    // the station's state view.
    st[0].deploy_fixture("m2", "misbehave");
    st[1].wait_home("m2", &a);
    for caller in ["m", "m2"] {
        let answer = st[1]
            .call(
                "POST",
                caller,
                &format!(
                    "/call?target=kv&method=GET&path={}",
                    pct_all("/?state=true")
                ),
                Vec::new(),
            )
            .expect_json(200);
        assert_eq!(answer["status"], 200, "{caller}: {answer}");
        let body = answer["body"].as_str().expect("body text");
        assert!(
            !body.contains("hunter2"),
            "{caller}'s call-object got the state view: {body}"
        );
        let keys: Value = serde_json::from_str(body).expect("kv's JSON");
        assert_eq!(
            keys["keys"],
            serde_json::json!(["password"]),
            "{caller}: {keys}"
        );
    }
}
