//! `bench-driver [--quick]`: runs the benchmarks (see `bench::driver`). Called by scripts/bench.sh.

use clap::Parser;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let config = match bench::driver::DriverArgs::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bench-driver: {e:#}");
            std::process::exit(2);
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    // On a signal the run future is dropped when `select!` ends, which kills every server it
    // started (kill_on_drop); only then does the process exit.
    let code = tokio::select! {
        result = bench::driver::run(config) => {
            if let Err(e) = result {
                // Only writing the report can fail here; scenarios record their own errors.
                eprintln!("bench-driver: {e:#}");
            }
            0
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("bench-driver: interrupted; stopping the servers it started");
            130
        }
        _ = term.recv() => {
            eprintln!("bench-driver: terminated; stopping the servers it started");
            143
        }
    };
    std::process::exit(code);
}
