"""The default seccomp filter for real (root): installed in a forked child,
which then tries harmless calls the filter must refuse or allow.

The compiled programs themselves are tested without the kernel in
tests/unit/test_seccomp.py.
"""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from cocin import libc, seccomp, syscalls
from cocin.confine import DEFAULT_CAPS


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    return tmp_path


# --- for real, in a child (root) --------------------------------------------------


def _seccomp_available() -> bool:
    try:
        with open("/proc/self/status") as f:
            return "Seccomp:" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="installs a filter as the containers' root would (needs root)")
@pytest.mark.skipif(not _seccomp_available(), reason="the kernel has no seccomp")
def test_installed_filter_refuses_in_a_child(cache_root):
    """A forked child sets no_new_privs, installs the default filter and tries
    harmless calls: unshare(CLONE_NEWUSER) and keyctl fail with EPERM, getpid
    and write work, and execve still runs a program."""
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("no syscall table for this machine")
    prog = seccomp.program(None, DEFAULT_CAPS)
    keyctl = syscalls.AARCH64["keyctl"] if os.uname().machine == "aarch64" else syscalls.X86_64["keyctl"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            os.close(r)
            libc.set_no_new_privs()
            libc.seccomp_set_mode_filter(prog)
            results = []
            try:
                libc.unshare(libc.CLONE_NEWUSER)
                results.append("unshare:allowed")
            except OSError as e:
                results.append(f"unshare:{errno.errorcode[e.errno]}")
            c = ctypes.CDLL(None, use_errno=True)
            rc = c.syscall(ctypes.c_long(keyctl), 0, 0, 0, 0, 0)  # KEYCTL_GET_KEYRING_ID
            results.append(f"keyctl:{errno.errorcode.get(ctypes.get_errno()) if rc < 0 else 'allowed'}")
            results.append(f"getpid:{os.getpid() == pid or os.getpid() > 0}")
            with open("/proc/self/status") as f:
                results.append("mode:" + f.read().split("Seccomp:")[1].split()[0])
            os.write(w, (" ".join(results) + "\n").encode())
            os.close(w)
            os.execv("/bin/sh", ["sh", "-c", "exit 7"])
        finally:
            os._exit(99)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read().split()
    _, status = os.waitpid(pid, 0)
    assert report == ["unshare:EPERM", "keyctl:EPERM", "getpid:True", "mode:2"]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
