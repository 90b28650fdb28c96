"""Unit tests of cocin.flags, the Docker-style parser of the flags of
``cocin run``, ``create`` and ``exec``. Pure logic: no root, no containers."""

from __future__ import annotations

import os
import subprocess

import pytest

from cocin import flags
from cocin.flags import FlagError, HelpRequested, flags_of, help_text, parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULTS = {
    "detach": False,
    "interactive": False,
    "tty": False,
    "name": None,
    "rm": None,
    "env": [],
    "env_file": [],
    "workdir": None,
    "entrypoint": None,
    "pull": "missing",
    "volume": [],
    "hostname": None,
    "network": "bridge",
    "publish": [],
    "ip": None,
    "dns": [],
    "restart": "no",
    "init": False,
    "memory": None,
    "memory_swap": None,
    "cpus": None,
    "cpu_shares": None,
    "cpuset_cpus": None,
    "cpuset_mems": None,
    "pids_limit": None,
    "ulimit": [],
    "user": None,
    "group_add": [],
    "privileged": False,
    "cap_add": [],
    "cap_drop": [],
    "security_opt": [],
    "read_only": False,
    "tmpfs": [],
    "device": [],
    "sysctl": [],
    "image": "busybox",
    "container": "",
    "command": [],
}


def changed(args) -> dict:
    """The attributes of ``args`` that differ from the defaults (image and command apart)."""
    return {k: v for k, v in vars(args).items() if k not in ("image", "container", "command") and v != DEFAULTS[k]}


def error_of(verb: str, argv: list[str]) -> str:
    with pytest.raises(FlagError) as e:
        parse(verb, argv)
    return str(e.value)


# --- defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["run", "create"])
def test_defaults(verb):
    assert vars(parse(verb, ["busybox"])) == DEFAULTS


def test_lists_are_not_shared_between_results():
    parse("run", ["-e", "A", "busybox"])
    assert parse("run", ["busybox"]).env == []


# --- each kind of flag ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-d"], {"detach": True}),
        (["--detach"], {"detach": True}),
        (["-i", "-t"], {"interactive": True, "tty": True}),
        (["--rm"], {"rm": True}),
        (["--rm=true"], {"rm": True}),
        (["--rm=false"], {"rm": False}),
        (["--rm=0"], {"rm": False}),
        (["--init"], {"init": True}),
        (["-i=false"], {}),
        (["--name", "web"], {"name": "web"}),
        (["--name=web"], {"name": "web"}),
        (["--name="], {"name": ""}),
        (["--name=a=b"], {"name": "a=b"}),
        (["--name", "--rm"], {"name": "--rm"}),  # a value flag takes the next argument, whatever it is
        (["-h", "box"], {"hostname": "box"}),
        (["-w/srv"], {"workdir": "/srv"}),
        (["--network", "host"], {"network": "host"}),
        (["--net=none"], {"network": "none"}),
        (["--ip", "10.0.0.9", "--restart", "always"], {"ip": "10.0.0.9", "restart": "always"}),
        (["-e", "A=1"], {"env": ["A=1"]}),
        (["--env=A=1"], {"env": ["A=1"]}),
        (["--env-file", "f"], {"env_file": ["f"]}),
        (["-v", "/a:/b:ro"], {"volume": ["/a:/b:ro"]}),
        (["-p", "8080:80"], {"publish": ["8080:80"]}),
        (["--dns", "1.1.1.1"], {"dns": ["1.1.1.1"]}),
        (["--name", "a", "--name", "b"], {"name": "b"}),  # not a list: the last one wins
        (["--privileged"], {"privileged": True}),
        (["--cap-add", "NET_ADMIN", "--cap-add=sys_time"], {"cap_add": ["NET_ADMIN", "sys_time"]}),
        (["--cap-drop", "ALL"], {"cap_drop": ["ALL"]}),
        (
            ["--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined"],
            {"security_opt": ["no-new-privileges", "seccomp=unconfined"]},
        ),
        (["--read-only"], {"read_only": True}),
        (["--tmpfs", "/run:size=1m"], {"tmpfs": ["/run:size=1m"]}),
        (["-u", "1000:1000"], {"user": "1000:1000"}),
        (["-unobody"], {"user": "nobody"}),
        (["--user=nobody", "--group-add", "10"], {"user": "nobody", "group_add": ["10"]}),
        (["--device", "/dev/fuse"], {"device": ["/dev/fuse"]}),
        (["--ulimit", "nofile=1024:2048"], {"ulimit": ["nofile=1024:2048"]}),
        (["--sysctl", "net.ipv4.ip_forward=1"], {"sysctl": ["net.ipv4.ip_forward=1"]}),
    ],
)
def test_flag(argv, expected):
    args = parse("run", [*argv, "busybox"])
    assert changed(args) == expected
    assert (args.image, args.command) == ("busybox", [])


