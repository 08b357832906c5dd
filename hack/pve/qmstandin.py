"""Stand-in for Proxmox VE's `qm` (qemu-server 9.x CLI), beside pvestandin's pct.

It follows qm's argv, output formats, exit codes and error texts (src/PVE/CLI/qm.pm,
src/PVE/API2/Qemu.pm), stores configs in PVE's format under Settings.qemu_dir and runs
stock QEMU (qemu-system-x86_64) daemonized with a command line built the way
PVE::QemuServer::config_to_command builds it, for the keys this stand-in knows.

Beside the settings of pvestandin (PVE_STANDIN_ROOT, PVE_STANDIN_QEMU_DIR,
PVE_STANDIN_NODE, ...):

  PVE_STANDIN_QEMU_RUN_DIR   <vmid>.pid, .qmp, .serialN, .qga, .vnc, .qmeventd
                             (PVE: /var/run/qemu-server)       ($ROOT/var/run/qemu-server)
  PVE_STANDIN_QEMU_LOCK_DIR  lock-<vmid>.conf (PVE: /run/lock/qemu-server)
                                                               ($ROOT/run/lock/qemu-server)
  PVE_STANDIN_QEMU_BINARY    PVE: /usr/bin/kvm                 (/usr/bin/qemu-system-x86_64)
  PVE_STANDIN_KVM_DEVICE     opened for KVM_GET_API_VERSION     (/dev/kvm)

qmeventd (src/qmeventd/qmeventd.c) is a system daemon on PVE that every QEMU connects to
(`-chardev socket,id=qmp-event,path=/var/run/qmeventd.sock`). SIMPLIFIED: here each VM
gets its own small watcher process (this file run as `qmstandin.py qmeventd <vmid>`),
listening on <run dir>/<vmid>.qmeventd before QEMU starts.

Simplifications relative to PVE are marked "SIMPLIFIED" and listed in README.md.
"""

import fcntl
import json
import os
import re
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid

if __name__ == '__main__':  # the qmeventd watcher, started by `qm start`
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import pvestandin as ps  # noqa: E402
from pvestandin import P, PveError, ParamError, warn, task_print, run_task  # noqa: E402


class QmSettings:
    def __init__(self):
        root = os.environ.get('PVE_STANDIN_ROOT', '').rstrip('/')
        self.run = ps._env('PVE_STANDIN_QEMU_RUN_DIR', root + '/var/run/qemu-server')
        self.lock_dir = ps._env('PVE_STANDIN_QEMU_LOCK_DIR', root + '/run/lock/qemu-server')
        self.binary = ps._env('PVE_STANDIN_QEMU_BINARY', '/usr/bin/qemu-system-x86_64')
        self.kvm_device = ps._env('PVE_STANDIN_KVM_DEVICE', '/dev/kvm')


Q = None  # QmSettings

# --------------------------------------------------------------------------------------
# Parameter schema (subset of PVE::QemuServer's $confdesc)

OSTYPES = ['other', 'wxp', 'w2k', 'w2k3', 'w2k8', 'wvista', 'win7', 'win8', 'win10', 'win11',
           'l24', 'l26', 'solaris']
LOCKS = ['backup', 'clone', 'create', 'migrate', 'rollback', 'snapshot', 'snapshot-delete',
         'suspending', 'suspended']
FMT_AGENT = {
    'default_key': 'enabled',
    'keys': {'enabled': 'boolean', 'fstrim_cloned_disks': 'boolean', 'type': 'string',
             'freeze-fs-on-backup': 'boolean', 'guest-fsfreeze': 'boolean'},
    'required': [],
}
FMT_MEMORY = {'default_key': 'current', 'keys': {'current': 'integer'}, 'required': ['current']}
FMT_CPU = {
    'default_key': 'cputype',
    'keys': {'cputype': 'string', 'flags': 'string', 'hidden': 'boolean',
             'hv-vendor-id': 'string', 'phys-bits': 'string', 'reported-model': 'string'},
    'required': [],
}
FMT_VGA = {'default_key': 'type', 'keys': {'type': 'string', 'memory': 'integer',
                                           'clipboard': 'string'}, 'required': []}
# SIMPLIFIED: netN is checked as a property string with any model=MAC key; not started.
NET_MODELS = ['e1000', 'e1000-82540em', 'e1000-82544gc', 'e1000-82545em', 'e1000e',
              'i82551', 'i82557b', 'i82559er', 'ne2k_isa', 'ne2k_pci', 'pcnet', 'rtl8139',
              'virtio', 'vmxnet3']
FMT_NET = {
    'default_key': 'model',
    'keys': dict({m: 'string' for m in NET_MODELS}, model='string', bridge='string',
                 firewall='boolean', link_down='boolean', macaddr='string', mtu='integer',
                 queues='integer', rate='number', tag='integer', trunks='string'),
    'required': [],
}
SERIAL_RE = r'(/dev/.+|socket)'

CONF_PROPS = {
    'acpi': P('boolean'),
    'affinity': P(),
    'agent': P(fmt=FMT_AGENT),
    'args': P(),
    'balloon': P('integer', 0),
    'bios': P(enum=['seabios', 'ovmf']),
    'boot': P(),
    'cores': P('integer', 1),
    'cpu': P(fmt=FMT_CPU),
    'cpulimit': P('number', 0, 128),
    'cpuunits': P('integer', 1, 262144),
    'description': P(max_length=8192),
    'hotplug': P(),
    'kvm': P('boolean'),
    'lock': P(enum=LOCKS),
    'machine': P(max_length=40),
    'memory': P(fmt=FMT_MEMORY),
    'meta': P(),
    'name': P(fmt='dns-name'),
    'numa': P('boolean'),
    'onboot': P('boolean'),
    'ostype': P(enum=OSTYPES),
    'protection': P('boolean'),
    'reboot': P('boolean'),
    'smbios1': P(max_length=512),
    'sockets': P('integer', 1),
    'startup': P(),
    'tablet': P('boolean'),
    'tags': P(fmt='tag-list'),
    'template': P('boolean'),
    'vcpus': P('integer', 1),
    'vga': P(fmt=FMT_VGA),
    'vmgenid': P(),
}
INDEXED = {'serial': (3, P(pattern=SERIAL_RE)), 'net': (31, P(fmt=FMT_NET)),
           'unused': (255, P())}


