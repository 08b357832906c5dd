#!/usr/bin/env python3
"""Timing and peak-RSS measurements for hack/bench.sh (which prepares the machine,
the binary, the bundle and the routing configs, and passes their paths here).

Timing: each round runs every variant once; odd rounds run them in reverse order
(A B, B A, ...), so drift over the run (caches, other load, cgroup churn) hits all
variants alike. Each sample is the wall time from posix_spawn to waitpid of one
command whose stdout is /dev/null. Nothing is dropped except the warm-up runs.

Peak RSS: VmHWM of the nexcage process itself, read from /proc at its exit under
ptrace. ru_maxrss (wait4, GNU time) is no good here: it includes the children
nexcage spawns (`list` and `state` ask crun/runc, which use far more), and after a
fork from a big parent (Python) it starts at the parent's RSS.

Proxmox backend (--pct-runs): nexcage's pct backend against the pct/pvesh stand-in
(hack/pve) on a private node that hack/bench.sh sets up, for rootfs copies of different
sizes (the rootfs is used in place, so size should not matter); each as one foreground
`run` and, on a separate container, as its phases (create; start and wait until
stopped; delete).
"""

import argparse
import ctypes
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_TRACEEXIT = 0x40
PTRACE_EVENT_EXIT = 6

# The pct phases: `state` is polled this often until the container has stopped.
PCT_POLL_S = 0.01
PCT_STOP_TIMEOUT_S = 60


def log(msg):
    print(f"[bench.py] {msg}", file=sys.stderr, flush=True)


class CommandFailed(Exception):
    pass


def child_env():
    # Routing comes from the explicit --config flags, never from the caller's env.
    env = dict(os.environ)
    env.pop("NEXCAGE_CONFIG", None)
    return env


class Runner:
    """Runs commands with stdin and stdout on /dev/null and stderr kept in a file,
    shown only if the command fails."""

    def __init__(self):
        self.env = child_env()
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.err = tempfile.TemporaryFile()
        self.actions = [
            (os.POSIX_SPAWN_DUP2, self.devnull, 0),
            (os.POSIX_SPAWN_DUP2, self.devnull, 1),
            (os.POSIX_SPAWN_DUP2, self.err.fileno(), 2),
        ]

    def timed(self, argv):
        """Wall time of one run in ns; raises CommandFailed unless it exits 0."""
        self.err.seek(0)
        self.err.truncate()
        start = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, self.env, file_actions=self.actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter_ns() - start
        self.check(argv, status)
        return elapsed

    def check(self, argv, status):
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self.err.seek(0)
            stderr = self.err.read().decode(errors="replace").strip()
            raise CommandFailed(f"{' '.join(argv)}: exit {code}: {stderr}")

    def run(self, argv):
        """Runs a setup/cleanup command, untimed."""
        self.timed(argv)

    def output(self, argv):
        """stdout of a command, untimed; raises CommandFailed unless it exits 0."""
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env)
        if p.returncode != 0:
            stderr = p.stderr.decode(errors="replace").strip()
            raise CommandFailed(f"{' '.join(argv)}: exit {p.returncode}: {stderr}")
        return p.stdout

    def peak_rss_kib(self, argv):
        """VmHWM (KiB) of the process at its exit; see the module docstring."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.err.seek(0)
        self.err.truncate()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(self.devnull, 0)
                os.dup2(self.devnull, 1)
                os.dup2(self.err.fileno(), 2)
                libc.ptrace(PTRACE_TRACEME, 0, None, None)
                # execve stops us with SIGTRAP before the first instruction. The new
                # mm starts with VmHWM 0, so Python's memory does not count.
                os.execve(argv[0], argv, self.env)
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP):
            self.check(argv, status)
            raise CommandFailed(f"{argv[0]}: no exec stop (status {status:#x})")
        if libc.ptrace(PTRACE_SETOPTIONS, pid, None, PTRACE_O_TRACEEXIT) != 0:
            err = ctypes.get_errno()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise OSError(err, f"ptrace(PTRACE_SETOPTIONS): {os.strerror(err)}")
        peak = None
        deliver = 0
        while True:
            libc.ptrace(PTRACE_CONT, pid, None, deliver)
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            deliver = os.WSTOPSIG(status)
            if deliver == signal.SIGTRAP and status >> 16 == PTRACE_EVENT_EXIT:
                # Stopped in exit, before its memory is released: the final VmHWM.
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = int(line.split()[1])
                deliver = 0
            # Other stops are signals for the child (SIGCHLD from its own
            # children): pass them on.
        self.check(argv, status)
        if peak is None:
            raise CommandFailed(f"{' '.join(argv)}: no exit stop seen")
        return peak


def p90(samples):
    """Nearest-rank 90th percentile: a value that was actually measured."""
    ordered = sorted(samples)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def ceil3(x):
    """Ratios are rounded up, never in nexcage's favour."""
    return math.ceil(x * 1000) / 1000


