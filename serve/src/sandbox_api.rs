//! The sandbox API, on the admin listener (docs/openapi.yaml, docs/serve.md): create, list,
//! show and delete sandboxes; run commands in them with their output streamed as NDJSON
//! (`application/x-ndjson`: one JSON event per line, over a chunked response), their stdin
//! and signals sent by command ID; read, write, list and remove files, upload and download tar
//! archives. Streams are plain HTTP/1.1 rather than a WebSocket: any HTTP client reads them
//! (`fetch` and a line splitter), nothing is upgraded, and stdin, which few programs need, is a
//! request of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::answer::{read_body, ApiError};
use super::sandbox_exec::{self, Running};
use super::sandboxes::{self, Options, Sandbox};
use super::server::Server;
use sandbox::agent::{Command, Event, Outcome};
use sandbox::guest_files::{self, Op, Refusal};
use sandbox::vm_config;

/// Largest upload (a file's bytes or a tar archive): more is refused with 413.
pub const MAX_UPLOAD_BYTES: u64 = 512 << 20;
/// Largest download: a longer one is cut (the response ends in an error).
const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;
/// Largest listing of one folder, as the guest writes it.
const MAX_LISTING_BYTES: usize = 16 << 20;
/// Largest stdin request body, and largest create or exec request.
const MAX_STDIN_BYTES: usize = 1 << 20;
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How much of a failed file operation's stderr is kept for its error.
const MAX_STDERR_BYTES: usize = 16 << 10;
/// How long an exec's stream may go without a line before it gets a keepalive line: clients
/// and proxies give up on a response that is silent for long (Node's `fetch`: 300 s).
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_LINE: &[u8] = b"{\"type\":\"keepalive\"}\n";
/// Defaults and bounds of a sandbox's limits.
const DEFAULT_IDLE: Duration = Duration::from_secs(300);
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The sandbox API's routes, for the admin router.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(show).delete(delete))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/execs/{exec}/stdin", post(stdin))
        .route("/sandboxes/{id}/execs/{exec}/signal", post(signal))
        .route(
            "/sandboxes/{id}/files",
            get(read_file).put(write_file).delete(remove_file),
        )
        .route("/sandboxes/{id}/dirs", get(list_dir).post(make_dir))
        .route("/sandboxes/{id}/tar", get(download_tar).put(upload_tar))
}

/// `POST /sandboxes`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRequest {
    memory_mib: Option<u32>,
    cpus: Option<u8>,
    user: Option<String>,
    #[serde(default)]
    net: bool,
    timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    #[serde(default)]
    env: HashMap<String, String>,
}

impl CreateRequest {
    fn options(self) -> Result<Options, ApiError> {
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
        let memory = self.memory_mib.map(|m| format!("{m}M"));
        let memory_mib =
            vm_config::memory_mib(memory.as_deref().unwrap_or(vm_config::DEFAULT_MEMORY))
                .map_err(|e| bad(format!("memoryMib: {e}")))?;
        let cpus = vm_config::cpus(&self.cpus.unwrap_or(sandboxes::DEFAULT_CPUS).to_string())
            .map_err(|e| bad(format!("cpus: {e}")))?;
        if let Some(user) = &self.user {
            sandbox::users::check_name(user).map_err(|e| bad(format!("user: {e}")))?;
        }
        let limit = |ms: Option<u64>, default: Duration, name: &str| match ms {
            None => Ok(default),
            Some(0) => Err(bad(format!("{name} is 0: give at least 1"))),
            Some(ms) if Duration::from_millis(ms) > MAX_LIFETIME => Err(bad(format!(
                "{name} is over {} hours",
                MAX_LIFETIME.as_secs() / 3600
            ))),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        let mut env: Vec<(String, String)> = self.env.into_iter().collect();
        env.sort();
        for (name, _) in &env {
            check_env_name(name).map_err(bad)?;
        }
        Ok(Options {
            memory_mib,
            cpus,
            user: self.user,
            net: self.net,
            env,
            idle: limit(self.idle_timeout_ms, DEFAULT_IDLE, "idleTimeoutMs")?,
            lifetime: limit(self.timeout_ms, DEFAULT_LIFETIME, "timeoutMs")?,
        })
    }
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment variable name {name:?}: use letters, digits and '_', not starting with a digit"
        ))
    }
}

