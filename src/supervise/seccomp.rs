//! The OCI `linux.seccomp` section compiled into a classic-BPF program, as runc does
//! it (libcontainer/seccomp and its patchbpf package):
//!
//! * libseccomp builds the filter: default action, one rule per syscall name, the
//!   extra architectures; names libseccomp does not know are skipped, rules whose
//!   action is the default one too (libseccomp refuses them), and several conditions
//!   on one argument become one rule each.
//! * the program is exported (`seccomp_export_bpf` into a memfd) and, unless the
//!   default action lets calls through, prefixed with runc's `-ENOSYS` stub: a syscall
//!   numbered above every one the profile names, on that architecture, gets `ENOSYS`
//!   rather than the default action, so a newer libc falls back (clone3, faccessat2…)
//!   instead of failing with `EPERM`.
//! * the filter flags go to `seccomp(2)` ourselves, at [`Program::load`]: libseccomp
//!   never loads anything, and neither sets no_new_privs (the caller decides) nor
//!   synchronises threads unless `SECCOMP_FILTER_FLAG_TSYNC` asks.
//!
//! `SCMP_ACT_NOTIFY` (and its `listenerPath`, `listenerMetadata`, and the
//! `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` flag that only serves it) is refused: there
//! is no seccomp agent support yet.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};

/// A compiled filter: the BPF instructions and the seccomp(2) flags.
#[derive(Clone)]
pub struct Program {
    filter: Vec<libc::sock_filter>,
    flags: u32,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.filter.len())
            .field("flags", &format_args!("{:#x}", self.flags))
            .finish()
    }
}

// seccomp(2) flags we pass (uapi linux/seccomp.h).
const FLAG_TSYNC: u32 = libc::SECCOMP_FILTER_FLAG_TSYNC as u32;
const FLAG_LOG: u32 = libc::SECCOMP_FILTER_FLAG_LOG as u32;
const FLAG_SPEC_ALLOW: u32 = libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32;
const KNOWN_FLAGS: u32 = FLAG_TSYNC | FLAG_LOG | FLAG_SPEC_ALLOW;

/// The kernel's limit on one program (BPF_MAXINSNS).
const MAX_INSNS: usize = libc::BPF_MAXINSNS as usize;
/// x32 syscalls are x86_64's with this bit set in the syscall number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_ERRNO_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

// Classic BPF opcodes (linux/filter.h), and where struct seccomp_data keeps the
// syscall number and the architecture.
/// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// Serialised form: magic, then flags and instruction count (u32 each), then the
/// instructions as the kernel's 8-byte `struct sock_filter`, all in host byte order
/// (the file is read back on the same machine).
const MAGIC: &[u8; 8] = b"NXSECCP1";
const HEADER: usize = 16;
const INSN: usize = 8;

