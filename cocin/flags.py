"""The flags of ``cocin run``, ``create`` and ``exec``, parsed the way Docker does.

Why not argparse? ``cocin run`` and ``exec`` should start fast, and argparse alone costs about
8 ms of imports (it pulls in ``re``, ``enum`` and ``gettext``). The rules are
small enough to write out, so this module imports nothing at all.

The rules (those of Docker's parser, spf13/pflag, with "interspersed" arguments off):

* Flags come first. The first argument that is not a flag is the IMAGE (for
  ``exec``: the CONTAINER), and everything after it is the COMMAND, left
  untouched: in ``cocin run busybox ls -l -d`` the ``-d`` belongs to ``ls``.
* ``--`` ends the flags: the next argument is the image, even if it starts with ``-``.
* A lone ``-`` is not a flag (it is an ordinary argument).
* Long flags: ``--name web`` or ``--name=web``. A yes/no flag (a "bool") takes
  no value, ``--rm``, but may be given one after ``=``: ``--rm=true``, ``--rm=false``.
* Short flags: ``-e FOO=1`` or ``-eFOO=1`` or ``-e=FOO=1``. Bools can be grouped,
  ``-it`` is ``-i -t``; in a group, a flag that takes a value takes the rest of
  the group (``-ieFOO=1``) or, at the end of the group, the next argument
  (``-ie FOO=1``).
* A flag that takes a value takes the next argument whatever it looks like:
  ``--name --rm`` names the container "--rm".
* Flags of the "list" kind (``-e``, ``-v``, ``-p``, ...) may be repeated; their
  values are kept in order. Any other flag given twice keeps its last value.
* ``-h`` is ``--hostname``, as in ``docker run``; help is ``--help`` only.
* Values stay strings: checking them ("is 512m a size?") happens elsewhere.

Every flag is described once, in the table ``FLAGS``; both the parser and the
help text read it. Mistakes raise ``FlagError`` with Docker's wording, e.g.
``unknown flag: --bogus``; ``--help`` raises ``HelpRequested``.
"""

# No imports at all, not even "from __future__ import annotations": the type hints below
# (list[str], tuple[str, ...]) work as they are on Python 3.9.

# The kinds of flag: what a flag takes, and what it stores.
BOOL = "bool"  # no value (or =true / =false): stores True or False
VALUE = "value"  # one value: stores the string (given twice: the last one wins)
LIST = "list"  # one value, repeatable: appends the string to a list
HELP = "help"  # --help: stops parsing and asks for the help text

OPTIONS = "Options"
LIMITS = "Resource limits (cgroups)"
SECURITY = "Security (capabilities, seccomp, user, devices)"

