//! The web console at `/ui` on serve's admin listener (docs/serve.md, "The web console"): a real
//! `nodeos-vm serve` with an app deployed and called, and Debian's `chromium`, headless, driven
//! over the DevTools protocol on a pipe (`--remote-debugging-pipe`: no port that other local
//! users could reach, while the page holds the token).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use common::serve::{http, Serve};

/// Longest the page may take to show something the test waits for (it polls every 2 s).
const PAGE_LIMIT: Duration = Duration::from_secs(30);
/// Longest one DevTools command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// The DevTools protocol's descriptors in the browser with `--remote-debugging-pipe`: it
/// reads commands from 3 and writes answers and events to 4, each a JSON text ended by NUL.
const COMMANDS_FD: i32 = 3;
const MESSAGES_FD: i32 = 4;

/// The app the console shows: it logs each event on stdout, and on stderr a line of markup a
/// hostile guest could write.
const HOSTILE_LINE: &str = r#"<img src=x onerror="document.title='owned'"><b>not bold</b>"#;

fn demo_app() -> Vec<u8> {
    common::npm_package(&[
        (
            "package.json",
            r#"{"name": "console-demo", "version": "1.0.0", "main": "index.js"}"#,
        ),
        (
            "index.js",
            &format!(
                "exports.handler = async (event, context) => {{\n\
                   console.log('event', JSON.stringify(event));\n\
                   console.error({HOSTILE_LINE:?});\n\
                   return {{ id: context.invocationId }};\n\
                 }};\n"
            ),
        ),
    ])
}