def interleave(runner, variants, rounds, warmup, label):
    """variants: list of (name, make_argv(i)). Returns {name: [ns, ...]}."""
    samples = {name: [] for name, _ in variants}
    for w in range(warmup):
        for name, make in variants:
            runner.run(make(f"w{w}"))
    progress_every = max(1, rounds // 10)
    for i in range(rounds):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for name, make in order:
            samples[name].append(runner.timed(make(str(i))))
        if (i + 1) % progress_every == 0 or i + 1 == rounds:
            log(f"{label}: {i + 1}/{rounds} rounds")
    return samples


def row(name, samples_ns, ratio=None):
    """A table row; without `ratio`, no column for it."""
    ms = [s / 1e6 for s in samples_ns]
    last = "" if ratio is None else f" {ratio} |"
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {p90(ms):.2f} "
        f"| {statistics.fmean(ms):.2f} |{last}"
    )


def reap_orphans():
    """As an engine does (conmon, containerd's shim): we are a subreaper, and a
    detached container's process is reaped as soon as it has exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def phases_section(runner, a, tag, nx_root, crun_root):
    """create / start (+ wait until stopped) / delete, for nexcage → lxc, nexcage →
    crun and crun itself, interleaved; returns markdown rows."""
    lxc = [a.nexcage, "--root", nx_root, "--config", os.path.join(a.work, "lxc.json")]
    nxc = [a.nexcage, "--root", nx_root, "--config", os.path.join(a.work, "crun.json")]
    crun = [a.crun, "--root", crun_root]
    variants = [("nexcage → lxc", lxc, "pl"), ("nexcage → crun", nxc, "pc"),
                ("crun", crun, "pd")]

    def stopped(cmd, cid):
        deadline = time.monotonic() + PCT_STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            reap_orphans()
            state = json.loads(runner.output(cmd + ["state", cid]))
            if state.get("status") == "stopped":
                reap_orphans()
                return
            time.sleep(PCT_POLL_S)
        raise CommandFailed(f"{cid} did not stop within {PCT_STOP_TIMEOUT_S} s")

    def sample(cmd, cid):
        t = {"create": runner.timed(cmd + ["create", "--bundle", a.bundle, cid])}
        start = time.perf_counter_ns()
        runner.run(cmd + ["start", cid])
        stopped(cmd, cid)
        t["start"] = time.perf_counter_ns() - start
        t["delete"] = runner.timed(cmd + ["delete", cid])
        return t

    samples = {name: [] for name, _, _ in variants}
    log(f"phases: {a.lxc_runs} rounds of {len(variants)} variants")
    for i in range(a.lxc_runs):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for name, cmd, short in order:
            samples[name].append(sample(cmd, f"{tag}-{short}-{i}"))
    rows = []
    for name, _, _ in variants:
        med = {k: statistics.median(s[k] for s in samples[name]) / 1e6
               for k in ("create", "start", "delete")}
        rows.append(f"| {name} | {len(samples[name])} | {med['create']:.2f} "
                    f"| {med['start']:.2f} | {med['delete']:.2f} |")
    return rows


def pct_section(runner, a, tag):
    """Measures and prints the Proxmox-backend section (see the module docstring)."""
    nx = [a.nexcage, "--root", a.pct_root, "--config", a.pct_config]
    bundles = []
    for spec in a.pct_bundle:
        mib, _, path = spec.partition("=")
        bundles.append((int(mib), path))

    started = time.monotonic()
    # Warm-up: one unmeasured `run` per rootfs.
    for mib, bundle in bundles:
        runner.run(nx + ["run", "--bundle", bundle, f"{tag}-pct{mib}-w"])

    def wait_stopped(cid):
        deadline = time.monotonic() + PCT_STOP_TIMEOUT_S
        while json.loads(runner.output(nx + ["state", cid]))["status"] != "stopped":
            reap_orphans()
            if time.monotonic() > deadline:
                raise CommandFailed(f"{cid}: not stopped after {PCT_STOP_TIMEOUT_S} s")
            time.sleep(PCT_POLL_S)
        reap_orphans()

    def sample(bundle, phased, cid):
        """{part: ns}; part is "run", or "create", "start" and "delete"."""
        # Writeback of what earlier samples wrote must not land in this one: it would
        # fall on whichever variant happens to come next.
        os.sync()
        if phased:
            t = {"create": runner.timed(nx + ["create", "--bundle", bundle, cid])}
            start = time.perf_counter_ns()
            runner.run(nx + ["start", cid])
            wait_stopped(cid)
            t["start"] = time.perf_counter_ns() - start
            t["delete"] = runner.timed(nx + ["delete", cid])
        else:
            t = {"run": runner.timed(nx + ["run", "--bundle", bundle, cid])}
        reap_orphans()
        return t

    # Side by side in the same rounds: the same (smallest) bundle through the lxc
    # backend, and one call of the stand-in that does nothing (the floor of each of
    # the pct/pvesh calls a container costs).
    lxc = [a.nexcage, "--root", os.path.join(a.work, "nexcage"), "--config",
           os.path.join(a.work, "lxc.json")]
    pvesh = json.load(open(a.pct_config))["backends"]["pve"]["pvesh"]

    # The same bundle as a VM (qm backend, picked by annotation): a copy of its
    # config.json with the annotation, beside it.
    vm_bundle = os.path.join(a.work, "bundle-vm")
    os.makedirs(vm_bundle, exist_ok=True)
    with open(os.path.join(bundles[0][1], "config.json")) as f:
        vm_spec = json.load(f)
    vm_spec.setdefault("annotations", {})["org.nexcage.backend"] = "vm"
    with open(os.path.join(vm_bundle, "config.json"), "w") as f:
        json.dump(vm_spec, f)

    def side(kind, i):
        os.sync()
        if kind == "lxc":
            ns = runner.timed(lxc + ["run", "--bundle", bundles[0][1], f"{tag}-pctlxc-{i}"])
        elif kind == "vm":
            ns = runner.timed(nx + ["run", "--bundle", vm_bundle, f"{tag}-vm-{i}"])
        else:
            ns = runner.timed([pvesh, "get", "/cluster/nextid"])
        reap_orphans()
        return ns

    variants = [(mib, bundle, phased) for mib, bundle in bundles for phased in (False, True)]
    variants += [(kind, None, None) for kind in ("lxc", "pvesh", "vm")]
    samples = {}
    log(f"pct: {a.pct_runs} rounds of {len(variants)} samples (+{len(bundles)} warm-up)")
    for i in range(a.pct_runs):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for mib, bundle, phased in order:
            if bundle is None:
                samples.setdefault((mib, "run"), []).append(side(mib, i))
                continue
            cid = f"{tag}-pct{mib}-{'p' if phased else 'r'}-{i}"
            for part, ns in sample(bundle, phased, cid).items():
                samples.setdefault((mib, part), []).append(ns)
        log(f"pct: {i + 1}/{a.pct_runs} rounds")
    elapsed = time.monotonic() - started

    print()
    print("### Proxmox backend (pct), against the stand-in")
    print()
    print("| variant | n | median ms | p90 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for mib, _ in bundles:
        print(row(f"`nexcage run` → pct, {mib} MiB rootfs", samples[(mib, "run")]))
        for part, name in (("create", "`create`"), ("start", "`start` + wait until stopped"),
                           ("delete", "`delete`")):
            print(row(f"↳ {name}", samples[(mib, part)]))
    print(row(f"`nexcage run` → lxc, {bundles[0][0]} MiB rootfs", samples[("lxc", "run")]))
    print(row("one stand-in call doing nothing (`pvesh get /cluster/nextid`)",
              samples[("pvesh", "run")]))
    print(row(f"`nexcage run` → qm (a VM, TCG, 256 MiB), {bundles[0][0]} MiB rootfs",
              samples[("vm", "run")]))
    print()
    med = {k: statistics.median(v) / 1e6 for k, v in samples.items()}
    small_mib = bundles[0][0]
    print(f"- pct `run` / lxc `run` (medians, {small_mib} MiB): "
          f"{med[(small_mib, 'run')] / med[('lxc', 'run')]:.1f}×; a container costs "
          f"four pct/pvesh calls (nextid, create, start, destroy), each at least "
          f"{med[('pvesh', 'run')]:.0f} ms here")
    (small, _), (large, _) = bundles[0], bundles[-1]
    if large != small:
        def median_ms(mib, part):
            return statistics.median(samples[(mib, part)]) / 1e6
        print(f"- {large} vs {small} MiB rootfs: Δ median `run` "
              f"{median_ms(large, 'run') - median_ms(small, 'run'):+.0f} ms, `create` "
              f"{median_ms(large, 'create') - median_ms(small, 'create'):+.0f} ms "
              f"(the rootfs is used in place: nothing is packed or copied)")
    vm_rss(runner, a, nx, vm_spec, tag)
    print()
    print(f"Method: pct rounds {a.pct_runs}, each taking every sample above once (order "
          f"reversed every other round), after one unmeasured warm-up `run` per rootfs. "
          f"Before each sample, untimed: sync(2), so earlier samples' writeback "
          f"does not land in it. `run` is one foreground `nexcage run` of a /bin/true bundle (create, "
          f"start, wait, delete), wall time posix_spawn→waitpid. The phases are a separate "
          f"container: `create`; `start` plus polling `nexcage state` every "
          f"{PCT_POLL_S * 1000:.0f} ms until \"stopped\" (so up to one interval and one "
          f"`state` call late); `delete`. All of it runs against the stand-in: pct and pvesh "
          f"are Python scripts and LXC runs the containers; on a Proxmox host pct and its "
          f"start path cost differently. Took {elapsed:.0f} s.")


def peak_rss_mib(pid):
    """VmHWM of a process, in MiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def vm_rss(runner, a, nx, vm_spec, tag):
    """Peak RSS of one running VM's processes on the host: QEMU (its guest memory
    counts once touched), the holder and each virtiofsd, a few seconds after boot."""
    bundle = os.path.join(a.work, "bundle-vm-sleep")
    os.makedirs(bundle, exist_ok=True)
    spec = json.loads(json.dumps(vm_spec))
    spec["process"]["args"] = ["sleep", "60"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    cid = f"{tag}-vm-rss"
    runner.run(nx + ["run", "-d", "--bundle", bundle, cid])
    try:
        time.sleep(3)
        state = json.loads(runner.output(nx + ["state", cid]))
        run_dir = os.path.join(a.pct_root, "backends", "vm", cid)
        with open(os.path.join(run_dir, "vmid")) as f:
            vmid = f.read().strip()
        qm = json.load(open(a.pct_config))["backends"]["vm"]["qm"]
        status = subprocess.run([qm, "status", vmid, "--verbose"], capture_output=True,
                                text=True).stdout
        qemu = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("pid:"))
        virtiofsd = []
        for name in os.listdir(run_dir):
            if name.endswith("virtiofsd.pid"):
                with open(os.path.join(run_dir, name)) as f:
                    virtiofsd.append(int(f.read().split()[0]))
        parts = [("QEMU", peak_rss_mib(qemu)), ("holder", peak_rss_mib(state["pid"]))]
        parts += [("virtiofsd", peak_rss_mib(p)) for p in virtiofsd]
        total = sum(m for _, m in parts if m)
        print(f"- a running VM's peak RSS on the host (VmHWM, 256 MiB guest, TCG, 3 s after "
              f"`run -d` of `sleep 60`): {total:.0f} MiB = "
              + " + ".join(f"{n} {m:.0f}" for n, m in parts if m is not None))
    finally:
        runner.run(nx + ["delete", "--force", cid])
        reap_orphans()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nexcage", required=True)
    ap.add_argument("--crun", required=True)
    ap.add_argument("--runc", required=True)
    ap.add_argument("--floor", required=True, help="a static program that only execs crun")
    ap.add_argument("--podman", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--bundle", required=True, help="the /bin/true bundle")
    ap.add_argument("--work", required=True, help="dir holding crun.json, runc.json; roots go here")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--podman-runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rss-runs", type=int, default=10)
    ap.add_argument("--tag", default=f"b{os.getpid()}", help="prefix of container ids, podman label value")
    ap.add_argument("--pct-runs", type=int, default=10, help="pct section rounds; 0 skips it")
    ap.add_argument("--lxc-runs", type=int, default=30,
                    help="rounds of the plain-LXC backend comparison (needs lxc.json in --work); 0 skips it")
    ap.add_argument("--pct-bundle", action="append", default=[], metavar="MIB=PATH",
                    help="/bin/true bundle, rootfs of about MIB MiB (repeat; smallest first)")
    ap.add_argument("--pct-config", help="config whose default backend is the pct stand-in")
    ap.add_argument("--pct-root", help="nexcage --root for the pct section")
    a = ap.parse_args()
    if a.pct_runs > 0 and not (a.pct_bundle and a.pct_config and a.pct_root):
        ap.error("--pct-runs > 0 needs --pct-bundle, --pct-config, --pct-root")

    runner = Runner()
    # Like the engines: orphaned container processes come back to us (reap_orphans).
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    tag = a.tag
    cfg = {b: os.path.join(a.work, f"{b}.json") for b in ("crun", "runc")}
    nx_root = os.path.join(a.work, "nexcage")
    direct_root = {b: os.path.join(a.work, f"{b}-root" if b == "floor" else b)
                   for b in ("crun", "runc", "floor")}
    delegate = {"crun": a.crun, "runc": a.runc}

    def nexcage_run(backend):
        return lambda i: [a.nexcage, "--root", nx_root, "--config", cfg[backend],
                          "run", "--bundle", a.bundle, f"{tag}-nx{backend}-{i}"]

    delegate["floor"] = a.floor

    def direct_run(backend):
        # Exactly what nexcage execs, except for the --root directory.
        return lambda i: [delegate[backend], "--root", direct_root[backend],
                          "run", "--bundle", a.bundle, f"{tag}-{backend}-{i}"]

    run_variants = [
        ("`nexcage run` → crun", nexcage_run("crun")),
        ("`crun run`", direct_run("crun")),
        ("exec-floor wrapper → crun", direct_run("floor")),
        ("`nexcage run` → runc", nexcage_run("runc")),
        ("`runc run`", direct_run("runc")),
    ]
    label = f"org.nexcage.bench={tag}"

    def podman_run(*runtime):
        return lambda i: [a.podman, *runtime, "run", "--rm", "--label", label, a.image, "true"]

    podman_variants = [
        # podman passes --config=FILE to every nexcage call: routed to crun for sure.
        ("`podman run --rm`, --runtime nexcage (→ crun)",
         podman_run("--runtime", a.nexcage, "--runtime-flag", f"config={cfg['crun']}")),
        ("`podman run --rm`, --runtime crun", podman_run("--runtime", a.crun)),
    ]

    started = time.monotonic()
    log(f"run: {a.runs} rounds of {len(run_variants)} variants (+{a.warmup} warm-up)")
    run_samples = interleave(runner, run_variants, a.runs, a.warmup, "run")
    lxc_variants = [
        ("`nexcage run` → lxc", lambda i: [a.nexcage, "--root", nx_root, "--config",
                                          os.path.join(a.work, "lxc.json"), "run",
                                          "--bundle", a.bundle, f"{tag}-nxlxc-{i}"]),
        ("`nexcage run` → crun", lambda i: nexcage_run("crun")(f"l{i}")),
        ("`crun run`", lambda i: direct_run("crun")(f"l{i}")),
    ]
    lxc_samples = {}
    if a.lxc_runs > 0:
        log(f"lxc: {a.lxc_runs} rounds of {len(lxc_variants)} variants (+{a.warmup} warm-up)")
        lxc_samples = interleave(runner, lxc_variants, a.lxc_runs, a.warmup, "lxc")
    phase_rows = phases_section(runner, a, tag, nx_root, direct_root["crun"]) if a.lxc_runs > 0 else []

    # state and list of one created container, nexcage's against crun's and runc's own.
    q = {b: f"{tag}-q-{b}" for b in ("nexcage", "crun", "runc")}
    q_root = {"nexcage": os.path.join(a.work, "q-nexcage"),
              "crun": os.path.join(a.work, "q-crun"), "runc": os.path.join(a.work, "q-runc")}
    runner.run([a.nexcage, "--root", q_root["nexcage"], "--config", cfg["crun"], "create",
                "--bundle", a.bundle, q["nexcage"]])
    for b in ("crun", "runc"):
        runner.run([delegate[b], "--root", q_root[b], "create", "--bundle", a.bundle, q[b]])
    query_variants = [
        ("`nexcage state` (→ crun)", lambda i: [a.nexcage, "--root", q_root["nexcage"],
                                               "state", q["nexcage"]]),
        ("`crun state`", lambda i: [a.crun, "--root", q_root["crun"], "state", q["crun"]]),
        ("`runc state`", lambda i: [a.runc, "--root", q_root["runc"], "state", q["runc"]]),
        ("`nexcage list` (→ crun)", lambda i: [a.nexcage, "--root", q_root["nexcage"], "list"]),
        ("`crun list`", lambda i: [a.crun, "--root", q_root["crun"], "list"]),
        ("`runc list`", lambda i: [a.runc, "--root", q_root["runc"], "list"]),
    ]
    try:
        log(f"state/list: {a.runs} rounds of {len(query_variants)} variants")
        query_samples = interleave(runner, query_variants, a.runs, a.warmup, "query")
    finally:
        runner.run([a.nexcage, "--root", q_root["nexcage"], "delete", "--force", q["nexcage"]])
        for b in ("crun", "runc"):
            runner.run([delegate[b], "--root", q_root[b], "delete", "--force", q[b]])
    podman_samples = {}
    if a.podman_runs > 0:
        log(f"podman: {a.podman_runs} rounds of 2 variants (+{a.warmup} warm-up)")
        podman_samples = interleave(runner, podman_variants, a.podman_runs, a.warmup, "podman")

    # Peak RSS where nexcage itself does the work (no exec of a delegate): a
    # private root with two created (not started) containers on each backend.
    rss_root = os.path.join(a.work, "rss")
    nx_rss = [a.nexcage, "--root", rss_root]
    ids = {b: [f"{tag}-rss-{b}-{k}" for k in (1, 2)] for b in ("crun", "runc")}
    for backend, names in ids.items():
        for cid in names:
            runner.run(nx_rss + ["--config", cfg[backend], "create", "--bundle", a.bundle, cid])
    rss_commands = [
        ("`nexcage --version`", [a.nexcage, "--version"]),
        ("`nexcage route`", nx_rss + ["--config", cfg["crun"], "route", "--bundle", a.bundle, "x"]),
        ("`nexcage list` (4 containers: 2 crun, 2 runc)", nx_rss + ["list"]),
        ("`nexcage state` (crun container)", nx_rss + ["state", ids["crun"][0]]),
        ("`nexcage state` (runc container)", nx_rss + ["state", ids["runc"][0]]),
    ]
    rss = []
    try:
        for name, argv in rss_commands:
            rss.append((name, [runner.peak_rss_kib(argv) for _ in range(a.rss_runs)]))
    finally:
        for names in ids.values():
            for cid in names:
                runner.run(nx_rss + ["delete", "--force", cid])
    elapsed = time.monotonic() - started

    # Output: markdown, on stdout.
    print("| variant | n | median ms | p90 ms | mean ms | ratio (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    verdicts = []
    pairs = [(run_variants[0][0], run_variants[2][0], run_samples),
             (run_variants[0][0], run_variants[1][0], run_samples),
             (run_variants[3][0], run_variants[4][0], run_samples)]
    if podman_samples:
        pairs.append((podman_variants[0][0], podman_variants[1][0], podman_samples))
    for ours, theirs, samples in pairs:
        ratio = statistics.median(samples[ours]) / statistics.median(samples[theirs])
        delta = (statistics.median(samples[ours]) - statistics.median(samples[theirs])) / 1e6
        print(row(f"{ours} (vs {theirs})", samples[ours], f"{ceil3(ratio):.3f}"))
        print(row(theirs, samples[theirs], "1 (baseline)"))
        met = "met" if ratio <= 1.05 else "NOT met"
        verdicts.append(f"- {ours} vs {theirs}: median ratio {ceil3(ratio):.3f} "
                        f"(Δ median {delta:+.2f} ms); target ≤ 1.05 {met}")
    print()
    print("| query (one created container) | n | median ms | p90 ms | mean ms | × crun's (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = {v: statistics.median(query_samples[f"`crun {v}`"]) for v in ("state", "list")}
    for name, _ in query_variants:
        verb = "state" if "state" in name else "list"
        ratio = statistics.median(query_samples[name]) / base[verb]
        print(row(name, query_samples[name], f"{ceil3(ratio):.3f}"))
    nx_state = statistics.median(query_samples["`nexcage state` (→ crun)"])
    verdicts.append(f"- `nexcage state` vs `crun state`: median ratio "
                    f"{ceil3(nx_state / base['state']):.3f}; target ≤ 1 "
                    f"{'met' if nx_state <= base['state'] else 'NOT met'}")
    print()
    print("\n".join(verdicts))
    print()
    if lxc_samples:
        base = statistics.median(lxc_samples[lxc_variants[2][0]])
        print("#### Plain LXC backend: `run` of the same /bin/true bundle\n")
        print("| variant | n | median ms | p90 ms | mean ms | × `crun run` (median) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, _ in lxc_variants:
            ratio = statistics.median(lxc_samples[name]) / base
            print(row(name, lxc_samples[name], f"{ceil3(ratio):.3f}"))
        print()
        print(f"The lxc backend starts a full LXC container (lxc-start: monitor, "
              f"namespaces, cgroups, the spec's mounts) at `create` and places the holder in "
              f"it; {a.lxc_runs} rounds, interleaved as above. Goal: lxc `run` ≤ 2× crun's: "
              f"{'met' if statistics.median(lxc_samples[lxc_variants[0][0]]) <= 2 * base else 'NOT met'}.")
        print()
    if phase_rows:
        print("#### The same, phase by phase: `create`, `start` (until stopped), `delete`\n")
        print("| variant | n | create ms | start + wait ms | delete ms |")
        print("|---|---:|---:|---:|---:|")
        for r in phase_rows:
            print(r)
        print()
        print("Medians. `start` is timed until `state` says stopped (polled every "
              f"{PCT_POLL_S * 1000:.0f} ms), so it includes the workload's run and its "
              "exit; the container already exists at `create`.")
        print()
    print("| nexcage command (no delegate exec) | n | peak RSS KiB min | median | max |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rss:
        print(f"| {name} | {len(values)} | {min(values)} | {statistics.median(values):g} "
              f"| {max(values)} |")
    print()
    podman_note = (f"{a.podman_runs} rounds" if a.podman_runs > 0 else "skipped")
    print(f"Method: run rounds {a.runs}, podman {podman_note}, each after {a.warmup} "
          f"unmeasured warm-up rounds; order A B / B A alternating per round; wall time "
          f"posix_spawn→waitpid, stdout to /dev/null; p90 is nearest-rank; ratios are "
          f"nexcage median / direct median, rounded up. Peak RSS is the nexcage "
          f"process's own VmHWM at exit (children excluded). Took {elapsed:.0f} s.")

    if a.pct_runs > 0:
        # What is measured so far stays on stdout even if this section fails.
        sys.stdout.flush()
        pct_section(runner, a, tag)


if __name__ == "__main__":
    try:
        main()
    except CommandFailed as e:
        log(f"error: {e}")
        sys.exit(1)
