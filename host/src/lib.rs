//! Object Primitive's station: WebAssembly components served as durable REST objects.
//!
//! # Layout
//! - [`cli`]: the command line (clap) and the client verbs that talk to a station over HTTP.
//! - [`api`]: the REST API (axum): routes, parsing, and the one error-to-status mapping; its
//!   `server` is the HTTP/1.1 accept loop with the connection limits and timeouts.
//! - [`station`]: the deployed objects, their turn queues and live instances; where a call goes
//!   through the runtime and its writes through the store.
//! - [`runtime`]: wasmtime: compiling, validating and instantiating components, host imports,
//!   deadlines and memory caps. Knows nothing of HTTP or files.
//! - [`store`]: durable data: state TSV with group commit, logs, versions, the station id.
//!   Knows nothing of wasmtime or HTTP.
//! - [`cluster`]: the ownership directory (embedded Raft), membership (chitchat gossip),
//!   placement hints and station-to-station forwarding.
//! - [`watch`]: hot deploy from a watched directory.
//! - [`tls`]: rustls configuration for the HTTPS listener and every client's trust.
//!
//! [`run`] connects them: it is the only code that sees every module.

pub mod api;
pub mod cli;
pub mod cluster;
mod coordinator;
pub mod metrics;
pub mod runtime;
pub mod station;
pub mod store;
pub mod tls;
pub mod trace;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{DurabilityArg, ServeConfig};

