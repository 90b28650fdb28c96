"""Confinement: the last steps of a container process before ``execve``.

Namespaces decide what a process can *see*; they do not decide what it may
*do*. Root in a container is still uid 0 of the host, and without the steps
below it could load kernel modules, remount, open any inode by handle
("shocker")... Four kernel mechanisms take that power away:

* **Capabilities** (``man 7 capabilities``): root's power is split into about
  forty bits. A process has five sets: *bounding* (the ceiling: what any
  later ``execve`` can ever get), *permitted* and *effective* (what it holds
  and uses now), *inheritable* and *ambient* (what passes through
  ``execve`` to programs that are not setuid/file-capable). Docker keeps 14
  harmless-for-the-host bits (``DEFAULT_CAPS``): no ``SYS_ADMIN`` (mount,
  namespaces...), no ``DAC_READ_SEARCH`` (``open_by_handle_at``), no
  ``SYS_MODULE``, no ``NET_ADMIN``...
* **no_new_privs** (``prctl(PR_SET_NO_NEW_PRIVS)``): from now on ``execve``
  never grants anything: setuid bits and file capabilities are ignored.
* **seccomp** (``seccomp(2)``): a BPF filter the kernel runs on every system
  call; cocin's is compiled by ``cocin.seccomp``. Installing one needs
  ``CAP_SYS_ADMIN`` or no_new_privs (so an unprivileged process cannot trick
  a setuid program), hence its place in the order below.
* **The user**: ``setgroups``/``setgid``/``setuid`` to the ``--user``; a
  non-root user keeps the capabilities in its bounding set only, so a setuid
  binary in the image could regain them (as in Docker), nothing else.

The order is runc's (``finalizeNamespace``): no_new_privs; seccomp while
still privileged (when no_new_privs is off); drop the bounding set;
``PR_SET_KEEPCAPS`` so that the uid change keeps the permitted set;
setgroups/setgid/setuid; ``capset``; clear the ambient set; seccomp last when
no_new_privs is on (then as late as possible: fewer calls need allowing).

The rest of this module is pure logic, checked before anything is made:
capability names (``--cap-add``/``--cap-drop``), ``--security-opt``,
``--ulimit`` and ``--sysctl``, and the lookup of a user in the image's
``/etc/passwd`` and ``/etc/group``. It imports only ``os`` and ``libc``: it is
on the start-up path of every container.
"""

from __future__ import annotations

import os
import stat

from . import libc
from .record import Factory, Record

# <linux/capability.h>: every capability, name (without CAP_) -> bit number.
CAPS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}

# moby's oci/caps/defaults.go: what a container's root keeps (mask 0xa80425fb).
DEFAULT_CAPS = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
]

# Docker's --ulimit names -> RLIMIT_* numbers (<asm-generic/resource.h>, same on x86_64 and aarch64).
RLIMITS = {
    "cpu": 0,
    "fsize": 1,
    "data": 2,
    "stack": 3,
    "core": 4,
    "rss": 5,
    "nproc": 6,
    "nofile": 7,
    "memlock": 8,
    "locks": 10,
    "sigpending": 11,
    "msgqueue": 12,
    "nice": 13,
    "rtprio": 14,
    "rttime": 15,
}

# Docker's namespaced sysctls (docker/cli opts.ValidateSysctl): these keys, and these prefixes.
SYSCTL_KEYS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
)
SYSCTL_PREFIXES = ("net.", "fs.mqueue.")

TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


# --- capability sets ------------------------------------------------------------------


def normalize_caps(names: list[str]) -> list[str]:
    """``cap_net_admin``, ``CAP_NET_ADMIN``, ``net_admin`` -> ``NET_ADMIN``; ``all`` -> ``ALL``.

    An unknown name is refused in Docker's words (``unknown capability: "CAP_FOO"``).
    """
    out = []
    for name in names:
        upper = name.strip().upper()
        if upper == "ALL":
            out.append("ALL")
            continue
        bare = upper[4:] if upper.startswith("CAP_") else upper
        if bare not in CAPS:
            raise ValueError(f'unknown capability: "CAP_{bare}"')
        if bare not in out:
            out.append(bare)
    return out


