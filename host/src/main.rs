//! The `host` binary: parse the command line, set up logging, dispatch, map errors to exit codes.

use anyhow::Context as _;
use clap::Parser;
use host::cli::{Cli, Command, client, scaffold};
use std::time::Duration;

/// mimalloc instead of glibc malloc: a call allocates dozens of small buffers (request, headers,
/// log lines, the response), and glibc's malloc/free took ~17% of a hello call's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOST_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command
        && let Some(workers) = args.workers
    {
        runtime.worker_threads(usize::from(workers));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    if let Err(error) = runtime.block_on(dispatch(cli.command)) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let config = args.validate()?;
            let address = std::net::SocketAddr::new(config.args.bind, config.args.port);
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
            host::run(listener, config, shutdown_signal()).await
        }
        Command::Deploy {
            file,
            id,
            note,
            place,
            stateless,
            quota,
            parallel_reads,
            station,
        } => {
            let quota = match (quota, parallel_reads) {
                (quota, None) => quota,
                (None, Some(n)) => Some(format!("readers={n}")),
                (Some(quota), Some(n)) if quota == "default" => Some(format!("readers={n}")),
                (Some(quota), Some(n)) => Some(format!("{quota},readers={n}")),
            };
            let options = client::DeployArgs {
                id,
                note,
                place,
                stateless,
                quota,
            };
            client::deploy(&station, &file, options).await
        }
        Command::Call {
            id,
            method,
            data,
            path,
            station,
        } => client::call(&station, &id, &method, data, &path).await,
        Command::Logs {
            id,
            level,
            limit,
            follow,
            station,
        } => client::logs(&station, &id, level, limit, follow).await,
        Command::Versions { id, station } => client::versions(&station, &id).await,
        Command::Rollback {
            id,
            version,
            station,
        } => client::rollback(&station, &id, version).await,
        Command::Objects { station } => client::objects(&station).await,
        Command::Stations { station } => client::stations(&station).await,
        Command::Top {
            interval_ms,
            limit,
            once,
            station,
        } => {
            let options = host::cli::top::TopArgs {
                interval: Duration::from_millis(interval_ms.max(100)),
                limit,
                once,
            };
            client::top(&station, options).await
        }
        Command::Migrate { id, to, station } => client::migrate(&station, &id, &to).await,
        Command::New { name, lang, dir } => {
            let root = match lang {
                host::cli::Lang::Rust => scaffold::new_rust(&dir, &name)?,
                host::cli::Lang::Python => scaffold::new_python(&dir, &name)?,
            };
            println!("created {}", root.display());
            match lang {
                host::cli::Lang::Rust => {
                    println!(
                        "build it:  cd {} && cargo build --target wasm32-wasip2 --release",
                        root.display()
                    );
                    println!(
                        "deploy it: host deploy target/wasm32-wasip2/release/{}.wasm --id {name}",
                        name.replace('-', "_")
                    );
                }
                host::cli::Lang::Python => {
                    println!(
                        "build it:  cd {} && host build app.py -o {name}.wasm",
                        root.display()
                    );
                    println!("deploy it: host deploy {name}.wasm");
                }
            }
            Ok(())
        }
        Command::Repair { data } => {
            let config = host::store::StoreConfig::new(data.clone());
            let report = tokio::task::spawn_blocking(move || host::store::repair(&config))
                .await?
                .with_context(|| format!("repairing {}", data.display()))?;
            print!("{}", report.text);
            println!(
                "repair: {} damaged file(s), {} batch(es) lost; copies and report in {}",
                report.damaged_files,
                report.lost_batches,
                report.backup_dir.display()
            );
            Ok(())
        }
        Command::Build { app, output } => {
            let script = scaffold::python_build_script();
            let mut command = std::process::Command::new("bash");
            command.arg(&script).arg(&app);
            if let Some(output) = output {
                command.arg("-o").arg(output);
            }
            // The build's own report is printed once it ends, below the spinner's line.
            let spinner = host::cli::progress::Spinner::start(format!(
                "building {} with componentize-py",
                app.display()
            ));
            let output = command
                .env_remove("RUST_BACKTRACE")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", script.display()))?;
            drop(spinner);
            std::io::Write::write_all(&mut std::io::stdout(), &output.stdout)?;
            std::io::Write::write_all(&mut std::io::stderr(), &output.stderr)?;
            if !output.status.success() {
                anyhow::bail!("building {} failed", app.display());
            }
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing calls in flight");
}