/// OCI architecture names and libseccomp's tokens for them.
const ARCHES: &[(Arch, ScmpArch, &str)] = &[
    (Arch::ScmpArchNative, ScmpArch::Native, "SCMP_ARCH_NATIVE"),
    (Arch::ScmpArchX86, ScmpArch::X86, "SCMP_ARCH_X86"),
    (Arch::ScmpArchX86_64, ScmpArch::X8664, "SCMP_ARCH_X86_64"),
    (Arch::ScmpArchX32, ScmpArch::X32, "SCMP_ARCH_X32"),
    (Arch::ScmpArchArm, ScmpArch::Arm, "SCMP_ARCH_ARM"),
    (
        Arch::ScmpArchAarch64,
        ScmpArch::Aarch64,
        "SCMP_ARCH_AARCH64",
    ),
    (Arch::ScmpArchMips, ScmpArch::Mips, "SCMP_ARCH_MIPS"),
    (Arch::ScmpArchMips64, ScmpArch::Mips64, "SCMP_ARCH_MIPS64"),
    (
        Arch::ScmpArchMips64n32,
        ScmpArch::Mips64N32,
        "SCMP_ARCH_MIPS64N32",
    ),
    (Arch::ScmpArchMipsel, ScmpArch::Mipsel, "SCMP_ARCH_MIPSEL"),
    (
        Arch::ScmpArchMipsel64,
        ScmpArch::Mipsel64,
        "SCMP_ARCH_MIPSEL64",
    ),
    (
        Arch::ScmpArchMipsel64n32,
        ScmpArch::Mipsel64N32,
        "SCMP_ARCH_MIPSEL64N32",
    ),
    (Arch::ScmpArchPpc, ScmpArch::Ppc, "SCMP_ARCH_PPC"),
    (Arch::ScmpArchPpc64, ScmpArch::Ppc64, "SCMP_ARCH_PPC64"),
    (
        Arch::ScmpArchPpc64le,
        ScmpArch::Ppc64Le,
        "SCMP_ARCH_PPC64LE",
    ),
    (Arch::ScmpArchS390, ScmpArch::S390, "SCMP_ARCH_S390"),
    (Arch::ScmpArchS390x, ScmpArch::S390X, "SCMP_ARCH_S390X"),
    (Arch::ScmpArchParisc, ScmpArch::Parisc, "SCMP_ARCH_PARISC"),
    (
        Arch::ScmpArchParisc64,
        ScmpArch::Parisc64,
        "SCMP_ARCH_PARISC64",
    ),
    (
        Arch::ScmpArchRiscv64,
        ScmpArch::Riscv64,
        "SCMP_ARCH_RISCV64",
    ),
    (
        Arch::ScmpArchLoongarch64,
        ScmpArch::Loongarch64,
        "SCMP_ARCH_LOONGARCH64",
    ),
    (Arch::ScmpArchM68k, ScmpArch::M68k, "SCMP_ARCH_M68K"),
    (Arch::ScmpArchSh, ScmpArch::Sh, "SCMP_ARCH_SH"),
    (Arch::ScmpArchSheb, ScmpArch::Sheb, "SCMP_ARCH_SHEB"),
];

fn usage(message: String) -> Error {
    Error::Usage(message)
}

/// Refuses what cannot be applied (named), compiles the rest. Called at create time
/// (to refuse early) and again in the process that loads it.
pub fn compile(s: &LinuxSeccomp) -> Result<Program> {
    build(s).map(|(program, _)| program)
}

