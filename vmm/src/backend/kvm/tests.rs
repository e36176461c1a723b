use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use super::*;
use crate::boot::tests::tiny_elf;
use crate::kvm::smoke::kvm_usable;
use crate::vm::Disk;
use crate::vm::Start;
use crate::vm::VmExit;

const LOAD_ADDR: u64 = 0x10_0000;

/// Checks the PVH entry state (EBX -> start info magic: "S"), reads the first virtio-mmio
/// device's magic ("V"), marks init on the boot timer, then waits for a byte on COM1,
/// echoes it and exits with it as the status.
const PVH_GUEST: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, // cmp dword [ebx], 0x336ec578
    0x75, 0x03, // jne +3
    0xb0, b'S', 0xee, // mov al, 'S'; out dx, al
    0xa1, 0x00, 0x00, 0x00, 0xd0, // mov eax, [0xd0000000]
    0x3d, 0x76, 0x69, 0x72, 0x74, // cmp eax, 0x74726976 ("virt")
    0x75, 0x03, // jne +3
    0xb0, b'V', 0xee, // mov al, 'V'; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
    0xb0, b'I', 0xee, // mov al, 'I'; out dx, al
    0xb0, b'R', 0xee, // mov al, 'R'; out dx, al
    // wait: until LSR.DR
    0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd
    0xec, // in al, dx
    0xa8, 0x01, // test al, 1
    0x74, 0xf7, // jz wait
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xec, // in al, dx
    0xee, // out dx, al
    0xe6, 0xf4, // out 0xf4, al
    0xf4, // hlt
];

/// Breaks on purpose: ud2 with no usable IDT triple-faults.
const TRIPLE_FAULT_GUEST: &[u8] = &[0x0f, 0x0b, 0xf4];

/// `reboot=k`: the i8042's CPU reset line.
const KEYBOARD_RESET_GUEST: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4]; // mov al, 0xfe; out 0x64, al

/// The boot vCPU starts vCPU 1 the way Linux does (INIT, then a start-up IPI to real-mode
/// code at 0x8000); vCPU 1 prints "A" and exits with 11 while vCPU 0 spins.
const SMP_GUEST: &[u8] = &[
    // The AP's code, put at 0x8000: mov dx, 0x3f8; mov al, 'A'; out dx, al;
    // mov al, 11; out 0xf4, al; hlt
    0xc7, 0x05, 0x00, 0x80, 0x00, 0x00, 0xba, 0xf8, 0x03, 0xb0, 0xc7, 0x05, 0x04, 0x80, 0x00, 0x00,
    b'A', 0xee, 0xb0, 11, 0xc7, 0x05, 0x08, 0x80, 0x00, 0x00, 0xe6, 0xf4, 0xf4, 0x90,
    // LAPIC on: spurious vector register = 0x1ff
    0xc7, 0x05, 0xf0, 0x00, 0xe0, 0xfe, 0xff, 0x01, 0x00, 0x00,
    // ICR high: destination APIC ID 1; ICR low: INIT, assert
    0xc7, 0x05, 0x10, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x01, 0xc7, 0x05, 0x00, 0x03, 0xe0, 0xfe,
    0x00, 0x45, 0x00, 0x00,
    // ICR high: APIC ID 1; ICR low: start-up at vector 0x08 (0x8000)
    0xc7, 0x05, 0x10, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x01, 0xc7, 0x05, 0x00, 0x03, 0xe0, 0xfe,
    0x08, 0x46, 0x00, 0x00, 0xeb, 0xfe, // jmp $
];

/// `mov dword [addr], value`
fn store(code: &mut Vec<u8>, addr: u32, value: u32) {
    code.extend_from_slice(&[0xc7, 0x05]);
    code.extend_from_slice(&addr.to_le_bytes());
    code.extend_from_slice(&value.to_le_bytes());
}

