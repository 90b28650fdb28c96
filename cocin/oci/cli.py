"""runc's command line: ``cocin-oci [GLOBAL FLAGS] VERB [FLAGS] ID [ARGS]``.

Engines call the runtime as a program, so its command line *is* the
interface; podman (through conmon) and containerd's shim were written
against runc's, and ``/work/shared/oci/PROTOCOL.md`` records what they send.
The rules copied from runc (Go's ``flag`` package under urfave/cli):

* flags are ``-x`` or ``--x``, values ``--x=v`` or ``--x v``, booleans
  ``--x`` or ``--x=false``; global flags come before the verb;
* a verb's flags may also follow its arguments (``delete ID --force``),
  except for ``exec``, ``run`` and ``ps``, whose trailing arguments belong to
  a command (``exec ID sh -c 'ls -l'``); ``--`` ends the flags;
* success prints nothing (what ``create`` prints lands in the container's
  log); a failure is **one** line: ``cocin-oci: error: MSG`` on stderr and, with
  ``--log FILE``, one line appended to FILE, in logrus's text form or, with
  ``--log-format json``, ``{"level":"error","msg":MSG,"time":RFC3339}`` (podman
  parses the whole file as one object, containerd takes the last error line);
* exit status 1 on failure, 255 for a failed ``exec`` (runc's codes).
"""

from __future__ import annotations

import os
import sys
import time

from ..fastjson import dumps
from . import SPEC_VERSION, VERSION, OCIError
from .store import DEFAULT_ROOT, Store
from .verbs import VERB_FUNCS

# --- flags --------------------------------------------------------------------------
# name -> kind: "bool", "str", "int" or "list" (repeatable); aliases map to a name.

GLOBAL = {
    "debug": "bool",
    "log": "str",
    "log-format": "str",
    "root": "str",
    "criu": "str",
    "systemd-cgroup": "bool",
    "rootless": "str",
    "help": "bool",
    "version": "bool",
}
GLOBAL_ALIASES = {"h": "help", "v": "version"}

