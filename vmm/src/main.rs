//! `nodeos-vmm`: the VMM process. A nodeos-vm parent starts it with one VM's request on a
//! descriptor (backend::process); it runs that VM, jailed and filtered, and reports how it ended.
//! `nodeos-vmm exec` is the jail's helper: it enters a jail and starts a program there (QEMU;
//! jail::exec).

use std::process::ExitCode;

use vmm::jail::exec;

fn main() -> ExitCode {
    let helper = std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == exec::HELPER_ARG);
    ExitCode::from(if helper {
        exec::main()
    } else {
        vmm::backend::process::vmm_main()
    })
}
