//! The device thread: waits for queue notifications (the ioeventfds) and serves them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;
use crate::devices::lock;

const STOP_TOKEN: u64 = u64::MAX;
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
    /// Watches the queues and backends of `transports`, and `stop` (never read, so every
    /// thread watching it sees it).
    pub fn new(transports: &[Arc<Mutex<MmioTransport>>], stop: &EventFd) -> io::Result<Self> {
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
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
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

/// Serves the queues and backends of `transports` (those `worker` was made for) until its
/// `stop` is signalled.
pub fn run(worker: Worker, transports: &[Arc<Mutex<MmioTransport>>]) -> io::Result<()> {
    let Worker {
        sources,
        mut backends,
        epoll,
    } = worker;
    let mut events = vec![EpollEvent::default(); sources.len() + backends.len() + 1];
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
    use std::thread;
    use std::time::Duration;

    #[test]
    fn stops_when_asked() {
        let t = MmioTransport::new(
            Box::new(Rng::new()),
            Arc::new(test_util::memory()),
            IrqLine::new().unwrap(),
            Arc::new(test_util::NoIoeventfd),
            0xd000_0000,
        )
        .unwrap();
        let transports = vec![Arc::new(Mutex::new(t))];
        let stop = EventFd::new(0).unwrap();
        let stop2 = stop.try_clone().unwrap();
        let tr = transports.clone();
        let worker = Worker::new(&transports, &stop2).unwrap();
        let h = thread::spawn(move || run(worker, &tr));
        // A notification for an inactive device is consumed and ignored.
        lock(&transports[0]).queue_evts()[0].write(1).unwrap();
        thread::sleep(Duration::from_millis(50));
        assert!(!h.is_finished());
        stop.write(1).unwrap();
        h.join().unwrap().unwrap();
    }
}
