//! runc's command line, as clap definitions. Parsing only: the logic lives in `commands`.
//!
//! Callers are engines (podman/conmon, containerd's shim, CRI-O) and test suites that
//! speak runc's dialect; `argv::normalize` first turns Go-style spellings
//! (`-bundle`, `--detach=false`) into clap's.

pub mod argv;
pub mod passthrough;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "nexcage",
    about = "OCI runtime that routes each container to crun, runc, LXC or Proxmox VE (pct, qm)",
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The parser for `args`. For the commands engines call for every container, the
/// root and only that subcommand: building every subcommand, and copying the global
/// flags into each, was most of the work nexcage did before handing a container to
/// crun. Anything else (help included) gets the whole command line.
pub fn command_for(args: &[OsString]) -> clap::Command {
    let root = root_command();
    // Help anywhere, short clusters (`-dh`) included, gets the whole command line.
    let help = args.iter().skip(1).any(|a| {
        a.to_str().is_some_and(|a| {
            matches!(a, "--help" | "help" | "-help")
                || (a.starts_with('-') && !a.starts_with("--") && a.contains('h'))
        })
    });
    match subcommand_name(&root, args)
        .filter(|_| !help)
        .and_then(hot_subcommand)
    {
        Some(sub) => root.subcommand(sub),
        None => Cli::command(),
    }
}

/// `Cli`'s root without subcommands: its settings and the global flags.
fn root_command() -> clap::Command {
    GlobalOpts::augment_args(
        clap::Command::new("nexcage")
            .disable_version_flag(true)
            .subcommand_required(false)
            .arg_required_else_help(true),
    )
}

/// The first word that is neither a flag nor a global flag's value.
fn subcommand_name<'a>(root: &clap::Command, args: &'a [OsString]) -> Option<&'a str> {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        let Some(flag) = word.strip_prefix('-') else {
            return Some(word);
        };
        // Go style takes one dash too (`-root DIR`); `--flag=value` carries its value.
        let name = flag.strip_prefix('-').unwrap_or(flag);
        if name.is_empty() || name.contains('=') {
            continue;
        }
        let takes_value = root
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(name)
                    || (name.len() == 1 && a.get_short() == name.chars().next())
            })
            .is_some_and(|a| a.get_action().takes_values());
        if takes_value {
            words.next();
        }
    }
    None
}

/// The subcommands on every container's path, each as `Command`'s variant makes it.
fn hot_subcommand(name: &str) -> Option<clap::Command> {
    let sub = clap::Command::new;
    Some(match name {
        "create" => CreateArgs::augment_args(sub("create")),
        "run" => RunArgs::augment_args(sub("run")),
        "start" => IdArg::augment_args(sub("start")),
        "state" => IdArg::augment_args(sub("state")),
        "kill" => KillArgs::augment_args(sub("kill")),
        "delete" => DeleteArgs::augment_args(sub("delete")),
        "exec" => ExecArgs::augment_args(sub("exec")),
        "list" => ListArgs::augment_args(sub("list")),
        _ => return None,
    })
}

