//! The sandbox API of `nodeos-vm serve` end to end: real microVMs on the backend the tests use,
//! a raw HTTP client on the loopback (chunked answers read as they come).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use common::serve::{Client, Serve};

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16)
                .unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A connection to the admin API on which a request's head, with the token and a body of
/// `length` bytes, is sent.
fn send_head(client: &Client, method: &str, path: &str, length: u64) -> TcpStream {
    let mut conn = TcpStream::connect(&client.admin).unwrap();
    conn.set_read_timeout(Some(common::BOOT_LIMIT)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        client.admin, client.token,
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn
}

/// One request to the admin API with a raw body; (status, head, body de-chunked when chunked).
fn raw(client: &Client, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut conn = send_head(client, method, path, body.len() as u64);
    conn.write_all(body).unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

/// A JSON request; (status, answer as JSON, or null when empty).
fn call(client: &Client, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, _, answer) = raw(client, method, path, &body);
    let value = if answer.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} {answer:?}: {e}"))
    };
    (status, value)
}

/// What a command did, from its NDJSON events.
#[derive(Debug, Default)]
struct Ran {
    id: String,
    stdout: String,
    stderr: String,
    exit: Value,
}

fn exec(client: &Client, sandbox: &str, request: Value) -> Ran {
    let (status, head, body) = raw(
        client,
        "POST",
        &format!("/sandboxes/{sandbox}/exec"),
        request.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    let mut ran = Ran::default();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let event: Value = serde_json::from_slice(line).unwrap();
        let data =
            || String::from_utf8(BASE64.decode(event["data"].as_str().unwrap()).unwrap()).unwrap();
        match event["type"].as_str().unwrap() {
            "exec" => ran.id = event["id"].as_str().unwrap().to_string(),
            "started" => assert!(event["pid"].as_i64().unwrap() > 1),
            "stdout" => ran.stdout.push_str(&data()),
            "stderr" => ran.stderr.push_str(&data()),
            "exit" => ran.exit = event.clone(),
            other => panic!("unknown event {other}"),
        }
    }
    assert!(!ran.exit.is_null(), "no exit event: {ran:?}");
    ran
}

fn create(client: &Client, options: Value) -> String {
    let (status, sandbox) = call(client, "POST", "/sandboxes", options);
    assert_eq!(status, 201, "{sandbox}");
    assert_eq!(sandbox["state"], "running");
    sandbox["id"].as_str().unwrap().to_string()
}

/// Waits (at most `limit`) until `check` holds.
fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}

/// How many folders whose name starts with `prefix` `serve`'s runtime folder holds: a VM has a
/// `serve-` folder, and a `jail-` folder when its VMM is jailed.
fn folders(serve: &Serve, prefix: &str) -> usize {
    std::fs::read_dir(serve.runtime_dir()).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
        .count()
    })
}

/// How many VMs `serve` has.
fn vms(serve: &Serve) -> usize {
    folders(serve, "serve-")
}

/// Its standby VM's state (`booting`, `booted`, or null when it keeps none).
fn standby(serve: &Serve) -> Value {
    call(serve, "GET", "/sandboxes", Value::Null).1["standby"].clone()
}

/// Whether no sandbox's VM is left: no VM or jail but the standby VM's, when serve keeps one.
fn no_vm_left(serve: &Serve) -> bool {
    let standby = usize::from(!standby(serve).is_null());
    vms(serve) == standby && folders(serve, "jail-") <= standby
}

