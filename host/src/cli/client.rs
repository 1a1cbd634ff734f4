//! The client verbs (`deploy`, `call`, `logs`, `versions`, `rollback`, `objects`): HTTP requests
//! to a station and plain-text output. Every failure becomes one line on stderr and a non-zero exit.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::StationArgs;
use crate::store::LogRecord;

mod follow;

/// A station the CLI talks to.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The CA file trusted besides the system's, for the clients made later.
    ca: Option<std::path::PathBuf>,
}

impl Client {
    /// A client for the station named in the flags.
    pub fn new(args: &StationArgs) -> anyhow::Result<Client> {
        let base = args.station.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--station must be a URL like http://127.0.0.1:8001, not {base:?}");
        }
        let tls = crate::tls::client_config(args.ca.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(120))
            .build()
            .context("creating the HTTP client")?;
        Ok(Client {
            http,
            base,
            token: args.token.clone(),
            ca: args.ca.clone(),
        })
    }

    /// A request to an admin or station route, with the admin token when one is given.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.object_request(method, path);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// A request to an object: never with the admin token (the object would see it).
    fn object_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    /// Sends a request and returns (status, body), turning connection failures into a clear error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, bytes::Bytes)> {
        let response = request
            .send()
            .await
            .map_err(|e| self.describe_send_error(e))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the response")?;
        Ok((status, body))
    }

    /// A request that got no answer, as one clear error (TLS and connection failures named).
    fn describe_send_error(&self, e: reqwest::Error) -> anyhow::Error {
        // A TLS failure is a connect error too: say what the certificate check said.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut root = e.to_string();
        while let Some(error) = cause {
            root = error.to_string();
            cause = error.source();
        }
        if root.contains("certificate") || root.contains("Certificate") {
            return anyhow::anyhow!(
                "TLS with the station at {} failed: {root} (give its CA with --ca FILE)",
                self.base
            );
        }
        if e.is_connect() {
            anyhow::anyhow!(
                "cannot reach the station at {} (is `host serve` running?)",
                self.base
            )
        } else {
            anyhow::anyhow!("request to {} failed: {e}", self.base)
        }
    }

    /// A client for long-lived streams: no bound on the whole request, only on connecting
    /// (the stream's own silence limit detects a dead connection).
    fn streaming(&self) -> anyhow::Result<reqwest::Client> {
        reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config(self.ca.as_deref())?)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("creating the HTTP client")
    }

    /// `GET path` (with the admin token when given), which must succeed and answer JSON.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// Sends a request that must succeed and answer JSON.
    async fn json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            bail!("{}", describe_error(status, &body));
        }
        serde_json::from_slice(&body).context("the station answered with invalid JSON")
    }
}

/// One line from an error response: `code: message` when it is the station's JSON error.
fn describe_error(status: reqwest::StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("error").is_some() => format!(
            "{} ({}): {}",
            v["error"].as_str().unwrap_or("error"),
            status.as_u16(),
            v["message"].as_str().unwrap_or("")
        ),
        _ => format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(body).trim()
        ),
    }
}

/// What `host deploy` was asked besides the file.
pub struct DeployArgs {
    /// Object id (default: the file stem).
    pub id: Option<String>,
    /// Note stored with the version.
    pub note: String,
    /// Where a new object is homed.
    pub place: super::Place,
    /// Deploy without state.
    pub stateless: bool,
    /// Quota overrides (`NAME=N,...` or `default`).
    pub quota: Option<String>,
}

