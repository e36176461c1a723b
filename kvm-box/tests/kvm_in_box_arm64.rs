//! The arm64 box: its /dev/kvm creates VMs and vCPUs, an aarch64 program runs with the
//! libraries packed from the arm64 sysroot, and the harness behaves as on x86-64 (statuses,
//! sections, check timeouts, bytes). Each box costs 5-10 s here (L1 boots in 3-5 s under TCG).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kvm_box::{Arch, BoxError, BoxFile, BoxRun, Script};

/// tests/arm64/kvm_probe.c cross-built for aarch64, dynamically linked, into `dir`.
fn kvm_probe(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/arm64/kvm_probe.c");
    let binary = dir.join("kvm-probe");
    let gcc = kvm_box::host_program("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
        .unwrap_or_else(|e| panic!("{e}"));
    let status = Command::new(gcc)
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "aarch64-linux-gnu-gcc failed");
    binary
}

#[test]
fn dev_kvm_creates_vms_and_checks_behave() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::new();
    script
        .check("arch", "uname -m")
        .check("dev-kvm", "test -c /dev/kvm && echo present")
        .check(
            "hyp-mode",
            "dmesg | grep -o 'VHE mode initialized successfully'",
        )
        .check("kvm-probe", "kvm-probe")
        .check("fails", "echo oops >&2; exit 3")
        .check_with_timeout("hangs", Duration::from_secs(1), "sleep 30")
        .check("after-hang", "echo still here")
        .check("bytes", "printf 'crlf\\r\\n'")
        .setup("exit 42");
    let run = BoxRun::new(script.build())
        .arch(Arch::Aarch64)
        .file(BoxFile::with_libs(
            kvm_probe(dir.path()),
            "/usr/bin/kvm-probe",
        ));
    let out = kvm_box::run(&common::cache(), &run).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "arm64 box: L1 boot {:?}, wall {:?}, initramfs {} KiB",
        out.boot,
        out.wall,
        out.initramfs_bytes / 1024
    );
    let checks = out.checks();
    let context = format!("output:\n{}\nconsole:\n{}", out.output, out.console);
    assert_eq!(checks["arch"].output, "aarch64\n", "{context}");
    assert_eq!(checks["dev-kvm"].output, "present\n", "{context}");
    assert!(
        checks["hyp-mode"].passed(),
        "KVM is not in VHE mode:\n{context}"
    );
    assert_eq!(
        checks["kvm-probe"].output, "api 12\nvm ok\nvcpu ok\n",
        "{context}"
    );
    assert_eq!(checks["fails"].status, Some(3));
    assert_eq!(checks["fails"].output, "oops\n");
    assert_eq!(
        checks["hangs"].status,
        Some(137),
        "a check past its timeout is killed"
    );
    assert_eq!(checks["after-hang"].output, "still here\n");
    assert_eq!(
        checks["bytes"].output, "crlf\r\n",
        "the script's bytes arrive unchanged"
    );
    assert_eq!(out.script_status, 42, "{context}");
    assert!(
        !out.output.contains("KVM-BOX-READY") && !out.console.contains("still here"),
        "the console and the output stay apart:\n{context}"
    );
}

#[test]
fn a_program_for_another_architecture_is_refused() {
    // /bin/true is x86-64: its libraries cannot come from the arm64 sysroot. No box boots.
    let run = BoxRun::new("true")
        .arch(Arch::Aarch64)
        .file(BoxFile::with_libs("/bin/true", "/opt/true"));
    match kvm_box::run(&common::cache(), &run) {
        Err(BoxError::BadFile { reason, .. }) => {
            assert!(
                reason.contains("is for x86_64, the box for aarch64"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The newest `<prefix>*/<file>` in nodeos-vm's cache (`$NODEOS_VM_CACHE`, else
/// `~/.cache/nodeos-vm`), where `nodeos-vm build --arch aarch64` leaves the arm64 guest.
fn newest_build(prefix: &str, file: &str) -> PathBuf {
    let cache = std::env::var_os("NODEOS_VM_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("nodeos-vm")))
        .expect("no cache directory");
    std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().join(file))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*/{file} in {}: build the arm64 guest",
                cache.display()
            )
        })
}

/// The side-by-side baseline: Debian's arm64 QEMU, from the arm64 sysroot with its libraries,
/// boots the project's arm64 guest on L1's /dev/kvm and runs Node in it. Ignored by default:
/// it needs the arm64 guest built (`nodeos-vm build --arch aarch64`) and costs about a
/// minute (the first time, also a 40 MB download of QEMU and its dependencies).
#[test]
#[ignore]
fn qemu_boots_the_arm64_guest_on_kvm_in_the_box() {
    let sysroot = kvm_box::Sysroot::ensure(&common::cache(), Arch::Aarch64, &["qemu-system-arm"])
        .unwrap_or_else(|e| panic!("{e}"));
    let kernel = newest_build("Image-", "Image");
    let rootfs = newest_build("rootfs-arm64.img-", "rootfs.img");
    let params = "console=ttyAMA0 panic=-1 quiet mitigations=off rootfstype=squashfs ro \
                  init=/sbin/init root=/dev/vda nodeos.console=pipe";
    let mut script = Script::new();
    script.setup(&format!(
        r#"mkfifo /tmp/in
read t0 rest </proc/uptime
qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host -m 512 -smp 1 \
  -nodefaults -no-user-config -display none -no-reboot \
  -kernel /l2/Image -append '{params}' \
  -drive file=/l2/rootfs.img,format=raw,if=none,id=disk0,readonly=on \
  -device virtio-blk-device,drive=disk0 \
  -chardev stdio,id=con -serial chardev:con \
  -device virtio-serial-device -chardev file,id=marks,path=/tmp/marks \
  -device virtserialport,chardev=marks,name=org.nodeos.marks \
  </tmp/in >/tmp/console 2>/tmp/qemu.err &
qemu=$!
exec 3>/tmp/in
since() {{ read t rest </proc/uptime; echo "$t - $t0" | bc; }}
i=0
while ! grep -q I /tmp/marks 2>/dev/null && [ $i -lt 3000 ]; do sleep 0.05; i=$((i + 1)); done
echo "init-mark $(since)"
while ! grep -q R /tmp/marks 2>/dev/null && [ $i -lt 3000 ]; do sleep 0.05; i=$((i + 1)); done
echo "repl-mark $(since)"
echo 'console.log(6*7)' >&3
echo '.exit' >&3
wait $qemu
echo "qemu-exit $? $(since)"
"#
    ));
    script
        .check("console", "cat /tmp/console")
        .check("marks", "cat /tmp/marks")
        .check("qemu-stderr", "cat /tmp/qemu.err");
    let run = BoxRun::new(script.build())
        .arch(Arch::Aarch64)
        .file(BoxFile::new(&kernel, "/l2/Image"))
        .file(BoxFile::new(&rootfs, "/l2/rootfs.img"));
    let run = BoxRun {
        memory_mib: 3072,
        ..kvm_box::sysroot_qemu(&sysroot)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .fold(run, BoxRun::file)
    };
    let out = kvm_box::run(&common::cache(), &run).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "L2 QEMU in the arm64 box: L1 boot {:?}, wall {:?}, initramfs {} MiB\n{}",
        out.boot,
        out.wall,
        out.initramfs_bytes >> 20,
        out.output
    );
    let checks = out.checks();
    assert!(
        checks["console"].output.lines().any(|l| l.trim() == "42"),
        "no 42 from Node in L2:\n{}\nconsole:\n{}",
        out.output,
        out.console
    );
}