/// The program and the length of the ENOSYS stub at its head.
fn build(s: &LinuxSeccomp) -> Result<(Program, usize)> {
    if s.listener_path().is_some() {
        return Err(usage(
            "linux.seccomp.listenerPath: seccomp notification (SCMP_ACT_NOTIFY) is not supported yet".into(),
        ));
    }
    if s.listener_metadata().is_some() {
        return Err(usage(
            "linux.seccomp.listenerMetadata: seccomp notification (SCMP_ACT_NOTIFY) is not supported yet".into(),
        ));
    }

    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
        "linux.seccomp.defaultErrnoRet",
    )?;
    let flags = flags(s.flags().as_deref())?;
    let rules = s.syscalls().as_deref().unwrap_or_default();

    let failed = |what: &str, e: libseccomp::error::SeccompError| {
        usage(format!("linux.seccomp: libseccomp {what}: {e}"))
    };
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| failed("seccomp_init", e))?;
    // libseccomp never loads this filter, but keep its attributes honest: no
    // no_new_privs from here, thread sync only when asked.
    ctx.set_ctl_nnp(false)
        .map_err(|e| failed("SCMP_FLTATR_CTL_NNP", e))?;
    ctx.set_ctl_tsync(flags & FLAG_TSYNC != 0)
        .map_err(|e| failed("SCMP_FLTATR_CTL_TSYNC", e))?;

    let arches = architectures(s.architectures().as_deref().unwrap_or_default())?;
    for &(arch, name) in &arches {
        ctx.add_arch(arch).map_err(|e| {
            usage(format!(
                "linux.seccomp.architectures {name}: not supported by libseccomp: {e}"
            ))
        })?;
    }

    // Like runc: libseccomp's binary-tree layout for long rule sets (2.5.4 misbehaves
    // with it and no rules at all). Not having it only costs speed.
    let names: usize = rules.iter().map(|r| r.names().len()).sum();
    if names > 32 {
        let _ = ctx.set_ctl_optimize(2);
    }

    for (i, rule) in rules.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(
            rule.action(),
            rule.errno_ret(),
            &format!("{field}.action"),
            &format!("{field}.errnoRet"),
        )?;
        let conditions = conditions(rule.args().as_deref().unwrap_or_default(), &field)?;
        if rule.names().iter().any(|n| n.is_empty()) {
            return Err(usage(format!("{field}.names: empty syscall name")));
        }
        if act == default {
            // Redundant, and libseccomp refuses it.
            continue;
        }
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                // runc: most likely newer than this libseccomp (or this kernel).
                log::debug!("seccomp: unknown syscall {name:?} skipped");
                continue;
            };
            let added = match &conditions {
                Conditions::None => ctx.add_rule(act, nr).map(|_| ()),
                Conditions::One(all) => ctx.add_rule_conditional(act, nr, all).map(|_| ()),
                Conditions::Each(each) => each.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map(|_| ())
                }),
            };
            added
                .map_err(|e| usage(format!("{field} {name}: libseccomp refused the rule: {e}")))?;
        }
    }

    let mut filter = export(&ctx)?;
    let mut stub = Vec::new();
    if enosys_stub_wanted(s.default_action(), s.default_errno_ret()) {
        stub = enosys_stub(&largest_syscalls(&arches, rules));
    }
    let stub_len = stub.len();
    filter.splice(0..0, stub);
    if filter.len() > MAX_INSNS {
        return Err(usage(format!(
            "linux.seccomp: the filter has {} instructions, more than the kernel's {MAX_INSNS}",
            filter.len()
        )));
    }
    Ok((Program { filter, flags }, stub_len))
}

/// An OCI action and its errnoRet as libseccomp's; errno defaults to EPERM (runc).
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<ScmpAction> {
    let errno = match errno_ret {
        None => libc::EPERM as u16,
        Some(n) => u16::try_from(n)
            .map_err(|_| usage(format!("{errno_field}: {n} does not fit in 16 bits")))?,
    };
    Ok(match act {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.into()),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(usage(format!(
                "{field}: linux.seccomp action SCMP_ACT_NOTIFY is not supported yet"
            )));
        }
    })
}

/// The seccomp(2) flags. Unset (not even an empty list) means SPEC_ALLOW where the
/// kernel has it, as runc does; a flag the kernel lacks is refused.
fn flags(list: Option<&[LinuxSeccompFilterFlag]>) -> Result<u32> {
    let Some(list) = list else {
        return Ok(if kernel_has_flag(FLAG_SPEC_ALLOW) {
            FLAG_SPEC_ALLOW
        } else {
            0
        });
    };
    let mut flags = 0;
    for flag in list {
        let (bit, name) = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                (FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => (FLAG_LOG, "SECCOMP_FILTER_FLAG_LOG"),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                (FLAG_SPEC_ALLOW, "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(usage(
                    "linux.seccomp.flags SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: only for seccomp notification (SCMP_ACT_NOTIFY), which is not supported yet".into(),
                ));
            }
        };
        if !kernel_has_flag(bit) {
            return Err(usage(format!(
                "linux.seccomp.flags {name}: not supported by this kernel"
            )));
        }
        flags |= bit;
    }
    Ok(flags)
}

