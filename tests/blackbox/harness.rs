//! Every helper of the black-box tests: stations (start, stop, kill, restart), HTTP calls,
//! raw HTTP for paths a client library would normalise, guest fixtures, TSV parsing,
//! the CLI, clusters (station slots reserved together, readiness, membership, object
//! positions) and write loads (writer threads that record every answer). Tests only combine
//! these; they never spawn or sleep on their own.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// How long a station may take to print its first line (the first start compiles nothing
/// but may create the data directory and the engine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a station may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for any one HTTP exchange made by a test.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many stations run at once across all tests of the binary (2-core machine).
const MAX_STATIONS: usize = 4;
/// Captured station output kept for printing on failure.
const OUTPUT_CAP: usize = 512 * 1024;

// ---------------------------------------------------------------------------------------
// Fixtures

/// The repository root (the host package lives in `host/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Path of a built guest component: the example objects are in `objects/dist/`, the test
/// fixtures (`misbehave`, `foreign`, and the Python `py-kv`) in `tests/fixtures/dist/`. Python
/// components are named `py-<name>` (see [`Lang::object`]).
pub fn fixture(name: &str) -> PathBuf {
    let dir = match name {
        "misbehave" | "foreign" | "legacy" | "py-kv" => "tests/fixtures/dist",
        _ => "objects/dist",
    };
    let path = repo_root().join(dir).join(format!("{name}.wasm"));
    if !path.is_file() {
        if name.starts_with("py-") {
            panic!(
                "Python component {} is missing: run scripts/build-objects.sh (without \
                 --rust-only; it needs componentize-py: python3 -m pip install \
                 componentize-py==0.25.1), or skip the Python cases with `-- --skip python`",
                path.display()
            );
        }
        panic!(
            "guest component {} is missing: run scripts/build-objects.sh first",
            path.display()
        );
    }
    path
}

/// The languages objects are written in. The example objects (`hello`, `counter`,
/// `calculator`) and the `kv` store exist in both, with the same behaviour; tests written with
/// [`per_lang!`] run once for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// `objects/rust/<name>` → `objects/dist/<name>.wasm` (`kv`: an example too).
    Rust,
    /// `objects/python/<name>/app.py` → `objects/dist/py-<name>.wasm`; `kv` is the fixture
    /// `tests/fixtures/python/kv` → `tests/fixtures/dist/py-kv.wasm`. Python components are
    /// ~18 MB and take seconds to compile: deploy as few as a test needs.
    Python,
}

impl Lang {
    /// The built component of object `name` in this language.
    pub fn object(self, name: &str) -> PathBuf {
        match self {
            Lang::Rust => fixture(name),
            Lang::Python => fixture(&format!("py-{name}")),
        }
    }

    /// Deploy object `name` in this language under the id `id` (the same id for both
    /// languages, so answers that name the object match).
    #[track_caller]
    pub fn deploy(self, st: &Station, id: &str, name: &str) -> Value {
        st.deploy(id, &self.object(name))
    }
}

/// Defines a test once per [`Lang`]: `per_lang! { fn name(lang: Lang) { ... } }` expands to a
/// module `name` with the tests `name::rust` and `name::python`, each calling the body with its
/// language. Filter with `cargo test ... -- python` (or `--skip python`).
macro_rules! per_lang {
    ($(#[doc = $doc:literal])* fn $name:ident($lang:ident: Lang) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($lang: $crate::harness::Lang) $body

            #[test]
            fn rust() {
                run($crate::harness::Lang::Rust)
            }

            #[test]
            fn python() {
                run($crate::harness::Lang::Python)
            }
        }
    };
}

/// The bytes of a built guest component.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Lower-case hex sha256, as the station reports it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Percent-encode everything except RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encode every byte that is not an ASCII letter or digit (so `..` becomes `%2E%2E`).
pub fn pct_all(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An integer carried as a JSON number or as a decimal string (state values are strings).
pub fn as_i64(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("not an i64: {v}")),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        _ => panic!("expected an integer, got {v}"),
    }
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// A global limit on concurrently running stations.

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// `permits` of the [`MAX_STATIONS`] station slots, taken at once (a cluster test takes all
/// the slots its stations need in one step, so two cluster tests never each hold half of
/// what they need and wait for each other).
struct Slot {
    permits: usize,
}

