//! `nodeos-vm serve` end to end: real microVMs on the backend `auto` picks here (or
//! `NODEOS_VM_TEST_BACKEND`), apps built with `tar czf` as `npm pack` would, an HTTP client on
//! the loopback. Each test runs its own server (its own data and runtime folders).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::{http, parse, serve_command, Serve, To};

/// An app whose handler is `body` (an async function of `event` and `context`).
fn app(name: &str, env: &str, body: &str) -> Vec<u8> {
    common::npm_package(&[
        (
            "package.json",
            &format!(
                r#"{{"name": "{name}", "version": "1.0.0", "main": "index.js", "nodeos": {{"env": {{{env}}}}}}}"#
            ),
        ),
        (
            "index.js",
            &format!("exports.handler = async (event, context) => {{ {body} }};\n"),
        ),
    ])
}

/// A valid package beside `count - 2` empty folders and symlinks in the tarball's top folder
/// (none of them unpacked).
fn folders_and_links(count: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let manifest = br#"{"name": "keep", "main": "index.js"}"#;
    let index = b"exports.handler = async () => 'v2';\n";
    for (path, data) in [
        ("package/package.json", &manifest[..]),
        ("package/index.js", index),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, data).unwrap();
    }
    for i in 0..count - 2 {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        if i % 2 == 0 {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, format!("d{i}/"), std::io::empty())
                .unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, format!("l{i}"), "package")
                .unwrap();
        }
    }
    tar.into_inner().unwrap().finish().unwrap()
}

const ECHO: &str = "console.log('event', JSON.stringify(event)); \
    if (event.throw) throw new TypeError(event.throw); \
    if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep)); \
    if (event.big) return 'x'.repeat(event.big); \
    return { event, id: context.invocationId, pid: process.pid };";