def test_resource_limits():
    args = parse(
        "run",
        [
            "-m",
            "512m",
            "--memory-swap",
            "1g",
            "--cpus=0.5",
            "-c",
            "512",
            "--cpuset-cpus",
            "0-1",
            "--cpuset-mems=0",
            "--pids-limit",
            "-1",
            "busybox",
        ],
    )
    assert changed(args) == {
        "memory": "512m",
        "memory_swap": "1g",
        "cpus": "0.5",
        "cpu_shares": "512",
        "cpuset_cpus": "0-1",
        "cpuset_mems": "0",
        "pids_limit": "-1",
    }


def test_repeated_list_flags_keep_their_order():
    args = parse("run", ["-e", "A=1", "--env", "B=2", "-eC=3", "--env=D", "-p", "1:1", "-p2:2", "busybox"])
    assert args.env == ["A=1", "B=2", "C=3", "D"]
    assert args.publish == ["1:1", "2:2"]


# --- short flags --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-it"], {"interactive": True, "tty": True}),
        (["-dit"], {"detach": True, "interactive": True, "tty": True}),
        (["-eFOO=1"], {"env": ["FOO=1"]}),
        (["-e=FOO=1"], {"env": ["FOO=1"]}),
        (["-ie", "FOO=1"], {"interactive": True, "env": ["FOO=1"]}),  # the value flag ends the group: next arg
        (["-ieFOO=1"], {"interactive": True, "env": ["FOO=1"]}),  # ... or the rest of the group
        (["-eit"], {"env": ["it"]}),  # e takes "it", which are no flags then
        (["-itp", "80:80"], {"interactive": True, "tty": True, "publish": ["80:80"]}),
    ],
)
def test_short_flags(argv, expected):
    assert changed(parse("run", [*argv, "busybox"])) == expected


# --- image and command ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, image, command",
    [
        (["busybox"], "busybox", []),
        (["busybox", "ls", "-l", "--foo"], "busybox", ["ls", "-l", "--foo"]),
        (["busybox", "sh", "-c", "echo hi"], "busybox", ["sh", "-c", "echo hi"]),
        (["--", "busybox", "ls"], "busybox", ["ls"]),
        (["--", "-weird", "--rm"], "-weird", ["--rm"]),  # after --, even a dash is the image
        (["busybox", "--", "x"], "busybox", ["--", "x"]),
        (["-", "x"], "-", ["x"]),  # a lone - is not a flag
    ],
)
def test_image_and_command(argv, image, command):
    args = parse("run", argv)
    assert (args.image, args.command) == (image, command)


def test_flags_after_the_image_belong_to_the_command():
    args = parse("run", ["busybox", "-d", "--rm", "-e", "X=1", "--help"])
    assert args.command == ["-d", "--rm", "-e", "X=1", "--help"]
    assert changed(args) == {}


def test_argv_is_not_modified():
    argv = ["-it", "-e", "A", "busybox", "sh"]
    parse("run", argv)
    assert argv == ["-it", "-e", "A", "busybox", "sh"]


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus-flag", "busybox"], "unknown flag: --bogus-flag"),
        (["--bogus=1", "busybox"], "unknown flag: --bogus"),
        (["-x", "busybox"], "unknown shorthand flag: 'x' in -x"),
        (["-itx", "busybox"], "unknown shorthand flag: 'x' in -x"),
        (["-ixt", "busybox"], "unknown shorthand flag: 'x' in -xt"),
        (["busybox", "--name"], None),  # not an error: --name is part of the command
        (["--name"], "flag needs an argument: --name"),
        (["--net"], "flag needs an argument: --net"),
        (["-e"], "flag needs an argument: 'e' in -e"),
        (["-ie"], "flag needs an argument: 'e' in -e"),
        (["--rm=maybe", "busybox"], 'invalid argument "maybe" for "--rm" flag'),
        (["--rm=", "busybox"], 'invalid argument "" for "--rm" flag'),
        (["-t=yes", "busybox"], 'invalid argument "yes" for "-t, --tty" flag'),
        (["---x", "busybox"], "bad flag syntax: ---x"),
        (["--=x", "busybox"], "bad flag syntax: --=x"),
        ([], '"cocin run" requires at least 1 argument'),
        (["-it", "--rm"], '"cocin run" requires at least 1 argument'),
        (["--"], '"cocin run" requires at least 1 argument'),
    ],
)
def test_errors(argv, message):
    if message is None:
        parse("run", argv)
    else:
        assert error_of("run", argv) == message


