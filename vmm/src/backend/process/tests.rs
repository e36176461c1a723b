//! The VMM process end to end with tiny PVH guests: this test binary plays `nodeos-vm vmm`
//! (it runs [`vmm_main`] when started with [`VMM_ENV`]), jailed as whoever runs the tests.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::backend::kvm::tests::{file_with, pvh_spec};
use crate::boot::tests::tiny_elf;
use crate::kvm::smoke::kvm_usable;
use crate::vm::{Device, Start, VmExit};

const VMM_ENV: &str = "NODEOS_VM_TEST_VMM";
const VMM_TEST: &str = "backend::process::tests::vmm_process";
const LOAD_ADDR: u64 = 0x10_0000;

/// Marks init and the console ready on the boot timer, prints "P" and exits with 7.
const GUEST: &[u8] = &[
    0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
    0xb0, b'I', 0xee, // mov al, 'I'; out dx, al
    0xb0, b'R', 0xee, // mov al, 'R'; out dx, al
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'P', 0xee, // mov al, 'P'; out dx, al
    0xb0, 7, 0xe6, 0xf4, // mov al, 7; out 0xf4, al
    0xf4, // hlt
];
/// Spins until stopped.
const SPINNING_GUEST: &[u8] = &[0xeb, 0xfe]; // jmp $
/// Prints dots until stopped.
const DOTTING_GUEST: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'.', 0xee, // loop: mov al, '.'; out dx, al
    0xeb, 0xfb, // jmp loop
];

/// The kernel of a tiny guest running `code` and an empty root disk, for a test VM; `None` (the
/// test is skipped, and says so) where /dev/kvm cannot run it.
fn tiny_guest(code: &[u8]) -> Option<(tempfile::NamedTempFile, tempfile::NamedTempFile)> {
    if !kvm_usable() {
        println!("skipped: /dev/kvm is not usable here");
        return None;
    }
    Some((
        file_with(&tiny_elf(code, LOAD_ADDR, true)),
        file_with(&[0; 4096]),
    ))
}

/// Not a test of its own: the VMM process, when this binary is started as one (in a child
/// with one thread, as `nodeos-vmm` has when it enters its jail).
#[test]
fn vmm_process() {
    if std::env::var_os(VMM_ENV).is_some() {
        crate::jail::tests::in_single_threaded_child(|| std::process::exit(vmm_main().into()));
    }
}

fn this_test_binary() -> VmmProgram {
    VmmProgram::new(
        std::env::current_exe().unwrap(),
        ["--exact", VMM_TEST, "--nocapture", "--test-threads=1"]
            .map(OsString::from)
            .into(),
        vec![(VMM_ENV.into(), "1".into())],
    )
}

/// The jail of whoever runs these tests.
fn jail() -> Option<Jail> {
    Some(Jail::for_this_process(jail::IdRange::default()))
}

/// No jail, then the jail of whoever runs these tests (when there is one).
fn unjailed_and_jailed() -> Vec<Option<Jail>> {
    std::iter::once(None).chain(jail().map(Some)).collect()
}

/// As nodeos-vm runs it: every thread of the VMM process filtered, its main thread too.
fn spec(kernel: &Path, rootfs: &Path) -> VmSpec {
    pvh_spec(kernel, rootfs, 1)
}

struct Outcome {
    result: Result<RunReport, Error>,
    /// The harness's own lines come first: only the end is the guest's.
    console: String,
}

