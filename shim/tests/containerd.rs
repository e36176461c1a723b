//! The shim with the real thing: Debian's containerd, started by each test as a private
//! instance (its root, state and socket in a temporary folder), importing the NodeOS image
//! `nodeos-vm image export` writes, and `ctr` running it with runc and with our shim
//! (`--runtime io.containerd.nodeos.v2`), whose microVMs run on this host's backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use nodeos_vm_benches::containerd::{processes_naming, Containerd, IMAGE, NAMESPACE, RUNTIME};

/// A containerd of the test's own, with the NodeOS image and this build's shim.
fn containerd() -> Containerd {
    vmm::host_packages::ensure("containerd", "containerd").unwrap();
    vmm::host_packages::ensure("runc", "runc").unwrap();
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-nodeos-v2"));
    Containerd::start(shim.parent().unwrap(), common::image_archive())
}

/// [`containerd`], where this test may run one of its own (it needs root); says why not.
fn containerd_if_root() -> Option<Containerd> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: a containerd of the test's own needs root");
        return None;
    }
    Some(containerd())
}

/// The folder of the container `id`'s disk, agent socket and console log.
fn scratch_of(id: &str) -> PathBuf {
    sandbox::folders::cache_dir()
        .unwrap()
        .join("shim")
        .join(format!("{NAMESPACE}-{id}"))
}