/// Deploy, invoke, a thrown exception, the Web `fetch` route, listing, logs, metrics, delete,
/// and SIGTERM finishing the call in flight and leaving no VM or socket behind.
#[test]
fn deploy_invoke_and_clean_shutdown() {
    let mut serve = Serve::start();
    let pkg = common::npm_package(&[
        ("package.json", r#"{"name": "hello", "main": "lib/main.js"}"#),
        (
            "lib/main.js",
            &format!(
                "exports.handler = async (event, context) => {{ {ECHO} }};\n\
                 exports.fetch = async (req) => new Response(`${{req.method}} ${{new URL(req.url).pathname}} ${{await req.text()}}`, \
                   {{ status: 201, headers: {{ 'x-app': 'hello' }} }});\n"
            ),
        ),
    ]);
    let (status, info) = serve.deploy("hello", "?memory=256M&max=1", &pkg);
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["exports"],
        serde_json::json!({"handler": true, "fetch": true})
    );
    assert_eq!(info["version"], 1);

    let (status, out) = serve.invoke("hello", serde_json::json!({"n": 1}));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["event"], serde_json::json!({"n": 1}));
    let first = out["id"].as_str().unwrap().to_string();
    let pid = out["pid"].clone();
    // Warm: the same runner answers.
    let (status, out) = serve.invoke("hello", serde_json::json!({"n": 2}));
    assert_eq!((status, &out["pid"]), (200, &pid), "{out}");
    // A call of 2 MB reaches the runner in many reads, its three-byte characters split between
    // some of them, and is one call.
    let text = "€".repeat(700_000);
    let (status, out) = serve.invoke("hello", serde_json::json!({ "text": text }));
    assert_eq!((status, &out["pid"]), (200, &pid));
    assert!(out["event"]["text"] == text.as_str());

    let (status, out) = serve.invoke("hello", serde_json::json!({"throw": "bad input"}));
    assert_eq!(status, 500, "{out}");
    assert_eq!(out["name"], "TypeError");
    assert_eq!(out["message"], "bad input");
    assert!(
        out["stack"].as_str().unwrap().contains("/app/lib/main.js"),
        "{out}"
    );
    // An answer over the limit is an error, not a hung call.
    let (status, out) = serve.invoke("hello", serde_json::json!({"big": 8_000_000}));
    assert_eq!(status, 500, "{out}");
    assert!(
        out["message"].as_str().unwrap().contains("the limit is"),
        "{out}"
    );
    // An exception does not cost the instance.
    let (status, out) = serve.invoke("hello", serde_json::json!({}));
    assert_eq!((status, &out["pid"]), (200, &pid), "{out}");

    let (status, text) = serve.fetch("POST", "/run/hello/a/b?q=1", b"body!");
    assert_eq!((status, text.as_str()), (201, "POST /a/b body!"));

    let (_, list) = serve.json("GET", "/apps", b"");
    assert_eq!(list["apps"][0]["name"], "hello");
    let (status, logs) = serve.json("GET", &format!("/apps/hello/logs?invocation={first}"), b"");
    assert_eq!(status, 200);
    assert_eq!(logs["lines"][0]["text"], "event {\"n\":1}", "{logs}");
    assert_eq!(logs["lines"][0]["stream"], "stdout", "{logs}");
    let (status, metrics) = serve.request("GET", "/metrics", b"");
    assert_eq!(status, 200);
    for line in [
        "nodeos_serve_instances{app=\"hello\"} 1",
        "nodeos_serve_invocations_total{app=\"hello\",status=\"200\"} 4",
        "nodeos_serve_invocations_total{app=\"hello\",status=\"500\"} 2",
        "nodeos_serve_invocation_seconds_count{app=\"hello\"} 7",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // A second app, deleted.
    let (status, _) = serve.deploy("gone", "", &app("gone", "", "return 1;"));
    assert_eq!(status, 200);
    let (status, _) = serve.json("DELETE", "/apps/gone", b"");
    assert_eq!(status, 200);
    let (status, _) = serve.invoke("gone", serde_json::json!({}));
    assert_eq!(status, 404);

    // SIGTERM while a call runs: the call finishes, then every VM stops.
    let client = serve.client.clone();
    let slow =
        std::thread::spawn(move || client.invoke("hello", serde_json::json!({"sleep": 1500})));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serve.terminate(), Some(0));
    let (status, out) = slow.join().unwrap();
    assert_eq!(status, 200, "{out}");
    let left: Vec<_> = std::fs::read_dir(serve.runtime_dir()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Two apps run in microVMs of their own: neither sees the other's files, environment or
/// processes.
#[test]
fn apps_are_isolated() {
    let serve = Serve::start();
    let probe = "const fs = require('fs'); \
        if (event.write) fs.writeFileSync('/tmp/mark', process.env.NODEOS_APP); \
        const environs = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).map((p) => { \
          try { return fs.readFileSync(`/proc/${p}/environ`, 'utf8'); } catch { return ''; } }); \
        return { mark: fs.existsSync('/tmp/mark') ? fs.readFileSync('/tmp/mark', 'utf8') : null, \
          secret: process.env.SECRET ?? null, \
          foreign: environs.filter((e) => e.includes('SECRET=') && !e.includes(`SECRET=${process.env.SECRET}`)).length, \
          name: JSON.parse(fs.readFileSync('/app/package.json', 'utf8')).name };";
    for (name, secret) in [("left", "l3ft"), ("right", "r1ght")] {
        let (status, info) = serve.deploy(
            name,
            "",
            &app(name, &format!(r#""SECRET": "{secret}""#), probe),
        );
        assert_eq!(status, 200, "{info}");
    }
    let (status, out) = serve.invoke("left", serde_json::json!({"write": true}));
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        serde_json::json!({"mark": "left", "secret": "l3ft", "foreign": 0, "name": "left"})
    );
    let (status, out) = serve.invoke("right", serde_json::json!({}));
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        serde_json::json!({"mark": null, "secret": "r1ght", "foreign": 0, "name": "right"})
    );
}

/// An endless loop gets 504 at the app's timeout and a guest crash 502; each time the next
/// call gets a fresh microVM and works.
#[test]
fn timeouts_and_crashes_recover() {
    let serve = Serve::start();
    let body = "if (event.loop) for (;;) {} \
        if (event.kill) process.kill(process.pid, 'SIGKILL'); \
        if (event.exit) process.exit(7); \
        return process.pid;";
    let (status, info) = serve.deploy("fragile", "?timeout=5s&max=1", &app("fragile", "", body));
    assert_eq!(status, 200, "{info}");
    let (status, before) = serve.invoke("fragile", serde_json::json!({}));
    assert_eq!(status, 200);

    let started = Instant::now();
    let (status, out) = serve.invoke("fragile", serde_json::json!({"loop": true}));
    assert_eq!(status, 504, "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(out["error"].as_str().unwrap().contains("timeout"), "{out}");
    let (status, after) = serve.invoke("fragile", serde_json::json!({}));
    assert_eq!(status, 200, "{after}");
    let _ = before;

    for (event, why) in [
        (serde_json::json!({"kill": true}), "killed by signal 9"),
        (serde_json::json!({"exit": true}), "exited with status 7"),
    ] {
        let (status, out) = serve.invoke("fragile", event);
        assert_eq!(status, 502, "{out}");
        assert!(out["error"].as_str().unwrap().contains(why), "{out}");
        let (status, out) = serve.invoke("fragile", serde_json::json!({}));
        assert_eq!(status, 200, "{out}");
    }
}

/// Every bad input is a 4xx with a JSON error, and the app deployed before is unchanged.
#[test]
fn bad_inputs_change_nothing() {
    let serve = Serve::start();
    let good = app("keep", "", "return 'v1';");
    let (status, _) = serve.deploy("keep", "", &good);
    assert_eq!(status, 200);

    let no_handler = common::npm_package(&[
        ("package.json", r#"{"name": "keep", "main": "index.js"}"#),
        ("index.js", "exports.notAHandler = 1;\n"),
    ]);
    let no_manifest = common::npm_package(&[("index.js", "exports.handler = () => 1;\n")]);
    let huge = vec![0u8; 65 << 20];
    let put = |path: &str, body: &[u8], want: u16, says: &'static str| {
        (
            To::Admin,
            "PUT",
            path.to_string(),
            body.to_vec(),
            want,
            says,
        )
    };
    let cases = vec![
        put("/apps/keep", b"not a tarball", 400, "not a gzipped tarball"),
        put("/apps/keep", &no_manifest, 400, "no package.json"),
        put("/apps/keep", &no_handler, 422, "exports neither handler"),
        put("/apps/keep", &huge, 413, "larger than"),
        put(
            "/apps/keep",
            &folders_and_links(100_001),
            413,
            "more than 100000 entries",
        ),
        put("/apps/keep?max=0", &good, 400, "max"),
        put("/apps/keep?memory=lots", &good, 400, "memory"),
        put(
            "/apps/keep?color=red",
            &good,
            400,
            "unknown query parameter",
        ),
        put("/apps/..", &good, 400, "app name"),
        put("/apps/a%2F..%2Fb", &good, 400, "app name"),
        put("/apps/.hidden", &good, 400, "app name"),
        (
            To::Apps,
            "POST",
            "/apps/nope/invoke".into(),
            b"{}".to_vec(),
            404,
            "no app",
        ),
        (
            To::Admin,
            "GET",
            "/apps/nope".into(),
            Vec::new(),
            404,
            "no app",
        ),
        (
            To::Admin,
            "DELETE",
            "/apps/nope".into(),
            Vec::new(),
            404,
            "no app",
        ),
        (
            To::Apps,
            "POST",
            "/apps/keep/invoke".into(),
            b"{not json".to_vec(),
            400,
            "not JSON",
        ),
        (
            To::Apps,
            "POST",
            "/apps/keep/invoke".into(),
            vec![b' '; 7 << 20],
            413,
            "larger than",
        ),
    ];
    for (to, method, path, body, want, says) in cases {
        let (status, out) = serve.json_to(to, method, &path, &body);
        assert_eq!(status, want, "{method} {path}: {out}");
        assert!(
            out["error"].as_str().unwrap().contains(says),
            "{method} {path}: {out}"
        );
    }
    let (_, list) = serve.json("GET", "/apps", b"");
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["apps"][0]["version"], 1, "{list}");
    assert_eq!(
        serve.invoke("keep", serde_json::json!({})),
        (200, serde_json::json!("v1"))
    );
}

/// Redeploying while clients call drops no call; once the deploy returns, calls get the new
/// version.
#[test]
fn redeploy_under_load_drops_nothing() {
    let serve = Arc::new(Serve::start());
    let (status, _) = serve.deploy("ver", "?max=2", &app("ver", "", "return 1;"));
    assert_eq!(status, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (serve, stop) = (serve.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    answers.push(serve.invoke("ver", serde_json::json!({})));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, info) = serve.deploy("ver", "?max=2", &app("ver", "", "return 2;"));
    assert_eq!(
        (status, &info["version"]),
        (200, &serde_json::json!(2)),
        "{info}"
    );
    assert_eq!(
        serve.invoke("ver", serde_json::json!({})),
        (200, serde_json::json!(2))
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(answers.len() > 10, "{answers:?}");
    for (status, out) in &answers {
        assert!(*status == 200 && (out == 1 || out == 2), "{status} {out}");
    }
    assert!(answers.iter().any(|(_, out)| out == 1));
    assert!(answers.iter().any(|(_, out)| out == 2));
}

/// With its `max` instances busy, an app's calls wait, up to `queue` of them, and run in turn;
/// calls beyond that get 429 at once.
#[test]
fn calls_queue_then_429() {
    let serve = Arc::new(Serve::start());
    let (status, info) = serve.deploy("busy", "?max=1&queue=2", &app("busy", "", ECHO));
    assert_eq!(status, 200, "{info}");
    const SLEEP_MS: u64 = 1500;
    // One runs, two wait, two are refused.
    let clients: Vec<_> = (0..5)
        .map(|n| {
            let serve = serve.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let (status, out) =
                    serve.invoke("busy", serde_json::json!({"sleep": SLEEP_MS, "n": n}));
                (status, out, started.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!((served.len(), refused.len()), (3, 2), "{answers:?}");
    for (_, out, took) in &refused {
        assert!(out["error"].as_str().unwrap().contains("busy"), "{out}");
        assert!(
            *took < Duration::from_millis(SLEEP_MS),
            "429 after {took:?}"
        );
    }
    // One instance served all three, one call after another.
    assert!(
        served.iter().all(|a| a.1["pid"] == served[0].1["pid"]),
        "{served:?}"
    );
    let slowest = served.iter().map(|a| a.2).max().unwrap();
    assert!(
        slowest >= Duration::from_millis(3 * SLEEP_MS),
        "{slowest:?}"
    );
    let (_, metrics) = serve.request("GET", "/metrics", b"");
    for line in [
        "nodeos_serve_instances{app=\"busy\"} 1",
        "nodeos_serve_invocations_total{app=\"busy\",status=\"200\"} 3",
        "nodeos_serve_invocations_total{app=\"busy\",status=\"429\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

/// An instance idle for the app's `idle` time is stopped, down to none; the next call starts
/// one (marked `x-cold-start`) in the app's standby VM, booted meanwhile, and works; the call
/// after is warm, and another standby VM is booted. With `standby=false` no VM is kept booted:
/// a cold start boots its own.
#[test]
fn idle_instances_scale_to_zero() {
    let serve = Serve::start();
    let (status, info) = serve.deploy("nap", "?idle=1s", &app("nap", "", "return 'up';"));
    assert_eq!(
        (status, &info["instances"]),
        (200, &serde_json::json!(1)),
        "{info}"
    );
    assert_eq!(serve.wait_instances("nap", 0, Duration::from_secs(15)), 0);
    let (_, metrics) = serve.request("GET", "/metrics", b"");
    assert!(
        metrics
            .lines()
            .any(|l| l == "nodeos_serve_instances{app=\"nap\"} 0"),
        "{metrics}"
    );
    let booted = serde_json::json!("booted");
    assert_eq!(
        serve.wait_value("nap", "standby", &booted, common::BOOT_LIMIT),
        booted
    );
    let first = serve.invoke_cold("nap", serde_json::json!({}));
    assert_eq!(first, (200, serde_json::json!("up"), true));
    let (_, info) = serve.json("GET", "/apps/nap", b"");
    assert_eq!(info["instance_list"][0]["standby"], true, "{info}");
    let second = serve.invoke_cold("nap", serde_json::json!({}));
    assert_eq!(second, (200, serde_json::json!("up"), false));
    assert_eq!(
        serve.wait_value("nap", "standby", &booted, common::BOOT_LIMIT),
        booted
    );

    let (status, info) = serve.deploy(
        "bare",
        "?idle=1s&standby=false",
        &app("bare", "", "return 'up';"),
    );
    assert_eq!(status, 200, "{info}");
    assert_eq!(serve.wait_instances("bare", 0, Duration::from_secs(15)), 0);
    let (_, info) = serve.json("GET", "/apps/bare", b"");
    assert!(info["standby"].is_null(), "{info}");
    let cold = serve.invoke_cold("bare", serde_json::json!({}));
    assert_eq!(cold, (200, serde_json::json!("up"), true));
    let (_, info) = serve.json("GET", "/apps/bare", b"");
    assert_eq!(info["instance_list"][0]["standby"], false, "{info}");
}

/// ES modules are apps too: one whose module awaits at its top level (which `require` cannot
/// load: the runner imports it), and one whose functions are its default export.
#[test]
fn es_modules_are_apps() {
    let serve = Serve::start();
    let awaits = common::npm_package(&[
        (
            "package.json",
            r#"{"name": "tla", "type": "module", "main": "index.js"}"#,
        ),
        (
            "index.js",
            "const base = await Promise.resolve(40);\n\
             export async function handler(event) { return base + event.n; }\n",
        ),
    ]);
    let (status, info) = serve.deploy("tla", "", &awaits);
    let exports = serde_json::json!({"handler": true, "fetch": false});
    assert_eq!((status, &info["exports"]), (200, &exports), "{info}");
    assert_eq!(
        serve.invoke("tla", serde_json::json!({"n": 2})),
        (200, serde_json::json!(42))
    );
    let default = common::npm_package(&[
        ("package.json", r#"{"name": "esm", "main": "main.mjs"}"#),
        (
            "main.mjs",
            "export default {\n\
               async fetch(request) { return new Response(`esm ${new URL(request.url).pathname}`); },\n\
             };\n",
        ),
    ]);
    let (status, info) = serve.deploy("esm", "", &default);
    let exports = serde_json::json!({"handler": false, "fetch": true});
    assert_eq!((status, &info["exports"]), (200, &exports), "{info}");
    assert_eq!(
        serve.fetch("GET", "/run/esm/x", b""),
        (200, "esm /x".to_string())
    );
}

/// `min` instances are booted after the deploy and kept past the idle time: that many
/// concurrent calls all find a warm one.
#[test]
fn min_instances_stay_warm() {
    let serve = Arc::new(Serve::start());
    let (status, info) = serve.deploy("warm", "?min=2&max=3&idle=1s", &app("warm", "", ECHO));
    assert_eq!(status, 200, "{info}");
    // Both booted (not only alive: a booting one would make a call cold).
    assert_eq!(serve.wait_count("warm", "warm", 2, common::BOOT_LIMIT), 2);
    // Several reaps past the idle time.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(serve.wait_count("warm", "warm", 2, Duration::ZERO), 2);
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let serve = serve.clone();
            std::thread::spawn(move || serve.invoke_cold("warm", serde_json::json!({"sleep": 500})))
        })
        .collect();
    for call in calls {
        let (status, out, cold) = call.join().unwrap();
        assert_eq!((status, cold), (200, false), "{out}");
    }
    assert_eq!(serve.wait_instances("warm", 2, Duration::ZERO), 2);
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// The most memory `serve` may hold while one tenant floods: its own (about 30 MiB), the
/// flooding app's logs (2000 lines of at most 16 KiB) and its queue (8 messages).
const FLOOD_RSS_LIMIT_MIB: u64 = 160;

/// A tenant whose runner, idle between calls, prints 1 GiB of JSON lines and then answers
/// nobody asked for: serve's memory stays bounded, another app keeps answering, the flooding
/// instance is stopped and replaced.
#[test]
fn a_flooding_tenant_is_bounded_and_replaced() {
    let serve = Serve::start();
    let flood = "const fs = require('fs'); \
        const noise = JSON.stringify({ noise: 'x'.repeat(65536) }) + '\\n'; \
        const write = (text) => { for (;;) try { return fs.writeSync(1, text); } \
          catch (e) { if (e.code !== 'EAGAIN') throw e; } }; \
        let left = event.bytes; \
        const burst = () => { \
          for (let i = 0; i < 16 && left > 0; i++, left -= noise.length) write(noise); \
          if (left > 0) return setImmediate(burst); \
          for (let i = 0; i < 100; i++) write(JSON.stringify({ id: 'nobody', ok: true }) + '\\n'); \
        }; \
        setImmediate(burst); \
        return 'flooding';";
    for (name, body) in [("flood", flood), ("calm", ECHO)] {
        let (status, info) = serve.deploy(name, "?max=1", &app(name, "", body));
        assert_eq!(status, 200, "{info}");
    }
    let (status, answer) = serve.invoke("flood", serde_json::json!({"bytes": 1073741824}));
    assert_eq!((status, answer), (200, serde_json::json!("flooding")));

    let pid = serve.child.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut most = 0;
    // Until the flooding instance is gone (stopped, then dropped by its pool); its logs are
    // read once at the end, so that what is measured is what serve keeps, not an answer.
    loop {
        most = most.max(rss_mib(pid));
        let (status, out) = serve.invoke("calm", serde_json::json!({}));
        assert_eq!(status, 200, "another app answers during the flood: {out}");
        if serve.wait_instances("flood", 0, Duration::ZERO) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the flood never ended");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, logs) = serve.json("GET", "/apps/flood/logs", b"");
    let lines = logs["lines"].as_array().unwrap();
    assert!(lines.len() <= 2000, "{}", lines.len());
    let stopped = lines
        .iter()
        .find(|l| l["stream"] == "system")
        .and_then(|l| l["text"].as_str())
        .unwrap_or_else(|| panic!("no system line in {} lines", lines.len()));
    eprintln!("serve's most resident memory during a 1 GiB flood: {most} MiB");
    assert!(most < FLOOD_RSS_LIMIT_MIB, "{most} MiB");
    assert!(stopped.contains("nobody asked for"), "{stopped}");
    // The flooding instance is gone; the next call gets a new one.
    let (status, answer, cold) = serve.invoke_cold("flood", serde_json::json!({"bytes": 0}));
    assert_eq!(
        (status, answer, cold),
        (200, serde_json::json!("flooding"), true)
    );
}

/// Runs `serve` with `args` and its folders in `dir`, and expects it to refuse to start; its
/// stderr.
fn refused_start(dir: &std::path::Path, args: &[&str]) -> String {
    let child = serve_command(dir, args).spawn().unwrap();
    let _watchdog = common::Watchdog::new(child.id(), Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(out.stdout.is_empty(), "it listened: {stderr}");
    stderr
}

/// The admin API takes only requests with the token serve printed once at start and saved
/// (mode 0600) in its data folder: without it, with another or in another scheme, every
/// endpoint is a 401 JSON error that changes nothing.
#[test]
fn the_admin_api_needs_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let serve = Serve::start();
    let token = serve.token.clone();
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token:?}"
    );
    let file = serve.dir.path().join("data/serve-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let printed = loop {
        let stderr = serve.stderr.lock().unwrap().clone();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains(&token))
            .map(String::from)
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert!(
        printed[0].contains("Authorization: Bearer") && printed[0].contains("serve-token"),
        "{}",
        printed[0]
    );

    // A second serve on the same data folder that cannot listen leaves the first's token.
    let stderr = refused_start(serve.dir.path(), &["--apps-listen", &serve.admin]);
    assert!(stderr.contains("listening for the apps"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);

    let package = app("locked", "", "return 'in';");
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {token}0")),
        Some(format!("Bearer {}", &token[1..])),
        Some(format!("Basic {token}")),
        Some(token.clone()),
    ];
    let endpoints: [(&str, &str, &[u8]); 7] = [
        ("PUT", "/apps/locked", &package),
        ("GET", "/apps", b""),
        ("GET", "/apps/locked", b""),
        ("GET", "/apps/locked/logs", b""),
        ("DELETE", "/apps/locked", b""),
        ("GET", "/metrics", b""),
        ("GET", "/nowhere", b""),
    ];
    let refused = |method: &str, path: &str, body: &[u8]| {
        for authorization in &wrong {
            let mut headers = vec![("Host", serve.admin.as_str())];
            if let Some(value) = authorization {
                headers.push(("Authorization", value));
            }
            let (status, head, text) = http(&serve.admin, method, path, &headers, body);
            let what = format!("{method} {path} with {authorization:?}");
            assert_eq!(status, 401, "{what}: {text}");
            assert!(
                head.contains("\r\nwww-authenticate: bearer"),
                "{what}: {head}"
            );
            let error = parse(&what, status, &text);
            assert!(
                !error["error"].as_str().unwrap().is_empty(),
                "{what}: {error}"
            );
        }
    };
    for (method, path, body) in endpoints {
        refused(method, path, body);
    }
    let (status, list) = serve.json("GET", "/apps", b"");
    assert_eq!(
        (status, &list["apps"]),
        (200, &serde_json::json!([])),
        "{list}"
    );

    // With the token it works; a delete without it still changes nothing.
    let (status, info) = serve.deploy("locked", "", &package);
    assert_eq!(status, 200, "{info}");
    refused("DELETE", "/apps/locked", b"");
    let (status, info) = serve.json("GET", "/apps/locked", b"");
    assert_eq!(
        (status, &info["version"]),
        (200, &serde_json::json!(1)),
        "{info}"
    );
    assert_eq!(
        serve.invoke("locked", serde_json::json!({})),
        (200, serde_json::json!("in"))
    );
}

/// `--token-file`: serve takes the operator's token (and neither prints nor saves one), but
/// refuses, before it listens, a file other users may read and one that holds no token.
#[test]
fn the_operators_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let exposed = file("exposed", "0123456789abcdef0123456789abcdef\n", 0o644);
    let stderr = refused_start(dir.path(), &["--token-file", &exposed]);
    assert!(
        stderr.contains(&exposed) && stderr.contains("may be read or written by other users"),
        "{stderr}"
    );
    let empty = file("empty", "\n", 0o600);
    let stderr = refused_start(dir.path(), &["--token-file", &empty]);
    assert!(
        stderr.contains(&empty) && stderr.contains("holds no token"),
        "{stderr}"
    );

    let mine = "operators-own-token-0123456789";
    let good = file("good", &format!("{mine}\n"), 0o600);
    let mut serve = Serve::start_with(&["--token-file", &good]);
    assert!(serve.token.is_empty(), "serve saved a token of its own");
    assert!(!serve.dir.path().join("data/serve-token").exists());
    let (status, _) = serve.json("GET", "/apps", b"");
    assert_eq!(status, 401);
    serve.client.token = mine.to_string();
    let (status, list) = serve.json("GET", "/apps", b"");
    assert_eq!(status, 200, "{list}");
    assert_eq!(serve.terminate(), Some(0));
    let stderr = serve.stderr.lock().unwrap().clone();
    assert!(stderr.contains(&good) && !stderr.contains(mine), "{stderr}");
}

/// Both listeners take only requests addressed to them — their own address, localhost at
/// their port, a name given with `--allow-host` — so that a web page whose site rebinds its
/// name to 127.0.0.1 (DNS rebinding) gets a 421 that changes nothing, token or not.
#[test]
fn requests_addressed_to_another_host_are_refused() {
    let serve = Serve::start_with(&["--allow-host", "Functions.Example"]);
    let package = app("named", "", "return 1;");
    for (to, addr) in [(To::Admin, &serve.admin), (To::Apps, &serve.apps)] {
        let port = addr.rsplit_once(':').unwrap().1;
        let bearer = format!("Bearer {}", serve.token);
        let send = |host: Option<&str>| {
            let mut headers = vec![("Authorization", bearer.as_str())];
            headers.extend(host.map(|h| ("Host", h)));
            let (status, _, text) = http(addr, "PUT", "/apps/named", &headers, &package);
            (status, text)
        };
        for host in [
            "attacker.example".to_string(),
            format!("attacker.example:{port}"),
            format!("127.0.0.1.attacker.example:{port}"),
            format!("127.0.0.2:{port}"),
            "127.0.0.1:1".to_string(),
            format!("localhost.:{port}"),
        ] {
            let (status, text) = send(Some(&host));
            assert_eq!(status, 421, "{to:?} {host}: {text}");
            let error = parse(&host, status, &text);
            assert!(
                error["error"]
                    .as_str()
                    .unwrap()
                    .contains("is not this server"),
                "{error}"
            );
        }
        let (status, text) = send(None);
        assert_eq!(status, 421, "{to:?} without Host: {text}");
        // Addressed to it: past the check (the apps' listener has no deploy: 404).
        let expected = if to == To::Admin { 400 } else { 404 };
        for host in [
            format!("localhost:{port}"),
            "functions.example".to_string(),
            format!("FUNCTIONS.example:{port}"),
        ] {
            let (status, _, text) = http(
                addr,
                "PUT",
                "/apps/bad..name",
                &[("Host", &host), ("Authorization", &bearer)],
                b"",
            );
            assert_eq!(status, expected, "{to:?} {host}: {text}");
        }
    }
    let (status, list) = serve.json("GET", "/apps", b"");
    assert_eq!(
        (status, &list["apps"]),
        (200, &serde_json::json!([])),
        "{list}"
    );
}

/// Apps are called on a listener of their own that serves nothing of the admin API, even
/// with the token; the admin listener serves no call to an app.
#[test]
fn apps_and_the_admin_api_listen_apart() {
    let serve = Serve::start();
    assert_ne!(serve.admin, serve.apps);
    let package = common::npm_package(&[
        ("package.json", r#"{"name": "both", "main": "index.js"}"#),
        (
            "index.js",
            "exports.handler = async () => 'handled';\n\
             exports.fetch = async () => new Response('fetched');\n",
        ),
    ]);
    let (status, info) = serve.deploy("both", "", &package);
    assert_eq!(status, 200, "{info}");

    let bearer = format!("Bearer {}", serve.token);
    let on_apps = |method: &str, path: &str, body: &[u8]| {
        let headers = [("Host", serve.apps.as_str()), ("Authorization", &bearer)];
        let (status, _, text) = http(&serve.apps, method, path, &headers, body);
        (status, text)
    };
    for (method, path, body) in [
        ("GET", "/apps", &b""[..]),
        ("GET", "/apps/both", b""),
        ("PUT", "/apps/both", &package),
        ("PUT", "/apps/other", &package),
        ("DELETE", "/apps/both", b""),
        ("GET", "/apps/both/logs", b""),
        ("GET", "/metrics", b""),
    ] {
        let (status, text) = on_apps(method, path, body);
        assert_eq!(status, 404, "{method} {path} on the apps' listener: {text}");
        let error = parse(path, status, &text);
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("admin API listens elsewhere"),
            "{error}"
        );
    }
    for (method, path) in [("POST", "/apps/both/invoke"), ("GET", "/run/both/x")] {
        let (status, text) = serve.request(method, path, b"{}");
        assert_eq!(status, 404, "{method} {path} on the admin listener: {text}");
    }
    // Calls need no token there; the app is as it was.
    assert_eq!(
        serve.invoke("both", serde_json::json!({})),
        (200, serde_json::json!("handled"))
    );
    assert_eq!(
        serve.fetch("GET", "/run/both/x", b""),
        (200, "fetched".to_string())
    );
    let (status, list) = serve.json("GET", "/apps", b"");
    assert_eq!(status, 200);
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["apps"][0]["version"], 1, "{list}");
}

/// How long the slow app takes to load, in ms: far longer than a deploy of another app.
const SLOW_LOAD_MS: u64 = 20_000;

/// A deploy is slow while its package loads (here: its module spins for `SLOW_LOAD_MS`), and
/// holds up nothing else meanwhile: another app deploys, an existing one answers. Two deploys
/// of one app at once both succeed, with versions of their own, and the app is the higher
/// one, served and saved.
#[test]
fn deploys_hold_up_nothing_else() {
    let serve = Arc::new(Serve::start());
    let (status, info) = serve.deploy("steady", "", &app("steady", "", "return 'steady';"));
    assert_eq!(status, 200, "{info}");
    let slow_package = common::npm_package(&[
        ("package.json", r#"{"name": "slow", "main": "index.js"}"#),
        (
            "index.js",
            &format!(
                "const until = Date.now() + {SLOW_LOAD_MS}; while (Date.now() < until) {{}}\n\
                 exports.handler = async () => 'slow';\n"
            ),
        ),
    ]);
    let slow = {
        let serve = serve.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let (status, info) = serve.deploy("slow", "", &slow_package);
            (status, info, started.elapsed())
        })
    };
    // The slow deploy has its package by now, and is booting it.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (status, info) = serve.deploy("quick", "", &app("quick", "", "return 'quick';"));
    let quick = started.elapsed();
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        serve.invoke("steady", serde_json::json!({})),
        (200, serde_json::json!("steady"))
    );
    assert!(
        !slow.is_finished(),
        "the deploy of another app waited for the slow one: it took {quick:?}"
    );
    let (status, info, took) = slow.join().unwrap();
    assert_eq!(status, 200, "{info}");
    assert!(took >= Duration::from_millis(SLOW_LOAD_MS), "{took:?}");

    let twins: Vec<_> = ["left", "right"]
        .into_iter()
        .map(|answer| {
            let serve = serve.clone();
            std::thread::spawn(move || {
                let package = app("twin", "", &format!("return '{answer}';"));
                let (status, info) = serve.deploy("twin", "", &package);
                assert_eq!(status, 200, "{answer}: {info}");
                (info["version"].as_u64().unwrap(), answer)
            })
        })
        .collect();
    let mut versions: Vec<(u64, &str)> = twins.into_iter().map(|t| t.join().unwrap()).collect();
    versions.sort();
    assert_eq!((versions[0].0, versions[1].0), (1, 2), "{versions:?}");
    let last = versions[1].1;
    let (status, info) = serve.json("GET", "/apps/twin", b"");
    assert_eq!(
        (status, &info["version"]),
        (200, &serde_json::json!(2)),
        "{info}"
    );
    assert_eq!(
        serve.invoke("twin", serde_json::json!({})),
        (200, serde_json::json!(last))
    );
    let saved = std::fs::read(serve.dir.path().join("data/apps/twin/meta.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    assert_eq!(saved["version"], 2, "{saved}");
    let left: Vec<_> = std::fs::read_dir(serve.dir.path().join("data/apps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staging folders left: {left:?}");
}
