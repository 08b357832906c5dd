//! Translates OCI `linux.seccomp` into LXC's seccomp policy text (version 2), so LXC builds and
//! loads the filter itself (`lxc.seccomp.profile`) with the libseccomp semantics runc/crun use.

// Format (LXC 5.0 src/lxc/seccomp.c): line 1 `2`, line 2 `allowlist|denylist <default action>`,
// then `<syscall> <action> [index,datum,OP]...` with `[index,datum,SCMP_CMP_MASKED_EQ,mask]`.
// LXC knows the actions allow, kill (thread), trap, errno N and notify, and no filter flags.
// Names libseccomp doesn't know on the host are skipped by LXC, as by runc and crun.
// Callers must also set `lxc.seccomp.allow_nesting = 1`: without it LXC silently loads no
// policy when lxc-start already runs under seccomp.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Syscalls have at most six arguments; LXC and libseccomp reject higher indexes.
const MAX_ARGS: usize = 6;

/// Returns the profile text, or a one-line reason why this profile cannot be expressed for LXC.
pub fn lxc_profile(seccomp: &LinuxSeccomp) -> Result<String, String> {
    if seccomp.listener_path().is_some() || seccomp.listener_metadata().is_some() {
        return Err("seccomp listenerPath/listenerMetadata: LXC has no OCI seccomp agent".into());
    }
    for flag in seccomp.flags().iter().flatten() {
        check_flag(*flag)?;
    }
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())
        .map_err(|e| format!("seccomp defaultAction: {e}"))?;
    // Every rule line names its action, so the list style only matters for LXC's sanity check.
    let style = if default == "allow" {
        "denylist"
    } else {
        "allowlist"
    };
    // No `[arch]` sections: whatever they say, LXC applies every rule to the host's native ABI
    // and the compat ABIs it adds (x86_64: x86 and x32); sections only skip foreign arches.
    // That is exact for specs listing X86_64+X86+X32 (podman, docker, containerd); with fewer,
    // the omitted compat ABIs get these same rules rather than libseccomp's bad-arch kill.
    let mut out = format!("2\n{style} {default}\n");
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        rule_lines(rule, &default, &mut out).map_err(|e| format!("seccomp syscalls[{i}]: {e}"))?;
    }
    Ok(out)
}

fn check_flag(flag: LinuxSeccompFilterFlag) -> Result<(), String> {
    match flag {
        // LXC loads the filter in the container's still single-threaded init: nothing to sync.
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Ok(()),
        // Without it the kernel keeps the speculative store bypass mitigation: stricter.
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => Ok(()),
        // Only changes how SCMP_ACT_NOTIFY waits, and notify is refused anyway.
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => Ok(()),
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
            Err("seccomp flag SECCOMP_FILTER_FLAG_LOG: LXC cannot set filter flags".into())
        }
    }
}