/// Waits (a while) until nothing of the container `id` is left on this host: no process
/// names its folder (its microVM's), its folder is gone.
fn assert_nothing_left_of(id: &str) {
    let scratch = scratch_of(id);
    let name = scratch.to_string_lossy().into_owned();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_naming(&name);
        if left.is_empty() && !scratch.exists() {
            return;
        }
        assert!(
            Instant::now() < until,
            "left of container {id}: processes {left:?}, folder {} exists: {}",
            scratch.display(),
            scratch.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the container `id`, detached, in a microVM: Node waiting for ever.
fn run_detached_forever(containerd: &Containerd, id: &str) {
    let forever = "setInterval(() => {}, 1000)";
    let args = [
        "run",
        "--runtime",
        RUNTIME,
        "-d",
        IMAGE,
        id,
        "node",
        "-e",
        forever,
    ];
    containerd.ctr_ok(&args);
}

/// Kills the task of the container `id` (SIGKILL), waits until it has stopped, and deletes
/// the task and the container.
fn kill_and_delete(containerd: &Containerd, id: &str) {
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", id]);
    let stopped = || {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        tasks
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"))
    };
    wait_for(
        Duration::from_secs(60),
        || containerd.ctr_ok(&["task", "ls"]),
        stopped,
    );
    containerd.ctr_ok(&["task", "delete", id]);
    containerd.ctr_ok(&["container", "delete", id]);
}

/// Waits until `done` holds, `limit` at most; `what` says what failed.
fn wait_for(limit: Duration, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "after {limit:?}: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runc_runs_the_nodeos_image() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let js = "const os = require('os'); \
              console.log(6 * 7, process.getuid(), os.userInfo().username, process.cwd())";
    let out = containerd.ctr_ok(&["run", "--rm", IMAGE, "node-e", "node", "-e", js]);
    assert_eq!(out.trim(), "42 1000 node /home/node");
    let out = containerd.ctr_ok(&["run", "--rm", IMAGE, "npm", "npm", "--version"]);
    assert!(out.trim().split('.').count() == 3, "{out}");
}

/// An image of busybox alone, not the guest's: a squashfs of a folder holding it (with a
/// `node` user, as the export's config names one, and a symlink out of the root by an
/// absolute path), exported as `busybox:latest`. Its root file system is packed into a disk.
fn busybox_image(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-root");
    for sub in ["bin", "etc", "home/node"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let busybox = vmm::host_packages::ensure("busybox", "busybox-static").unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "id", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "node:x:1000:1000::/home/node:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "node:x:1000:\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "inside\n").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
    let squashfs = dir.join("busybox.img");
    let mksquashfs = vmm::host_packages::ensure("mksquashfs", "squashfs-tools").unwrap();
    let made = Command::new(mksquashfs)
        .arg(&root)
        .arg(&squashfs)
        .args(["-noappend", "-quiet"])
        .status()
        .unwrap();
    assert!(made.success());
    let archive = dir.join("busybox.tar");
    let name = sandbox::oci_image::ImageName::parse("busybox").unwrap();
    sandbox::oci_image::export(&squashfs, &name, &archive).unwrap();
    archive
}

#[test]
fn an_image_of_its_own_gets_a_disk_and_stays_inside_it() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = busybox_image(dir.path());
    containerd.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
    let script = "id -u; ls /; cat /escape/hostname; cat /proc/version; cat /proc/self/mountinfo";
    let out = containerd.ctr(&[
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        "docker.io/library/busybox:latest",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1000", "{text}");
    // Its own files (the image's mark among them), the container's /dev, /proc and /sys.
    assert_eq!(lines[1], "bin", "{text}");
    assert_eq!(
        lines[2..7],
        ["dev", "escape", "etc", "home", "proc"],
        "{text}"
    );
    // The absolute symlink resolves inside the container's root.
    assert!(text.contains("inside\n"), "{text}");
    assert!(text.contains("nodeos@nodeos-vm"), "{text}");
    // Its root is its disk's ext4.
    let root = text.lines().find(|l| l.split(' ').nth(4) == Some("/"));
    assert!(root.is_some_and(|l| l.contains(" - ext4 ")), "{text}");
    assert_nothing_left_of("busybox");
}

#[test]
fn a_container_runs_in_a_microvm_with_its_user_and_exit_status() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    // Our kernel (built as nodeos@nodeos-vm), not the host's; the image's user and folder;
    // processes of the microVM's own (containerd's pid there is not containerd); stdout and
    // stderr apart.
    let js = format!(
        "const fs = require('fs'); \
         console.log(fs.readFileSync('/proc/version', 'utf8').includes('nodeos@nodeos-vm')); \
         console.log(process.getuid(), process.getgid(), process.cwd()); \
         let host = ''; try {{ host = fs.readFileSync('/proc/{}/cmdline', 'utf8') }} catch {{}} \
         console.log(host.includes('containerd')); \
         console.log(fs.readdirSync('/').join(' ')); \
         const root = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\\n') \
             .find(l => l.split(' ')[4] === '/'); \
         console.log(root.split(' - ')[1].split(' ')[0]); \
         console.error('to stderr'); process.exit(3)",
        containerd.pid()
    );
    let out = containerd.run(&["--rm"], "hello", &["node", "-e", &js]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        ["true", "1000 1000 /home/node", "false"],
        "{text}"
    );
    // The image's root as the image has it (mke2fs's lost+found taken out), with the
    // container's /dev, /proc and /sys.
    assert_eq!(
        lines[3], "bin dev etc home lib lib64 proc run sbin sys tmp usr",
        "{text}"
    );
    // The image is the guest's own, recognised: the container runs on the guest's root (its
    // overlay), nothing packed.
    assert_eq!(lines[4], "overlay", "{text}");
    assert!(stderr(&out).contains("to stderr"), "{}", stderr(&out));
    assert_nothing_left_of("hello");

    let out = containerd.run(&["--rm"], "missing", &["no-such-command"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no-such-command: No such file or directory"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_nothing_left_of("missing");
}

#[test]
fn exec_kill_and_delete_two_containers_at_once() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    for id in ["one", "two"] {
        run_detached_forever(&containerd, id);
    }
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    assert_eq!(tasks.matches("RUNNING").count(), 2, "{tasks}");

    // A second process in the first container's microVM, which sees its files.
    let js = "require('fs').writeFileSync('/tmp/mark', 'x'); console.log('exec', process.getuid())";
    let out = containerd.ctr_ok(&["task", "exec", "--exec-id", "e1", "one", "node", "-e", js]);
    assert_eq!(out.trim(), "exec 1000");
    let check = "console.log(require('fs').existsSync('/tmp/mark'))";
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "one",
        "node",
        "-e",
        check,
    ]);
    assert_eq!(out.trim(), "true");
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "two",
        "node",
        "-e",
        check,
    ]);
    assert_eq!(out.trim(), "false", "the containers share their files");
    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e4",
        "two",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));

    let ps = containerd.ctr_ok(&["task", "ps", "one"]);
    assert_eq!(ps.lines().count(), 2, "{ps}");
    // The microVM's counters as containerd's metrics: its 512 MiB the limit, some of it used,
    // CPU time spent, the guest's processes.
    let metrics = containerd.ctr_ok(&["task", "metrics", "one"]);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let limit = value("memory.limit_in_bytes");
    assert!((400 << 20..=512 << 20).contains(&limit), "{metrics}");
    let used = value("memory.usage_in_bytes");
    assert!(used > 10 << 20 && used < limit, "{metrics}");
    assert!(value("memory.stat.cache") > 0, "{metrics}");
    assert!(value("cpuacct.usage") > 0, "{metrics}");
    assert!(value("pids.current") > 2, "{metrics}");

    // SIGTERM ends node (143); SIGKILL the other.
    containerd.ctr_ok(&["task", "kill", "one"]);
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "two"]);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        if tasks.matches("STOPPED").count() == 2 {
            break;
        }
        assert!(Instant::now() < until, "{tasks}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in ["one", "two"] {
        containerd.ctr_ok(&["task", "delete", id]);
        containerd.ctr_ok(&["container", "delete", id]);
        assert_nothing_left_of(id);
    }
}

