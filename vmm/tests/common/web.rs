//! A small HTTP server on the host's loopback for the network tests: `/hello` and an npm
//! package tarball, `/greeter.tgz`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use super::run_cases::HELLO;

/// The `greeter` package as `npm pack` would make it (a gzipped tar of `package/`).
pub fn greeter_tarball(dir: &Path) -> Vec<u8> {
    let pkg = dir.join("greeter/package");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name": "greeter", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        pkg.join("index.js"),
        "module.exports = (who) => `hello, ${who}`;\n",
    )
    .unwrap();
    let tgz = dir.join("greeter.tgz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir.join("greeter"))
        .arg("package")
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    std::fs::read(tgz).unwrap()
}

/// Serves until the process ends; returns `127.0.0.1:PORT`.
pub fn serve(tarball: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body): (&str, &str, &[u8]) = match path {
                "/hello" => ("200 OK", "text/plain", HELLO.as_bytes()),
                "/greeter.tgz" => ("200 OK", "application/octet-stream", &tarball),
                _ => ("404 Not Found", "text/plain", b"not found"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|()| conn.write_all(body));
        }
    });
    addr
}
