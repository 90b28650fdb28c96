"""Tests of the seccomp compiler, its cache and the generated syscall tables.

The compiled programs run here in a small classic-BPF interpreter on synthetic
``struct seccomp_data`` (pure logic, any user, any machine); the default
filter installed for real is tested in tests/host/test_seccomp_host.py.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
import sys

import pytest

from cocin import seccomp, seccomp_compile, syscalls

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import gen_syscalls  # noqa: E402

# Written out from the kernel headers, not taken from the code under test.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
EPERM = RET_ERRNO | errno.EPERM
ENOSYS = RET_ERRNO | errno.ENOSYS
CLONE_NEWUSER, CLONE_NEWNS, CLONE_THREAD, SIGCHLD = 0x10000000, 0x00020000, 0x00010000, 17
AF_INET, AF_VSOCK = 2, 40

DOCKER_CAPS = [
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

with open(seccomp.DEFAULT_PROFILE) as _f:
    DEFAULT_TEXT = _f.read()


def run(prog: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args=(0, 0, 0, 0, 0, 0)) -> int:
    """Classic BPF, as the kernel runs a seccomp filter: the verdict for one call."""
    insns = list(struct.iter_unpack("=HBBI", prog))
    assert 0 < len(insns) <= 4096
    data = struct.pack("=IIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    a, pc = 0, 0
    while True:
        assert 0 <= pc < len(insns), "fell off the end of the program"
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        if code == 0x20:  # ld [k]
            assert k % 4 == 0 and k + 4 <= len(data)
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x00:  # ld #k
            a = k
        elif code == 0x54:  # and #k
            a &= k
        elif code == 0x05:  # ja k
            pc += 1 + k
            continue
        elif cls == 0x05 and code & 0x08 == 0:  # jeq/jgt/jge/jset #k
            taken = {0x10: a == k, 0x20: a > k, 0x30: a >= k, 0x40: a & k != 0}[code & 0xF0]
            pc += 1 + (jt if taken else jf)
            continue
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")
        pc += 1


def default(caps=DOCKER_CAPS, machine="x86_64", release="6.1.0-18-amd64") -> bytes:
    return seccomp_compile.compile_text(DEFAULT_TEXT, caps, machine, release)


X = syscalls.X86_64


@pytest.fixture(scope="module")
def prog():
    return default()


@pytest.mark.parametrize(
    "name",
    [
        "read",
        "write",
        "getpid",
        "execve",
        "openat",
        "mmap",
        "futex",
        "exit_group",
        "rt_sigreturn",
        "chown",
        "setuid",
        "capset",
        "prctl",
        "arch_prctl",
        "chroot",
        "name_to_handle_at",
        "ptrace",
        "wait4",
        "fork",
        "seccomp",
    ],
)
def test_everyday_calls_are_allowed(prog, name):
    assert run(prog, X[name]) == RET_ALLOW


@pytest.mark.parametrize(
    "name",
    [
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "mount",
        "umount2",
        "setns",
        "open_by_handle_at",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "reboot",
        "bpf",
        "perf_event_open",
        "pivot_root",
        "swapon",
        "acct",
        "settimeofday",
        "iopl",
        "userfaultfd",
        "fsopen",
        "move_mount",
        "sethostname",
        "syslog",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ],
)
def test_dangerous_calls_fail_with_eperm(prog, name):
    assert run(prog, X[name]) == EPERM


def test_capabilities_open_their_calls():
    admin = default(DOCKER_CAPS + ["SYS_ADMIN"])
    for name in ("mount", "umount2", "unshare", "setns", "sethostname", "bpf", "fsopen"):
        assert run(admin, X[name]) == RET_ALLOW, name
    assert run(admin, X["clone"], args=[CLONE_NEWUSER | SIGCHLD]) == RET_ALLOW
    assert run(admin, X["clone3"]) == RET_ALLOW
    assert run(admin, X["keyctl"]) == EPERM  # no capability opens keyctl
    assert run(default(DOCKER_CAPS + ["DAC_READ_SEARCH"]), X["open_by_handle_at"]) == RET_ALLOW
    assert run(default(DOCKER_CAPS + ["SYS_TIME"]), X["settimeofday"]) == RET_ALLOW
    assert run(default(DOCKER_CAPS + ["CAP_SYS_BOOT"]), X["reboot"]) == RET_ALLOW  # CAP_ prefix accepted
    assert run(default([]), X["chroot"]) == EPERM  # SYS_CHROOT dropped


def test_clone_may_not_make_namespaces_without_sys_admin(prog):
    assert run(prog, X["clone"], args=[SIGCHLD]) == RET_ALLOW
    assert run(prog, X["clone"], args=[CLONE_THREAD | 0x3D0F00]) == RET_ALLOW  # pthread_create's flags
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run(prog, X["clone"], args=[flag | SIGCHLD]) == EPERM, hex(flag)
    # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc fall back to clone
    assert run(prog, X["clone3"]) == ENOSYS


def test_personality_only_the_harmless_values(prog):
    for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert run(prog, X["personality"], args=[value]) == RET_ALLOW, hex(value)
    for value in (0x0400000, 0x0040000, 1, 0x1_0000_0000, 0xFFFF_FFFF_FFFF_FFFF):
        assert run(prog, X["personality"], args=[value]) == EPERM, hex(value)


def test_socket_all_families_but_vsock(prog):
    assert run(prog, X["socket"], args=[AF_INET, 1]) == RET_ALLOW
    assert run(prog, X["socket"], args=[AF_VSOCK, 1]) == EPERM


def test_architecture_check(prog):
    assert run(prog, X["getpid"], arch=AUDIT_ARCH_ARM) == RET_KILL_PROCESS
    assert run(prog, X["getpid"], arch=AUDIT_ARCH_AARCH64) == RET_KILL_PROCESS
    # x32: the x86_64 arch with bit 30 in the number
    assert run(prog, 0x40000000 | X["getpid"]) == RET_KILL_PROCESS
    assert run(prog, 0x40000000 | 1) == RET_KILL_PROCESS
    assert run(prog, 0xFFFFFFFF) == EPERM  # -1, a tracer's "skip this call": the default, as libseccomp


def test_i386_is_filtered_with_its_own_numbers(prog):
    i = syscalls.I386
    for name in ("getpid", "read", "socketcall", "_llseek", "mmap2", "fcntl64", "set_thread_area"):
        assert run(prog, i[name], arch=AUDIT_ARCH_I386) == RET_ALLOW, name
    for name in ("keyctl", "unshare", "mount", "open_by_handle_at"):
        assert run(prog, i[name], arch=AUDIT_ARCH_I386) == EPERM, name
    assert run(prog, i["clone"], arch=AUDIT_ARCH_I386, args=[CLONE_NEWNS]) == EPERM
    assert run(prog, i["clone"], arch=AUDIT_ARCH_I386, args=[SIGCHLD]) == RET_ALLOW
    assert run(prog, i["personality"], arch=AUDIT_ARCH_I386, args=[0xFFFFFFFF]) == RET_ALLOW
    # Docker evaluates "arches" against the machine (amd64), not per ABI: i386 gets arch_prctl too
    assert run(prog, i["arch_prctl"], arch=AUDIT_ARCH_I386) == RET_ALLOW


def test_numbers_beyond_the_profile_get_enosys(prog):
    last = max(X[n] for n in ("futex_waitv", "process_mrelease", "memfd_secret"))
    assert run(prog, last + 1) == ENOSYS
    assert run(prog, 1000) == ENOSYS
    assert run(prog, 400) == EPERM  # a hole in the table below the last known number


def test_every_number_of_the_table_follows_the_profile(prog):
    """For the calls without argument rules: allowed exactly when an applicable
    ALLOW rule names them (the profile read independently of the compiler)."""
    profile = json.loads(DEFAULT_TEXT)
    with_args = {n for r in profile["syscalls"] if r.get("args") for n in r["names"]}
    allowed = set()
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes", {}), rule.get("excludes", {})
        caps_ok = all(c[4:] in DOCKER_CAPS for c in inc.get("caps", [])) and not any(
            c[4:] in DOCKER_CAPS for c in exc.get("caps", [])
        )
        arch_ok = (not inc.get("arches") or "amd64" in inc["arches"]) and "amd64" not in exc.get("arches", [])
        if caps_ok and arch_ok and rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args"):
            allowed.update(rule["names"])
    last = max(X[n] for n in allowed | with_args if n in X)  # runc's -ENOSYS stub above it
    for name, nr in X.items():
        if name in with_args or name == "clone3":
            continue
        want = RET_ALLOW if name in allowed else ENOSYS if nr > last else EPERM
        assert run(prog, nr) == want, name


def test_aarch64_program():
    prog = default(machine="aarch64")
    a = syscalls.AARCH64
    assert run(prog, a["read"], arch=AUDIT_ARCH_AARCH64) == RET_ALLOW
    assert run(prog, a["mkdirat"], arch=AUDIT_ARCH_AARCH64) == RET_ALLOW
    assert run(prog, a["keyctl"], arch=AUDIT_ARCH_AARCH64) == EPERM
    assert run(prog, a["clone"], arch=AUDIT_ARCH_AARCH64, args=[CLONE_NEWUSER]) == EPERM
    assert run(prog, a["read"], arch=AUDIT_ARCH_X86_64) == RET_KILL_PROCESS
    assert run(prog, 3, arch=AUDIT_ARCH_ARM) == RET_KILL_PROCESS  # no 32-bit ARM table: refused


def _libseccomp():
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


class _ScmpArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp <seccomp.h>
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_SCMP_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


def _libseccomp_program(lib, caps) -> bytes:
    """The same rules (Docker's selection) given to libseccomp, runc's compiler."""
    profile = json.loads(DEFAULT_TEXT)
    ctx = lib.seccomp_init(EPERM)
    try:
        assert lib.seccomp_attr_set(ctx, 2, RET_KILL_PROCESS) == 0  # SCMP_FLTATR_ACT_BADARCH
        assert lib.seccomp_arch_add(ctx, AUDIT_ARCH_I386) == 0  # SCMP_ARCH_X86
        for names, conds, action in seccomp_compile.select(profile, set(caps), "amd64", (6, 1)):
            arr = (_ScmpArgCmp * 6)(
                *[_ScmpArgCmp(a["index"], _SCMP_OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0)) for a in conds]
            )
            if action == EPERM:
                continue  # the default: runc drops such rules before libseccomp sees them
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr != -1:  # __NR_SCMP_ERROR: unknown name
                    assert lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr) == 0, name
        r, w = os.pipe()
        try:
            assert lib.seccomp_export_bpf(ctx, w) == 0
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            return f.read()
    finally:
        lib.seccomp_release(ctx)


@pytest.mark.skipif(_libseccomp() is None, reason="libseccomp.so.2 is not installed (the reference compiler)")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="libseccomp compiles for this machine only")
@pytest.mark.parametrize("caps", [DOCKER_CAPS, DOCKER_CAPS + ["SYS_ADMIN"], []], ids=["docker", "admin", "none"])
def test_same_verdicts_as_libseccomp(caps):
    """Every number of both ABIs (and x32, -1), with argument values around
    the profile's rules, gets libseccomp's verdict plus runc's -ENOSYS stub."""
    theirs, ours = _libseccomp_program(_libseccomp(), caps), default(caps)
    values = [
        0,
        8,
        17,
        40,
        0x20000,
        0x20008,
        0xFFFFFFFF,
        0x0400000,
        0x10000011,
        0x3D0F00,
        0x1_0000_0000,
        0x1_0000_0028,
        0xFFFF_FFFF_FFFF_FFFF,
    ]
    ruled = {"clone", "personality", "socket"}
    for arch, table in ((AUDIT_ARCH_X86_64, X), (AUDIT_ARCH_I386, syscalls.I386)):
        with_args = {table[n] for n in ruled if n in table}
        last = max(
            table[n]
            for r in seccomp_compile.select(json.loads(DEFAULT_TEXT), set(caps), "amd64", (6, 1))
            for n in r[0]
            if n in table
        )
        for nr in list(range(520)) + [0x40000001, 0x40000027, 0xFFFFFFFF]:
            for a0 in values if nr in with_args else [0]:
                want = run(theirs, nr, arch, [a0])
                if last < nr and (arch == AUDIT_ARCH_I386 or nr < 0x40000000):
                    want = ENOSYS  # runc prepends this to libseccomp's program
                assert run(ours, nr, arch, [a0]) == want, (hex(arch), nr, hex(a0))


# --- custom profiles ---------------------------------------------------------------


def custom(rules, default_action="SCMP_ACT_ERRNO", **extra) -> bytes:
    text = json.dumps({"defaultAction": default_action, "syscalls": rules, **extra})
    return seccomp_compile.compile_text(text, [], "x86_64", "6.1.0")


@pytest.mark.parametrize(
    "op, test",
    [
        ("SCMP_CMP_EQ", lambda a, v: a == v),
        ("SCMP_CMP_NE", lambda a, v: a != v),
        ("SCMP_CMP_LT", lambda a, v: a < v),
        ("SCMP_CMP_LE", lambda a, v: a <= v),
        ("SCMP_CMP_GT", lambda a, v: a > v),
        ("SCMP_CMP_GE", lambda a, v: a >= v),
    ],
)
def test_64_bit_comparisons(op, test):
    edges = [0, 1, 0xFFFFFFFF, 0x1_0000_0000, 0x1_0000_0001, 0x2_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF]
    for value in (5, 0x1_0000_0000, 0x2_0000_0007):
        prog = custom(
            [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": value, "op": op}]}]
        )
        for arg in edges + [value - 1, value, value + 1]:
            want = RET_ALLOW if test(arg, value) else EPERM
            assert run(prog, X["getpid"], args=[0, 0, arg]) == want, (op, hex(value), hex(arg))


def test_masked_eq_and_several_conditions():
    prog = custom(
        [
            {
                "names": ["ioctl"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 0xFF00_0000_00F0, "valueTwo": 0x1200_0000_0030, "op": "SCMP_CMP_MASKED_EQ"},
                ],
            }
        ]
    )
    assert run(prog, X["ioctl"], args=[1, 0x1234_5678_9A3F]) == RET_ALLOW
    assert run(prog, X["ioctl"], args=[1, 0x1334_5678_9A3F]) == EPERM  # high half differs under the mask
    assert run(prog, X["ioctl"], args=[1, 0x1234_5678_9A4F]) == EPERM  # low half differs
    assert run(prog, X["ioctl"], args=[2, 0x1234_5678_9A3F]) == EPERM  # first condition fails


def test_actions_and_precedence():
    prog = custom(
        [
            {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["gettid"], "action": "SCMP_ACT_LOG"},
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},  # unconditional: wins over the rule above
            {"name": "close", "action": "SCMP_ACT_ALLOW"},
            {"names": ["no_such_call", "dup"], "action": "SCMP_ACT_ALLOW"},  # unknown names are skipped
        ],
        default_action="SCMP_ACT_KILL",
    )
    assert run(prog, X["getpid"]) == RET_KILL_PROCESS
    assert run(prog, X["getppid"]) == 0x00030000
    assert run(prog, X["gettid"]) == 0x7FFC0000
    assert run(prog, X["read"]) == RET_ERRNO | 13
    assert run(prog, X["write"], args=[2]) == RET_ALLOW
    assert run(prog, X["close"]) == RET_ALLOW and run(prog, X["dup"]) == RET_ALLOW
    assert run(prog, X["chdir"]) == 0  # SCMP_ACT_KILL is kill-thread
    assert run(prog, X["keyctl"]) == ENOSYS  # above the last number the profile names (gettid)


