//! The holder + in-container init mechanism, shared by backends whose containers are
//! started by a manager that is not our caller's descendant (Proxmox's `pct start`
//! hands the container to systemd, with stdout to /dev/null).
//!
//! * `create` leaves a **holder** (`nexcage holder`), a descendant of the caller whose
//!   pid goes in `--pid-file`. Its stdin/stdout/stderr are the container's (the caller's
//!   fds, or a pty slave with `--console-socket`). It listens on `holder.sock` in the
//!   container's runtime directory.
//! * `start` connects and says `start`; the holder starts the container. PID 1 inside is
//!   **`nexcage init`** (the static binary, bind-mounted read-only with the runtime
//!   directory at a mount point the backend chooses, [`MOUNT_POINT`] by default). It connects to the same socket and receives the
//!   holder's fds 0/1/2 by SCM_RIGHTS, so the workload writes straight into the
//!   caller's pipes or pty: no copying, exact EOF.
//! * init runs the OCI process, forwards signals to it, and reports its exit status;
//!   the holder exits with that status (128+N for signal N), which is what conmon or
//!   containerd's shim reap.

pub mod confine;
pub mod exec;
pub mod holder;
pub mod host;
pub mod init;
pub mod protocol;
pub mod ps;

/// Where the runtime directory appears inside the container.
pub const MOUNT_POINT: &str = "/.nexcage";
/// Files in the runtime directory.
pub const SOCKET: &str = "holder.sock";
pub const PROCESS: &str = "process.json";
/// What init sets up before the workload (see [`host::Setup`]).
pub const SETUP: &str = "setup.json";
pub const BINARY: &str = "nexcage";
/// Written by the holder once the workload has its stdio: the container runs.
pub const STARTED: &str = "started";
pub const HOLDER_PID: &str = "holder.pid";
/// init's host pid, noted by the holder when init calls in.
pub const INIT_PID: &str = "init.pid";
