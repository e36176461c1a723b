//! The spec's `linux.seccomp` profile as a classic BPF program for the guest's kernel, which
//! the agent installs in the container's process (contract::frame::Container::seccomp) as
//! runc installs it. The guest is x86-64: a system call of another ABI (i386, x32) ends the
//! process, as libseccomp does for an architecture a profile does not name; the others are
//! looked up by name (a name x86-64 has no call for is passed over, as runc does), and each
//! one's rules are tried in the profile's order, the first whose conditions all hold giving
//! its action; a call no rule matches gets the default action.

use std::str::FromStr;

use contract::seccomp::{Filter, MAX_INSTRUCTIONS};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};
use syscalls::x86_64::Sysno;

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 system calls have this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Where `struct seccomp_data`'s fields are.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;
/// The errno of an `SCMP_ACT_ERRNO` without `errnoRet`, as runc gives it.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const AND_K: u16 = 0x54;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// `SECCOMP_RET_*`.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("its action SCMP_ACT_NOTIFY needs a listener, which a microVM's process cannot have")]
    Notify,
    #[error("a rule of {name} compares argument {index}; system calls have 6 (0 to 5)")]
    ArgIndex { name: String, index: usize },
    #[error("a rule of {name} has more conditions than one filter jump reaches")]
    TooLong { name: String },
    #[error("it makes a filter of {0} instructions; the kernel takes at most {MAX_INSTRUCTIONS}")]
    TooBig(usize),
}

/// One classic BPF instruction.
type Insn = libc::sock_filter;

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The profile's filter.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, Error> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // The rules of each system call, in the profile's order.
    type Rules<'a> = Vec<(&'a [LinuxSeccompArg], u32)>;
    let mut calls: Vec<(u32, &str, Rules)> = Vec::new();
    for rule in profile.syscalls().iter().flatten() {
        let verdict = action(rule.action(), rule.errno_ret())?;
        let args = rule.args().as_deref().unwrap_or_default();
        for name in rule.names().iter().map(String::as_str) {
            let Ok(sysno) = Sysno::from_str(name) else {
                log::debug!("seccomp: x86-64 has no system call {name}");
                continue;
            };
            if let Some(index) = args.iter().map(|a| a.index()).find(|i| *i > 5) {
                return Err(Error::ArgIndex {
                    name: name.to_string(),
                    index,
                });
            }
            let nr = sysno.id() as u32;
            match calls.iter_mut().find(|(n, _, _)| *n == nr) {
                Some((_, _, rules)) => rules.push((args, verdict)),
                None => calls.push((nr, name, vec![(args, verdict)])),
            }
        }
    }
    let mut program = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_KILL_PROCESS),
    ];
    for (nr, name, rules) in &calls {
        let mut body = Vec::new();
        for (args, verdict) in rules {
            body.extend(rule(args, *verdict).ok_or_else(|| Error::TooLong {
                name: name.to_string(),
            })?);
        }
        body.push(stmt(RET_K, default));
        // Its number: into its rules, which end in a return; any other: over them, the
        // number still loaded.
        program.push(jump(JEQ_K, *nr, 1, 0));
        program.push(stmt(JA, body.len() as u32));
        program.extend(body);
    }
    program.push(stmt(RET_K, default));
    Filter::new(&program).ok_or(Error::TooBig(program.len()))
}

/// The kernel's return value for an action (`errno`: an errno or trace action's data).
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, Error> {
    let data = |default| errno.unwrap_or(default) & 0xffff;
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(DEFAULT_ERRNO),
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(0),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => return Err(Error::Notify),
    })
}

/// One rule: `verdict` returned when every condition of `args` holds; on the first that does
/// not, on to what follows it. `None` when it is too long for a jump to pass over.
fn rule(args: &[LinuxSeccompArg], verdict: u32) -> Option<Vec<Insn>> {
    // Each condition's instructions, its failure jumps aimed at the rule's end (after the
    // return), resolved once the lengths are known.
    let conditions: Vec<Vec<Target>> = args.iter().map(condition).collect();
    let total: usize = conditions.iter().map(Vec::len).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(total);
    for condition in conditions {
        for target in condition {
            let at = out.len();
            // From the instruction after this one to the instruction after the return.
            let to_end = u8::try_from(total - at - 1).ok()?;
            out.push(match target {
                Target::Plain(insn) => insn,
                Target::FailIfTrue(insn) => Insn { jt: to_end, ..insn },
                Target::FailIfFalse(insn) => Insn { jf: to_end, ..insn },
            });
        }
    }
    out.push(stmt(RET_K, verdict));
    Some(out)
}

/// An instruction of a condition, with where its jump goes when the condition fails.
enum Target {
    Plain(Insn),
    FailIfTrue(Insn),
    FailIfFalse(Insn),
}

