//! `nodeos-vm cp` between the host and a detached VM: a folder and a file both ways, as the
//! guest's user going in; coming out, a symlink the guest made that leaves the copy is not
//! made, a host path that exists is never overwritten, and bad paths are one clear error.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

/// `nodeos-vm ARGS` with its runtime folder in `runtime`; (status, stdout, stderr).
fn vm(runtime: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::run_in(runtime, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn files_go_in_and_out_of_a_detached_vm_and_nothing_is_overwritten() {
    let (kernel, rootfs) = common::artifacts();
    let runtime = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| vm(runtime.path(), args);
    let (status, id, err) = run(&[
        "start",
        "--detach",
        "--backend",
        &common::backend(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{err}");
    let id = id.trim().to_string();
    let at = |path: &str| format!("{id}:{path}");

    // In: a folder (with a symlink, kept as one) into a guest folder, a file to a new name.
    let project = host.path().join("project");
    std::fs::create_dir_all(project.join("lib")).unwrap();
    std::fs::write(
        project.join("index.js"),
        "console.log(require('./lib/x'))\n",
    )
    .unwrap();
    std::fs::write(
        project.join("lib/x.js"),
        "module.exports = 'from the host'\n",
    )
    .unwrap();
    symlink("lib/x.js", project.join("alias.js")).unwrap();
    let (status, _, err) = run(&["cp", project.to_str().unwrap(), &at("/home/node")]);
    assert_eq!(status, Some(0), "{err}");
    let script = "node /home/node/project/index.js; stat -c '%U %N' /home/node/project/alias.js";
    let (status, out, err) = run(&["exec", &id, "--", "sh", "-c", script]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(
        out,
        "from the host\nnode '/home/node/project/alias.js' -> 'lib/x.js'\n"
    );
    let (status, _, err) = run(&[
        "cp",
        project.join("index.js").to_str().unwrap(),
        &at("/tmp/renamed.js"),
    ]);
    assert_eq!(status, Some(0), "{err}");
    // As the guest's user: a folder it may not write is refused.
    let (status, _, err) = run(&["cp", project.to_str().unwrap(), &at("/usr/lib")]);
    assert_eq!(status, Some(125), "{err}");
    assert!(err.contains("Permission denied"), "{err}");

    // Out: what the guest made, its escaping symlink left out.
    let made = "mkdir -p /home/node/out/d && echo result > /home/node/out/d/r.txt && \
                ln -s /etc/passwd /home/node/out/escape && ln -s d/r.txt /home/node/out/inside";
    let (status, _, err) = run(&["exec", &id, "--", "sh", "-c", made]);
    assert_eq!(status, Some(0), "{err}");
    let got = host.path().join("got");
    let (status, _, err) = run(&["cp", &at("/home/node/out"), got.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        err.contains("not copied: the symlink escape -> /etc/passwd"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(got.join("d/r.txt")).unwrap(),
        "result\n"
    );
    assert_eq!(
        std::fs::read_link(got.join("inside")).unwrap(),
        Path::new("d/r.txt")
    );
    assert!(got.join("escape").symlink_metadata().is_err());
    // A file into a host folder, under its own name; then never over it.
    let (status, _, err) = run(&["cp", &at("/tmp/renamed.js"), got.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{err}");
    let copied = got.join("renamed.js");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap(),
        "console.log(require('./lib/x'))\n"
    );
    std::fs::write(&copied, "mine").unwrap();
    let (status, _, err) = run(&["cp", &at("/tmp/renamed.js"), copied.to_str().unwrap()]);
    assert_eq!(status, Some(125));
    assert!(err.contains("does not overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "mine");

    // Bad paths: one line each, nothing made.
    for (args, says) in [
        (
            vec![
                "cp".to_string(),
                at("/nope"),
                host.path().join("x").display().to_string(),
            ],
            "does not exist",
        ),
        (
            vec![
                "cp".into(),
                at("/home/node/out/escape"),
                host.path().join("y").display().to_string(),
            ],
            "symlink",
        ),
        (
            vec![
                "cp".into(),
                at("/home/../etc"),
                host.path().join("z").display().to_string(),
            ],
            "plain",
        ),
        (
            vec!["cp".into(), "/no/such/host/file".into(), at("/tmp")],
            "no such file",
        ),
        (
            vec!["cp".into(), "a".into(), "b".into()],
            "neither side names a VM",
        ),
        (
            vec!["cp".into(), at("/"), host.path().display().to_string()],
            "root folder",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, err) = run(&args);
        assert_eq!(status, Some(125), "{args:?}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let (status, _, err) = run(&["stop", &id]);
    assert_eq!(status, Some(0), "{err}");
}
