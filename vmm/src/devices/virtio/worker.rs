//! The device thread: waits for queue notifications (the ioeventfds) and serves them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;
use crate::devices::{lock, Lifecycle};

const STOP_TOKEN: u64 = u64::MAX;
const PAUSE_TOKEN: u64 = u64::MAX - 1;
/// Tokens at and above this one are backends: `BACKEND_TOKEN + index into transports`.
const BACKEND_TOKEN: u64 = 1 << 32;

struct Source {
    transport: usize,
    queue: usize,
    evt: EventFd,
}

/// A device's backend descriptor and whether epoll watches it now.
struct Backend {
    fd: RawFd,
    watched: bool,
}

/// The device thread's state: what it watches, set up before its loop runs (and before its
/// seccomp filter, which allows no new descriptors, is installed).
pub struct Worker {
    sources: Vec<Source>,
    backends: Vec<Option<Backend>>,
    epoll: Epoll,
}

impl Worker {
    /// Watches the queues and backends of `transports`, and the VM's stop and pause.
    pub fn new(
        transports: &[Arc<Mutex<MmioTransport>>],
        lifecycle: &dyn Lifecycle,
    ) -> io::Result<Self> {
        let mut sources = Vec::new();
        let mut backends = Vec::new();
        for (index, t) in transports.iter().enumerate() {
            let t = lock(t);
            let evts = t
                .queue_evts()
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()?;
            for (queue, evt) in evts.into_iter().enumerate() {
                sources.push(Source {
                    transport: index,
                    queue,
                    evt,
                });
            }
            backends.push(t.backend_fd().map(|fd| Backend { fd, watched: false }));
        }

        let epoll = Epoll::new()?;
        for (evt, token) in [
            (lifecycle.stop_evt(), STOP_TOKEN),
            (lifecycle.pause_evt(), PAUSE_TOKEN),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        for (i, s) in sources.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                s.evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        // Backends start unwatched: a device has no work for them before the driver is ready,
        // and its activation notifies every queue, which arms them.
        for (i, b) in backends.iter().enumerate() {
            if let Some(b) = b {
                epoll.ctl(
                    ControlOperation::Add,
                    b.fd,
                    EpollEvent::new(EventSet::empty(), BACKEND_TOKEN + i as u64),
                )?;
            }
        }
        Ok(Worker {
            sources,
            backends,
            epoll,
        })
    }
}

/// Serves the queues and backends of `transports` (those `worker` was made for) until the VM
/// stops; parks, between two notifications, while it is paused.
pub fn run(
    worker: Worker,
    transports: &[Arc<Mutex<MmioTransport>>],
    lifecycle: &dyn Lifecycle,
) -> io::Result<()> {
    let Worker {
        sources,
        mut backends,
        epoll,
    } = worker;
    let mut events = vec![EpollEvent::default(); sources.len() + backends.len() + 2];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == STOP_TOKEN {
                return Ok(());
            }
            if token == PAUSE_TOKEN {
                // The rest of this batch is served once resumed (or seen to stop: a stop ends a
                // pause, and the pause event stays readable).
                lifecycle.park();
                continue;
            }
            let index = if token >= BACKEND_TOKEN {
                (token - BACKEND_TOKEN) as usize
            } else {
                let Some(s) = sources.get(token as usize) else {
                    continue;
                };
                // Consume the notification before serving, so one that arrives meanwhile is seen.
                let _ = s.evt.read();
                // The lock is dropped between passes: a long stream of requests must not keep
                // the vCPUs from the registers (the interrupt handler reads InterruptStatus).
                loop {
                    let more = lock(&transports[s.transport]).process_queue(s.queue);
                    if !more {
                        break;
                    }
                }
                s.transport
            };
            // After a notification, only for a parked backend (the driver may have given the
            // buffers it waits for); a watched one is served when epoll says it has work, not on
            // every transmit notification.
            let from_backend = token >= BACKEND_TOKEN;
            if let Some(Some(b)) = backends
                .get_mut(index)
                .filter(|b| from_backend || b.as_ref().is_some_and(|b| !b.watched))
            {
                let watch = lock(&transports[index]).process_backend();
                if watch != b.watched {
                    let set = if watch {
                        EventSet::IN
                    } else {
                        EventSet::empty()
                    };
                    epoll.ctl(
                        ControlOperation::Modify,
                        b.fd,
                        EpollEvent::new(set, BACKEND_TOKEN + index as u64),
                    )?;
                    b.watched = watch;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::IrqLine;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_util;
    use crate::kvm::VmControl;
    use crate::vm::VmExit;
    use std::thread;
    use std::time::Duration;

    fn rng_transports() -> Vec<Arc<Mutex<MmioTransport>>> {
        let t = MmioTransport::new(
            Box::new(Rng::new()),
            Arc::new(test_util::memory()),
            IrqLine::new().unwrap(),
            Arc::new(test_util::NoIoeventfd),
            0xd000_0000,
        )
        .unwrap();
        vec![Arc::new(Mutex::new(t))]
    }

    #[test]
    fn stops_when_asked() {
        let transports = rng_transports();
        let control = Arc::new(VmControl::new(1).unwrap());
        let (tr, c) = (transports.clone(), control.clone());
        let worker = Worker::new(&transports, &*control).unwrap();
        let h = thread::spawn(move || run(worker, &tr, &*c));
        // A notification for an inactive device is consumed and ignored.
        lock(&transports[0]).queue_evts()[0].write(1).unwrap();
        thread::sleep(Duration::from_millis(50));
        assert!(!h.is_finished());
        control.stop(Ok(VmExit::Stopped));
        h.join().unwrap().unwrap();
    }

    #[test]
    fn serves_nothing_while_paused() {
        let transports = rng_transports();
        let notify = lock(&transports[0]).queue_evts()[0].try_clone().unwrap();
        let control = Arc::new(VmControl::new(1).unwrap());
        let (tr, c) = (transports.clone(), control.clone());
        let worker = Worker::new(&transports, &*control).unwrap();
        let h = thread::spawn(move || run(worker, &tr, &*c));
        control.pause().unwrap();
        notify.write(1).unwrap();
        thread::sleep(Duration::from_millis(50));
        assert_eq!(notify.read().unwrap(), 1, "the notification waits");
        notify.write(1).unwrap();
        control.resume().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while notify.read().is_ok() {
            notify.write(1).unwrap();
            assert!(
                std::time::Instant::now() < deadline,
                "not served once resumed"
            );
            thread::sleep(Duration::from_millis(5));
        }
        // A stop ends a pause, and the device thread with it.
        control.pause().unwrap();
        control.stop(Ok(VmExit::Stopped));
        h.join().unwrap().unwrap();
    }

    /// CPU time `thread` has used.
    fn cpu_time<T>(thread: &thread::JoinHandle<T>) -> Duration {
        use std::os::unix::thread::JoinHandleExt;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is not joined yet, so its pthread_t is valid; one clockid_t is
        // written into `clock`.
        let rc = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
        assert_eq!(rc, 0);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `ts`.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Not a test but the measurement behind the choice of event loop (see the module doc): a
    /// driver sends rng requests of one 16-byte buffer, one at a time, each notified through
    /// the queue's eventfd and awaited on the interrupt's; prints, for each run and as medians,
    /// the round trip and the device thread's CPU time per request.
    /// `cargo test -p nodeos-vmm --release --lib worker::tests::round_trip -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn round_trip() {
        use crate::devices::virtio::test_util::QUEUE_SIZE;
        use std::os::fd::AsRawFd;
        use std::time::Instant;
        use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
        use vm_memory::{Bytes, GuestAddress};

        const WARMUP: u16 = 1_000;
        const REQUESTS: u16 = 20_000;
        const RUNS: usize = 9;
        let (desc, avail, used, buf) = (0u64, 0x1000u64, 0x2000u64, 0x1_0000u64);
        let (mut trips, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let mem = Arc::new(test_util::memory());
            let irq = IrqLine::new().unwrap();
            let interrupt = irq.0.try_clone().unwrap();
            let mut t = MmioTransport::new(
                Box::new(Rng::new()),
                mem.clone(),
                irq,
                Arc::new(test_util::NoIoeventfd),
                0xd000_0000,
            )
            .unwrap();
            test_util::configure(&mut t, &[(QUEUE_SIZE, desc, avail, used)]);
            // Descriptor 0, given with every request: addr, len, flags (next unused).
            mem.write_obj(buf, GuestAddress(desc)).unwrap();
            mem.write_obj(16u32, GuestAddress(desc + 8)).unwrap();
            mem.write_obj(VRING_DESC_F_WRITE as u16, GuestAddress(desc + 12))
                .unwrap();
            test_util::driver_ok(&mut t);
            let notify = t.queue_evts()[0].try_clone().unwrap();
            let transports = vec![Arc::new(Mutex::new(t))];
            let control = Arc::new(VmControl::new(1).unwrap());
            let (tr, c) = (transports.clone(), control.clone());
            let worker = Worker::new(&transports, &*control).unwrap();
            let h = thread::spawn(move || run(worker, &tr, &*c));

            let request = |i: u16| {
                let slot = u64::from(i.wrapping_sub(1) % QUEUE_SIZE);
                mem.write_obj(0u16, GuestAddress(avail + 4 + 2 * slot))
                    .unwrap();
                mem.write_obj(i, GuestAddress(avail + 2)).unwrap();
                notify.write(1).unwrap();
                crate::poll::first_readable(&[interrupt.as_raw_fd()], None);
                interrupt.read().unwrap();
                assert_eq!(mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), i);
            };
            (1..=WARMUP).for_each(request);
            let (start, cpu) = (Instant::now(), cpu_time(&h));
            (WARMUP + 1..=WARMUP + REQUESTS).for_each(request);
            let trip = start.elapsed() / u32::from(REQUESTS);
            let cpu = (cpu_time(&h) - cpu) / u32::from(REQUESTS);
            println!("round trip {trip:?}, device thread CPU {cpu:?} per request");
            trips.push(trip);
            cpus.push(cpu);
            control.stop(Ok(VmExit::Stopped));
            h.join().unwrap().unwrap();
        }
        trips.sort();
        cpus.sort();
        println!(
            "median of {RUNS} runs of {REQUESTS}: round trip {:?}, device thread CPU {:?}",
            trips[RUNS / 2],
            cpus[RUNS / 2]
        );
    }
}
