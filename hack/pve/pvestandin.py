"""Stand-in for Proxmox VE's `pct` and `pvesh` (pve-container 6.x / PVE 9.1 CLI); `qm`
(qemu-server 9.x) is in qmstandin.py, which reuses the helpers here.

Used by nexcage's tests on machines without Proxmox: it follows pct's argv, output
formats, exit codes and error texts, stores configs in PVE's format and runs the
containers with stock LXC, started the way pve-container@.service does (detached
`lxc-start -F`, stdout /dev/null, stderr to <run dir>/ct-<vmid>.stderr).

Environment (all optional; a test points them at a temporary directory):

  PVE_STANDIN_ROOT         prefix of every default path below (default: "", the real paths)
  PVE_STANDIN_CONF_DIR     CT configs, PVE's /etc/pve/lxc = nodes/<node>/lxc  ($ROOT/etc/pve/lxc)
  PVE_STANDIN_QEMU_DIR     VM configs (qm; pct and pvesh only read them: their ids are taken)
                           ($ROOT/etc/pve/qemu-server)
  PVE_STANDIN_TEMPLATE_DIR storage 'local', content vztmpl          ($ROOT/var/lib/vz/template/cache)
  PVE_STANDIN_IMAGES_DIR   rootfs/mount point volumes               ($ROOT/var/lib/vz/images)
  PVE_STANDIN_LXC_PATH     LXC's lxcpath (generated config, lxc-* -P) ($ROOT/var/lib/lxc)
  PVE_STANDIN_RUN_DIR      ct-<vmid>.stderr files, like /run/pve      ($ROOT/run/pve)
  PVE_STANDIN_LOCK_DIR     pve-config-<vmid>.lock files               ($ROOT/run/lock/lxc)
  PVE_STANDIN_NODE         node name                                  (short hostname)
  PVE_STANDIN_STORAGE      id of the storage that holds container volumes (local)
  PVE_STANDIN_CGROUP_PREFIX  prepended to the CT cgroups lxc/<vmid> and lxc.monitor/<vmid>,
                           e.g. "nexcage-test-1234/" so that parallel isolated runs using the
                           same vmid do not collide (default "": exactly PVE's layout)

nexcage may run pct with an empty environment; a test that needs these variables then
points nexcage at a wrapper script that exports them and execs hack/pve/pct.

Simplifications relative to PVE are marked "SIMPLIFIED" below and listed in README.md.
"""

import fcntl
import glob
import hashlib
import mmap
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

# --------------------------------------------------------------------------------------
# Settings


def _env(name, default):
    value = os.environ.get(name)
    return value if value else default


class Settings:
    def __init__(self):
        root = os.environ.get('PVE_STANDIN_ROOT', '').rstrip('/')
        self.conf_dir = _env('PVE_STANDIN_CONF_DIR', root + '/etc/pve/lxc')
        self.qemu_dir = _env('PVE_STANDIN_QEMU_DIR', root + '/etc/pve/qemu-server')
        self.template_dir = _env('PVE_STANDIN_TEMPLATE_DIR', root + '/var/lib/vz/template/cache')
        self.images_dir = _env('PVE_STANDIN_IMAGES_DIR', root + '/var/lib/vz/images')
        self.lxc_path = os.path.abspath(_env('PVE_STANDIN_LXC_PATH', root + '/var/lib/lxc'))
        self.run_dir = _env('PVE_STANDIN_RUN_DIR', root + '/run/pve')
        self.lock_dir = _env('PVE_STANDIN_LOCK_DIR', root + '/run/lock/lxc')
        self.node = _env('PVE_STANDIN_NODE', socket.gethostname().split('.')[0])
        self.storage = _env('PVE_STANDIN_STORAGE', 'local')
        self.cgroup_prefix = os.environ.get('PVE_STANDIN_CGROUP_PREFIX', '')
        if self.cgroup_prefix and not self.cgroup_prefix.endswith('/'):
            self.cgroup_prefix += '/'


S = None  # Settings, set by the entry points

# PVE's run_cli_handler resets PATH; pct also works when started with an empty environment.
CLI_PATH = '/sbin:/bin:/usr/sbin:/usr/bin'
# What systemd gives pve-container@.service.
UNIT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

VMID_MIN, VMID_MAX = 100, 999999999
ROOT_ID_BASE, ID_RANGE = 100000, 65536  # PVE's fixed unprivileged id map
LXC_CONFIG_DIR = '/usr/share/lxc/config'

# --------------------------------------------------------------------------------------
# Errors and output
#
# Task verbs (create/start/stop/shutdown/reboot/destroy) run as a synchronous worker in
# PVE's CLI: everything the task prints (warnings included) goes to stdout, and a failure
# is printed as one line on stderr (newlines replaced by spaces) with exit code 255.
# Other verbs die: the message goes to stderr, exit code 255.