#[test]
fn the_specs_capabilities_bound_its_processes() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let status = "grep -E '^(CapEff|CapBnd)' /proc/self/status | tr -s '\\t' ' '";
    run_detached_forever(&containerd, "caps");
    // Its user (uid 1000): containerd's default bounding set, nothing effective.
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "caps",
        "sh",
        "-c",
        status,
    ]);
    assert_eq!(out, "CapEff: 0000000000000000\nCapBnd: 00000000a80425fb\n");
    // Root in it: the default set, without CAP_SYS_TIME to set the clock with; the spec's
    // read-only paths read-only (no sysrq), a device node it makes opens nothing (nodev).
    let script = format!(
        "{status}; date -s @0 >/dev/null 2>&1 || echo refused; \
         echo s > /proc/sysrq-trigger 2>/dev/null || echo no sysrq; \
         grep -c ' /proc/sys ro,' /proc/self/mountinfo; \
         mknod /tmp/null c 1 3 && {{ echo x > /tmp/null 2>/dev/null && echo wrote || echo nodev; }}"
    );
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "0",
        "caps",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(
        out,
        "CapEff: 00000000a80425fb\nCapBnd: 00000000a80425fb\nrefused\nno sysrq\n1\nnodev\n"
    );
    kill_and_delete(&containerd, "caps");
    // Privileged: every capability containerd has itself (its bounding set is ours).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let out = containerd.run(
        &["--rm", "--privileged"],
        "privileged",
        &["sh", "-c", status],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("CapEff: 0000000000000000\nCapBnd: {bounding}\n")
    );
    assert_nothing_left_of("caps");
    assert_nothing_left_of("privileged");
}