_CREATE = {
    "bundle": "str",
    "console-socket": "str",
    "pid-file": "str",
    "no-pivot": "bool",
    "no-new-keyring": "bool",
    "preserve-fds": "int",
}
UPDATE_FLAGS = {
    "memory": ("memory", "limit"),
    "memory-reservation": ("memory", "reservation"),
    "memory-swap": ("memory", "swap"),
    "kernel-memory": ("memory", "kernel"),
    "kernel-memory-tcp": ("memory", "kernelTCP"),
    "cpu-shares": ("cpu", "shares"),
    "cpu-quota": ("cpu", "quota"),
    "cpu-period": ("cpu", "period"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime"),
    "cpu-rt-period": ("cpu", "realtimePeriod"),
    "cpuset-cpus": ("cpu", "cpus"),
    "cpuset-mems": ("cpu", "mems"),
    "pids-limit": ("pids", "limit"),
    "blkio-weight": ("blockIO", "weight"),
}

VERBS: dict[str, tuple[dict, dict, bool, str]] = {
    # verb: (flags, aliases, flags-anywhere, usage)
    "create": (_CREATE, {"b": "bundle"}, True, "create [--bundle B] [--pid-file F] [--console-socket S] ID"),
    "run": (
        dict(_CREATE, detach="bool", keep="bool", **{"no-subreaper": "bool"}),
        {"b": "bundle", "d": "detach"},
        False,
        "run [--bundle B] [--detach] [--pid-file F] [--console-socket S] [--keep] ID",
    ),
    "start": ({}, {}, True, "start ID"),
    "state": ({}, {}, True, "state ID"),
    "kill": ({"all": "bool"}, {"a": "all"}, True, "kill [--all] ID [SIGNAL]"),
    "delete": ({"force": "bool"}, {"f": "force"}, True, "delete [--force] ID"),
    "list": (
        {"format": "str", "quiet": "bool"},
        {"f": "format", "q": "quiet"},
        True,
        "list [--format table|json] [-q]",
    ),
    "ps": ({"format": "str"}, {"f": "format"}, False, "ps [--format table|json] ID [-- PS ARGS]"),
    "pause": ({}, {}, True, "pause ID"),
    "resume": ({}, {}, True, "resume ID"),
    "exec": (
        {
            "console-socket": "str",
            "cwd": "str",
            "env": "list",
            "tty": "bool",
            "user": "str",
            "additional-gids": "list",
            "process": "str",
            "detach": "bool",
            "pid-file": "str",
            "process-label": "str",
            "apparmor": "str",
            "no-new-privs": "bool",
            "cap": "list",
            "preserve-fds": "int",
            "cgroup": "list",
            "ignore-paused": "bool",
        },
        {"e": "env", "t": "tty", "u": "user", "g": "additional-gids", "p": "process", "d": "detach", "c": "cap"},
        False,
        "exec [--process F | ID COMMAND [ARGS...]] [--detach] [--pid-file F] [--tty] [--console-socket S] ID",
    ),
    "update": (
        dict({"resources": "str"}, **{k: "str" for k in UPDATE_FLAGS}),
        {"r": "resources"},
        True,
        "update [--resources FILE|-] [--memory N ...] ID",
    ),
    "spec": ({"bundle": "str", "rootless": "bool"}, {"b": "bundle"}, True, "spec [--bundle B] [--rootless]"),
    "features": ({}, {}, True, "features"),
}


def parse_flags(args: list[str], flags: dict, aliases: dict, anywhere: bool) -> tuple[dict, list[str]]:
    """Go-style flag parsing; returns (values by flag name, positional arguments)."""
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            rest += args[i:]
            break
        if not a.startswith("-") or a == "-":
            rest.append(a)
            if not anywhere:
                rest += args[i:]
                break
            continue
        name, eq, value = a.lstrip("-").partition("=")
        name = aliases.get(name, name)
        kind = flags.get(name)
        if kind is None or a.startswith("---"):
            raise OCIError(f"flag provided but not defined: {a.partition('=')[0]}")
        if kind == "bool":
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise OCIError(f'invalid boolean value "{value}" for {a}')
            opts[name] = not eq or value.lower() in ("true", "1")
            continue
        if not eq:
            if i >= len(args):
                raise OCIError(f"flag needs an argument: {a}")
            value = args[i]
            i += 1
        if kind == "int":
            try:
                opts[name] = int(value)
            except ValueError:
                raise OCIError(f'invalid value "{value}" for flag {a}: parse error') from None
        elif kind == "list":
            opts.setdefault(name, []).append(value)
        else:
            opts[name] = value
    return opts, rest


# --- the error log --------------------------------------------------------------------


class Log:
    """Where errors (and, with --debug, debug lines) go; see the module docstring."""

    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def line(self, level: str, msg: str) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            return dumps({"level": level, "msg": msg, "time": t})  # compact, as Go writes it
        return f"time={dumps(t)} level={level} msg={dumps(msg)}"

    def _append(self, text: str) -> bool:
        if not self.path:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            os.write(fd, (text + "\n").encode())  # one write: lines of two processes never interleave
        finally:
            os.close(fd)
        return True

    def error(self, msg: str) -> None:
        self._append(self.line("error", msg))
        if self.fmt == "json" and not self.path:
            _stderr(self.line("error", msg))
        else:
            _stderr(f"cocin-oci: error: {msg}")

    def warn(self, msg: str) -> None:
        if not self._append(self.line("warning", msg)):
            _stderr(f"cocin-oci: warning: {msg}")

    def debug(self, msg: str) -> None:
        if self.debug_on and not self._append(self.line("debug", msg)):
            _stderr(self.line("debug", msg))


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except OSError:
        pass


# --- entry point ----------------------------------------------------------------------


USAGE = """usage: cocin-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] VERB [FLAGS] ID

cocin's container core behind runc's command line (an OCI runtime).

verbs:
""" + "".join(f"  {v[3]}\n" for v in VERBS.values())


def version_text() -> str:
    py = ".".join(str(n) for n in sys.version_info[:3])
    return f"cocin-oci version {VERSION}\nspec: {SPEC_VERSION}\npython: {py}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = Log()
    try:
        g, rest = parse_flags(argv, GLOBAL, GLOBAL_ALIASES, anywhere=False)
        log = Log(g.get("log"), g.get("log-format", "text"), g.get("debug", False))
        if log.fmt not in ("text", "json"):
            bad, log.fmt = log.fmt, "text"
            raise OCIError(f"invalid log-format: {bad}")
        if g.get("version"):
            sys.stdout.write(version_text())
            return 0
        if g.get("help") or not rest:
            sys.stdout.write(USAGE)
            return 0 if g.get("help") else 1
        verb, args = rest[0], rest[1:]
        if verb not in VERBS:
            raise OCIError(f"No help topic for '{verb}'")
        flags, aliases, anywhere, usage = VERBS[verb]
        if "-h" in args[:1] or "--help" in args[:1]:
            sys.stdout.write(f"usage: cocin-oci {usage}\n")
            return 0
        opts, args = parse_flags(args, flags, aliases, anywhere)
        log.debug(f"cocin-oci {verb} {' '.join(argv)}")
        ctx = Context(g, log)
        return VERB_FUNCS[verb](ctx, opts, args) or 0
    except OCIError as e:
        log.error(str(e))
        return e.code
    except OSError as e:  # a file we had to write or read: one line, as Go's *PathError prints
        what = (e.strerror or str(e)).lower()
        log.error(f"{e.filename}: {what}" if e.filename else what)
        return 1
    except KeyboardInterrupt:
        return 130


class Context:
    def __init__(self, g: dict, log: Log) -> None:
        self.g = g
        self.log = log
        self.store = Store(g.get("root") or DEFAULT_ROOT)

    def refuse_cgroup_managers(self) -> None:
        """Flags asking for a cgroup manager we do not have: say so before making anything."""
        if self.g.get("systemd-cgroup"):
            raise OCIError(
                "--systemd-cgroup: cocin-oci manages cgroups through cgroupfs only (no systemd here); "
                'drop the flag (podman: cgroup_manager = "cgroupfs"; containerd: SystemdCgroup = false)'
            )
        if self.g.get("rootless", "auto") not in ("false", "auto"):
            raise OCIError("--rootless: rootless containers are not supported by cocin-oci yet")