/// Whether seccomp(2) knows a filter flag: it checks flags before reading the
/// program, so a null program gives EFAULT for a known flag, EINVAL for another.
fn kernel_has_flag(flag: u32) -> bool {
    // SAFETY: a null program is never installed; the kernel only validates.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flag as libc::c_ulong,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// The listed architectures (duplicates dropped) and the native one, first.
fn architectures(list: &[Arch]) -> Result<Vec<(ScmpArch, &'static str)>> {
    let native = ScmpArch::native();
    let mut out = vec![(native, name_of(native))];
    for arch in list {
        let &(_, scmp, name) = ARCHES
            .iter()
            .find(|(a, _, _)| a == arch)
            .ok_or_else(|| usage(format!("linux.seccomp.architectures {arch:?}: unknown")))?;
        let scmp = if scmp == ScmpArch::Native {
            native
        } else {
            scmp
        };
        if !out.iter().any(|&(a, _)| a == scmp) {
            out.push((scmp, name));
        }
    }
    Ok(out)
}

fn name_of(arch: ScmpArch) -> &'static str {
    ARCHES
        .iter()
        .find(|&&(_, a, _)| a == arch)
        .map_or("SCMP_ARCH_NATIVE", |&(_, _, name)| name)
}

/// The AUDIT_ARCH_* value the kernel puts in seccomp_data.arch: libseccomp's token,
/// except for x32 whose token is made up (the kernel says x86_64).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    if arch == ScmpArch::X32 {
        return Some(AUDIT_ARCH_X86_64);
    }
    ARCHES
        .iter()
        .find(|&&(_, a, _)| a == arch && a != ScmpArch::Native)
        .map(|&(oci, _, _)| oci as u32)
}

enum Conditions {
    None,
    /// All in one rule (they hold together).
    One(Vec<ScmpArgCompare>),
    /// One rule each: some argument is compared more than once, which one libseccomp
    /// rule cannot say (runc's fallback; it makes the conditions alternatives).
    Each(Vec<ScmpArgCompare>),
}

fn conditions(args: &[oci_spec::runtime::LinuxSeccompArg], field: &str) -> Result<Conditions> {
    if args.is_empty() {
        return Ok(Conditions::None);
    }
    let mut seen = [0usize; 6];
    let mut out = Vec::with_capacity(args.len());
    for (j, arg) in args.iter().enumerate() {
        let index = arg.index();
        if index >= seen.len() {
            return Err(usage(format!(
                "{field}.args[{j}].index: {index} (a syscall has arguments 0 to 5)"
            )));
        }
        seen[index] += 1;
        let op = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
            LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
            LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
            LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
            LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
            LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
            // value is the mask, valueTwo what the masked argument must equal.
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                out.push(ScmpArgCompare::new(
                    index as u32,
                    ScmpCompareOp::MaskedEqual(arg.value()),
                    arg.value_two().unwrap_or(0),
                ));
                continue;
            }
        };
        out.push(ScmpArgCompare::new(index as u32, op, arg.value()));
    }
    Ok(if seen.iter().any(|&n| n > 1) {
        Conditions::Each(out)
    } else {
        Conditions::One(out)
    })
}