#[test]
fn a_seccomp_profile_filters_the_containers_processes() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    // containerd's default profile (an allow list): Node runs under it.
    let out = containerd.run(
        &["--rm", "--seccomp"],
        "default-profile",
        &["node", "-e", "console.log(6 * 7)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42\n");
    // A profile of its own: making folders denied, for the task and what is exec'ed in it.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    let json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": libc::EACCES}]
    });
    std::fs::write(&profile, json.to_string()).unwrap();
    let options = [
        "-d",
        "--seccomp",
        "--seccomp-profile",
        profile.to_str().unwrap(),
    ];
    let out = containerd.run(
        &options,
        "own-profile",
        &["node", "-e", "setInterval(() => {}, 1000)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let script = "mkdir /tmp/made 2>&1 || echo denied; touch /tmp/touched && echo touched";
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "own-profile",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out,
        "mkdir: cannot create directory '/tmp/made': Permission denied\ndenied\ntouched\n"
    );
    kill_and_delete(&containerd, "own-profile");
    // A profile the guest cannot take: one error, nothing left.
    let notify = dir.path().join("notify.json");
    std::fs::write(&notify, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    let options = [
        "--rm",
        "--seccomp",
        "--seccomp-profile",
        notify.to_str().unwrap(),
    ];
    let out = containerd.run(&options, "notify", &["node", "-e", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SCMP_ACT_NOTIFY"), "{}", stderr(&out));
    for id in ["default-profile", "own-profile", "notify"] {
        assert_nothing_left_of(id);
    }
}

/// The `ctr run` options that mark a container as containerd's CRI marks a pod's: its sandbox
/// (`sandbox`) or one of its members (`container`), of the pod whose sandbox is `pod`.
fn in_pod(kind: &str, pod: &str) -> Vec<String> {
    vec![
        "--annotation".into(),
        format!("io.kubernetes.cri.container-type={kind}"),
        "--annotation".into(),
        format!("io.kubernetes.cri.sandbox-id={pod}"),
    ]
}

/// The guest kernel's boot id, as the container `id`'s process `exec_id` reads it.
fn boot_id_in(containerd: &Containerd, id: &str, exec_id: &str) -> String {
    let js = "console.log(require('fs').readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'))";
    let out = containerd.ctr_ok(&["task", "exec", "--exec-id", exec_id, id, "node", "-e", js]);
    out.trim().to_string()
}

#[test]
fn a_pods_containers_share_its_microvm_each_in_a_root_of_its_own() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = busybox_image(dir.path());
    containerd.ctr_ok(&["image", "import", archive.to_str().unwrap()]);

    // The pod's sandbox container (Kubernetes' would be `pause`), then a member on the NodeOS
    // image: a web server on the pod's localhost.
    let sandbox = in_pod("sandbox", "pod1");
    let mut options: Vec<&str> = sandbox.iter().map(String::as_str).collect();
    options.push("-d");
    let out = containerd.run(
        &options,
        "pod1",
        &["node", "-e", "setInterval(() => {}, 1000)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A folder two members bind, as an emptyDir: one copy in the pod's VM, which both see.
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cache_mount = format!(
        "type=bind,src={},dst=/cache,options=rbind:rw",
        cache.display()
    );
    let member = in_pod("container", "pod1");
    let mut options: Vec<&str> = member.iter().map(String::as_str).collect();
    options.extend(["-d", "--mount", &cache_mount]);
    let server = "require('fs').writeFileSync('/cache/from-web', 'cached by web\\n'); \
                  require('http').createServer((q, s) => s.end('hi from web\\n'))\
                  .listen(8080, '127.0.0.1')";
    let out = containerd.run(&options, "web", &["node", "-e", server]);
    assert!(out.status.success(), "{}", stderr(&out));
    let boot_id = boot_id_in(&containerd, "pod1", "b1");
    assert_eq!(boot_id.len(), 36, "{boot_id}");
    assert_eq!(boot_id_in(&containerd, "web", "b2"), boot_id, "one kernel");
    // One shim, the pod's: its member has no daemon of its own.
    let shim_of = |id: &str| {
        processes_naming(&format!(
            "containerd-shim-nodeos-v2 -namespace {NAMESPACE} -id {id} "
        ))
    };
    assert_eq!(shim_of("pod1").len(), 1);
    assert!(shim_of("web").is_empty(), "{:?}", shim_of("web"));
    // Pausing one container of the pod would pause the others: refused.
    let out = containerd.ctr(&["task", "pause", "web"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("runs other containers too"),
        "{}",
        stderr(&out)
    );

    // A member of an image of its own, with a read-only and a writable bind: its files are
    // unpacked into the pod's microVM; it reaches the web member on localhost.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("note"), "from the host\n").unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(1000), Some(1000)).unwrap();
    let script = "cat /proc/sys/kernel/random/boot_id; id -u; ls /; cat /escape/hostname; \
                  cat /etc/shared/note; cat /cache/from-web; echo made > /out/result; \
                  for i in 1 2 3 4 5 6 7 8 9 10; do \
                    busybox wget -q -O - http://127.0.0.1:8080/ && break; busybox sleep 1; \
                  done";
    let mut args: Vec<String> = ["run", "--runtime", RUNTIME, "--rm"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(member.iter().cloned());
    for mount in [
        format!(
            "type=bind,src={},dst=/etc/shared,options=rbind:ro",
            shared.display()
        ),
        format!(
            "type=bind,src={},dst=/out,options=rbind:rw",
            out_dir.display()
        ),
        cache_mount.clone(),
    ] {
        args.extend(["--mount".to_string(), mount]);
    }
    args.extend(["docker.io/library/busybox:latest", "bb", "sh", "-c", script].map(String::from));
    let out = containerd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], boot_id, "{text}");
    assert_eq!(lines[1], "1000", "{text}");
    // Its own files (its writable binds' folders among them), and the absolute symlink
    // resolves inside them.
    assert_eq!(
        lines[2..10],
        ["bin", "cache", "dev", "escape", "etc", "home", "out", "proc"],
        "{text}"
    );
    assert!(
        text.contains("inside\nfrom the host\ncached by web\n"),
        "{text}"
    );
    assert!(text.ends_with("hi from web\n"), "{text}");
    // Its writable binds copied back when it ended: the shared one with what web wrote.
    assert_eq!(
        std::fs::read_to_string(cache.join("from-web")).unwrap(),
        "cached by web\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("result")).unwrap(),
        "made\n"
    );
    assert_nothing_left_of("bb");

    // A member of a pod this shim does not run: one error, nothing left.
    let lost = in_pod("container", "nopod");
    let mut options: Vec<&str> = lost.iter().map(String::as_str).collect();
    options.push("--rm");
    let out = containerd.run(&options, "lost", &["node", "-e", "0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sandbox container nopod is not running in this shim"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left_of("lost");

    // The sandbox goes first, as Kubernetes may stop it: the pod's VM lives on with its
    // member, and goes with the last of them.
    for id in ["pod1", "web"] {
        kill_and_delete(&containerd, id);
        if id == "pod1" {
            assert_eq!(
                boot_id_in(&containerd, "web", "b3"),
                boot_id,
                "the pod's VM ended"
            );
        }
    }
    for id in ["pod1", "web"] {
        assert_nothing_left_of(id);
    }
}

#[test]
fn a_terminal_session_and_a_memory_limit() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    // `ctr run -t` wants a terminal: a pseudo-terminal of this size.
    let js = "const mib = Math.round(require('os').totalmem() / 2 ** 20); \
              console.log([process.stdout.isTTY, process.stdout.columns, process.stdout.rows, mib].join(' '))";
    let ctr = containerd.ctr_command(&[
        "run",
        "-t",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        &(300u64 << 20).to_string(),
        "--rm",
        IMAGE,
        "tty",
        "node",
        "-e",
        js,
    ]);
    let (status, text) = on_a_terminal(ctr, 101, 33, Duration::from_secs(240));
    assert!(status.success(), "{status}: {text:?}");
    // ctr types a NUL into every terminal it starts (runc's too), which the terminal echoes.
    let fields: Vec<&str> = text.trim_start_matches("^@").split_whitespace().collect();
    assert_eq!(fields[..3], ["true", "101", "33"], "{text:?}");
    // The microVM has the limit as its memory: its kernel keeps some of it.
    let total: u64 = fields[3].parse().unwrap();
    assert!((200..=300).contains(&total), "{text:?}");
    assert_nothing_left_of("tty");
}

/// Runs `command` as the session leader of a new pseudo-terminal of `cols` × `rows`, and
/// gives its exit status and all it wrote on the terminal (killed after `limit`).
fn on_a_terminal(
    mut command: Command,
    cols: u16,
    rows: u16,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};

    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    command
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave);
    // SAFETY: between fork and exec the child only makes itself a session leader and takes
    // its standard input, the terminal, as its controlling terminal: both async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    // The terminal's other end stays open only in the child.
    drop(command);
    let written = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let written = Arc::clone(&written);
        let mut master = std::fs::File::from(pty.master);
        // Reads until every holder of the other end has gone (EIO).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                written.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&written.lock().unwrap()).into_owned();
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: {:?}", text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    (status, text())
}

#[test]
fn a_restarted_containerd_finds_its_task_and_a_killed_shim_leaves_nothing_behind() {
    let Some(mut containerd) = containerd_if_root() else {
        return;
    };
    run_detached_forever(&containerd, "doomed");
    // The shim keeps its task while containerd is away, and containerd finds it again.
    containerd.restart();
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    assert!(tasks.contains("RUNNING"), "{tasks}");
    let js = "console.log('after the restart')";
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "doomed",
        "node",
        "-e",
        js,
    ]);
    assert_eq!(out.trim(), "after the restart");

    let shims = processes_naming(&format!("-namespace {NAMESPACE} -id doomed"));
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    // containerd sees its shim gone, runs `shim delete`, and the task is stopped.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = containerd.ctr(&["task", "ls"]);
        if !stdout(&tasks).contains("RUNNING") {
            break;
        }
        assert!(Instant::now() < until, "{}", stdout(&tasks));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_nothing_left_of("doomed");
    let _ = containerd.ctr(&["task", "delete", "doomed"]);
    containerd.ctr_ok(&["container", "delete", "doomed"]);
}

#[test]
fn a_paused_task_makes_no_progress_and_resumes_where_it_was() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    let Some(containerd) = containerd_if_root() else {
        return;
    };
    // Node counts on its stdout every 100 ms; `ctr run`, attached, hands it to the test.
    let js = "let n = 0; setInterval(() => console.log(++n), 100)";
    let mut ctr = containerd.ctr_command(&[
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        IMAGE,
        "paused",
        "node",
        "-e",
        js,
    ]);
    let mut run = ctr.stdout(Stdio::piped()).spawn().unwrap();
    let counted = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let counted = Arc::clone(&counted);
        let out = BufReader::new(run.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                counted.lock().unwrap().push(line.trim().parse().unwrap());
            }
        })
    };
    let count = || counted.lock().unwrap().len();
    let seen = || format!("{:?}", counted.lock().unwrap());
    let state = || {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        let line = tasks.lines().find(|l| l.starts_with("paused "));
        line.map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
    };
    wait_for(Duration::from_secs(120), seen, || count() >= 3);

    containerd.ctr_ok(&["task", "pause", "paused"]);
    assert_eq!(state().as_deref(), Some("PAUSED"));
    // What the guest wrote before its vCPUs stopped still arrives; then nothing more.
    std::thread::sleep(Duration::from_millis(300));
    let at_pause = count();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(), at_pause, "it counted while paused: {}", seen());
    // What needs the guest to run is refused, and saying so.
    for args in [
        &["task", "pause", "paused"][..],
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "paused",
            "node",
            "-e",
            "1",
        ],
    ] {
        let out = containerd.ctr(args);
        assert!(!out.status.success(), "ctr {args:?}");
        let err = stderr(&out);
        assert!(err.contains("paused"), "ctr {args:?}: {err}");
    }

    containerd.ctr_ok(&["task", "resume", "paused"]);
    assert_eq!(state().as_deref(), Some("RUNNING"));
    wait_for(Duration::from_secs(30), seen, || count() >= at_pause + 3);
    // Its memory was kept: the count goes on where it stopped.
    let numbers = counted.lock().unwrap().clone();
    assert!(
        numbers.iter().copied().eq(1..=numbers.len() as u64),
        "{numbers:?}"
    );

    // SIGKILL still ends a paused task (the shim resumes it to deliver it), and `ctr run
    // --rm` then deletes it, its microVM with it.
    containerd.ctr_ok(&["task", "pause", "paused"]);
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "paused"]);
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "ctr run still runs: {:?}", state());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(137), "{status}");
    reader.join().unwrap();
    assert_nothing_left_of("paused");
}

