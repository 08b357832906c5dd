//! The holder + in-container init mechanism, shared by backends whose containers are
//! started by a manager that is not our caller's descendant (`lxc-start -d`, Proxmox's
//! `pct start`, which hands the container to systemd).
//!
//! * `create` starts the container; its init is **`nexcage init`** (the static binary,
//!   bind-mounted read-only with the runtime directory at a mount point the backend
//!   chooses, [`MOUNT_POINT`] by default). init sets up what needs privileges and calls
//!   in on `init.sock`, which is there for that one call.
//! * The runtime directory is the host's: only its [`INSIDE`] part (the binary, the
//!   setup, the seccomp filter, init's socket) is mounted into the container. The
//!   process (its environment), the hooks and the holder's control socket stay where
//!   no container process and no other local user can reach them.
//! * `create` then forks the **holder** in the container's pid namespace (a fork of
//!   `create`, not a new nexcage: a program start costs more than the rest); it joins the container's cgroups and other namespaces, checks the
//!   workload can be exec'd, and its pid goes in `--pid-file`. Its stdin/stdout/stderr
//!   are the container's (the caller's fds, or a pty slave with `--console-socket`).
//!   The create hooks run once it is in place.
//! * `start` connects and says `start`; the holder runs the startContainer hooks and
//!   execs the workload, as runc's init does: the engine's pid is the workload's, its
//!   exit status and signals are the workload's own, nothing is relayed.
//! * init watches the workload and exits after it, which ends the container.

pub mod confine;
pub mod events;
pub mod exec;
pub mod frames;
pub mod freeze;
pub mod guest;
pub mod guest_ps;
pub mod holder;
pub mod hooks;
pub mod host;
pub mod identity;
pub mod init;
pub mod join;
pub mod netlink;
pub mod protocol;
pub mod ps;
pub mod seccomp;
pub mod terminal;
pub mod update;
pub mod vm_holder;
pub mod vm_net;
pub mod vm_relay;

/// Where the runtime directory's [`INSIDE`] part appears inside the container.
pub const MOUNT_POINT: &str = "/.nexcage";
/// The part of the runtime directory the container sees (read-only, at its mount
/// point): [`BINARY`], [`SETUP`], [`SECCOMP_BPF`] and, until init has called in,
/// [`INIT_SOCKET`].
pub const INSIDE: &str = "inside";
/// init calls in here once (inside); then it is gone.
pub const INIT_SOCKET: &str = "init.sock";
/// The holder's control socket (`start`, `stop`): the host's root only.
pub const SOCKET: &str = "holder.sock";
pub const PROCESS: &str = "process.json";
/// What init sets up before the workload (see [`host::Setup`]); inside.
pub const SETUP: &str = "setup.json";
/// The spec's seccomp filter, compiled at create; inside.
pub const SECCOMP_BPF: &str = "seccomp.bpf";
/// The spec's hooks and the state they are given (see [`hooks::Hooks`]).
pub const HOOKS: &str = "hooks.json";
pub const BINARY: &str = "nexcage";
/// Written by the holder right before it execs the workload: the container runs.
pub const STARTED: &str = "started";
pub const HOLDER_PID: &str = "holder.pid";
/// init's host pid, noted by `create` when init calls in.
pub const INIT_PID: &str = "init.pid";
/// The process that started init (LXC's monitor), noted with it.
pub const MANAGER_PID: &str = "manager.pid";