def test_enosys_starts_above_every_name_the_profile_uses():
    """runc's stub counts the rules it drops as no-ops (action = default) too."""
    prog = custom(
        [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}, {"names": ["futex_waitv"], "action": "SCMP_ACT_ERRNO"}]
    )  # EPERM: the default
    assert run(prog, X["getpid"]) == RET_ALLOW
    assert run(prog, X["futex_waitv"]) == EPERM and run(prog, X["futex_waitv"] - 5) == EPERM
    assert run(prog, X["futex_waitv"] + 1) == ENOSYS


def test_allow_by_default_has_no_enosys_stub():
    prog = custom([{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}], default_action="SCMP_ACT_ALLOW")
    assert run(prog, X["keyctl"]) == EPERM
    assert run(prog, X["getpid"]) == RET_ALLOW
    assert run(prog, 1000) == RET_ALLOW


def test_long_jumps():
    """Bodies long enough that the binary search must jump over more than 255
    instructions (classic BPF's conditional jumps reach 255 at most)."""
    names = sorted(X, key=X.get)[:200]
    rules = [
        {
            "names": [n],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {"index": 0, "value": X[n], "op": "SCMP_CMP_EQ"},  # a different body each:
                {"index": 1, "value": 9, "op": "SCMP_CMP_NE"},
            ],
        }
        for n in names
    ]  # nothing merges
    prog = custom(rules)
    assert len(prog) // 8 > 1000
    insns = list(struct.iter_unpack("=HBBI", prog))
    assert any(code == 0x05 and k > 255 for code, _, _, k in insns), "no long jump was needed"
    for name in names:
        assert run(prog, X[name], args=[X[name], 1]) == RET_ALLOW, name
        assert run(prog, X[name], args=[X[name], 9]) == EPERM, name
        assert run(prog, X[name], args=[X[name] + 1, 1]) == EPERM, name


