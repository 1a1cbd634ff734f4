//! Following an object's log: `host logs --follow` (across a station restart, through another
//! station) and the `?follow=true` Server-Sent Events stream itself, with a follower too slow to
//! keep up. The rule checked everywhere: every line printed once — none dropped, none repeated.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// How long a line may take to reach a follower here (it is handed over as it is appended).
const DELIVERY: Duration = Duration::from_secs(15);

/// The request id of a call's answer.
fn rid(r: &Resp) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("{}: no x-request-id", r.what))
        .to_string()
}

/// How often each request id's `call.end` line appears among `host logs` output lines
/// (`TS LEVEL REQUEST_ID EVENT MESSAGE`).
fn call_ends(lines: &[String]) -> BTreeMap<String, usize> {
    let mut ends = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, _, request_id, "call.end", ..] = fields[..] {
            *ends.entry(request_id.to_string()).or_default() += 1;
        }
    }
    ends
}

/// Waits until the follower printed the `call.end` of every call in `rids`.
#[track_caller]
fn wait_printed(follower: &mut CliProcess, rids: &[String]) {
    poll("every call's call.end printed", DELIVERY, || {
        assert!(
            follower.running(),
            "host logs --follow exited: {}",
            follower.stderr()
        );
        let ends = call_ends(&follower.lines());
        rids.iter().all(|r| ends.contains_key(r)).then_some(())
    });
}

/// Asserts each call's `call.end` was printed exactly once.
#[track_caller]
fn assert_printed_once(follower: &CliProcess, rids: &[String]) {
    let ends = call_ends(&follower.lines());
    for r in rids {
        assert_eq!(
            ends.get(r),
            Some(&1),
            "call.end of {r} printed {:?} times; output:\n{}",
            ends.get(r),
            follower.lines().join("\n")
        );
    }
}

/// `n` `POST /ok` calls to `id` through `st`; their request ids.
fn calls(st: &Station, id: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| rid(&st.call("POST", id, "/ok", format!("v{i}")).expect(200)))
        .collect()
}

#[test]
fn host_logs_follow_prints_every_new_line_once_across_a_station_restart() {
    let mut st = Station::new();
    st.deploy_fixture("m", "misbehave");
    let before = calls(&st, "m", 1);
    let mut follower = CliProcess::spawn(&["logs", "m", "--follow", "--station", &st.url]);
    // The line from before the follow is printed first: the stream is open.
    wait_printed(&mut follower, &before);
    let mut rids = before;
    rids.extend(calls(&st, "m", 20));
    wait_printed(&mut follower, &rids);

    // The station restarts on its port: the stream breaks and the CLI reconnects, catching up
    // from before its newest line without printing anything twice.
    st.restart_on_same_port();
    rids.extend(calls(&st, "m", 20));
    wait_printed(&mut follower, &rids);
    assert!(
        follower.stderr().contains("reconnecting"),
        "the follower never lost its stream: {}",
        follower.stderr()
    );
    assert_printed_once(&follower, &rids);
}

#[test]
fn host_logs_follow_through_another_station_prints_the_homes_lines() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new());
    let (a, b) = (&st[0], &st[1]);
    a.deploy_fixture("m", "misbehave");
    let entry = a.wait_object("m", "with a home", |e| e["home"].is_string());
    let (home, other) = if entry["home"] == a.station_id() {
        (a, b)
    } else {
        (b, a)
    };
    other.wait_home("m", &home.station_id());
    let mut follower = CliProcess::spawn(&[
        "logs",
        "m",
        "--follow",
        "--limit",
        "0",
        "--station",
        &other.url,
    ]);
    // Calls through either station are logged on the home and streamed through the other.
    let mut rids = Vec::new();
    poll("the follow stream open", DELIVERY, || {
        rids.extend(calls(home, "m", 1));
        let ends = call_ends(&follower.lines());
        ends.contains_key(rids.last().unwrap()).then_some(())
    });
    let first_printed = call_ends(&follower.lines());
    let streamed: Vec<String> = rids
        .iter()
        .filter(|r| first_printed.contains_key(*r))
        .cloned()
        .collect();
    let mut later = calls(home, "m", 10);
    later.extend(calls(other, "m", 10));
    wait_printed(&mut follower, &later);
    assert_printed_once(&follower, &streamed);
    assert_printed_once(&follower, &later);
}

/// A TCP connection to `url`'s station that reads slowly: its receive buffer is the smallest
/// the kernel allows, so what it does not read backs up into the station.
fn slow_connection(url: &str) -> TcpStream {
    let addr: std::net::SocketAddrV4 = url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("station address {url}: {e}"));
    // SAFETY: a new socket we own; every call's result is checked; the fd moves into the
    // TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sockaddr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// The body of a chunked HTTP/1.1 response, chunk by chunk.
struct Chunked<R> {
    reader: BufReader<R>,
}

impl<R: Read> Chunked<R> {
    /// The next chunk's bytes; `None` at the end of the body.
    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut size_line = String::new();
        self.reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim(), 16).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{size_line:?}: {e}"),
            )
        })?;
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk)?;
        chunk.truncate(size);
        Ok((size > 0).then_some(chunk))
    }
}

#[test]
fn a_follower_that_stops_reading_catches_up_from_the_files_without_gap_or_repeat() {
    let st = Station::new();
    st.deploy_fixture("m", "misbehave");
    let mut stream = slow_connection(&st.url);
    write!(
        stream,
        "GET /admin/objects/m/logs?follow=true&limit=0 HTTP/1.1\r\nHost: {}\r\n\r\n",
        st.url.trim_start_matches("http://")
    )
    .expect("send the request");
    stream
        .set_read_timeout(Some(DELIVERY))
        .expect("set a read timeout");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let before = head.len();
        reader.read_line(&mut head).expect("read the response head");
        assert!(head.len() > before, "the station closed the stream: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );

    // Flood the log while the follower reads nothing: its tap overflows and it is cut off.
    let flooded = Instant::now();
    let mut rids = Vec::new();
    let cut_off = |st: &Station| metric(st, "op_log_followers_cut_off_total");
    while cut_off(&st) < 1.0 {
        assert!(
            flooded.elapsed() < Duration::from_secs(120),
            "the follower was not cut off after {} calls",
            rids.len()
        );
        for _ in 0..100 {
            rids.push(rid(&st.call("POST", "m", "/log", "").expect(200)));
        }
    }
    println!("the follower was cut off after {} calls", rids.len());
    rids.extend(calls(&st, "m", 5));

    // Now it reads: every call's lines arrive once, in order, the cut-off notwithstanding.
    let mut body = Chunked { reader };
    let mut text = String::new();
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    while ends.len() < rids.len() {
        let chunk = body
            .next_chunk()
            .expect("read the stream")
            .expect("the stream ended early");
        text.push_str(&String::from_utf8(chunk).expect("UTF-8 events"));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let line: Value = serde_json::from_str(data).expect("a JSON log line");
            if line["event"] == "call.end" {
                let r = line["request_id"].as_str().expect("request id").to_string();
                *ends.entry(r.clone()).or_default() += 1;
                order.push(r);
            }
        }
    }
    assert_eq!(
        order, rids,
        "call.end lines out of order, missing or repeated"
    );
    assert!(ends.values().all(|n| *n == 1), "repeated lines: {ends:?}");
}

/// The value of an unlabelled metric in `GET /metrics`.
fn metric(st: &Station, name: &str) -> f64 {
    let text = st.get("/metrics").expect(200).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}