/// Parses a JSON request body (at most [`MAX_REQUEST_BYTES`]); an empty one is `T::default()`.
async fn json_body<T: Default + serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_REQUEST_BYTES, "request").await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the request's JSON: {e}")))
}

fn describe(sandbox: &Sandbox) -> Value {
    json!({
        "id": sandbox.id,
        "state": if sandbox.paused_ms().is_some() { "paused" } else { "running" },
        "pausedAt": sandbox.paused_ms(),
        "memoryMib": sandbox.options.memory_mib,
        "cpus": sandbox.options.cpus,
        "user": sandbox.options.user,
        "net": sandbox.options.net,
        "timeoutMs": sandbox.options.lifetime.as_millis() as u64,
        "idleTimeoutMs": sandbox.options.idle.as_millis() as u64,
        "createdAt": sandbox.created_ms,
        "lastActivityAt": sandbox.last_activity_ms(),
        "execs": sandbox.execs(),
    })
}

fn find(server: &Server, id: &str) -> Result<Arc<Sandbox>, ApiError> {
    server.sandboxes.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no sandbox {id:?} (deleted, or past its idle or lifetime limit)"),
        )
    })
}

/// Sandbox `id`, to run something in: refused while it is paused.
fn find_running(server: &Server, id: &str) -> Result<Arc<Sandbox>, ApiError> {
    let sandbox = find(server, id)?;
    if sandbox.paused_ms().is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is paused: resume it first (POST /sandboxes/{id}/resume)"),
        ));
    }
    Ok(sandbox)
}

async fn pause(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(&server, &id, Sandbox::pause).await
}

async fn resume(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    switch(&server, &id, Sandbox::resume).await
}

