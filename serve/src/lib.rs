//! `nodeos-vm serve`: a function host. Apps (npm packages exporting `handler(event, context)`
//! or `fetch(request)`) are deployed and called over HTTP (`http`): deployed through the admin
//! API, which needs a token (`access`), and called on a listener of their own; each app runs
//! only in microVMs of its own (`instance`, `vm`), pooled per app version (`pool`), kept by
//! the `server`. The same admin API hands out sandboxes, microVMs a program drives
//! (`sandboxes`, `sandbox_exec`, `sandbox_api`), and serves a web console (`console`).
//! docs/serve.md and docs/openapi.yaml describe the API.

mod access;
mod answer;
mod clock;
mod console;
pub(crate) mod http;
mod instance;
mod logs;
mod metrics;
pub(crate) mod package;
mod pool;
mod roster;
mod sandbox_api;
mod sandbox_exec;
mod sandboxes;
mod server;
mod store;
mod vm;

/// What the fuzz targets in fuzz/ reach of this crate's private modules.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::invoke_event;
    pub use crate::package::{check_name, unpack, Options};
}

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use access::{host_name, BadHostName};
use access::{Hosts, Token, TOKEN_FILE};
use server::Server;
pub use vm::Machine;

/// How often idle instances are looked at.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// After SIGTERM, how long calls in flight may still run before they are failed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Where serve listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The admin API: deploy, list, show, delete, logs, metrics; only with the token.
    pub admin: SocketAddr,
    /// The apps' calls (invoke, fetch): no token, nothing of the admin API.
    pub apps: SocketAddr,
    /// The operator's token file; without one, serve generates a token at each start, prints
    /// it and saves it as `TOKEN_FILE` in the data folder.
    pub token_file: Option<PathBuf>,
    /// Names (`host_name`) requests may be addressed to, beside the listeners' own addresses
    /// and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Keep a VM ready for the next sandbox of the default shape once one was made
    /// (`sandboxes`).
    pub sandbox_standby: bool,
}

/// Serves as `config` says until SIGTERM or SIGINT, then deletes every sandbox, finishes the
/// calls in flight (for at most `SHUTDOWN_GRACE`), stops every VM and removes their folders
/// and sockets.
pub fn serve(config: Config, machine: Machine) -> anyhow::Result<()> {
    // A generated token is saved once serve listens: a second serve that cannot listen must
    // not replace the first one's.
    let (token, origin) = match config.token_file.clone() {
        Some(path) => (Token::from_file(&path)?, TokenOrigin::File(path)),
        None => (
            Token::generate()?,
            TokenOrigin::Generated(sandbox::folders::data_dir()?.join(TOKEN_FILE)),
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("starting the async runtime")?;
    let server = Arc::new(Server::new(machine, config.sandbox_standby)?);
    let result = runtime.block_on(run(config, Arc::new(token), origin, server.clone()));
    // Calls still running past the grace period end here; their instances stop.
    runtime.shutdown_timeout(Duration::from_secs(1));
    server.shut_down();
    result
}

/// Where the admin token came from.
enum TokenOrigin {
    /// Generated at this start, to be saved in this file.
    Generated(PathBuf),
    /// The operator's file.
    File(PathBuf),
}

/// Listens, saves a generated token, says where to find it, and serves.
async fn run(
    config: Config,
    token: Arc<Token>,
    origin: TokenOrigin,
    server: Arc<Server>,
) -> anyhow::Result<()> {
    let bind = |address: SocketAddr, what: &'static str| async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening for {what} on {address}"))?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("reading the address of the {what} listener"))?;
        anyhow::Ok((listener, bound))
    };
    let (admin, admin_address) = bind(config.admin, "the admin API").await?;
    let (apps, apps_address) = bind(config.apps, "the apps").await?;
    let announce = match &origin {
        TokenOrigin::Generated(path) => {
            token.save(path)?;
            format!(
                "admin token {} (saved in {}, mode 0600): send it to the admin API as `Authorization: Bearer <token>`",
                token.as_str(),
                path.display()
            )
        }
        TokenOrigin::File(path) => format!(
            "the admin API takes the token in {} (header `Authorization: Bearer <token>`)",
            path.display()
        ),
    };
    server.restore().await;
    let reaper = server.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            reaper.reap();
        }
    });
    // Caught before the addresses are printed: a client may stop serve as soon as it knows.
    let signalled = shutdown_signal()?;
    eprintln!("nodeos-vm serve: {announce}");
    println!("admin: http://{admin_address}");
    println!("apps: http://{apps_address}");
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let sandboxes = server.clone();
    tokio::spawn(async move {
        signalled.await;
        let _ = stopping.send(true);
        // Calls in flight may finish; a sandbox's commands end with it, now.
        sandboxes.sandboxes.clear();
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let admin_app = http::admin_router(
        server.clone(),
        token,
        Hosts::new(admin_address, &config.allowed_hosts),
    );
    let apps_app = http::apps_router(server, Hosts::new(apps_address, &config.allowed_hosts));
    let serving_admin = axum::serve(admin, admin_app)
        .with_graceful_shutdown(until_stopped(stopped.clone()))
        .into_future();
    let serving_apps = axum::serve(apps, apps_app)
        .with_graceful_shutdown(until_stopped(stopped.clone()))
        .into_future();
    let serving = async { tokio::try_join!(serving_admin, serving_apps) };
    tokio::select! {
        result = serving => { result.context("serving HTTP")?; }
        _ = async {
            until_stopped(stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => eprintln!("nodeos-vm serve: calls still running after {SHUTDOWN_GRACE:?} are failed"),
    }
    Ok(())
}

/// Catches SIGTERM and SIGINT from now on; the future ends at the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
