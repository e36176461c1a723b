//! `nodeos-vmm`: the VMM process. A nodeos-vm parent starts it with one VM's request on a
//! descriptor (backend::process); it runs that VM, jailed and filtered, and reports how it ended.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(vmm::backend::process::vmm_main())
}