def config_props():
    return dict(CONF_PROPS)


def lookup_prop(props, name):
    if name in props:
        return props[name]
    m = re.fullmatch(r'([a-z]+)(\d+)', name)
    if m and m.group(1) in INDEXED and m.group(1) + 'N' in props:
        maxidx, prop = INDEXED[m.group(1)]
        if int(m.group(2)) <= maxidx and str(int(m.group(2))) == m.group(2):
            return prop
    return None


def all_props(extra=None):
    props = dict(CONF_PROPS)
    for name in INDEXED:
        props[name + 'N'] = INDEXED[name][1]
    props.update(extra or {})
    return props


# pvestandin.get_options resolves names through pvestandin.lookup_prop, which knows pct's
# indexed keys (mp, net, dev, unused); qm's serialN is added while qm parses.
def get_options(props, argv, arg_names, usage):
    saved = ps.INDEXED_PROPS
    ps.INDEXED_PROPS = INDEXED
    try:
        return ps.get_options(props, argv, arg_names, usage)
    finally:
        ps.INDEXED_PROPS = saved


COMMANDS = {}


def command(name, args_usage, task=False):
    def deco(func):
        COMMANDS[name] = (func, args_usage, task)
        return func
    return deco


def usage_line(verb, arg_names, has_opts=True):
    args = ' '.join(f'<{a}>' for a in arg_names)
    return f"qm {verb}{' ' + args if args else ''}{' [OPTIONS]' if has_opts else ''}"


def parse(verb, argv, props, arg_names):
    return get_options(props, argv, arg_names, usage_line(verb, arg_names, bool(props)))


# --------------------------------------------------------------------------------------
# Config files (PVE::QemuConfig / PVE::QemuServer parse_vm_config, write_vm_config)


def conf_path(vmid):
    return os.path.join(ps.S.qemu_dir, f'{vmid}.conf')


def load_config(vmid):
    try:
        with open(conf_path(vmid), encoding='utf-8', errors='surrogateescape') as f:
            raw = f.read()
    except FileNotFoundError:
        raise PveError(f"Configuration file 'nodes/{ps.S.node}/qemu-server/{vmid}.conf' "
                       "does not exist")
    return ps.parse_config(vmid, raw)


def write_config(vmid, conf):
    raw = ps.format_config(conf)
    os.makedirs(ps.S.qemu_dir, exist_ok=True)
    path = conf_path(vmid)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8', errors='surrogateescape') as f:
        f.write(raw)
    os.chmod(tmp, 0o640)
    os.rename(tmp, path)


def check_lock(conf):
    if conf.get('lock'):
        raise PveError(f"VM is locked ({conf.get('lock')})")


class ConfigLock(ps.ConfigLock):
    """PVE::QemuConfig lock_config: flock on /run/lock/qemu-server/lock-<vmid>.conf."""

    def __init__(self, vmid, timeout=10):
        super().__init__(vmid, timeout)
        self.path = os.path.join(Q.lock_dir, f'lock-{vmid}.conf')

    def __enter__(self):
        os.makedirs(Q.lock_dir, exist_ok=True)
        saved = ps.S.lock_dir
        ps.S.lock_dir = Q.lock_dir
        try:
            return super().__enter__()
        finally:
            ps.S.lock_dir = saved


def memory_mb(conf):
    value = conf.get('memory')
    if not value:
        return 512
    return int(ps.parse_property_string(FMT_MEMORY, value)['current'])


def random_macaddr():
    # PVE::Tools::random_ether_addr with the default prefix BC:24:11 (Proxmox's OUI)
    return 'BC:24:11:' + ':'.join('%02X' % b for b in os.urandom(3))


def add_random_macs(params):
    """PVE::QemuServer::Network::add_random_macs: a bare model gets model=MAC."""
    for key in [k for k in params if re.fullmatch(r'net\d+', k)]:
        net = ps.parse_property_string(FMT_NET, params[key])
        model = net.pop('model', None)
        if model is None:
            for m in NET_MODELS:
                if m in net:
                    model, mac = m, net.pop(m)
                    break
            else:
                raise ParamError({key: 'invalid format - missing network model'})
        else:
            mac = net.pop('macaddr', None) or random_macaddr()
        if model not in NET_MODELS:
            raise ParamError({key: f"invalid format - model: value '{model}' does not have a "
                                   "value in the enumeration '" + ', '.join(NET_MODELS) + "'"})
        rest = ps.print_property_string({'default_key': None, 'keys': FMT_NET['keys'],
                                         'required': []}, net)
        params[key] = f'{model}={mac}' + (',' + rest if rest else '')


# --------------------------------------------------------------------------------------
# Running state (PVE::QemuServer::Helpers)


def run_file(vmid, ext):
    return os.path.join(Q.run, f'{vmid}.{ext}')


def pidfile(vmid):
    return run_file(vmid, 'pid')


def proc_cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode('utf-8', 'surrogateescape') for a in f.read().split(b'\0')]
    except OSError:
        return []