/// The filter's BPF as libseccomp generates it (2.5.4 exports to a file descriptor
/// only; a memfd has no pipe-buffer limit to deadlock on).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    // SAFETY: a valid NUL-terminated name; the fd is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"nexcage-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            "seccomp: memfd_create",
            io::Error::last_os_error(),
        ));
    }
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| usage(format!("linux.seccomp: libseccomp seccomp_export_bpf: {e}")))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| Error::io("seccomp: read the exported filter", e))?;
    if bytes.is_empty() || bytes.len() % INSN != 0 {
        return Err(usage(format!(
            "linux.seccomp: libseccomp exported {} bytes, not whole BPF instructions",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(INSN).map(decode).collect())
}

fn decode(b: &[u8]) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::from_ne_bytes([b[0], b[1]]),
        jt: b[2],
        jf: b[3],
        k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// runc adds the stub unless the default action lets calls through (ALLOW, LOG,
/// TRACE: a tracer handles new syscalls itself) or already answers ENOSYS.
fn enosys_stub_wanted(default: LinuxSeccompAction, errno: Option<u32>) -> bool {
    match default {
        LinuxSeccompAction::ScmpActAllow
        | LinuxSeccompAction::ScmpActLog
        | LinuxSeccompAction::ScmpActTrace => false,
        LinuxSeccompAction::ScmpActErrno => errno != Some(libc::ENOSYS as u32),
        _ => true,
    }
}

/// One entry per AUDIT_ARCH (native first): the largest syscall number any rule
/// names, per libseccomp architecture (x86_64 and x32 share AUDIT_ARCH_X86_64).
/// Every rule counts, skipped ones too, as in runc.
type Largest = Vec<(u32, Vec<(ScmpArch, u32)>)>;

fn largest_syscalls(
    arches: &[(ScmpArch, &str)],
    rules: &[oci_spec::runtime::LinuxSyscall],
) -> Largest {
    let mut out: Largest = Vec::new();
    for &(arch, _) in arches {
        let Some(audit) = audit_arch(arch) else {
            continue;
        };
        let largest = rules
            .iter()
            .flat_map(|r| r.names())
            .filter_map(|name| ScmpSyscall::from_name_by_arch(name, arch).ok())
            .map(|nr| nr.as_raw_syscall())
            .filter(|&nr| nr > 0)
            .max();
        let Some(largest) = largest else {
            log::debug!(
                "seccomp: no syscall of the profile is known on {}",
                name_of(arch)
            );
            continue;
        };
        match out.iter_mut().find(|(a, _)| *a == audit) {
            Some((_, v)) => v.push((arch, largest as u32)),
            None => out.push((audit, vec![(arch, largest as u32)])),
        }
    }
    out
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// runc's `-ENOSYS` stub (patchbpf), laid out our way: dispatch on the architecture,
/// then per architecture "syscall number above the largest known → ENOSYS",
/// everything else falls into libseccomp's program right after the stub. Conditional
/// jumps stay within a section (short); the long ones are `ja`, patched at the end.
fn enosys_stub(largest: &Largest) -> Vec<libc::sock_filter> {
    if largest.is_empty() {
        return Vec::new();
    }
    let mut out = vec![stmt(BPF_LD_W_ABS, DATA_ARCH)];
    let mut to_section = Vec::new();
    for &(audit, _) in largest {
        out.push(jump(BPF_JMP_JEQ_K, audit, 0, 1));
        to_section.push(out.len());
        out.push(stmt(BPF_JMP_JA, 0));
    }
    // Any other architecture: libseccomp's bad-architecture action.
    let mut to_filter = vec![out.len()];
    out.push(stmt(BPF_JMP_JA, 0));

    for ((_, entries), ja) in largest.iter().zip(to_section) {
        out[ja].k = (out.len() - ja - 1) as u32;
        out.push(stmt(BPF_LD_W_ABS, DATA_NR));
        match entries.as_slice() {
            [(arch, max)] => {
                if matches!(arch, ScmpArch::S390 | ScmpArch::S390X) {
                    // Unknown "large" syscalls reach the filter as setup(2), number 0.
                    out.push(jump(BPF_JMP_JEQ_K, 0, 2, 0));
                }
                match arch {
                    // x32 calls (bit set) go to the filter untouched, and vice versa.
                    ScmpArch::X8664 => out.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 1, 0)),
                    ScmpArch::X32 => out.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 1)),
                    _ => {}
                }
                out.push(jump(BPF_JMP_JGT_K, *max, 1, 0));
            }
            pair => {
                // x86_64 and x32: only they share an AUDIT_ARCH.
                let max_of = |want: ScmpArch| {
                    pair.iter()
                        .find(|(a, _)| *a == want)
                        .map_or(u32::MAX, |&(_, m)| m)
                };
                out.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 1, 0));
                out.push(jump(BPF_JMP_JGT_K, max_of(ScmpArch::X8664), 2, 1));
                out.push(jump(BPF_JMP_JGT_K, max_of(ScmpArch::X32), 1, 0));
            }
        }
        to_filter.push(out.len());
        out.push(stmt(BPF_JMP_JA, 0));
        out.push(stmt(BPF_RET_K, RET_ERRNO_ENOSYS));
    }
    let end = out.len();
    for ja in to_filter {
        out[ja].k = (end - ja - 1) as u32;
    }
    out
}