class PveError(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        self.msg = msg


class ParamError(PveError):
    """PVE::Exception with code 400; the CLI appends the verb's usage line."""

    def __init__(self, errors=None, msg='Parameter verification failed.'):
        super().__init__(msg)
        self.errors = errors or {}
        self.usage = None

    def render(self):
        out = f'400 {self.msg}\n'
        for key in sorted(self.errors):
            out += f'{key}: {self.errors[key]}\n'
        if self.usage:
            out += self.usage + '\n'
        return out


_in_worker = False


def warn(msg):
    """perl's warn: inside a task it lands in the task log (stdout)."""
    out = sys.stdout if _in_worker else sys.stderr
    out.write(msg if msg.endswith('\n') else msg + '\n')
    out.flush()


def task_print(msg):
    sys.stdout.write(msg if msg.endswith('\n') else msg + '\n')
    sys.stdout.flush()


def run_task(func, *args):
    """fork_worker in CLI (sync) mode: returns the exit code ($upid_exit)."""
    global _in_worker
    _in_worker = True
    try:
        func(*args)
    except PveError as err:
        sys.stdout.flush()
        msg = err.render() if isinstance(err, ParamError) else err.msg
        sys.stderr.write(msg.rstrip('\n').replace('\n', ' ') + '\n')
        return 255
    except OSError as err:
        sys.stdout.flush()
        sys.stderr.write(f'{err}\n')
        return 255
    finally:
        _in_worker = False
    return 0


def cmd_string(cmd):
    return ' '.join(cmd)


def run_command(cmd, timeout=None, quiet=False, **kw):
    """PVE::Tools::run_command: output goes to our stdout unless quiet; dies on failure."""
    stdout = subprocess.DEVNULL if quiet else None
    stderr = subprocess.DEVNULL if quiet else subprocess.STDOUT
    sys.stdout.flush()
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                             timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise PveError(f"command '{cmd_string(cmd)}' failed: got timeout")
    except OSError as err:
        raise PveError(f"command '{cmd_string(cmd)}' failed: {err.strerror}")
    if res.returncode != 0:
        if res.returncode < 0:
            raise PveError(f"command '{cmd_string(cmd)}' failed: received signal {-res.returncode}")
        raise PveError(f"command '{cmd_string(cmd)}' failed: exit code {res.returncode}")


# --------------------------------------------------------------------------------------
# Parameter schema (subset of PVE::LXC::Config's $confdesc and create_vm's parameters)

ENTRYPOINT_RE = r'[^\x00-\x08\x0a-\x1F\x7F]+'
ENV_RE = r'(?:\w+=[^\x00-\x08\x0a-\x1F\x7F]*)(?:\0\w+=[^\x00-\x08\x0a-\x1F\x7F]*)*'
DNS_LABEL = r'[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?'
DNS_NAME_RE = rf'{DNS_LABEL}(\.{DNS_LABEL})*'
TAG_RE = r'[a-z0-9_][a-z0-9_\-+.]*'
LOCKS = ['backup', 'create', 'destroyed', 'disk', 'fstrim', 'migrate', 'mounted', 'rollback',
         'snapshot', 'snapshot-delete']
OSTYPES = ['debian', 'devuan', 'ubuntu', 'centos', 'fedora', 'opensuse', 'archlinux', 'alpine',
           'gentoo', 'nixos', 'unmanaged']
ARCHES = ['amd64', 'i386', 'arm64', 'armhf', 'riscv32', 'riscv64']


class P:
    """One parameter: type is 'string', 'integer', 'number', 'boolean'."""

    def __init__(self, type='string', minimum=None, maximum=None, enum=None, pattern=None,
                 fmt=None, max_length=None, min_length=None, array=False):
        self.type, self.minimum, self.maximum = type, minimum, maximum
        self.enum, self.pattern, self.fmt = enum, pattern, fmt
        self.max_length, self.min_length, self.array = max_length, min_length, array


# Property-string formats: key -> (type, required); 'default_key' is written bare first.
FMT_ROOTFS = {
    'default_key': 'volume',
    'keys': {'volume': 'string', 'acl': 'boolean', 'mountoptions': 'string', 'quota': 'boolean',
             'replicate': 'boolean', 'ro': 'boolean', 'shared': 'boolean', 'size': 'disk-size',
             'idmap': 'string'},  # idmap: pve-container 6.1.6+
    'required': ['volume'],
}
FMT_MP = {
    'default_key': 'volume',
    'keys': dict(FMT_ROOTFS['keys'], mp='string', backup='boolean', keepattrs='boolean'),
    'required': ['volume', 'mp'],
}
FMT_NET = {
    'default_key': None,
    'keys': {'name': 'string', 'bridge': 'string', 'firewall': 'boolean', 'gw': 'string',
             'gw6': 'string', 'host-managed': 'boolean', 'hwaddr': 'string', 'ip': 'string',
             'ip6': 'string', 'link_down': 'boolean', 'mtu': 'integer', 'rate': 'number',
             'tag': 'integer', 'trunks': 'string', 'type': 'string'},
    'required': ['name'],
}
FMT_FEATURES = {
    'default_key': None,
    'keys': {'force_rw_sys': 'boolean', 'fuse': 'boolean', 'keyctl': 'boolean',
             'mknod': 'boolean', 'mount': 'string', 'nesting': 'boolean'},
    'required': [],
}
FMT_DEV = {
    'default_key': 'path',
    'keys': {'path': 'string', 'deny-write': 'boolean', 'gid': 'integer', 'mode': 'string',
             'uid': 'integer'},
    'required': [],
}

CONF_PROPS = {
    'arch': P(enum=ARCHES),
    'cmode': P(enum=['shell', 'console', 'tty']),
    'console': P('boolean'),
    'cores': P('integer', 1, 8192),
    'cpulimit': P('number', 0, 8192),
    'cpuunits': P('integer', 0, 500000),
    'debug': P('boolean'),
    'description': P(max_length=8192),
    'entrypoint': P(pattern=ENTRYPOINT_RE),
    'env': P(pattern=ENV_RE),
    'features': P(fmt=FMT_FEATURES),
    'hookscript': P(),
    'hostname': P(fmt='dns-name', max_length=255),
    'lock': P(enum=LOCKS),
    'memory': P('integer', 16),
    'nameserver': P(),
    'onboot': P('boolean'),
    'ostype': P(enum=OSTYPES),
    'protection': P('boolean'),
    'rootfs': P(fmt=FMT_ROOTFS),
    'searchdomain': P(),
    'startup': P(),
    'swap': P('integer', 0),
    'tags': P(fmt='tag-list'),
    'template': P('boolean'),
    'timezone': P(),
    'tty': P('integer', 0, 6),
    'unprivileged': P('boolean'),
}
INDEXED_PROPS = {  # name -> (max index, P)
    'mp': (255, P(fmt=FMT_MP)),
    'net': (31, P(fmt=FMT_NET)),
    'dev': (255, P(fmt=FMT_DEV)),
    'unused': (255, P()),
}
CREATE_PROPS = {
    'ostemplate': P(max_length=255),
    'password': P(min_length=5),
    'storage': P(pattern=r'[a-z][a-z0-9\-_.]*[a-z0-9]'),
    'force': P('boolean'),
    'restore': P('boolean'),
    'unique': P('boolean'),
    'pool': P(),
    'ignore-unpack-errors': P('boolean'),
    'ssh-public-keys': P(),
    'bwlimit': P('number', 0),
    'start': P('boolean'),
    'ha-managed': P('boolean'),
}
SET_PROPS = {'delete': P(), 'revert': P(), 'digest': P(max_length=40)}


def lookup_prop(props, name):
    if name in props:
        return props[name]
    m = re.fullmatch(r'([a-z]+)(\d+)', name)
    if m and m.group(1) in INDEXED_PROPS and m.group(1) + 'N' in props:
        maxidx, prop = INDEXED_PROPS[m.group(1)]
        if int(m.group(2)) <= maxidx and str(int(m.group(2))) == m.group(2):
            return prop
    return None


def config_props():
    props = dict(CONF_PROPS)
    for name in INDEXED_PROPS:
        props[name + 'N'] = INDEXED_PROPS[name][1]
    return props


def parse_boolean(value):
    if re.fullmatch(r'(?i)1|on|yes|true', value):
        return 1
    if re.fullmatch(r'(?i)0|off|no|false', value):
        return 0
    return None


def fmt_num(value):
    """Print a number the way perl does."""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return '%.15g' % value
    return str(value)


def parse_size(text):
    m = re.fullmatch(r'(\d+(?:\.\d+)?)([KMGT])?', text)
    if not m:
        return None
    mult = {None: 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def format_size(size):
    for unit, mult in (('T', 1 << 40), ('G', 1 << 30), ('M', 1 << 20), ('K', 1 << 10)):
        if size % mult == 0 and size >= mult:
            return f'{size // mult}{unit}'
    return str(size)


def parse_property_string(fmt, text):
    """PVE::JSONSchema::parse_property_string; raises PveError(reason)."""
    res = {}
    for part in text.split(','):
        if part == '':
            continue
        if '=' in part:
            key, value = part.split('=', 1)
        elif fmt['default_key'] and fmt['default_key'] not in res:
            key, value = fmt['default_key'], part
        else:
            raise PveError(f"value without key, but schema does not define a default key")
        ktype = fmt['keys'].get(key)
        if ktype is None:
            raise PveError(f"{key}: property is not defined in schema and the schema does "
                           "not allow additional properties")
        if key in res:
            raise PveError(f"duplicate key in comma-separated list property: {key}")
        if ktype == 'boolean':
            b = parse_boolean(value)
            if b is None:
                raise PveError(f"{key}: type check ('boolean') failed - got '{value}'")
            value = b
        elif ktype == 'integer' and not re.fullmatch(r'[+-]?\d+', value):
            raise PveError(f"{key}: type check ('integer') failed - got '{value}'")
        elif ktype == 'number' and not re.fullmatch(r'[+-]?(\d+(\.\d*)?|\.\d+)', value):
            raise PveError(f"{key}: type check ('number') failed - got '{value}'")
        elif ktype == 'disk-size':
            size = parse_size(value)
            if size is None:
                raise PveError(f"{key}: unable to parse size '{value}'")
            value = size
        res[key] = value
    for key in fmt['required']:
        if key not in res:
            raise PveError(f"{key}: property is missing and it is not optional")
    return res


def print_property_string(fmt, data):
    """PVE::JSONSchema::print_property_string: default key bare, then required, then sorted."""
    parts, done = [], set()

    def value_str(key):
        value = data[key]
        if fmt['keys'].get(key) == 'disk-size':
            return format_size(value)
        return str(value)

    dk = fmt['default_key']
    if dk and dk in data:
        parts.append(value_str(dk))
        done.add(dk)
    for key in sorted(data):
        if key in fmt['required'] and key not in done:
            parts.append(f'{key}={value_str(key)}')
            done.add(key)
    for key in sorted(data):
        if key not in done:
            parts.append(f'{key}={value_str(key)}')
    return ','.join(parts)


def check_value(name, prop, value):
    """JSONSchema check_prop for one CLI value; returns an error text or None."""
    if prop.type == 'boolean':
        return None  # converted during option parsing
    if prop.type == 'integer':
        if not re.fullmatch(r'[+-]?\d+', value):
            return f"type check ('integer') failed - got '{value}'"
        num = int(value)
    elif prop.type == 'number':
        if not re.fullmatch(r'[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?', value):
            return f"type check ('number') failed - got '{value}'"
        num = float(value)
    if prop.type in ('integer', 'number'):
        if prop.minimum is not None and num < prop.minimum:
            return f'value must have a minimum value of {prop.minimum}'
        if prop.maximum is not None and num > prop.maximum:
            return f'value must have a maximum value of {prop.maximum}'
        return None
    if prop.max_length is not None and len(value) > prop.max_length:
        return f'value may only be {prop.max_length} characters long'
    if prop.min_length is not None and len(value) < prop.min_length:
        return f'value must be at least {prop.min_length} characters long'
    if prop.enum is not None and value not in prop.enum:
        return (f"value '{value}' does not have a value in the enumeration '"
                + ', '.join(prop.enum) + "'")
    if prop.pattern is not None and not re.fullmatch(prop.pattern, value, re.S):
        return 'value does not match the regex pattern'
    if prop.fmt == 'dns-name' and not re.fullmatch(DNS_NAME_RE, value):
        return 'invalid format - value does not look like a valid DNS name'
    if prop.fmt == 'tag-list':
        for tag in re.split(r'[;, ]+', value.strip()):
            if tag and not re.fullmatch(TAG_RE, tag):
                return f"invalid format - invalid tag '{tag}'"
    if isinstance(prop.fmt, dict):
        try:
            parse_property_string(prop.fmt, value)
        except PveError as err:
            return f'invalid format - {err.msg}'
    return None


def check_vmid(value, errors, key='vmid'):
    err = check_value(key, P('integer', VMID_MIN, VMID_MAX), value)
    if err:
        errors[key] = err
    return int(value) if not err else None


# --------------------------------------------------------------------------------------
# Command line parsing (PVE::JSONSchema::get_options = Getopt::Long with prefix -- or -)
#
# SIMPLIFIED: option names must be spelled out; Getopt::Long would also accept unique
# abbreviations and any letter case.


def get_options(props, args, arg_names, usage):
    opts, positional, failed = {}, [], False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == '--':
            positional.extend(args[i:])
            break
        if not arg.startswith('-') or arg == '-':
            positional.append(arg)
            continue
        name = arg[2:] if arg.startswith('--') else arg[1:]
        value = None
        if '=' in name:
            name, value = name.split('=', 1)
        prop = lookup_prop(props, name)
        if prop is None:
            sys.stderr.write(f'Unknown option: {name}\n')
            failed = True
            continue
        if prop.type == 'boolean':
            # "name:s": the value is optional; the next word is taken if it is no option.
            if value is None and i < len(args) and not args[i].startswith('-'):
                value = args[i]
                i += 1
            opts[name] = '' if value is None else value
        else:
            if value is None:
                if i >= len(args):
                    sys.stderr.write(f'Option {name} requires an argument\n')
                    failed = True
                    continue
                value = args[i]
                i += 1
            opts[name] = value
    if failed:
        err = ParamError(msg='unable to parse option')
        err.usage = usage
        raise err
    res = {}
    for n, name in enumerate(arg_names):
        if name == 'extra-args':
            res['extra-args'] = positional[n:]
            positional = positional[:n]
            break
        if n >= len(positional):
            err = ParamError(msg='not enough arguments')
            err.usage = usage
            raise err
        res[name] = positional[n]
    else:
        if len(positional) > len(arg_names):
            err = ParamError(msg='too many arguments')
            err.usage = usage
            raise err
    errors = {}
    for name, value in opts.items():
        prop = lookup_prop(props, name)
        if prop.type == 'boolean':
            b = 1 if value == '' else parse_boolean(value)
            if b is None:
                err = ParamError(msg='unable to parse boolean option')
                err.usage = usage
                raise err
            res[name] = b
            continue
        msg = check_value(name, prop, value)
        if msg:
            errors[name] = msg
        res[name] = value
    if 'vmid' in arg_names and 'vmid' in res:
        res['vmid'] = check_vmid(res['vmid'], errors)
    if errors:
        err = ParamError(errors)
        err.usage = usage
        raise err
    return res


# --------------------------------------------------------------------------------------
# Config files (PVE::LXC::Config parse_pct_config / write_pct_config)

VALID_LXC_KEYS = {
    'lxc.apparmor.profile', 'lxc.apparmor.allow_incomplete', 'lxc.apparmor.allow_nesting',
    'lxc.apparmor.raw', 'lxc.selinux.context', 'lxc.include', 'lxc.arch', 'lxc.uts.name',
    'lxc.signal.halt', 'lxc.signal.reboot', 'lxc.signal.stop', 'lxc.init.cmd', 'lxc.init.cwd',
    'lxc.init.uid', 'lxc.init.gid', 'lxc.init.groups', 'lxc.pty.max', 'lxc.console.logfile',
    'lxc.console.path', 'lxc.tty.max', 'lxc.devtty.dir', 'lxc.hook.autodev', 'lxc.autodev',
    'lxc.kmsg', 'lxc.mount.fstab', 'lxc.mount.entry', 'lxc.mount.auto', 'lxc.rootfs.mount',
    'lxc.cap.drop', 'lxc.cap.keep', 'lxc.seccomp.profile', 'lxc.seccomp.notify.proxy',
    'lxc.seccomp.notify.cookie', 'lxc.idmap', 'lxc.hook.pre-start', 'lxc.hook.pre-mount',
    'lxc.hook.mount', 'lxc.hook.start', 'lxc.hook.stop', 'lxc.hook.post-stop',
    'lxc.hook.clone', 'lxc.hook.destroy', 'lxc.hook.version', 'lxc.log.level', 'lxc.log.file',
    'lxc.start.auto', 'lxc.start.delay', 'lxc.start.order', 'lxc.group', 'lxc.environment',
    'lxc.environment.runtime', 'lxc.environment.hooks', 'lxc.sysctl.fs.mqueue',
    'lxc.sysctl.kernel.msgmax', 'lxc.sysctl.kernel.msgmnb', 'lxc.sysctl.kernel.msgmni',
    'lxc.sysctl.kernel.sem', 'lxc.sysctl.kernel.shmall', 'lxc.sysctl.kernel.shmmax',
    'lxc.sysctl.kernel.shmmni', 'lxc.sysctl.kernel.shm_rmid_forced',
}
INVALID_LXC_KEYS = {
    'lxc.rootfs.path': 'lxc.rootfs.path is auto generated from rootfs',
    'lxc.rootfs.options': 'lxc.rootfs.options is not supported, please use mount point '
                          'options in the "rootfs" key',
}


def lxc_key_validity(key):
    if key in INVALID_LXC_KEYS:
        return INVALID_LXC_KEYS[key]
    if key in VALID_LXC_KEYS or re.match(r'lxc\.(cgroup2?|prlimit|net)\.', key):
        return True
    return False


def encode_text(text):
    """PVE::Tools::encode_text: escape controls, ':' and non-ASCII."""
    out = []
    for byte in text.encode('utf-8'):
        if 0x20 <= byte <= 0x39 or 0x3b <= byte <= 0x7e:
            out.append(chr(byte))
        else:
            out.append('%%%02X' % byte)
    return ''.join(out)


def decode_text(text):
    return urllib.parse.unquote(text)


class Conf:
    """A CT config: plain keys (dict), raw lxc.* entries (list of pairs) and env."""

    def __init__(self):
        self.opts = {}
        self.lxc = []
        self.digest = None

    def get(self, key, default=None):
        return self.opts.get(key, default)


def conf_path(vmid):
    return os.path.join(S.conf_dir, f'{vmid}.conf')


def parse_config(vmid, raw):
    conf = Conf()
    conf.digest = hashlib.sha1(raw.encode('utf-8', 'surrogateescape')).hexdigest()
    descr = ''
    env = []
    for line in raw.split('\n'):
        if re.match(r'^\[', line):
            break  # SIMPLIFIED: snapshots and [pve:pending] sections are not supported
        if not line.strip():
            continue
        m = re.match(r'^#(.*)$', line)
        if m:
            descr += decode_text(m.group(1)) + '\n'
            continue
        m = re.match(r'^(lxc\.[a-z0-9_\-.]+)(:|\s*=)\s*(.*?)\s*$', line)
        if m:
            key, value = m.group(1), m.group(3)
            validity = lxc_key_validity(key)
            if validity is True:
                if key == 'lxc.environment.runtime':
                    env.append(value)  # folded into 'env' (pve-container >= 6.0.15)
                else:
                    conf.lxc.append((key, value))
            elif validity:
                warn(f'vm {vmid} - {key}: {validity}')
            else:
                warn(f'vm {vmid} - unable to parse config: {line}')
            continue
        m = re.match(r'^([a-z][a-z_\-]*\d*):\s*(.*?)\s*$', line)
        if m:
            conf.opts[m.group(1)] = m.group(2)
            continue
        warn(f'vm {vmid} - unable to parse config: {line}')
    if descr:
        conf.opts['description'] = descr
    if env:
        conf.opts['env'] = '\0'.join(env)
    return conf


def format_config(conf):
    raw = ''
    lines = conf.opts.get('description', '').split('\n')
    while lines and lines[-1] == '':
        lines.pop()  # perl's split drops trailing empty fields
    for line in lines:
        raw += '#' + encode_text(line) + '\n'
    for key in sorted(conf.opts):
        if key in ('description', 'env', 'digest'):
            continue
        value = str(conf.opts[key])
        if '\n' in value:
            raise PveError(f"detected invalid newline inside property '{key}'")
        raw += f'{key}: {value}\n'
    for key, value in conf.lxc:
        raw += f'{key}: {value}\n'
    if conf.opts.get('env'):
        for entry in conf.opts['env'].split('\0'):
            raw += f'lxc.environment.runtime: {entry}\n'
    return raw


def load_config(vmid):
    try:
        with open(conf_path(vmid), encoding='utf-8', errors='surrogateescape') as f:
            raw = f.read()
    except FileNotFoundError:
        raise PveError(f"Configuration file 'nodes/{S.node}/lxc/{vmid}.conf' does not exist")
    return parse_config(vmid, raw)


def write_config(vmid, conf):
    raw = format_config(conf)
    os.makedirs(S.conf_dir, exist_ok=True)
    path = conf_path(vmid)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8', errors='surrogateescape') as f:
        f.write(raw)
    os.chmod(tmp, 0o640)
    os.rename(tmp, path)


def destroy_config(vmid):
    try:
        os.unlink(conf_path(vmid))
    except FileNotFoundError:
        pass


def check_lock(conf):
    if conf.get('lock'):
        raise PveError(f"CT is locked ({conf.get('lock')})")


class ConfigLock:
    """lock_config: flock on <lock dir>/pve-config-<vmid>.lock, 10 s timeout."""

    def __init__(self, vmid, timeout=10):
        self.path = os.path.join(S.lock_dir, f'pve-config-{vmid}.lock')
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        os.makedirs(S.lock_dir, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise PveError(f"can't lock file '{self.path}' - got timeout")
                time.sleep(0.05)

    def __exit__(self, *exc):
        os.close(self.fd)


def vm_list():
    """Cluster vmlist of this stand-in: vmid -> 'lxc' | 'qemu'."""
    ids = {}
    for kind, directory in (('qemu', S.qemu_dir), ('lxc', S.conf_dir)):
        for path in glob.glob(os.path.join(directory, '*.conf')):
            name = os.path.basename(path)[:-5]
            if re.fullmatch(r'[1-9]\d*', name):
                ids[int(name)] = kind
    return ids


def check_vmid_unused(vmid, noerr=False):
    kind = vm_list().get(vmid)
    if kind is None:
        return True
    if noerr:
        return False
    raise PveError(f"{'VM' if kind == 'qemu' else 'CT'} {vmid} already exists on node '{S.node}'")


# --------------------------------------------------------------------------------------
# Storage
#
# SIMPLIFIED: one template storage 'local' (S.template_dir, content vztmpl) and one storage
# for container volumes (S.storage, default 'local', directory S.images_dir). Every volume
# is a directory ("subvol"); sizes are recorded but not enforced.

TEMPLATE_EXT_RE = r'\.tar(\.(gz|xz|zst|bz2))?'


def storage_check(sid, content):
    known = {'local'} | {S.storage}
    if sid not in known:
        raise PveError(f"storage '{sid}' does not exist")
    if content == 'rootdir' and sid != S.storage:
        raise ParamError({'storage': f"storage '{sid}' does not support container directories"})
    if content == 'vztmpl' and sid != 'local':
        raise PveError(f"storage '{sid}' does not support content-type 'vztmpl'")


def template_path(ostemplate):
    """Resolve create's ostemplate (volume id or, for root, an absolute path)."""
    if ostemplate.startswith('/'):
        # Create.pm restore_archive: a file (abs_filesystem_path), named like an archive
        # (tar_compression_option).
        if not os.path.isfile(ostemplate):
            raise PveError(f"can't find file '{ostemplate}'")
        if not re.search(TEMPLATE_EXT_RE + '$', ostemplate):
            raise PveError(f"file '{ostemplate}' does not look like a template archive")
        return ostemplate
    m = re.fullmatch(r'([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):(.+)', ostemplate)
    if not m:
        raise PveError(f"unable to parse volume ID '{ostemplate}'")
    sid, volname = m.groups()
    storage_check(sid, 'vztmpl')
    m = re.fullmatch(r'vztmpl/([^/]+' + TEMPLATE_EXT_RE + ')', volname)
    if not m:
        raise PveError(f"unable to parse directory volume name '{volname}'")
    return os.path.join(S.template_dir, m.group(1))


def classify_volume(volume):
    if volume.startswith('/'):
        return 'bind'
    return 'volume'


def parse_volid(volid):
    m = re.fullmatch(r'([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):(\d+)/(subvol-(\d+)-disk-\d+\.subvol)',
                     volid)
    if not m:
        raise PveError(f"unable to parse volume ID '{volid}'")
    return m.group(1), int(m.group(4)), os.path.join(S.images_dir, m.group(2), m.group(3))


def volume_path(volume):
    if classify_volume(volume) == 'bind':
        return volume
    return parse_volid(volume)[2]


def alloc_volume(sid, vmid, size_gib, rootuid, rootgid):
    storage_check(sid, 'rootdir')
    base = os.path.join(S.images_dir, str(vmid))
    os.makedirs(base, exist_ok=True)
    n = 0
    while os.path.exists(os.path.join(base, f'subvol-{vmid}-disk-{n}.subvol')):
        n += 1
    name = f'subvol-{vmid}-disk-{n}.subvol'
    path = os.path.join(base, name)
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)
    os.chown(path, rootuid, rootgid)
    return f'{sid}:{vmid}/{name}', int(size_gib * (1 << 30))


def free_volume(volid, vmid):
    try:
        _, owner, path = parse_volid(volid)
    except PveError as err:
        warn(err.msg)
        return
    if owner != vmid:
        warn(f"ignore deletion of '{volid}', CT {vmid} isn't the owner!")
        return
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(path))  # like the dir plugin: remove the empty image dir
    except OSError:
        pass


def foreach_volume(conf, include_unused=False):
    """Yields (key, parsed) for rootfs and mpN, sorted by mount path like PVE."""
    res = []
    for key, value in conf.opts.items():
        if key == 'rootfs':
            res.append((key, dict(parse_property_string(FMT_ROOTFS, value), mp='/')))
        elif re.fullmatch(r'mp\d+', key):
            res.append((key, parse_property_string(FMT_MP, value)))
        elif include_unused and re.fullmatch(r'unused\d+', key):
            res.append((key, {'volume': value}))
    res.sort(key=lambda kv: (kv[0] != 'rootfs', kv[1].get('mp', '')))
    return res


# --------------------------------------------------------------------------------------
# LXC helpers


def lxc_args(vmid):
    return ['-n', str(vmid), '-P', S.lxc_path]


def list_active_containers():
    """Like PVE: the abstract command socket @<lxcpath>/<vmid>/command in /proc/net/unix."""
    res = set()
    prefix = '@' + S.lxc_path + '/'
    if len(prefix) + len('999999999/command') > 106:
        # LXC hashes socket names that do not fit sun_path: ask lxc-info instead.
        return {vmid for vmid, kind in vm_list().items()
                if kind == 'lxc' and lxc_state(vmid) not in (None, 'STOPPED')}
    try:
        with open('/proc/net/unix') as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7].startswith(prefix):
                    m = re.fullmatch(r'(\d+)/command', fields[7][len(prefix):])
                    if m:
                        res.add(int(m.group(1)))
    except OSError:
        pass
    return res