fn boot(program: &VmmProgram, spec: &VmSpec, stop: &StopSignal, jail: Option<Jail>) -> Outcome {
    let (output_read, output) = nix::unistd::pipe().unwrap();
    let (input, _input_write) = nix::unistd::pipe().unwrap();
    let console = ConsoleIo {
        input,
        output,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let result = run(program, spec, console, stop, None, jail);
    let mut console = String::new();
    File::from(output_read)
        .read_to_string(&mut console)
        .unwrap();
    Outcome { result, console }
}

#[test]
fn a_guest_runs_in_a_vmm_process_jailed_or_not() {
    let Some((kernel, rootfs)) = tiny_guest(GUEST) else {
        return;
    };
    let mut spec = spec(kernel.path(), rootfs.path());
    spec.measure_overhead = true;
    for jail in unjailed_and_jailed() {
        let o = boot(
            &this_test_binary(),
            &spec,
            &StopSignal::new().unwrap(),
            jail,
        );
        let report = o.result.unwrap_or_else(|e| panic!("jail {jail:?}: {e}"));
        assert_eq!(report.exit, VmExit::Guest(7), "jail {jail:?}");
        assert!(report.init_reached.is_some());
        assert!(report.vmm_overhead_kib.is_some_and(|kib| kib > 0));
        assert!(o.console.ends_with('P'), "jail {jail:?}: {:?}", o.console);
    }
    // Unless asked, the VMM does not read its memory map at the end.
    spec.measure_overhead = false;
    let o = boot(
        &this_test_binary(),
        &spec,
        &StopSignal::new().unwrap(),
        None,
    );
    let report = o.result.unwrap();
    assert_eq!(report.exit, VmExit::Guest(7));
    assert_eq!(report.vmm_overhead_kib, None);
}

/// Saved in a VMM process right after the guest marks its console ready, jailed and not, and
/// restored from each snapshot into fresh VMM processes, jailed and not: the guest goes on from
/// the write after the mark (it prints "P" and exits) in each. A corrupted snapshot is refused
/// with the one line that says so.
#[test]
fn a_guest_saved_in_a_vmm_process_goes_on_in_others() {
    let Some((kernel, rootfs)) = tiny_guest(GUEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jails = unjailed_and_jailed();
    for saved_in in &jails {
        let file = dir.path().join("vm.snapshot");
        let mut spec = spec(kernel.path(), rootfs.path());
        spec.start = Start::Save {
            to: file.clone(),
            at: contract::ports::CONSOLE_READY,
            identity: "tiny".into(),
        };
        let stop = StopSignal::new().unwrap();
        let o = boot(&this_test_binary(), &spec, &stop, *saved_in);
        let report = o
            .result
            .unwrap_or_else(|e| panic!("saved in {saved_in:?}: {e}"));
        assert_eq!(report.exit, VmExit::Saved, "saved in {saved_in:?}");
        assert!(!o.console.ends_with('P'), "{:?}", o.console);
        spec.start = Start::Restore {
            from: file.clone(),
            identity: "tiny".into(),
        };
        for jail in &jails {
            let o = boot(&this_test_binary(), &spec, &stop, *jail);
            let report = o
                .result
                .unwrap_or_else(|e| panic!("saved in {saved_in:?}, restored in {jail:?}: {e}"));
            assert_eq!(report.exit, VmExit::Guest(7), "restored in {jail:?}");
            assert!(o.console.ends_with('P'), "{jail:?}: {:?}", o.console);
        }
    }
    let file = dir.path().join("vm.snapshot");
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"?", 4096 + 2).unwrap();
    let mut spec = spec(kernel.path(), rootfs.path());
    spec.start = Start::Restore {
        from: file,
        identity: "tiny".into(),
    };
    let err = boot(
        &this_test_binary(),
        &spec,
        &StopSignal::new().unwrap(),
        None,
    )
    .result
    .unwrap_err();
    let Error::Vmm(failure) = err else {
        panic!("{err}");
    };
    assert_eq!(failure.kind, FailureKind::Snapshot);
    assert_eq!(
        failure.message,
        "snapshot: corrupted: the SHA-256 of the preamble and state does not match"
    );
}

#[test]
fn the_stop_signal_reaches_the_vmm_process() {
    let Some((kernel, rootfs)) = tiny_guest(SPINNING_GUEST) else {
        return;
    };
    let stop = StopSignal::new().unwrap();
    let s = stop.clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        s.stop();
    });
    let o = boot(
        &this_test_binary(),
        &spec(kernel.path(), rootfs.path()),
        &stop,
        jail(),
    );
    assert_eq!(o.result.unwrap().exit, VmExit::Stopped);
}

/// The VMM's error reaches the parent typed: what failed (a jailed VMM mounts the disk into
/// its jail, an unjailed one opens it as a device), and the error with its causes.
#[test]
fn a_vmm_error_is_the_error() {
    let Some((kernel, _rootfs)) = tiny_guest(GUEST) else {
        return;
    };
    let spec = spec(kernel.path(), Path::new("/nonexistent/rootfs.img"));
    let mut cases = vec![(None, FailureKind::Disk)];
    cases.extend(jail().map(|jail| (Some(jail), FailureKind::Jail)));
    for (jail, expected) in cases {
        let o = boot(
            &this_test_binary(),
            &spec,
            &StopSignal::new().unwrap(),
            jail,
        );
        match o.result {
            Err(Error::Vmm(VmmFailure { kind, message })) => {
                assert_eq!(kind, expected, "jail {jail:?}: {message}");
                assert!(message.contains("/nonexistent/rootfs.img"), "{message}")
            }
            other => panic!("jail {jail:?}: {:?}", other.map(|r| r.exit)),
        }
    }
}

#[test]
fn a_vmm_that_dies_is_an_error_with_its_last_words() {
    let dying = VmmProgram::new(
        "/bin/sh".into(),
        ["-c", "echo going >&2; echo gone >&2; kill -KILL $$"]
            .map(OsString::from)
            .into(),
        Vec::new(),
    );
    let spec = spec(Path::new("/kernel"), Path::new("/rootfs"));
    let o = boot(&dying, &spec, &StopSignal::new().unwrap(), None);
    match o.result {
        Err(Error::Died { status, stderr }) => {
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            assert_eq!(stderr, "gone");
        }
        other => panic!("{:?}", other.map(|r| r.exit)),
    }
}