impl Slot {
    fn acquire(permits: usize) -> Slot {
        assert!(
            (1..=MAX_STATIONS).contains(&permits),
            "a test may run 1 to {MAX_STATIONS} stations at once, not {permits}"
        );
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *n + permits > MAX_STATIONS {
            n = SLOT_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += permits;
        Slot { permits }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *n -= self.permits;
        SLOT_FREED.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// HTTP answers

/// One HTTP answer, with what was asked, for assertion messages.
#[derive(Debug, Clone)]
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn shown(&self) -> String {
        let t = self.text();
        if t.len() > 2000 {
            let mut cut = 2000;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}... ({} bytes)", &t[..cut], t.len())
        } else {
            t
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} -> {}: body is not JSON ({e}): {:?}",
                self.what,
                self.status,
                self.shown()
            )
        })
    }

    /// The first header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Assert the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status,
            status,
            "{} answered {} (expected {status}) with body {:?}",
            self.what,
            self.status,
            self.shown()
        );
        self
    }

    /// Assert the status and return the JSON body.
    #[track_caller]
    pub fn expect_json(self, status: u16) -> Value {
        self.expect(status).json()
    }

    /// Assert a station error: the status, JSON `{"error": code, "message": non-empty}`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        let v = self.clone().expect_json(status);
        assert_eq!(
            v["error"], code,
            "{} -> {}: expected error code {code:?} in {v}",
            self.what, self.status
        );
        let msg = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: error without a string message: {v}", self.what));
        assert!(!msg.is_empty(), "{}: empty error message: {v}", self.what);
        v
    }
}

// ---------------------------------------------------------------------------------------
// Stations

/// A test certificate authority and one certificate it signed for every 127.0.0.x station
/// address (and `localhost`), as PEM files in a temporary directory.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The stations' certificate, signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TestPki {
    /// A fresh CA and station certificate.
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = tempfile::Builder::new()
            .prefix("op-pki-")
            .tempdir()
            .expect("pki dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Object Primitive test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        for last in 1..=16u8 {
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::IpAddr::V4(
                    std::net::Ipv4Addr::new(127, 0, 0, last),
                )));
        }
        let key = KeyPair::generate().expect("station key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("station cert");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            cert: write("station.pem", cert.pem()),
            key: write("station-key.pem", key.serialize_pem()),
            _dir: dir,
        }
    }
}

/// How to start a station.
#[derive(Clone, Debug)]
pub struct Opts {
    durability: &'static str,
    data: Option<PathBuf>,
    args: Vec<String>,
    bind: String,
    /// Serve HTTPS, trusting this CA (PEM file) for clients and peers.
    tls_ca: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            durability: "none",
            data: None,
            args: Vec::new(),
            bind: "127.0.0.1".into(),
            tls_ca: None,
        }
    }
}

impl Opts {
    /// `--durability none`, a fresh data directory, no extra flags.
    pub fn new() -> Self {
        Opts::default()
    }

    /// `--durability fsync`.
    pub fn fsync(mut self) -> Self {
        self.durability = "fsync";
        self
    }

    /// Use this data directory instead of a fresh one.
    pub fn data(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data = Some(dir.into());
        self
    }

    /// One extra argument to `host serve`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// A flag and its value.
    pub fn flag(self, name: &str, value: impl ToString) -> Self {
        self.arg(name).arg(value.to_string())
    }

    /// Bind to this loopback address instead of 127.0.0.1 (partition tests give each station
    /// its own 127.0.0.x).
    pub fn bind(mut self, ip: &str) -> Self {
        self.bind = ip.to_string();
        self
    }

    /// Serve HTTPS with the test PKI's certificate, trusting its CA for other stations.
    pub fn tls(mut self, pki: &TestPki) -> Self {
        self.tls_ca = Some(pki.ca.clone());
        self.flag("--tls-cert", pki.cert.display())
            .flag("--tls-key", pki.key.display())
            .flag("--tls-ca", pki.ca.display())
    }

    /// `--join ADDR:PORT` of a running station (repeatable; `https://ADDR:PORT` over TLS).
    pub fn join(self, seed: &Station) -> Self {
        let seed = match seed.opts.tls_ca {
            Some(_) => seed.url.clone(),
            None => format!("{}:{}", seed.opts.bind, seed.port()),
        };
        self.flag("--join", seed)
    }

    /// Without any `--join`: for restarting a station with other seeds.
    pub fn without_joins(mut self) -> Self {
        let mut args = Vec::new();
        let mut it = std::mem::take(&mut self.args).into_iter();
        while let Some(a) = it.next() {
            if a == "--join" {
                it.next();
            } else {
                args.push(a);
            }
        }
        self.args = args;
        self
    }

    /// Whether the station may start not ready (`--join`, `--min-stations`).
    fn clustered(&self) -> bool {
        self.args
            .iter()
            .any(|a| a == "--join" || a == "--min-stations")
    }
}

/// A running `host serve` process. Killed on drop; its output is printed if the test panics.
pub struct Station {
    opts: Opts,
    /// The process's working directory, a fresh temporary directory (parent of the default data dir).
    workdir: tempfile::TempDir,
    data: PathBuf,
    child: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    port: u16,
    /// The port the next start binds (0: any free one).
    reuse_port: u16,
    /// `http://127.0.0.1:PORT` of the current process.
    pub url: String,
    output: Arc<Mutex<String>>,
    http: reqwest::blocking::Client,
    /// This station's slot, or the slots of the [`Cluster`] it belongs to.
    _slot: Arc<Slot>,
}

