//! virtio-blk over a host file: reads, writes (refused on a read-only disk), flush, and the
//! device ID. Every request is checked against the disk's size; a malformed descriptor chain
//! ends its request with an error status where one can be written, and is returned unused
//! otherwise. The device keeps serving the queue either way.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{DescriptorChain, Reader, Writer};

use super::{read_config_bytes, VirtioDevice, VirtioState, RING_FEATURES, VIRTIO_F_VERSION_1};
use crate::devices::persist::RestoreError;
use crate::memory::GuestMemory;

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: the queue minus the header and status descriptors.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The header every request starts with: type, reserved, sector.
const HEADER_SIZE: usize = 16;
/// Disk I/O goes through a buffer of this size, so a request of any size costs bounded memory.
const IO_CHUNK: usize = 128 << 10;
const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

#[derive(Debug, thiserror::Error)]
#[error("cannot open disk image {path}")]
pub struct OpenError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: io::Error,
}

pub struct Block {
    disk: File,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; ID_BYTES],
    config: [u8; 24],
    buf: Vec<u8>,
}

impl Block {
    /// Opens `path` as a disk; `id` (up to 20 bytes) is what GET_ID reports.
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, OpenError> {
        let err = |source| OpenError {
            path: path.to_path_buf(),
            source,
        };
        let disk = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(err)?;
        let len = disk.metadata().map_err(err)?.len();
        Ok(Self::new(disk, len, read_only, id))
    }

    fn new(disk: File, len: u64, read_only: bool, id: &str) -> Self {
        let capacity_sectors = len / SECTOR_SIZE;
        let mut config = [0u8; 24];
        config[0..8].copy_from_slice(&capacity_sectors.to_le_bytes()); // capacity
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Block {
            disk,
            read_only,
            capacity_sectors,
            id: id_bytes,
            config,
            buf: vec![0; IO_CHUNK],
        }
    }

    fn execute(
        &mut self,
        reader: &mut Reader<'_>,
        writer: &mut Writer<'_>,
        data_len: usize,
    ) -> u32 {
        let mut header = [0u8; HEADER_SIZE];
        if reader.read_exact(&mut header).is_err() {
            tracing::debug!("virtio-blk: request header shorter than {HEADER_SIZE} bytes");
            return VIRTIO_BLK_S_IOERR;
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
        match kind {
            VIRTIO_BLK_T_IN => {
                // The data of a read is device-writable: nothing readable may follow the header.
                if reader.available_bytes() != 0 {
                    return VIRTIO_BLK_S_IOERR;
                }
                self.read(sector, data_len, writer)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only || data_len != 0 {
                    return VIRTIO_BLK_S_IOERR;
                }
                self.write(sector, reader)
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only {
                    return VIRTIO_BLK_S_OK;
                }
                match self.disk.sync_data() {
                    Ok(()) => VIRTIO_BLK_S_OK,
                    Err(e) => {
                        tracing::warn!("virtio-blk: flush failed: {e}");
                        VIRTIO_BLK_S_IOERR
                    }
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data_len.min(ID_BYTES);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => VIRTIO_BLK_S_OK,
                    Err(_) => VIRTIO_BLK_S_IOERR,
                }
            }
            _ => VIRTIO_BLK_S_UNSUPP,
        }
    }

    /// The byte offset of `len` bytes at `sector`, if that range is a whole number of sectors
    /// inside the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let len = len as u64;
        if !len.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let end_sector = sector.checked_add(len / SECTOR_SIZE)?;
        if end_sector > self.capacity_sectors {
            return None;
        }
        // Inside the disk, so no overflow (fuzzing found the product computed before this
        // check, an overflow where arithmetic is checked).
        Some(sector * SECTOR_SIZE)
    }

    fn read(&mut self, sector: u64, len: usize, writer: &mut Writer<'_>) -> u32 {
        let Some(mut offset) = self.range(sector, len) else {
            tracing::debug!("virtio-blk: read of {len} bytes at sector {sector} outside the disk");
            return VIRTIO_BLK_S_IOERR;
        };
        let mut left = len;
        while left > 0 {
            let n = left.min(IO_CHUNK);
            let chunk = &mut self.buf[..n];
            if let Err(e) = self.disk.read_exact_at(chunk, offset) {
                tracing::warn!("virtio-blk: read at {offset} failed: {e}");
                return VIRTIO_BLK_S_IOERR;
            }
            if writer.write_all(chunk).is_err() {
                return VIRTIO_BLK_S_IOERR;
            }
            offset += n as u64;
            left -= n;
        }
        VIRTIO_BLK_S_OK
    }

