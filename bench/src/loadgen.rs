//! The load generator: `wrk` (Debian's package) driven by a generated Lua script, or `oha`
//! (crates.io) as a fallback. Either way a run yields the same [`LoadResult`].
//!
//! With wrk, the Lua script sets the method and path (or picks a random object per request for a
//! spread load) and its `done` hook prints one `BENCH_JSON {…}` line with the counts and latency
//! percentiles, so nothing depends on wrk's human-readable summary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// Which tool runs the load.
#[derive(Debug, Clone)]
pub enum Tool {
    /// `wrk` at this path.
    Wrk(PathBuf),
    /// `oha` at this path.
    Oha(PathBuf),
}

impl Tool {
    /// Finds `wrk`, else `oha`, on `PATH` or in `~/.cargo/bin`. `prefer` (`wrk` or `oha`) picks one
    /// when both exist.
    pub fn detect(prefer: Option<&str>) -> Option<Tool> {
        let wrk = find_program("wrk").map(Tool::Wrk);
        let oha = find_program("oha").map(Tool::Oha);
        match prefer {
            Some("oha") => oha.or(wrk),
            _ => wrk.or(oha),
        }
    }

    /// Name and version, for the report.
    pub fn describe(&self) -> String {
        match self {
            // `wrk -v` prints its version on stdout and exits 1.
            Tool::Wrk(path) => first_line(path, "-v")
                .map(|l| {
                    l.split(" Copyright")
                        .next()
                        .unwrap_or(&l)
                        .trim()
                        .to_string()
                })
                .unwrap_or_else(|| "wrk".into()),
            Tool::Oha(path) => first_line(path, "--version").unwrap_or_else(|| "oha".into()),
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn first_line(program: &Path, arg: &str) -> Option<String> {
    let out = std::process::Command::new(program).arg(arg).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Which paths a load hits.
#[derive(Debug, Clone)]
pub enum Paths {
    /// Every request goes to this path (with its query).
    One(String),
    /// Each request picks `{prefix}{n}` with n uniform in `0..count`.
    Spread {
        /// Path prefix, e.g. `/objects/c`.
        prefix: String,
        /// Number of targets.
        count: u32,
    },
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    /// HTTP method.
    pub method: String,
    /// Target paths.
    pub paths: Paths,
    /// Open connections.
    pub connections: u32,
    /// Load generator threads.
    pub threads: u32,
    /// How long to run.
    pub duration: Duration,
}

/// What a load run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    /// Responses received (any status).
    pub requests: u64,
    /// Responses with a status outside 2xx/3xx.
    pub non_success: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Successful responses per second.
    pub success_rps: f64,
    /// Latency percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// Runs `load` against `base_url` (`http://127.0.0.1:PORT`); `work_dir` holds the Lua script.
pub async fn run(
    tool: &Tool,
    base_url: &str,
    load: &Load,
    work_dir: &Path,
) -> anyhow::Result<LoadResult> {
    let secs = load.duration.as_secs_f64().max(1.0).round() as u64;
    // Bounded: the tool gets its duration plus a margin, then it is killed.
    let limit = load.duration + Duration::from_secs(30);
    match tool {
        Tool::Wrk(wrk) => {
            let script = work_dir.join(format!("load-{}.lua", rand::random::<u32>()));
            std::fs::write(&script, wrk_script(load))
                .with_context(|| format!("writing {}", script.display()))?;
            let mut command = tokio::process::Command::new(wrk);
            command.args([
                format!("-t{}", load.threads.max(1)),
                format!("-c{}", load.connections),
                format!("-d{secs}s"),
                "--timeout".into(),
                "5s".into(),
                "-s".into(),
                script.display().to_string(),
                format!("{base_url}/"),
            ]);
            let text = output(command, limit).await?;
            let _ = std::fs::remove_file(&script);
            parse_wrk(&text)
        }
        Tool::Oha(oha) => {
            let help = first_help(oha);
            let mut command = tokio::process::Command::new(oha);
            command.args([
                "-z".to_string(),
                format!("{secs}s"),
                "-c".into(),
                load.connections.to_string(),
                "-m".into(),
                load.method.clone(),
                "--no-tui".into(),
            ]);
            if help.contains("--output-format") {
                command.args(["--output-format", "json"]);
            } else {
                command.arg("--json");
            }
            match &load.paths {
                Paths::One(path) => {
                    command.arg(format!("{base_url}{path}"));
                }
                Paths::Spread { prefix, count } => {
                    command.arg("--rand-regex-url");
                    command.arg(format!(
                        "{}{prefix}{}",
                        regex_escape(base_url),
                        number_regex(*count)
                    ));
                }
            }
            let text = output(command, limit).await?;
            parse_oha(&text)
        }
    }
}

fn first_help(oha: &Path) -> String {
    std::process::Command::new(oha)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs a command to completion (killed after `limit`) and returns its stdout; fails with its
/// stderr when it exits non-zero.
async fn output(mut command: tokio::process::Command, limit: Duration) -> anyhow::Result<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().context("starting the load generator")?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .context("the load generator ran past its time limit")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "the load generator failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        );
    }
    Ok(stdout)
}

/// The Lua script for one wrk run.
pub fn wrk_script(load: &Load) -> String {
    let mut script = String::new();
    script.push_str(&format!("wrk.method = {}\n", lua_string(&load.method)));
    match &load.paths {
        Paths::One(path) => {
            script.push_str(&format!("wrk.path = {}\n", lua_string(path)));
        }
        Paths::Spread { prefix, count } => {
            script.push_str(&format!(
                "local prefix = {}\nlocal method = wrk.method\n\
                 function setup(thread) thread:set(\"seed\", math.random(1, 2147483647)) end\n\
                 function init(args) math.randomseed(seed or os.time()) end\n\
                 function request()\n  return wrk.format(method, prefix .. math.random(0, {}))\nend\n",
                lua_string(prefix),
                count.saturating_sub(1)
            ));
        }
    }
    script.push_str(
        r#"function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"status_errors\":%d,\"socket_errors\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%f,\"max_us\":%d}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"#,
    );
    script
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Reads the `BENCH_JSON` line the script's `done` hook printed.
fn parse_wrk(stdout: &str) -> anyhow::Result<LoadResult> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .with_context(|| format!("wrk printed no BENCH_JSON line: {}", stdout.trim()))?;
    let v: serde_json::Value = serde_json::from_str(line).context("parsing wrk's summary")?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let requests = num("requests") as u64;
    let non_success = num("status_errors") as u64;
    let seconds = num("duration_us") / 1e6;
    Ok(LoadResult {
        requests,
        non_success,
        socket_errors: num("socket_errors") as u64,
        seconds,
        success_rps: if seconds > 0.0 {
            requests.saturating_sub(non_success) as f64 / seconds
        } else {
            0.0
        },
        p50_ms: num("p50_us") / 1e3,
        p90_ms: num("p90_us") / 1e3,
        p99_ms: num("p99_us") / 1e3,
        mean_ms: num("mean_us") / 1e3,
        max_ms: num("max_us") / 1e3,
    })
}

/// Reads oha's JSON summary (latencies in seconds).
fn parse_oha(stdout: &str) -> anyhow::Result<LoadResult> {
    let start = stdout.find('{').context("oha printed no JSON")?;
    let v: serde_json::Value =
        serde_json::from_str(&stdout[start..]).context("parsing oha's JSON")?;
    let seconds = v["summary"]["total"].as_f64().unwrap_or(0.0);
    let mut requests = 0u64;
    let mut non_success = 0u64;
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, count) in codes {
            let count = count.as_u64().unwrap_or(0);
            requests += count;
            if !(code.starts_with('2') || code.starts_with('3')) {
                non_success += count;
            }
        }
    }
    let socket_errors = v["errorDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|c| c.as_u64()).sum())
        .unwrap_or(0);
    let ms = |p: &serde_json::Value| p.as_f64().unwrap_or(0.0) * 1e3;
    Ok(LoadResult {
        requests,
        non_success,
        socket_errors,
        seconds,
        success_rps: if seconds > 0.0 {
            requests.saturating_sub(non_success) as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(&v["latencyPercentiles"]["p50"]),
        p90_ms: ms(&v["latencyPercentiles"]["p90"]),
        p99_ms: ms(&v["latencyPercentiles"]["p99"]),
        mean_ms: ms(&v["summary"]["average"]),
        max_ms: ms(&v["summary"]["slowest"]),
    })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".+*?()|[]{}^$\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// A regex matching the decimal numbers `0..count` without leading zeros: exact for counts up to
/// 10 and for 100 (the benchmark's spread); other counts get `0..100`.
fn number_regex(count: u32) -> String {
    if count <= 10 {
        format!("[0-{}]", count.saturating_sub(1))
    } else {
        "([1-9]?[0-9])".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_script_picks_every_object() {
        let script = wrk_script(&Load {
            method: "POST".into(),
            paths: Paths::Spread {
                prefix: "/objects/c".into(),
                count: 100,
            },
            connections: 32,
            threads: 1,
            duration: Duration::from_secs(1),
        });
        assert!(script.contains("wrk.method = \"POST\""));
        assert!(script.contains("local prefix = \"/objects/c\""));
        assert!(script.contains("math.random(0, 99)"));
        assert!(script.contains("BENCH_JSON"));
    }

    #[test]
    fn parses_the_done_line() {
        let out = "Running 3s test\nBENCH_JSON {\"requests\":3000,\"duration_us\":3000000,\
                   \"status_errors\":300,\"socket_errors\":0,\"p50_us\":400,\"p90_us\":900,\
                   \"p99_us\":2000,\"mean_us\":500.5,\"max_us\":9000}\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 3000);
        assert_eq!(r.success_rps, 900.0);
        assert_eq!(r.p99_ms, 2.0);
    }

    #[test]
    fn parses_oha_json() {
        let out = r#"{"summary":{"total":2.0,"average":0.001,"slowest":0.01},
            "latencyPercentiles":{"p50":0.0005,"p90":0.001,"p99":0.002},
            "statusCodeDistribution":{"200":1000,"500":10},"errorDistribution":{}}"#;
        let r = parse_oha(out).unwrap();
        assert_eq!(r.requests, 1010);
        assert_eq!(r.non_success, 10);
        assert_eq!(r.success_rps, 500.0);
        assert_eq!(r.p50_ms, 0.5);
    }

    #[test]
    fn escapes_urls_for_oha() {
        assert_eq!(
            regex_escape("http://127.0.0.1:80"),
            "http://127\\.0\\.0\\.1:80"
        );
    }
}