/// Pauses or resumes sandbox `id` (blocking, off the async threads): its description after,
/// or 409 when it is not in the state to.
async fn switch(
    server: &Server,
    id: &str,
    change: fn(&Sandbox) -> Result<(), sandboxes::Error>,
) -> Result<Json<Value>, ApiError> {
    let sandbox = find(server, id)?;
    let s = sandbox.clone();
    match tokio::task::spawn_blocking(move || change(&s)).await {
        Ok(Ok(())) => Ok(Json(describe(&sandbox))),
        Ok(Err(e)) => {
            let refused = matches!(
                &e,
                sandboxes::Error::Pause(sandbox::booted::Error::Pause(
                    vmm::vm::PauseError::Refused(_)
                ))
            );
            let status = if refused {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_GATEWAY
            };
            Err(ApiError::new(status, format!("sandbox {id}: {e}")))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

async fn create(State(server): State<Arc<Server>>, body: Body) -> Result<Response, ApiError> {
    let request: CreateRequest = json_body(body).await?;
    let options = request.options()?;
    let sandbox = server.sandboxes.create(options).await.map_err(|e| {
        let status = match &e {
            sandboxes::Error::Full => StatusCode::TOO_MANY_REQUESTS,
            sandboxes::Error::User(users) if !matches!(users, sandbox::users::Error::Io { .. }) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, vmm::error_chain::one_line(&e))
    })?;
    Ok((StatusCode::CREATED, Json(describe(&sandbox))).into_response())
}

async fn list(State(server): State<Arc<Server>>) -> Json<Value> {
    let all: Vec<Value> = server
        .sandboxes
        .list()
        .iter()
        .map(|s| describe(s))
        .collect();
    Json(json!({ "sandboxes": all, "standby": server.sandboxes.standby() }))
}

async fn show(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(describe(&*find(&server, &id)?)))
}

async fn delete(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    server
        .sandboxes
        .delete(&id)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no sandbox {id:?}")))
}

/// `POST /sandboxes/{id}/exec`'s body: `argv`, or `cmd` run by `sh -c`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecRequest {
    argv: Option<Vec<String>>,
    cmd: Option<String>,
    #[serde(default)]
    env: HashMap<String, String>,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    /// Whether the command reads stdin (sent with `.../stdin`); without, it reads nothing.
    #[serde(default)]
    stdin: bool,
}

impl ExecRequest {
    fn command(self, sandbox: &Sandbox) -> Result<Command, ApiError> {
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
        let argv = match (self.argv, self.cmd) {
            (Some(argv), None) if !argv.is_empty() => argv,
            (None, Some(cmd)) => vec!["sh".into(), "-c".into(), cmd],
            _ => {
                return Err(bad(
                    "give either argv (a non-empty array) or cmd (a shell command line)".into(),
                ))
            }
        };
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(bad("an argument holds a NUL".into()));
        }
        let mut env: Vec<(String, String)> = sandbox.options.env.clone();
        let mut given: Vec<(String, String)> = self.env.into_iter().collect();
        given.sort();
        for (name, value) in given {
            check_env_name(&name).map_err(bad)?;
            if value.contains('\0') {
                return Err(bad(format!("environment variable {name} holds a NUL")));
            }
            env.push((name, value));
        }
        let cwd = match self.cwd {
            Some(cwd) => Some(
                guest_files::check_path(&cwd)
                    .map_err(|e| bad(format!("cwd: {e}")))?
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        let timeout = match self.timeout_ms {
            Some(0) => {
                return Err(bad(
                    "timeoutMs is 0: give at least 1, or leave it out".into()
                ))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        Ok(Command {
            argv: argv.into_iter().map(String::into_bytes).collect(),
            env: env
                .into_iter()
                .map(|(k, v)| format!("{k}={v}").into_bytes())
                .collect(),
            cwd,
            stdin: self.stdin,
            timeout,
            container: None,
            tty: None,
        })
    }
}

fn exec_error(e: sandbox_exec::Error) -> ApiError {
    let status = match e {
        sandbox_exec::Error::TooMany => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, vmm::error_chain::one_line(&e))
}

/// One exec event as its NDJSON line.
fn event_line(event: Event) -> Vec<u8> {
    let value = match event {
        Event::Started(pid) => json!({ "type": "started", "pid": pid }),
        Event::Stdout(data) => json!({ "type": "stdout", "data": BASE64.encode(data) }),
        Event::Stderr(data) => json!({ "type": "stderr", "data": BASE64.encode(data) }),
        Event::Ended(outcome) => match outcome {
            Outcome::Exited(code) => json!({ "type": "exit", "exitCode": code }),
            Outcome::Signaled(signal) => json!({ "type": "exit", "signal": signal }),
            Outcome::TimedOut(t) => json!({
                "type": "exit", "timedOut": true,
                "error": format!("killed after its timeout of {} ms", t.as_millis()),
            }),
            Outcome::NotFound(message) => {
                json!({ "type": "exit", "exitCode": 127, "error": message })
            }
            Outcome::NotExecutable(message) => {
                json!({ "type": "exit", "exitCode": 126, "error": message })
            }
        },
    };
    let mut line = serde_json::to_vec(&value).expect("JSON values serialize");
    line.push(b'\n');
    line
}

async fn exec(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let sandbox = find_running(&server, &id)?;
    let request: ExecRequest = json_body(body).await?;
    let command = request.command(&sandbox)?;
    let shown = command
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Running {
        id: exec_id,
        events,
        ..
    } = sandbox_exec::start(&sandbox, command, shown)
        .await
        .map_err(exec_error)?;
    let first = json!({ "type": "exec", "id": exec_id });
    let mut first = serde_json::to_vec(&first).expect("JSON values serialize");
    first.push(b'\n');
    let lines = futures_util::stream::once(async move { first })
        .chain(futures_util::stream::unfold(
            events,
            |mut events| async move {
                let line = match tokio::time::timeout(KEEPALIVE, events.recv()).await {
                    Ok(event) => event_line(event?),
                    Err(_) => KEEPALIVE_LINE.to_vec(),
                };
                Some((line, events))
            },
        ))
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn running(sandbox: &Sandbox, exec: &str) -> Result<sandbox::agent::Input, ApiError> {
    sandbox.exec_input(exec).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no command {exec:?} runs in sandbox {}", sandbox.id),
        )
    })
}

#[derive(Debug, Deserialize)]
struct StdinQuery {
    #[serde(default)]
    eof: bool,
}

async fn stdin(
    State(server): State<Arc<Server>>,
    Path((id, exec)): Path<(String, String)>,
    Query(query): Query<StdinQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let sandbox = find_running(&server, &id)?;
    let input = running(&sandbox, &exec)?;
    let data = read_body(body, MAX_STDIN_BYTES, "stdin chunk").await?;
    send("the command's stdin", move || {
        input.write(&data)?;
        if query.eof {
            input.close()?;
        }
        Ok(())
    })
    .await
}

/// Sends to a running command (blocking, off the async threads): 204, or 410 when it is gone.
async fn send(
    what: &str,
    sending: impl FnOnce() -> Result<(), sandbox::agent::Error> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    match tokio::task::spawn_blocking(sending).await {
        Ok(Ok(())) => Ok(StatusCode::NO_CONTENT),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::GONE, format!("{what}: {e}"))),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalRequest {
    /// A number, or a name like `SIGTERM` or `TERM`.
    signal: Value,
}

fn signal_number(signal: &Value) -> Result<i32, String> {
    let known = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
    ];
    match signal {
        Value::Number(n) => n
            .as_i64()
            .filter(|n| (1..=64).contains(n))
            .map(|n| n as i32)
            .ok_or_else(|| format!("signal {n}: give 1 to 64")),
        Value::String(name) => {
            let bare = name.strip_prefix("SIG").unwrap_or(name);
            known
                .iter()
                .find(|(k, _)| *k == bare)
                .map(|(_, n)| *n)
                .ok_or_else(|| format!("signal {name:?}: give a number or one of SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM, SIGCONT, SIGSTOP"))
        }
        _ => Err("signal: give a number or a name like \"SIGTERM\"".into()),
    }
}

async fn signal(
    State(server): State<Arc<Server>>,
    Path((id, exec)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let sandbox = find_running(&server, &id)?;
    let input = running(&sandbox, &exec)?;
    let bytes = read_body(body, MAX_REQUEST_BYTES, "request").await?;
    let request: SignalRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the request's JSON: {e}")))?;
    let number =
        signal_number(&request.signal).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    send("signalling the command", move || input.signal(number)).await
}

/// The `path` query parameter of the files routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathQuery {
    path: String,
}

fn refusal(refusal: Refusal) -> ApiError {
    let status = match &refusal {
        Refusal::BadPath(_) => StatusCode::BAD_REQUEST,
        Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        Refusal::ThroughSymlink(_) | Refusal::Denied(_) => StatusCode::FORBIDDEN,
        Refusal::WrongKind(_) => StatusCode::CONFLICT,
        Refusal::Failed(_) => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, refusal)
}

/// Starts file operation `op` on the query's path in sandbox `id`.
async fn start_op(server: &Server, id: &str, op: Op, path: &str) -> Result<Running, ApiError> {
    let sandbox = find_running(server, id)?;
    let path = guest_files::check_path(path).map_err(refusal)?;
    let shown = vec![format!("({})", op.name()), path.to_string()];
    sandbox_exec::start(&sandbox, guest_files::command(op, path), shown)
        .await
        .map_err(exec_error)
}

/// Waits for the end of an operation, keeping its stdout (at most `limit` bytes) and stderr.
async fn finish_op(running: &mut Running, limit: usize) -> Result<Vec<u8>, ApiError> {
    finish_op_with(running, limit, Vec::new()).await
}

/// [`finish_op`], with what the operation wrote on stderr before.
async fn finish_op_with(
    running: &mut Running,
    limit: usize,
    mut stderr: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    let mut stdout = Vec::new();
    while let Some(event) = running.events.recv().await {
        match event {
            Event::Stdout(data) => {
                if stdout.len() + data.len() > limit {
                    let _ = running.input.signal(libc::SIGKILL);
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the guest's answer is larger than {} MiB", limit >> 20),
                    ));
                }
                stdout.extend_from_slice(&data);
            }
            Event::Stderr(data) => keep_some(&mut stderr, &data),
            Event::Started(_) => {}
            Event::Ended(outcome) => {
                guest_files::outcome(&outcome, &stderr).map_err(refusal)?;
                return Ok(stdout);
            }
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "the sandbox's microVM ended during the operation",
    ))
}