def test_create_has_no_detach():
    assert error_of("create", ["-d", "busybox"]) == "unknown shorthand flag: 'd' in -d"
    assert error_of("create", ["-itd", "busybox"]) == "unknown shorthand flag: 'd' in -d"
    assert error_of("create", ["--detach", "busybox"]) == "unknown flag: --detach"
    assert error_of("create", []) == '"cocin create" requires at least 1 argument'


def test_exec_takes_a_container_and_a_command():
    args = parse("exec", ["-it", "-e", "A=1", "-w", "/tmp", "web", "sh", "-c", "echo -d"])
    assert (args.container, args.command, args.image) == ("web", ["sh", "-c", "echo -d"], "")
    assert changed(args) == {"interactive": True, "tty": True, "env": ["A=1"], "workdir": "/tmp"}
    assert parse("exec", ["-d", "web", "true"]).detach is True
    assert error_of("exec", ["web"]) == '"cocin exec" requires at least 2 arguments'
    assert error_of("exec", ["--rm", "web", "true"]) == "unknown flag: --rm"
    assert error_of("exec", ["-m", "1m", "web", "true"]) == "unknown shorthand flag: 'm' in -m"


def test_help_text_of_exec():
    text = help_text("exec")
    assert text.startswith("Usage:  cocin exec [OPTIONS] CONTAINER COMMAND [ARG...]\n\nRun a command in a running")
    assert "nsenter_stub" in text and "--workdir" in text
    assert "--name" not in text and "Resource limits" not in text


def test_unknown_verb():
    with pytest.raises(ValueError):
        parse("start", ["busybox"])


# --- help -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["-it", "--help"], ["--help", "busybox"], ["--name", "x", "--help"]])
def test_help_is_requested(argv):
    with pytest.raises(HelpRequested):
        parse("run", argv)


def test_help_after_an_error_is_the_error():
    assert error_of("run", ["--bogus", "--help"]) == "unknown flag: --bogus"


def test_h_is_hostname_not_help():
    assert parse("run", ["-h", "box", "busybox"]).hostname == "box"


def test_help_text_of_run():
    text = help_text("run")
    lines = text.splitlines()
    assert lines[:3] == ["Usage:  cocin run [OPTIONS] IMAGE [COMMAND] [ARG...]", "", "Run a command in a new container"]
    assert lines[4] == "Options:"
    assert lines.index("Resource limits (cgroups):") > lines.index("Options:")
    assert any(line.startswith("  -d, --detach ") and line.endswith("Run in the background") for line in lines)
    assert any(line.startswith("  -e, --env KEY[=VALUE] ") for line in lines)
    assert any(line.startswith("      --rm ") for line in lines)
    assert any(line.startswith("      --network, --net string ") for line in lines)
    assert not text.endswith("\n")


def test_help_text_is_aligned_and_sectioned():
    lines = help_text("run").splitlines()
    columns = {line.index(flag.help) for flag in flags_of("run") for line in lines if line.endswith(flag.help)}
    assert len(columns) == 1, "every help string starts in the same column"
    start, end = lines.index("Resource limits (cgroups):"), lines.index(flags.SECURITY + ":")
    limits = lines[start + 1 : end - 1]
    assert [line.split()[0] for line in limits] == [
        "-m,",
        "--memory-swap",
        "--cpus",
        "-c,",
        "--cpuset-cpus",
        "--cpuset-mems",
        "--pids-limit",
        "--ulimit",
    ]
    security = [line.split()[0] for line in lines[end + 1 :]]
    assert security == [
        "-u,",
        "--group-add",
        "--privileged",
        "--cap-add",
        "--cap-drop",
        "--security-opt",
        "--read-only",
        "--tmpfs",
        "--device",
        "--sysctl",
    ]


def test_exec_takes_user_and_privileged_but_not_the_container_flags():
    args = parse("exec", ["-u", "1000", "--privileged", "web", "id"])
    assert (args.user, args.privileged) == ("1000", True)
    for flag in ("--cap-add", "--security-opt", "--read-only", "--device", "--ulimit"):
        assert error_of("exec", [flag, "x", "web", "id"]) == f"unknown flag: {flag}"


def test_help_text_of_create():
    text = help_text("create")
    assert text.startswith("Usage:  cocin create [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nCreate a new container\n")
    assert "--detach" not in text
    assert "--interactive" in text


# --- import cost ---------------------------------------------------------------------


def test_imports_nothing_heavy():
    """``cocin run`` starts fast only if the flag parser does not pull in re, enum, argparse, typing."""
    out = subprocess.run(
        ["/usr/bin/python3", "-X", "importtime", "-c", "import cocin.flags"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    imported = {line.split("|")[-1].strip() for line in out.splitlines() if line.startswith("import time:")}
    assert "cocin.flags" in imported
    heavy = {"re", "enum", "argparse", "typing", "gettext", "dataclasses"}
    assert not imported & heavy