/// Runs a station on `listener` until `shutdown` resolves, then finishes in-flight calls and
/// flushes the store. Prints `listening on http://ADDR` (https with TLS) as the first line on
/// stdout.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let args = &config.args;
    let store_config = store::StoreConfig {
        durability: match args.durability {
            DurabilityArg::Fsync => store::Durability::Fsync,
            DurabilityArg::None => store::Durability::None,
        },
        history_versions: args.history,
        ..store::StoreConfig::new(args.data.clone())
    };
    // Opening replays the write-ahead log and recovers files: blocking I/O, off the async workers.
    let store = tokio::task::spawn_blocking(move || store::Store::open(store_config))
        .await
        .context("opening the data directory")?
        .with_context(|| format!("opening the data directory {}", args.data.display()))?;
    let runtime = runtime::Runtime::new(runtime::RuntimeConfig {
        cache_dir: args.data.join("cache"),
        memory_limit_bytes: (args.memory_mb as usize) << 20,
        max_instances: args.max_instances,
    })?;
    let tracer = match &args.otlp_endpoint {
        None => trace::Tracer::disabled(),
        Some(endpoint) => {
            let http = reqwest::Client::builder()
                .use_preconfigured_tls(tls::client_config(args.tls_ca.as_deref())?)
                .build()
                .context("creating the OTLP exporter's HTTP client")?;
            let tracer = trace::Tracer::otlp_sampled(
                endpoint,
                args.otlp_protocol,
                store.station_id(),
                http,
                args.otlp_sample_ratio,
            )?;
            tracing::info!(%endpoint, "exporting call spans over OTLP/HTTP");
            tracer
        }
    };
    let station_config = station::StationConfig {
        call_deadline: config.deadline,
        idle_timeout: Duration::from_secs(args.idle_secs),
        quota: station::Quota {
            state_bytes: args.quota_state_mb.saturating_mul(1 << 20),
            keys: args.quota_keys,
            write_bytes: args.quota_write_mb.saturating_mul(1 << 20),
            log_bytes_per_sec: args.quota_log_kb_s.saturating_mul(1 << 10),
            queue: args.quota_queue,
            rate: args.quota_rate,
            readers: 0,
        },
        idempotency_ttl: Duration::from_secs(args.idempotency_ttl_secs),
        tracer: tracer.clone(),
        event_retention: args.event_retention,
        alarm_retry_base: Duration::from_millis(args.alarm_retry_base_ms),
    };
    // Registering the deployed objects reads every object's versions and replica states: off the
    // async workers too.
    let station = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || station::Station::open(runtime, store, station_config))
            .await
            .context("registering the deployed objects")??
    };
    let reaper = station.spawn_idle_reaper();
    let warm_up = station.spawn_warm_up();
    let address = listener.local_addr()?;
    let server_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if server_tls.is_some() {
        "https"
    } else {
        "http"
    };
    if server_tls.is_none() && !args.bind.is_loopback() {
        tracing::warn!(
            bind = %args.bind,
            "serving plain HTTP on a non-loopback address: the admin token, the cluster secret \
             and every call cross the network in the clear (give --tls-cert and --tls-key)"
        );
    }
    let client_tls = tls::client_config(args.tls_ca.as_deref())?;
    let http_url = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{address}"))
        .trim_end_matches('/')
        .to_string();
    let cluster = cluster::Cluster::start(
        cluster::ClusterConfig {
            station_id: station.station_id().to_string(),
            http_url,
            gossip_addr: gossip_address(address)?,
            join: args.join.clone(),
            replicas: args.replicas,
            gossip_interval: Duration::from_millis(args.gossip_interval_ms),
            phi_threshold: args.phi_threshold,
            min_stations: args.min_stations,
            secret: args.cluster_secret.clone(),
            directory_dir: args.data.join("cluster"),
            voters: args.voters,
            tls: client_tls,
            move_metrics: station.move_metrics().clone(),
        },
        station.in_flight_counter(),
    )
    .await
    .context("starting cluster membership")?;
    let coordinator = coordinator::Coordinator::start(
        station.clone(),
        cluster.clone(),
        store.clone(),
        args.sync_replicas,
    );
    let open_connections = api::server::OpenConnections::default();
    let (drain, draining) = api::server::Draining::new();
    let router = api::router(
        coordinator.clone(),
        api::ApiConfig {
            max_body_bytes: args.max_body_bytes,
            max_component_bytes: args.max_component_bytes,
            admin_token: args.admin_token.clone(),
            open_connections: open_connections.clone(),
            draining,
        },
    );
    // Serve HTTP at once (the directory's Raft messages arrive over it), but announce the address
    // only once the station follows the directory and holds a write lease, so a client's first
    // call is not refused.
    let server_config = api::server::ServerConfig {
        tls: server_tls,
        max_connections: connection_limit(args.max_connections),
        keep_alive: Duration::from_secs(args.keep_alive_secs),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        open: open_connections,
    };
    // On the signal, streams end first, so the drain of connections does not wait for them.
    let shutdown = async move {
        shutdown.await;
        drain.begin();
    };
    let server =
        tokio::spawn(
            async move { api::server::serve(listener, router, server_config, shutdown).await },
        );
    coordinator.wait_ready(Duration::from_secs(15)).await;
    let alarm_clock = station.spawn_alarm_clock();
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{address}")?;
        out.flush()?;
    }
    tracing::info!(station = station.station_id(), %address, data = %args.data.display(), "station serving");
    let watcher = match &config.watch {
        Some(dir) => Some(watch::start(station.clone(), dir.clone()).await?),
        None => None,
    };
    server
        .await
        .context("the HTTP server task failed")?
        .context("serving HTTP")?;
    drop(watcher);
    reaper.abort();
    warm_up.abort();
    alarm_clock.abort();
    coordinator.shutdown();
    station.shutdown().await;
    cluster.shutdown().await;
    tokio::task::spawn_blocking(move || tracer.shutdown()).await?;
    tracing::info!("station stopped");
    Ok(())
}

/// File descriptors kept free of client connections: the store's files, the station's own
/// connections to other stations, the directory's database.
const RESERVED_DESCRIPTORS: u64 = 512;

/// `requested` client connections, lowered if the process may not open that many files. Raises
/// the soft open-files limit to the hard one first (the soft default is often 1024).
fn connection_limit(requested: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let available = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return requested;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let fits = available.saturating_sub(RESERVED_DESCRIPTORS).max(16) as usize;
    if fits < requested {
        tracing::warn!(
            requested,
            open_files_limit = available,
            "--max-connections lowered to {fits} to stay within the open-files limit"
        );
        return fits;
    }
    requested
}

/// The UDP address to gossip on: the HTTP port number on the same IP when it is free, else any
/// free port (peers learn it from `GET /cluster/info`, so users only ever type HTTP addresses).
fn gossip_address(http: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    let probe = std::net::UdpSocket::bind(http)
        .or_else(|_| std::net::UdpSocket::bind(std::net::SocketAddr::new(http.ip(), 0)))
        .context("finding a UDP port for gossip")?;
    Ok(probe.local_addr()?)
}
