//! `baseline --port 0`: the native axum hello server the benchmark compares stations with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;

/// A native axum server answering `GET /objects/hello` like the hello object.
#[derive(Debug, Parser)]
#[command(name = "baseline", about)]
struct Args {
    /// TCP port on 127.0.0.1 (0 picks a free one; the address is printed on the first stdout line).
    #[arg(long, default_value_t = 8002)]
    port: u16,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    let listener = tokio::net::TcpListener::bind(address).await?;
    bench::baseline::serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