def test_too_many_instructions_is_a_profile_error():
    rules = [
        {
            "names": [n],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": i, "value": X[n] + i, "op": "SCMP_CMP_GT"} for i in range(6)],
        }
        for n in list(X)[:200]
    ]
    with pytest.raises(seccomp.ProfileError, match="4096"):
        custom(rules)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "decoding seccomp profile failed"),
        ("[]", "not a JSON object"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', "unknown action"),
        ('{"syscalls": []}', "unknown action None"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}',
            "not supported",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "out of range",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]}',
            "unknown operator",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]}',
            "not an integer",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"],'
            ' "action": "SCMP_ACT_ALLOW"}]}',
            "either 'name' or 'names'",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [{}]}',
            "use either 'architectures' or 'archMap'",
        ),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}', "unknown architecture"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}', "errnoRet is only valid"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "includes": {"minKernel": "six"}}]}',
            "invalid minKernel",
        ),
    ],
)
def test_bad_profiles(text, message):
    with pytest.raises(seccomp.ProfileError, match=message) as e:
        seccomp_compile.compile_text(text, [], "x86_64", "6.1.0")
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 125


def test_min_kernel_and_architectures():
    rules = [
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
        {"names": ["futex_waitv"], "action": "SCMP_ACT_ALLOW"},
    ]
    text = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules, "architectures": ["SCMP_ARCH_X86_64"]})
    old = seccomp_compile.compile_text(text, [], "x86_64", "4.4.0")
    new = seccomp_compile.compile_text(text, [], "x86_64", "6.1.0")
    assert run(old, X["ptrace"]) == EPERM and run(old, X["getpid"]) == RET_ALLOW
    assert run(new, X["ptrace"]) == RET_ALLOW and run(new, X["getpid"]) == EPERM
    # i386 not listed in "architectures": refused
    assert run(new, syscalls.I386["getpid"], arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS


# --- the generated tables -----------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/usr/include/asm-generic/unistd.h"), reason="no kernel headers")
def test_generator_reproduces_the_committed_table():
    with open(os.path.join(REPO, "cocin", "syscalls.py")) as f:
        committed = f.read()
    assert gen_syscalls.render(gen_syscalls.tables("/usr/include")) == committed


def test_generic_header_preprocessing():
    header = """
#define __NR_io_setup 0
#if defined(__ARCH_WANT_TIME32_SYSCALLS) || __BITS_PER_LONG != 32
#define __NR_io_getevents 4
#endif
#ifdef __ARCH_WANT_RENAMEAT
#define __NR_renameat 38
#endif
#ifndef __ARCH_WANT_RENAMEAT
#define __NR_never 99
#endif
#define __NR3264_fcntl 25
#if __BITS_PER_LONG == 32 && !defined(__SYSCALL_COMPAT)
#define __NR_thirty_two 98
#else
#define __NR_sixty_four 97
#endif
#undef __NR_syscalls
#define __NR_syscalls 451
#if __BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)
#define __NR_fcntl __NR3264_fcntl
#else
#define __NR_fcntl64 __NR3264_fcntl
#endif
"""
    table = gen_syscalls.parse_generic(header, ("__ARCH_WANT_RENAMEAT",))
    assert table == {"io_setup": 0, "io_getevents": 4, "renameat": 38, "sixty_four": 97, "fcntl": 25}
    assert "fcntl64" in gen_syscalls.parse_generic(header, (), bits=32)


def test_tables_agree_with_well_known_numbers():
    assert (X["read"], X["keyctl"], X["seccomp"], X["clone3"]) == (0, 250, 317, 435)
    assert (syscalls.I386["read"], syscalls.I386["socketcall"]) == (3, 102)
    a = syscalls.AARCH64
    assert (a["read"], a["fcntl"], a["newfstatat"], a["renameat"], a["getrlimit"], a["memfd_secret"]) == (
        63,
        25,
        79,
        38,
        163,
        447,
    )
    assert "fcntl64" not in a and "open" not in a and "sync_file_range2" not in a


# --- the cache ----------------------------------------------------------------------


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    return tmp_path


def _cached(root) -> list[str]:
    d = os.path.join(str(root), "cache", "seccomp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_cache_compiles_once_then_reads_the_file(cache_root, monkeypatch):
    first = seccomp.program(None, DOCKER_CAPS)
    files = _cached(cache_root)
    assert len(files) == 1 and files[0].endswith(".bpf")
    d = os.path.join(str(cache_root), "cache", "seccomp")
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(d)).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(d, files[0])).st_mode & 0o777 == 0o600

    def no_compile(*a):
        raise AssertionError("compiled again")

    monkeypatch.setattr(seccomp, "_compile", no_compile)
    assert seccomp.program(None, DOCKER_CAPS) == first
    assert seccomp.program(None, list(reversed(DOCKER_CAPS))) == first  # the set counts, not the order


