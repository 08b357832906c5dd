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
"""

import argparse
import ctypes
import math
import os
import signal
import statistics
import sys
import tempfile
import time

PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_TRACEEXIT = 0x40
PTRACE_EVENT_EXIT = 6


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


def row(name, samples_ns, ratio):
    ms = [s / 1e6 for s in samples_ns]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {p90(ms):.2f} "
        f"| {statistics.fmean(ms):.2f} | {ratio} |"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nexcage", required=True)
    ap.add_argument("--crun", required=True)
    ap.add_argument("--runc", required=True)
    ap.add_argument("--podman", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--bundle", required=True, help="the /bin/true bundle")
    ap.add_argument("--work", required=True, help="dir holding crun.json, runc.json; roots go here")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--podman-runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rss-runs", type=int, default=10)
    ap.add_argument("--tag", default=f"b{os.getpid()}", help="prefix of container ids, podman label value")
    a = ap.parse_args()

    runner = Runner()
    tag = a.tag
    cfg = {b: os.path.join(a.work, f"{b}.json") for b in ("crun", "runc")}
    nx_root = os.path.join(a.work, "nexcage")
    direct_root = {b: os.path.join(a.work, b) for b in ("crun", "runc")}
    delegate = {"crun": a.crun, "runc": a.runc}

    def nexcage_run(backend):
        return lambda i: [a.nexcage, "--root", nx_root, "--config", cfg[backend],
                          "run", "--bundle", a.bundle, f"{tag}-nx{backend}-{i}"]

    def direct_run(backend):
        # Exactly what nexcage execs, except for the --root directory.
        return lambda i: [delegate[backend], "--root", direct_root[backend],
                          "run", "--bundle", a.bundle, f"{tag}-{backend}-{i}"]

    run_variants = [
        ("`nexcage run` → crun", nexcage_run("crun")),
        ("`crun run`", direct_run("crun")),
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
    pairs = [(run_variants[0][0], run_variants[1][0], run_samples),
             (run_variants[2][0], run_variants[3][0], run_samples)]
    if podman_samples:
        pairs.append((podman_variants[0][0], podman_variants[1][0], podman_samples))
    for ours, theirs, samples in pairs:
        ratio = statistics.median(samples[ours]) / statistics.median(samples[theirs])
        delta = (statistics.median(samples[ours]) - statistics.median(samples[theirs])) / 1e6
        print(row(ours, samples[ours], f"{ceil3(ratio):.3f}"))
        print(row(theirs, samples[theirs], "1 (baseline)"))
        met = "met" if ratio <= 1.05 else "NOT met"
        verdicts.append(f"- {ours} vs {theirs}: median ratio {ceil3(ratio):.3f} "
                        f"(Δ median {delta:+.2f} ms); target ≤ 1.05 {met}")
    print()
    print("\n".join(verdicts))
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


if __name__ == "__main__":
    try:
        main()
    except CommandFailed as e:
        log(f"error: {e}")
        sys.exit(1)
