//! Server processes the driver starts: `host serve` stations and the `baseline` server.
//!
//! Both print `listening on http://ADDR` as their first stdout line; the driver reads the address
//! from it (every server binds port 0 on 127.0.0.1, so runs never collide). Servers run without
//! `RUST_BACKTRACE` (wasmtime captures a backtrace on every store drop when it is set, ~7% CPU),
//! their stderr goes to a file for error messages, and a server is killed if its handle is
//! dropped, so no process outlives the driver's scope for it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Process id.
    pub pid: u32,
    /// Time from spawn to the `listening on` line.
    pub startup: Duration,
    stderr_path: PathBuf,
}

/// Memory figures of a process, from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// Resident set size.
    pub vm_rss_kib: u64,
    /// Peak resident set size.
    pub vm_hwm_kib: u64,
    /// Anonymous resident memory (heaps, instance memories).
    pub rss_anon_kib: u64,
    /// File-backed resident memory (the binary, mmapped compiled artifacts), counted once per
    /// mapping: a file mapped by many objects counts many times.
    pub rss_file_kib: u64,
    /// Proportional set size (/proc/PID/smaps_rollup): shared pages divided among their users,
    /// so a file mapped many times by this process counts once. 0 if unreadable.
    pub pss_kib: u64,
}

impl Memory {
    /// VmRSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.vm_rss_kib as f64 / 1024.0
    }

    /// Anonymous RSS in MiB.
    pub fn anon_mib(&self) -> f64 {
        self.rss_anon_kib as f64 / 1024.0
    }

    /// PSS in MiB.
    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

impl Server {
    /// Starts `program args…` and waits for its `listening on http://ADDR` line. Its stderr goes
    /// to `stderr_path` (appended).
    pub async fn spawn(
        program: &Path,
        args: &[OsString],
        stderr_path: &Path,
    ) -> anyhow::Result<Server> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .with_context(|| format!("opening {}", stderr_path.display()))?;
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await;
        let startup = started.elapsed();
        let url = match first {
            Ok(Ok(Some(line))) => match line.strip_prefix("listening on ") {
                Some(url) => url.trim().to_string(),
                None => bail!(
                    "{} printed {line:?} instead of `listening on http://…`",
                    program.display()
                ),
            },
            Ok(Ok(None)) | Ok(Err(_)) => {
                let _ = child.wait().await;
                bail!(
                    "{} exited before listening: {}",
                    program.display(),
                    tail(stderr_path)
                )
            }
            Err(_) => bail!(
                "{} printed no address within {STARTUP_TIMEOUT:?}",
                program.display()
            ),
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            url,
            pid,
            startup,
            stderr_path: stderr_path.to_path_buf(),
        })
    }

    /// Starts a station: `host serve --port 0 --bind 127.0.0.1 --data DIR --durability D --no-watch`.
    pub async fn station(
        host: &Path,
        data_dir: &Path,
        durability: &str,
        stderr_path: &Path,
    ) -> anyhow::Result<Server> {
        Server::station_with(host, data_dir, durability, &[], stderr_path).await
    }

    /// Starts a station like [`Server::station`] with more `host serve` flags after the usual
    /// ones, e.g. `--join 127.0.0.1:PORT --gossip-interval-ms 100`.
    pub async fn station_with(
        host: &Path,
        data_dir: &Path,
        durability: &str,
        extra: &[OsString],
        stderr_path: &Path,
    ) -> anyhow::Result<Server> {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--port".into(),
            "0".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--data".into(),
            data_dir.into(),
            "--durability".into(),
            durability.into(),
            "--no-watch".into(),
        ];
        args.extend(extra.iter().cloned());
        Server::spawn(host, &args, stderr_path)
            .await
            .context("starting a station")
    }

    /// `127.0.0.1:PORT`: the address `host serve --join` takes.
    pub fn address(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .unwrap_or(&self.url)
            .trim_end_matches('/')
    }

    /// The process's memory figures now.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = |key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let rollup =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid)).unwrap_or_default();
        let pss_kib = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Memory {
            vm_rss_kib: kib("VmRSS"),
            vm_hwm_kib: kib("VmHWM"),
            rss_anon_kib: kib("RssAnon"),
            rss_file_kib: kib("RssFile"),
            pss_kib,
        })
    }

    /// The last lines the server wrote to stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_path)
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited after a while.
    pub async fn stop(mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) with a pid this driver spawned and has not reaped yet.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last few lines of a log file, on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return "(no stderr output)".into();
    }
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// An HTTP client for loopback: no proxy (the environment may set one), generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building an HTTP client")
}

/// Deploys `bytes` as object `id` and returns the time the PUT took.
pub async fn deploy(
    client: &reqwest::Client,
    station: &str,
    id: &str,
    bytes: &[u8],
) -> anyhow::Result<Duration> {
    deploy_with(client, station, id, "", bytes).await
}

/// Like [`deploy`], with a query string for the deploy (`quota=readers%3D4`, ...).
pub async fn deploy_with(
    client: &reqwest::Client,
    station: &str,
    id: &str,
    query: &str,
    bytes: &[u8],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let response = client
        .put(format!("{station}/admin/objects/{id}{query}"))
        .body(bytes.to_vec())
        .send()
        .await
        .with_context(|| format!("deploying {id}"))?;
    let elapsed = started.elapsed();
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("deploying {id}: {status}: {body}");
    }
    Ok(elapsed)
}

/// Sends one request and checks for a 2xx answer; returns the time it took.
pub async fn call(
    client: &reqwest::Client,
    station: &str,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .request(method.clone(), format!("{station}{path}"))
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!(
            "{method} {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(elapsed)
}