def known_caps() -> list[str]:
    """Every capability this kernel knows (``/proc/sys/kernel/cap_last_cap``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = max(CAPS.values())
    return [name for name, bit in CAPS.items() if bit <= last]


def capabilities(cfg: dict) -> list[str]:
    """The container's capability set, as moby's ``TweakCapabilities`` computes it.

    ``--privileged``: everything the kernel knows. ``--cap-add ALL``: everything
    but what ``--cap-drop`` names. ``--cap-drop ALL``: only what ``--cap-add``
    names. Otherwise the defaults, minus the drops, plus the adds.
    """
    if cfg.get("privileged"):
        return known_caps()
    adds, drops = cfg.get("cap_add") or [], cfg.get("cap_drop") or []
    if "ALL" in adds:
        return [c for c in known_caps() if c not in drops]
    if "ALL" in drops:
        return [c for c in adds if c != "ALL"]
    caps = [c for c in DEFAULT_CAPS if c not in drops]
    return caps + [c for c in adds if c not in caps]


def cap_mask(caps: list[str]) -> int:
    """The bit mask of a set of names, as /proc/PID/status prints it (``CapEff``)."""
    mask = 0
    for name in caps:
        mask |= 1 << CAPS[name]
    return mask


# --- --security-opt, --ulimit, --sysctl ---------------------------------------------------


def parse_security_opts(opts: list[str]) -> dict:
    """``--security-opt`` values -> the config keys they set.

    Docker's forms: ``no-new-privileges[=BOOL]`` (and the old ``:`` separator),
    ``seccomp=unconfined|builtin|PATH``, ``systempaths=unconfined``. SELinux and
    AppArmor do not exist in cocin: ``label=disable`` and ``apparmor=unconfined``
    ask for no such confinement and are accepted; any other ``label``/``apparmor``
    value would promise a confinement cocin cannot give, and is refused.
    Returns ``no_new_privileges``, ``systempaths_unconfined`` and ``seccomp``
    (``"default"``, ``"unconfined"``, or the profile's path).
    """
    out = {"no_new_privileges": False, "systempaths_unconfined": False, "seccomp": "default"}
    for opt in opts:
        if opt == "no-new-privileges":
            out["no_new_privileges"] = True
            continue
        sep = "=" if "=" in opt else ":"
        key, found, value = opt.partition(sep)
        if not found:
            raise ValueError(f'invalid --security-opt 1: "{opt}"')
        if key == "no-new-privileges" and value in TRUE_WORDS + FALSE_WORDS:
            out["no_new_privileges"] = value in TRUE_WORDS
        elif key == "seccomp" and value:
            out["seccomp"] = "default" if value == "builtin" else value
        elif key == "systempaths" and value == "unconfined":
            out["systempaths_unconfined"] = True
        elif (key, value) in (("label", "disable"), ("apparmor", "unconfined")):
            pass
        elif key in ("label", "apparmor"):
            raise ValueError(
                f'--security-opt "{opt}": cocin has no SELinux or AppArmor support '
                f"(only {key}={'disable' if key == 'label' else 'unconfined'} is accepted)"
            )
        else:
            raise ValueError(f'invalid --security-opt 2: "{opt}"')
    return out


def _rlimit_value(text: str, spec: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"invalid ulimit argument: {spec}") from None
    if value < -1:
        raise ValueError(f"invalid ulimit argument: {spec}")
    return value


def parse_ulimit(spec: str) -> list:
    """``nofile=1024:2048`` -> ``["nofile", 1024, 2048]`` (go-units' ParseUlimit; -1 is unlimited).

    Without ``:hard`` the hard limit is the soft one, as in Docker.
    """
    name, found, values = spec.partition("=")
    if not found or not values:
        raise ValueError(f"invalid ulimit argument: {spec}")
    if name not in RLIMITS:
        raise ValueError(f"invalid ulimit type: {name}")
    soft_s, has_hard, hard_s = values.partition(":")
    soft = _rlimit_value(soft_s, spec)
    hard = _rlimit_value(hard_s, spec) if has_hard else soft
    if hard != -1 and (soft == -1 or soft > hard):
        raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return [name, soft, hard]


def parse_ulimits(specs: list[str]) -> list[list]:
    """Several ``--ulimit``: the last one of a name wins (Docker keeps them in a map)."""
    by_name: dict[str, list] = {}
    for spec in specs:
        limit = parse_ulimit(spec)
        by_name[limit[0]] = limit
    return list(by_name.values())


def parse_sysctl(spec: str, host_network: bool = False) -> list[str]:
    """``net.ipv4.ip_forward=1`` -> ``[key, value]``; only keys a namespace isolates.

    The host's other knobs (``vm.*``, ``kernel.core_pattern``...) are the
    host's: refused, in Docker's words. The network ones belong to the host
    too when the container shares its network (``--network host``): refused
    as runc does.
    """
    key, found, value = spec.partition("=")
    key = key.strip()
    if not found or not key:
        raise ValueError(f"sysctl '{spec}' is not allowed")
    if key in ("kernel.hostname", "kernel.domainname"):
        raise ValueError(f"sysctl '{spec}' is not allowed: it conflicts with --hostname")
    if not (key in SYSCTL_KEYS or key.startswith(SYSCTL_PREFIXES)):
        raise ValueError(f"sysctl '{spec}' is not allowed")
    if "/" in key or ".." in key.split("."):
        raise ValueError(f"sysctl '{spec}' is not allowed")
    if host_network and key.startswith("net."):
        raise ValueError(f'sysctl "{key}" not allowed in host network namespace')
    return [key, value]


def parse_user(spec: str) -> tuple[str, str]:
    """``name|uid[:group|gid]`` -> ``(user, group)`` (group ``""`` when not given)."""
    user, _, group = spec.partition(":")
    if not user or ":" in group or (_ and not group):
        raise ValueError(f"invalid user: {spec!r}: use name|uid[:group|gid]")
    for part in (user, group):
        if part.isdigit() and int(part) >= 2**32 - 1:
            raise ValueError(f"invalid user: {spec!r}: ids must be below 4294967295")
    return user, group


# --- the user -------------------------------------------------------------------------


class Identity(Record):
    """Who the container's process runs as."""

    uid: int = 0
    gid: int = 0
    groups: list[int] = Factory(list)
    home: str = "/"


def _entries(path: str) -> list[list[str]]:
    """The colon-separated lines of /etc/passwd or /etc/group (missing file: none)."""
    try:  # O_NONBLOCK: a FIFO planted at /etc/passwd must not hang run or exec
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    with open(fd, "rb") as f:  # bytes: text mode would look up the locale's codec
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        text = f.read().decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _find_group(groups: list[list[str]], spec: str) -> int:
    """A group by name or gid; a gid need not exist, a name must (runc's rules)."""
    for entry in groups:
        if len(entry) >= 3 and spec in (entry[0], entry[2]) and entry[2].isdigit():
            return int(entry[2])
    if spec.isdigit():
        return int(spec)
    raise LookupError(f"unable to find group {spec}: no matching entries in group file")


def resolve_user(spec: str | None, group_add: list[str] = (), root: str = "/") -> Identity:
    """The identity of ``--user`` (and ``--group-add``) in the CURRENT root's files.

    Call it after ``pivot_root`` (or after joining the container's mount
    namespace): the names are the image's, not the host's. runc's rules: a
    name must be in /etc/passwd; a numeric uid need not be (then gid 0, HOME
    /); ``:group`` replaces the primary group and the /etc/group memberships;
    without it the user's groups in /etc/group are the supplementary ones.
    """
    user, group = parse_user(spec) if spec else ("0", "")
    passwd = _entries(os.path.join(root, "etc/passwd"))
    groups = _entries(os.path.join(root, "etc/group"))
    ident, name = None, None
    for entry in passwd:
        if len(entry) >= 4 and user in (entry[0], entry[2]) and entry[2].isdigit() and entry[3].isdigit():
            name = entry[0]
            ident = Identity(
                uid=int(entry[2]), gid=int(entry[3]), home=(entry[5] if len(entry) > 5 and entry[5] else "/")
            )
            break
    if ident is None:
        if not user.isdigit():
            raise LookupError(f"unable to find user {user}: no matching entries in passwd file")
        ident = Identity(uid=int(user))
    if group:
        ident.gid = _find_group(groups, group)
    elif name is not None:
        ident.groups = [int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit() and name in g[3].split(",")]
    for extra in group_add:
        gid = _find_group(groups, extra)
        if gid not in ident.groups:
            ident.groups.append(gid)
    return ident


# --- the drop ---------------------------------------------------------------------------


def apply_rlimits(ulimits: list) -> None:
    """``--ulimit``: setrlimit each ``[name, soft, hard]`` (-1 is RLIM_INFINITY).

    Lowering is always allowed; raising a hard limit needs CAP_SYS_RESOURCE,
    so this runs before the capabilities are dropped.
    """
    for name, soft, hard in ulimits:
        try:
            libc.setrlimit(RLIMITS[name], soft, hard)
        except OSError as e:
            raise OSError(f"setrlimit {name}={soft}:{hard}: {os.strerror(e.errno)}") from None


def drop_privileges(caps: list[str], ident: Identity, no_new_privs: bool, program: bytes | None) -> None:
    """Confine the calling process, in runc's order (see the module's docstring).

    ``caps``: the capability names to keep (``capabilities(cfg)``); those this
    process does not hold itself cannot be given and are left out. ``program``:
    a compiled seccomp filter, or None for none.
    """
    if no_new_privs:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    if program and not no_new_privs:
        _install_seccomp(program)  # still holding CAP_SYS_ADMIN
    keep = cap_mask(caps)
    for bit in range(max(CAPS.values()) + 1):
        if not keep & (1 << bit) and libc.capbset_read(bit):
            libc.prctl(libc.PR_CAPBSET_DROP, bit)
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    os.setgroups(ident.groups)
    os.setresgid(ident.gid, ident.gid, ident.gid)
    os.setresuid(ident.uid, ident.uid, ident.uid)
    _, permitted, _ = libc.capget()
    mine = keep & permitted if ident.uid == 0 else 0
    libc.capset(mine, mine, 0)
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    if program and no_new_privs:
        _install_seccomp(program)


def _install_seccomp(program: bytes) -> None:
    install = getattr(libc, "seccomp_set_mode_filter", None)
    if install is None:
        raise OSError(38, "seccomp: this cocin has no seccomp support (cocin/libc.py)")
    install(program)


def stub_args(caps: list[str], ident: Identity, no_new_privs: bool, program_path: str | None) -> list[str]:
    """The same confinement as options of ``cocin/nsenter_stub`` (for ``exec``).

    ``--uid U --gid G --groups G1,G2 --caps HEX [--nnp] [--seccomp FILE]``:
    ``--groups`` is always there (an empty value: no supplementary groups);
    ``--caps`` is the mask in hex without ``0x`` (as ``CapEff`` prints it).
    """
    args = [
        "--uid",
        str(ident.uid),
        "--gid",
        str(ident.gid),
        "--groups",
        ",".join(str(g) for g in ident.groups),
        "--caps",
        f"{cap_mask(caps):x}",
    ]
    if no_new_privs:
        args.append("--nnp")
    if program_path:
        args += ["--seccomp", program_path]
    return args