/// The agent link's socket is the parent's: bound before the VMM starts, listening while it
/// runs (the VMM accepts on the descriptor it was given), removed once it has ended.
#[test]
fn the_agent_socket_is_the_parents() {
    let Some((kernel, rootfs)) = tiny_guest(SPINNING_GUEST) else {
        return;
    };
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("agent.sock");
    let mut spec = spec(kernel.path(), rootfs.path());
    spec.devices.push(Device::AgentLink(socket.clone()));
    let stop = StopSignal::new().unwrap();
    let (s, path) = (stop.clone(), socket.clone());
    let client = thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let connected = loop {
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(c) => break Ok(c),
                Err(e) if std::time::Instant::now() > deadline => break Err(e),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        s.stop();
        connected.map(drop)
    });
    let o = boot(&this_test_binary(), &spec, &stop, jail());
    assert_eq!(o.result.unwrap().exit, VmExit::Stopped);
    client
        .join()
        .unwrap()
        .expect("the agent socket takes clients");
    assert!(!socket.exists(), "the parent removed the agent socket");
}

/// Found in the KVM box: `start > file` writes the guest's console straight to a file, which
/// grows past any disk's size; the jail's file-size limit must not kill the VMM for it.
#[test]
fn a_console_written_to_a_file_is_not_cut_short() {
    let Some((kernel, rootfs)) = tiny_guest(GUEST) else {
        return;
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let (input, _input_write) = nix::unistd::pipe().unwrap();
    let console = ConsoleIo {
        input,
        output: log.reopen().unwrap().into(),
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let spec = spec(kernel.path(), rootfs.path());
    let report = run(
        &this_test_binary(),
        &spec,
        console,
        &StopSignal::new().unwrap(),
        None,
        jail(),
    )
    .unwrap();
    assert_eq!(report.exit, VmExit::Guest(7));
    assert!(std::fs::read_to_string(log.path()).unwrap().ends_with('P'));
}

/// Paused and resumed by its owner through the pause link, jailed and not: a paused guest
/// writes nothing, a resumed one goes on, a second pause is refused, and once the VM is stopped
/// the owner hears that it has ended.
#[test]
fn a_vmm_process_pauses_and_resumes_on_its_owners_requests() {
    use crate::vm::{pause_link, PauseError};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some((kernel, rootfs)) = tiny_guest(DOTTING_GUEST) else {
        return;
    };
    for jail in unjailed_and_jailed() {
        let spec = spec(kernel.path(), rootfs.path());
        let (output_read, output) = nix::unistd::pipe().unwrap();
        let (input, _input_write) = nix::unistd::pipe().unwrap();
        let console = ConsoleIo {
            input,
            output,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        };
        let dots = Arc::new(AtomicUsize::new(0));
        let counted = dots.clone();
        let reader = thread::spawn(move || {
            let mut out = File::from(output_read);
            let mut buf = [0; 65536];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                let n = buf[..n].iter().filter(|&&b| b == b'.').count();
                counted.fetch_add(n, Ordering::Relaxed);
            }
        });
        let (switch, link) = pause_link().unwrap();
        let stop = StopSignal::new().unwrap();
        let stopper = stop.clone();
        let vm = thread::spawn(move || {
            run(
                &this_test_binary(),
                &spec,
                console,
                &stopper,
                Some(link),
                jail,
            )
        });
        let grows_past = |from: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while dots.load(Ordering::Relaxed) <= from {
                assert!(
                    std::time::Instant::now() < deadline,
                    "jail {jail:?}: no dots"
                );
                thread::sleep(Duration::from_millis(5));
            }
        };
        grows_past(0);
        for _ in 0..2 {
            switch
                .pause()
                .unwrap_or_else(|e| panic!("jail {jail:?}: {e}"));
            // What was written before the pause is read by now.
            thread::sleep(Duration::from_millis(50));
            let held = dots.load(Ordering::Relaxed);
            thread::sleep(Duration::from_millis(200));
            assert_eq!(
                dots.load(Ordering::Relaxed),
                held,
                "jail {jail:?}: printed while paused"
            );
            let again = switch.pause().unwrap_err();
            assert!(matches!(again, PauseError::Refused(_)), "{again}");
            switch.resume().unwrap();
            grows_past(held);
        }
        switch.pause().unwrap();
        // A paused VM stops.
        stop.stop();
        let report = vm
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("jail {jail:?}: {e}"));
        assert_eq!(report.exit, VmExit::Stopped);
        let ended = switch.resume().unwrap_err();
        assert!(matches!(ended, PauseError::Ended(_)), "{ended}");
        reader.join().unwrap();
    }
}