    fn write(&mut self, sector: u64, reader: &mut Reader<'_>) -> u32 {
        let len = reader.available_bytes();
        let Some(mut offset) = self.range(sector, len) else {
            tracing::debug!("virtio-blk: write of {len} bytes at sector {sector} outside the disk");
            return VIRTIO_BLK_S_IOERR;
        };
        let mut left = len;
        while left > 0 {
            let n = left.min(IO_CHUNK);
            let chunk = &mut self.buf[..n];
            if reader.read_exact(chunk).is_err() {
                return VIRTIO_BLK_S_IOERR;
            }
            if let Err(e) = self.disk.write_all_at(chunk, offset) {
                tracing::warn!("virtio-blk: write at {offset} failed: {e}");
                return VIRTIO_BLK_S_IOERR;
            }
            offset += n as u64;
            left -= n;
        }
        VIRTIO_BLK_S_OK
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    /// FLUSH whether read-only or not (a no-op then): a snapshot's disk slot, negotiated
    /// writable, may be restored read-only, and a restore refuses a device that no longer
    /// offers what its driver took.
    fn features(&self) -> u64 {
        let f = VIRTIO_F_VERSION_1
            | RING_FEATURES
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_FLUSH);
        match self.read_only {
            true => f | (1 << VIRTIO_BLK_F_RO),
            false => f,
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// Nothing beyond the transport's: a request is served whole while the VM runs.
    fn save_state(&self) -> Option<VirtioState> {
        Some(VirtioState::Block)
    }

    /// The disk stays this device's file, with its own capacity: a driver that probes the
    /// device again (after a reset) sees the new size.
    fn restore_state(&mut self, state: &VirtioState) -> Result<(), RestoreError> {
        match state {
            VirtioState::Block => Ok(()),
            other => Err(RestoreError::DeviceKind {
                saved: other.kind(),
                device: self.device_type(),
            }),
        }
    }

    /// Serves one request; returns the number of bytes written into the chain.
    fn serve(
        &mut self,
        _index: usize,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> u32 {
        let Ok(mut writer) = Writer::new(mem, chain.clone()) else {
            tracing::debug!("virtio-blk: writable descriptors outside guest memory");
            return 0;
        };
        let Some(data_len) = writer.available_bytes().checked_sub(1) else {
            tracing::debug!("virtio-blk: request without a status byte");
            return 0;
        };
        let Ok(mut status_writer) = writer.split_at(data_len) else {
            return 0;
        };
        let status = match Reader::new(mem, chain) {
            Ok(mut reader) => self.execute(&mut reader, &mut writer, data_len),
            Err(_) => {
                tracing::debug!("virtio-blk: readable descriptors outside guest memory");
                VIRTIO_BLK_S_IOERR
            }
        };
        if status_writer.write_all(&[status as u8]).is_err() {
            return 0;
        }
        // At most the chain's writable length, which fits in a u32.
        (writer.bytes_written() + 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_util::{self, add_chain, used, used_idx, Desc};
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const HDR: u64 = 0x1_0000;
    const DATA: u64 = 0x2_0000;
    const STATUS: u64 = 0x3_0000;
    const DISK_SECTORS: u64 = 64;
    const STATUS_UNTOUCHED: u8 = 0xee;

    struct Setup {
        mem: GuestMemory,
        disk: tempfile::NamedTempFile,
    }

    fn setup() -> Setup {
        let mut disk = tempfile::NamedTempFile::new().unwrap();
        let contents: Vec<u8> = (0..DISK_SECTORS * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8)
            .collect();
        disk.write_all(&contents).unwrap();
        Setup {
            mem: test_util::memory(),
            disk,
        }
    }

    fn header(mem: &GuestMemory, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        mem.write_obj(STATUS_UNTOUCHED, GuestAddress(STATUS))
            .unwrap();
    }

    /// Runs one chain through a fresh device; returns (used len, status byte).
    fn run(s: &Setup, read_only: bool, descs: &[Desc]) -> (u32, u8) {
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        add_chain(&vq, 0, descs);
        serve_one(s, read_only, &vq)
    }

    /// Serves the one chain in `vq` with a fresh device; returns (used len, status byte).
    fn serve_one(s: &Setup, read_only: bool, vq: &MockSplitQueue<'_, GuestMemory>) -> (u32, u8) {
        let mut q: Queue = vq.create_queue().unwrap();
        let mut dev = Block::open(s.disk.path(), read_only, "nodeos-test").unwrap();
        assert!(dev.process_queue(0, &mut q, &s.mem).unwrap());
        assert_eq!(used_idx(vq), 1);
        let (head, len) = used(vq, 0);
        assert_eq!(head, 0);
        (len, s.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn ok_status() -> u8 {
        VIRTIO_BLK_S_OK as u8
    }
    fn ioerr() -> u8 {
        VIRTIO_BLK_S_IOERR as u8
    }

    #[test]
    fn config_and_features() {
        let s = setup();
        let ro = Block::open(s.disk.path(), true, "x").unwrap();
        let mut cap = [0u8; 8];
        ro.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
        let mut seg = [0u8; 4];
        ro.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
        assert_ne!(ro.features() & (1 << VIRTIO_BLK_F_RO), 0);
        let rw = Block::open(s.disk.path(), false, "x").unwrap();
        assert_eq!(rw.features() & (1 << VIRTIO_BLK_F_RO), 0);
        // What a writable slot's driver took, a read-only one offers too (but RO).
        assert_eq!(rw.features() & !ro.features(), 0);
        assert_ne!(rw.features() & VIRTIO_F_VERSION_1, 0);
    }

    #[test]
    fn read_sectors() {
        let s = setup();
        header(&s.mem, VIRTIO_BLK_T_IN, 3);
        let r = run(
            &s,
            true,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        assert_eq!(r, (1025, ok_status()));
        let mut data = [0u8; 1024];
        s.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
        assert!(data[..512].iter().all(|b| *b == 3) && data[512..].iter().all(|b| *b == 4));
    }

    #[test]
    fn write_then_flush() {
        let s = setup();
        s.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        header(&s.mem, VIRTIO_BLK_T_OUT, DISK_SECTORS - 1);
        let r = run(
            &s,
            false,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!(r, (1, ok_status()));
        let mut back = [0u8; 512];
        s.disk
            .as_file()
            .read_exact_at(&mut back, (DISK_SECTORS - 1) * SECTOR_SIZE)
            .unwrap();
        assert_eq!(back, [0xab; 512]);

        header(&s.mem, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            run(&s, false, &[(HDR, 16, false), (STATUS, 1, true)]),
            (1, ok_status())
        );
    }

    #[test]
    fn write_to_read_only_disk_fails() {
        let s = setup();
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        let r = run(
            &s,
            true,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!(r, (1, ioerr()));
        let mut back = [0u8; 1];
        s.disk.as_file().read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, [0], "disk untouched");
    }

    #[test]
    fn out_of_bounds_sectors_fail() {
        let s = setup();
        for (sector, len) in [
            (DISK_SECTORS, 512),
            (DISK_SECTORS - 1, 1024),
            (u64::MAX, 512),
            (u64::MAX / 512, 512),
            (u64::MAX / 256, 512),
        ] {
            header(&s.mem, VIRTIO_BLK_T_IN, sector);
            let r = run(
                &s,
                true,
                &[(HDR, 16, false), (DATA, len, true), (STATUS, 1, true)],
            );
            assert_eq!(r.1, ioerr(), "sector {sector}, {len} bytes");
            header(&s.mem, VIRTIO_BLK_T_OUT, sector);
            let r = run(
                &s,
                false,
                &[(HDR, 16, false), (DATA, len, false), (STATUS, 1, true)],
            );
            assert_eq!(r.1, ioerr(), "write at sector {sector}");
        }
        // Not a whole number of sectors.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let r = run(
            &s,
            true,
            &[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)],
        );
        assert_eq!(r.1, ioerr());
    }

    #[test]
    fn get_id_and_unsupported() {
        let s = setup();
        header(&s.mem, VIRTIO_BLK_T_GET_ID, 0);
        let r = run(
            &s,
            true,
            &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
        );
        assert_eq!(r, (21, ok_status()));
        let mut id = [0u8; 20];
        s.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..12], b"nodeos-test\0");

        header(&s.mem, 11 /* DISCARD */, 0);
        let r = run(&s, false, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!(r, (1, VIRTIO_BLK_S_UNSUPP as u8));
    }

    #[test]
    fn malformed_chains() {
        let s = setup();
        // Header too short: an error status.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(&s, true, &[(HDR, 8, false), (STATUS, 1, true)]),
            (1, ioerr())
        );
        // Data of a read in a device-readable descriptor (wrong direction).
        assert_eq!(
            run(
                &s,
                true,
                &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]
            ),
            (1, ioerr())
        );
        // Data of a write in a device-writable descriptor.
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            run(
                &s,
                false,
                &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]
            )
            .1,
            ioerr()
        );
        // No writable byte at all: returned unused, nothing written.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run(&s, true, &[(HDR, 16, false)]), (0, STATUS_UNTOUCHED));
        // A zero-length status descriptor: the read's data is no longer a whole sector.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let r = run(
            &s,
            true,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 0, true)],
        );
        assert_eq!(r.0, 1);
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(DATA + 511)).unwrap(),
            ioerr()
        );
        // Header outside guest memory: an error status still gets through.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let beyond = test_util::MEM_SIZE as u64 + 0x1000;
        assert_eq!(
            run(&s, true, &[(beyond, 16, false), (STATUS, 1, true)]),
            (1, ioerr())
        );
        // Status outside guest memory: returned unused.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(&s, true, &[(HDR, 16, false), (beyond, 1, true)]),
            (0, STATUS_UNTOUCHED)
        );
        // A buffer that runs off the end of guest memory.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let r = run(
            &s,
            true,
            &[
                (HDR, 16, false),
                (test_util::MEM_SIZE as u64 - 256, 512, true),
                (STATUS, 1, true),
            ],
        );
        assert_eq!(r, (0, STATUS_UNTOUCHED));
        // A length beyond guest memory is refused, not allocated.
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        let r = run(
            &s,
            false,
            &[
                (HDR, 16, false),
                (DATA, 0x8000_0000, false),
                (STATUS, 1, true),
            ],
        );
        assert_eq!(r, (1, ioerr()));
        // A chain over 4 GiB in total is cut short by the queue: no status byte is left.
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        let r = run(
            &s,
            false,
            &[(HDR, 16, false), (DATA, u32::MAX, false), (STATUS, 1, true)],
        );
        assert_eq!(r, (0, STATUS_UNTOUCHED));
    }

    #[test]
    fn keeps_serving_after_bad_requests() {
        let s = setup();
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        header(&s.mem, VIRTIO_BLK_T_IN, 1);
        // A chain with no descriptors' worth of status, then a good one.
        add_chain(&vq, 0, &[(HDR, 16, false)]);
        add_chain(
            &vq,
            1,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
        );
        let mut q: Queue = vq.create_queue().unwrap();
        let mut dev = Block::open(s.disk.path(), true, "x").unwrap();
        assert!(dev.process_queue(0, &mut q, &s.mem).unwrap());
        assert_eq!(used_idx(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 513));
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            ok_status()
        );
    }

    #[test]
    fn descriptor_loop_and_bad_head_do_not_hang() {
        let s = setup();
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        // Descriptor 0 points to itself forever.
        let d = RawDescriptor::from(Descriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 0));
        vq.desc_table().store(0, d).unwrap();
        let avail = vq.avail_addr();
        // Avail ring: head 0, then head 999 (beyond the queue).
        s.mem.write_obj(0u16, avail.unchecked_add(4)).unwrap();
        s.mem.write_obj(999u16, avail.unchecked_add(6)).unwrap();
        s.mem.write_obj(2u16, avail.unchecked_add(2)).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut dev = Block::open(s.disk.path(), true, "x").unwrap();
        dev.process_queue(0, &mut q, &s.mem).unwrap();
        // The looping chain is returned (no writable byte), the bad head is dropped.
        assert_eq!(used_idx(&vq), 1);
        assert_eq!(used(&vq, 0), (0, 0));
    }

    #[test]
    fn broken_avail_index_is_a_queue_error() {
        let s = setup();
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        // The driver claims more available buffers than the queue holds.
        s.mem
            .write_obj(100u16, vq.avail_addr().unchecked_add(2))
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut dev = Block::open(s.disk.path(), true, "x").unwrap();
        assert!(dev.process_queue(0, &mut q, &s.mem).is_err());
    }

    /// Runs a request whose only ring descriptor points to an indirect table of `table`
    /// (written at `TABLE`) that is `table_len` bytes long.
    fn run_indirect(s: &Setup, table: &[RawDescriptor], table_len: u32) -> (u32, u8) {
        for (i, d) in table.iter().enumerate() {
            s.mem
                .write_obj(*d, GuestAddress(TABLE + 16 * i as u64))
                .unwrap();
        }
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        let head = Descriptor::new(TABLE, table_len, VRING_DESC_F_INDIRECT as u16, 0);
        vq.add_desc_chains(&[RawDescriptor::from(head)], 0).unwrap();
        serve_one(s, true, &vq)
    }

    const TABLE: u64 = 0x4_0000;

    fn raw(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn indirect_descriptor_table() {
        let s = setup();
        header(&s.mem, VIRTIO_BLK_T_IN, 5);
        let table = [
            raw(HDR, 16, VRING_DESC_F_NEXT, 1),
            raw(DATA, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2),
            raw(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        assert_eq!(run_indirect(&s, &table, 48), (513, ok_status()));
        let mut data = [0u8; 512];
        s.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
        assert!(data.iter().all(|b| *b == 5));
    }

    #[test]
    fn malformed_indirect_tables() {
        let s = setup();
        let good = [
            raw(HDR, 16, VRING_DESC_F_NEXT, 1),
            raw(DATA, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2),
            raw(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        // A table length that is not a whole number of descriptors.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &good, 40), (0, STATUS_UNTOUCHED));
        // A table shorter than its chain: the chain ends at the table's end, so the data's
        // last byte is taken for the status and the read is not whole sectors.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &good, 32), (1, STATUS_UNTOUCHED));
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(DATA + 511)).unwrap(),
            ioerr()
        );
        // An indirect descriptor inside an indirect table.
        let nested = [
            raw(HDR, 16, VRING_DESC_F_NEXT, 1),
            raw(TABLE, 48, VRING_DESC_F_INDIRECT, 0),
        ];
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &nested, 32), (0, STATUS_UNTOUCHED));
        // A loop inside the table ends after as many descriptors as the table holds.
        let looping = [raw(HDR, 16, VRING_DESC_F_NEXT, 0)];
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &looping, 16), (0, STATUS_UNTOUCHED));
        // A next index beyond the table.
        let beyond = [raw(HDR, 16, VRING_DESC_F_NEXT, 7), good[2]];
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &beyond, 32), (0, STATUS_UNTOUCHED));
        // A table outside guest memory, or of a size past what a queue may hold.
        let far = test_util::MEM_SIZE as u64 + 0x1000;
        let vq = MockSplitQueue::new(&s.mem, test_util::QUEUE_SIZE);
        let head = Descriptor::new(far, 48, VRING_DESC_F_INDIRECT as u16, 0);
        vq.add_desc_chains(&[RawDescriptor::from(head)], 0).unwrap();
        assert_eq!(serve_one(&s, true, &vq), (0, STATUS_UNTOUCHED));
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(run_indirect(&s, &good, 0x10_0000), (0, STATUS_UNTOUCHED));
    }

    /// A disk restored from a snapshot on another, larger file: the driver that resets the
    /// device and initializes it again (an unbind and bind in the guest) reads the new size,
    /// and the device serves the new file.
    #[test]
    fn a_restored_disk_is_the_new_file_after_a_reset() {
        use std::sync::Arc;

        use crate::devices::bus::BusDevice;
        use crate::devices::legacy::IrqLine;
        use crate::devices::persist::{through_json, Persist};
        use crate::devices::virtio::mmio::{MmioTransport, TransportArgs};
        use crate::devices::virtio::test_util::NoIoeventfd;
        use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_STATUS};

        let s = setup();
        let mem = Arc::new(s.mem.clone());
        let layout = [(test_util::QUEUE_SIZE, 0, 0x1000, 0x2000)];
        let transport = |device: Block| {
            MmioTransport::new(
                Box::new(device),
                mem.clone(),
                IrqLine::new().unwrap(),
                Arc::new(NoIoeventfd),
                0xd000_0000,
            )
            .unwrap()
        };
        let mut old = transport(Block::open(s.disk.path(), false, "old").unwrap());
        test_util::configure(&mut old, &layout);
        test_util::driver_ok(&mut old);
        let saved = through_json(&old.save());
        let device_state = through_json(&old.device_state().unwrap());

        let bigger = tempfile::NamedTempFile::new().unwrap();
        bigger
            .as_file()
            .set_len(4 * DISK_SECTORS * SECTOR_SIZE)
            .unwrap();
        let mut device = Block::open(bigger.path(), false, "new").unwrap();
        device.restore_state(&device_state).unwrap();
        let args = TransportArgs {
            device: Box::new(device),
            mem: mem.clone(),
            irq: IrqLine::new().unwrap(),
            notify: Arc::new(NoIoeventfd),
            base: 0xd000_0000,
        };
        let mut t = MmioTransport::restore(args, &saved).unwrap();
        assert!(t.is_active(), "live again as saved");
        t.write(u64::from(VIRTIO_MMIO_STATUS), &0u32.to_le_bytes());
        assert!(!t.is_active());
        test_util::configure(&mut t, &layout);
        test_util::driver_ok(&mut t);
        let mut capacity = [0u8; 8];
        t.read(u64::from(VIRTIO_MMIO_CONFIG), &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 4 * DISK_SECTORS);
        assert!(Block::open(s.disk.path(), false, "x")
            .unwrap()
            .restore_state(&VirtioState::Rng)
            .is_err());
    }
}
