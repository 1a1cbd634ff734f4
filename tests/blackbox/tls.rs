//! TLS: a station serves HTTPS with `--tls-cert`/`--tls-key`, stations of a cluster reach each
//! other over TLS trusting `--tls-ca`, and the CLI talks to an https station with `--ca`.

use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::*;

#[test]
fn a_station_serves_https_only_to_clients_that_trust_its_ca() {
    let pki = TestPki::new();
    let st = Station::start(Opts::new().tls(&pki));
    assert!(st.url.starts_with("https://"), "{}", st.url);
    st.deploy_fixture("kv", "kv");
    st.call("PUT", "kv", "/k", "over tls").expect(200);
    assert_eq!(
        st.call("GET", "kv", "/k", Vec::new()).expect_json(200)["value"],
        "over tls"
    );

    // A client that does not trust the CA is refused by its own TLS check.
    let untrusting = try_request_with(
        &http_client(),
        &st.url,
        "GET",
        "/objects/kv/k",
        Vec::new(),
        None,
    );
    assert!(untrusting.is_err(), "a client without the CA got an answer");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", st.port())).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        plain,
        "GET /objects/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("over tls"),
        "plain HTTP read the state: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // The CLI: with --ca it works; without, it fails with one line naming the certificate.
    let ca = pki.ca.display().to_string();
    let out = cli(
        &[
            "call",
            "kv",
            "GET",
            "--path",
            "/k",
            "--station",
            &st.url,
            "--ca",
            &ca,
        ],
        &[],
    );
    assert!(out.ok().contains("over tls"), "{}", out.stdout);
    let refused = cli(
        &["call", "kv", "GET", "--path", "/k", "--station", &st.url],
        &[],
    );
    let line = refused.fails_with_one_line();
    assert!(line.to_lowercase().contains("certificate"), "{line}");
}

#[test]
fn stations_of_a_cluster_talk_over_tls() {
    let pki = TestPki::new();
    let mut cluster = Cluster::reserve(2);
    let stations = cluster.start_joined(2, Opts::new().tls(&pki));
    let (home, other) = (&stations[0], &stations[1]);
    let members = home.cluster_stations();
    assert!(
        members.to_string().contains("https://"),
        "stations advertise https: {members}"
    );
    home.deploy_fixture("kv", "kv");
    other.wait_object("kv", "known everywhere", |_| true);
    // Through the other station: forwarded to the home over a TLS link.
    other.call("PUT", "kv", "/k", "forwarded").expect(200);
    assert_eq!(
        home.call("GET", "kv", "/k", Vec::new()).expect_json(200)["value"],
        "forwarded"
    );
    let r = other.call("GET", "kv", "/k", Vec::new()).expect(200);
    assert_eq!(
        r.header("x-op-station"),
        Some(home.station_id().as_str()),
        "served by the home"
    );
}
