//! `nodeos-vm serve` on the loopback: a small handler app deployed, then its cold start (no
//! warm instance to the first answer; instances in the app's standby VM, restored from the
//! template, and booted cold by a `serve --no-snapshot`, the last two without a standby VM
//! (`standby=false`), in the same run), warm latency with one client, and a bounded load test
//! (20 concurrent clients, 500 calls, no error allowed); the same handler in a Node HTTP
//! server on the host, called by the same client, is the in-process baseline of the same run.
//!
//! cargo build --release && ./target/release/serve [INSTANCES]
//!
//! INSTANCES (default 2): the app's `min` and `max` for the warm runs. The backend is the one
//! `auto` picks (QEMU/TCG on hosts whose KVM cannot boot Linux).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nodeos_vm_benches::{artifacts, count_arg, nodeos_vm_bin, npm_pack, percentile};

const CLIENTS: usize = 20;
const CALLS: usize = 500;
const SEQUENTIAL_CALLS: usize = 100;
const WARMUP_CALLS: usize = 10;
const COLD_RUNS: usize = 3;
/// How long the cold app's instances may idle before they stop (so each cold run waits this).
const COLD_IDLE: &str = "1s";
const SCALE_TO_ZERO_LIMIT: Duration = Duration::from_secs(30);
const WARM_LIMIT: Duration = Duration::from_secs(180);
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// The handler: a little JSON work, as a typical function does.
const HANDLER: &str = "exports.handler = async (event) => \
    ({ n: event.n + 1, words: String(event.text).split(' ').length });\n";