impl Program {
    /// Installs the filter on the calling thread with
    /// seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog). Async-signal-safe (it runs
    /// between fork and exec): no allocation, no libseccomp, only the raw syscall. The
    /// caller sees to no_new_privs or CAP_SYS_ADMIN.
    pub fn load(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            // compile and from_bytes keep it within 1..=BPF_MAXINSNS.
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: prog points at self.filter, alive for the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        match rc {
            0 => Ok(()),
            // With TSYNC: the id of a thread that could not be synchronised.
            n if n > 0 => Err(io::Error::from_raw_os_error(libc::ESRCH)),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The program serialised (so it can be written to a file and read back by another
    /// process) and parsed back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + INSN * self.filter.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&(self.filter.len() as u32).to_ne_bytes());
        for insn in &self.filter {
            out.extend_from_slice(&insn.code.to_ne_bytes());
            out.push(insn.jt);
            out.push(insn.jf);
            out.extend_from_slice(&insn.k.to_ne_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Program> {
        let bad = |why: &str| usage(format!("seccomp program: {why}"));
        if b.len() < HEADER || &b[..8] != MAGIC {
            return Err(bad("not a nexcage seccomp program"));
        }
        let word = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let flags = word(8);
        let count = word(12) as usize;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(bad(&format!("unknown flags {flags:#x}")));
        }
        if count == 0 || count > MAX_INSNS {
            return Err(bad(&format!("{count} instructions")));
        }
        if b.len() != HEADER + INSN * count {
            return Err(bad("truncated or trailing data"));
        }
        let filter = b[HEADER..].chunks_exact(INSN).map(decode).collect();
        Ok(Program { filter, flags })
    }

    /// The BPF instructions, stub first.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.filter
    }

    /// The seccomp(2) flags load passes.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("seccomp JSON")
    }

    /// A Docker-like default profile (moby's default.json, cut down but with its
    /// shapes): an allow list under ERRNO(EPERM), the three x86 architectures, masked
    /// clone flags, personality values as separate rules, a two-argument socket rule,
    /// clone3 → ENOSYS, and a name libseccomp does not know.
    const DOCKER_LIKE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["accept", "accept4", "access", "arch_prctl", "bind", "brk", "capget",
                "capset", "chdir", "chmod", "chown", "clock_gettime", "close", "close_range",
                "connect", "dup", "dup2", "dup3", "epoll_create1", "epoll_ctl", "epoll_pwait",
                "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
                "fchdir", "fcntl", "fstat", "futex", "getcwd", "getdents64", "getegid",
                "geteuid", "getgid", "getpid", "getppid", "getrandom", "getuid", "ioctl",
                "lseek", "mmap", "mprotect", "munmap", "newfstatat", "openat", "openat2",
                "pipe2", "poll", "prctl", "pread64", "read", "readlink", "rt_sigaction",
                "rt_sigprocmask", "rt_sigreturn", "set_robust_list", "set_tid_address",
                "setgid", "setuid", "socketcall", "statx", "uname", "wait4", "write",
                "no_such_syscall_in_libseccomp"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_LOG"},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kexec_load"], "action": "SCMP_ACT_KILL"},
            {"names": ["swapon"], "action": "SCMP_ACT_TRAP"},
            {"names": ["swapoff"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}
        ]
    }"#;

