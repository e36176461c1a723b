//! A `nodeos-vm serve` for a test, and a client of its two listeners: on the backend the
//! tests use, its own data and runtime folders, an HTTP client on the loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BIN;

/// What talks to a `serve`: its two listeners and the admin token.
#[derive(Clone)]
pub struct Client {
    /// The admin API's address (`IP:port`), and the apps'.
    pub admin: String,
    pub apps: String,
    pub token: String,
}

/// A `serve` process; SIGKILLed if the test ends without stopping it.
pub struct Serve {
    pub child: Option<Child>,
    pub client: Client,
    pub dir: tempfile::TempDir,
    /// What it wrote to stderr so far (also copied to the test's own).
    pub stderr: Arc<Mutex<String>>,
}

impl std::ops::Deref for Serve {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// `nodeos-vm serve` with `args` after the usual ones, its folders in `dir`, stdout piped.
pub fn serve_command(dir: &std::path::Path, args: &[&str]) -> Command {
    let (kernel, rootfs) = super::artifacts();
    serve_command_on(dir, kernel, rootfs, args)
}

/// [`serve_command`] with this kernel and image.
pub fn serve_command_on(
    dir: &std::path::Path,
    kernel: &std::path::Path,
    rootfs: &std::path::Path,
    args: &[&str],
) -> Command {
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &super::backend(),
        ])
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .env("NODEOS_VM_DATA", dir.join("data"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// A server started with `args` too; its token is the one it saved in its data folder
    /// (none with `--token-file`: set `client.token`).
    pub fn start_with(args: &[&str]) -> Serve {
        let (kernel, rootfs) = super::artifacts();
        Serve::start_on(kernel, rootfs, args)
    }

    /// [`Serve::start_with`] with this kernel and image.
    pub fn start_on(kernel: &std::path::Path, rootfs: &std::path::Path, args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let mut child = serve_command_on(dir.path(), kernel, rootfs, args)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, copy) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                copy.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = |what: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(&format!("{what}: http://"))
                .unwrap_or_else(|| panic!("serve printed {line:?} for {what}"))
                .to_string()
        };
        let (admin, apps) = (url("admin"), url("apps"));
        let token = std::fs::read_to_string(dir.path().join("data/serve-token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Serve {
            child: Some(child),
            client: Client { admin, apps, token },
            dir,
            stderr,
        }
    }

    /// SIGTERM; the server's exit status.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let _watchdog = super::Watchdog::new(child.id(), Duration::from_secs(120));
        child.wait().unwrap().code()
    }

    pub fn runtime_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run/nodeos-vm")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Which of serve's listeners a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The admin API, with the token.
    Admin,
    /// The apps' listener, without it.
    Apps,
}

/// One request to `addr` with `headers` (nothing else but `Content-Length`, not even `Host`,
/// unless given); (status, head with its header names in lower case, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(super::BOOT_LIMIT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes()).unwrap();
    // A server that refuses a huge body may close before reading it all.
    let _ = conn.write_all(body);
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `text` as JSON, or a panic that says what answered it.
pub fn parse(what: &str, status: u16, text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} answered {status} {text:?}: {e}"))
}

impl Client {
    /// One request as a client would send it: to the listener's own address (`Host`), with
    /// the token for the admin API; (status, head with its header names in lower case, body).
    pub fn exchange(&self, to: To, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
        let bearer = format!("Bearer {}", self.token);
        match to {
            To::Admin => http(
                &self.admin,
                method,
                path,
                &[("Host", &self.admin), ("Authorization", &bearer)],
                body,
            ),
            To::Apps => http(&self.apps, method, path, &[("Host", &self.apps)], body),
        }
    }

