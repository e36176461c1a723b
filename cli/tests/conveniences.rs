//! The CLI's conveniences: shell completions and the man page generated from its definition,
//! `version`, and JSON output of `ps`, `users ls`, `doctor` and `run --json-status`.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn nodeos_vm(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let out = Command::new(common::BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running nodeos-vm");
    assert!(
        out.status.success(),
        "nodeos-vm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

#[test]
fn completions_for_each_shell_name_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = nodeos_vm(&["completions", shell], &[]);
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["start", "run", "serve", "users", "memory", "volume"] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        assert!(
            !script.contains("keep"),
            "{shell}: the hidden command is offered"
        );
    }
    // bash loads the script, and it completes our commands.
    let script = nodeos_vm(&["completions", "bash"], &[]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodeos-vm.bash");
    std::fs::write(&file, script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(nodeos-vm st); COMP_CWORD=1; _nodeos__vm nodeos-vm st nodeos-vm; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        words.lines().any(|w| w == "start"),
        "{words}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(words.lines().any(|w| w == "stop"), "{words}");
}

#[test]
fn the_man_page_has_every_command() {
    let page = String::from_utf8(nodeos_vm(&["man"], &[]).stdout).unwrap();
    assert!(page.starts_with(".ie"), "not roff");
    for command in [
        "run",
        "start",
        "ps",
        "exec",
        "logs",
        "stop",
        "serve",
        "users",
        "build",
        "image",
        "doctor",
        "version",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!(".TH nodeos-vm-{command} ")),
            "no section for {command}"
        );
    }
    assert!(!page.contains("nodeos-vm-keep"));
    // man(1) itself renders it.
    if let Ok(man) = which("man") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodeos-vm.1");
        std::fs::write(&file, &page).unwrap();
        let out = Command::new(man)
            .arg("-l")
            .arg(&file)
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn version_names_the_kernel_image_and_node() {
    common::artifacts();
    let text = String::from_utf8(nodeos_vm(&["version"], &[]).stdout).unwrap();
    assert!(text.starts_with("nodeos-vm "), "{text}");
    assert!(text.contains("kernel: Linux 6."), "{text}");
    let versions = json(&nodeos_vm(&["version", "--json"], &[]));
    assert!(
        versions["kernel"].as_str().unwrap().starts_with("6."),
        "{versions}"
    );
    assert_eq!(
        versions["node"].as_str().unwrap().split('.').count(),
        3,
        "{versions}"
    );
    assert!(versions["root_image_path"]
        .as_str()
        .unwrap()
        .ends_with("rootfs.img"));
}

#[test]
fn ps_users_and_doctor_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("XDG_RUNTIME_DIR", dir.path()),
        ("NODEOS_VM_DATA", dir.path()),
    ];
    assert_eq!(
        json(&nodeos_vm(&["ps", "--json"], &env)),
        Value::Array(Vec::new())
    );
    assert_eq!(
        json(&nodeos_vm(&["users", "ls", "--json"], &env)),
        Value::Array(Vec::new())
    );
    let doctor = json(&nodeos_vm(&["doctor", "--json"], &[]));
    let usable = doctor["kvm_usable"].as_bool().unwrap();
    assert_eq!(
        doctor["auto_backend"],
        if usable { "kvm" } else { "qemu-tcg" }
    );
    assert_eq!(doctor["kvm_unusable_why"].is_string(), !usable);
    assert!(doctor["cache"].is_string());
    // The other architecture's guests: under emulation, with their own kernel and image.
    let arm64 = &doctor["emulated"]["aarch64"];
    assert!(
        arm64["emulator"].is_string() || arm64["emulator"].is_null(),
        "{doctor}"
    );
    assert!(
        arm64.get("kernel").is_some() && arm64.get("root_image").is_some(),
        "{doctor}"
    );
    // Without the sources, what is built cannot be told: said, not an error.
    let nowhere = [("NODEOS_VM_SRC", std::path::Path::new("/nonexistent"))];
    let text = String::from_utf8(nodeos_vm(&["doctor"], &nowhere).stdout).unwrap();
    assert!(text.contains("auto backend: "), "{text}");
    assert!(
        text.contains("kernel: unknown: reading the kernel inputs"),
        "{text}"
    );
    assert!(
        text.contains("aarch64 guests (--arch aarch64): QEMU's emulation"),
        "{text}"
    );
    assert!(text.contains("aarch64 kernel: unknown: "), "{text}");
    let doctor = json(&nodeos_vm(&["doctor", "--json"], &nowhere));
    assert!(doctor["kernel"]["unknown"].is_string(), "{doctor}");
    let versions = json(&nodeos_vm(&["version", "--json"], &nowhere));
    assert_eq!(versions["kernel"], Value::Null, "{versions}");
}

#[test]
fn run_says_how_the_command_ended_in_json() {
    let (status, _, stderr) =
        common::run(&["--json-status", "--", "sh", "-c", "echo err >&2; exit 3"]);
    assert_eq!(status, Some(3), "{stderr}");
    let last = stderr.lines().last().unwrap();
    let line: Value = serde_json::from_str(last).unwrap();
    assert_eq!(line["exit_status"], 3);
    assert_eq!(line["outcome"], "exited");
    assert_eq!(line["code"], 3);
    assert!(
        stderr.starts_with("err\n") || stderr.contains("err\n"),
        "{stderr}"
    );
    let (status, _, stderr) = common::run(&["--json-status", "--", "no-such-command"]);
    assert_eq!(status, Some(127));
    let line: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(line["outcome"], "not_found");
}