def proc_state(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None


def check_running(vmid):
    """vm_running_locally / instance_running_locally: the pidfile's pid, if that process
    has `-pidfile <this pidfile>` on its command line and is not a zombie."""
    path = pidfile(vmid)
    try:
        with open(path) as f:
            line = f.readline().strip()
    except OSError:
        return None
    if not re.fullmatch(r'\d+', line):
        return None
    pid = int(line)
    args = proc_cmdline(pid)
    for i, arg in enumerate(args[:-1]):
        if arg in ('-pidfile', '--pidfile') and args[i + 1] == path:
            stat = proc_state(pid)
            if stat and stat[0] not in ('Z', 'X'):
                return pid
            return None
    return None


def qmp_command(vmid, cmds, path=None, timeout=3.0):
    """A QMP session on <vmid>.qmp (PVE::QMPClient): capabilities, then each command."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path or run_file(vmid, 'qmp'))
        reader = QmpReader(sock)
        reader.next_message()  # greeting
        results = []
        for cmd in ['qmp_capabilities'] + list(cmds):
            sock.sendall(json.dumps({'execute': cmd}).encode() + b'\n')
            while True:
                msg = reader.next_message()
                if msg is None:
                    if cmd == 'quit':
                        results.append({})
                        break
                    raise PveError(f"VM {vmid} qmp command '{cmd}' failed - got EOF")
                if 'return' in msg:
                    results.append(msg['return'])
                    break
                if 'error' in msg:
                    raise PveError(f"VM {vmid} qmp command '{cmd}' failed - "
                                   f"{msg['error'].get('desc', 'unknown error')}")
        return results[1:]
    except socket.timeout:
        raise PveError(f"VM {vmid} qmp command failed - got timeout")
    except OSError as err:
        raise PveError(f"unable to connect to VM {vmid} qmp socket - {err.strerror}")
    finally:
        sock.close()


class QmpReader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b''

    def next_message(self):
        while b'\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        line = line.strip()
        return json.loads(line) if line else self.next_message()


def kvm_version():
    """PVE::QemuServer::kvm_version: KVM_GET_API_VERSION (0xae00) on /dev/kvm."""
    try:
        fd = os.open(Q.kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fcntl.ioctl(fd, 0xae00, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# config_to_command (PVE::QemuServer::config_to_command, CPUConfig::get_cpu_options)


def bool_key(conf, key, default):
    value = conf.get(key)
    return default if value is None else ps.parse_boolean(value) == 1


def cpu_option(conf, kvm):
    cpu = ps.parse_property_string(FMT_CPU, conf.get('cpu')) if conf.get('cpu') else {}
    # get_default_cpu_type: kvm64 with KVM, qemu64 without
    cputype = cpu.get('cputype') or ('kvm64' if kvm else 'qemu64')
    flags = []
    if cputype != 'host' and kvm:
        flags.append('enforce')  # pve_forced_flags
    pve = {}  # get_pve_cpu_flags
    if cputype == 'kvm64':
        pve['lahf_lm'] = '+'
    if cputype in ('kvm64', 'kvm32'):
        pve['sep'] = '+'
    if conf.get('ostype') == 'solaris':
        pve['x2apic'] = '-'
    if kvm:
        pve['kvm_pv_unhalt'] = '+'
        pve['kvm_pv_eoi'] = '+'
    for flag in (cpu.get('flags') or '').split(';'):
        if flag:
            op, name = (flag[0], flag[1:]) if flag[0] in '+-' else ('+', flag)
            pve[name] = op
    flags += [pve[name] + name for name in sorted(pve)]
    return ','.join([cputype] + flags)


# The tap's script, as qemu-server's /usr/libexec/qemu-server/pve-bridge.
BRIDGE_SCRIPT = os.path.join(os.path.dirname(os.path.realpath(__file__)), 'pve-bridge')
MAX_NETS = 32


def net_devices(vmid, conf):
    """print_netdev_full + print_netdevice_full for each netN with a bridge: a tap
    tap<vmid>i<N> that pve-bridge plugs into the bridge, the NIC at pci_addr netN
    (bus pci.0, slot 0x12 + N)."""
    cmd = []
    for i in range(MAX_NETS):
        value = conf.get(f'net{i}')
        if not value:
            continue
        net = ps.parse_property_string(FMT_NET, value)
        model = next((m for m in NET_MODELS if m in net), None)
        if model is None:
            raise PveError(f'unable to parse network options for net{i}')
        if not net.get('bridge'):
            # SIMPLIFIED: no user-mode (SLIRP) networking
            raise PveError(f"net{i}: a NIC without a bridge is not supported by the PVE "
                           "stand-in")
        if i > 5:
            # SIMPLIFIED: pci_addr places net6 and up on pci.1; not here
            raise PveError(f'net{i}: not supported by the PVE stand-in (net0 to net5 only)')
        ifname = f'tap{vmid}i{i}'
        if len(ifname) >= 16:
            raise PveError(f"interface name '{ifname}' is too long (max 15 character)")
        # SIMPLIFIED: no vhost=on, no queues/mtu/rate options on the device
        cmd += ['-netdev', f'type=tap,id=net{i},ifname={ifname},script={BRIDGE_SCRIPT},'
                           f'downscript={BRIDGE_SCRIPT}down',
                '-device', f"{'virtio-net-pci' if model == 'virtio' else model},"
                           f'mac={net[model]},netdev=net{i},bus=pci.0,addr={0x12 + i:#x},'
                           f'id=net{i}']
    return cmd


def bridge_plug(ifname):
    """pve-bridge (QEMU's tap script): the tap into its netN's bridge, up
    (PVE::Network::tap_plug without firewall, VLAN tag or rate)."""
    m = re.fullmatch(r'tap(\d+)i(\d+)', ifname)
    if not m:
        raise PveError(f"got strange interface name '{ifname}'")
    vmid, i = m.group(1), int(m.group(2))
    conf = load_config(vmid)
    value = conf.get(f'net{i}')
    if not value:
        raise PveError(f'unable to get network config \'net{i}\'')
    bridge = ps.parse_property_string(FMT_NET, value).get('bridge')
    if not bridge or not os.path.isdir(f'/sys/class/net/{bridge}/bridge'):
        raise PveError(f"bridge '{bridge}' does not exist")
    for args in (['link', 'set', ifname, 'master', bridge], ['link', 'set', ifname, 'up']):
        res = subprocess.run(['ip'] + args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            raise PveError(f"can't add interface '{ifname}' to bridge '{bridge}': "
                           + res.stdout.decode('utf-8', 'replace').strip())


def config_to_command(vmid, conf):
    kvm = bool_key(conf, 'kvm', True)
    if kvm and kvm_version() is None:
        raise PveError('KVM virtualisation configured, but not available. Either disable in '
                       'VM configuration or enable in BIOS.')
    for key in sorted(conf.opts):
        if re.fullmatch(r'(ide|sata|scsi|virtio|efidisk|tpmstate|hostpci|usb|virtiofs)\d+',
                        key) and key != 'unused':
            # SIMPLIFIED: no disks, passthrough or virtiofs
            raise PveError(f"{key}: not supported by the PVE stand-in (use 'args')")
    machine = conf.get('machine') or 'pc'
    if not re.fullmatch(r'(pc|pc-i440fx-[\d.]+)(\+pve\d+)?', machine):
        raise PveError(f"machine type '{machine}' not supported by the PVE stand-in")
    vga = ps.parse_property_string(FMT_VGA, conf.get('vga')) if conf.get('vga') else {}
    vga_type = vga.get('type') or 'std'
    graphic = vga_type != 'none' and not re.fullmatch(r'serial\d+', vga_type)

    name = conf.get('name') or f'vm{vmid}'
    cmd = []
    if conf.get('affinity'):
        cmd += ['/usr/bin/taskset', '--cpu-list', '--all-tasks', conf.get('affinity')]
    # SIMPLIFIED: no `-id VMID` (a pve-qemu option; stock QEMU: "-id: invalid option")
    cmd += [Q.binary, '-name', f'{name},debug-threads=on', '-no-shutdown']
    cmd += ['-chardev', f"socket,id=qmp,path={run_file(vmid, 'qmp')},server=on,wait=off",
            '-mon', 'chardev=qmp,mode=control']
    cmd += ['-chardev', f"socket,id=qmp-event,path={run_file(vmid, 'qmeventd')},"
                        "reconnect-ms=5000",
            '-mon', 'chardev=qmp-event,mode=control']
    cmd += ['-pidfile', pidfile(vmid), '-daemonize']
    if conf.get('smbios1'):
        cmd += ['-smbios', 'type=1,' + conf.get('smbios1')]
    sockets = int(conf.get('sockets') or 1)
    cores = int(conf.get('cores') or 1)
    maxcpus = sockets * cores
    vcpus = int(conf.get('vcpus') or maxcpus)
    allowed = os.cpu_count() or 1
    if allowed < maxcpus:
        raise PveError(f'MAX {allowed} vcpus allowed per VM on this node')
    cmd += ['-smp', f'{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}']
    cmd += ['-nodefaults']
    # SIMPLIFIED: no splash=/usr/share/qemu-server/bootsplash.jpg (not installed here)
    cmd += ['-boot', 'menu=on,strict=on,reboot-timeout=1000']
    if conf.get('reboot') is not None and not bool_key(conf, 'reboot', True):
        cmd += ['-no-reboot']
    if graphic:
        cmd += ['-vnc', f"unix:{run_file(vmid, 'vnc')},password=on"]
    else:
        if vga_type == 'none':
            cmd += ['-vga', 'none']
        cmd += ['-nographic']
    cmd += ['-cpu', cpu_option(conf, kvm)]
    cmd += ['-m', str(memory_mb(conf))]
    cmd += ['-global', 'PIIX4_PM.disable_s3=1', '-global', 'PIIX4_PM.disable_s4=1']
    cmd += ['-device', 'pci-bridge,id=pci.1,chassis_nr=1,bus=pci.0,addr=0x1e',
            '-device', 'pci-bridge,id=pci.2,chassis_nr=2,bus=pci.0,addr=0x1f']
    if conf.get('vmgenid') and conf.get('vmgenid') != '0':
        cmd += ['-device', f"vmgenid,guid={conf.get('vmgenid')}"]
    cmd += ['-device', 'piix3-usb-uhci,id=uhci,bus=pci.0,addr=0x1.0x2']
    if graphic and bool_key(conf, 'tablet', True):
        cmd += ['-device', 'usb-tablet,id=tablet,bus=uhci.0,port=1']
    if graphic:
        cmd += ['-device', 'VGA,id=vga,bus=pci.0,addr=0x2']  # SIMPLIFIED: std VGA for any type
    for i in range(4):
        path = conf.get(f'serial{i}')
        if not path:
            continue
        if path == 'socket':
            cmd += ['-chardev', f"socket,id=serial{i},path={run_file(vmid, f'serial{i}')},"
                                "server=on,wait=off",
                    '-device', f'isa-serial,chardev=serial{i}']
        else:
            try:
                chardev = stat.S_ISCHR(os.stat(path).st_mode)
            except OSError:
                chardev = False
            if not chardev:
                raise PveError('no such serial device')
            cmd += ['-chardev', f'serial,id=serial{i},path={path}',
                    '-device', f'isa-serial,chardev=serial{i}']
    agent = ps.parse_property_string(FMT_AGENT, conf.get('agent')) if conf.get('agent') else {}
    if agent.get('enabled'):
        # SIMPLIFIED: the agent's virtio-serial port is placed like qemu-server's for
        # type=virtio (no isa type)
        cmd += ['-chardev', f"socket,path={run_file(vmid, 'qga')},server=on,wait=off,id=qga0",
                '-device', 'virtio-serial,id=qga0,bus=pci.0,addr=0x8',
                '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0']
    cmd += net_devices(vmid, conf)
    if conf.get('balloon') != '0':
        cmd += ['-device', 'virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x3,'
                           'free-page-reporting=on']
    flags = []
    if not bool_key(conf, 'acpi', True):
        flags.append('acpi=off')
    if not kvm:
        flags.append('accel=tcg')
    # SIMPLIFIED: stock QEMU has no pc+pveN machine versions: type=pc (or the pc-i440fx-X
    # given in 'machine', without +pveN)
    flags.append('type=' + re.sub(r'\+pve\d+$', '', machine))
    cmd += ['-machine', ','.join(flags)]
    if conf.get('args'):
        cmd += shlex.split(conf.get('args'))  # PVE::Tools::split_args, appended last
    return cmd


# --------------------------------------------------------------------------------------
# Start, stop, cleanup

RUN_EXTS = ['pid', 'qmp', 'qga', 'vnc', 'serial0', 'serial1', 'serial2', 'serial3']


def remove_run_files(vmid, with_qmeventd=True):
    for ext in RUN_EXTS + (['qmeventd'] if with_qmeventd else []):
        try:
            os.unlink(run_file(vmid, ext))
        except FileNotFoundError:
            pass


def spawn_detached(argv, env):
    """Double fork, new session, stdio /dev/null: returns the grandchild's pid and a
    pipe fd it may write a ready line to (its fd 3)."""
    rfd, wfd = os.pipe()
    pidr, pidw = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            os.close(rfd)
            os.close(pidr)
            os.setsid()
            grand = os.fork()
            if grand == 0:
                null = os.open('/dev/null', os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.dup2(wfd, 3)
                os.closerange(4, 1024)
                os.chdir('/')
                os.execve(argv[0], argv, env)
            os.write(pidw, str(grand).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    os.close(pidw)
    os.waitpid(child, 0)
    data = os.read(pidr, 64)
    os.close(pidr)
    return int(data), rfd


def standin_env():
    """The stand-in's own settings, for what it starts (qmeventd, QEMU's scripts)."""
    return {k: v for k, v in os.environ.items() if k.startswith('PVE_STANDIN_')}


def start_qmeventd(vmid):
    env = dict({'PATH': ps.CLI_PATH, 'LANG': 'C'}, **standin_env())
    pid, rfd = spawn_detached([sys.executable, '-I', os.path.realpath(__file__), 'qmeventd',
                               str(vmid)], env)
    with os.fdopen(rfd, 'rb') as f:
        line = f.readline()  # "ready" once it listens, EOF if it failed
    if line.strip() != b'ready':
        raise PveError(f'start failed: unable to start qmeventd for VM {vmid}')
    return pid


def vm_start(vmid):
    with ConfigLock(vmid):
        conf = load_config(vmid)
        if ps.parse_boolean(conf.get('template') or '0'):
            raise PveError("you can't start a vm if it's a template")
        check_lock(conf)
        if check_running(vmid):
            raise PveError(f'VM {vmid} already running')
        cmd = config_to_command(vmid, conf)
        os.makedirs(Q.run, exist_ok=True)
        remove_run_files(vmid)
        watcher = start_qmeventd(vmid)
        sys.stdout.flush()
        # SIMPLIFIED: PVE runs QEMU in the systemd scope <vmid>.scope (qemu.slice), with
        # cpulimit and cpuunits as its CPUQuota and CPUWeight; here there is no scope
        # (those two are not applied), and -daemonize alone detaches QEMU (QEMU double-forks and calls setsid), so it is
        # re-parented to init or the nearest child subreaper.
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, cwd='/',
                             env=dict({'PATH': ps.CLI_PATH, 'LANG': 'C', 'HOME': '/'},
                                      **standin_env()), timeout=120)
        out = res.stdout.decode('utf-8', 'replace')
        if out:
            task_print(out)
        if res.returncode != 0:
            try:
                os.kill(watcher, signal.SIGTERM)
            except OSError:
                pass
            remove_run_files(vmid)
            raise PveError(f'start failed: QEMU exited with code {res.returncode}')


def vm_stop_cleanup(vmid):
    """vm_stop_cleanup: the run files of a VM that is no longer running."""
    if not check_running(vmid):
        remove_run_files(vmid, with_qmeventd=False)


def do_vm_stop(vmid, timeout, shutdown, force, skiplock=False):
    """_do_vm_stop: QMP quit (or system_powerdown), poll, then SIGTERM/SIGKILL."""
    pid = check_running(vmid)
    if not pid:
        return
    conf = load_config(vmid)
    if not skiplock:
        check_lock(conf)
    err = None
    try:
        qmp_command(vmid, ['system_powerdown' if shutdown else 'quit'])
    except PveError as e:
        err = e
    if err is None:
        timeout = 60 if timeout is None else timeout
        # SIMPLIFIED: polls every 0.1 s (PVE: once a second), same limit
        if wait_stopped(vmid, timeout):
            vm_stop_cleanup(vmid)
            return
        if force:
            warn('VM still running - terminating now with SIGTERM')
            kill(pid, signal.SIGTERM)
        else:
            raise PveError('VM quit/powerdown failed - got timeout')
    else:
        if not check_running(vmid):
            warn('Unexpected: VM shutdown command failed, but VM not running anymore..')
            return
        if force:
            warn('VM quit/powerdown failed - terminating now with SIGTERM')
            kill(pid, signal.SIGTERM)
        else:
            raise PveError('VM quit/powerdown failed')
    if not wait_stopped(vmid, 10):
        warn('VM still running - terminating now with SIGKILL')
        kill(pid, signal.SIGKILL)
        time.sleep(1)
    vm_stop_cleanup(vmid)


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def wait_stopped(vmid, timeout):
    deadline = time.monotonic() + timeout
    while check_running(vmid):
        if timeout is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------------------
# The qmeventd stand-in (src/qmeventd/qmeventd.c): QEMU connects to it as a QMP client
# socket; on SHUTDOWN it asks query-status and, unless the VM is still active, sends
# `quit` (terminate_client), SIGTERM/SIGKILL if QEMU does not go (kill_timeout, 60 s);
# once QEMU closes the socket it runs the equivalent of `qm cleanup <vmid> ...`.

ACTIVE = ('running', 'paused', 'suspended', 'prelaunch')


def qmeventd_main(vmid):
    global Q
    ps.S = ps.Settings()
    Q = QmSettings()
    path = run_file(vmid, 'qmeventd')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener.bind(path)
    listener.listen(1)
    os.write(3, b'ready\n')
    os.close(3)
    listener.settimeout(130)  # QEMU connects at once; vm_start waits at most 120 s
    try:
        conn, _ = listener.accept()
    except socket.timeout:
        os.unlink(path)
        return 0
    listener.close()
    os.unlink(path)
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    qemu_pid = struct.unpack('3i', creds)[0]
    reader = QmpReader(conn)
    terminating_since = None
    pending = []  # commands sent, answers expected in order
    conn.settimeout(1.0)
    conn.sendall(b'{"execute":"qmp_capabilities"}\n')
    pending.append('qmp_capabilities')
    while True:
        try:
            msg = reader.next_message()
        except socket.timeout:
            if terminating_since and time.monotonic() - terminating_since > 60:
                kill(qemu_pid, signal.SIGKILL)  # "cleanup failed, terminating pid"
            continue
        except (OSError, ValueError):
            msg = None
        if msg is None:
            break
        if 'event' in msg:
            if msg['event'] == 'SHUTDOWN' and not terminating_since:
                conn.sendall(b'{"execute":"query-status"}\n')
                pending.append('query-status')
        elif 'return' in msg or 'error' in msg:
            cmd = pending.pop(0) if pending else None
            if cmd == 'query-status':
                status = msg.get('return', {}).get('status') if 'return' in msg else None
                if status not in ACTIVE and not terminating_since:
                    try:
                        conn.sendall(b'{"execute":"quit"}\n')
                    except OSError:
                        kill(qemu_pid, signal.SIGTERM)
                    terminating_since = time.monotonic()
    conn.close()
    # qm cleanup: wait up to 30 s for the QEMU process to exit, then remove its files
    # (SIMPLIFIED: no hookscript, no reboot request handling, no volume deactivation)
    deadline = time.monotonic() + 30
    while os.path.exists(f'/proc/{qemu_pid}') and time.monotonic() < deadline:
        stat = proc_state(qemu_pid)
        if stat is None or stat[0] in ('Z', 'X'):
            break
        time.sleep(0.05)
    try:
        with ConfigLock(vmid, timeout=60):
            current = check_running(vmid)
            if not current or current == qemu_pid:
                if not current:
                    remove_run_files(vmid, with_qmeventd=False)
    except PveError:
        pass
    return 0


# --------------------------------------------------------------------------------------
# Verbs


def vmstatus(vmid, conf, full=False):
    pid = check_running(vmid)
    d = {'vmid': vmid, 'status': 'running' if pid else 'stopped',
         'name': conf.get('name') or f'VM {vmid}', 'disk': 0, 'maxdisk': 0,
         'maxmem': memory_mb(conf) * 1024 * 1024, 'uptime': 0, 'cpu': 0, 'mem': 0,
         'memhost': 0, 'netin': 0, 'netout': 0, 'diskread': 0, 'diskwrite': 0}
    cpus = int(conf.get('sockets') or 1) * int(conf.get('cores') or 1)
    d['cpus'] = min(cpus, os.cpu_count() or 1)
    if conf.get('vcpus'):
        d['cpus'] = int(conf.get('vcpus'))
    if pid:
        d['pid'] = pid
    if ps.parse_boolean(conf.get('template') or '0'):
        d['template'] = 1
    if any(conf.get(f'serial{i}') for i in range(4)):
        d['serial'] = 1
    if conf.get('lock'):
        d['lock'] = conf.get('lock')
    if conf.get('tags') is not None:
        d['tags'] = conf.get('tags')
    if pid:
        stat = proc_state(pid)
        if stat:
            hz = os.sysconf('SC_CLK_TCK')
            with open('/proc/uptime') as f:
                up = float(f.read().split()[0])
            d['uptime'] = int(up - int(stat[19]) / hz)
            d['mem'] = d['memhost'] = int(stat[21]) * os.sysconf('SC_PAGE_SIZE')
    if full:
        d['ha'] = {'managed': 0}
        if pid:
            try:
                res = qmp_command(vmid, ['query-status', 'query-version'])
                d['qmpstatus'] = res[0].get('status')
                v = res[1].get('qemu', {})
                d['running-qemu'] = f"{v.get('major')}.{v.get('minor')}.{v.get('micro')}"
            except PveError:
                pass  # PVE: warn-free fallback to 'status' below
        d.setdefault('qmpstatus', d['status'])
    return d


@command('create', ['vmid'], task=True)
def cmd_create(argv):
    extra = {'start': P('boolean'), 'pool': P(), 'storage': P(), 'unique': P('boolean'),
             'archive': P(), 'force': P('boolean'), 'bwlimit': P('integer', 0),
             'live-restore': P('boolean'), 'ha-managed': P('boolean')}
    p = parse('create', argv, all_props(extra), ['vmid'])
    vmid = p.pop('vmid')
    for unsupported in ('archive', 'pool', 'ha-managed', 'live-restore', 'force', 'unique'):
        if p.get(unsupported):
            raise PveError(f'--{unsupported} is not supported by the PVE stand-in')
    start_after = p.pop('start', 0)
    for key in ('storage', 'bwlimit', 'force', 'unique', 'live-restore'):
        p.pop(key, None)
    for key in [k for k in p if re.fullmatch(r'unused\d+', k)]:
        raise ParamError({key: 'option error - cannot create/restore with unused volume'})
    # 'args' may only be set by root@pam (API2/Qemu.pm check_vm_modify_config_perm); the
    # stand-in runs as root.
    add_random_macs(p)
    emsg = f'unable to create VM {vmid} -'
    with ConfigLock(vmid):  # create_and_lock_config
        try:
            ps.check_vmid_unused(vmid)
        except PveError as err:
            raise PveError(f'{emsg} {err.msg}')
        lockconf = ps.Conf()
        lockconf.opts['lock'] = 'create'
        write_config(vmid, lockconf)

    def create_task():
        with ConfigLock(vmid):
            try:
                conf = ps.Conf()
                for key, value in p.items():
                    conf.opts[key] = str(value)
                conf.opts.setdefault('smbios1', f'uuid={uuid.uuid4()}')
                if conf.opts.get('vmgenid', '1') == '1':
                    conf.opts['vmgenid'] = str(uuid.uuid4())
                conf.opts['meta'] = f'creation-qemu={qemu_version()},ctime={int(time.time())}'
                write_config(vmid, conf)
            except (PveError, OSError) as err:
                try:
                    os.unlink(conf_path(vmid))
                except OSError:
                    pass
                msg = err.msg if isinstance(err, PveError) else str(err)
                raise PveError(f'{emsg} {msg}')
        if start_after:
            vm_start(vmid)

    return run_task(create_task)


def qemu_version():
    """kvm_user_version: from `qemu-system-x86_64 --version`."""
    try:
        out = subprocess.run([Q.binary, '--version'], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL).stdout
        m = re.search(rb'version (\d+\.\d+(\.\d+)?)', out)
        if m:
            return m.group(1).decode()
    except OSError:
        pass
    return '0.0.0'


@command('config', ['vmid'])
def cmd_config(argv):
    p = parse('config', argv, {'current': P('boolean'), 'snapshot': P()}, ['vmid'])
    conf = load_config(p['vmid'])
    if 'snapshot' in p:
        raise PveError(f"snapshot '{p['snapshot']}' does not exist")
    out = []
    for key in sorted(conf.opts):
        value = conf.opts[key]
        if key == 'description':
            value = ps.encode_text(value)
        out.append(f'{key}: {value}\n')
    sys.stdout.write(''.join(out))
    return 0


@command('list', [])
def cmd_list(argv):
    parse('list', argv, {'full': P('boolean')}, [])
    rows = []
    for vmid, kind in sorted(ps.vm_list().items()):
        if kind != 'qemu':
            continue
        try:
            conf = load_config(vmid)
        except PveError:
            continue
        rows.append(vmstatus(vmid, conf))
    if not rows:
        return 0
    print('%10s %-20s %-10s %-10s %12s %-10s' % ('VMID', 'NAME', 'STATUS', 'MEM(MB)',
                                                 'BOOTDISK(GB)', 'PID'))
    for d in rows:
        print('%10s %-20s %-10s %-10s %12.2f %-10s' % (
            d['vmid'], d['name'], d.get('qmpstatus') or d['status'],
            ps.fmt_num(d['maxmem'] / (1024 * 1024)), d['maxdisk'] / (1 << 30), d.get('pid', 0)))
    return 0


def print_recursive(prefix, value, key=None):
    """PVE::CLI::qm print_recursive_hash."""
    if isinstance(value, dict):
        if key is not None:
            print(f'{prefix}{key}:')
        for k in sorted(value):
            print_recursive('\t' + prefix, value[k], k)
    elif value is not None:
        print(f'{prefix}{key}: {ps.fmt_num(value)}' if key is not None else f'{prefix}{value}')


@command('status', ['vmid'])
def cmd_status(argv):
    p = parse('status', argv, {'verbose': P('boolean')}, ['vmid'])
    vmid = p['vmid']
    conf = load_config(vmid)
    stat = vmstatus(vmid, conf, full=True)
    if p.get('verbose'):
        for key in sorted(stat):
            if key in ('cpu', 'relcpu'):
                continue
            print_recursive('', stat[key], key)
    else:
        print(f"status: {stat.get('qmpstatus') or 'unknown'}")
    return 0


@command('set', ['vmid'])
def cmd_set(argv):
    props = all_props({'delete': P(), 'revert': P(), 'digest': P(max_length=40),
                       'skiplock': P('boolean'), 'force': P('boolean')})
    p = parse('set', argv, props, ['vmid'])
    vmid = p.pop('vmid')
    delete = [k for k in re.split(r'[,;\s]+', p.pop('delete', '')) if k]
    if p.pop('revert', None):
        raise PveError('--revert is not supported by the PVE stand-in (no pending changes)')
    digest = p.pop('digest', None)
    skiplock = p.pop('skiplock', 0)
    p.pop('force', None)
    errors = {}
    for key in delete:
        if lookup_prop(all_props(), key) is None:
            errors['delete'] = f"invalid format - invalid configuration ID '{key}'"
        elif key in p:
            errors[key] = "can't set option '%s' and delete it at the same time" % key
    if errors:
        raise ParamError(errors)
    if not p and not delete:
        raise PveError('no options specified')
    add_random_macs(p)
    with ConfigLock(vmid):
        conf = load_config(vmid)
        if digest and digest != conf.digest:
            raise PveError('detected modified configuration - file changed by other user? '
                           'Try again.')
        if not skiplock and 'lock' not in p and 'lock' not in delete:
            check_lock(conf)
        for key in delete:
            conf.opts.pop(key, None)
        for key, value in p.items():
            conf.opts[key] = str(value)
        write_config(vmid, conf)
    # SIMPLIFIED: PVE queues changes of a running VM that cannot be hotplugged as
    # [PENDING]; here the config is written at once and takes effect at the next start.
    return 0


@command('start', ['vmid'], task=True)
def cmd_start(argv):
    p = parse('start', argv, {'skiplock': P('boolean'), 'timeout': P('integer', 0, 86400),
                              'machine': P(), 'forcecpu': P()}, ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    if check_running(vmid):
        raise PveError(f'VM {vmid} already running')
    return run_task(vm_start, vmid)


@command('stop', ['vmid'], task=True)
def cmd_stop(argv):
    p = parse('stop', argv, {'skiplock': P('boolean'), 'timeout': P('integer', 0),
                             'keepActive': P('boolean'), 'overrule-shutdown': P('boolean'),
                             'migratedfrom': P()}, ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    if not check_running(vmid):
        raise PveError(f'VM {vmid} not running')

    def task():
        with ConfigLock(vmid):
            timeout = int(p['timeout']) if 'timeout' in p else None
            do_vm_stop(vmid, timeout, False, True, p.get('skiplock', 0))

    return run_task(task)


@command('shutdown', ['vmid'], task=True)
def cmd_shutdown(argv):
    p = parse('shutdown', argv, {'skiplock': P('boolean'), 'timeout': P('integer', 0),
                                 'forceStop': P('boolean'), 'keepActive': P('boolean')},
              ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    if not check_running(vmid):
        raise PveError(f'VM {vmid} not running')

    def task():
        with ConfigLock(vmid, timeout=10):
            timeout = int(p['timeout']) if 'timeout' in p else None
            do_vm_stop(vmid, timeout, True, p.get('forceStop', 0), p.get('skiplock', 0))

    return run_task(task)


@command('wait', ['vmid'])
def cmd_wait(argv):
    p = parse('wait', argv, {'timeout': P('integer', 1)}, ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    pid = check_running(vmid)
    if not pid:
        return 0
    print(f'waiting until VM {vmid} stops (PID {pid})')
    sys.stdout.flush()
    timeout = int(p['timeout']) if 'timeout' in p else None
    deadline = None if timeout is None else time.monotonic() + timeout
    while check_running(vmid) and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.1)  # SIMPLIFIED: PVE polls once a second
    if check_running(vmid):
        raise PveError('wait failed - got timeout')
    return 0


def cmd2string(cmd):
    """PVE::Tools::cmd2string as seen in src/test/cfg2cmd/*.conf.cmd: words with
    characters beyond [\\w/.,+-] are single-quoted."""
    out = []
    for arg in cmd:
        if arg and re.fullmatch(r'[\w/.,+\-]+', arg):
            out.append(arg)
        else:
            out.append("'" + arg.replace("'", "'\\''") + "'")
    return ' '.join(out)


@command('showcmd', ['vmid'])
def cmd_showcmd(argv):
    # qm showcmd: vm_commandline, `--pretty` puts each option on its own line
    p = parse('showcmd', argv, {'pretty': P('boolean'), 'snapshot': P()}, ['vmid'])
    conf = load_config(p['vmid'])
    if 'snapshot' in p:
        raise PveError(f"snapshot '{p['snapshot']}' does not exist")
    line = cmd2string(config_to_command(p['vmid'], conf))
    if p.get('pretty'):
        line = line.replace(' -', ' \\\n  -')
    print(line)
    return 0


@command('destroy', ['vmid'], task=True)
def cmd_destroy(argv):
    p = parse('destroy', argv, {'purge': P('boolean'), 'skiplock': P('boolean'),
                                'destroy-unreferenced-disks': P('boolean')}, ['vmid'])
    vmid = p['vmid']

    def early_checks():
        conf = load_config(vmid)
        if ps.parse_boolean(conf.get('protection') or '0'):
            raise PveError(f"can't remove VM {vmid} - protection mode enabled")
        if check_running(vmid):
            raise PveError(f'VM {vmid} is running - destroy failed')
        return conf

    early_checks()

    def task():
        with ConfigLock(vmid):
            conf = early_checks()
            if not p.get('skiplock'):
                check_lock(conf)
            # destroy_vm: no disks in this stand-in; the config is written with
            # lock: destroyed first, removed at the very end
            conf.opts['lock'] = 'destroyed'
            write_config(vmid, conf)
            remove_run_files(vmid)
            if p.get('purge'):
                task_print(f'purging VM {vmid} from related configurations..')
            os.unlink(conf_path(vmid))

    return run_task(task)


@command('suspend', ['vmid'], task=True)
def cmd_suspend(argv):
    """API2::Qemu vm_suspend (task qmpause) -> RunState::vm_suspend: QMP `stop`."""
    p = parse('suspend', argv, {'skiplock': P('boolean'), 'todisk': P('boolean'),
                                'statestorage': P()}, ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    if p.get('todisk'):
        # SIMPLIFIED: no storage for the state
        raise PveError('--todisk is not supported by the PVE stand-in')
    if not check_running(vmid):
        raise PveError(f'VM {vmid} not running')

    def task():
        with ConfigLock(vmid):
            conf = load_config(vmid)
            # a backup's lock does not stop a suspend (vm_suspend's $is_backing_up)
            if not (p.get('skiplock') or conf.get('lock') == 'backup'):
                check_lock(conf)
            qmp_command(vmid, ['stop'])

    return run_task(task)


@command('resume', ['vmid'], task=True)
def cmd_resume(argv):
    """API2::Qemu vm_resume (task qmresume) -> RunState::vm_resume: nothing if QEMU
    runs, `system_wakeup` if the guest suspended itself, else `cont`."""
    p = parse('resume', argv, {'skiplock': P('boolean'), 'nocheck': P('boolean')}, ['vmid'])
    vmid = p['vmid']
    load_config(vmid)
    if not check_running(vmid):
        raise PveError(f'VM {vmid} not running')

    def task():
        with ConfigLock(vmid):
            status = qmp_command(vmid, ['query-status'])[0].get('status')
            conf = load_config(vmid)
            if ps.parse_boolean(conf.get('template') or '0'):
                raise PveError(f'VM {vmid} is a template and cannot be resumed!')
            if status == 'running':
                return
            if not (p.get('nocheck') or p.get('skiplock') or conf.get('lock') == 'backup'):
                check_lock(conf)
            if status == 'shutdown':
                # a guest that shut down during a backup is reset first
                qmp_command(vmid, ['system_reset'])
            qmp_command(vmid, ['system_wakeup' if status == 'suspended' else 'cont'])

    return run_task(task)


NOT_IMPLEMENTED = ['agent', 'cleanup', 'clone', 'cloudinit', 'delsnapshot', 'disk',
                   'guest', 'help', 'import', 'importdisk', 'importovf', 'listsnapshot',
                   'migrate', 'mtunnel', 'monitor', 'move-disk', 'move_disk', 'nbdstop',
                   'pending', 'reboot', 'remote-migrate', 'rescan', 'reset', 'resize',
                   'rollback', 'sendkey', 'snapshot',
                   'template', 'terminal', 'unlink', 'unlock', 'vncproxy', 'vncticket']


def main(argv):
    global Q
    os.environ['PATH'] = ps.CLI_PATH
    ps.S = ps.Settings()
    Q = QmSettings()
    if not argv:
        sys.stderr.write("ERROR: no command specified\nUSAGE: qm <COMMAND> [ARGS] [OPTIONS]\n")
        return 255
    verb = argv[0]
    if verb in NOT_IMPLEMENTED:
        sys.stderr.write(f"qm {verb}: not implemented by the PVE stand-in (hack/pve)\n")
        return 255
    if verb not in COMMANDS:
        sys.stderr.write(f"ERROR: unknown command 'qm {verb}'\n"
                         "USAGE: qm <COMMAND> [ARGS] [OPTIONS]\n")
        return 255
    if os.geteuid() != 0:
        sys.stderr.write('ERROR: this command requires root privileges\n')
        return 255
    func, arg_names, _ = COMMANDS[verb]
    try:
        return func(argv[1:]) or 0
    except ParamError as err:
        if err.usage is None:
            err.usage = usage_line(verb, arg_names)
        sys.stderr.write(err.render())
        return 255
    except PveError as err:
        sys.stderr.write(err.msg if err.msg.endswith('\n') else err.msg + '\n')
        return 255
    except OSError as err:
        sys.stderr.write(f'{err}\n')
        return 255


def bridge_script_main(action, ifname):
    """pve-bridge IFNAME: plug; pve-bridgedown: nothing to undo here (the tap goes
    with QEMU)."""
    global Q
    os.environ['PATH'] = ps.CLI_PATH
    ps.S = ps.Settings()
    Q = QmSettings()
    if action == 'down':
        return 0
    try:
        bridge_plug(ifname)
    except PveError as err:
        sys.stderr.write(f'{err.msg}\n')
        return 25
    return 0


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'qmeventd':
        sys.exit(qmeventd_main(int(sys.argv[2])))
    if len(sys.argv) == 3 and sys.argv[1] in ('plug', 'down'):
        sys.exit(bridge_script_main(sys.argv[1], sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