    /// One request to the admin API; (status, body).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let (status, _, body) = self.exchange(To::Admin, method, path, body);
        (status, body)
    }

    /// One request to the apps' listener (a `fetch` app's route); (status, body).
    pub fn fetch(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let (status, _, body) = self.exchange(To::Apps, method, path, body);
        (status, body)
    }

    /// One request to `to`, its answer as JSON.
    pub fn json_to(
        &self,
        to: To,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let (status, _, text) = self.exchange(to, method, path, body);
        (status, parse(&format!("{method} {path}"), status, &text))
    }

    /// One request to the admin API, its answer as JSON.
    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        self.json_to(To::Admin, method, path, body)
    }

    pub fn invoke(&self, app: &str, event: serde_json::Value) -> (u16, serde_json::Value) {
        self.json_to(
            To::Apps,
            "POST",
            &format!("/apps/{app}/invoke"),
            event.to_string().as_bytes(),
        )
    }

    /// A call; (status, answer, whether it booted its instance).
    pub fn invoke_cold(
        &self,
        app: &str,
        event: serde_json::Value,
    ) -> (u16, serde_json::Value, bool) {
        let path = format!("/apps/{app}/invoke");
        let (status, head, text) =
            self.exchange(To::Apps, "POST", &path, event.to_string().as_bytes());
        let value = parse(&format!("POST {path}"), status, &text);
        (status, value, head.contains("\r\nx-cold-start: 1"))
    }

    /// Waits (at most `limit`) until `app` has `n` instances; the last count seen.
    pub fn wait_instances(&self, app: &str, n: u64, limit: Duration) -> u64 {
        self.wait_count(app, "instances", n, limit)
    }

    /// Waits (at most `limit`) until the app's `field` (`instances`, `warm`) is `n`; the last
    /// count seen.
    pub fn wait_count(&self, app: &str, field: &str, n: u64, limit: Duration) -> u64 {
        let count = self.wait_value(app, field, &serde_json::json!(n), limit);
        count.as_u64().unwrap()
    }

    /// Waits (at most `limit`) until the app's `field` is `value`; the last value seen.
    pub fn wait_value(
        &self,
        app: &str,
        field: &str,
        value: &serde_json::Value,
        limit: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, info) = self.json("GET", &format!("/apps/{app}"), b"");
            assert_eq!(status, 200, "{info}");
            if &info[field] == value || Instant::now() >= deadline {
                return info[field].clone();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn deploy(&self, app: &str, query: &str, package: &[u8]) -> (u16, serde_json::Value) {
        self.json("PUT", &format!("/apps/{app}{query}"), package)
    }
}

/// Where [`box_app`] puts the app in a KVM box.
const BOX_APP: &str = "/nodeos/serve-app.tgz";

/// `nodeos-vm serve --backend kvm` in a KVM box's L1 (at /nodeos/nodeos-vm, the guest's
/// `kernel` and `rootfs` at those paths): deploys [`box_app`] through the admin API (port
/// 8090, with the token serve saved) and calls it on the apps' listener (8091) over HTTP
/// (`kvm_box::HTTP_CLIENT`), then SIGTERM. [`check_box_output`] reads its output.
pub fn box_script(kernel: &str, rootfs: &str) -> String {
    let script = r#"D=/tmp/serve; mkdir -p $D/run
XDG_RUNTIME_DIR=$D/run NODEOS_VM_DATA=$D/data /nodeos/nodeos-vm serve --backend kvm \
  --listen 127.0.0.1:8090 --kernel KERNEL --rootfs ROOTFS >$D/url 2>$D/err & pid=$!
i=0; until grep -q '^apps: ' $D/url 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || { cat $D/err; exit 1; }; sleep 0.1; done
TOKEN=$(cat $D/data/serve-token)
printf '{"a": 2, "b": 40}' >$D/event
http 8090 PUT /apps/boxed BOX_APP
http 8091 POST /apps/boxed/invoke $D/event
kill -TERM $pid; wait $pid; s=$?
echo "serve exited $s; left: $(ls -A $D/run/nodeos-vm)"
exit $s"#;
    format!(
        "{}\n{}",
        kvm_box::HTTP_CLIENT,
        script
            .replace("KERNEL", kernel)
            .replace("ROOTFS", rootfs)
            .replace("BOX_APP", BOX_APP)
    )
}

/// The app [`box_script`] deploys, an npm package written into `dir`, for the box.
pub fn box_app(dir: &std::path::Path) -> kvm_box::BoxFile {
    let path = dir.join("serve-app.tgz");
    let handler = "exports.handler = async (e) => ({ sum: e.a + e.b, arch: process.arch });\n";
    std::fs::write(
        &path,
        super::npm_package(&[
            ("package.json", r#"{"name": "boxed", "main": "index.js"}"#),
            ("index.js", handler),
        ]),
    )
    .unwrap();
    kvm_box::BoxFile::new(path, BOX_APP)
}

/// [`box_script`]'s check passed: the app deployed, answered on `arch` (Node's name), and
/// serve ended on SIGTERM leaving nothing in its runtime folder.
pub fn check_box_output(check: &kvm_box::Check, arch: &str) {
    let out = &check.output;
    assert_eq!(check.status, Some(0), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains(r#""name":"boxed""#), "{out}");
    assert!(
        out.contains(&format!(r#"{{"arch":"{arch}","sum":42}}"#)),
        "{out}"
    );
    assert!(out.trim_end().ends_with("serve exited 0; left:"), "{out}");
}