/// The LXC spelling of an OCI action; `errno_ret` is the rule's (or default's) errno.
fn action(act: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<String, String> {
    use LinuxSeccompAction as A;
    // The spec says a runtime must fail when an errno is given to an action without one.
    if errno_ret.is_some() && !matches!(act, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(format!("errnoRet is not valid with {act}"));
    }
    match act {
        A::ScmpActAllow => Ok("allow".into()),
        // SCMP_ACT_KILL is libseccomp's old name for KILL_THREAD, which is what LXC's `kill` is.
        A::ScmpActKill | A::ScmpActKillThread => Ok("kill".into()),
        A::ScmpActTrap => Ok("trap".into()),
        A::ScmpActErrno => {
            // The spec's default is EPERM; the kernel only has 16 bits for the errno.
            let errno = errno_ret.unwrap_or(1);
            if errno > u32::from(u16::MAX) {
                return Err(format!(
                    "errno {errno} does not fit seccomp's 16-bit return data"
                ));
            }
            Ok(format!("errno {errno}"))
        }
        // Killing only the thread would let the rest of the process go on: weaker.
        A::ScmpActKillProcess => Err("SCMP_ACT_KILL_PROCESS is not supported by LXC".into()),
        A::ScmpActLog => Err("SCMP_ACT_LOG is not supported by LXC".into()),
        A::ScmpActTrace => Err("SCMP_ACT_TRACE is not supported by LXC".into()),
        // LXC's notify needs its own seccomp proxy, not an OCI seccomp agent.
        A::ScmpActNotify => Err("SCMP_ACT_NOTIFY is not supported with LXC".into()),
    }
}

/// Appends the lines for one OCI rule: one per syscall name (and per condition set).
fn rule_lines(rule: &LinuxSyscall, default: &str, out: &mut String) -> Result<(), String> {
    let act = action(rule.action(), rule.errno_ret())?;
    // runc and crun skip these (the default applies anyway); libseccomp would refuse them.
    if act == default {
        return Ok(());
    }
    let conds = condition_sets(rule.args().as_deref().unwrap_or_default())?;
    for name in rule.names() {
        check_name(name)?;
        for conds in &conds {
            out.push_str(name);
            out.push(' ');
            out.push_str(&act);
            out.push_str(conds);
            out.push('\n');
        }
    }
    Ok(())
}

/// The condition text of each line a rule needs. Conditions on distinct arguments are ANDed in
/// one line; libseccomp can't AND two on the same argument, so then, like runc and crun, each
/// condition becomes a rule of its own (ORed).
fn condition_sets(args: &[LinuxSeccompArg]) -> Result<Vec<String>, String> {
    let conds = args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
    let repeated = (1..args.len()).any(|i| args[..i].iter().any(|a| a.index() == args[i].index()));
    if repeated {
        return Ok(conds);
    }
    Ok(vec![conds.concat()])
}

fn condition(arg: &LinuxSeccompArg) -> Result<String, String> {
    use LinuxSeccompOperator as O;
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(format!("argument index {index} is out of range (0..=5)"));
    }
    let op = match arg.op() {
        O::ScmpCmpNe => "SCMP_CMP_NE",
        O::ScmpCmpLt => "SCMP_CMP_LT",
        O::ScmpCmpLe => "SCMP_CMP_LE",
        O::ScmpCmpEq => "SCMP_CMP_EQ",
        O::ScmpCmpGe => "SCMP_CMP_GE",
        O::ScmpCmpGt => "SCMP_CMP_GT",
        // OCI (like libseccomp) gives the mask first (`value`) and the datum second
        // (`valueTwo`); LXC takes the datum first and the mask last.
        O::ScmpCmpMaskedEq => {
            let datum = arg.value_two().unwrap_or(0);
            return Ok(format!(
                " [{index},{datum},SCMP_CMP_MASKED_EQ,{}]",
                arg.value()
            ));
        }
    };
    Ok(format!(" [{index},{},{op}]", arg.value()))
}