/// `host deploy`: uploads the component and prints the deploy's answer.
pub async fn deploy(args: &StationArgs, file: &Path, options: DeployArgs) -> anyhow::Result<()> {
    let DeployArgs {
        id,
        note,
        place,
        stateless,
        quota,
    } = options;
    if let Some(quota) = quota.as_deref().filter(|q| *q != "default") {
        quota
            .parse::<crate::station::QuotaOverrides>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let note = note.as_str();
    let id = match id {
        Some(id) => id,
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "cannot derive an object id from {}; pass --id",
                    file.display()
                )
            })?,
    };
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let client = Client::new(args)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let request = client
        .request(reqwest::Method::PUT, &format!("/admin/objects/{id}"))
        .query(&[
            ("note", note),
            (
                "place",
                if place == super::Place::Auto {
                    "auto"
                } else {
                    "here"
                },
            ),
            ("stateless", if stateless { "true" } else { "false" }),
        ])
        .query(
            &quota
                .as_deref()
                .map(|q| vec![("quota", q)])
                .unwrap_or_default(),
        )
        .header("x-deployed-by", format!("cli:{user}"))
        .header(reqwest::header::CONTENT_LENGTH, bytes.len());
    let (body, progress) = super::progress::upload(bytes, format!("compiling {id} on the station"));
    let answer = client.json(request.body(body)).await;
    progress.finish_and_clear();
    let v = answer?;
    if v["unchanged"].as_bool() == Some(true) {
        println!("{id} unchanged at version {} (same bytes)", v["version"]);
    } else {
        println!(
            "deployed {id}{} version {} sha256 {} ({} bytes, compiled in {:.0} ms)",
            if stateless { " (stateless)" } else { "" },
            v["version"],
            v["sha256"].as_str().unwrap_or(""),
            v["size"],
            v["compile_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// `host call`: prints the body; exits non-zero on a status >= 400.
pub async fn call(
    args: &StationArgs,
    id: &str,
    method: &str,
    data: Option<String>,
    path: &str,
) -> anyhow::Result<()> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("{method:?} is not an HTTP method"))?;
    let client = Client::new(args)?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let path = if path == "/" { String::new() } else { path };
    let mut request = client.object_request(method, &format!("/objects/{id}{path}"));
    if let Some(data) = data {
        request = request
            .header("content-type", "application/json")
            .body(data);
    }
    let (status, body) = client.send(request).await?;
    if status.as_u16() >= 400 {
        bail!("{}", describe_error(status, &body));
    }
    println!("{}", String::from_utf8_lossy(&body));
    Ok(())
}

fn print_log_line(line: &LogRecord) {
    let request_id = if line.request_id.is_empty() {
        "-"
    } else {
        &line.request_id
    };
    println!(
        "{} {:5} {} {:10} {}",
        line.ts_ms,
        line.level.as_str(),
        request_id,
        line.event,
        line.message
    );
}

/// `host logs [--follow]`.
pub async fn logs(
    args: &StationArgs,
    id: &str,
    level: Option<String>,
    limit: usize,
    follow: bool,
) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    if follow {
        let query = follow::FollowQuery {
            id,
            level: level.as_deref(),
            limit,
        };
        return follow::follow(&client, query).await;
    }
    let mut query = vec![("limit".to_string(), limit.to_string())];
    if let Some(level) = &level {
        query.push(("level".into(), level.clone()));
    }
    let v = client
        .json(
            client
                .request(reqwest::Method::GET, &format!("/admin/objects/{id}/logs"))
                .query(&query),
        )
        .await?;
    let mut lines: Vec<LogRecord> = serde_json::from_value(v["logs"].clone())
        .context("the station answered log lines this CLI cannot read")?;
    lines.reverse();
    lines.iter().for_each(print_log_line);
    Ok(())
}