    /// podman's profile file (containers-common's format) as podman turns it into the
    /// OCI section: rules filtered by arch and capabilities (its default capability
    /// set), architectures from archMap.
    fn podman_profile(text: &str) -> LinuxSeccomp {
        use serde_json::{Value, json};
        const CAPS: &[&str] = &[
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_NET_BIND_SERVICE",
            "CAP_SETFCAP",
            "CAP_SETGID",
            "CAP_SETPCAP",
            "CAP_SETUID",
            "CAP_SYS_CHROOT",
        ];
        let doc: Value = serde_json::from_str(text).expect("podman seccomp.json");
        let list = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut arches = vec!["SCMP_ARCH_X86_64".to_string()];
        for m in doc["archMap"].as_array().into_iter().flatten() {
            if m["architecture"] == "SCMP_ARCH_X86_64" {
                arches.extend(list(m, "subArchitectures"));
            }
        }
        let mut rules = Vec::new();
        for rule in doc["syscalls"].as_array().expect("syscalls") {
            let (inc, exc) = (&rule["includes"], &rule["excludes"]);
            let inc_arches = list(inc, "arches");
            let inc_caps = list(inc, "caps");
            if !inc_arches.is_empty() && !inc_arches.iter().any(|a| a == "amd64") {
                continue;
            }
            if !inc_caps.iter().all(|c| CAPS.contains(&c.as_str())) {
                continue;
            }
            if list(exc, "arches").iter().any(|a| a == "amd64")
                || list(exc, "caps").iter().any(|c| CAPS.contains(&c.as_str()))
            {
                continue;
            }
            let mut r = json!({"names": rule["names"], "action": rule["action"]});
            if let Some(e) = rule.get("errnoRet") {
                r["errnoRet"] = e.clone();
            }
            if let Some(a) = rule.get("args").filter(|a| a.is_array()) {
                r["args"] = a.clone();
            }
            rules.push(r);
        }
        let mut out = json!({
            "defaultAction": doc["defaultAction"],
            "architectures": arches,
            "syscalls": rules,
        });
        if let Some(e) = doc.get("defaultErrnoRet") {
            out["defaultErrnoRet"] = e.clone();
        }
        serde_json::from_value(out).expect("podman profile as LinuxSeccomp")
    }

    /// The ENOSYS stub's length (0: none); it ends in `ja` to the filter, `ret ENOSYS`.
    fn stub_len(s: &LinuxSeccomp) -> usize {
        let (p, n) = build(s).expect("compile");
        if n > 0 {
            let f = p.instructions();
            assert_eq!((f[0].code, f[0].k), (BPF_LD_W_ABS, DATA_ARCH));
            assert_eq!((f[n - 1].code, f[n - 1].k), (BPF_RET_K, RET_ERRNO_ENOSYS));
            assert_eq!((f[n - 2].code, f[n - 2].k), (BPF_JMP_JA, 1));
        }
        n
    }

