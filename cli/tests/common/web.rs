//! A small HTTP server on the host's loopback for the network tests, and a tiny npm registry:
//! `/hello`, npm package tarballs `/NAME.tgz`, and their registry documents `/NAME` (so that
//! `npm install NAME` works with `registry=http://ADDR/`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use super::npm_package;
use super::run_cases::HELLO;

/// The packages the registry holds: `greeter` (a library) and `hello-cli` (a command).
fn packages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "greeter",
            npm_package(&[
                (
                    "package.json",
                    r#"{"name": "greeter", "version": "1.0.0", "main": "index.js"}"#,
                ),
                ("index.js", "module.exports = (who) => `hello, ${who}`;\n"),
            ]),
        ),
        (
            "hello-cli",
            npm_package(&[
                (
                    "package.json",
                    r#"{"name": "hello-cli", "version": "1.0.0", "bin": {"hello-cli": "cli.js"}}"#,
                ),
                (
                    "cli.js",
                    "#!/usr/bin/env node\nconsole.log('hello from a global bin', process.argv.slice(2).join(' '));\n",
                ),
            ]),
        ),
    ]
}

/// Every file the server serves (path without the leading `/`, contents), for a guest that
/// reaches the server at `guest_addr` (`10.0.2.2:PORT`).
pub fn site(guest_addr: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![("hello".to_string(), HELLO.as_bytes().to_vec())];
    for (name, tarball) in packages() {
        let document = format!(
            r#"{{"name": "{name}", "dist-tags": {{"latest": "1.0.0"}}, "versions": {{"1.0.0": {{"name": "{name}", "version": "1.0.0", {bin}"dist": {{"tarball": "http://{guest_addr}/{name}.tgz"}}}}}}}}"#,
            bin = if name == "hello-cli" {
                r#""bin": {"hello-cli": "cli.js"}, "#
            } else {
                ""
            }
        );
        files.push((name.to_string(), document.into_bytes()));
        files.push((format!("{name}.tgz"), tarball));
    }
    files
}

/// Serves [`site`] until the process ends; returns `127.0.0.1:PORT`.
pub fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let site = site(&format!(
        "10.0.2.2:{}",
        listener.local_addr().unwrap().port()
    ));
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
            let file = site
                .iter()
                .find(|(name, _)| Some(name.as_str()) == path.strip_prefix('/'));
            let (status, body): (&str, &[u8]) = match file {
                Some((_, body)) => ("200 OK", body),
                None => ("404 Not Found", b"not found"),
            };
            let kind = "application/octet-stream";
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
