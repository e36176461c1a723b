//! `nodeos-vm serve`: a function host. Apps (npm packages exporting `handler(event, context)`
//! or `fetch(request)`) are deployed and called over HTTP (`http`); each app runs only in
//! microVMs of its own (`instance`), pooled per app version (`pool`), kept by the `server`. docs/serve.md and
//! docs/openapi.yaml describe the API.

pub(crate) mod http;
mod instance;
mod logs;
mod metrics;
pub(crate) mod package;
mod pool;
mod server;
mod store;

/// What the fuzz targets in fuzz/ reach of this crate's private modules.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::invoke_event;
    pub use crate::package::{check_name, unpack, Options};
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use instance::Machine;
use server::Server;

/// How often idle instances are looked at.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// After SIGTERM, how long calls in flight may still run before they are failed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Serves on `listen` until SIGTERM or SIGINT, then finishes the calls in flight (for at most
/// `SHUTDOWN_GRACE`), stops every VM and removes their folders and sockets.
pub fn serve(listen: SocketAddr, machine: Machine) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("starting the async runtime")?;
    let server = Arc::new(Server::new(machine)?);
    let result = runtime.block_on(run(listen, server.clone()));
    // Calls still running past the grace period end here; their instances stop.
    runtime.shutdown_timeout(Duration::from_secs(1));
    server.shut_down();
    result
}

async fn run(listen: SocketAddr, server: Arc<Server>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    server.restore().await;
    let reaper = server.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            reaper.reap();
        }
    });
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    println!("http://{address}");
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let app = http::router(server);
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
    });
    tokio::select! {
        result = serving => result.context("serving HTTP")?,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => eprintln!("nodeos-vm serve: calls still running after {SHUTDOWN_GRACE:?} are failed"),
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