    fn round_trip(p: &Program) {
        let bytes = p.to_bytes();
        let back = Program::from_bytes(&bytes).expect("from_bytes");
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.flags(), p.flags());
        assert!(Program::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Program::from_bytes(b"not a program at all").is_err());
    }

    #[test]
    fn docker_like_profile() {
        let s = spec(DOCKER_LIKE);
        let p = compile(&s).expect("compile");
        assert!(p.instructions().len() > 50, "{p:?}");
        // Default EPERM gets the stub: x86_64 (with x32) and x86 sections.
        assert_eq!(stub_len(&s), 1 + 2 * 2 + 1 + 6 + 4);
        // flags unset: SPEC_ALLOW where the kernel has it (runc's default).
        assert_eq!(p.flags() & !FLAG_SPEC_ALLOW, 0);
        round_trip(&p);
    }

    #[test]
    fn podman_default_profile() {
        let path = "/usr/share/containers/seccomp.json";
        // hack/setup.sh installs podman, and with it this file.
        let text = std::fs::read_to_string(path).expect("podman's seccomp.json");
        let s = podman_profile(&text);
        assert!(s.syscalls().as_ref().unwrap().len() > 10);
        let p = compile(&s).expect("compile podman's profile");
        assert!(p.instructions().len() > 100, "{p:?}");
        // podman's default is ERRNO(ENOSYS) already: no stub.
        assert_eq!(s.default_errno_ret(), Some(libc::ENOSYS as u32));
        assert_eq!(stub_len(&s), 0);
        round_trip(&p);
    }

    #[test]
    fn args_and_flags() {
        let s = spec(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [
                  {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
                   "args": [{"index": 0, "value": 12345, "op": "SCMP_CMP_EQ"},
                            {"index": 0, "value": 23456, "op": "SCMP_CMP_EQ"}]},
                  {"names": ["mmap"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"},
                            {"index": 3, "value": 1, "op": "SCMP_CMP_GE"},
                            {"index": 1, "value": 0, "op": "SCMP_CMP_GT"}]},
                  {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                  {"names": ["write"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_LT"},
                            {"index": 0, "value": 50, "op": "SCMP_CMP_LE"},
                            {"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]}
                ]}"#,
        );
        let p = compile(&s).expect("compile");
        assert_eq!(p.flags(), FLAG_TSYNC | FLAG_LOG);
        assert_eq!(stub_len(&s), 0, "default ALLOW: no stub");

        let none =
            compile(&spec(r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": []}"#)).expect("compile");
        assert_eq!(none.flags(), 0);
    }

    #[test]
    fn refusals() {
        let refused = |json: &str, want: &str| {
            let e = compile(&spec(json)).expect_err(json).to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        refused(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#,
            "linux.seccomp.syscalls[0].action: linux.seccomp action SCMP_ACT_NOTIFY",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
            "linux.seccomp.defaultAction: linux.seccomp action SCMP_ACT_NOTIFY",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}"#,
            "linux.seccomp.listenerPath",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"}"#,
            "linux.seccomp.listenerMetadata",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
            "linux.seccomp.syscalls[0].args[0].index",
        );
        refused(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}"#,
            "linux.seccomp.defaultErrnoRet",
        );
        // Unknown flags, actions, operators and architectures do not even parse.
        for bad in [
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}"#,
            r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
        ] {
            assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err(), "{bad}");
        }
    }

    /// Runs `check` in a forked child after loading `p` there (with no_new_privs);
    /// the child reports through its exit status: 0 fine, 100 load failed, else
    /// `check`'s code. Nothing in the child allocates.
    fn in_child(p: &Program, check: fn() -> i32) -> i32 {
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if p.load().is_err() {
                    libc::_exit(100);
                }
                libc::_exit(check());
            }
        }
        let mut status = 0;
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn errno() -> i32 {
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn loaded_filter_denies_in_a_child() {
        let p = compile(&spec(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                  {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                  {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
                   "args": [{"index": 0, "value": 12345, "op": "SCMP_CMP_EQ"},
                            {"index": 0, "value": 23456, "op": "SCMP_CMP_EQ"}]}
                ]}"#,
        ))
        .expect("compile");
        let p = Program::from_bytes(&p.to_bytes()).expect("round trip");
        let code = in_child(&p, || unsafe {
            let mut buf = [0 as libc::c_char; 256];
            if !libc::getcwd(buf.as_mut_ptr(), buf.len()).is_null() || errno() != 38 {
                return 1;
            }
            // Two conditions on argument 0: separate rules, either one matches.
            if libc::dup(12345) != -1 || errno() != libc::EDOM {
                return 2;
            }
            if libc::dup(23456) != -1 || errno() != libc::EDOM {
                return 3;
            }
            if libc::dup(0) < 0 {
                return 4;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn enosys_stub_in_a_child() {
        // Default EPERM; the largest syscall named is openat (257 on x86_64).
        let s = spec(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
                "syscalls": [{"names": ["exit", "exit_group", "dup", "openat"],
                              "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        let p = compile(&s).expect("compile");
        // Native x86_64 only: ld, jeq, ja, ja; ld, jset, jgt, ja, ret.
        assert_eq!(stub_len(&s), 9);
        let code = in_child(&p, || unsafe {
            if libc::dup(0) < 0 {
                return 1;
            }
            if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EPERM {
                return 2;
            }
            // Newer than anything the profile knows: ENOSYS, not EPERM.
            if libc::syscall(1000) != -1 || errno() != libc::ENOSYS {
                return 3;
            }
            0
        });
        assert_eq!(code, 0);
    }
}