/// Create, commands with output, status, environment, folder, stdin, a signal and a timeout,
/// the files of the guest's user, a tar archive both ways, listing, delete: nothing left.
#[test]
fn a_sandbox_runs_commands_and_holds_files() {
    let serve = Serve::start();
    let id = create(&serve, json!({"env": {"GREETING": "hello"}}));

    let ran = exec(
        &serve,
        &id,
        json!({"argv": ["node", "-e", "console.log(process.env.GREETING, process.getuid(), process.cwd()); console.error('to stderr'); process.exit(3)"], "cwd": "/tmp"}),
    );
    assert_eq!(ran.stdout, "hello 1000 /tmp\n");
    assert_eq!(ran.stderr, "to stderr\n");
    assert_eq!(ran.exit["exitCode"], 3);
    let ran = exec(
        &serve,
        &id,
        json!({"cmd": "echo $A$B | tr a-z A-Z", "env": {"A": "x", "B": "y"}}),
    );
    assert_eq!(
        (ran.stdout.as_str(), &ran.exit["exitCode"]),
        ("XY\n", &json!(0))
    );
    let ran = exec(&serve, &id, json!({"argv": ["no-such-program"]}));
    assert_eq!(ran.exit["exitCode"], 127);
    assert!(
        ran.exit["error"]
            .as_str()
            .unwrap()
            .contains("no-such-program"),
        "{ran:?}"
    );
    let ran = exec(
        &serve,
        &id,
        json!({"argv": ["sleep", "30"], "timeoutMs": 300}),
    );
    assert_eq!(ran.exit["timedOut"], true, "{ran:?}");

    // Stdin and a signal, by the command's ID, while its output streams.
    let sandbox = format!("/sandboxes/{id}");
    let (reader, first) = start_streaming(
        &serve,
        &id,
        json!({"argv": ["sh", "-c", "cat; sleep 30"], "stdin": true}),
    );
    let exec_id = first["id"].as_str().unwrap().to_string();
    let (status, _, _) = raw(
        &serve,
        "POST",
        &format!("{sandbox}/execs/{exec_id}/stdin?eof=true"),
        b"typed in\n",
    );
    assert_eq!(status, 204);
    let mut lines = reader.lines();
    let next = |lines: &mut std::io::Lines<_>| -> Value {
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
    };
    assert_eq!(next(&mut lines)["type"], "started");
    let echoed = next(&mut lines);
    assert_eq!(
        BASE64.decode(echoed["data"].as_str().unwrap()).unwrap(),
        b"typed in\n"
    );
    let (status, _) = call(
        &serve,
        "POST",
        &format!("{sandbox}/execs/{exec_id}/signal"),
        json!({"signal": "SIGTERM"}),
    );
    assert_eq!(status, 204);
    assert_eq!(next(&mut lines)["signal"], 15);

    // Files, as the guest's user.
    let file = format!("{sandbox}/files?path=/home/node/work/notes.txt");
    let (status, _, _) = raw(&serve, "PUT", &file, b"first line\n");
    assert_eq!(status, 204);
    let (status, _, body) = raw(&serve, "GET", &file, b"");
    assert_eq!((status, body.as_slice()), (200, &b"first line\n"[..]));
    let ran = exec(
        &serve,
        &id,
        json!({"cmd": "stat -c '%u %s' /home/node/work/notes.txt"}),
    );
    assert_eq!(ran.stdout, "1000 11\n");
    let (status, _) = call(
        &serve,
        "POST",
        &format!("{sandbox}/dirs?path=/home/node/work/sub"),
        Value::Null,
    );
    assert_eq!(status, 204);
    let (status, listing) = call(
        &serve,
        "GET",
        &format!("{sandbox}/dirs?path=/home/node/work"),
        Value::Null,
    );
    assert_eq!(status, 200);
    let entries: Vec<(String, String, u64)> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["type"].as_str().unwrap().into(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries[0],
        ("notes.txt".to_string(), "file".to_string(), 11)
    );
    assert_eq!(entries[1].0, "sub");
    assert_eq!(entries[1].1, "dir");

    // A tar archive up, and the same tree down.
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("app/index.js", &b"console.log(42)\n"[..]),
        ("app/lib/a.txt", b"aaa"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, data).unwrap();
    }
    let archive = tar.into_inner().unwrap();
    let (status, _, body) = raw(
        &serve,
        "PUT",
        &format!("{sandbox}/tar?path=/home/node/up"),
        &archive,
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    let ran = exec(
        &serve,
        &id,
        json!({"argv": ["node", "/home/node/up/app/index.js"]}),
    );
    assert_eq!(ran.stdout, "42\n");
    let (status, head, body) = raw(
        &serve,
        "GET",
        &format!("{sandbox}/tar?path=/home/node/up/app"),
        b"",
    );
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/x-tar"));
    let mut names: Vec<String> = tar::Archive::new(body.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["./", "./index.js", "./lib/", "./lib/a.txt"]);

    let (status, _) = call(
        &serve,
        "DELETE",
        &format!("{sandbox}/files?path=/home/node/up"),
        Value::Null,
    );
    assert_eq!(status, 204);
    let (status, _, _) = raw(
        &serve,
        "GET",
        &format!("{sandbox}/files?path=/home/node/up/app/index.js"),
        b"",
    );
    assert_eq!(status, 404);

    // Listed with its commands, then deleted: gone, its VM too.
    let (status, all) = call(&serve, "GET", "/sandboxes", Value::Null);
    assert_eq!(status, 200);
    let listed = &all["sandboxes"][0];
    assert_eq!(listed["id"], json!(id));
    let states: Vec<&str> = listed["execs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"timedOut") && states.contains(&"notFound"),
        "{states:?}"
    );
    let (status, _) = call(&serve, "DELETE", &sandbox, Value::Null);
    assert_eq!(status, 204);
    let (status, _) = call(&serve, "GET", &sandbox, Value::Null);
    assert_eq!(status, 404);
    assert!(wait_until(Duration::from_secs(30), || no_vm_left(&serve)));
}

