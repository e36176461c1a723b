//! The flattened device tree an arm64 guest boots with: what the machine has and where
//! (memory, vCPUs, the GIC, the architected timer, PSCI, the console UART, the RTC, each
//! virtio-mmio device), and the kernel command line. Written with rust-vmm's `vm-fdt`.
//!
//! Interrupts are GIC SPIs: an irqfd's GSI `n` raises SPI `n` (KVM's default routing on arm64),
//! which the tree names `<GIC_SPI n flags>`.

use vm_fdt::{FdtWriter, FdtWriterResult};

use super::cmdline::MmioSlot;

/// Interrupt specifier cells (the GIC binding): SPI or PPI, number, flags.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The architected timer's PPIs: secure and non-secure physical, virtual, hypervisor.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// The GIC maintenance interrupt's PPI.
const GIC_MAINTENANCE_PPI: u32 = 9;

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
/// The APB clock the PL031 (an AMBA primecell) is probed with; any rate does.
const APB_CLOCK_HZ: u32 = 24_000_000;
/// The 16550's input clock (the 8250 driver needs one; the emulated UART ignores baud rates).
const UART_CLOCK_HZ: u32 = 1_843_200;

/// The in-kernel interrupt controller's register frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    V3 {
        dist: (u64, u64),
        /// All vCPUs' redistributors, one region.
        redist: (u64, u64),
    },
    V2 {
        dist: (u64, u64),
        cpu: (u64, u64),
    },
}