/// A guest that drives the root disk the way a virtio driver does: status handshake,
/// VERSION_1, one 8-entry queue, one read of sector 0 into 0x31000 with the status byte at
/// 0x32000; it polls the used ring (interrupts are off), prints the first byte read and
/// exits with the request status.
fn virtio_block_guest() -> Vec<u8> {
    const MMIO: u32 = 0xd000_0000;
    let (desc, avail, used) = (0x2_0000u32, 0x2_1000u32, 0x2_2000u32);
    let (header, data, status) = (0x3_0000u32, 0x3_1000u32, 0x3_2000u32);
    let mut c = Vec::new();
    for (reg, value) in [
        (0x70, 1),
        (0x70, 3),
        (0x24, 1),
        (0x20, 1),
        (0x24, 0),
        (0x20, 0),
        (0x70, 0xb),
    ] {
        store(&mut c, MMIO + reg, value);
    }
    for (reg, value) in [
        (0x30, 0),
        (0x38, 8),
        (0x80, desc),
        (0x84, 0),
        (0x90, avail),
        (0x94, 0),
        (0xa0, used),
        (0xa4, 0),
        (0x44, 1),
    ] {
        store(&mut c, MMIO + reg, value);
    }
    // Descriptors: header (read), data (write), status (write); NEXT = 1, WRITE = 2.
    for (i, (addr, len, flags, next)) in [(header, 16, 1, 1), (data, 512, 3, 2), (status, 1, 2, 0)]
        .into_iter()
        .enumerate()
    {
        let at = desc + 16 * i as u32;
        store(&mut c, at, addr);
        store(&mut c, at + 4, 0);
        store(&mut c, at + 8, len);
        store(&mut c, at + 12, flags | (next << 16));
    }
    store(&mut c, status, 0xee); // so a missing status shows
    store(&mut c, avail + 4, 0); // ring[0] = head 0
    store(&mut c, avail, 1 << 16); // flags 0, idx 1
    store(&mut c, MMIO + 0x70, 0xf); // DRIVER_OK
    store(&mut c, MMIO + 0x50, 0); // QueueNotify(0)
                                   // wait: until used.idx != 0
    c.extend_from_slice(&[0x0f, 0xb7, 0x05]);
    c.extend_from_slice(&(used + 2).to_le_bytes()); // movzx eax, word [used.idx]
    c.extend_from_slice(&[0x85, 0xc0, 0x74, 0xf5]); // test eax, eax; jz wait
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xa0]); // mov dx, 0x3f8; mov al, [data]
    c.extend_from_slice(&data.to_le_bytes());
    c.push(0xee); // out dx, al
    c.push(0xa0); // mov al, [status]
    c.extend_from_slice(&status.to_le_bytes());
    c.extend_from_slice(&[0xe6, 0xf4, 0xf4]); // out 0xf4, al; hlt
    c
}

/// Reads the RTC the way Linux does (seconds first and last, the rest between) and prints
/// seconds, minutes, hours, day, month, year, century, seconds again; then switches it to
/// binary (register B = 24-hour | DM, index written with the NMI-disable bit), prints the
/// seconds once more and exits with register D.
fn cmos_guest() -> Vec<u8> {
    // mov al, reg; out 0x70, al; in al, 0x71
    let read = |c: &mut Vec<u8>, reg: u8| c.extend_from_slice(&[0xb0, reg, 0xe6, 0x70, 0xe4, 0x71]);
    let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for reg in [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x00] {
        read(&mut c, reg);
        c.push(0xee); // out dx, al
    }
    // mov al, 0x8b; out 0x70, al; mov al, 0x06; out 0x71, al
    c.extend_from_slice(&[0xb0, 0x8b, 0xe6, 0x70, 0xb0, 0x06, 0xe6, 0x71]);
    read(&mut c, 0x00);
    c.push(0xee);
    read(&mut c, 0x0d);
    c.extend_from_slice(&[0xe6, 0xf4, 0xf4]); // out 0xf4, al; hlt
    c
}

