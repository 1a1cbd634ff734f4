//! The example applications (issue 14) under load, on one station with `--durability fsync`:
//! `auth` logins (the PBKDF2 cost dominates: reported beside the iteration count), `blog` post
//! creation, listing and searching, and `chat` messages through one room. The Rust objects, and the Python
//! `auth`'s logins when `objects/dist/py-auth.wasm` is built.
//!
//! These requests carry a JSON body and a bearer token, which the wrk/oha scripts do not, so
//! the load here is a closed loop of [`CONCURRENCY`] reqwest clients in the driver itself: each
//! sends its next request when its last one answered. Throughput counts 2xx answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, guarded};
use crate::report::{Figure, ScenarioResult};
use crate::server::{self, Server};

/// PBKDF2-HMAC-SHA256 iterations per password check (`ITERATIONS` in the auth objects).
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// Requests in flight: one object runs one call at a time, so more only queue.
const CONCURRENCY: usize = 8;

/// Scenario names, as they appear in the table.
pub const LOGIN: &str = "auth login, Rust";
/// Python logins.
pub const PY_LOGIN: &str = "auth login, Python";
/// Blog creation.
pub const BLOG_CREATE: &str = "blog post create (token checked by auth)";
/// Blog listing (the unfiltered list reads only its page).
pub const BLOG_LIST: &str = "blog list, 10 of 1,000 posts";
/// Blog search (a filtered list reads every post).
pub const BLOG_SEARCH: &str = "blog search, 10 of 1,000 posts";
/// Chat.
pub const CHAT_SEND: &str = "chat messages, one room (token checked by auth)";

/// Posts the list scenario lists from.
const LIST_POSTS: usize = 1000;

/// Runs every application scenario, in order.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let names = [LOGIN, BLOG_CREATE, BLOG_LIST, BLOG_SEARCH, CHAT_SEND];
    let limit = ctx.config.warmup + ctx.config.duration + Duration::from_secs(120);
    let data = match ctx.fresh_dir("apps-") {
        Ok(d) => d,
        Err(e) => {
            return names
                .iter()
                .map(|n| ScenarioResult::error(*n, format!("{e:#}")))
                .collect();
        }
    };
    let station =
        match Server::station(&ctx.config.host, &data, "fsync", &ctx.log_path("apps")).await {
            Ok(s) => s,
            Err(e) => {
                return names
                    .iter()
                    .map(|n| ScenarioResult::error(*n, format!("{e:#}")))
                    .collect();
            }
        };
    let mut results = Vec::new();
    let token = match setup(
        ctx,
        &station,
        &[("auth", "auth"), ("blog", "blog"), ("chat", "chat")],
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            station.stop().await;
            return names
                .iter()
                .map(|n| ScenarioResult::error(*n, format!("{e:#}")))
                .collect();
        }
    };
    results.push(guarded(LOGIN, limit, login(ctx, &station, LOGIN, "auth")).await);
    results.push(
        guarded(BLOG_CREATE, limit, async {
            let body = json!({"title": "Benchmark", "content": "A post written under load.", "tags": ["bench"]});
            let load = closed_loop(ctx, &station, Method::POST, "/objects/blog", Some(&token), Some(body)).await?;
            Ok(result(BLOG_CREATE, &load, "post/s"))
        })
        .await,
    );
    results.push(
        guarded(BLOG_LIST, limit + Duration::from_secs(60), async {
            // A blog of its own (the create scenario leaves thousands of posts in `blog`),
            // filled with exactly LIST_POSTS posts: a list reads every post.
            let bytes = ctx.require_component("blog")?;
            server::deploy(&ctx.client, &station.url, "blog-list", &bytes).await?;
            let body = json!({"title": "Listed", "content": "x".repeat(500)});
            for _ in 0..LIST_POSTS {
                send(
                    ctx,
                    &station,
                    Method::POST,
                    "/objects/blog-list",
                    Some(&token),
                    Some(&body),
                )
                .await?;
            }
            let load = closed_loop(
                ctx,
                &station,
                Method::GET,
                "/objects/blog-list?limit=10&offset=20",
                None,
                None,
            )
            .await?;
            Ok(result(BLOG_LIST, &load, "list/s"))
        })
        .await,
    );
    results.push(
        guarded(BLOG_SEARCH, limit, async {
            let load = closed_loop(
                ctx,
                &station,
                Method::GET,
                "/objects/blog-list?search=LISTED&limit=10&offset=20",
                None,
                None,
            )
            .await?;
            Ok(result(BLOG_SEARCH, &load, "list/s").with_note(
                "a list filtered by author or search, or sorted by title, reads every post: its cost grows with the blog; an unfiltered one reads only its page".to_string(),
            ))
        })
        .await,
    );
    results.push(
        guarded(CHAT_SEND, limit, async {
            send(
                ctx,
                &station,
                Method::POST,
                "/objects/chat/rooms/General/join",
                Some(&token),
                None,
            )
            .await?;
            let body = json!({"message": "hello from the benchmark"});
            let load = closed_loop(
                ctx,
                &station,
                Method::POST,
                "/objects/chat/rooms/General/messages",
                Some(&token),
                Some(body),
            )
            .await?;
            Ok(result(CHAT_SEND, &load, "msg/s"))
        })
        .await,
    );
    if ctx.component("py-auth").is_none() {
        results.push(ScenarioResult::skipped(
            PY_LOGIN,
            "needs objects/dist/py-auth.wasm",
        ));
    } else {
        // Compiling an 18 MB Python component takes seconds: allow for it.
        results.push(
            guarded(PY_LOGIN, limit + Duration::from_secs(120), async {
                let bytes = ctx.require_component("py-auth")?;
                server::deploy(&ctx.client, &station.url, "py-auth", &bytes).await?;
                register(ctx, &station, "py-auth").await?;
                login(ctx, &station, PY_LOGIN, "py-auth").await
            })
            .await,
        );
    }
    station.stop().await;
    results
}