/// What the tree describes.
#[derive(Clone, Debug)]
pub struct Machine<'a> {
    pub cmdline: &'a str,
    /// Guest RAM: base and size.
    pub memory: (u64, u64),
    /// Each vCPU's MPIDR (its `reg` in the tree).
    pub mpidrs: &'a [u64],
    pub gic: Gic,
    /// Each device's registers and SPI (= its irqfd's GSI).
    pub serial: MmioSlot,
    pub rtc: MmioSlot,
    pub virtio: &'a [MmioSlot],
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the device tree")]
pub struct Error(#[source] vm_fdt::Error);

/// The device tree blob for `machine`.
pub fn build(machine: &Machine) -> Result<Vec<u8>, Error> {
    write(machine).map_err(Error)
}

fn write(m: &Machine) -> FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let serial_node = format!("uart@{:x}", m.serial.base);
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", m.cmdline)?;
    fdt.property_string("stdout-path", &format!("/{serial_node}"))?;
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", m.memory.0))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[m.memory.0, m.memory.1])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for (i, mpidr) in m.mpidrs.iter().enumerate() {
        let cpu = fdt.begin_node(&format!("cpu@{i:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        // The affinity fields of MPIDR_EL1 (Aff3 above bit 31, Aff2..Aff0 below 24).
        fdt.property_u64("reg", mpidr & 0xff_00ff_ffff)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string("compatible", "arm,psci-0.2")?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    write_gic(&mut fdt, m.gic)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, IRQ_TYPE_LEVEL_HIGH])
        .collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.end_node(timer)?;

    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;

    let serial = fdt.begin_node(&serial_node)?;
    fdt.property_string("compatible", "ns16550a")?;
    reg_and_irq(&mut fdt, m.serial)?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    fdt.end_node(serial)?;

    let rtc = fdt.begin_node(&format!("rtc@{:x}", m.rtc.base))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl031".to_string(), "arm,primecell".to_string()],
    )?;
    reg_and_irq(&mut fdt, m.rtc)?;
    fdt.property_u32("clocks", CLOCK_PHANDLE)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.end_node(rtc)?;

    for device in m.virtio {
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", device.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        reg_and_irq(&mut fdt, *device)?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

fn write_gic(fdt: &mut FdtWriter, gic: Gic) -> FdtWriterResult<()> {
    let (compatible, dist, second) = match gic {
        Gic::V3 { dist, redist } => ("arm,gic-v3", dist, redist),
        Gic::V2 { dist, cpu } => ("arm,cortex-a15-gic", dist, cpu),
    };
    let node = fdt.begin_node(&format!("intc@{:x}", dist.0))?;
    fdt.property_string("compatible", compatible)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_array_u64("reg", &[dist.0, dist.1, second.0, second.1])?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_array_u32(
        "interrupts",
        &[GIC_PPI, GIC_MAINTENANCE_PPI, IRQ_TYPE_LEVEL_HIGH],
    )?;
    fdt.end_node(node)
}

/// `reg` and `interrupts` of a device: an edge on its SPI (an irqfd write is one).
fn reg_and_irq(fdt: &mut FdtWriter, device: MmioSlot) -> FdtWriterResult<()> {
    fdt.property_array_u64("reg", &[device.base, device.size])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, device.irq, IRQ_TYPE_EDGE_RISING])
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn machine(virtio: &[MmioSlot], gic: Gic) -> Vec<u8> {
        build(&Machine {
            cmdline: "panic=-1 root=/dev/vda",
            memory: (0x8000_0000, 256 << 20),
            mpidrs: &[0x8000_0000, 0x8000_0001],
            gic,
            serial: MmioSlot {
                base: 0x4000_0000,
                size: 0x1000,
                irq: 1,
            },
            rtc: MmioSlot {
                base: 0x4000_1000,
                size: 0x1000,
                irq: 2,
            },
            virtio,
        })
        .unwrap()
    }

    /// The blob as source, through the device tree compiler (which also checks it).
    fn decompile(blob: &[u8]) -> String {
        let dtc = crate::host_packages::ensure("dtc", "device-tree-compiler").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.dtb");
        std::fs::write(&path, blob).unwrap();
        let out = Command::new(dtc)
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_tree_describes_the_machine() {
        let virtio = [
            MmioSlot {
                base: 0x4000_2000,
                size: 0x1000,
                irq: 3,
            },
            MmioSlot {
                base: 0x4000_3000,
                size: 0x1000,
                irq: 4,
            },
        ];
        let gic = Gic::V3 {
            dist: (0x3fff_0000, 0x1_0000),
            redist: (0x3ffb_0000, 0x4_0000),
        };
        let dts = decompile(&machine(&virtio, gic));
        for expected in [
            "bootargs = \"panic=-1 root=/dev/vda\";",
            "stdout-path = \"/uart@40000000\";",
            "reg = <0x00 0x80000000 0x00 0x10000000>;",
            // MPIDR bit 31 (RES1) is not part of the CPU's address.
            "cpu@1 {",
            "reg = <0x00 0x01>;",
            "compatible = \"arm,psci-0.2\";",
            "compatible = \"arm,gic-v3\";",
            "reg = <0x00 0x3fff0000 0x00 0x10000 0x00 0x3ffb0000 0x00 0x40000>;",
            "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;",
            "compatible = \"ns16550a\";",
            "compatible = \"arm,pl031\\0arm,primecell\";",
            "virtio_mmio@40002000 {",
            "virtio_mmio@40003000 {",
            "interrupts = <0x00 0x04 0x01>;",
        ] {
            assert!(dts.contains(expected), "{expected}\n{dts}");
        }
        assert_eq!(dts.matches("compatible = \"virtio,mmio\"").count(), 2);
    }

    #[test]
    fn a_gicv2_has_a_cpu_interface() {
        let gic = Gic::V2 {
            dist: (0x3fff_0000, 0x1_0000),
            cpu: (0x3ffe_0000, 0x2000),
        };
        let dts = decompile(&machine(&[], gic));
        assert!(
            dts.contains("compatible = \"arm,cortex-a15-gic\";"),
            "{dts}"
        );
        assert!(
            dts.contains("reg = <0x00 0x3fff0000 0x00 0x10000 0x00 0x3ffe0000 0x00 0x2000>;"),
            "{dts}"
        );
        assert!(!dts.contains("virtio,mmio"), "{dts}");
    }
}