/// A hostile guest: 4000 rounds of random accesses driven by an LCG in ESI
/// (x = x * 1103515245 + 12345; EAX, EBX, ECX, EDX scratch, EDI counts down; no stack).
/// Each round, on one of the four virtio-mmio windows (root disk, rng, two empty slots):
/// - every 8th round, a driver's set-up with random queue geometry and ring addresses;
/// - a dword write to 0x000..0x100 and one to 0x000..0x200, log-uniform values (so status
///   bits, queue indexes and ring addresses inside guest memory all come up);
/// - a random dword into low memory 0..512 KiB, where those rings often land;
/// - a dword read of 0x000..0x200;
/// - a random byte to a random port below 0x400, except the exit port, the i8042 command
///   port (0xfe there resets the VM) and COM1 (its MCR loopback bit would swallow the
///   marker); a dword read of a random port below 0x400.
///
/// Then "D" on COM1 and exit status 0.
fn hostile_guest() -> Vec<u8> {
    const ROUNDS: u32 = 4000;
    let next = |c: &mut Vec<u8>| {
        c.extend_from_slice(&[0x69, 0xf6, 0x6d, 0x4e, 0xc6, 0x41]); // imul esi, esi, 1103515245
        c.extend_from_slice(&[0x81, 0xc6, 0x39, 0x30, 0x00, 0x00]); // add esi, 12345
    };
    // EBX = 0xd0000000 | ((x >> 12) & mask): the window from bits 12..13 of the mask,
    // the offset from its low bits.
    let window_addr = |c: &mut Vec<u8>, mask: u32| {
        next(c);
        c.extend_from_slice(&[0x89, 0xf3, 0xc1, 0xeb, 12]); // mov ebx, esi; shr ebx, 12
        c.extend_from_slice(&[0x81, 0xe3]); // and ebx, mask
        c.extend_from_slice(&mask.to_le_bytes());
        c.extend_from_slice(&[0x81, 0xcb, 0x00, 0x00, 0x00, 0xd0]); // or ebx, 0xd0000000
    };
    // EAX = x >> ((x >> 11) & 31): the top bits of x, shifted down by a random amount.
    let log_uniform = |c: &mut Vec<u8>| {
        next(c);
        c.extend_from_slice(&[0x89, 0xf0, 0x89, 0xf1]); // mov eax, esi; mov ecx, esi
        c.extend_from_slice(&[0xc1, 0xe9, 11, 0xd3, 0xe8]); // shr ecx, 11; shr eax, cl
    };
    // EDX = (x >> 16) & 0x3ff
    let port = |c: &mut Vec<u8>| {
        next(c);
        c.extend_from_slice(&[0x89, 0xf2, 0xc1, 0xea, 16]); // mov edx, esi; shr edx, 16
        c.extend_from_slice(&[0x81, 0xe2, 0xff, 0x03, 0x00, 0x00]); // and edx, 0x3ff
    };

    let mut c = vec![0xbe, 0x01, 0x00, 0x00, 0x00]; // mov esi, 1 (seed)
    c.push(0xbf); // mov edi, ROUNDS
    c.extend_from_slice(&ROUNDS.to_le_bytes());
    let round = c.len();
    // A driver's set-up of one random window, with random queue geometry: reset,
    // ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK; QueueSel 0 or 1 (there is no queue 1),
    // QueueNum 1 << 0..15 (many too big), log-uniform desc/avail/used addresses;
    // QueueReady, DRIVER_OK, QueueNotify(0). Every 8th round only: an activation costs
    // milliseconds here (ioeventfds), 4000 of them would take ~13 s.
    c.extend_from_slice(&[0xf7, 0xc7, 0x07, 0x00, 0x00, 0x00]); // test edi, 7
    c.extend_from_slice(&[0x0f, 0x85, 0, 0, 0, 0]); // jnz random, patched below
    let to_random = c.len();
    window_addr(&mut c, 0x3000);
    // mov dword [ebx + reg], value
    let put = |c: &mut Vec<u8>, reg: u32, value: u32| {
        c.extend_from_slice(&[0xc7, 0x83]);
        c.extend_from_slice(&reg.to_le_bytes());
        c.extend_from_slice(&value.to_le_bytes());
    };
    // mov [ebx + reg], eax
    let put_eax = |c: &mut Vec<u8>, reg: u32| {
        c.extend_from_slice(&[0x89, 0x83]);
        c.extend_from_slice(&reg.to_le_bytes());
    };
    for (reg, value) in [
        (0x70, 0),
        (0x70, 1),
        (0x70, 3),
        (0x24, 1),
        (0x20, 1),
        (0x70, 0xb),
    ] {
        put(&mut c, reg, value);
    }
    next(&mut c);
    c.extend_from_slice(&[0x89, 0xf0, 0xc1, 0xe8, 31]); // mov eax, esi; shr eax, 31
    put_eax(&mut c, 0x30);
    next(&mut c);
    c.extend_from_slice(&[0x89, 0xf1, 0xc1, 0xe9, 28]); // mov ecx, esi; shr ecx, 28
    c.extend_from_slice(&[0xb8, 0x01, 0x00, 0x00, 0x00, 0xd3, 0xe0]); // mov eax, 1; shl eax, cl
    put_eax(&mut c, 0x38);
    for reg in [0x80, 0x90, 0xa0] {
        log_uniform(&mut c);
        put_eax(&mut c, reg);
    }
    for (reg, value) in [(0x44, 1), (0x70, 0xf), (0x50, 0)] {
        put(&mut c, reg, value);
    }
    let setup_len = (c.len() - to_random) as u32;
    c[to_random - 4..to_random].copy_from_slice(&setup_len.to_le_bytes());
    // random: writes over the registers of a (maybe live) device.
    for mask in [0x30fc, 0x31fc] {
        window_addr(&mut c, mask);
        log_uniform(&mut c);
        c.extend_from_slice(&[0x89, 0x03]); // mov [ebx], eax
    }
    next(&mut c);
    c.extend_from_slice(&[0x89, 0xf3, 0xc1, 0xeb, 8]); // mov ebx, esi; shr ebx, 8
    c.extend_from_slice(&[0x81, 0xe3, 0xfc, 0xff, 0x07, 0x00]); // and ebx, 0x7fffc
    next(&mut c);
    c.extend_from_slice(&[0x89, 0xf0, 0x89, 0x03]); // mov eax, esi; mov [ebx], eax
    window_addr(&mut c, 0x31fc);
    c.extend_from_slice(&[0x8b, 0x03]); // mov eax, [ebx]
    port(&mut c);
    next(&mut c);
    c.extend_from_slice(&[0x89, 0xf0, 0xc1, 0xe8, 24]); // mov eax, esi; shr eax, 24
    let skip = |c: &mut Vec<u8>, port: u32, jcc: u8| {
        c.extend_from_slice(&[0x81, 0xfa]); // cmp edx, port
        c.extend_from_slice(&port.to_le_bytes());
        c.extend_from_slice(&[jcc, 0]); // je/jae over the out, patched below
        c.len() - 1
    };
    let jumps = [
        skip(&mut c, u32::from(contract::ports::EXIT_PORT), 0x74), // je
        skip(&mut c, 0x64, 0x74),                                  // je
        skip(&mut c, 0x3f8, 0x73),                                 // jae
    ];
    c.push(0xee); // out dx, al
    for at in jumps {
        c[at] = (c.len() - at - 1) as u8;
    }
    port(&mut c);
    c.push(0xed); // in eax, dx
    c.extend_from_slice(&[0x4f, 0x0f, 0x85]); // dec edi; jnz round
    let back = round as i64 - (c.len() + 4) as i64;
    c.extend_from_slice(&(back as i32).to_le_bytes());
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    c.extend_from_slice(&[0xb0, b'D', 0xee]); // mov al, 'D'; out dx, al
    c.extend_from_slice(&[0x31, 0xc0, 0xe6, 0xf4, 0xf4]); // xor eax, eax; out 0xf4, al; hlt
    c
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these two fds, owned by no one else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub(crate) fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// A tiny guest's VM: 64 MiB, the serial console, every VMM thread filtered.
pub(crate) fn pvh_spec(kernel: &Path, rootfs: &Path, cpus: u8) -> VmSpec {
    VmSpec {
        arch: contract::arch::Arch::X86_64,
        kernel: kernel.into(),
        memory_mib: 64,
        cpus,
        cmdline: "console=ttyS0".into(),
        devices: vec![
            Device::Block(Disk {
                path: rootfs.into(),
                read_only: true,
            }),
            Device::Rng,
        ],
        seccomp: true,
        start: Default::default(),
        measure_overhead: false,
    }
}

struct Outcome {
    result: Result<RunReport, Error>,
    console: Vec<u8>,
}

fn boot(code: &[u8], cpus: u8, input: &[u8]) -> Outcome {
    let kernel = file_with(&tiny_elf(code, LOAD_ADDR, true));
    let rootfs = file_with(&[b'Q'; 4096]);
    run_with(&pvh_spec(kernel.path(), rootfs.path(), cpus), input)
}

/// Runs `spec` with `input` on the console.
fn run_with(spec: &VmSpec, input: &[u8]) -> Outcome {
    let (in_rx, in_tx) = pipe();
    let (out_rx, out_tx) = pipe();
    std::fs::File::from(in_tx).write_all(input).unwrap();
    let console = ConsoleIo {
        input: in_rx,
        output: out_tx,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let result = run(spec, console, &StopSignal::new().unwrap());
    let mut out = Vec::new();
    // run() closed the write end: this reads to EOF.
    std::fs::File::from(out_rx).read_to_end(&mut out).unwrap();
    Outcome {
        result,
        console: out,
    }
}

#[test]
fn pvh_guest_runs_and_exits() {
    if !kvm_usable() {
        return;
    }
    let o = boot(PVH_GUEST, 1, b"Z");
    let report = o.result.unwrap();
    assert_eq!(report.exit, VmExit::Guest(b'Z'));
    assert_eq!(String::from_utf8_lossy(&o.console), "SV\nZ");
    assert!(report.init_reached.is_some());
}

/// The vsock device removes its socket file when dropped, which no VMM thread's filter
/// allows: the devices must outlive every VMM thread and go on the owner's thread.
#[test]
fn devices_are_dropped_by_the_owner_not_a_filtered_thread() {
    if !kvm_usable() {
        return;
    }
    let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
    let rootfs = file_with(&[b'Q'; 4096]);
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("agent.sock");
    let mut spec = pvh_spec(kernel.path(), rootfs.path(), 1);
    spec.devices.push(Device::AgentLink(socket.clone()));
    let (in_rx, in_tx) = pipe();
    let (out_rx, out_tx) = pipe();
    std::fs::File::from(in_tx).write_all(b"Z").unwrap();
    let console = ConsoleIo {
        input: in_rx,
        output: out_tx,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let report = run(&spec, console, &StopSignal::new().unwrap()).unwrap();
    drop(out_rx);
    assert_eq!(report.exit, VmExit::Guest(b'Z'));
    assert!(!socket.exists(), "the vsock device's socket is removed");
}

#[test]
fn secondary_vcpus_are_stopped_too() {
    if !kvm_usable() {
        return;
    }
    // vCPU 1 waits for INIT/SIPI in the kernel for the whole run; run() must still end.
    let o = boot(PVH_GUEST, 4, b"!");
    assert_eq!(o.result.unwrap().exit, VmExit::Guest(b'!'));
}

#[test]
fn triple_fault_is_a_reset() {
    if !kvm_usable() {
        return;
    }
    let o = boot(TRIPLE_FAULT_GUEST, 1, b"");
    let report = o.result.unwrap();
    assert_eq!(report.exit, VmExit::Reset);
    assert!(report.init_reached.is_none());
}

#[test]
fn virtio_block_read_round_trip() {
    if !kvm_usable() {
        return;
    }
    let o = boot(&virtio_block_guest(), 1, b"");
    assert_eq!(o.result.unwrap().exit, VmExit::Guest(0), "VIRTIO_BLK_S_OK");
    assert_eq!(o.console, b"Q", "sector 0 of the root image");
}

#[test]
fn keyboard_controller_reset_is_a_reset() {
    if !kvm_usable() {
        return;
    }
    assert_eq!(
        boot(KEYBOARD_RESET_GUEST, 1, b"").result.unwrap().exit,
        VmExit::Reset
    );
}

#[test]
fn boot_vcpu_starts_a_secondary_vcpu() {
    if !kvm_usable() {
        return;
    }
    let o = boot(SMP_GUEST, 2, b"");
    assert_eq!(o.result.unwrap().exit, VmExit::Guest(11));
    assert_eq!(o.console, b"A");
}

#[test]
fn guest_reads_the_host_time_from_the_rtc() {
    use crate::devices::legacy::cmos::DateTime;
    if !kvm_usable() {
        return;
    }
    let bcd = |b: u8| {
        assert!(b & 0x0f <= 9 && b >> 4 <= 9, "{b:#x} is not BCD");
        (b >> 4) * 10 + (b & 0x0f)
    };
    // A read that straddles a second shows as two different seconds: again, as Linux does.
    for _ in 0..3 {
        let before = DateTime::now();
        let o = boot(&cmos_guest(), 1, b"");
        let after = DateTime::now();
        assert_eq!(
            o.result.unwrap().exit,
            VmExit::Guest(0x80),
            "register D: time valid"
        );
        let [sec, min, hour, day, month, year, century, sec_again, binary_sec] = o.console[..]
        else {
            panic!("console: {:x?}", o.console);
        };
        let second = bcd(sec);
        if second != bcd(sec_again) {
            continue;
        }
        let time = |d: &DateTime| (d.year, d.month, d.day, d.hour, d.minute, d.second);
        let seen = (
            i64::from(bcd(century)) * 100 + i64::from(bcd(year)),
            bcd(month),
            bcd(day),
            bcd(hour),
            bcd(min),
            second,
        );
        assert!(
            time(&before) <= seen && seen <= time(&after),
            "{before:?} <= {seen:?} <= {after:?}"
        );
        assert!(
            binary_sec < 60 && (binary_sec + 60 - second) % 60 <= 2,
            "binary {binary_sec}, BCD {second}"
        );
        return;
    }
    panic!("the RTC's seconds changed during every read");
}

/// [`PVH_GUEST`] on 2 vCPUs (the second waits for INIT in the kernel), saved where it
/// marks its console ready, then restored twice from the one file: each restored VM goes
/// on from there (reads its console, echoes, exits with the byte) without booting again.
#[test]
fn a_saved_guest_goes_on_in_each_restored_vm() {
    if !kvm_usable() {
        return;
    }
    let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
    let rootfs = file_with(&[b'Q'; 4096]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vm.snapshot");
    let mut spec = pvh_spec(kernel.path(), rootfs.path(), 2);
    spec.start = Start::Save {
        to: file.clone(),
        at: contract::ports::CONSOLE_READY,
        identity: "tiny".into(),
    };
    let saved = run_with(&spec, b"");
    assert_eq!(saved.result.unwrap().exit, VmExit::Saved);
    assert_eq!(saved.console, b"SV\n");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert!(meta.len() > 64 << 20, "64 MiB of memory: {}", meta.len());
    assert!(
        meta.blocks() * 512 < 8 << 20,
        "mostly holes: {} bytes allocated",
        meta.blocks() * 512
    );

    let restore = |identity: &str| Start::Restore {
        from: file.clone(),
        identity: identity.into(),
    };
    for input in [b"Z", b"Y"] {
        spec.start = restore("tiny");
        let o = run_with(&spec, input);
        let report = o.result.unwrap();
        assert_eq!(report.exit, VmExit::Guest(input[0]));
        assert_eq!(o.console, input, "no boot again: only the echo");
        assert!(report.init_reached.is_some(), "the restore time");
    }

    spec.start = restore("another");
    let err = run_with(&spec, b"Z").result.unwrap_err();
    assert!(
        matches!(err, Error::Snapshot(snapshot::Error::Identity { .. })),
        "{err}"
    );
    spec.start = restore("tiny");
    spec.devices.pop();
    let err = run_with(&spec, b"Z").result.unwrap_err();
    assert!(
        matches!(err, Error::Snapshot(snapshot::Error::Devices { .. })),
        "{err}"
    );
}

/// Where [`COUNTING_GUEST`] counts, and the word the host sets to let it exit.
const COUNTER: u64 = 0x5_0000;
const GO: u64 = 0x5_0004;

/// Increments the word at [`COUNTER`] in a loop, without a VM exit, until the word at [`GO`]
/// is not zero; then exits with 9.
const COUNTING_GUEST: &[u8] = &[
    0xff, 0x05, 0x00, 0x00, 0x05, 0x00, // loop: inc dword [0x50000]
    0x83, 0x3d, 0x04, 0x00, 0x05, 0x00, 0x00, // cmp dword [0x50004], 0
    0x74, 0xf1, // je loop
    0xb0, 9, 0xe6, 0xf4, // mov al, 9; out 0xf4, al
    0xf4, // hlt
];

/// A started [`COUNTING_GUEST`] on 2 vCPUs (the second waits for INIT in the kernel), every
/// thread filtered, with the console's host ends.
fn counting_vmm(pause: Option<PauseLink>) -> (Vmm<Running>, OwnedFd, OwnedFd) {
    let kernel = file_with(&tiny_elf(COUNTING_GUEST, LOAD_ADDR, true));
    let rootfs = file_with(&[0; 4096]);
    let spec = pvh_spec(kernel.path(), rootfs.path(), 2);
    let (in_rx, in_tx) = pipe();
    let (out_rx, out_tx) = pipe();
    let console = ConsoleIo {
        input: in_rx,
        output: out_tx,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let vmm = Vmm::build(&spec, console, None, None, None)
        .unwrap()
        .start(&StopSignal::new().unwrap(), pause)
        .unwrap();
    (vmm, in_tx, out_rx)
}

fn counter(vmm: &Vmm<Running>) -> u32 {
    use vm_memory::{Bytes, GuestAddress};
    vmm.state._mem.read_obj(GuestAddress(COUNTER)).unwrap()
}

/// Waits until the guest has counted past `from`.
fn counts_past(vmm: &Vmm<Running>, from: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(vmm) == from {
        assert!(Instant::now() < deadline, "the guest does not count");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_paused_guest_holds_still_and_resumes() {
    use vm_memory::{Bytes, GuestAddress};
    if !kvm_usable() {
        return;
    }
    let (vmm, _input, _output) = counting_vmm(None);
    let control = vmm.control();
    counts_past(&vmm, 0);
    for _ in 0..3 {
        control.pause().unwrap();
        assert_eq!(control.state(), RunState::Paused);
        let held = counter(&vmm);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(counter(&vmm), held, "a paused guest made progress");
        control.resume().unwrap();
        assert_eq!(control.state(), RunState::Running);
        counts_past(&vmm, held);
    }
    vmm.state._mem.write_obj(1u32, GuestAddress(GO)).unwrap();
    assert_eq!(vmm.wait().unwrap().exit, VmExit::Guest(9));
    assert_eq!(control.state(), RunState::Stopping);
}

#[test]
fn the_hosts_pause_link_pauses_and_resumes_a_filtered_vmm() {
    use crate::vm::{pause_link, PauseError};
    use vm_memory::{Bytes, GuestAddress};
    if !kvm_usable() {
        return;
    }
    let (switch, link) = pause_link().unwrap();
    let (vmm, _input, _output) = counting_vmm(Some(link));
    counts_past(&vmm, 0);
    switch.pause().unwrap();
    let held = counter(&vmm);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(counter(&vmm), held, "a paused guest made progress");
    let refused = switch.pause().unwrap_err();
    assert!(matches!(refused, PauseError::Refused(_)), "{refused}");
    switch.resume().unwrap();
    counts_past(&vmm, held);
    // Its owner gone, the VM runs on.
    drop(switch);
    let now = counter(&vmm);
    counts_past(&vmm, now);
    vmm.state._mem.write_obj(1u32, GuestAddress(GO)).unwrap();
    assert_eq!(vmm.wait().unwrap().exit, VmExit::Guest(9));
}

#[test]
fn a_paused_guest_stops_and_a_dropped_one_is_torn_down() {
    if !kvm_usable() {
        return;
    }
    let (vmm, _input, _output) = counting_vmm(None);
    let control = vmm.control();
    counts_past(&vmm, 0);
    control.pause().unwrap();
    assert_eq!(control.resume(), Ok(()));
    assert_eq!(
        control.resume().unwrap_err().state,
        RunState::Running,
        "resumed twice"
    );
    control.pause().unwrap();
    assert_eq!(control.pause().unwrap_err().state, RunState::Paused);
    control.stop();
    assert_eq!(vmm.wait().unwrap().exit, VmExit::Stopped);
    assert_eq!(control.pause().unwrap_err().state, RunState::Stopping);

    // Dropped while running, or while paused: stopped and joined, not left behind.
    for pause in [false, true] {
        let (vmm, _input, _output) = counting_vmm(None);
        let control = vmm.control();
        counts_past(&vmm, 0);
        if pause {
            control.pause().unwrap();
        }
        drop(vmm);
        assert_eq!(control.state(), RunState::Stopping);
    }
}

/// Set in the child process of [`every_vmm_thread_is_filtered`].
const FILTER_CHECK_ENV: &str = "NODEOS_VM_FILTER_CHECK";

/// Each thread's name and seccomp mode (`Seccomp:` in its /proc status).
fn thread_modes() -> Vec<(String, String)> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let mode = status.lines().find_map(|l| l.strip_prefix("Seccomp:"))?;
            Some((name.trim().to_string(), mode.trim().to_string()))
        })
        .collect()
}

/// In a child process, alone: while a 2-vCPU guest waits for console input, every VMM
/// thread is in seccomp mode 2 (filter); the test's own threads, the caller of `run`
/// among them, are not.
#[test]
fn every_vmm_thread_is_filtered() {
    if std::env::var_os(FILTER_CHECK_ENV).is_none() {
        if kvm_usable() {
            let out = crate::seccomp::tests::run_child(
                "backend::kvm::tests::every_vmm_thread_is_filtered",
                (FILTER_CHECK_ENV, "1"),
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("1 passed"), "{stdout}");
        }
        return;
    }
    let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
    let rootfs = file_with(&[b'Q'; 4096]);
    let spec = pvh_spec(kernel.path(), rootfs.path(), 2);
    let (in_rx, in_tx) = pipe();
    let (_out_rx, out_tx) = pipe();
    let console = ConsoleIo {
        input: in_rx,
        output: out_tx,
        ready: ConsoleReady::default(),
        template: ConsoleReady::default(),
    };
    let vm = thread::Builder::new()
        .name("caller".into())
        .spawn(move || run(&spec, console, &StopSignal::new().unwrap()))
        .unwrap();
    let vmm_threads = [
        "vmm",
        "vcpu0",
        "vcpu1",
        "virtio",
        "host-control",
        "console-input",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let modes = loop {
        let modes = thread_modes();
        let filtered = |name: &&str| modes.iter().any(|(n, m)| n == name && m == "2");
        if vmm_threads.iter().all(filtered) || Instant::now() > deadline {
            break modes;
        }
        thread::sleep(Duration::from_millis(10));
    };
    std::fs::File::from(in_tx).write_all(b"Z").unwrap();
    assert_eq!(vm.join().unwrap().unwrap().exit, VmExit::Guest(b'Z'));
    for name in vmm_threads {
        assert!(
            modes.iter().any(|(n, m)| n == name && m == "2"),
            "{name}: {modes:?}"
        );
    }
    // KVM's own worker threads (kvm-nx-lpage-recovery) count as the vCPU's that started them.
    for (name, mode) in modes.iter().filter(|(n, _)| !n.starts_with("kvm-")) {
        let ours = vmm_threads.contains(&name.as_str());
        assert_eq!(
            mode == "2",
            ours,
            "{name} is in seccomp mode {mode}: {modes:?}"
        );
    }
}

#[test]
fn a_hostile_guest_cannot_crash_or_hang_the_vmm() {
    if !kvm_usable() {
        println!("skipped: /dev/kvm is not usable here");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(boot(&hostile_guest(), 1, b""));
    });
    let o = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("run() did not end within 60 s");
    eprintln!("hostile guest ran for {:?}", started.elapsed());
    assert_eq!(o.result.unwrap().exit, VmExit::Guest(0));
    assert_eq!(
        String::from_utf8_lossy(&o.console),
        "D",
        "the marker, alone"
    );
}

/// Boots a real kernel given by the environment and prints what happened: a manual check
/// for hosts whose KVM runs Linux (and for a KVM box). `NODEOS_KVM_KERNEL` (required),
/// `NODEOS_KVM_ROOTFS`, `NODEOS_KVM_UPPER`, `NODEOS_KVM_CMDLINE`, `NODEOS_KVM_CPUS`,
/// `NODEOS_KVM_MEM_MIB`, `NODEOS_KVM_INPUT` (bytes for the console).
#[test]
fn bad_inputs_are_clear_errors() {
    if !kvm_usable() {
        return;
    }
    let kernel = file_with(&tiny_elf(PVH_GUEST, LOAD_ADDR, true));
    let spec = |cpus, rootfs: &str| pvh_spec(kernel.path(), Path::new(rootfs), cpus);
    let console = || {
        let (rx, _) = pipe();
        let (_, tx) = pipe();
        ConsoleIo {
            input: rx,
            output: tx,
            ready: ConsoleReady::default(),
            template: ConsoleReady::default(),
        }
    };
    let err = run(
        &spec(1, "/nonexistent/rootfs.img"),
        console(),
        &StopSignal::new().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Disk(_)), "{err}");
    let err = run(
        &spec(0, "/dev/null"),
        console(),
        &StopSignal::new().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CpuCount { requested: 0, .. }), "{err}");
}