def test_cache_key_changes_recompile(cache_root, monkeypatch, tmp_path):
    calls = []
    real = seccomp._compile
    monkeypatch.setattr(seccomp, "_compile", lambda *a: calls.append(a) or real(*a))
    seccomp.program(None, DOCKER_CAPS)
    seccomp.program(None, DOCKER_CAPS + ["SYS_ADMIN"])  # other capabilities
    seccomp.program('{"defaultAction": "SCMP_ACT_ALLOW"}', DOCKER_CAPS)  # a custom profile
    assert len(calls) == 3 and len(_cached(cache_root)) == 3
    # the profile file (or the compiler) changes: its size and mtime are in the key
    copy = tmp_path / "profile.json"
    copy.write_text(DEFAULT_TEXT)
    keyed = (str(copy),) + seccomp._KEYED_FILES[1:]
    monkeypatch.setattr(seccomp, "_KEYED_FILES", keyed)
    monkeypatch.setattr(seccomp, "DEFAULT_PROFILE", str(copy))
    seccomp.program(None, DOCKER_CAPS)
    assert len(calls) == 4
    seccomp.program(None, DOCKER_CAPS)
    assert len(calls) == 4
    os.utime(copy, ns=(1, 1))
    seccomp.program(None, DOCKER_CAPS)
    assert len(calls) == 5


def test_cache_ignores_a_damaged_file(cache_root):
    good = seccomp.program(None, DOCKER_CAPS)
    path = os.path.join(str(cache_root), "cache", "seccomp", _cached(cache_root)[0])
    with open(path, "wb") as f:
        f.write(good[:13])
    assert seccomp.program(None, DOCKER_CAPS) == good
    with open(path, "rb") as f:
        assert f.read() == good


def test_cache_hit_imports_nothing_heavy(cache_root):
    """The default-profile hit is on every `cocin run`: no json, hashlib, re, compiler."""
    seccomp.program(None, DOCKER_CAPS)
    code = (
        "import sys; from cocin import state, seccomp; before = set(sys.modules); "
        f"seccomp.program(None, {DOCKER_CAPS!r}); "
        "print(sorted(set(sys.modules) - before))"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COCIN_ROOT": str(cache_root)},
    )
    assert out.stdout.strip() == "[]"


def test_custom_profile_error_through_program(cache_root):
    with pytest.raises(seccomp.ProfileError, match="unknown action"):
        seccomp.program('{"defaultAction": "ALLOW"}', [])
    assert _cached(cache_root) == []