USAGES = {
    "run": "Usage:  cocin run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "create": "Usage:  cocin create [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "exec": "Usage:  cocin exec [OPTIONS] CONTAINER COMMAND [ARG...]",
}
DESCRIPTIONS = {
    "run": "Run a command in a new container",
    "create": "Create a new container",
    "exec": "Run a command in a running container.\n\nIt joins the container's namespaces through the "
    "static stub cocin/nsenter_stub when it is\nbuilt (scripts/build_stub.sh), else through "
    "Python's ctypes setns; -t always uses Python.\nCOCIN_DEBUG=1 says which path ran.",
}
# How many arguments must follow the flags: IMAGE; CONTAINER and COMMAND.
POSITIONAL = {"run": 1, "create": 1, "exec": 2}
ALL = ("run", "create", "exec")

# The spellings Go's strconv.ParseBool accepts, which is what Docker uses for --rm=...
TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


class FlagError(Exception):
    """A mistake on the command line; the message is one line, in Docker's words."""


class HelpRequested(Exception):
    """Raised by ``parse`` on ``--help``: the caller prints ``help_text(verb)``."""


class _KindDefault:
    """The default of ``Flag(default=...)``: "the usual default for this kind"."""


KIND_DEFAULTS = {BOOL: False, VALUE: None, LIST: (), HELP: None}  # a LIST starts as a new, empty list


class Flag:
    """One flag: its names, kind, help, and where its value goes.

    ``names`` is written as the help shows it: ``"-e, --env"`` or ``"--network, --net"``.
    The value is stored in the attribute ``dest``, the first long name with
    ``-`` made ``_`` (``--env-file`` -> ``env_file``), as argparse does.
    """

    def __init__(
        self,
        names: str,
        kind: str,
        help: str,
        metavar: str = "",
        default: object = _KindDefault,
        section: str = OPTIONS,
        verbs: tuple[str, ...] = ("run", "create"),
    ) -> None:
        self.names = names.split(", ")
        self.short = next((n for n in self.names if not n.startswith("--")), "")
        self.longs = [n for n in self.names if n.startswith("--")]
        self.kind = kind
        self.help = help
        self.metavar = metavar or ("list" if kind == LIST else "string")  # Docker's type names
        self.default = KIND_DEFAULTS[kind] if default is _KindDefault else default
        self.section = section
        self.verbs = verbs
        self.dest = self.longs[0][2:].replace("-", "_")

    def takes_value(self) -> bool:
        return self.kind in (VALUE, LIST)

    def label(self) -> str:
        """How Docker names the flag in an error: ``-e, --env`` or ``--rm``."""
        return f"{self.short}, {self.longs[0]}" if self.short else self.longs[0]


FLAGS = (
    Flag("-d, --detach", BOOL, "Run in the background", verbs=("run", "exec")),
    Flag("-i, --interactive", BOOL, "Keep STDIN open", verbs=ALL),
    Flag("-t, --tty", BOOL, "Allocate a pseudo-TTY", verbs=ALL),
    Flag("--name", VALUE, "Assign a name to the container"),
    Flag("--rm", BOOL, "Remove the container when it exits", default=None),
    Flag(
        "-e, --env",
        LIST,
        "Set an environment variable (KEY alone: from this environment)",
        metavar="KEY[=VALUE]",
        verbs=ALL,
    ),
    Flag("--env-file", LIST, "Read variables from a file", verbs=ALL),
    Flag("-w, --workdir", VALUE, "Working directory inside the container", verbs=ALL),
    Flag("--entrypoint", VALUE, 'Overwrite the default ENTRYPOINT of the image ("": none)'),
    Flag("--pull", VALUE, "Pull image before running (always, missing, never)", default="missing"),
    Flag("-v, --volume", LIST, "Bind mount a host directory", metavar="HOST:CONTAINER[:ro]"),
    Flag("-h, --hostname", VALUE, "Container host name"),
    Flag("--network, --net", VALUE, "A network's name, bridge (the default network), none or host", default="bridge"),
    Flag("-p, --publish", LIST, "Publish a container port on the host", metavar="[HOSTIP:]HOSTPORT:PORT[/udp]"),
    Flag("--ip", VALUE, "A fixed IPv4 address on the network"),
    Flag("--dns", LIST, "A DNS server for /etc/resolv.conf"),
    Flag("--restart", VALUE, "Restart policy: no, always, unless-stopped, on-failure[:max-retries]", default="no"),
    Flag("--init", BOOL, "Run a tiny init as PID 1 that reaps zombies and forwards signals"),
    Flag("--help", HELP, "Show this help", verbs=ALL),
    Flag("-m, --memory", VALUE, "Memory limit (b, k, m, g suffixes)", section=LIMITS),
    Flag("--memory-swap", VALUE, "Memory plus swap limit; -1 unlimited swap", section=LIMITS),
    Flag("--cpus", VALUE, "Number of CPUs (CFS quota), e.g. 0.5", section=LIMITS),
    Flag("-c, --cpu-shares", VALUE, "Relative CPU weight (default 1024)", section=LIMITS),
    Flag("--cpuset-cpus", VALUE, "CPUs allowed, e.g. 0-1,3", section=LIMITS),
    Flag("--cpuset-mems", VALUE, "Memory nodes allowed, e.g. 0", section=LIMITS),
    Flag("--pids-limit", VALUE, "Maximum number of processes (-1 unlimited)", section=LIMITS),
    Flag("--ulimit", LIST, "Ulimit options, e.g. nofile=1024:2048", metavar="ulimit", section=LIMITS),
    Flag("-u, --user", VALUE, "Username or UID (format: <name|uid>[:<group|gid>])", verbs=ALL, section=SECURITY),
    Flag("--group-add", LIST, "Add additional groups to join", section=SECURITY),
    Flag(
        "--privileged",
        BOOL,
        "Give extended privileges to this container (exec: to the command)",
        verbs=ALL,
        section=SECURITY,
    ),
    Flag("--cap-add", LIST, "Add Linux capabilities", section=SECURITY),
    Flag("--cap-drop", LIST, "Drop Linux capabilities", section=SECURITY),
    Flag(
        "--security-opt",
        LIST,
        "Security Options: no-new-privileges, seccomp=unconfined|PROFILE.json, systempaths=unconfined",
        section=SECURITY,
    ),
    Flag("--read-only", BOOL, "Mount the container's root filesystem as read only", section=SECURITY),
    Flag("--tmpfs", LIST, "Mount a tmpfs directory", metavar="PATH[:OPTIONS]", section=SECURITY),
    Flag("--device", LIST, "Add a host device to the container", metavar="HOST[:CONTAINER[:rwm]]", section=SECURITY),
    Flag("--sysctl", LIST, "Sysctl options (namespaced keys only)", metavar="KEY=VALUE", section=SECURITY),
)


class Args:
    """The parsed command line: one attribute per flag (its ``dest``), plus ``image``
    (for ``exec``: ``container``) and ``command``. Every flag starts at its default,
    whatever the verb: ``create`` has no ``-d``, but its ``Args`` still has
    ``detach = False``."""

    def __init__(self) -> None:
        for flag in FLAGS:
            if flag.kind != HELP:
                setattr(self, flag.dest, list(flag.default) if flag.kind == LIST else flag.default)
        self.image = ""
        self.container = ""
        self.command: list[str] = []

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"Args({fields})"


# --- parsing ------------------------------------------------------------------------


def flags_of(verb: str) -> list[Flag]:
    """The flags ``verb`` ("run", "create" or "exec") accepts, in table order."""
    if verb not in DESCRIPTIONS:
        raise ValueError(f"no container flags for {verb!r}")
    return [flag for flag in FLAGS if verb in flag.verbs]


def parse(verb: str, argv: list[str]) -> Args:
    """Parse what follows ``cocin run`` (``create``, ``exec``) on the command line."""
    by_name = {name: flag for flag in flags_of(verb) for name in flag.names}
    args = Args()
    todo = list(argv)  # the arguments not yet read; helpers pop values off its front
    while todo and _is_flag(todo[0]):
        arg = todo.pop(0)
        if arg == "--":
            break
        if arg.startswith("--"):
            _long_flag(arg, todo, by_name, args)
        else:
            _short_flags(arg, todo, by_name, args)
    need = POSITIONAL[verb]
    if len(todo) < need:
        raise FlagError(f'"cocin {verb}" requires at least {need} argument{"s" if need > 1 else ""}')
    if verb == "exec":
        args.container = todo[0]
    else:
        args.image = todo[0]
    args.command = todo[1:]
    return args


def _is_flag(arg: str) -> bool:
    """``-x``, ``--xyz`` and ``--`` are flags; ``-``, ``""`` and ``busybox`` are not."""
    return arg.startswith("-") and arg != "-"


def _long_flag(arg: str, todo: list[str], by_name: dict[str, Flag], args: Args) -> None:
    """``--name web``, ``--name=web``, ``--rm`` or ``--rm=false``."""
    name, has_value, value = arg.partition("=")
    if name == "--" or name[2] == "-":  # "--=x", "---x"
        raise FlagError(f"bad flag syntax: {arg}")
    flag = by_name.get(name)
    if flag is None:
        raise FlagError(f"unknown flag: {name}")
    if not has_value:
        if not flag.takes_value():
            value = "true"
        elif todo:
            value = todo.pop(0)
        else:
            raise FlagError(f"flag needs an argument: {name}")
    _store(flag, value, args)


def _short_flags(arg: str, todo: list[str], by_name: dict[str, Flag], args: Args) -> None:
    """A group of one-letter flags: ``-i``, ``-it``, ``-eFOO=1``, ``-e=FOO=1``, ``-ie FOO=1``."""
    letters = arg[1:]
    while letters:
        letter, rest = letters[0], letters[1:]
        flag = by_name.get("-" + letter)
        if flag is None:
            raise FlagError(f"unknown shorthand flag: '{letter}' in -{letters}")
        if rest.startswith("="):  # -e=FOO=1, -i=false: the rest is the value
            value, rest = rest[1:], ""
        elif not flag.takes_value():  # -i, and go on with the next letter
            value = "true"
        elif rest:  # -eFOO=1: the rest is the value
            value, rest = rest, ""
        elif todo:  # -e FOO=1: the next argument is the value
            value = todo.pop(0)
        else:
            raise FlagError(f"flag needs an argument: '{letter}' in -{letters}")
        _store(flag, value, args)
        letters = rest


def _store(flag: Flag, value: str, args: Args) -> None:
    """Put one flag's value into ``args``, as its kind says."""
    if flag.kind == HELP:
        raise HelpRequested()
    if flag.kind == BOOL:
        setattr(args, flag.dest, _bool(flag, value))
    elif flag.kind == LIST:
        getattr(args, flag.dest).append(value)
    else:
        setattr(args, flag.dest, value)


def _bool(flag: Flag, value: str) -> bool:
    """``true`` -> True, ``false`` -> False (and Go's other spellings: 1, t, 0, f, ...)."""
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise FlagError(f'invalid argument "{value}" for "{flag.label()}" flag')


# --- help ---------------------------------------------------------------------------


def help_text(verb: str) -> str:
    """The ``--help`` text of ``verb``, laid out like Docker's (no trailing newline)."""
    flags = flags_of(verb)
    width = max(len(_left_column(flag)) for flag in flags) + 3
    lines = [USAGES[verb], "", DESCRIPTIONS[verb]]
    for section in (OPTIONS, LIMITS, SECURITY):
        rows = [f"  {_left_column(flag):<{width}}{flag.help}" for flag in flags if flag.section == section]
        if rows:
            lines += ["", section + ":", *rows]
    return "\n".join(line.rstrip() for line in lines)


def _left_column(flag: Flag) -> str:
    """``-e, --env KEY[=VALUE]``, or ``    --rm`` (long-only flags are indented past ``-x, ``)."""
    short = f"{flag.short}, " if flag.short else "    "
    value = f" {flag.metavar}" if flag.takes_value() else ""
    return short + ", ".join(flag.longs) + value