/// Deploys the objects and registers the benchmark user; returns its token.
async fn setup(ctx: &Ctx, station: &Server, objects: &[(&str, &str)]) -> anyhow::Result<String> {
    for (id, component) in objects {
        let bytes = ctx.require_component(component)?;
        server::deploy(&ctx.client, &station.url, id, &bytes)
            .await
            .with_context(|| station.stderr_tail())?;
    }
    register(ctx, station, "auth").await
}

async fn register(ctx: &Ctx, station: &Server, auth: &str) -> anyhow::Result<String> {
    let body = json!({"action": "register", "username": "bench", "password": "bench password", "email": "bench@example.org"});
    let v = send(
        ctx,
        station,
        Method::POST,
        &format!("/objects/{auth}"),
        None,
        Some(&body),
    )
    .await?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("register answered no token")
}

/// Logins of one user, back to back.
async fn login(
    ctx: &Ctx,
    station: &Server,
    name: &str,
    auth: &str,
) -> anyhow::Result<ScenarioResult> {
    let body = json!({"action": "login", "username": "bench", "password": "bench password"});
    let load = closed_loop(
        ctx,
        station,
        Method::POST,
        &format!("/objects/{auth}"),
        None,
        Some(body),
    )
    .await?;
    let mut r = result(name, &load, "login/s");
    r.figures.push(Figure::new(
        "PBKDF2-SHA256 iterations",
        PBKDF2_ITERATIONS as f64,
        "per login",
    ));
    Ok(r)
}

/// One request; its JSON answer, or an error for anything but a 2xx.
async fn send(
    ctx: &Ctx,
    station: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut req = ctx
        .client
        .request(method.clone(), format!("{}{path}", station.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{method} {path}: {status}: {text}; server stderr: {}",
            station.stderr_tail()
        );
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What a closed-loop run measured.
struct Loop {
    ok: u64,
    failed: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_failure: Option<String>,
}

/// [`CONCURRENCY`] workers sending the same request back to back: a warm-up, then the
/// measured run of `ctx.config.duration`.
async fn closed_loop(
    ctx: &Ctx,
    station: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Loop> {
    // Fails clearly if the request does not work at all.
    send(ctx, station, method.clone(), path, token, body.as_ref()).await?;
    if !ctx.config.warmup.is_zero() {
        run_loop(
            ctx,
            station,
            &method,
            path,
            token,
            body.as_ref(),
            ctx.config.warmup,
        )
        .await;
    }
    let load = run_loop(
        ctx,
        station,
        &method,
        path,
        token,
        body.as_ref(),
        ctx.config.duration,
    )
    .await;
    if load.ok == 0 {
        bail!(
            "no successful answer under load ({} failed: {:?}); server stderr: {}",
            load.failed,
            load.first_failure,
            station.stderr_tail()
        );
    }
    Ok(load)
}

async fn run_loop(
    ctx: &Ctx,
    station: &Server,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    duration: Duration,
) -> Loop {
    let url = format!("{}{path}", station.url);
    let body = body.map(|b| b.to_string());
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..CONCURRENCY).map(|_| {
        let (client, url, method, body) = (
            ctx.client.clone(),
            url.clone(),
            method.clone(),
            body.clone(),
        );
        let token = token.map(str::to_string);
        let (failed, first_failure) = (failed.clone(), first_failure.clone());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let mut req = client.request(method.clone(), &url);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                if let Some(b) = &body {
                    req = req
                        .header("content-type", "application/json")
                        .body(b.clone());
                }
                let outcome = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().unwrap().get_or_insert(e);
                    }
                }
            }
            latencies
        }
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    Loop {
        ok: latencies.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        first_failure: first_failure.lock().unwrap().take(),
    }
}

fn result(name: &str, load: &Loop, unit: &str) -> ScenarioResult {
    let mut r = ScenarioResult::ok(
        name,
        vec![
            Figure::new("throughput", load.ok as f64 / load.seconds, unit),
            Figure::new("latency p50", load.p50_ms, "ms"),
            Figure::new("latency p99", load.p99_ms, "ms"),
        ],
    )
    .with_details(json!({
        "ok": load.ok,
        "failed": load.failed,
        "seconds": load.seconds,
        "concurrency": CONCURRENCY,
    }));
    if load.failed > 0 {
        r = r.with_note(format!(
            "{name}: {} of {} requests failed (first: {:?})",
            load.failed,
            load.ok + load.failed,
            load.first_failure
        ));
    }
    r
}
