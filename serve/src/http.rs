//! The HTTP API (docs/openapi.yaml), on two listeners: the admin API (deploy, list, show,
//! delete, logs, metrics; the sandboxes, `sandbox_api`), which takes only requests with the
//! admin token but for the web console's fixed files (`console`), and the apps' listener
//! (calls: `invoke` and `fetch`), which takes no token and serves nothing of the admin API.
//! Both take only requests addressed to them (`access::Hosts`). Every answer is JSON (but
//! `/metrics`, the console's files, the sandboxes' streams and files, and what `fetch` apps
//! return), every error `{"error": "..."}` with a 4xx or 5xx status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use vmm::error_chain::one_line;

use super::access::{Hosts, Token};
use super::answer::{read_body, ApiError};
use super::instance::CallError;
use super::logs::Select;
use super::metrics;
use super::package::{self, Options};
use super::pool::LeaseError;
use super::sandbox_api;
use super::server::{App, DeployError, Server};

/// Largest package a deploy takes, and largest call body.
const MAX_PACKAGE_BYTES: usize = 64 << 20;
const MAX_CALL_BYTES: usize = 6 << 20;
/// The header that carries a call's ID (as in the logs).
const INVOCATION_HEADER: &str = "x-invocation-id";
/// Set on an answer whose call booted the microVM it ran on (no warm instance was free).
const COLD_START_HEADER: &str = "x-cold-start";

/// The admin listener: every request needs a Host that `hosts` allows, and `token` but for
/// the console's fixed files.
pub fn admin_router(server: Arc<Server>, token: Arc<Token>, hosts: Hosts) -> Router {
    Router::new()
        .route("/apps", get(list))
        .route("/apps/{name}", put(deploy).get(show).delete(delete))
        .route("/apps/{name}/logs", get(logs))
        .route("/metrics", get(metrics))
        .merge(sandbox_api::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint of the admin API (apps are called on the apps listener); see docs/openapi.yaml",
            )
        })
        .with_state(server)
        .layer(middleware::from_fn_with_state(token, require_token))
        .merge(super::console::router())
        .layer(middleware::from_fn_with_state(hosts, require_host))
}

/// The apps' listener: calls to the apps, no token; a Host that `hosts` allows.
pub fn apps_router(server: Arc<Server>, hosts: Hosts) -> Router {
    Router::new()
        .route("/apps/{name}/invoke", post(invoke))
        .route("/run/{name}", any(run))
        .route("/run/{name}/{*path}", any(run))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint for apps (POST /apps/NAME/invoke, ANY /run/NAME/PATH; the admin API listens elsewhere); see docs/openapi.yaml",
            )
        })
        .with_state(server)
        .layer(middleware::from_fn_with_state(hosts, require_host))
}

/// Refuses (421) a request that is not addressed to this listener: no Host, more than one, or
/// one (or a request target's authority) that `hosts` does not allow.
async fn require_host(State(hosts): State<Hosts>, request: Request, next: Next) -> Response {
    let mut named = request.headers().get_all(HOST).iter();
    let host = match (named.next(), named.next()) {
        (Some(host), None) => host.to_str().unwrap_or(""),
        (None, _) => {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "the request has no Host header",
            )
            .into_response()
        }
        (Some(_), Some(_)) => {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "the request has more than one Host header",
            )
            .into_response()
        }
    };
    let authority = request.uri().authority().map(|a| a.as_str());
    for name in std::iter::once(host).chain(authority) {
        if !hosts.allows(name) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the request is addressed to {name:?}, which is not this server ({}; `nodeos-vm serve --allow-host NAME` allows another name)",
                    hosts.describe()
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Refuses (401) a request without the admin token.
async fn require_token(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match token.check(authorization) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

fn find(server: &Server, name: &str) -> Result<App, ApiError> {
    package::check_name(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    server.app(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no app {name:?} is deployed"),
        )
    })
}

fn describe(name: &str, app: &App) -> Value {
    let d = &app.current;
    json!({
        "name": name,
        "version": d.version,
        "deployed_at_ms": d.deployed_at_ms,
        "exports": d.exports,
        "options": d.pool.options,
        "instances": d.pool.instances(),
        "instance_list": d.pool.roster(),
        "warm": d.pool.warm(),
        "standby": d.pool.standby(),
    })
}

async fn list(State(server): State<Arc<Server>>) -> Json<Value> {
    let apps: Vec<Value> = server.apps().iter().map(|(n, a)| describe(n, a)).collect();
    Json(json!({ "apps": apps }))
}

async fn show(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = find(&server, &name)?;
    Ok(Json(describe(&name, &app)))
}

async fn deploy(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bad = |e: package::Error| ApiError::new(StatusCode::BAD_REQUEST, e);
    package::check_name(&name).map_err(bad)?;
    let options = Options::from_query(&query).map_err(bad)?;
    let package = read_body(body, MAX_PACKAGE_BYTES, "package").await?;
    match server.deploy(&name, options, package).await {
        Ok(app) => Ok(Json(describe(&name, &app))),
        Err(e) => Err(match e {
            DeployError::Package(package::Error::TooLarge | package::Error::TooManyEntries) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e)
            }
            DeployError::Package(ref p) if p.is_bad_input() => {
                ApiError::new(StatusCode::BAD_REQUEST, e)
            }
            DeployError::DoesNotLoad(ref js) => {
                let js = js.clone();
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).with("stack", js.stack)
            }
            DeployError::RunnerDied(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, one_line(&e)),
        }),
    }
}