/// The command line as users see it, for completions and man pages: the internal
/// (hidden) subcommands left out. clap_complete would offer them, and clap cannot
/// remove a subcommand, so the root is rebuilt from its flags and the public ones.
pub fn public_command() -> clap::Command {
    let full = Cli::command();
    let public: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("nexcage")
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(public)
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Root directory for container state
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log file ("" or absent: stderr)
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<String>,
    /// Log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (passed to the backend)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (passed to the backend). Not global: `spec`
    /// has a `--rootless` switch of its own, and callers put globals first.
    #[arg(long, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Path to criu (passed to runc for checkpoint/restore)
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,
    /// crun's cgroup manager: cgroupfs, systemd or disabled
    #[arg(long, global = true, value_name = "MANAGER")]
    pub cgroup_manager: Option<String>,
    /// nexcage routing config (else $NEXCAGE_CONFIG, else /etc/nexcage/config.json)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the version
    #[arg(short = 'v', long)]
    pub version: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container
    Create(CreateArgs),
    /// Create and run a container
    Run(RunArgs),
    /// Start the user process of a created container
    Start(IdArg),
    /// Output the state of a container
    State(IdArg),
    /// Send a signal (default SIGTERM) to the container's init process
    Kill(KillArgs),
    /// Delete a container and everything held for it
    Delete(DeleteArgs),
    /// Run a new process inside the container
    Exec(ExecArgs),
    /// List the processes running inside a container
    Ps(PsArgs),
    /// List containers
    List(ListArgs),
    /// Suspend all processes inside the container
    Pause(IdArg),
    /// Resume all processes suspended by pause
    Resume(IdArg),
    /// Display container events and statistics
    Events(EventsArgs),
    /// Update container resource constraints
    Update(UpdateArgs),
    /// Create a new specification file
    Spec(SpecArgs),
    /// Show the features of a backend (the default one unless --backend names one)
    Features(FeaturesArgs),
    /// Check that each configured backend can work on this host: one line per check,
    /// OK or FAIL with the fix; exit 0 only if all pass
    Check(CheckArgs),
    /// Checkpoint a running container
    Checkpoint(CheckpointArgs),
    /// Restore a container from a checkpoint
    Restore(RestoreArgs),
    /// Show which backend a bundle would be routed to, and why
    Route(RouteArgs),
    /// Remove what nexcage's backends hold for containers no record owns (Proxmox
    /// containers, LXC definitions, runtime directories left by a wiped state)
    Gc,
    /// Print the shell completion script for bash, zsh or fish
    Completion(CompletionArgs),
    /// (internal, packaging) write the man pages, nexcage.1 and one per subcommand, into DIR
    #[command(hide = true)]
    Man(ManArgs),
    /// (internal) the backend's init inside a supervised container
    #[command(hide = true)]
    Init(InitArgs),
    /// (internal) run a process inside a supervised container, as `exec` asked
    #[command(hide = true)]
    Enter(EnterArgs),
    /// (internal) PID 1 of a VM guest, run by the kernel from nexcage's initramfs
    #[command(hide = true)]
    GuestInit,
    /// (internal) the container's process on the host for a container in a VM
    #[command(hide = true)]
    VmHolder(VmHolderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VmHolderArgs {
    /// The container's runtime directory
    #[arg(long)]
    pub dir: PathBuf,
    /// The pipe to say `ready` (or the error) on
    #[arg(long)]
    pub ready_fd: i32,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The runtime directory as mounted inside the container
    #[arg(long, default_value = crate::supervise::MOUNT_POINT)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct EnterArgs {
    #[arg(long, default_value = "/")]
    pub cwd: String,
    #[arg(long, default_value_t = 0)]
    pub uid: u32,
    #[arg(long, default_value_t = 0)]
    pub gid: u32,
    #[arg(long)]
    pub group: Vec<u32>,
    #[arg(long)]
    pub no_new_privileges: bool,
    /// Capability sets BOUNDING:EFFECTIVE:PERMITTED:INHERITABLE:AMBIENT, hex bitmasks
    #[arg(long)]
    pub caps: Option<String>,
    /// Resource limit RESOURCE:SOFT:HARD (the resource as setrlimit numbers it)
    #[arg(long)]
    pub rlimit: Vec<String>,
    /// Load this compiled seccomp filter last
    #[arg(long)]
    pub seccomp: Option<PathBuf>,
    /// AppArmor profile to exec into
    #[arg(long)]
    pub apparmor: Option<String>,
    /// The engine's console socket, inherited as this fd: a pty is made inside and
    /// its master sent there
    #[arg(long)]
    pub console_fd: Option<i32>,
    /// Why the process cannot be exec'd goes to this fd; it closes on the exec
    #[arg(long)]
    pub ready_fd: Option<i32>,
    /// A new session keyring of this name (see `holder --session-keyring`)
    #[arg(long)]
    pub session_keyring: Option<String>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Unix socket that receives a pidfd of the init process
    #[arg(long, value_name = "PATH")]
    pub pidfd_socket: Option<PathBuf>,
    /// File to write the init process id to
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors (from fd 3) to the container
    #[arg(long, value_name = "N")]
    pub preserve_fds: Option<u32>,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Detach from the container's process
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits
    #[arg(long)]
    pub keep: bool,
    /// Do not become a subreaper
    #[arg(long)]
    pub no_subreaper: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KillArgs {
    /// Signal all processes of the container
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// Signal name or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is running
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    pub pidfd_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set an environment variable
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group id
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<String>,
    /// Process spec file (OCI Process JSON)
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Detach from the process
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long, value_name = "N")]
    pub preserve_fds: Option<u32>,
    /// Sub-cgroup to run in
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container
    #[arg(long)]
    pub ignore_paused: bool,
    pub id: String,
    /// Command and arguments (everything after the id)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// table or json
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Arguments for ps(1)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print only the ids
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Statistics interval
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Print statistics once and exit
    #[arg(long)]
    pub stats: bool,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// LinuxResources JSON file, or - for stdin
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<String>,
    #[arg(long)]
    pub blkio_weight: Option<String>,
    #[arg(long)]
    pub cpu_period: Option<String>,
    #[arg(long)]
    pub cpu_quota: Option<String>,
    #[arg(long)]
    pub cpu_share: Option<String>,
    #[arg(long)]
    pub cpu_rt_period: Option<String>,
    #[arg(long)]
    pub cpu_rt_runtime: Option<String>,
    #[arg(long)]
    pub cpu_idle: Option<String>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long)]
    pub kernel_memory: Option<String>,
    #[arg(long)]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    #[arg(long)]
    pub memory_swap: Option<String>,
    #[arg(long)]
    pub pids_limit: Option<String>,
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct SpecArgs {
    /// Directory to write config.json into
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Generate a spec for a rootless container
    #[arg(long)]
    pub rootless: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    #[arg(long, value_name = "DIR")]
    pub image_path: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub parent_path: Option<PathBuf>,
    #[arg(long)]
    pub leave_running: bool,
    #[arg(long)]
    pub tcp_established: bool,
    #[arg(long)]
    pub ext_unix_sk: bool,
    #[arg(long)]
    pub shell_job: bool,
    #[arg(long)]
    pub lazy_pages: bool,
    #[arg(long)]
    pub status_fd: Option<String>,
    #[arg(long)]
    pub page_server: Option<String>,
    #[arg(long)]
    pub file_locks: bool,
    #[arg(long)]
    pub pre_dump: bool,
    #[arg(long)]
    pub manage_cgroups_mode: Option<String>,
    #[arg(long)]
    pub empty_ns: Vec<String>,
    #[arg(long)]
    pub auto_dedup: bool,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub image_path: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    #[arg(long)]
    pub tcp_established: bool,
    #[arg(long)]
    pub ext_unix_sk: bool,
    #[arg(long)]
    pub shell_job: bool,
    #[arg(long)]
    pub file_locks: bool,
    #[arg(long)]
    pub manage_cgroups_mode: Option<String>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub no_subreaper: bool,
    #[arg(long)]
    pub no_pivot: bool,
    #[arg(long)]
    pub empty_ns: Vec<String>,
    #[arg(long)]
    pub auto_dedup: bool,
    #[arg(long)]
    pub lazy_pages: bool,
    #[arg(long)]
    pub lsm_profile: Option<String>,
    #[arg(long)]
    pub lsm_mount_context: Option<String>,
    pub id: String,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// text (one line per check) or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

#[derive(Debug, Clone, Args)]
pub struct FeaturesArgs {
    /// The backend to describe (a name in the config); default: the config's default
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// The shell to complete nexcage's command line in
    pub shell: Shell,
}

/// The shells the package ships completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Existing directory to write the pages into
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    pub id: String,
}