#[test]
fn the_specs_rlimits_are_its_processs() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    // ctr's default spec limits open files to 1024 (soft and hard); the guest's own limit is
    // 4096, to which Node raises its soft limit as it starts.
    let js = "const limits = require('fs').readFileSync('/proc/self/limits', 'utf8'); \
              console.log(limits.split('\\n').find(l => l.startsWith('Max open files')))";
    let out = containerd.run(&["--rm"], "limits", &["node", "-e", js]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields, ["Max", "open", "files", "1024", "1024", "files"]);
    assert_nothing_left_of("limits");
}

/// `ctr events` in the background: what containerd publishes from its start on, a line each.
struct Events {
    ctr: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Events {
    /// Follows `containerd`'s events; returns once they reach us (an image label's change).
    fn follow(containerd: &Containerd) -> Events {
        use std::io::{BufRead, BufReader};

        let mut ctr = containerd
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let out = BufReader::new(ctr.stdout.take().unwrap());
        let seen = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        });
        let events = Events { ctr, lines };
        let until = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        loop {
            n += 1;
            containerd.ctr_ok(&["image", "label", IMAGE, &format!("probe={n}")]);
            let probed = Instant::now() + Duration::from_secs(1);
            while Instant::now() < probed {
                if events.position(|l| l.contains("/images/update")).is_some() {
                    return events;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(Instant::now() < until, "ctr events shows nothing");
        }
    }

    /// The index of the first line that `matches`.
    fn position(&self, matches: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines.lock().unwrap().iter().position(|l| matches(l))
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // `timeout` passes SIGTERM on to ctr.
        // SAFETY: kill has no memory arguments.
        unsafe { libc::kill(self.ctr.id() as i32, libc::SIGTERM) };
        let _ = self.ctr.wait();
    }
}

#[test]
fn a_process_the_guests_oom_killer_ends_is_an_oom_event() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let events = Events::follow(&containerd);
    // Buffers live outside V8's heap, whose own limit is never reached: each is filled, so
    // that its pages are the guest's, until the guest's kernel has none left to give.
    let js = "const kept = []; for (;;) kept.push(Buffer.alloc(16 << 20, 1))";
    let limit = (300u64 << 20).to_string();
    let out = containerd.run(
        &["--memory-limit", &limit, "--rm"],
        "oom",
        &["node", "-e", js],
    );
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    // containerd hears of the OOM kill, once, before the task's exit.
    let oom = |l: &str| l.contains("/tasks/oom") && l.contains(r#""container_id":"oom""#);
    let exit = |l: &str| l.contains("/tasks/exit") && l.contains(r#""container_id":"oom""#);
    wait_for(
        Duration::from_secs(10),
        || events.text(),
        || events.position(exit).is_some(),
    );
    let at = events.position(oom);
    assert!(
        at.is_some_and(|at| Some(at) < events.position(exit)),
        "{}",
        events.text()
    );
    assert_eq!(
        events.text().lines().filter(|l| oom(l)).count(),
        1,
        "{}",
        events.text()
    );
    assert_nothing_left_of("oom");
}

/// `ctr run` of the NodeOS image in a microVM with `mounts` (`--mount` values), running `sh -c
/// script`.
fn run_with_mounts(containerd: &Containerd, id: &str, mounts: &[String], script: &str) -> Output {
    let mut args = vec!["run", "--runtime", RUNTIME, "--rm"];
    for mount in mounts {
        args.extend(["--mount", mount.as_str()]);
    }
    args.extend([IMAGE, id, "sh", "-c", script]);
    containerd.ctr(&args)
}

#[test]
fn bind_mounts_are_copies_read_only_where_asked_and_a_tmpfs_is_the_containers() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("config");
    std::fs::create_dir(&folder).unwrap();
    // Writable by anyone: a write that fails fails for the mount's being read-only.
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(folder.join("app.json"), "{\"a\": 1}\n").unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(&file, "10.0.0.7 db\n").unwrap();
    let mounts = [
        format!(
            "type=bind,src={},dst=/data,options=rbind:ro",
            folder.display()
        ),
        format!(
            "type=bind,src={},dst=/etc/hosts,options=rbind:ro",
            file.display()
        ),
        "type=tmpfs,dst=/scratch,options=size=1m".to_string(),
    ];
    let script = "cat /data/app.json /etc/hosts; echo x > /data/new || echo refused; \
                  echo y > /scratch/z && cat /scratch/z; grep ' /scratch ' /proc/mounts";
    let out = run_with_mounts(&containerd, "binds", &mounts, script);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        ["{\"a\": 1}", "10.0.0.7 db", "refused", "y"],
        "{text}"
    );
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(
        lines[4].starts_with("tmpfs /scratch tmpfs rw,") && lines[4].contains("size=1024k"),
        "{text}"
    );
    assert!(!folder.join("new").exists());
    assert_nothing_left_of("binds");
}