fn check_name(name: &str) -> Result<(), String> {
    // Anything else could not be a syscall and would break LXC's line format.
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("invalid syscall name {name:?}"));
    }
    // LXC reads this prefix as its own umount2(MNT_FORCE) rule, not as a syscall name.
    if name.starts_with("reject_force_umount") {
        return Err(format!("syscall name {name:?} is reserved by LXC"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).expect("valid LinuxSeccomp")
    }

    fn profile(json: serde_json::Value) -> Result<String, String> {
        lxc_profile(&spec(json))
    }

    /// A subset of podman 4.3's resolved default profile (from a real config.json), keeping
    /// every rule shape it uses and its order.
    #[test]
    fn podman_default_subset() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["bdflush", "vm86"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["clone", "clone3", "setns", "socketcall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                          {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]}
            ]
        });
        let expected = "2\nallowlist errno 38\n\
            bdflush errno 1\nvm86 errno 1\n\
            clone allow\nclone3 allow\nsetns allow\nsocketcall allow\n\
            personality allow [0,4294967295,SCMP_CMP_EQ]\n\
            setns errno 1\n\
            socket errno 22 [0,16,SCMP_CMP_EQ] [2,9,SCMP_CMP_EQ]\n\
            socket allow [2,9,SCMP_CMP_NE]\n";
        assert_eq!(profile(json), Ok(expected.to_string()));
    }

    #[test]
    fn actions() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_KILL_THREAD",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["rmdir"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0},
                {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65535}
            ]
        });
        let expected = "2\nallowlist kill\nread allow\nmkdir errno 1\nrmdir trap\n\
            getpid errno 0\nchroot errno 65535\n";
        assert_eq!(profile(json), Ok(expected.to_string()));
    }

    #[test]
    fn allow_by_default_is_a_denylist() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL"}]
        });
        assert_eq!(
            profile(json),
            Ok("2\ndenylist allow\nmkdir kill\n".to_string())
        );
        let json = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO"});
        assert_eq!(profile(json), Ok("2\nallowlist errno 1\n".to_string()));
    }

    #[test]
    fn rules_equal_to_the_default_are_skipped() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["exit"], "action": "SCMP_ACT_KILL"}
            ]
        });
        let expected = "2\nallowlist errno 38\nread errno 1\nexit kill\n";
        assert_eq!(profile(json), Ok(expected.to_string()));
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_KILL",
            "syscalls": [{"names": ["exit"], "action": "SCMP_ACT_KILL_THREAD"}]
        });
        assert_eq!(profile(json), Ok("2\nallowlist kill\n".to_string()));
    }

    #[test]
    fn conditions() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                // OCI: value is the mask, valueTwo the datum; LXC wants the datum first.
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_LT"},
                          {"index": 2, "value": 2, "op": "SCMP_CMP_LE"},
                          {"index": 3, "value": 3, "op": "SCMP_CMP_GE"},
                          {"index": 4, "value": 4, "op": "SCMP_CMP_GT"},
                          {"index": 5, "value": 18446744073709551615u64, "valueTwo": 7, "op": "SCMP_CMP_NE"}]},
                // Same argument twice: separate (ORed) rules, as runc and crun do.
                {"names": ["kcmp", "ioprio_set"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 2, "value": 99, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                          {"index": 2, "value": 100, "op": "SCMP_CMP_EQ"}]}
            ]
        });
        let expected = "2\nallowlist errno 1\n\
            clone allow [0,0,SCMP_CMP_MASKED_EQ,2114060288]\n\
            personality allow [0,8,SCMP_CMP_MASKED_EQ,255]\n\
            mmap allow [1,1,SCMP_CMP_LT] [2,2,SCMP_CMP_LE] [3,3,SCMP_CMP_GE] [4,4,SCMP_CMP_GT] \
            [5,18446744073709551615,SCMP_CMP_NE]\n\
            kcmp allow [2,99,SCMP_CMP_EQ]\nkcmp allow [0,1,SCMP_CMP_EQ]\nkcmp allow [2,100,SCMP_CMP_EQ]\n\
            ioprio_set allow [2,99,SCMP_CMP_EQ]\nioprio_set allow [0,1,SCMP_CMP_EQ]\n\
            ioprio_set allow [2,100,SCMP_CMP_EQ]\n";
        assert_eq!(profile(json), Ok(expected.to_string()));
    }

    #[test]
    fn harmless_flags_and_foreign_arches_are_accepted() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
        });
        assert_eq!(profile(json), Ok("2\ndenylist allow\n".to_string()));
    }

    #[test]
    fn refusals() {
        let rule = |rule: serde_json::Value| serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule]});
        let cases = [
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}),
                "KILL_PROCESS",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_LOG"}),
                "SCMP_ACT_LOG",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
                "errnoRet",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/a.sock"}),
                "listener",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "listenerMetadata": "x"}),
                "listener",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
                "flags": ["SECCOMP_FILTER_FLAG_LOG"]}),
                "FLAG_LOG",
            ),
            (
                rule(serde_json::json!({"names": ["a"], "action": "SCMP_ACT_NOTIFY"})),
                "NOTIFY",
            ),
            (
                rule(serde_json::json!({"names": ["a"], "action": "SCMP_ACT_TRACE"})),
                "TRACE",
            ),
            (
                rule(
                    serde_json::json!({"names": ["a"], "action": "SCMP_ACT_TRACE", "errnoRet": 1}),
                ),
                "TRACE",
            ),
            (
                rule(serde_json::json!({"names": ["a"], "action": "SCMP_ACT_KILL_PROCESS"})),
                "KILL_PROCESS",
            ),
            (
                rule(
                    serde_json::json!({"names": ["a"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}),
                ),
                "errnoRet",
            ),
            (
                rule(
                    serde_json::json!({"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65536}),
                ),
                "16-bit",
            ),
            (
                rule(serde_json::json!({"names": ["a b"], "action": "SCMP_ACT_ALLOW"})),
                "invalid syscall name",
            ),
            (
                rule(serde_json::json!({"names": [""], "action": "SCMP_ACT_ALLOW"})),
                "invalid syscall name",
            ),
            (
                rule(serde_json::json!({"names": ["open\n[x86]"], "action": "SCMP_ACT_ALLOW"})),
                "invalid syscall name",
            ),
            (
                rule(
                    serde_json::json!({"names": ["reject_force_umount"], "action": "SCMP_ACT_ALLOW"}),
                ),
                "reserved",
            ),
            (
                rule(
                    serde_json::json!({"names": ["a"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}),
                ),
                "index 6",
            ),
        ];
        for (json, needle) in cases {
            let err = profile(json.clone()).expect_err(&json.to_string());
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }
}