def check_running(vmid):
    return vmid in list_active_containers()


def find_lxc_pid(vmid):
    res = subprocess.run(['lxc-info', *lxc_args(vmid), '-p'], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True)
    for line in res.stdout.splitlines():
        m = re.fullmatch(r'PID:\s+(\d+)', line)
        if m:
            return int(m.group(1))
    raise PveError(f'unable to get PID for CT {vmid} (not running?)')


def lxc_state(vmid):
    res = subprocess.run(['lxc-info', *lxc_args(vmid), '-s', '-H'], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def parse_id_maps(conf):
    """Returns (maps, rootuid, rootgid); maps are [type, ct, host, count]."""
    maps = []
    for key, value in conf.lxc:
        if key == 'lxc.idmap':
            m = re.fullmatch(r'([ug])\s+(\d+)\s+(\d+)\s+(\d+)', value)
            if not m:
                raise PveError(f'failed to parse idmap: {value}')
            maps.append([m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))])
    if not maps and conf.get('unprivileged') == '1':
        maps = [['u', 0, ROOT_ID_BASE, ID_RANGE], ['g', 0, ROOT_ID_BASE, ID_RANGE]]
    rootuid = rootgid = 0
    for kind, ct, host, _ in maps:
        if ct == 0:
            if kind == 'u':
                rootuid = host
            else:
                rootgid = host
    return maps, rootuid, rootgid