#[test]
fn a_writable_bind_is_copied_back_when_the_task_ends_and_its_symlinks_stay_inside() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(folder.join("old"), "old\n").unwrap();
    // A file of its own, as the kubelet's termination log.
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mounts = [
        format!(
            "type=bind,src={},dst=/data,options=rbind:rw",
            folder.display()
        ),
        format!(
            "type=bind,src={},dst=/dev/termination-log,options=rbind:rw",
            log.display()
        ),
    ];
    let script = "echo written > /data/new && rm /data/old && ln -s /etc/passwd /data/out && \
                  ln -s new /data/in && echo bye > /dev/termination-log && echo done";
    let out = run_with_mounts(&containerd, "emptydir", &mounts, script);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "done");
    // On the host once `ctr run` has returned: the task's end waited for the copy-back.
    assert_eq!(
        std::fs::read_to_string(folder.join("new")).unwrap(),
        "written\n"
    );
    assert!(!folder.join("old").exists());
    assert_eq!(
        std::fs::read_link(folder.join("in")).unwrap(),
        Path::new("new")
    );
    // The symlink out of the folder is refused, not made on the host.
    assert!(std::fs::symlink_metadata(folder.join("out")).is_err());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "bye\n");
    assert_nothing_left_of("emptydir");
}

#[test]
fn a_bind_mount_of_a_missing_source_fails_the_create_and_leaves_nothing() {
    let Some(containerd) = containerd_if_root() else {
        return;
    };
    let mounts = ["type=bind,src=/nonexistent/nodeos-src,dst=/data,options=rbind:ro".to_string()];
    let out = run_with_mounts(&containerd, "missing", &mounts, "true");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "the spec's mount at /data: its source /nonexistent/nodeos-src: No such file or \
             directory"
        ),
        "{err}"
    );
    assert_nothing_left_of("missing");
}