fn keep_some(kept: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_STDERR_BYTES.saturating_sub(kept.len());
    kept.extend_from_slice(&data[..data.len().min(room)]);
}

async fn list_dir(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut running = start_op(&server, &id, Op::List, &query.path).await?;
    let listing = finish_op(&mut running, MAX_LISTING_BYTES).await?;
    Ok(Json(
        json!({ "entries": guest_files::parse_listing(&listing) }),
    ))
}

async fn make_dir(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<StatusCode, ApiError> {
    done(&server, &id, Op::Mkdir, &query.path).await
}

async fn remove_file(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<StatusCode, ApiError> {
    done(&server, &id, Op::Remove, &query.path).await
}

/// Does `op`, which writes nothing, on `path` in sandbox `id`.
async fn done(server: &Server, id: &str, op: Op, path: &str) -> Result<StatusCode, ApiError> {
    let mut running = start_op(server, id, op, path).await?;
    finish_op(&mut running, 0).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_file(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    download(
        &server,
        &id,
        Op::Read,
        &query.path,
        "application/octet-stream",
    )
    .await
}

async fn download_tar(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    download(&server, &id, Op::TarOut, &query.path, "application/x-tar").await
}

/// Streams what `op` writes on stdout. Its status is known once the guest has written the
/// first bytes or ended: a refusal before any byte is an error answer; a failure after the
/// first bytes (or more than [`MAX_DOWNLOAD_BYTES`]) ends the body with an error, which the
/// client sees as a cut response.
async fn download(
    server: &Server,
    id: &str,
    op: Op,
    path: &str,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let mut running = start_op(server, id, op, path).await?;
    let mut stderr = Vec::new();
    let first = loop {
        match running.events.recv().await {
            Some(Event::Stdout(data)) => break data,
            Some(Event::Stderr(data)) => keep_some(&mut stderr, &data),
            Some(Event::Started(_)) => {}
            Some(Event::Ended(outcome)) => {
                guest_files::outcome(&outcome, &stderr).map_err(refusal)?;
                break Vec::new();
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the sandbox's microVM ended during the operation",
                ))
            }
        }
    };
    let sent = first.len() as u64;
    let rest = futures_util::stream::unfold(
        (running.events, sent, stderr, false),
        |(mut events, mut sent, mut stderr, done)| async move {
            if done {
                return None;
            }
            loop {
                match events.recv().await? {
                    Event::Stdout(data) => {
                        sent += data.len() as u64;
                        if sent > MAX_DOWNLOAD_BYTES {
                            let e = std::io::Error::other(format!(
                                "longer than {} MiB",
                                MAX_DOWNLOAD_BYTES >> 20
                            ));
                            return Some((Err(e), (events, sent, stderr, true)));
                        }
                        return Some((Ok(Bytes::from(data)), (events, sent, stderr, false)));
                    }
                    Event::Stderr(data) => keep_some(&mut stderr, &data),
                    Event::Started(_) => {}
                    Event::Ended(outcome) => {
                        return match guest_files::outcome(&outcome, &stderr) {
                            Ok(()) => None,
                            Err(e) => Some((
                                Err(std::io::Error::other(e.to_string())),
                                (events, sent, stderr, true),
                            )),
                        };
                    }
                }
            }
        },
    );
    let body = futures_util::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

async fn write_file(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    upload(&server, &id, Op::Write, &query.path, &headers, body).await
}

async fn upload_tar(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    upload(&server, &id, Op::TarIn, &query.path, &headers, body).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is larger than {} MiB: split it, or pack it as several tar archives",
            MAX_UPLOAD_BYTES >> 20
        ),
    )
}