def userns_command(maps):
    if not maps:
        return []
    cmd = ['lxc-usernsexec']
    for kind, ct, host, count in maps:
        cmd += ['-m', f'{kind}:{ct}:{host}:{count}']
    return cmd + ['--']


def cgroup_controllers():
    """(v1 controllers, v2 controllers) as sets, like PVE::CGroup::get_cgroup_controllers."""
    v1, v2 = set(), set()
    with open('/proc/self/mountinfo') as f:
        for line in f:
            left, right = line.split(' - ', 1)
            fstype, _, superopts = right.split()[:3]
            if fstype == 'cgroup':
                v1.update(o for o in superopts.split(',') if o not in ('rw', 'ro'))
            elif fstype == 'cgroup2':
                mnt = left.split()[4]
                try:
                    with open(os.path.join(mnt, 'cgroup.controllers')) as c:
                        v2.update(c.read().split())
                except OSError:
                    pass
    return v1, v2


def cgroup_v1_dir(controller, vmid):
    return f'/sys/fs/cgroup/{controller}/{S.cgroup_prefix}lxc/{vmid}'


_runtime_env_supported = None


def lxc_supports_runtime_env():
    """lxc.environment.runtime is a Proxmox addition (lxc-pve >= 6.0.5, lxc/lxc#4582)."""
    global _runtime_env_supported
    if _runtime_env_supported is None:
        _runtime_env_supported = False
        for lib in glob.glob('/usr/lib/*/liblxc.so.1') + glob.glob('/usr/lib*/liblxc.so.1'):
            try:
                with open(lib, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    if m.find(b'lxc.environment.runtime') >= 0:
                        _runtime_env_supported = True
                        break
            except (OSError, ValueError):
                pass
    return _runtime_env_supported


def fstab_escape(path):
    return path.replace('\\', '\\134').replace(' ', '\\040').replace('\t', '\\011')


def check_bind_source(path):
    """LXC.pm __mountpoint_mount/bindmount: a directory, with no symlink in its path
    (walk_tree_nofollow opens each component with O_NOFOLLOW)."""
    if not os.path.isdir(path):
        raise PveError(f"directory '{path}' does not exist")
    partial = ''
    for part in path.strip('/').split('/'):
        partial += '/' + part
        if os.path.islink(partial):
            raise PveError(f"symlink encountered at: {partial}")


def update_lxc_config(vmid, conf):
    """Regenerate <lxcpath>/<vmid>/config from the PVE config (PVE::LXC::update_lxc_config)."""
    directory = os.path.join(S.lxc_path, str(vmid))
    if conf.get('template') == '1':
        try:
            os.unlink(os.path.join(directory, 'config'))
        except FileNotFoundError:
            pass
        return
    raw = ''
    raw += 'lxc.cgroup.relative = 0\n'
    raw += f'lxc.cgroup.dir.monitor = {S.cgroup_prefix}lxc.monitor/{vmid}\n'
    raw += f'lxc.cgroup.dir.container = {S.cgroup_prefix}lxc/{vmid}\n'
    raw += 'lxc.cgroup.dir.container.inner = ns\n'
    raw += f"lxc.arch = {conf.get('arch') or 'amd64'}\n"

    custom_idmap = any(k == 'lxc.idmap' for k, _ in conf.lxc)
    unprivileged = conf.get('unprivileged') == '1' or custom_idmap
    ostype = conf.get('ostype') or 'unmanaged'
    os.makedirs(directory, exist_ok=True)

    inc = f'{LXC_CONFIG_DIR}/{ostype}.common.conf'
    if not os.path.isfile(inc):
        inc = f'{LXC_CONFIG_DIR}/common.conf'
    raw += f'lxc.include = {inc}\n'
    if unprivileged:
        inc = f'{LXC_CONFIG_DIR}/{ostype}.userns.conf'
        if not os.path.isfile(inc):
            inc = f'{LXC_CONFIG_DIR}/userns.conf'
        raw += f'lxc.include = {inc}\n'

    features = parse_property_string(FMT_FEATURES, conf.get('features', ''))
    has_lxc_key = lambda key: any(k == key for k, _ in conf.lxc)
    # seccomp: unprivileged CTs get keyctl() -> ENOSYS unless features: keyctl=1. PVE
    # references its own /usr/share/lxc/config/pve-userns.seccomp; stock LXC has no such
    # file, so the rules are written next to the config (removed again by destroy).
    if unprivileged and not has_lxc_key('lxc.seccomp.profile'):
        rules = ['ioctl errno 1 [1,0x9400,SCMP_CMP_MASKED_EQ,0xff00]']
        if not features.get('keyctl'):
            rules.insert(0, 'keyctl errno 38')
        with open(f'{LXC_CONFIG_DIR}/common.seccomp') as f:
            common = f.read()
        rule_file = os.path.join(directory, 'rules.seccomp')
        with open(rule_file, 'w') as f:
            f.write(common + ''.join(r + '\n' for r in sorted(rules)))
        raw += f'lxc.seccomp.profile = {rule_file}\n'
    if not has_lxc_key('lxc.apparmor.profile'):
        raw += 'lxc.apparmor.profile = generated\n'
        if features.get('nesting'):
            raw += 'lxc.apparmor.allow_nesting = 1\n'
        else:
            raw += 'lxc.apparmor.raw = deny mount -> /proc/,\n'
            raw += 'lxc.apparmor.raw = deny mount -> /sys/,\n'
        for fs in re.split(r'[;, ]+', str(features.get('mount', ''))):
            if fs:
                raw += f'lxc.apparmor.raw = mount fstype={fs},\n'
    if features.get('fuse'):
        raw += 'lxc.apparmor.raw = mount fstype=fuse,\n'
        raw += 'lxc.mount.entry = /dev/fuse dev/fuse none bind,create=file 0 0\n'
    if unprivileged and not features.get('force_rw_sys'):
        raw += 'lxc.mount.auto = sys:mixed\n'
    raw += 'lxc.monitor.unshare = 1\n'

    cgv1, cgv2 = cgroup_controllers()
    if unprivileged and not custom_idmap:
        raw += f'lxc.idmap = u 0 {ROOT_ID_BASE} {ID_RANGE}\n'
        raw += f'lxc.idmap = g 0 {ROOT_ID_BASE} {ID_RANGE}\n'
    if conf.get('console', '1') == '0':
        raw += 'lxc.console.path = none\n'
        if 'devices' in cgv1:
            raw += 'lxc.cgroup.devices.deny = c 5:1 rwm\n'
        else:
            raw += 'lxc.cgroup2.devices.deny = c 5:1 rwm\n'
    raw += f"lxc.tty.max = {conf.get('tty', '2')}\n"
    raw += 'lxc.environment = TERM=linux\n'
    raw += f"lxc.uts.name = {conf.get('hostname') or f'CT{vmid}'}\n"

    memory = int(conf.get('memory') or 512)
    swap = int(conf.get('swap') or 0)
    if 'memory' in cgv1:
        raw += f'lxc.cgroup.memory.limit_in_bytes = {memory << 20}\n'
        raw += f'lxc.cgroup.memory.memsw.limit_in_bytes = {(memory + swap) << 20}\n'
    elif 'memory' in cgv2:
        raw += f'lxc.cgroup2.memory.max = {memory << 20}\n'
        raw += f'lxc.cgroup2.memory.high = {int((memory << 20) * 0.99)}\n'  # approximation
        raw += f'lxc.cgroup2.memory.swap.max = {swap << 20}\n'
    cpulimit = float(conf.get('cpulimit') or 0)
    if 'cpu' in cgv1:
        if cpulimit:
            raw += 'lxc.cgroup.cpu.cfs_period_us = 100000\n'
            raw += f'lxc.cgroup.cpu.cfs_quota_us = {int(100000 * cpulimit)}\n'
        shares = int(conf.get('cpuunits') or 1024)
        raw += f'lxc.cgroup.cpu.shares = {min(max(shares, 2), 262144)}\n'
    elif 'cpu' in cgv2:
        if cpulimit:
            raw += f'lxc.cgroup2.cpu.max = {int(100000 * cpulimit)} 100000\n'
        if conf.get('cpuunits') is not None:
            raw += f"lxc.cgroup2.cpu.weight = {min(max(int(conf.get('cpuunits')), 1), 10000)}\n"

    if conf.get('rootfs') is None:
        raise PveError("missing 'rootfs' configuration")
    volumes = foreach_volume(conf)
    # SIMPLIFIED: PVE points lxc.rootfs.path at <lxcpath>/<vmid>/rootfs and mounts the
    # volumes there from its prestart hook; the stand-in hands LXC the directories
    # directly and bind-mounts mount points with lxc.mount.entry.
    os.makedirs(os.path.join(directory, 'rootfs'), exist_ok=True)
    rootfs = volumes[0][1]
    if classify_volume(rootfs['volume']) == 'bind':
        check_bind_source(rootfs['volume'])
    raw += f"lxc.rootfs.path = {volume_path(rootfs['volume'])}\n"
    # lxc-pve-prestart-hook: an idmapped mount of the rootfs for an unprivileged CT;
    # `passthrough` keeps container ids equal to the ids on disk, which stock LXC's
    # idmap=container does with the CT's own map.
    if rootfs.get('idmap'):
        if rootfs['idmap'] != 'passthrough':
            raise PveError("only idmap=passthrough is supported by the PVE stand-in")
        if unprivileged:
            raw += 'lxc.rootfs.options = idmap=container\n'
        else:
            warn("rootfs: ignoring 'idmap' option unsupported by privileged container")
    for key, mp in volumes[1:]:
        src = volume_path(mp['volume'])
        opts = ['bind', 'create=file' if os.path.isfile(src) else 'create=dir']
        if mp.get('ro'):
            opts.append('ro')
        opts += [o for o in str(mp.get('mountoptions', '')).split(';') if o]
        raw += (f"lxc.mount.entry = {fstab_escape(src)} "
                f"{fstab_escape(mp['mp'].lstrip('/'))} none {','.join(opts)} 0 0\n")

    for key in sorted(k for k in conf.opts if re.fullmatch(r'net\d+', k)):
        ind = key[3:]
        net = parse_property_string(FMT_NET, conf.get(key))
        raw += f'lxc.net.{ind}.type = veth\n'
        raw += f'lxc.net.{ind}.veth.pair = veth{vmid}i{ind}\n'
        if 'hwaddr' in net:
            raw += f"lxc.net.{ind}.hwaddr = {net['hwaddr']}\n"
        raw += f"lxc.net.{ind}.name = {net['name']}\n"
        if 'mtu' in net:
            raw += f"lxc.net.{ind}.mtu = {net['mtu']}\n"
        # SIMPLIFIED: PVE plugs the veth into the bridge with its lxcnetaddbr up-script.
        if 'bridge' in net:
            raw += f"lxc.net.{ind}.link = {net['bridge']}\n"
        if net.get('host-managed'):
            raw += f'lxc.net.{ind}.flags = up\n'
            if net.get('ip') not in (None, 'dhcp', 'manual'):
                raw += f"lxc.net.{ind}.ipv4.address = {net['ip']}\n"
                if 'gw' in net:
                    raw += f"lxc.net.{ind}.ipv4.gateway = {net['gw']}\n"
            if net.get('ip6') not in (None, 'dhcp', 'manual', 'auto'):
                raw += f"lxc.net.{ind}.ipv6.address = {net['ip6']}\n"
                if 'gw6' in net:
                    raw += f"lxc.net.{ind}.ipv6.gateway = {net['gw6']}\n"

    had_cpuset = False
    for key, value in conf.lxc:
        had_cpuset = had_cpuset or key in ('lxc.cgroup.cpuset.cpus', 'lxc.cgroup2.cpuset.cpus')
        raw += f'{key} = {value}\n'

    entrypoint = conf.get('entrypoint')
    if entrypoint:
        # NOTE: LXC 5 splits lxc.init.cmd at spaces; there is no quoting.
        raw += f'lxc.init.cmd = {entrypoint}\n'
        if entrypoint.split()[0] != '/sbin/init':
            raw += 'lxc.mount.entry = tmpfs dev/shm tmpfs rw,nosuid,nodev,create=dir 0 0\n'
    if conf.get('env'):
        # Stock LXC 5 lacks lxc.environment.runtime (init only); lxc.environment also
        # reaches processes started by lxc-attach (pct exec).
        key = 'lxc.environment.runtime' if lxc_supports_runtime_env() else 'lxc.environment'
        for entry in conf.get('env').split('\0'):
            raw += f'{key} = {entry}\n'

    cores = conf.get('cores')
    if cores and not had_cpuset:
        ver = '' if 'cpuset' in cgv1 else '2'
        path = '/sys/fs/cgroup/cpuset' if ver == '' else '/sys/fs/cgroup/unified'
        try:
            with open(os.path.join(path, 'cpuset.effective_cpus')) as f:
                cpus = parse_cpu_list(f.read().strip())
            while len(cpus) > int(cores):
                cpus.pop(random.randrange(len(cpus)))
            raw += f"lxc.cgroup{ver}.cpuset.cpus = {','.join(map(str, cpus))}\n"
        except OSError:
            pass

    tmp = os.path.join(directory, 'config.tmp')
    with open(tmp, 'w') as f:
        f.write(raw)
    os.rename(tmp, os.path.join(directory, 'config'))


def parse_cpu_list(text):
    cpus = []
    for part in text.split(','):
        if '-' in part:
            a, b = part.split('-')
            cpus.extend(range(int(a), int(b) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def proc_is_alive(pid, starttime):
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ('Z', 'X') and fields[19] == starttime


def proc_starttime(pid):
    with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[19]


def spawn_unit(vmid, debug):
    """What `systemctl start pve-container@<vmid>` does: lxc-start -F in a new session,
    not a child of the caller, stdout /dev/null, stderr to <run dir>/ct-<vmid>.stderr.

    SIMPLIFIED: without systemd the double-forked lxc-start is re-parented to the nearest
    child subreaper, which is init unless the caller set PR_SET_CHILD_SUBREAPER."""
    os.makedirs(S.run_dir, exist_ok=True)
    stderr_path = os.path.join(S.run_dir, f'ct-{vmid}.stderr')
    cmd = ['/usr/bin/lxc-start', '-F', *lxc_args(vmid)]
    if debug:
        cmd += ['-o', '/dev/stderr', '-l', 'DEBUG']
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # intermediate process, exits right after starting lxc-start
        try:
            os.close(rfd)
            os.umask(0o022)
            with open(stderr_path, 'wb') as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, cwd='/', start_new_session=True,
                                        env={'PATH': UNIT_PATH, 'LANG': 'C'})
            os.write(wfd, str(proc.pid).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    data = b''
    while True:
        chunk = os.read(rfd, 64)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    os.waitpid(child, 0)
    if not data:
        raise PveError(f"command 'systemctl start pve-container@{vmid}' failed: exit code 1")
    return int(data)


def print_ct_stderr_log(vmid):
    try:
        with open(os.path.join(S.run_dir, f'ct-{vmid}.stderr'), errors='replace') as f:
            log = f.read()
    except OSError:
        return
    for line in log.splitlines():
        m = re.match(rf'^\s*(lxc-start:?\s+{vmid}:?\s*\S+\s*)?(.*?)\s*$', line)
        warn(m.group(2))


def vm_start(vmid, conf, debug=False):
    update_lxc_config(vmid, conf)
    maps, _, _ = parse_id_maps(conf)
    if maps and not subuid_allows(maps):
        warn('lxc.idmap: ' + 'id map not covered by /etc/subuid or /etc/subgid for root')
    try:
        os.unlink(os.path.join(S.run_dir, f'ct-{vmid}.stderr'))  # systemd does not truncate
    except FileNotFoundError:
        pass
    pid = spawn_unit(vmid, debug)
    starttime = proc_starttime(pid) if os.path.exists(f'/proc/{pid}') else None
    # PVE waits on LXC's monitor socket for RUNNING, or STOPPED/ABORTING = failure.
    deadline = time.monotonic() + 60
    while True:
        state = lxc_state(vmid)
        if state == 'RUNNING':
            break
        if starttime is None or not proc_is_alive(pid, starttime):
            if lxc_state(vmid) == 'RUNNING':
                break
            print_ct_stderr_log(vmid)
            raise PveError(f"startup for container '{vmid}' failed")
        if time.monotonic() > deadline:
            warn('problem with monitor socket, but continuing anyway: got timeout')
            break
        time.sleep(0.05)
    if debug:
        print_ct_stderr_log(vmid)


def subuid_allows(maps):
    """newuidmap (used by LXC when present) needs root's ranges in /etc/subuid, /etc/subgid."""
    if not shutil.which('newuidmap', path=CLI_PATH):
        return True
    for kind, _, host, count in maps:
        path = '/etc/subuid' if kind == 'u' else '/etc/subgid'
        ok = False
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(':')
                    if len(parts) == 3 and parts[0] in ('root', '0'):
                        start, n = int(parts[1]), int(parts[2])
                        ok = ok or (start <= host and host + count <= start + n)
        except (OSError, ValueError):
            pass
        if not ok:
            return False
    return True


def wait_socket_closed(vmid, timeout):
    deadline = time.monotonic() + timeout
    while check_running(vmid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def vm_stop(vmid, kill, shutdown_timeout=None, kill_after_timeout=False):
    """PVE::LXC::vm_stop: lxc-stop, then wait until the command socket is gone."""
    if not check_running(vmid):
        return
    cmd = ['lxc-stop', *lxc_args(vmid)]
    run_timeout = None
    if kill:
        cmd.append('--kill')
    else:
        if not kill_after_timeout:
            cmd.append('--nokill')
        if shutdown_timeout is not None:
            cmd += ['--timeout', str(shutdown_timeout)]
            run_timeout = shutdown_timeout + 5
    try:
        run_command(cmd, timeout=run_timeout)
    except PveError as err:
        warn(err.msg)
        if wait_socket_closed(vmid, run_timeout or 5):
            return
        raise PveError('container did not stop')
    # PVE reads the command socket until EOF; TimeoutStopSec=120s bounds the unit.
    if not wait_socket_closed(vmid, 120):
        raise PveError('container did not stop')


# --------------------------------------------------------------------------------------
# vmstatus


def host_cpu_count():
    return os.cpu_count() or 1


def read_first(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def pressure_stats(vmid):
    res = {}
    base = f'/sys/fs/cgroup/unified/{S.cgroup_prefix}lxc/{vmid}'
    if not os.path.isdir(base):
        base = f'/sys/fs/cgroup/{S.cgroup_prefix}lxc/{vmid}'
    for res_name in ('cpu', 'io', 'memory'):
        text = read_first(os.path.join(base, f'{res_name}.pressure'))
        if text is None:
            continue
        for line in text.splitlines():
            m = re.match(r'(some|full) avg10=([\d.]+)', line)
            if m:
                res[f'pressure{res_name}{m.group(1)}'] = float(m.group(2))
    return res


def vmstatus(vmid, conf, active):
    d = {'vmid': vmid, 'type': 'lxc'}
    if vmid in active:
        try:
            d['pid'] = find_lxc_pid(vmid)
        except PveError as err:
            warn(err.msg)
    d['status'] = 'running' if vmid in active else 'stopped'
    d['name'] = re.sub(r'\s', '', conf.get('hostname') or f'CT{vmid}')
    d['cpus'] = conf.get('cores') or conf.get('cpulimit')
    if not d['cpus'] or d['cpus'] in ('0', '0.0'):
        d['cpus'] = host_cpu_count()
    if conf.get('tags') is not None:
        d['tags'] = conf.get('tags')
    d['disk'] = 0
    d['maxdisk'] = 4 << 30
    if conf.get('rootfs'):
        try:
            size = parse_property_string(FMT_ROOTFS, conf.get('rootfs')).get('size')
            d['maxdisk'] = size or (4 << 30)
        except PveError:
            pass
    d['mem'] = d['swap'] = 0
    d['maxmem'] = int(conf.get('memory') or 512) << 20
    d['maxswap'] = int(conf.get('swap') or 0) << 20
    d['uptime'] = d['netin'] = d['netout'] = d['diskread'] = d['diskwrite'] = 0
    if conf.get('template') == '1':
        d['template'] = 1
    if conf.get('lock'):
        d['lock'] = conf.get('lock')
    pid = d.get('pid')
    if pid:
        try:
            st = os.statvfs(f'/proc/{pid}/root/')
            d['disk'] = (st.f_blocks - st.f_bfree) * st.f_frsize
            d['maxdisk'] = st.f_blocks * st.f_frsize
        except OSError:
            pass
        try:
            start = int(proc_starttime(pid))
            uptime = float(read_first('/proc/uptime').split()[0])
            d['uptime'] = int(uptime - start / os.sysconf('SC_CLK_TCK'))
        except (OSError, TypeError, ValueError):
            pass
        usage = read_first(os.path.join(cgroup_v1_dir('memory', vmid), 'memory.usage_in_bytes'))
        stat = read_first(os.path.join(cgroup_v1_dir('memory', vmid), 'memory.stat'))
        memsw = read_first(os.path.join(cgroup_v1_dir('memory', vmid),
                                        'memory.memsw.usage_in_bytes'))
        if usage and stat:
            cache = re.search(r'^total_cache (\d+)$', stat, re.M)
            d['mem'] = int(usage) - (int(cache.group(1)) if cache else 0)
            if memsw:
                d['swap'] = int(memsw) - int(usage)
        blkio = read_first(os.path.join(cgroup_v1_dir('blkio', vmid),
                                        'blkio.throttle.io_service_bytes'))
        for line in (blkio or '').splitlines():
            m = re.search(r'(Read|Write)\s+(\d+)', line)
            if m:
                d['diskread' if m.group(1) == 'Read' else 'diskwrite'] += int(m.group(2))
        d.update(pressure_stats(vmid))
    netdev = read_first('/proc/net/dev') or ''
    for line in netdev.splitlines()[2:]:
        name, _, rest = line.partition(':')
        if re.fullmatch(rf'veth{vmid}i\d+', name.strip()):
            fields = rest.split()
            d['netout'] += int(fields[0])
            d['netin'] += int(fields[8])
    return d


# --------------------------------------------------------------------------------------
# pct verbs

COMMANDS = {}


def command(name, args_usage, task=False):
    def deco(func):
        COMMANDS[name] = (func, args_usage, task)
        return func
    return deco


def usage_line(verb, arg_names, has_opts=True):
    args = ' '.join(f'<{a}>' if a != 'extra-args' else '[<extra-args>]' for a in arg_names)
    return f"pct {verb}{' ' + args if args else ''}{' [OPTIONS]' if has_opts else ''}"


def parse(verb, argv, props, arg_names):
    return get_options(props, argv, arg_names, usage_line(verb, arg_names, bool(props)))


def detect_compression(path):
    with open(path, 'rb') as f:
        magic = f.read(6)
    if magic.startswith(b'\x1f\x8b'):
        return ['gzip', '-dc']
    if magic.startswith(b'\x28\xb5\x2f\xfd'):
        return ['zstd', '-q', '-d', '-c']
    if magic.startswith(b'\xfd7zXZ\x00'):
        return ['xz', '-dc']
    if magic.startswith(b'BZh'):
        return ['bzip2', '-dc']
    return None


def is_oci_archive(path):
    try:
        res = subprocess.run(['tar', '-tf', path], capture_output=True, text=True)
    except OSError:
        return False
    names = set(res.stdout.splitlines())
    return ('oci-layout' in names and 'index.json' in names
            and any(n.startswith('blobs/') for n in names))


def restore_archive(archive, rootdir, conf, ignore_unpack_errors):
    """PVE::LXC::Create::restore_archive for templates: tar in the CT's user namespace."""
    maps, _, _ = parse_id_maps(conf)
    task_print(f"extracting archive '{archive}'")
    decomp = detect_compression(archive)
    if decomp is None and archive.endswith('.tar') and is_oci_archive(archive):
        raise PveError('OCI image archives are not supported by the PVE stand-in')
    tar = userns_command(maps) + [
        'tar', 'xpf', '-', '--totals', '--one-file-system', '-p', '--sparse', '--numeric-owner',
        '--acls', '--xattrs', '--xattrs-include=user.*', '--xattrs-include=security.capability',
        '--warning=no-file-ignored', '--warning=no-xattr-write', '-C', rootdir, '--skip-old-files',
        '--anchored', '--exclude', './dev/*']
    sys.stdout.flush()
    with open(archive, 'rb') as src:
        if decomp:
            first = subprocess.Popen(decomp, stdin=src, stdout=subprocess.PIPE, stderr=sys.stdout)
            second = subprocess.Popen(tar, stdin=first.stdout, stdout=None, stderr=subprocess.STDOUT)
            first.stdout.close()
            rc2 = second.wait()
            rc1 = first.wait()
            full = cmd_string(decomp + [archive]) + ' | ' + cmd_string(tar)
        else:
            second = subprocess.Popen(tar, stdin=src, stdout=None, stderr=subprocess.STDOUT)
            rc1, rc2 = 0, second.wait()
            full = cmd_string(tar)
    rc = rc2 or rc1
    if rc != 0:
        msg = f"command '{full}' failed: exit code {rc}"
        if not ignore_unpack_errors:
            raise PveError(msg)
        warn(msg)


def detect_architecture(rootdir):
    elf_machines = {0x3e: 'amd64', 0x03: 'i386', 0xb7: 'arm64', 0x28: 'armhf'}
    path = os.path.join(rootdir, 'bin/sh')
    for _ in range(10):  # resolve symlinks inside the rootfs
        if not os.path.islink(path):
            break
        target = os.readlink(path)
        path = (os.path.join(rootdir, target.lstrip('/')) if target.startswith('/')
                else os.path.join(os.path.dirname(path), target))
    with open(path, 'rb') as f:
        head = f.read(20)
    if head[:4] != b'\x7fELF':
        raise PveError(f"'{path[len(rootdir):]}' is not an ELF executable")
    machine = int.from_bytes(head[18:20], 'little')
    if machine == 0xf3:
        return 'riscv64' if head[4] == 2 else 'riscv32'
    if machine not in elf_machines:
        raise PveError(f'unknown ELF machine {machine:#x}')
    return elf_machines[machine]


def detect_ostype(rootdir):
    """PVE::LXC::Setup: distribution from /etc/os-release (plus a few marker files)."""
    text = read_first(os.path.join(rootdir, 'etc/os-release')) \
        or read_first(os.path.join(rootdir, 'usr/lib/os-release'))
    if text is None:
        for marker, ostype in (('etc/debian_version', 'debian'), ('etc/alpine-release', 'alpine'),
                               ('etc/arch-release', 'archlinux'), ('etc/gentoo-release', 'gentoo'),
                               ('etc/fedora-release', 'fedora'), ('etc/centos-release', 'centos')):
            if os.path.exists(os.path.join(rootdir, marker)):
                return ostype
        warn("/etc/os-release file not found and autodetection failed, falling back to "
             "'unmanaged'")
        return 'unmanaged'
    m = re.search(r'^ID="?([^"\n]+)"?$', text, re.M)
    osid = m.group(1) if m else ''
    mapping = {'debian': 'debian', 'devuan': 'devuan', 'ubuntu': 'ubuntu', 'alpine': 'alpine',
               'centos': 'centos', 'rhel': 'centos', 'rocky': 'centos', 'almalinux': 'centos',
               'fedora': 'fedora', 'arch': 'archlinux', 'archlinux': 'archlinux',
               'gentoo': 'gentoo', 'nixos': 'nixos'}
    if osid in mapping:
        return mapping[osid]
    if osid.startswith('opensuse') or osid == 'sles':
        return 'opensuse'
    raise PveError('unable to detect OS distribution')


def random_hwaddr():
    # PVE uses its own OUI BC:24:11 for generated addresses.
    return 'BC:24:11:%02X:%02X:%02X' % tuple(random.randrange(256) for _ in range(3))


def normalize_opts(params):
    """Store values the way update_pct_config prints them (property strings normalized)."""
    res = {}
    for key, value in params.items():
        if key == 'features':
            value = print_property_string(FMT_FEATURES, parse_property_string(FMT_FEATURES, value))
        elif re.fullmatch(r'net\d+', key):
            net = parse_property_string(FMT_NET, value)
            net.setdefault('type', 'veth')
            net.setdefault('hwaddr', random_hwaddr())
            value = print_property_string(FMT_NET, net)
        elif re.fullmatch(r'dev\d+', key):
            value = print_property_string(FMT_DEV, parse_property_string(FMT_DEV, value))
        elif key == 'tags':
            tags = []
            for tag in re.split(r'[;, ]+', value):
                if tag and tag not in tags:
                    tags.append(tag)
            value = ';'.join(tags)
        elif key == 'description':
            value = value if value.endswith('\n') else value + '\n'
        res[key] = str(value)
    return res


def create_mountpoint(key, value, storage, vmid, rootuid, rootgid, vollist):
    """create_disks for one rootfs/mpN value; returns the normalized config value."""
    fmt = FMT_ROOTFS if key == 'rootfs' else FMT_MP
    mp = parse_property_string(fmt, value)
    volume = mp['volume']
    m = re.fullmatch(r'(?:([^:\s]+):)?(\d+(?:\.\d+)?)', volume)
    if m:
        sid = m.group(1) or storage
        volid, size = alloc_volume(sid, vmid, float(m.group(2)), rootuid, rootgid)
        vollist.append(volid)
        mp['volume'], mp['size'] = volid, size
    elif classify_volume(volume) == 'bind':
        if not os.path.exists(volume):
            raise PveError(f"mount point source '{volume}' does not exist")  # SIMPLIFIED text
    else:
        sid, owner, path = parse_volid(volume)
        storage_check(sid, 'rootdir')
        if not os.path.isdir(path):
            raise PveError(f"volume '{volume}' does not exist")
    if key != 'rootfs':
        mp['mp'] = '/' + mp['mp'].lstrip('/') if not mp['mp'].startswith('/') else mp['mp']
        if re.search(r'/\.\.?/|/\.\.?$|^\.\./', mp['mp']):
            raise PveError(f"{mp['mp']} contains illegal character sequences")
    return print_property_string(fmt, mp)


@command('create', ['vmid', 'ostemplate'], task=True)
def cmd_create(argv):
    props = dict(config_props(), **CREATE_PROPS)
    props.pop('ostemplate')
    p = parse('create', argv, props, ['vmid', 'ostemplate'])
    vmid = p.pop('vmid')
    ostemplate = p.pop('ostemplate')
    for unsupported in ('restore', 'ha-managed', 'pool'):
        if p.get(unsupported):
            raise PveError(f'--{unsupported} is not supported by the PVE stand-in')
    if 'unique' in p:
        raise ParamError({'unique': "missing property - 'restore' (required by 'unique')"})
    start_after = p.pop('start', 0)
    ignore_unpack = p.pop('ignore-unpack-errors', 0)
    unprivileged = p.pop('unprivileged', 1)  # create defaults to unprivileged
    storage = p.pop('storage', 'local')
    force = p.pop('force', 0)
    for key in ('password', 'ssh-public-keys', 'bwlimit', 'debug'):
        p.pop(key, None)  # SIMPLIFIED: no in-CT setup (password, keys) is done
    for key in [k for k in p if re.fullmatch(r'unused\d+', k)]:
        warn(f"ignoring '{key}', cannot create/restore with unused volume")
        p.pop(key)
    if force and os.path.exists(conf_path(vmid)):
        raise PveError('--force (overwriting a CT) is not supported by the PVE stand-in')
    check_vmid_unused(vmid)

    mp_param = {k: p.pop(k) for k in list(p) if k == 'rootfs' or re.fullmatch(r'mp\d+', k)}
    if mp_param and 'rootfs' not in mp_param:
        raise PveError("mount points configured, but 'rootfs' not set - aborting")
    if 'rootfs' not in mp_param:
        storage_check(storage, 'rootdir')
        mp_param['rootfs'] = f'{storage}:4'  # defaults to 4GB
    else:
        for key, value in mp_param.items():
            vol = parse_property_string(FMT_ROOTFS if key == 'rootfs' else FMT_MP, value)['volume']
            m = re.fullmatch(r'([^:\s]+):\d+(\.\d+)?', vol)
            if m:
                storage_check(m.group(1), 'rootdir')

    conf = Conf()
    conf.opts.update(normalize_opts(p))
    if unprivileged:
        conf.opts['unprivileged'] = '1'

    emsg = f'unable to create CT {vmid} -'
    with ConfigLock(vmid):  # create_and_lock_config
        try:
            check_vmid_unused(vmid)
        except PveError as err:
            raise PveError(f'{emsg} {err.msg}')
        lockconf = Conf()
        lockconf.opts['lock'] = 'create'
        write_config(vmid, lockconf)

    def create_task():
        vollist = []
        with ConfigLock(vmid):
            try:
                _, rootuid, rootgid = parse_id_maps(conf)
                for key in sorted(mp_param, key=lambda k: (k != 'rootfs', k)):
                    conf.opts[key] = create_mountpoint(key, mp_param[key], storage, vmid,
                                                       rootuid, rootgid, vollist)
                rootdir = volume_path(parse_property_string(FMT_ROOTFS, conf.opts['rootfs'])['volume'])
                archive = template_path(ostemplate)
                if not os.path.isfile(archive):
                    raise PveError(f"can't find file '{ostemplate}'")
                restore_archive(archive, rootdir, conf, ignore_unpack)
                if not conf.get('arch'):
                    try:
                        conf.opts['arch'] = detect_architecture(rootdir)
                    except (PveError, OSError) as err:
                        conf.opts['arch'] = 'amd64'
                        msg = err.msg if isinstance(err, PveError) else str(err)
                        warn(f'Architecture detection failed: {msg}\n\nFalling back to amd64.\n'
                             'Use `pct set VMID --arch ARCH` to change.')
                if not conf.get('ostype'):
                    conf.opts['ostype'] = detect_ostype(rootdir)
                # SIMPLIFIED: PVE's per-distribution setup (hostname, network, password,
                # ssh keys inside the CT) is not done.
                conf.opts.setdefault('hostname', f'CT{vmid}')
                conf.opts['memory'] = conf.get('memory') or '512'
                conf.opts.setdefault('swap', '512')
                write_config(vmid, conf)
            except (PveError, OSError) as err:
                for volid in vollist:
                    free_volume(volid, vmid)
                destroy_config(vmid)
                msg = err.msg if isinstance(err, PveError) else str(err)
                raise PveError(f'{emsg} {msg}')
        if start_after:
            do_start(vmid, False)

    return run_task(create_task)


def do_start(vmid, debug, skiplock=False):
    with ConfigLock(vmid):
        conf = load_config(vmid)
        if conf.get('template') == '1':
            raise PveError("you can't start a CT if it's a template")
        if not skiplock and conf.get('lock') != 'mounted':
            check_lock(conf)
        if conf.get('unprivileged') == '1':
            for _, mp in foreach_volume(conf):
                if mp.get('quota'):
                    raise PveError('Quotas are not supported by unprivileged containers.')
        vm_start(vmid, conf, debug or conf.get('debug') == '1')


@command('start', ['vmid'], task=True)
def cmd_start(argv):
    p = parse('start', argv, {'debug': P('boolean'), 'skiplock': P('boolean')}, ['vmid'])
    vmid = p['vmid']
    if check_running(vmid):
        raise PveError(f'CT {vmid} already running')
    return run_task(do_start, vmid, p.get('debug', 0), p.get('skiplock', 0))


@command('stop', ['vmid'], task=True)
def cmd_stop(argv):
    p = parse('stop', argv, {'skiplock': P('boolean'), 'overrule-shutdown': P('boolean')},
              ['vmid'])
    vmid = p['vmid']
    if not check_running(vmid):
        raise PveError(f'CT {vmid} not running')

    def task():
        with ConfigLock(vmid):
            conf = load_config(vmid)
            if not p.get('skiplock') and conf.get('lock') != 'mounted':
                check_lock(conf)
            vm_stop(vmid, True)

    return run_task(task)


@command('shutdown', ['vmid'], task=True)
def cmd_shutdown(argv):
    p = parse('shutdown', argv, {'timeout': P('integer', 0), 'forceStop': P('boolean')},
              ['vmid'])
    vmid = p['vmid']
    timeout = int(p.get('timeout', 60))
    if not check_running(vmid):
        raise PveError(f'CT {vmid} not running')

    def task():
        with ConfigLock(vmid):
            conf = load_config(vmid)
            check_lock(conf)
            vm_stop(vmid, False, timeout, bool(p.get('forceStop')))

    return run_task(task)


@command('reboot', ['vmid'], task=True)
def cmd_reboot(argv):
    p = parse('reboot', argv, {'timeout': P('integer', 0)}, ['vmid'])
    vmid = p['vmid']
    if not check_running(vmid):
        raise PveError(f'VM {vmid} not running')

    def task():
        with ConfigLock(vmid):
            if not check_running(vmid):
                return
            vm_stop(vmid, False, int(p['timeout']) if 'timeout' in p else None, True)
            vm_start(vmid, load_config(vmid))

    return run_task(task)


@command('status', ['vmid'])
def cmd_status(argv):
    p = parse('status', argv, {'verbose': P('boolean')}, ['vmid'])
    vmid = p['vmid']
    conf = load_config(vmid)
    stat = vmstatus(vmid, conf, list_active_containers())
    if p.get('verbose'):
        for key in sorted(stat):
            if key == 'cpu':
                continue
            print(f'{key}: {fmt_num(stat[key])}')
    else:
        print(f"status: {stat.get('status') or 'unknown'}")
    return 0


@command('list', [])
def cmd_list(argv):
    parse('list', argv, {}, [])
    active = list_active_containers()
    rows = []
    for vmid, kind in sorted(vm_list().items()):
        if kind != 'lxc':
            continue
        try:
            conf = load_config(vmid)
        except PveError:
            continue
        rows.append(vmstatus(vmid, conf, active) if vmid in active else {
            'vmid': vmid, 'status': 'stopped', 'lock': conf.get('lock', ''),
            'name': re.sub(r'\s', '', conf.get('hostname') or f'CT{vmid}')})
    if not rows:
        return 0
    fmt = '%-10s %-10s %-12s %-20s'
    print(fmt % ('VMID', 'Status', 'Lock', 'Name'))
    for d in rows:
        print(fmt % (d['vmid'], d['status'], d.get('lock', ''), d['name']))
    return 0


@command('config', ['vmid'])
def cmd_config(argv):
    p = parse('config', argv, {'current': P('boolean'), 'snapshot': P()}, ['vmid'])
    vmid = p['vmid']
    conf = load_config(vmid)
    if 'snapshot' in p:
        raise PveError(f"snapshot '{p['snapshot']}' does not exist")
    out = []
    for key in sorted(conf.opts):
        value = conf.opts[key]
        if key == 'description':
            value = encode_text(value)
        out.append(f'{key}: {value}\n')
    for key, value in conf.lxc:
        out.append(f'{key}: {value}\n')
    sys.stdout.write(''.join(out))
    return 0


HOTPLUG_CGROUP = ('memory', 'swap', 'cpulimit', 'cpuunits')


def hotplug_cgroups(vmid, conf):
    """Apply memory/swap/cpu limits to a running CT, like PVE's hotplug of these keys."""
    mem = int(conf.get('memory') or 512) << 20
    memsw = mem + (int(conf.get('swap') or 0) << 20)
    mdir = cgroup_v1_dir('memory', vmid)

    def put(path, value):
        try:
            with open(path, 'w') as f:
                f.write(str(value))
            return True
        except OSError:
            return False

    if os.path.isdir(mdir):
        cur = int(read_first(os.path.join(mdir, 'memory.limit_in_bytes')) or 0)
        order = (('memory.memsw.limit_in_bytes', memsw), ('memory.limit_in_bytes', mem))
        if mem < cur:
            order = order[::-1]
        for name, value in order:
            if not put(os.path.join(mdir, name), value):
                warn(f'unable to set {name} for CT {vmid}')
    cdir = cgroup_v1_dir('cpu', vmid)
    if os.path.isdir(cdir):
        cpulimit = float(conf.get('cpulimit') or 0)
        put(os.path.join(cdir, 'cpu.cfs_period_us'), 100000)
        put(os.path.join(cdir, 'cpu.cfs_quota_us'), int(100000 * cpulimit) if cpulimit else -1)
        put(os.path.join(cdir, 'cpu.shares'), min(max(int(conf.get('cpuunits') or 1024), 2), 262144))


@command('set', ['vmid'])
def cmd_set(argv):
    props = dict(config_props(), **SET_PROPS)
    p = parse('set', argv, props, ['vmid'])
    vmid = p.pop('vmid')
    delete = [k for k in re.split(r'[,;\s]+', p.pop('delete', '')) if k]
    if p.pop('revert', None):
        raise PveError('--revert is not supported by the PVE stand-in (no pending changes)')
    digest = p.pop('digest', None)
    errors = {}
    for key in delete:
        if lookup_prop(config_props(), key) is None:
            errors['delete'] = f"invalid format - invalid configuration ID '{key}'"
        elif key in p:
            errors[key] = "can't set option '%s' and delete it at the same time" % key
        elif key == 'rootfs':
            errors['delete'] = "unable to delete required option 'rootfs'"
    if errors:
        raise ParamError(errors)
    if not p and not delete:
        raise PveError('no options specified')

    with ConfigLock(vmid):
        conf = load_config(vmid)
        if digest and digest != conf.digest:
            raise PveError('detected modified configuration - file changed by other user? '
                           'Try again.')
        if 'lock' not in p and 'lock' not in delete:
            check_lock(conf)
        running = check_running(vmid)
        _, rootuid, rootgid = parse_id_maps(conf)
        for key in delete:
            value = conf.opts.pop(key, None)
            if value is not None and re.fullmatch(r'mp\d+', key):
                volume = parse_property_string(FMT_MP, value)['volume']
                if classify_volume(volume) == 'volume':
                    n = 0
                    while f'unused{n}' in conf.opts:
                        n += 1
                    conf.opts[f'unused{n}'] = volume
            elif value is not None and re.fullmatch(r'unused\d+', key):
                free_volume(value, vmid)
        for key, value in normalize_opts(p).items():
            if key == 'rootfs':
                raise PveError('changing rootfs is not supported by the PVE stand-in')
            if re.fullmatch(r'mp\d+', key):
                value = create_mountpoint(key, value, S.storage, vmid, rootuid, rootgid, [])
            if key == 'unprivileged':
                value = str(int(value))
            conf.opts[key] = value
        write_config(vmid, conf)
        if running and any(k in HOTPLUG_CGROUP for k in list(p) + delete):
            hotplug_cgroups(vmid, conf)
    # SIMPLIFIED: PVE queues non-hotpluggable changes of a running CT as [pve:pending];
    # here they are written at once and take effect at the next start.
    return 0


@command('unlock', ['vmid'])
def cmd_unlock(argv):
    # PVE: `pct unlock <vmid>` = remove_lock under the config lock, whatever the lock.
    p = parse('unlock', argv, {}, ['vmid'])
    vmid = p['vmid']
    with ConfigLock(vmid):
        conf = load_config(vmid)
        conf.opts.pop('lock', None)
        write_config(vmid, conf)
    return 0


@command('destroy', ['vmid'], task=True)
def cmd_destroy(argv):
    p = parse('destroy', argv, {'force': P('boolean'), 'purge': P('boolean'),
                                'destroy-unreferenced-disks': P('boolean')}, ['vmid'])
    vmid = p['vmid']
    conf = load_config(vmid)

    def early_checks(conf):
        if conf.get('protection') == '1':
            raise PveError(f"can't remove CT {vmid} - protection mode enabled")
        check_lock(conf)

    early_checks(conf)
    running_msg = f'unable to destroy CT {vmid} - container is running'
    if not p.get('force') and check_running(vmid):
        raise PveError(running_msg)

    def task():
        with ConfigLock(vmid):
            conf = load_config(vmid)
            early_checks(conf)
            if check_running(vmid):
                if not p.get('force'):
                    raise PveError(running_msg)
                warn(f'forced to stop CT {vmid} before destroying!')
                vm_stop(vmid, True)
            destroy_lxc_container(vmid, conf, p.get('destroy-unreferenced-disks'))
            if p.get('purge'):
                task_print(f'purging CT {vmid} from related configurations..')
            destroy_config(vmid)

    return run_task(task)


def destroy_lxc_container(vmid, conf, purge_unreferenced):
    seen = set()
    for _, mp in foreach_volume(conf, include_unused=True):
        volume = mp['volume']
        if volume in seen or classify_volume(volume) != 'volume':
            continue
        seen.add(volume)
        free_volume(volume, vmid)
    if purge_unreferenced:
        base = os.path.join(S.images_dir, str(vmid))
        for path in glob.glob(os.path.join(base, f'subvol-{vmid}-disk-*.subvol')):
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir(base)
        except OSError:
            pass
    directory = os.path.join(S.lxc_path, str(vmid))
    for name in ('rules.seccomp', 'config'):  # rules.seccomp: see update_lxc_config
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    for path in (os.path.join(directory, 'rootfs'), directory):
        try:
            os.rmdir(path)
        except OSError:
            pass
    lockconf = Conf()
    lockconf.opts['lock'] = 'destroyed'  # zombie config until the very end, like PVE
    write_config(vmid, lockconf)


@command('exec', ['vmid', 'extra-args'])
def cmd_exec(argv):
    p = parse('exec', argv, {'keep-env': P('boolean')}, ['vmid', 'extra-args'])
    vmid = p['vmid']
    load_config(vmid)
    if not check_running(vmid):
        raise PveError(f"container '{vmid}' not running!")
    if not p['extra-args']:
        raise PveError('missing command')
    keep_env = p.get('keep-env', 1)
    cmd = ['lxc-attach', *lxc_args(vmid), '--keep-env' if keep_env else '--clear-env', '--',
           *p['extra-args']]
    env = dict(os.environ)
    env.pop('SSL_CERT_FILE', None)
    env.pop('SSL_CERT_DIR', None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)


NOT_IMPLEMENTED = ['clone', 'console', 'cpusets', 'delsnapshot', 'df', 'enter', 'fsck',
                   'fstrim', 'listsnapshot', 'migrate', 'mount', 'move-volume', 'move_volume',
                   'pending', 'pull', 'push', 'remote-migrate', 'rescan', 'resize', 'restore',
                   'resume', 'rollback', 'snapshot', 'suspend', 'template', 'unmount']


def main_pct(argv):
    global S
    os.environ['PATH'] = CLI_PATH
    S = Settings()
    if not argv:
        sys.stderr.write("ERROR: no command specified\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n")
        return 255
    verb = argv[0]
    if verb in NOT_IMPLEMENTED:
        sys.stderr.write(f"pct {verb}: not implemented by the PVE stand-in (hack/pve)\n")
        return 255
    if verb not in COMMANDS:
        sys.stderr.write(f"ERROR: unknown command 'pct {verb}'\n"
                         "USAGE: pct <COMMAND> [ARGS] [OPTIONS]\n")
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
        msg = err.msg if err.msg.endswith('\n') else err.msg + '\n'
        sys.stderr.write(msg)
        return 255
    except OSError as err:
        sys.stderr.write(f'{err}\n')
        return 255


def main_qm(argv):
    """qm: implemented in qmstandin.py (it imports this module's helpers)."""
    import qmstandin
    return qmstandin.main(argv)


# --------------------------------------------------------------------------------------
# pvesh: only GET /cluster/nextid


def main_pvesh(argv):
    global S
    os.environ['PATH'] = CLI_PATH
    S = Settings()
    if len(argv) < 2 or argv[0] not in ('get', 'ls', 'set', 'create', 'delete', 'usage'):
        sys.stderr.write('ERROR: unknown command\nUSAGE: pvesh <COMMAND> [ARGS] [OPTIONS]\n')
        return 255
    verb, path = argv[0], '/' + argv[1].strip('/')
    if verb != 'get' or path != '/cluster/nextid':
        sys.stderr.write(f"No '{verb}' handler defined for '{path}'"
                         " (the PVE stand-in only implements 'get /cluster/nextid')\n")
        return 255
    usage = 'pvesh get <api_path> [OPTIONS] [FORMAT_OPTIONS]'
    props = {'vmid': P('integer', VMID_MIN, VMID_MAX),
             'output-format': P(enum=['text', 'json', 'json-pretty']),
             'noproxy': P('boolean'), 'human-readable': P('boolean'), 'noborder': P('boolean'),
             'noheader': P('boolean'), 'quiet': P('boolean')}
    try:
        p = get_options(props, argv[2:], [], usage)
        fmt = p.get('output-format', 'text')
        ids = vm_list()
        if 'vmid' in p:
            vmid = int(p['vmid'])
            if vmid in ids:
                raise ParamError({'vmid': f'VM {vmid} already exists'})
            # The API returns the parameter string as given: JSON prints it quoted.
            print(p['vmid'] if fmt == 'text' else f'"{p["vmid"]}"')
            return 0
        lower, upper = 100, 1000000  # datacenter.cfg next-id defaults
        for vmid in range(lower, upper):
            if vmid not in ids:
                print(vmid)
                return 0
        raise PveError(f'unable to get any free VMID in range [{lower}, {upper}]')
    except ParamError as err:
        err.usage = usage
        sys.stderr.write(err.render())
        return 255
    except PveError as err:
        sys.stderr.write(err.msg + '\n')
        return 255