/// Starts a command whose output the caller reads; the reader past the `exec` event, and that
/// event.
fn start_streaming(
    client: &Client,
    sandbox: &str,
    request: Value,
) -> (BufReader<Dechunked>, Value) {
    let body = request.to_string();
    let mut conn = send_head(
        client,
        "POST",
        &format!("/sandboxes/{sandbox}/exec"),
        body.len() as u64,
    );
    conn.write_all(body.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut events = BufReader::new(Dechunked {
        inner: reader,
        left: 0,
    });
    let mut first = String::new();
    events.read_line(&mut first).unwrap();
    (events, serde_json::from_str(&first).unwrap())
}

/// A chunked body read as it comes.
struct Dechunked {
    inner: BufReader<TcpStream>,
    left: usize,
}

impl Read for Dechunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line == "\r\n" {
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if self.left == 0 {
                return Ok(0);
            }
        }
        let most = self.left.min(buf.len());
        let n = self.inner.read(&mut buf[..most])?;
        self.left -= n;
        Ok(n)
    }
}

/// Paths outside what the guest's user may reach, through a symlink the guest made, not
/// absolute or plain; a 2 GiB upload; bad requests and a missing token: each one clear error,
/// and the sandbox goes on.
#[test]
fn bad_input_and_hostile_paths_are_refused() {
    let serve = Serve::start();
    let id = create(&serve, json!({}));
    let sandbox = format!("/sandboxes/{id}");
    exec(
        &serve,
        &id,
        json!({"cmd": "ln -s /etc /home/node/etc && ln -s /tmp /home/node/tmp"}),
    );
    let error = |status: u16, method: &str, path: &str, body: &[u8]| {
        let (got, _, answer) = raw(&serve, method, &format!("{sandbox}/{path}"), body);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer["error"].as_str().unwrap().to_string()
    };
    assert!(error(403, "GET", "files?path=/home/node/etc/passwd", b"").contains("symlink"));
    assert!(error(403, "PUT", "files?path=/home/node/tmp/x", b"x").contains("symlink"));
    assert!(error(403, "PUT", "tar?path=/home/node/tmp/x", b"").contains("symlink"));
    assert!(error(403, "POST", "dirs?path=/home/node/etc/made", b"").contains("symlink"));
    assert!(error(403, "PUT", "files?path=/home/node/tmp/a/b", b"x").contains("symlink"));
    // Refused before anything was made through the link.
    let ran = exec(
        &serve,
        &id,
        json!({"cmd": "ls /tmp /etc | grep -c -x -e x -e a -e made"}),
    );
    assert_eq!(ran.stdout, "0\n", "{ran:?}");
    let (status, _, _) = raw(
        &serve,
        "PUT",
        &format!("{sandbox}/files?path=/home/node/afile"),
        b"x",
    );
    assert_eq!(status, 204);
    assert!(error(409, "PUT", "files?path=/home/node/afile/x", b"x").contains("not a folder"));
    assert!(error(403, "PUT", "files?path=/usr/bin/node", b"x").contains("Permission denied"));
    assert!(error(404, "GET", "files?path=/home/node/none", b"").contains("no such"));
    assert!(error(400, "GET", "files?path=home/node", b"").contains("absolute"));
    assert!(error(400, "GET", "dirs?path=/home/../etc", b"").contains("plain"));
    assert!(error(409, "GET", "files?path=/home/node", b"").contains("not a regular file"));
    let (status, _) = call(
        &serve,
        "POST",
        &format!("{sandbox}/execs/e999/stdin"),
        Value::Null,
    );
    assert_eq!(status, 404);

    // A 2 GiB upload is refused from its announced length, before anything is read.
    let path = format!("{sandbox}/files?path=/home/node/huge");
    let mut conn = send_head(&serve, "PUT", &path, 2 << 30);
    conn.write_all(&[0; 65536]).unwrap();
    let mut answer = [0u8; 12];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");

    for (body, what) in [
        (json!({"memoryMib": 1}), "memoryMib"),
        (json!({"user": "../../etc"}), "user"),
        (json!({"idleTimeoutMs": 0}), "idleTimeoutMs"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let (status, answer) = call(&serve, "POST", "/sandboxes", body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(what), "{answer}");
    }
    let (status, answer) = call(&serve, "POST", &format!("{sandbox}/exec"), json!({}));
    assert_eq!(status, 400, "{answer}");
    let (status, _) = call(&serve, "GET", "/sandboxes/nope", Value::Null);
    assert_eq!(status, 404);
    let unauthorized = Client {
        token: "wrong".into(),
        ..serve.client.clone()
    };
    for (method, path) in [
        ("GET", "/sandboxes".to_string()),
        ("POST", format!("{sandbox}/exec")),
        ("DELETE", sandbox.clone()),
    ] {
        let (status, _) = call(&unauthorized, method, &path, Value::Null);
        assert_eq!(status, 401, "{method} {path}");
    }
    // Still there, still working.
    let ran = exec(&serve, &id, json!({"argv": ["echo", "alive"]}));
    assert_eq!(ran.stdout, "alive\n");
}

/// A client that goes away mid-stream: its command is killed, the sandbox lives on. A sandbox
/// idle past its limit is deleted (404 after), and its VM stops.
#[test]
fn a_gone_client_kills_its_command_and_idle_sandboxes_go() {
    let serve = Serve::start();
    let id = create(&serve, json!({"idleTimeoutMs": 4000}));
    let (reader, first) = start_streaming(&serve, &id, json!({"argv": ["sleep", "1000"]}));
    let exec_id = first["id"].as_str().unwrap().to_string();
    drop(reader);
    let state = || {
        let (_, sandbox) = call(&serve, "GET", &format!("/sandboxes/{id}"), Value::Null);
        sandbox["execs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == json!(exec_id))
            .map(|e| {
                (
                    e["state"].as_str().unwrap().to_string(),
                    e["signal"].clone(),
                )
            })
    };
    assert!(
        wait_until(Duration::from_secs(20), || state()
            == Some(("signaled".into(), json!(9)))),
        "{:?}",
        state()
    );
    let ran = exec(&serve, &id, json!({"argv": ["echo", "still here"]}));
    assert_eq!(ran.stdout, "still here\n");

    let gone = || call(&serve, "GET", &format!("/sandboxes/{id}"), Value::Null).0 == 404;
    assert!(wait_until(Duration::from_secs(30), gone));
    assert!(wait_until(Duration::from_secs(30), || no_vm_left(&serve)));
}

/// SIGTERM ends serve with its sandboxes at once: their commands killed, their VMs stopped,
/// nothing left in the runtime folder.
#[test]
fn shutdown_stops_every_sandbox() {
    let mut serve = Serve::start();
    let ids: Vec<String> = (0..2).map(|_| create(&serve, json!({}))).collect();
    let (mut reader, _) = start_streaming(&serve, &ids[0], json!({"argv": ["sleep", "1000"]}));
    let stopping = Instant::now();
    assert_eq!(serve.terminate(), Some(0));
    // Not held up by the command's open stream (calls in flight get 60 s to finish).
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "{:?}",
        stopping.elapsed()
    );
    // The command's stream ends with the VM.
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(!rest.contains("\"exit\""), "{rest}");
    // The standby VM (kept after the creates) stopped too.
    assert_eq!(folders(&serve, ""), 0);
}

/// After a sandbox of the default shape, serve keeps one more booted, Node warmed up in it (its
/// standby VM): the next create of that shape takes it, one of another shape does not. A
/// sandbox made of it is a VM of its own (boot id, kernel and Node random numbers its own) with
/// its creator's environment; the standby stops with serve. `--no-sandbox-standby` keeps none.
#[test]
fn the_next_sandbox_takes_the_standby_vm() {
    let mut serve = Serve::start();
    assert_eq!(standby(&serve), Value::Null, "one before any sandbox");
    let first = create(&serve, json!({}));
    let booted = || standby(&serve) == "booted";
    assert!(
        wait_until(Duration::from_secs(120), booted),
        "{}",
        standby(&serve)
    );
    assert_eq!(vms(&serve), 2);
    // With a network: not the standby's shape.
    let networked = create(&serve, json!({"net": true}));
    assert_eq!(
        standby(&serve),
        "booted",
        "a create of another shape took it"
    );
    assert_eq!(vms(&serve), 3);
    let second = create(&serve, json!({"env": {"GREETING": "hello"}}));
    // Taken: none, or the next one booting (restoring and warming up take over a second).
    assert_ne!(standby(&serve), "booted", "the create did not take it");
    let probe = json!({"argv": ["sh", "-c", "cat /proc/sys/kernel/random/boot_id /proc/sys/kernel/random/uuid; \
        node -p 'process.env.GREETING + \" \" + crypto.randomUUID() + \" \" + Math.random()'"]});
    let outputs: Vec<String> = [&first, &networked, &second]
        .iter()
        .map(|id| {
            let ran = exec(&serve, id, probe.clone());
            assert_eq!(ran.exit["exitCode"], 0, "{ran:?}");
            ran.stdout
        })
        .collect();
    assert!(outputs[2].contains("\nhello "), "{}", outputs[2]);
    // The environment's word aside, every line differs from the others'.
    let lines: std::collections::BTreeSet<&str> = outputs
        .iter()
        .flat_map(|o| o.lines())
        .map(|l| {
            l.trim_start_matches("undefined ")
                .trim_start_matches("hello ")
        })
        .collect();
    assert_eq!(lines.len(), 9, "{outputs:?}");
    assert!(
        wait_until(Duration::from_secs(120), booted),
        "{}",
        standby(&serve)
    );
    assert_eq!(serve.terminate(), Some(0));
    assert_eq!(folders(&serve, ""), 0);

    // `--no-sandbox-standby`: none kept.
    let serve = Serve::start_with(&["--no-sandbox-standby"]);
    let id = create(&serve, json!({}));
    assert_eq!(
        exec(&serve, &id, json!({"argv": ["true"]})).exit["exitCode"],
        0
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(standby(&serve), Value::Null);
    assert_eq!(vms(&serve), 1);
}

/// Sandboxes side by side, each running commands from several clients at once: none fails,
/// none sees another's files.
#[test]
fn concurrent_clients_and_sandboxes() {
    let serve = Serve::start();
    let ids: Vec<String> = (0..3).map(|_| create(&serve, json!({}))).collect();
    std::thread::scope(|scope| {
        for (n, id) in ids.iter().enumerate() {
            for client in 0..3 {
                let serve = &serve;
                scope.spawn(move || {
                    for i in 0..5 {
                        let line = format!("sandbox {n} client {client} exec {i}");
                        let ran = exec(serve, id, json!({"argv": ["echo", line]}));
                        assert_eq!(ran.stdout, format!("{line}\n"));
                    }
                });
            }
        }
    });
    for (n, id) in ids.iter().enumerate() {
        let (status, _, _) = raw(
            &serve,
            "PUT",
            &format!("/sandboxes/{id}/files?path=/home/node/mine"),
            format!("{n}").as_bytes(),
        );
        assert_eq!(status, 204);
    }
    for (n, id) in ids.iter().enumerate() {
        let (_, _, body) = raw(
            &serve,
            "GET",
            &format!("/sandboxes/{id}/files?path=/home/node/mine"),
            b"",
        );
        assert_eq!(body, format!("{n}").as_bytes());
    }
}

/// Paused, a sandbox holds still: a command that prints every 100 ms prints nothing, and new
/// commands, files and stdin are refused with 409 until it is resumed, when the command goes
/// on; its idle limit does not count while it is paused (it does again once resumed). A paused
/// sandbox is deleted like any other: nothing left.
#[test]
fn a_paused_sandbox_holds_still_and_resumes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let serve = Serve::start();
    let id = create(&serve, json!({}));
    let idle = create(&serve, json!({"idleTimeoutMs": 2000}));
    let (status, paused) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{idle}/pause"),
        Value::Null,
    );
    assert_eq!(status, 200, "{paused}");

    let js = "let i = 0; setInterval(() => console.log(i++), 100)";
    let (mut reader, first) = start_streaming(
        &serve,
        &id,
        json!({"argv": ["node", "-e", js], "stdin": true}),
    );
    let exec_id = first["id"].as_str().unwrap().to_string();
    let printed = Arc::new(AtomicUsize::new(0));
    let counted = printed.clone();
    let counter = std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("\"stdout\"") {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
        }
    });
    let count = || printed.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(60), || count() >= 3));

    let (status, paused) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{id}/pause"),
        Value::Null,
    );
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    assert!(paused["pausedAt"].as_u64().is_some(), "{paused}");
    std::thread::sleep(Duration::from_millis(300));
    let held = count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(), held, "a paused sandbox printed");

    let (status, again) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{id}/pause"),
        Value::Null,
    );
    assert_eq!(status, 409, "{again}");
    let refused = [
        (
            "POST",
            format!("/sandboxes/{id}/exec"),
            json!({"argv": ["true"]}),
        ),
        (
            "GET",
            format!("/sandboxes/{id}/files?path=/tmp/x"),
            Value::Null,
        ),
        (
            "POST",
            format!("/sandboxes/{id}/execs/{exec_id}/stdin"),
            json!("x"),
        ),
    ];
    for (method, path, body) in refused {
        let (status, answer) = call(&serve, method, &path, body);
        assert_eq!(status, 409, "{method} {path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("is paused: resume it first"),
            "{answer}"
        );
    }
    let (_, shown) = call(&serve, "GET", &format!("/sandboxes/{id}"), Value::Null);
    assert_eq!(shown["state"], "paused");

    let (status, resumed) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{id}/resume"),
        Value::Null,
    );
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert!(resumed["pausedAt"].is_null());
    assert!(wait_until(Duration::from_secs(20), || count() > held + 2));
    let (status, again) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{id}/resume"),
        Value::Null,
    );
    assert_eq!(status, 409, "{again}");
    // The guest's wall clock is the host's again (QEMU's stood still for the 2 s paused).
    let ran = exec(&serve, &id, json!({"argv": ["node", "-p", "Date.now()"]}));
    let host_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let guest_ms: i64 = ran.stdout.trim().parse().unwrap();
    assert!(
        (host_ms - guest_ms).abs() < 1000,
        "guest {guest_ms} host {host_ms}"
    );

    // Paused past its idle limit, the other one is still there; resumed, it goes.
    let (status, _) = call(&serve, "GET", &format!("/sandboxes/{idle}"), Value::Null);
    assert_eq!(status, 200, "a paused sandbox was taken for idle");
    let (status, _) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{idle}/resume"),
        Value::Null,
    );
    assert_eq!(status, 200);
    let gone = || call(&serve, "GET", &format!("/sandboxes/{idle}"), Value::Null).0 == 404;
    assert!(wait_until(Duration::from_secs(30), gone));

    let (status, _) = call(
        &serve,
        "POST",
        &format!("/sandboxes/{id}/pause"),
        Value::Null,
    );
    assert_eq!(status, 200);
    let (status, _) = call(&serve, "DELETE", &format!("/sandboxes/{id}"), Value::Null);
    assert_eq!(status, 204);
    counter.join().unwrap();
    assert!(wait_until(Duration::from_secs(30), || no_vm_left(&serve)));
}
