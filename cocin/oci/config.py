"""The bundle's ``config.json``: load it, check it, and the defaults runc writes.

A *bundle* is a directory holding ``config.json`` (the OCI runtime spec) and,
usually, the root file system (``root.path``: relative to the bundle, as
containerd writes ``"rootfs"``, or absolute, as podman writes its overlay's
merged directory). The engine wrote the file; the runtime trusts nothing in
it: every field it will act on is checked here for its type and range, and
a bad one stops ``create`` with one line naming the field, before anything is
made. The checks are the spec's MUSTs that a runtime can test without the
kernel (absolute paths, known namespace and capability names, a 1.x version).

Also here: ``default_spec()`` (what ``spec`` writes: runc's default, with
cocin's hostname), ``features()`` (runc's ``features`` JSON: what this runtime
understands) and the checks of an ``exec`` process and an ``update``'s
resources.
"""

from __future__ import annotations

import os

from . import SPEC_VERSION, OCIError

NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
RLIMITS = (
    "RLIMIT_AS RLIMIT_CORE RLIMIT_CPU RLIMIT_DATA RLIMIT_FSIZE RLIMIT_LOCKS RLIMIT_MEMLOCK RLIMIT_MSGQUEUE "
    "RLIMIT_NICE RLIMIT_NOFILE RLIMIT_NPROC RLIMIT_RSS RLIMIT_RTPRIO RLIMIT_RTTIME RLIMIT_SIGPENDING RLIMIT_STACK"
).split()
RESOURCE_KEYS = ("devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified")