fn append_output(out: &Mutex<String>, tag: &str, line: &str) {
    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
    o.push_str(tag);
    o.push_str(line);
    if !line.ends_with('\n') {
        o.push('\n');
    }
    if o.len() > 2 * OUTPUT_CAP {
        let mut cut = o.len() - OUTPUT_CAP;
        while !o.is_char_boundary(cut) {
            cut += 1;
        }
        o.drain(..cut);
        o.insert_str(0, "[... earlier output dropped ...]\n");
    }
}

fn drain<R: Read + Send + 'static>(
    r: R,
    out: Arc<Mutex<String>>,
    tag: &'static str,
    first: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut first = first;
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            if let Some(tx) = first.take() {
                let _ = tx.send(line.clone());
            }
            append_output(&out, tag, &line);
        }
    })
}

impl Station {
    /// A station with default options (`--durability none`, fresh data dir).
    pub fn new() -> Station {
        Station::start(Opts::new())
    }

    /// Spawn `host serve --port 0 --bind 127.0.0.1 --data DIR --durability D [args]` and wait
    /// for its first stdout line `listening on http://127.0.0.1:PORT`.
    pub fn start(opts: Opts) -> Station {
        Station::start_in(opts, Arc::new(Slot::acquire(1)))
    }

    fn start_in(opts: Opts, slot: Arc<Slot>) -> Station {
        let workdir = tempfile::Builder::new()
            .prefix("op-station-")
            .tempdir()
            .expect("create temp dir");
        let data = opts
            .data
            .clone()
            .unwrap_or_else(|| workdir.path().join("data"));
        let http = match &opts.tls_ca {
            Some(ca) => https_client(ca),
            None => http_client(),
        };
        let mut st = Station {
            opts,
            workdir,
            data,
            child: None,
            readers: Vec::new(),
            port: 0,
            reuse_port: 0,
            url: String::new(),
            output: Arc::new(Mutex::new(String::new())),
            http,
            _slot: slot,
        };
        st.spawn();
        st
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "station already running");
        let mut cmd = Command::new(HOST);
        let port = self.reuse_port.to_string();
        cmd.arg("serve")
            .args(["--port", &port, "--bind", &self.opts.bind, "--data"])
            .arg(&self.data)
            .args(["--durability", self.opts.durability])
            .args(&self.opts.args)
            .current_dir(self.workdir.path())
            // wasmtime captures a backtrace on every Store drop when RUST_BACKTRACE is set.
            .env_remove("RUST_BACKTRACE")
            .env("NO_COLOR", "1")
            .env_remove("OP_STATION")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        append_output(&self.output, "[harness] ", &format!("starting {cmd:?}"));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {HOST}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        self.readers
            .push(drain(stdout, self.output.clone(), "[stdout] ", Some(tx)));
        self.readers
            .push(drain(stderr, self.output.clone(), "[stderr] ", None));
        self.child = Some(child);

        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("station printed no first line within {START_TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.reap_with_timeout(Duration::from_secs(10));
                panic!("station exited ({status:?}) before printing its first line")
            }
        };
        let first = first.trim_end_matches(['\r', '\n']);
        let bind = self.opts.bind.clone();
        let scheme = if self.opts.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let port = first
            .strip_prefix(&format!("listening on {scheme}://{bind}:"))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "first stdout line is {first:?}, expected `listening on {scheme}://{bind}:PORT`"
                )
            });
        assert_ne!(port, 0, "station reported port 0");
        self.port = port;
        self.url = format!("{scheme}://{bind}:{port}");

        // The line is printed after bind, so the port accepts connections; /health must answer.
        // A station that joins a cluster (or waits for `--min-stations`) is not ready yet:
        // 503 `not_ready` with a reason, until [`Station::wait_ready`].
        let health = self.get("/health");
        if self.opts.clustered() && health.status == 503 {
            let v = health.json();
            assert_eq!(v["status"], "not_ready", "GET /health: {v}");
            assert_eq!(v["ready"], false, "GET /health: {v}");
        } else {
            let v = health.expect_json(200);
            assert_eq!(v["status"], "ok", "GET /health: {v}");
        }
    }

    /// Wait for the process to exit (up to `t`), killing it if it does not.
    fn reap_with_timeout(&mut self, t: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + t;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        self.join_readers();
        status
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// The port of the current process.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The station's `--data` directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The compiled artifacts the station keeps for components with this sha256:
    /// `data/cache/{sha256}-{engine}.cwasm` (README, "Data layout").
    pub fn cache_files(&self, sha256: &str) -> Vec<PathBuf> {
        let dir = self.data.join("cache");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{sha256}-")) && n.ends_with(".cwasm"))
            })
            .collect();
        files.sort();
        files
    }

    /// The station process's working directory (parent of the default data dir).
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Everything the station printed so far (stdout and stderr, tagged).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The process id of the running station.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("station is not running").id()
    }

    /// SIGTERM, then assert a clean exit (status 0) within a bounded wait.
    pub fn stop(&mut self) {
        let pid = self.pid();
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let status = self.reap_with_timeout(STOP_TIMEOUT);
        append_output(&self.output, "[harness] ", &format!("stopped: {status:?}"));
        match status {
            None => panic!("station did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
            Some(st) => assert!(st.success(), "station exited with {st} after SIGTERM"),
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("station is not running");
        child.kill().expect("SIGKILL station");
        let status = child.wait().expect("wait for killed station");
        self.join_readers();
        append_output(&self.output, "[harness] ", &format!("killed: {status:?}"));
    }

    /// Start again on the same data directory (stopping gracefully first if running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Start again on the same data directory and the same port (stopping gracefully first if
    /// running), so clients holding its address reconnect to it.
    pub fn restart_on_same_port(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.reuse_port = self.port;
        self.spawn();
        self.reuse_port = 0;
    }

    /// Start again on the same data directory with other options (the data directory of
    /// `opts` is ignored), stopping gracefully first if running.
    pub fn restart_with(&mut self, opts: Opts) {
        if self.child.is_some() {
            self.stop();
        }
        self.opts = Opts {
            data: Some(self.data.clone()),
            ..opts
        };
        self.spawn();
    }

    /// The options the station runs with.
    pub fn opts(&self) -> Opts {
        self.opts.clone()
    }

    // -----------------------------------------------------------------------------------
    // HTTP

    /// A blocking HTTP client configured like the station's own (no proxy, bounded).
    pub fn client(&self) -> reqwest::blocking::Client {
        self.http.clone()
    }

    /// `METHOD path` with a body; `path` starts with `/` and may carry a query.
    pub fn request(&self, method: &str, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        request_with(&self.http, &self.url, method, path, body.into())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Vec::new())
    }

    /// GET, assert 200, return the JSON body.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> Value {
        self.get(path).expect_json(200)
    }

    /// Call an object: `METHOD /objects/{id}{path}`; `path` is empty or starts with `/` or `?`.
    pub fn call(&self, method: &str, id: &str, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.request(method, &format!("/objects/{id}{path}"), body)
    }

    /// `PUT /admin/objects/{id}` with these bytes.
    pub fn put_component(&self, id: &str, bytes: impl Into<Vec<u8>>) -> Resp {
        self.request("PUT", &format!("/admin/objects/{id}"), bytes)
    }

    /// Deploy the component at `wasm` as `id`; assert 201 (or 200 unchanged) and `ready`.
    #[track_caller]
    pub fn deploy(&self, id: &str, wasm: &Path) -> Value {
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("read {}: {e}", wasm.display()));
        let r = self.put_component(id, bytes);
        assert!(
            r.status == 201 || r.status == 200,
            "deploy {id} from {}: {} {}",
            wasm.display(),
            r.status,
            r.text()
        );
        let v = r.json();
        assert_eq!(v["object_id"], id, "deploy answer: {v}");
        assert_eq!(v["ready"], true, "deploy answer: {v}");
        v
    }

    /// Deploy a named fixture (see [`fixture`]) as `id`.
    #[track_caller]
    pub fn deploy_fixture(&self, id: &str, name: &str) -> Value {
        self.deploy(id, &fixture(name))
    }

    /// The ids listed by `GET /objects`.
    pub fn object_ids(&self) -> Vec<String> {
        let v = self.get_json("/objects");
        v["objects"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /objects: no objects array: {v}"))
            .iter()
            .map(|o| o["id"].as_str().expect("object id").to_string())
            .collect()
    }

    /// An HTTP/1.1 request written by hand, so the path reaches the station byte for byte
    /// (an HTTP client would resolve `%2e%2e` and friends).
    pub fn raw(&self, method: &str, raw_path: &str, body: &[u8]) -> Resp {
        raw_request(self.port, method, raw_path, body)
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
        if thread::panicking() {
            eprintln!(
                "===== station output (data dir {}) =====\n{}===== end of station output =====",
                self.data.display(),
                self.output()
            );
        }
    }
}