impl Command {
    /// The subcommand's name as callers spell it (and as the backend takes it).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Run(_) => "run",
            Command::Start(_) => "start",
            Command::State(_) => "state",
            Command::Kill(_) => "kill",
            Command::Delete(_) => "delete",
            Command::Exec(_) => "exec",
            Command::Ps(_) => "ps",
            Command::List(_) => "list",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Events(_) => "events",
            Command::Update(_) => "update",
            Command::Spec(_) => "spec",
            Command::Features(_) => "features",
            Command::Check(_) => "check",
            Command::Checkpoint(_) => "checkpoint",
            Command::Restore(_) => "restore",
            Command::Route(_) => "route",
            Command::Gc => "gc",
            Command::Completion(_) => "completion",
            Command::Man(_) => "man",
            Command::GuestInit => "guest-init",
            Command::VmHolder(_) => "vm-holder",
            Command::Init(_) => "init",
            Command::Enter(_) => "enter",
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate flags, bad defaults) over every subcommand.
    #[test]
    fn definitions_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// The pruned parser of each hot subcommand takes exactly the flags of the whole.
    #[test]
    fn hot_subcommands_match_the_whole_command_line() {
        use clap::CommandFactory;
        use std::ffi::OsString;
        let full = super::Cli::command();
        let args = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| format!("{a:?}")).collect()
        };
        assert_eq!(args(&super::root_command()), args(&full));
        for name in [
            "create", "run", "start", "state", "kill", "delete", "exec", "list",
        ] {
            let pruned = super::hot_subcommand(name).unwrap();
            let whole = full.find_subcommand(name).unwrap();
            assert_eq!(args(&pruned), args(whole), "{name}");
            assert_eq!(
                pruned.is_trailing_var_arg_set(),
                whole.is_trailing_var_arg_set(),
                "{name}"
            );
        }
        let argv = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        let root = super::root_command();
        for (line, want) in [
            (&["n", "--root", "/r", "run", "x"][..], Some("run")),
            (
                &["n", "-root", "/r", "--debug", "state", "x"][..],
                Some("state"),
            ),
            (&["n", "--log=/l", "delete", "x"][..], Some("delete")),
            (&["n", "--debug"][..], None),
        ] {
            assert_eq!(super::subcommand_name(&root, &argv(line)), want, "{line:?}");
        }
        for help in [&["n", "run", "--help"][..], &["n", "run", "-dh"][..]] {
            let pruned = super::command_for(&argv(help));
            assert!(
                pruned.find_subcommand("spec").is_some(),
                "{help:?}: the whole command line"
            );
        }
        super::public_command().debug_assert();
    }
}