async fn delete(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&server, &name)?;
    if server.delete(&name).await {
        Ok(Json(json!({ "deleted": name })))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no app {name:?} is deployed"),
        ))
    }
}

async fn logs(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let app = find(&server, &name)?;
    let number = |key: &str| {
        query
            .get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("{key}={v:?}: give a whole number"),
                    )
                })
            })
            .transpose()
    };
    if let Some(unknown) = query
        .keys()
        .find(|k| !["invocation", "after", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown query parameter {unknown:?} (known: invocation, after, limit)"),
        ));
    }
    let select = Select {
        invocation: query.get("invocation").map(String::as_str),
        after: number("after")?.unwrap_or(0),
        limit: number("limit")?.map(|n| n as usize),
    };
    let lines = app.logs.lines(select);
    Ok(Json(json!({ "app": name, "lines": lines })))
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    ([("content-type", metrics::CONTENT_TYPE)], server.metrics()).into_response()
}

/// `POST /apps/{name}/invoke`: the JSON body is the handler's event; its result the answer.
async fn invoke(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let app = match find(&server, &name) {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let id = server.call_id();
    let answer = async {
        let body = read_body(body, MAX_CALL_BYTES, "call's body").await?;
        let event = invoke_event(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })?;
        if !app.current.exports.handler {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("app {name:?} exports no handler(event, context); call it at /run/{name}/"),
            ));
        }
        let (answer, cold) = call(&app, &id, json!({ "id": id, "event": event })).await?;
        let result = Json(answer.get("result").cloned().unwrap_or(Value::Null));
        Ok(mark_cold(result.into_response(), cold))
    }
    .await;
    finish(&server, &name, &id, started, answer)
}

/// The event of an invoke call: its body as JSON, `null` for an empty or blank body.
pub fn invoke_event(body: &[u8]) -> Result<Value, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(body)
    }
}

/// `ANY /run/{name}/{path}`: the request, as a Web `Request`, to the app's `fetch`; its
/// `Response` back as it is.
async fn run(
    State(server): State<Arc<Server>>,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let name = params.get("name").cloned().unwrap_or_default();
    let app = match find(&server, &name) {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let id = server.call_id();
    let answer = async {
        if !app.current.exports.fetch {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("app {name:?} exports no fetch(request); call it at /apps/{name}/invoke"),
            ));
        }
        let body = read_body(body, MAX_CALL_BYTES, "request body").await?;
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let path = params.get("path").map(String::as_str).unwrap_or("");
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let header_list: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let request = json!({
            "id": id,
            "fetch": {
                "method": method.as_str(),
                "url": format!("http://{host}/{path}{query}"),
                "headers": header_list,
                "body": BASE64.encode(&body),
            },
        });
        let (answer, cold) = call(&app, &id, request).await?;
        Ok(mark_cold(response_of(&answer["response"])?, cold))
    }
    .await;
    finish(&server, &name, &id, started, answer)
}

/// The HTTP response a `fetch` app's `Response` describes.
fn response_of(r: &Value) -> Result<Response, ApiError> {
    let bad =
        |why: &str| ApiError::new(StatusCode::BAD_GATEWAY, format!("the app's response {why}"));
    let status = r["status"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .ok_or_else(|| bad("has no valid status"))?;
    let body = BASE64
        .decode(r["body"].as_str().unwrap_or(""))
        .map_err(|_| bad("body is not base64"))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for pair in r["headers"].as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else {
            continue;
        };
        if matches!(k, "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().append(k, v);
        }
    }
    Ok(response)
}

/// `response` with `COLD_START_HEADER` when its call booted its instance.
fn mark_cold(mut response: Response, cold: bool) -> Response {
    if cold {
        response
            .headers_mut()
            .insert(COLD_START_HEADER, HeaderValue::from_static("1"));
    }
    response
}

/// Runs one call on an instance of the app's current version: the runner's answer and whether
/// the instance was booted for it, or the error for the client.
async fn call(app: &App, id: &str, request: Value) -> Result<(Value, bool), ApiError> {
    let deployment = app.current.clone();
    let mut lease = deployment.pool.lease().await.map_err(|e| match e {
        LeaseError::Busy { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e),
        LeaseError::Boot(_) => ApiError::new(StatusCode::BAD_GATEWAY, one_line(&e)),
    })?;
    let cold = lease.cold;
    let instance = lease.instance.as_mut().expect("a lease holds an instance");
    match instance
        .call(id, &request, deployment.pool.options.timeout)
        .await
    {
        Ok(Ok(answer)) => Ok((answer, cold)),
        Ok(Err(js)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the handler threw {}: {}", js.name, js.message),
        )
        .with("name", &js.name)
        .with("message", &js.message)
        .with("stack", &js.stack)),
        Err(e @ CallError::Timeout(_)) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, e)),
        Err(e @ CallError::Died(_)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e)),
    }
}

/// The answer with the call's ID, counted in the app's metrics.
fn finish(
    server: &Server,
    name: &str,
    id: &str,
    started: Instant,
    answer: Result<Response, ApiError>,
) -> Response {
    let mut response = match answer {
        Ok(r) => r,
        Err(e) => e.with("invocation", id).into_response(),
    };
    server.count(name, response.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::try_from(id) {
        response.headers_mut().insert(INVOCATION_HEADER, v);
    }
    response
}