/// One request with a blocking client (usable from any thread).
pub fn request_with(
    http: &reqwest::blocking::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Resp {
    try_request_with(http, base, method, path, body, None).unwrap_or_else(|e| panic!("{e}"))
}

/// One request that may fail (connection refused, timed out): `Err` describes the failure.
/// `timeout`, when given, bounds this exchange instead of the client's timeout.
pub fn try_request_with(
    http: &reqwest::blocking::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Resp, String> {
    let what = format!("{method} {base}{path}");
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let url = format!("{base}{path}");
    let mut request = http.request(m, &url).body(body);
    if let Some(t) = timeout {
        request = request.timeout(t);
    }
    let r = request
        .send()
        .map_err(|e| format!("{what}: request failed: {}", error_chain(&e)))?;
    let what = format!("{method} {path}");
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r
        .bytes()
        .map_err(|e| format!("{what}: reading body failed: {e}"))?
        .to_vec();
    Ok(Resp {
        what,
        status,
        headers,
        body,
    })
}

/// An error and its causes, `: `-separated (reqwest hides "timed out" or "connection
/// refused" in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Raw HTTP/1.1 with `Connection: close`; decodes a chunked body.
pub fn raw_request(port: u16, method: &str, raw_path: &str, body: &[u8]) -> Resp {
    let what = format!("{method} {raw_path} (raw)");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{what}: {e}"));
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let head = format!(
        "{method} {raw_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    // The server may answer (and close) before reading a body it refuses; that is fine.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf)
        && buf.is_empty()
    {
        panic!("{what}: read: {e}");
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no header end in {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut rest = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(eol) = rest[i..].windows(2).position(|w| w == b"\r\n") {
            let size_str = String::from_utf8_lossy(&rest[i..i + eol]).into_owned();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("{what}: bad chunk size {size_str:?}"));
            i += eol + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[i..(i + size).min(rest.len())]);
            i += size + 2;
            if i >= rest.len() {
                break;
            }
        }
        rest = out;
    }
    Resp {
        what,
        status,
        headers,
        body: rest,
    }
}

// ---------------------------------------------------------------------------------------
// Clusters

/// Bound for one cluster convergence step on loopback: a joining station hearing from its
/// seed, an object's claim reaching every station (~0.5–1.5 s), a killed station declared dead
/// and its objects failed over (~1.5–5 s), a replica catching up.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);

/// The stations of one cluster test. Their slots are taken together when the cluster is
/// reserved, so tests that each need several stations cannot block one another half-way.
pub struct Cluster {
    slot: Arc<Slot>,
    size: usize,
    started: usize,
}

impl Cluster {
    /// Reserve slots for `size` stations (waits while other tests hold too many).
    pub fn reserve(size: usize) -> Cluster {
        Cluster {
            slot: Arc::new(Slot::acquire(size)),
            size,
            started: 0,
        }
    }

    /// Start one station of this cluster (at most `size` over the cluster's life; restarting
    /// a station with [`Station::restart`] does not count).
    pub fn start(&mut self, opts: Opts) -> Station {
        assert!(
            self.started < self.size,
            "cluster reserved for {} stations",
            self.size
        );
        self.started += 1;
        Station::start_in(opts, self.slot.clone())
    }

    /// Start `n` stations with `opts`, all but the first with `--join` the first; wait until
    /// each is ready and lists all `n` as alive. Returns them in start order.
    pub fn start_joined(&mut self, n: usize, opts: Opts) -> Vec<Station> {
        let first = self.start(opts.clone());
        let mut stations = vec![first];
        for _ in 1..n {
            let next = self.start(opts.clone().join(&stations[0]));
            stations.push(next);
        }
        let ids: Vec<String> = stations.iter().map(Station::station_id).collect();
        for st in &stations {
            st.wait_ready();
            st.wait_alive(&ids);
        }
        stations
    }
}

/// Two joined stations of `cluster` with the example `counter` deployed and homed on the first,
/// as both list it; with the two station ids.
pub fn two_stations_with_counter(cluster: &mut Cluster) -> (Vec<Station>, String, String) {
    let st = cluster.start_joined(2, Opts::new());
    let (id_a, id_b) = (st[0].station_id(), st[1].station_id());
    st[0].deploy_fixture("counter", "counter");
    st[0].wait_home("counter", &id_a);
    st[1].wait_home("counter", &id_a);
    (st, id_a, id_b)
}

impl Station {
    /// The station's id (from `/health`, which answers even while not ready).
    pub fn station_id(&self) -> String {
        let v = self.get("/health").json();
        v["station"]
            .as_str()
            .unwrap_or_else(|| panic!("GET /health without a station id: {v}"))
            .to_string()
    }

    /// Poll `/health` until it answers 200 `"ready": true`.
    #[track_caller]
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let r = self.get("/health");
            if r.status == 200 && r.json()["ready"] == true {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {CLUSTER_TIMEOUT:?} waiting for {} to become ready; \
                     last /health: {} {}",
                    self.url,
                    r.status,
                    r.text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /cluster/stations`.
    pub fn cluster_stations(&self) -> Value {
        self.get_json("/cluster/stations")
    }

    /// The entry of station `id` in this station's `/cluster/stations`, if listed.
    pub fn member(&self, id: &str) -> Option<Value> {
        self.cluster_stations()["stations"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == id).cloned())
    }

    /// Poll `/cluster/stations` until every station in `ids` is listed `alive`.
    #[track_caller]
    pub fn wait_alive(&self, ids: &[String]) {
        let what = format!("{} to list {ids:?} as alive", self.url);
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let last = self.cluster_stations();
            let all = ids.iter().all(|id| {
                last["stations"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|m| m["id"] == *id && m["state"] == "alive"))
            });
            if all {
                return;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {CLUSTER_TIMEOUT:?} waiting for {what}; last: {last}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The entry of object `id` in this station's `GET /objects`
    /// (`{"id","version","sha256","home","epoch","replicas"}`), if listed.
    pub fn object_entry(&self, id: &str) -> Option<Value> {
        self.get_json("/objects")["objects"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["id"] == id).cloned())
    }

    /// Poll `GET /objects` until object `id` is listed with an entry `ok` accepts (for example
    /// a given home); returns that entry.
    #[track_caller]
    pub fn wait_object(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let last = self.object_entry(id);
            if let Some(e) = last.as_ref().filter(|e| ok(e)) {
                return e.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {CLUSTER_TIMEOUT:?} waiting for {} to list object {id} {what}; \
                     last entry: {last:?}",
                    self.url
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll until this station lists object `id` as homed on station `home`.
    #[track_caller]
    pub fn wait_home(&self, id: &str, home: &str) -> Value {
        self.wait_object(id, &format!("homed on {home}"), |e| e["home"] == home)
    }

    /// `GET /cluster/internal/objects/{id}/position`: `{"role","epoch","home","applied_seq"}`.
    pub fn position(&self, id: &str) -> Value {
        self.get_json(&format!("/cluster/internal/objects/{id}/position"))
    }

    /// `METHOD path` with extra request headers.
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(m, format!("{}{path}", self.url))
            .body(body.into());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let what = format!("{method} {path} with {headers:?}");
        let r = request
            .send()
            .unwrap_or_else(|e| panic!("{what}: request failed: {}", error_chain(&e)));
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = r.bytes().expect("read body").to_vec();
        Resp {
            what,
            status,
            headers,
            body,
        }
    }

    /// A request that may fail instead of panicking, bounded by `timeout`.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Resp, String> {
        try_request_with(
            &self.http,
            &self.url,
            method,
            path,
            body.into(),
            Some(timeout),
        )
    }
}

/// Poll until every station in `replicas` holds object `id` as a replica of `home_station`
/// (its id) with the same applied seq as the home; returns that seq.
#[track_caller]
pub fn wait_replicas_caught_up(
    home: &Station,
    home_id: &str,
    replicas: &[&Station],
    id: &str,
) -> u64 {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    loop {
        let h = home.position(id);
        assert_eq!(h["role"], "home", "position of {id} on its home: {h}");
        let seq = h["applied_seq"].as_u64().expect("applied_seq");
        let last: Vec<Value> = replicas.iter().map(|r| r.position(id)).collect();
        if last.iter().all(|p| {
            p["role"] == "replica" && p["home"] == home_id && p["applied_seq"].as_u64() == Some(seq)
        }) {
            return seq;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {CLUSTER_TIMEOUT:?} waiting for the replicas of {id} to reach \
                 the home's applied seq {seq}; home: {h}; replicas: {last:?}"
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Poll until exactly one of `stations` holds object `id` as its home and every other one
/// that holds it is a replica of that home at the same epoch (no split brain); returns the
/// index of the home in `stations` and its position.
#[track_caller]
pub fn wait_one_home(stations: &[&Station], id: &str) -> (usize, Value) {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    loop {
        let positions: Vec<Value> = stations.iter().map(|s| s.position(id)).collect();
        let homes: Vec<usize> = (0..positions.len())
            .filter(|i| positions[*i]["role"] == "home")
            .collect();
        if let [h] = homes[..] {
            let home = &positions[h];
            let home_id = stations[h].station_id();
            let agreed = positions.iter().enumerate().all(|(i, p)| {
                i == h
                    || p["role"].is_null()
                    || (p["role"] == "replica"
                        && p["home"] == home_id.as_str()
                        && p["epoch"] == home["epoch"])
            });
            if agreed {
                return (h, home.clone());
            }
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = stations
                .iter()
                .zip(&positions)
                .map(|(s, p)| format!("{}: {p}", s.url))
                .collect();
            panic!(
                "timed out after {CLUSTER_TIMEOUT:?} waiting for exactly one home of {id} \
                 with the others its replicas; positions:\n{}",
                shown.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Write loads

/// One acknowledged (200) request of a [`WriteLoad`] writer.
#[derive(Debug, Clone)]
pub struct Ack {
    /// When the request was sent.
    pub sent: Instant,
    /// When its answer arrived.
    pub at: Instant,
    /// The answer's JSON body.
    pub body: Value,
}

/// What one writer of a [`WriteLoad`] saw: every 200 answer and every other outcome (when it
/// arrived, and the status and body or the transport error).
#[derive(Debug, Default, Clone)]
pub struct WriterLog {
    /// Where this writer sent its requests: `POST {base}{path}`.
    pub target: String,
    pub acks: Vec<Ack>,
    pub failures: Vec<(Instant, String)>,
}

/// Writer threads, each repeating one request (`POST` with a body) against one station until
/// stopped, recording every answer. A failed request is retried after 20 ms, so a refused
/// connection does not spin.
pub struct WriteLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    logs: Vec<Arc<Mutex<WriterLog>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Bound on one request of a [`WriteLoad`] writer.
/// Longer than the station's own waits (a call's deadline, a sync replica's acknowledgement),
/// so the writer sees the station's answer rather than its own timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// A writer stops on its own after this long, whatever the test does.
const WRITE_LOAD_LIMIT: Duration = Duration::from_secs(120);

/// A blocking HTTP client for talking to stations: no proxy, every request bounded by
/// `HTTP_TIMEOUT` unless it says otherwise.
/// How many calls of object `id` whose line contains `route` have started (their `call.start`
/// is in the object's log).
pub fn calls_started(st: &Station, id: &str, route: &str) -> usize {
    let logs = st.get_json(&format!("/objects/{id}?logs=true&limit=10000"));
    logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|e| {
            e["event"] == "call.start" && e["message"].as_str().is_some_and(|m| m.contains(route))
        })
        .count()
}

/// Waits until `n` calls of object `id` matching `route` have started (see [`calls_started`]).
pub fn wait_calls_started(st: &Station, id: &str, route: &str, n: usize) {
    poll(
        &format!("{n} call.start of {route} in {id}'s log"),
        Duration::from_secs(30),
        || (calls_started(st, id, route) >= n).then_some(()),
    );
}

/// [`http_client`] trusting the CA in the PEM file `ca` for https.
pub fn https_client(ca: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("read CA");
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("build HTTPS client")
}

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("build HTTP client")
}

/// The stations' base URLs a rotating [`WriteLoad`] sends to; the test updates them when a
/// station restarts on a new port.
#[derive(Clone, Default)]
pub struct Targets(Arc<std::sync::RwLock<Vec<String>>>);

impl Targets {
    /// The base URLs of `stations`, in order.
    pub fn of(stations: &[Station]) -> Targets {
        Targets(Arc::new(std::sync::RwLock::new(
            stations.iter().map(|s| s.url.clone()).collect(),
        )))
    }

    /// Station `i` now answers at `url`.
    pub fn set(&self, i: usize, url: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner())[i] = url.to_string();
    }

    /// The `n`th target, round-robin.
    fn nth(&self, n: usize) -> String {
        let urls = self.0.read().unwrap_or_else(|e| e.into_inner());
        urls[n % urls.len()].clone()
    }
}

impl WriteLoad {
    /// One writer per `(station, path, body)`: `POST {station.url}{path}` with `body`.
    pub fn start(writers: &[(&Station, String, &str)]) -> WriteLoad {
        let writers: Vec<(Targets, String, &str)> = writers
            .iter()
            .map(|(st, path, body)| (Targets::of(std::slice::from_ref(*st)), path.clone(), *body))
            .collect();
        WriteLoad::start_rotating(&writers)
    }

    /// One writer per `(targets, path, body)`, each sending `POST {target}{path}` with `body` to
    /// its targets in turn (one request each), so a station that is down only costs a retry.
    pub fn start_rotating(writers: &[(Targets, String, &str)]) -> WriteLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        for (w, (targets, path, body)) in writers.iter().enumerate() {
            let log = Arc::new(Mutex::new(WriterLog {
                target: format!("{}{path}", targets.nth(0)),
                ..WriterLog::default()
            }));
            let (http, targets, path, body) = (
                http_client(),
                targets.clone(),
                path.clone(),
                body.as_bytes().to_vec(),
            );
            let (stop, log2) = (stop.clone(), log.clone());
            threads.push(thread::spawn(move || {
                let started = Instant::now();
                let mut turn = w;
                while !stop.load(Ordering::Acquire) && started.elapsed() < WRITE_LOAD_LIMIT {
                    let sent = Instant::now();
                    let base = targets.nth(turn);
                    turn += 1;
                    let r = try_request_with(
                        &http,
                        &base,
                        "POST",
                        &path,
                        body.clone(),
                        Some(WRITE_TIMEOUT),
                    );
                    let now = Instant::now();
                    let failure = match r {
                        Ok(r) if r.status == 200 => {
                            let mut log = log2.lock().unwrap_or_else(|e| e.into_inner());
                            log.acks.push(Ack {
                                sent,
                                at: now,
                                body: r.json(),
                            });
                            continue;
                        }
                        Ok(r) => format!("{} {}", r.status, r.text()),
                        Err(e) => e,
                    };
                    log2.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failures
                        .push((now, failure));
                    thread::sleep(Duration::from_millis(20));
                }
            }));
            logs.push(log);
        }
        WriteLoad {
            stop,
            logs,
            threads,
        }
    }

    /// A copy of every writer's log so far.
    pub fn snapshot(&self) -> Vec<WriterLog> {
        self.logs
            .iter()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Poll (bounded by `timeout`) until every writer has at least `n` acknowledged writes
    /// sent at or after `since`.
    #[track_caller]
    pub fn wait_acks_each(&self, n: usize, since: Instant, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.snapshot();
            if logs
                .iter()
                .all(|l| l.acks.iter().filter(|a| a.sent >= since).count() >= n)
            {
                return;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = logs
                    .iter()
                    .map(|l| {
                        format!(
                            "{}: {} acks ({} since), {} failures, last failure {:?}",
                            l.target,
                            l.acks.len(),
                            l.acks.iter().filter(|a| a.sent >= since).count(),
                            l.failures.len(),
                            l.failures.last().map(|(_, f)| f)
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {n} acknowledged writes per writer; \
                     writers: {summary:#?}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the writers (each finishes its request in flight) and return their logs.
    pub fn finish(mut self) -> Vec<WriterLog> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        for t in std::mem::take(&mut self.threads) {
            t.join().expect("writer thread panicked");
        }
        self.snapshot()
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------
// State files

/// Parse a `state.tsv` the way a user's tools would: tab-separated, `"`-quoted, header
/// `seq hlc op key value`, every row exactly 5 fields, op `set`, `del` or `commit`.
/// Returns the rows (without the header).
#[track_caller]
pub fn read_state_tsv(path: &Path) -> Vec<Vec<String>> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let headers = rdr
        .headers()
        .unwrap_or_else(|e| panic!("{}: header: {e}", path.display()))
        .clone();
    let names: Vec<&str> = headers.iter().collect();
    assert_eq!(
        names,
        ["seq", "hlc", "op", "key", "value"],
        "{}: header row",
        path.display()
    );
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap_or_else(|e| panic!("{}: row {}: {e}", path.display(), i + 1));
        assert_eq!(
            rec.len(),
            5,
            "{}: row {} has {} fields",
            path.display(),
            i + 1,
            rec.len()
        );
        let row: Vec<String> = rec.iter().map(str::to_string).collect();
        row[0].parse::<u64>().unwrap_or_else(|_| {
            panic!(
                "{}: row {}: seq {:?} is not a number",
                path.display(),
                i + 1,
                row[0]
            )
        });
        // `commit` rows close a batch (the host's atomic-batch marker; see store/).
        assert!(
            row[2] == "set" || row[2] == "del" || row[2] == "commit",
            "{}: row {}: op {:?}",
            path.display(),
            i + 1,
            row[2]
        );
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------
// CLI

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOut {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// Assert exit 0 and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "host {:?} exited {}\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Assert a non-zero exit with exactly one line `error: ...` on stderr; return that line.
    #[track_caller]
    pub fn fails_with_one_line(&self) -> String {
        assert!(
            !self.status.success(),
            "host {:?} should fail but exited 0\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "host {:?}: expected one error line on stderr, got {:?}",
            self.args,
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "host {:?}: stderr line does not start with `error: `: {:?}",
            self.args,
            lines[0]
        );
        lines[0].to_string()
    }
}

/// Run `host ARGS` with a bounded wait (60 s), `RUST_BACKTRACE` and `OP_STATION` removed
/// unless given in `env`.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> CliOut {
    let mut cmd = Command::new(HOST);
    cmd.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("OP_STATION")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {HOST}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for CLI") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("host {args:?} did not finish within 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    };
    CliOut {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

/// A long-running `host ARGS` (`host logs --follow`, say) whose stdout lines are collected as
/// they are printed; killed on drop.
pub struct CliProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl CliProcess {
    /// Starts `host ARGS` with `RUST_BACKTRACE` and `OP_STATION` removed.
    pub fn spawn(args: &[&str]) -> CliProcess {
        let mut child = Command::new(HOST)
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .env_remove("OP_STATION")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {HOST}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut err = child.stderr.take().expect("piped stderr");
        let collected = lines.clone();
        let out_reader = thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let err_text = stderr.clone();
        let err_reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                err_text
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        CliProcess {
            child,
            lines,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// The stdout lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}