/// The baseline: the same module behind a plain Node HTTP server (any path, POST, JSON).
const HOST_SERVER: &str = r#"
const http = require('http');
const { handler } = require(process.argv[2]);
let calls = 0;
const server = http.createServer(async (req, res) => {
  let body = '';
  for await (const chunk of req) body += chunk;
  const result = await handler(JSON.parse(body || 'null'), { invocationId: `host-${calls++}`, app: 'bench' });
  const out = JSON.stringify(result);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
  res.end(out);
});
server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}`));
"#;

fn main() {
    let instances = count_arg(2);
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    let dir = tempfile::tempdir().expect("a scratch folder");
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("package")).unwrap();
    std::fs::write(
        app.join("package/package.json"),
        r#"{"name": "bench", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(app.join("package/index.js"), HANDLER).unwrap();
    let package = npm_pack(&app);

    let data = |name: &str| dir.path().join(name);
    let start_serve = |options: &[&str], data: &Path| {
        let mut serve = Server::start(
            Command::new(&bin)
                .args(["serve", "--listen", "127.0.0.1:0", "--kernel"])
                .arg(&kernel)
                .arg("--rootfs")
                .arg(&rootfs)
                .args(options)
                .env("NODEOS_VM_DATA", data)
                .env("XDG_RUNTIME_DIR", dir.path()),
            &["admin: ", "apps: "],
        );
        // The admin token serve generated and saved.
        serve.token = std::fs::read_to_string(data.join("serve-token"))
            .expect("reading serve's token")
            .trim()
            .to_string();
        serve
    };
    // Cold starts of instances booted cold (`--no-snapshot`), the baseline of restored ones.
    let booted = start_serve(&["--no-snapshot"], &data("data-cold"));
    let (_, booted_colds) = cold_starts(&booted, &package, false);
    booted.terminate();
    let serve = start_serve(&[], &data("data"));
    let (_, restored_colds) = cold_starts(&serve, &package, false);
    let (deploy, colds) = cold_starts(&serve, &package, true);

    let (status, text) = serve.deploy(
        "bench",
        // No standby VM: it would boot during the timed calls, and `min` instances are warm.
        &format!("?min={instances}&max={instances}&standby=false"),
        &package,
    );
    assert_eq!(status, 200, "deploying: {text}");
    serve.wait_instances("bench", instances, WARM_LIMIT);
    let ours = measure(&serve.apps, "/apps/bench/invoke");

    let script = dir.path().join("host-server.js");
    std::fs::write(&script, HOST_SERVER).unwrap();
    let host = Server::start(
        Command::new("node")
            .arg(&script)
            .arg(app.join("package/index.js")),
        &[""],
    );
    let baseline = measure(&host.addr, "/invoke");
    drop(host);
    serve.terminate();

    println!("## `nodeos-vm serve` on the loopback (backend auto), {instances} warm instances\n");
    println!("| what | nodeos-vm serve | in-process: Node HTTP server on the host |");
    println!("|---|---|---|");
    let row = |what: &str, a: String, b: String| println!("| {what} | {a} | {b} |");
    let latency = |v: &[f64], p: f64| format!("{:.1} ms", percentile(v, p));
    for (what, p) in [("p50", 50.0), ("p99", 99.0)] {
        row(
            &format!("warm latency {what}, 1 client ({SEQUENTIAL_CALLS} calls)"),
            latency(&ours.sequential, p),
            latency(&baseline.sequential, p),
        );
    }
    for (what, p) in [("p50", 50.0), ("p99", 99.0)] {
        row(
            &format!("latency {what} under load ({CLIENTS} clients, {CALLS} calls)"),
            latency(&ours.load, p),
            latency(&baseline.load, p),
        );
    }
    row(
        "throughput under load",
        format!("{:.1} calls/s", ours.throughput),
        format!("{:.1} calls/s", baseline.throughput),
    );
    row(
        "errors under load",
        ours.errors.to_string(),
        baseline.errors.to_string(),
    );
    let spread = |v: &[f64]| {
        format!(
            "{:.1} ms (min {:.1}, max {:.1})",
            percentile(v, 50.0),
            percentile(v, 0.0),
            percentile(v, 100.0)
        )
    };
    row(
        &format!(
            "cold start, no warm instance → first answer, in the standby VM (median of {COLD_RUNS})"
        ),
        spread(&colds),
        "—".into(),
    );
    row(
        "cold start, instances restored (`standby=false`)",
        spread(&restored_colds),
        "—".into(),
    );
    row(
        "cold start, instances booted cold (`--no-snapshot`, `standby=false`)",
        spread(&booted_colds),
        "—".into(),
    );
    row(
        "deploy: upload → verified in its microVM",
        format!("{deploy:.1} ms"),
        "—".into(),
    );
    println!(
        "\ncold start / booted cold: {:.2} in the standby VM, {:.2} restored",
        percentile(&colds, 50.0) / percentile(&booted_colds, 50.0),
        percentile(&restored_colds, 50.0) / percentile(&booted_colds, 50.0)
    );
    println!(
        "warm overhead over in-process, p50 with 1 client: {:.1} ms",
        percentile(&ours.sequential, 50.0) - percentile(&baseline.sequential, 50.0)
    );
    assert_eq!(ours.errors + baseline.errors, 0, "calls failed under load");
}

/// Deploys an app whose instances stop after [`COLD_IDLE`] on `serve`, with a standby VM or
/// not, and calls it [`COLD_RUNS`] times, each once it has no instance left (and its standby VM
/// is booted): how long the deploy took, and each call.
fn cold_starts(serve: &Server, package: &[u8], standby: bool) -> (f64, Vec<f64>) {
    let app = if standby { "cold" } else { "bare" };
    let started = Instant::now();
    let query = format!("?idle={COLD_IDLE}&standby={standby}");
    let (status, text) = serve.deploy(app, &query, package);
    assert_eq!(status, 200, "deploying: {text}");
    let deploy = ms(started.elapsed());
    let mut colds = Vec::new();
    for n in 0..COLD_RUNS {
        serve.wait_until(app, "no instance", SCALE_TO_ZERO_LIMIT, |info| {
            info["instances"] == 0 && (!standby || info["standby"] == "booted")
        });
        let started = Instant::now();
        let path = format!("/apps/{app}/invoke");
        let answer = post(&serve.apps, &path, &event(n)).expect("a cold call");
        colds.push(ms(started.elapsed()));
        assert!(answer.cold, "the call found a warm instance");
        check(&answer, n).expect("the cold call's answer");
    }
    (deploy, colds)
}

/// A server process that prints its URLs first, one a line; SIGKILLed when dropped.
struct Server {
    child: Child,
    /// The first URL's address (serve's admin API), and the last's (serve's apps).
    addr: String,
    apps: String,
    /// What the admin API needs (`Authorization: Bearer`).
    token: String,
}

impl Server {
    /// Starts `command`, which prints one line `<prefix>http://ADDR` per prefix.
    fn start(command: &mut Command, prefixes: &[&str]) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let addrs: Vec<String> = prefixes
            .iter()
            .map(|prefix| {
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                line.trim()
                    .strip_prefix(&format!("{prefix}http://"))
                    .unwrap_or_else(|| panic!("the server printed {line:?}"))
                    .to_string()
            })
            .collect();
        Server {
            child,
            addr: addrs[0].clone(),
            apps: addrs[addrs.len() - 1].clone(),
            token: String::new(),
        }
    }

    fn deploy(&self, app: &str, query: &str, package: &[u8]) -> (u16, String) {
        let path = format!("/apps/{app}{query}");
        let answer = request(&self.addr, "PUT", &path, package, Some(&self.token))
            .unwrap_or_else(|e| panic!("deploying {app}: {e}"));
        (answer.status, answer.body)
    }

    /// Waits until `app` has `n` instances.
    fn wait_instances(&self, app: &str, n: usize, limit: Duration) {
        let what = format!("{n} instances");
        self.wait_until(app, &what, limit, |info| info["instances"] == n);
    }

    /// Waits (at most `limit`) until `app`'s description satisfies `done` (`what` it waits for).
    fn wait_until(
        &self,
        app: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let path = format!("/apps/{app}");
            let answer = request(&self.addr, "GET", &path, b"", Some(&self.token)).unwrap();
            let info: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            if done(&info) {
                return;
            }
            assert!(Instant::now() < deadline, "{app} never had {what}: {info}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM (serve stops its microVMs), then waits.
    fn terminate(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signalling serve");
        let status = self.child.wait().expect("waiting for serve");
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Latencies in ms of one client's calls and of the load test's, its throughput and errors.
struct Measured {
    sequential: Vec<f64>,
    load: Vec<f64>,
    throughput: f64,
    errors: usize,
}

fn measure(addr: &str, path: &str) -> Measured {
    for n in 0..WARMUP_CALLS {
        let answer = post(addr, path, &event(n)).expect("a warm-up call");
        check(&answer, n).expect("a warm-up answer");
    }
    let sequential = (0..SEQUENTIAL_CALLS)
        .map(|n| {
            let started = Instant::now();
            let answer = post(addr, path, &event(n)).expect("a call");
            check(&answer, n).expect("an answer");
            ms(started.elapsed())
        })
        .collect();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<f64, String>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let mut results = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= CALLS {
                            return results;
                        }
                        let started = Instant::now();
                        let answer = post(addr, path, &event(n)).and_then(|a| check(&a, n));
                        results.push(answer.map(|()| ms(started.elapsed())));
                    }
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let wall = started.elapsed();
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = errors.first() {
        eprintln!(
            "{} of {CALLS} calls to {addr} failed; the first: {first}",
            errors.len()
        );
    }
    Measured {
        sequential,
        load: results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect(),
        throughput: CALLS as f64 / wall.as_secs_f64(),
        errors: errors.len(),
    }
}

fn event(n: usize) -> Vec<u8> {
    format!(r#"{{"n": {n}, "text": "the quick brown fox"}}"#).into_bytes()
}

/// Whether `answer` is the handler's to `event(n)`.
fn check(answer: &Answer, n: usize) -> Result<(), String> {
    let want = format!(r#"{{"n":{},"words":4}}"#, n + 1);
    if answer.status == 200 && answer.body == want {
        Ok(())
    } else {
        Err(format!("answered {} {:?}", answer.status, answer.body))
    }
}

struct Answer {
    status: u16,
    body: String,
    /// It carried `x-cold-start`: the call booted its instance.
    cold: bool,
}

fn post(addr: &str, path: &str, body: &[u8]) -> Result<Answer, String> {
    request(addr, "POST", path, body, None)
}

/// One HTTP/1.1 request on a connection of its own, with `token` as its bearer when given.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<Answer, String> {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(HTTP_TIMEOUT))?;
        conn.set_nodelay(true)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(&[head.as_bytes(), body].concat())?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response)?;
        Ok(response)
    };
    let response = exchange().map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head:?}"))?;
    Ok(Answer {
        status,
        body: body.to_string(),
        cold: head.to_ascii_lowercase().contains("\r\nx-cold-start: 1"),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