def _err(field: str, what: str) -> OCIError:
    return OCIError(f"config.json: {field}: {what}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_list(v: object, field: str) -> list:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(field, "must be a list of strings")
    return v


def _obj(v: object, field: str) -> dict:
    if not isinstance(v, dict):
        raise _err(field, "must be an object")
    return v


def cap_names() -> list[str]:
    from ..confine import CAPS

    return ["CAP_" + name for name, _bit in sorted(CAPS.items(), key=lambda kv: kv[1])]


def load(bundle: str) -> tuple[dict, str]:
    """Read and check ``<bundle>/config.json``; return the spec and the absolute rootfs."""
    if not os.path.isdir(bundle):
        raise OCIError(f"chdir {bundle}: no such file or directory")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise OCIError("JSON specification file config.json not found") from None
    except OSError as e:
        raise OCIError(f"open {path}: {e.strerror.lower()}") from None
    from ..fastjson import loads

    try:
        spec = loads(data)
    except ValueError as e:
        raise OCIError(f"config.json: invalid JSON: {e}") from None
    validate(spec)
    rootfs = spec["root"]["path"]
    rootfs = os.path.normpath(os.path.join(os.path.abspath(bundle), rootfs))
    if not os.path.isdir(rootfs):
        raise OCIError(f"rootfs ({rootfs}) does not exist")
    return spec, rootfs


def validate(spec: object) -> dict:
    """Check a whole spec for create/run; OCIError naming the first bad field."""
    spec = _obj(spec, "(top level)")
    ver = spec.get("ociVersion")
    if not isinstance(ver, str) or not ver:
        raise _err("ociVersion", "missing")
    if not ver.startswith("1."):
        raise _err("ociVersion", f"unsupported spec version {ver!r} (cocin-oci implements {SPEC_VERSION})")
    root = spec.get("root")
    if root is None:
        raise _err("root", "missing (root.path names the container's root file system)")
    root = _obj(root, "root")
    if not isinstance(root.get("path"), str) or not root["path"]:
        raise _err("root.path", "must be a non-empty string")
    if "readonly" in root and not isinstance(root["readonly"], bool):
        raise _err("root.readonly", "must be true or false")
    if spec.get("process") is None:
        raise _err("process", "missing (create needs the process to run)")
    validate_process(spec["process"])
    if "hostname" in spec and not isinstance(spec["hostname"], str):
        raise _err("hostname", "must be a string")
    for i, m in enumerate(spec.get("mounts") or []):
        m = _obj(m, f"mounts[{i}]")
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise _err(f"mounts[{i}].destination", "must be an absolute path")
        if "options" in m:
            _str_list(m["options"], f"mounts[{i}].options")
        for key in ("type", "source"):
            if key in m and not isinstance(m[key], str):
                raise _err(f"mounts[{i}].{key}", "must be a string")
    hooks = _obj(spec.get("hooks") or {}, "hooks")
    for kind, entries in hooks.items():
        if kind not in HOOKS:
            raise _err(f"hooks.{kind}", f"unknown hook kind (known: {', '.join(HOOKS)})")
        if not isinstance(entries, list):
            raise _err(f"hooks.{kind}", "must be a list")
        for i, h in enumerate(entries):
            h = _obj(h, f"hooks.{kind}[{i}]")
            if not isinstance(h.get("path"), str) or not h["path"].startswith("/"):
                raise _err(f"hooks.{kind}[{i}].path", "must be an absolute path")
            for key in ("args", "env"):
                if key in h:
                    _str_list(h[key], f"hooks.{kind}[{i}].{key}")
            if "timeout" in h and (not _is_int(h["timeout"]) or h["timeout"] <= 0):
                raise _err(f"hooks.{kind}[{i}].timeout", "must be a positive number of seconds")
    ann = _obj(spec.get("annotations") or {}, "annotations")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        raise _err("annotations", "keys and values must be strings")
    linux = _obj(spec.get("linux") or {}, "linux")
    seen = set()
    for i, ns in enumerate(linux.get("namespaces") or []):
        ns = _obj(ns, f"linux.namespaces[{i}]")
        t = ns.get("type")
        if t not in NAMESPACES:
            raise _err(f"linux.namespaces[{i}].type", f"unknown namespace {t!r} (known: {', '.join(NAMESPACES)})")
        if t in seen:
            raise _err("linux.namespaces", f"duplicated namespace {t!r}")
        seen.add(t)
        if "path" in ns and (not isinstance(ns["path"], str) or not ns["path"].startswith("/")):
            raise _err(f"linux.namespaces[{i}].path", "must be an absolute path")
    for key in ("uidMappings", "gidMappings"):
        for i, m in enumerate(linux.get(key) or []):
            m = _obj(m, f"linux.{key}[{i}]")
            for f in ("containerID", "hostID", "size"):
                if not _is_int(m.get(f)) or m[f] < 0:
                    raise _err(f"linux.{key}[{i}].{f}", "must be a non-negative integer")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise _err("linux.uidMappings", "user namespace mappings need a user namespace")
    for key in ("maskedPaths", "readonlyPaths"):
        for p in _str_list(linux.get(key) or [], f"linux.{key}"):
            if not p.startswith("/"):
                raise _err(f"linux.{key}", f"{p!r} is not an absolute path")
    if "cgroupsPath" in linux and not isinstance(linux["cgroupsPath"], str):
        raise _err("linux.cgroupsPath", "must be a string")
    if "resources" in linux:
        validate_resources(linux["resources"], "linux.resources")
    sysctl = _obj(linux.get("sysctl") or {}, "linux.sysctl")
    if not all(isinstance(v, str) for v in sysctl.values()):
        raise _err("linux.sysctl", "values must be strings")
    prop = linux.get("rootfsPropagation")
    if prop not in (None, "", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable"):
        raise _err("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    return spec


def validate_process(proc: object, field: str = "process") -> dict:
    """Check ``process`` (config.json) or an exec ``--process`` file."""
    proc = _obj(proc, field)
    args = proc.get("args")
    if not args:
        raise _err(f"{field}.args", "must not be empty")
    _str_list(args, f"{field}.args")
    cwd = proc.get("cwd")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise _err(f"{field}.cwd", "must be an absolute path")
    for e in _str_list(proc.get("env") or [], f"{field}.env"):
        if "=" not in e:
            raise _err(f"{field}.env", f"{e!r} is not KEY=VALUE")
    user = _obj(proc.get("user") or {}, f"{field}.user")
    for key in ("uid", "gid", "umask"):
        if key in user and (not _is_int(user[key]) or user[key] < 0):
            raise _err(f"{field}.user.{key}", "must be a non-negative integer")
    for g in user.get("additionalGids") or []:
        if not _is_int(g) or g < 0:
            raise _err(f"{field}.user.additionalGids", "must be non-negative integers")
    for key in ("terminal", "noNewPrivileges"):
        if key in proc and not isinstance(proc[key], bool):
            raise _err(f"{field}.{key}", "must be true or false")
    if "oomScoreAdj" in proc and (not _is_int(proc["oomScoreAdj"]) or not -1000 <= proc["oomScoreAdj"] <= 1000):
        raise _err(f"{field}.oomScoreAdj", "must be an integer from -1000 to 1000")
    caps = _obj(proc.get("capabilities") or {}, f"{field}.capabilities")
    known = None
    for kind, names in caps.items():
        if kind not in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            raise _err(f"{field}.capabilities.{kind}", "unknown capability set")
        known = known or set(cap_names())
        for name in _str_list(names, f"{field}.capabilities.{kind}"):
            if name not in known:
                raise _err(f"{field}.capabilities.{kind}", f"unknown capability {name!r}")
    for i, r in enumerate(proc.get("rlimits") or []):
        r = _obj(r, f"{field}.rlimits[{i}]")
        if r.get("type") not in RLIMITS:
            raise _err(f"{field}.rlimits[{i}].type", f"unknown rlimit {r.get('type')!r}")
        for key in ("soft", "hard"):
            if not _is_int(r.get(key)) or r[key] < 0:
                raise _err(f"{field}.rlimits[{i}].{key}", "must be a non-negative integer")
    if "consoleSize" in proc:
        size = _obj(proc["consoleSize"], f"{field}.consoleSize")
        if not all(_is_int(size.get(k)) for k in ("height", "width")):
            raise _err(f"{field}.consoleSize", "needs integer height and width")
    return proc


def validate_resources(res: object, field: str = "resources") -> dict:
    """Check a LinuxResources object (config.json, or ``update --resources``)."""
    res = _obj(res, field)
    for key, value in res.items():
        if key not in RESOURCE_KEYS:
            raise _err(f"{field}.{key}", "unknown resource")
        if key in ("devices", "hugepageLimits"):
            if not isinstance(value, list):
                raise _err(f"{field}.{key}", "must be a list")
        elif value is not None:
            _obj(value, f"{field}.{key}")
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        v = (res.get("memory") or {}).get(key)
        if v is not None and (not _is_int(v) or v < -1):
            raise _err(f"{field}.memory.{key}", "must be a number of bytes (-1: unlimited)")
    cpu = res.get("cpu") or {}
    for key in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod"):
        v = cpu.get(key)
        if v is not None and not _is_int(v):
            raise _err(f"{field}.cpu.{key}", "must be an integer")
    for key in ("cpus", "mems"):
        if cpu.get(key) is not None and not isinstance(cpu[key], str):
            raise _err(f"{field}.cpu.{key}", "must be a string such as 0-2,4")
    pids = res.get("pids") or {}
    if "limit" in pids and not _is_int(pids["limit"]):
        raise _err(f"{field}.pids.limit", "must be an integer")
    for i, d in enumerate(res.get("devices") or []):
        d = _obj(d, f"{field}.devices[{i}]")
        if not isinstance(d.get("allow"), bool):
            raise _err(f"{field}.devices[{i}].allow", "must be true or false")
        if d.get("type", "a") not in ("a", "b", "c"):
            raise _err(f"{field}.devices[{i}].type", "must be a, b or c")
    return res


def default_spec() -> dict:
    """What ``runc spec`` writes (runc 1.1), with cocin's hostname."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "cocin",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


MOUNT_OPTIONS = sorted(
    "async atime bind defaults dev diratime dirsync exec iversion lazytime loud mand noatime nodev nodiratime "
    "noexec noiversion nolazytime nomand norelatime nostrictatime nosuid nosymfollow private rbind relatime "
    "remount ro rprivate rshared rslave runbindable rw shared silent slave strictatime suid symfollow sync "
    "tmpcopyup unbindable".split()
)


def features(version: str) -> dict:
    """runc's ``features`` JSON: what this runtime understands."""
    from ..seccomp_compile import ACTIONS, OPS, SCMP_ARCHES

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOKS),
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": sorted(n for n in NAMESPACES if n != "user"),  # no user namespaces yet
            "capabilities": cap_names(),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(ACTIONS),
                "operators": sorted(OPS),
                "archs": sorted(SCMP_ARCHES),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.github.cocin.version": version},
    }
