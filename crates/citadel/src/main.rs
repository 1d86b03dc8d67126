//! `citadel`: see `citadel --help`.
#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc: the request path allocates many small, short-lived objects
/// across threads, where glibc's allocator spent a fifth of the CPU time
/// (measured with bench/proxy and perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = citadel::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = citadel::cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