/// Feeds the request's body (at most [`MAX_UPLOAD_BYTES`]) to `op`'s stdin, and waits for it
/// to end. A body announced larger is refused before anything starts; one that grows larger
/// kills the operation.
async fn upload(
    server: &Server,
    id: &str,
    op: Op,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return Err(too_large());
    }
    let mut running = start_op(server, id, op, path).await?;
    // The guest's events are read meanwhile: one that refuses early ends the upload.
    let (chunks, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let input = running.input.clone();
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            input.write(&chunk)?;
        }
        input.close()
    });
    let mut stream = body.into_data_stream();
    let (mut received, mut over, mut stderr) = (0u64, false, Vec::new());
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(data)) => {
                    received += data.len() as u64;
                    if received > MAX_UPLOAD_BYTES {
                        over = true;
                        break;
                    }
                    if chunks.send(data.to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    let _ = running.input.signal(libc::SIGKILL);
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")));
                }
                None => break,
            },
            // The operation ended (refused) before the body did.
            event = running.events.recv() => match event {
                Some(Event::Ended(outcome)) => {
                    guest_files::outcome(&outcome, &stderr).map_err(refusal)?;
                    return Err(ApiError::new(StatusCode::BAD_GATEWAY, "the guest ended the operation before the upload's end"));
                }
                Some(Event::Stderr(data)) => keep_some(&mut stderr, &data),
                Some(_) => {}
                None => return Err(ApiError::new(StatusCode::BAD_GATEWAY, "the sandbox's microVM ended during the upload")),
            },
        }
    }
    if over {
        let _ = running.input.signal(libc::SIGKILL);
        return Err(too_large());
    }
    drop(chunks);
    let _ = writer.await;
    finish_op_with(&mut running, 0, stderr).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_or_name() {
        assert_eq!(signal_number(&json!(15)), Ok(15));
        assert_eq!(signal_number(&json!("SIGTERM")), Ok(libc::SIGTERM));
        assert_eq!(signal_number(&json!("KILL")), Ok(libc::SIGKILL));
        assert!(signal_number(&json!(0)).is_err());
        assert!(signal_number(&json!("SIGNOPE")).is_err());
        assert!(signal_number(&json!(["x"])).is_err());
    }

    #[test]
    fn create_requests_are_checked() {
        let options = |v: Value| {
            serde_json::from_value::<CreateRequest>(v)
                .unwrap()
                .options()
        };
        let o = options(json!({})).unwrap();
        assert_eq!((o.memory_mib, o.cpus, o.net), (512, 1, false));
        assert_eq!((o.idle, o.lifetime), (DEFAULT_IDLE, DEFAULT_LIFETIME));
        let o =
            options(json!({"memoryMib": 256, "cpus": 2, "idleTimeoutMs": 1500, "env": {"A": "1"}}))
                .unwrap();
        assert_eq!((o.memory_mib, o.cpus, o.idle.as_millis()), (256, 2, 1500));
        assert_eq!(o.env, [("A".to_string(), "1".to_string())]);
        for bad in [
            json!({"memoryMib": 1}),
            json!({"cpus": 0}),
            json!({"user": "../x"}),
            json!({"timeoutMs": 0}),
            json!({"idleTimeoutMs": 100_000_000_000u64}),
            json!({"env": {"1A": "x"}}),
        ] {
            assert!(options(bad.clone()).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<CreateRequest>(json!({"memory": 1})).is_err());
    }
}