/// The instructions testing one condition on a 64-bit argument (its high word, then its low
/// one), falling through when it holds.
fn condition(arg: &LinuxSeccompArg) -> Vec<Target> {
    use Target::{FailIfFalse, FailIfTrue, Plain};
    let lo_at = ARGS + 8 * arg.index() as u32;
    let hi_at = lo_at + 4;
    let (hi, lo) = ((arg.value() >> 32) as u32, arg.value() as u32);
    let ld = |at| Plain(stmt(LD_W_ABS, at));
    match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => vec![
            ld(hi_at),
            FailIfFalse(jump(JEQ_K, hi, 0, 0)),
            ld(lo_at),
            FailIfFalse(jump(JEQ_K, lo, 0, 0)),
        ],
        // Holds when either word differs: a high word that differs jumps past the low one.
        LinuxSeccompOperator::ScmpCmpNe => vec![
            ld(hi_at),
            Plain(jump(JEQ_K, hi, 0, 2)),
            ld(lo_at),
            FailIfTrue(jump(JEQ_K, lo, 0, 0)),
        ],
        // Above: a higher high word holds at once, a lower one fails, an equal one leaves it
        // to the low word.
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let low = if arg.op() == LinuxSeccompOperator::ScmpCmpGt {
                JGT_K
            } else {
                JGE_K
            };
            vec![
                ld(hi_at),
                Plain(jump(JGT_K, hi, 3, 0)),
                FailIfFalse(jump(JEQ_K, hi, 0, 0)),
                ld(lo_at),
                FailIfFalse(jump(low, lo, 0, 0)),
            ]
        }
        // Below: a higher high word fails, a lower one holds at once, an equal one leaves it
        // to the low word (below: not at or above; at most: not above).
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            let low = if arg.op() == LinuxSeccompOperator::ScmpCmpLt {
                JGE_K
            } else {
                JGT_K
            };
            vec![
                ld(hi_at),
                FailIfTrue(jump(JGT_K, hi, 0, 0)),
                Plain(jump(JEQ_K, hi, 0, 2)),
                ld(lo_at),
                FailIfTrue(jump(low, lo, 0, 0)),
            ]
        }
        // `(argument & value) == valueTwo`.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let datum = arg.value_two().unwrap_or(0);
            let (dhi, dlo) = ((datum >> 32) as u32, datum as u32);
            vec![
                ld(hi_at),
                Plain(stmt(AND_K, hi)),
                FailIfFalse(jump(JEQ_K, dhi, 0, 0)),
                ld(lo_at),
                Plain(stmt(AND_K, lo)),
                FailIfFalse(jump(JEQ_K, dlo, 0, 0)),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    /// What `getpid(args...)` returns in a child that installed `program` (its errno when it
    /// fails, 0 when it returns the pid), for each of `calls`; by the real kernel.
    fn getpid_under(program: &Filter, calls: &[[u64; 2]]) -> Vec<i32> {
        let filter = program.instructions();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        calls
            .iter()
            .map(|[a, b]| {
                // SAFETY: the child makes only system calls (no allocation, no locks) and
                // ends with _exit; the filter and program it reads were made before the fork.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0);
                if pid == 0 {
                    // SAFETY: as above: raw system calls on memory that outlives them.
                    unsafe {
                        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                        if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                            libc::_exit(100);
                        }
                        let ret = libc::syscall(libc::SYS_getpid, *a, *b);
                        let errno = *libc::__errno_location();
                        libc::_exit(if ret < 0 { errno } else { 0 });
                    }
                }
                let mut status = 0;
                // SAFETY: waits for the child just forked; `status` is writable.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "the child was killed: {status:#x}");
                libc::WEXITSTATUS(status)
            })
            .collect()
    }

    #[test]
    fn conditions_on_64_bit_arguments_are_the_kernels() {
        let program = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11,
                 "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12,
                 "args": [{"index": 0, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GT"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "value": 0xff00, "valueTwo": 0x1200,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["getpid", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 14,
                 "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_LT"},
                          {"index": 1, "value": 7, "op": "SCMP_CMP_NE"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 15,
                 "args": [{"index": 1, "value": 0x2_0000_0005u64, "op": "SCMP_CMP_GE"},
                          {"index": 1, "value": 0x2_0000_0006u64, "op": "SCMP_CMP_LE"}]}
            ]
        })))
        .unwrap();
        let calls = [
            [5, 0],
            [0x2_0000_0000, 0],
            [0x1_0000_0001, 0],
            [0x1_0000_0000, 0],
            [0x1234, 0],
            [1, 0],
            [1, 7],
            [4, 0x2_0000_0004],
            [4, 0x2_0000_0005],
            [4, 0x2_0000_0006],
            [4, 0x2_0000_0007],
            [4, 0x3_0000_0005],
        ];
        assert_eq!(
            getpid_under(&program, &calls),
            [11, 12, 12, 0, 13, 14, 0, 0, 15, 15, 0, 0]
        );
    }

    #[test]
    fn an_allow_list_denies_the_rest_with_its_errno() {
        let program = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["prctl", "seccomp", "exit", "exit_group", "wait4"],
                 "action": "SCMP_ACT_ALLOW"}
            ]
        })))
        .unwrap();
        assert_eq!(getpid_under(&program, &[[0, 0]]), [38]);
        let denied = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .unwrap();
        assert_eq!(getpid_under(&denied, &[[0, 0]]), [libc::EPERM]);
    }

    #[test]
    fn what_the_guest_cannot_do_is_one_error() {
        let err = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY"
        })))
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
        let err = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a rule of read compares argument 6; system calls have 6 (0 to 5)"
        );
    }
}