/// `host versions`.
pub async fn versions(args: &StationArgs, id: &str) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let v = client
        .json(client.request(
            reqwest::Method::GET,
            &format!("/admin/objects/{id}/versions"),
        ))
        .await?;
    let current = v["current"].as_u64().unwrap_or(0);
    println!(
        "{:>7}  {:<12}  {:>10}  {:<13}  {:<16}  note",
        "version", "sha256", "size", "deployed_at", "deployed_by"
    );
    for version in v["versions"].as_array().into_iter().flatten() {
        let n = version["version"].as_u64().unwrap_or(0);
        println!(
            "{:>6}{}  {:<12}  {:>10}  {:<13}  {:<16}  {}",
            n,
            if n == current { "*" } else { " " },
            version["sha256"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(12)
                .collect::<String>(),
            version["size"],
            version["deployed_at"],
            version["deployed_by"].as_str().unwrap_or(""),
            version["note"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `host rollback`.
pub async fn rollback(args: &StationArgs, id: &str, version: u32) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let request = client
        .request(
            reqwest::Method::POST,
            &format!("/admin/objects/{id}/rollback"),
        )
        .json(&serde_json::json!({ "version": version }));
    let v = client.json(request).await?;
    if v["unchanged"].as_bool() == Some(true) {
        println!(
            "{id} already runs the bytes of version {version} (version {})",
            v["version"]
        );
    } else {
        println!(
            "{id} rolled back to the bytes of version {version} as version {}",
            v["version"]
        );
    }
    Ok(())
}

/// `host objects`.
pub async fn objects(args: &StationArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let v = client
        .json(client.request(reqwest::Method::GET, "/objects"))
        .await?;
    println!("{:<24}  {:>7}  {:<12}  home", "id", "version", "sha256");
    for object in v["objects"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:>7}  {:<12}  {}",
            object["id"].as_str().unwrap_or(""),
            object["version"],
            object["sha256"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(12)
                .collect::<String>(),
            match object["home"].as_str() {
                Some(home) => home.to_string(),
                // A stateless object has no home: it runs on every station holding its code.
                None => format!(
                    "stateless on {}",
                    object["stations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        );
    }
    Ok(())
}

/// `host stations`.
pub async fn stations(args: &StationArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let v = client
        .json(client.request(reqwest::Method::GET, "/cluster/stations"))
        .await?;
    let directory = &v["directory"];
    println!(
        "directory: leader {}, term {}, voters {}, learners {}",
        directory["leader"].as_str().unwrap_or("(none)"),
        directory["term"],
        list(&directory["voters"]),
        list(&directory["learners"]),
    );
    println!(
        "{:<14}  {:<24}  {:<7}  {:<7}  {:>5}  {:>5}  {:>8}  objects",
        "id", "address", "state", "role", "cpu%", "mem%", "in-flight"
    );
    for station in v["stations"].as_array().into_iter().flatten() {
        let homed = station["objects"].as_array().into_iter().flatten();
        let stateless = station["stateless"].as_array().into_iter().flatten();
        let objects: Vec<String> = homed
            .filter_map(|o| o.as_str().map(str::to_string))
            .chain(stateless.filter_map(|o| o.as_str().map(|id| format!("{id} (stateless)"))))
            .collect();
        println!(
            "{:<14}  {:<24}  {:<7}  {:<7}  {:>5.1}  {:>5.1}  {:>8}  {}{}",
            station["id"].as_str().unwrap_or(""),
            station["address"].as_str().unwrap_or(""),
            station["state"].as_str().unwrap_or(""),
            station["role"].as_str().unwrap_or(""),
            station["load"]["cpu"].as_f64().unwrap_or(0.0),
            station["load"]["memory"].as_f64().unwrap_or(0.0),
            station["load"]["in_flight"],
            objects.join(","),
            if station["self"].as_bool() == Some(true) {
                "  (this station)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// A JSON array of strings as `a,b,c` (`-` when empty).
fn list(value: &serde_json::Value) -> String {
    let items: Vec<&str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// `host top`.
pub async fn top(args: &StationArgs, options: super::top::TopArgs) -> anyhow::Result<()> {
    super::top::top(&Client::new(args)?, options).await
}

/// `host migrate ID --to STATION`.
pub async fn migrate(args: &StationArgs, id: &str, to: &str) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let request = client
        .request(reqwest::Method::POST, "/cluster/migrate")
        .json(&serde_json::json!({ "object_id": id, "target_station": to }));
    let spinner = super::progress::Spinner::start(format!("migrating {id} to {to}"));
    let answer = client.json(request).await;
    drop(spinner);
    let v = answer?;
    println!(
        "migrated {id} from {} to {} (epoch {}): paused {:.1} ms, {} bytes, {} keys, {} versions",
        v["from"].as_str().unwrap_or(""),
        v["to"].as_str().unwrap_or(""),
        v["epoch"],
        v["pause_ms"].as_f64().unwrap_or(0.0),
        v["bytes"],
        v["keys"],
        v["versions"]
    );
    Ok(())
}