/// Headless chromium, driven over the DevTools protocol on a pipe, attached to one page.
struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    messages: Receiver<Value>,
    next_id: u64,
    /// The page's session, once attached.
    session: Option<String>,
    /// Events seen so far.
    events: Vec<Value>,
    /// What the browser wrote on stderr.
    stderr: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Debian's chromium (installed with apt when missing, as root), on a blank page; None
    /// (the test is skipped) when it is missing and we are not root.
    fn launch() -> Option<Browser> {
        let program = if nix::unistd::geteuid().is_root() {
            common::host_program("chromium", "chromium")
        } else {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("chromium"))
                .find(|path| path.is_file());
            match found {
                Some(path) => path,
                None => {
                    eprintln!("skipped: chromium is not installed (`apt-get install -y chromium` as root)");
                    return None;
                }
            }
        };
        let profile = tempfile::tempdir().unwrap();
        let (to_browser, commands) = std::io::pipe().unwrap();
        let (messages, from_browser) = std::io::pipe().unwrap();
        let mut command = Command::new(program);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1280,1500",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, killed whole: the browser's helper processes too.
            .process_group(0);
        let (read_end, write_end) = (to_browser.as_raw_fd(), from_browser.as_raw_fd());
        // SAFETY: between fork and exec the child only duplicates two descriptors it inherited
        // (fcntl and dup2 are async-signal-safe); copied above 10 first, so that placing one
        // at 3 cannot close the other.
        unsafe {
            command.pre_exec(move || {
                let read = libc::fcntl(read_end, libc::F_DUPFD_CLOEXEC, 10);
                let write = libc::fcntl(write_end, libc::F_DUPFD_CLOEXEC, 10);
                if read < 0
                    || write < 0
                    || libc::dup2(read, COMMANDS_FD) < 0
                    || libc::dup2(write, MESSAGES_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("starting chromium");
        // Only the browser holds these ends now: its exit ends our reads.
        drop((to_browser, from_browser));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, copy) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                copy.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(messages);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                let text = message.strip_suffix(&[0]).unwrap_or(&message);
                if let Ok(value) = serde_json::from_slice(text) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            commands,
            messages: rx,
            next_id: 1,
            session: None,
            events: Vec::new(),
            stderr,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        Some(browser)
    }

    /// One command (to the page once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer: {}", self.tail()),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{method}: the browser ended: {}", self.tail())
                }
            };
            if message["id"] != json!(id) {
                self.events.push(message);
            } else if let Some(error) = message.get("error") {
                panic!("{method}: {error}");
            } else {
                return message["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// Waits (at most PAGE_LIMIT) until `expression` is truthy in the page; its value.
    fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PAGE_LIMIT;
        loop {
            let value = self.evaluate(expression);
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.evaluate("document.body.innerText");
                panic!(
                    "the page never showed {what} ({expression}).\npage:\n{}\nevents: {:?}\nbrowser: {}",
                    page.as_str().unwrap_or(""),
                    self.events,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Exceptions thrown in the page and what the browser refused it (its Content Security
    /// Policy), so far.
    fn complaints(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Log.entryAdded"
                        && e["params"]["entry"]["source"] == "security")
            })
            .collect()
    }

    /// The end of what the browser wrote on stderr.
    fn tail(&self) -> String {
        let stderr = self.stderr.lock().unwrap();
        let start = stderr.len().saturating_sub(3000);
        let start = (start..stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(stderr.len());
        stderr[start..].to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The console in a browser: the app, its instance, a log line of one of its calls (and a
/// guest's markup shown as text), the latency and throughput charts with points; a screenshot
/// kept in the target folder.
#[test]
fn the_console_shows_apps_logs_and_metrics() {
    let serve = Serve::start();
    let (status, info) = serve.deploy("console-demo", "?max=1", &demo_app());
    assert_eq!(status, 200, "{info}");
    let call = |n: u64| {
        let (status, answer) = serve.invoke("console-demo", json!({ "n": n }));
        assert_eq!(status, 200, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    };
    let ids: Vec<String> = (0..3).map(call).collect();
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let url = format!("http://{}/ui#token={}", serve.admin, serve.token);
    browser.call("Page.navigate", json!({"url": url}));

    let row = "document.querySelector('#apps tr[data-app=\"console-demo\"]')";
    browser.wait_for(
        "the app",
        &format!("{row}?.textContent.includes('console-demo')"),
    );
    browser.wait_for(
        "its one warm instance",
        &format!(
            "{row}.querySelector('[data-field=instances]').textContent === '1' && \
             {row}.querySelector('[data-field=warm]').textContent === '1' && \
             /^#1 idle, up \\d+ s$/.test({row}.querySelector('[data-field=roster]').textContent)"
        ),
    );
    // Its standby VM, booted once the calls ended, counts in the memory its VMs are given.
    browser.wait_for(
        "its standby VM",
        &format!(
            "{row}.querySelector('[data-field=standby]').textContent === 'booted' && \
             {row}.querySelector('[data-field=memory]').textContent === '512 MiB'"
        ),
    );
    // The token left the address bar; the tab keeps it.
    assert_eq!(browser.evaluate("location.hash"), json!(""));
    assert_eq!(
        browser.evaluate("sessionStorage.getItem('nodeos-serve-token')"),
        json!(serve.token)
    );

    let line = format!(
        "[...document.querySelectorAll('#logs li')].find(li => li.dataset.invocation === {:?} \
           && li.textContent.includes('event {{\"n\":1}}'))?.textContent",
        ids[1]
    );
    let shown = browser.wait_for("a log line of the second call", &line);
    assert!(shown.as_str().unwrap().contains(&ids[1]), "{shown}");
    // The guest's markup is text, not elements.
    let hostile = browser.evaluate(&format!(
        "[...document.querySelectorAll('#logs li.stderr .text')].some(t => t.textContent === {HOSTILE_LINE:?}) \
           && !document.querySelector('#logs img, #logs b') && document.title !== 'owned'"
    ));
    assert_eq!(hostile, json!(true));

    let bars = "[...document.querySelectorAll('#chart-histogram [data-point]')]";
    let counted = browser.wait_for(
        "the three calls in the latency histogram",
        &format!("{bars}.reduce((n, b) => n + Number(b.dataset.value), 0) === 3 && {bars}.length"),
    );
    assert!(counted.as_u64().unwrap() > 1, "{counted} bars");

    // Calls while the page watches: throughput and latency get points.
    for n in 3..6 {
        call(n);
    }
    browser.wait_for(
        "calls per second above zero",
        "[...document.querySelectorAll('#chart-throughput [data-point]')].some(p => Number(p.dataset.value) > 0)",
    );
    browser.wait_for(
        "latency points",
        "document.querySelectorAll('#chart-latency [data-point=p95]').length > 0",
    );
    browser.wait_for(
        "the six calls counted",
        &format!("{row}.querySelector('[data-field=calls]').textContent === '6'"),
    );
    // Without the sandbox API (404), or with no sandbox in it.
    browser.wait_for(
        "no sandboxes",
        "document.getElementById('sandboxes').textContent.includes('No sandboxes')",
    );
    let (status, created) = serve.json("POST", "/sandboxes", b"{}");
    if status != 404 {
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let exec = format!("/sandboxes/{id}/exec");
        let (status, out) = serve.request("POST", &exec, br#"{"argv": ["node", "-e", "1"]}"#);
        assert_eq!(status, 200, "{out}");
        browser.wait_for(
            "the sandbox and its command",
            &format!(
                "document.querySelector('#sandboxes tr[data-sandbox={id:?}]')\
                   ?.textContent.includes('node -e 1 exited, exit 0')"
            ),
        );
        // Its state, and the buttons that pause and resume it (with the token, as every call).
        let sandbox = format!("document.querySelector('#sandboxes tr[data-sandbox={id:?}]')");
        let shows = |state: &str, action: &str| {
            format!(
                "{sandbox}?.querySelector('[data-field=state]').textContent === '{state}' && \
                   {sandbox}.querySelector('button[data-action={action}]') !== null"
            )
        };
        let click = |action: &str| {
            format!("{sandbox}.querySelector('button[data-action={action}]').click()")
        };
        browser.wait_for("the sandbox running", &shows("running", "pause"));
        browser.evaluate(&click("pause"));
        browser.wait_for("the sandbox paused", &shows("paused", "resume"));
        let (status, info) = serve.json("GET", &format!("/sandboxes/{id}"), b"");
        assert_eq!((status, &info["state"]), (200, &json!("paused")), "{info}");
        browser.evaluate(&click("resume"));
        browser.wait_for("the sandbox running again", &shows("running", "pause"));
        let (status, info) = serve.json("GET", &format!("/sandboxes/{id}"), b"");
        assert_eq!((status, &info["pausedAt"]), (200, &Value::Null), "{info}");
    }

    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&path, png).unwrap();
    println!("screenshot of the console: {}", path.display());

    let complaints = browser.complaints();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

/// The console's files carry no data and are served without the token, with a strict Content
/// Security Policy, no sniffing and no framing; everything with data still needs the token.
#[test]
fn the_console_is_locked_down_and_its_data_needs_the_token() {
    let serve = Serve::start();
    let host = [("Host", serve.admin.as_str())];
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ] {
        let (status, head, body) = http(&serve.admin, "GET", path, &host, b"");
        assert_eq!(status, 200, "{path}: {body}");
        for header in [
            format!("content-type: {kind}"),
            "x-content-type-options: nosniff".into(),
            "x-frame-options: deny".into(),
            "content-security-policy: default-src 'none'; script-src 'self'".into(),
        ] {
            assert!(
                head.contains(&format!("\r\n{header}")),
                "{path}: {header} in {head}"
            );
        }
        assert!(head.contains("frame-ancestors 'none'"), "{path}: {head}");
        assert!(!body.contains(&serve.token), "{path} holds the token");
    }

    let wrong_token = format!("Bearer {}0", serve.token);
    for path in [
        "/apps",
        "/apps/any",
        "/apps/any/logs",
        "/metrics",
        "/sandboxes",
        "/ui/other",
    ] {
        for authorization in [None, Some(wrong_token.as_str())] {
            let mut headers = host.to_vec();
            headers.extend(authorization.map(|a| ("Authorization", a)));
            let (status, head, body) = http(&serve.admin, "GET", path, &headers, b"");
            assert_eq!(status, 401, "GET {path} with {authorization:?}: {body}");
            assert!(head.contains("\r\nwww-authenticate: bearer"), "{head}");
        }
    }
    let (status, body) = serve.request("GET", "/apps", b"");
    assert_eq!((status, body.as_str()), (200, r#"{"apps":[]}"#));

    // Addressed to another name (DNS rebinding): refused like the API.
    let (status, _, _) = http(&serve.admin, "GET", "/ui", &[("Host", "evil.example")], b"");
    assert_eq!(status, 421);
    // Not on the apps' listener.
    let (status, _, _) = http(&serve.apps, "GET", "/ui", &[("Host", &serve.apps)], b"");
    assert_eq!(status, 404);
}
