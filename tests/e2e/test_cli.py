"""End-to-end: the everyday Docker CLI of issue 17 (top, --format templates, ps,
--network host's name, the --init command line, a failed start, verbs with many
arguments, prune's prompt, commit -m/-a, help pages)."""

from __future__ import annotations

import json
import random

import pytest


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    assert lines[0].startswith("cocin: error: "), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def container_pids(cocin, name: str) -> set[str]:
    """Host PIDs of a container's processes: the descendants of its PID 1, read on the host."""
    pid = str(cocin.record(name)["pid"])
    out = cocin.sh("ps -e -o pid=,ppid=").stdout.split()
    children: dict[str, list[str]] = {}
    for p, pp in zip(out[::2], out[1::2]):
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


@pytest.mark.parametrize("ps_args", [[], ["aux"], ["-ef"], ["-e"], ["-o", "pid,args"]])
def test_top_lists_only_the_containers_processes(cocin, wait_for, ps_args):
    cocin.ok("run", "-d", "--name", "topbox", "busybox", "sh", "-c", "sleep 301 & sleep 302; exit")
    wait_for(lambda: len(container_pids(cocin, "topbox")) >= 3, 10, 0.1)
    mine = container_pids(cocin, "topbox")
    r = cocin.ok("top", "topbox", *ps_args)
    lines = r.stdout.splitlines()
    titles = lines[0].split()
    assert "PID" in titles, r.stdout
    pids = {ln.split()[titles.index("PID")] for ln in lines[1:]}
    # aux and -e select every process of the host: only the container's three are shown
    assert pids == mine and len(pids) == 3, r.stdout


def test_top_errors_and_help(cocin):
    cocin.ok("run", "-d", "--name", "toperr", "busybox", "sleep", "300")
    r = cocin("top", "toperr", "-o", "nope")
    assert r.rc == 125 and one_error_line(r).startswith("cocin: error: ps: "), r.stderr
    assert r.stdout == ""
    r = cocin("top", "toperr", "--help")
    assert r.rc == 0 and r.stdout.startswith("Usage:  cocin top CONTAINER [ps OPTIONS]\n"), r.stdout
    r = cocin("top")
    assert r.rc == 125
    assert one_error_line(r) == ("cocin: error: \"cocin top\" requires at least 1 argument (see 'cocin top --help')")


def test_inspect_go_templates(cocin):
    cocin.ok("run", "-d", "--name", "tpl", "-e", "A=<b&c>", "busybox", "sleep", "300")
    ip = json.loads(cocin.ok("inspect", "tpl").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert ip
    cases = {
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}": ip,
        "{{.Config.Cmd}}": "[sleep 300]",
        "{{json .Config.Cmd}}": '["sleep","300"]',
        "{{json .State.Running}} {{.State.Running}}": "true true",
        '{{if eq .State.Status "running"}}up{{else}}down{{end}}': "up",
        "{{index .Config.Cmd 1}}|{{len .Config.Cmd}}|{{lower .Name}}|{{upper .State.Status}}": "300|2|/tpl|RUNNING",
        '{{range $i, $e := .Config.Env}}{{if eq $e "A=<b&c>"}}{{json $e}}{{end}}{{end}}': '"A=<b&c>"',
        "{{with .State}}{{.Pid}}{{end}}": str(cocin.record("tpl")["pid"]),
        "{{println .Name}}": "/tpl\n",
    }
    for tmpl, want in cases.items():
        r = cocin.ok("inspect", "-f", tmpl, "tpl")
        assert r.stdout == want + "\n", (tmpl, r.stdout)
    compact = cocin.ok("inspect", "-f", "{{json .HostConfig.RestartPolicy}}", "tpl").stdout
    assert compact == '{"Name":"no","MaximumRetryCount":0}\n'


@pytest.mark.parametrize(
    "tmpl,error",
    [
        ("{{nope}}", 'template parsing error: template: :1: function "nope" not defined'),
        ("{{if .Name}}open", "template parsing error: template: :1: unexpected EOF"),
        (
            "{{.Nope}}",
            'template parsing error: template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope"',
        ),
    ],
)
def test_bad_template_is_an_error_never_echoed(cocin, tmpl, error):
    cocin.ok("run", "-d", "--name", "tplbad", "busybox", "sleep", "300")
    r = cocin("inspect", "-f", tmpl, "tplbad")
    assert r.rc == 125 and one_error_line(r) == "cocin: error: " + error
    assert r.stdout == ""


def test_ps_and_images_format(cocin):
    cid = cocin.ok("run", "-d", "--name", "fmtbox", "busybox", "sleep", "300").stdout.strip()
    r = cocin.ok("ps", "--format", r"table {{.ID}}\t{{.Names}}\t{{.Command}}")
    lines = r.stdout.splitlines()
    assert lines[0].split("   ") == ["CONTAINER ID", "NAMES", "COMMAND"] or lines[0].startswith(
        "CONTAINER ID   NAMES"
    ), r.stdout
    assert f"{cid[:12]}   fmtbox" in r.stdout and '"sleep 300"' in r.stdout
    r = cocin.ok("ps", "--format", "{{.Names}}:{{.State}}")
    assert "fmtbox:running" in r.stdout.splitlines()
    r = cocin.ok("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "busybox:latest" in r.stdout.splitlines()
    r = cocin("ps", "--format", "{{.Nope}}")
    assert r.rc == 125 and "map has no entry for key" in one_error_line(r)


def test_ps_shows_restarting_containers(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "crashy", "--restart", "always", "busybox", "sh", "-c", "exit 3")

    def ps_while_restarting() -> str | None:
        """``ps`` output taken while the record said "restarting" before and after."""
        before = cocin.record("crashy")
        out = cocin.ok("ps").stdout
        after = cocin.record("crashy")
        if before["state"] == after["state"] == "restarting" and before["restart_count"] == after["restart_count"]:
            return out
        return None

    # the back-off doubles: the container soon spends most of its time restarting
    out = wait_for(ps_while_restarting, 30, 0.2)
    assert out is not None, "crashy never seen restarting"
    line = [ln for ln in out.splitlines() if ln.endswith(" crashy")]
    assert line and "Restarting (3)" in line[0], out


def test_network_host_has_the_hosts_name(cocin):
    host_name = cocin.sh("cat /proc/sys/kernel/hostname").stdout.strip()
    r = cocin.ok("run", "--rm", "--network", "host", "busybox", "sh", "-c", "hostname; echo $HOSTNAME")
    assert r.stdout.splitlines() == [host_name, host_name]
    r = cocin.ok("run", "--rm", "--network", "host", "-h", "named", "busybox", "hostname")
    assert r.stdout == "named\n"


def test_init_shows_a_tidy_command_line(cocin):
    r = cocin.ok(
        "run", "--rm", "--init", "busybox", "sh", "-c", "tr '\\0' '|' < /proc/1/cmdline; echo; cat /proc/1/comm"
    )
    cmdline, comm = r.stdout.splitlines()
    assert cmdline.rstrip("|") == "cocin-init|--|sh|-c|tr '\\0' '|' < /proc/1/cmdline; echo; cat /proc/1/comm"
    assert comm == "cocin-init"
    assert "python" not in cmdline and "cocin.py" not in cmdline


def test_failed_port_bind_leaves_the_container_created(cocin):
    port = str(random.randint(20000, 40000))
    cocin.ok("run", "-d", "--name", "holder", "-p", f"{port}:80", "busybox", "sleep", "300")
    r = cocin("run", "-d", "--name", "loser", "-p", f"{port}:80", "busybox", "sleep", "300")
    assert r.rc == 125 and "already" in one_error_line(r)
    assert cocin.record("loser")["state"] == "created"
    line = [ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if ln.endswith(" loser")]
    assert line and "Created" in line[0] and "Exited" not in line[0]


def test_many_arguments_every_one_tried(cocin):
    cocin.ok("run", "--name", "src", "busybox", "true")
    cocin.ok("commit", "src", "myweb17")
    r = cocin("rmi", "nosuch17", "myweb17")
    assert r.rc == 125 and "nosuch17" in one_error_line(r)
    assert r.stdout.splitlines()[0] == "Untagged: myweb17:latest" and "\nDeleted: sha256:" in r.stdout
    assert "myweb17" not in cocin.ok("images").stdout
    cocin.ok("create", "--name", "later", "busybox", "sleep", "300")
    r = cocin("start", "nosuch17", "later")
    assert r.rc != 0 and "nosuch17" in one_error_line(r)
    assert r.stdout == "later\n" and cocin.record("later")["state"] == "running"


def test_container_prune_asks_first(cocin):
    cocin.ok("run", "--name", "stopped17", "busybox", "true")
    r = cocin.ok("container", "prune", stdin="n\n")
    assert r.stdout.startswith(
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
    ), r.stdout
    assert cocin.record("stopped17")["state"] == "exited"
    r = cocin.ok("container", "prune", "--force")
    assert "WARNING" not in r.stdout and "Deleted Containers:" in r.stdout
    assert "stopped17" not in cocin.ok("ps", "-a").stdout


def test_commit_message_and_author(cocin):
    cocin.ok("run", "--name", "tocommit", "busybox", "true")
    try:
        cocin.ok("commit", "-m", "a message", "-a", "Ann <ann@example.org>", "tocommit", "x2img")
        r = cocin.ok("inspect", "-f", "{{.Comment}}|{{.Author}}", "x2img")
        assert r.stdout == "a message|Ann <ann@example.org>\n"
    finally:
        cocin("rmi", "x2img")


@pytest.mark.parametrize(
    "verb,usage,desc",
    [
        ("stop", "cocin stop [OPTIONS] CONTAINER [CONTAINER...]", "Stop running containers"),
        ("commit", "cocin commit [OPTIONS] CONTAINER IMAGE", "Create a new image from a container's changes"),
    ],
)
def test_verbs_have_docker_style_help(cocin, verb, usage, desc):
    r = cocin.ok(verb, "--help")
    lines = r.stdout.splitlines()
    assert lines[:3] == [f"Usage:  {usage}", "", desc], r.stdout
    assert "Options:" in lines
    r = cocin(verb)
    assert r.rc == 125 and one_error_line(r).endswith(f"(see 'cocin {verb} --help')")
    r = cocin(verb, "--no-such-flag", "x", "y")
    assert r.rc == 125 and one_error_line(r).endswith(f"(see 'cocin {verb} --help')")


def test_network_create_picks_a_free_subnet_and_is_docker_shaped(cocin):
    import ipaddress

    pool = [ipaddress.IPv4Network(f"172.{i}.0.0/16") for i in range(17, 32)]
    pool += list(ipaddress.IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    made = []
    try:
        for name in ("auto17a", "auto17b"):
            cocin.ok("network", "create", name)
            made.append(name)
        nets = json.loads(cocin.ok("network", "inspect", "auto17a", "auto17b").stdout)
        subnets = [ipaddress.IPv4Network(n["IPAM"]["Config"][0]["Subnet"]) for n in nets]
        assert all(s in pool for s in subnets) and not subnets[0].overlaps(subnets[1]), subnets
        cid = cocin.ok(
            "run", "-d", "--name", "onauto", "--network", "auto17a", "busybox", "sleep", "300"
        ).stdout.strip()
        (net,) = json.loads(cocin.ok("network", "inspect", "auto17a").stdout)
        assert (net["Name"], net["Driver"], net["Scope"]) == ("auto17a", "bridge", "local")
        assert len(net["Id"]) == 64 and net["Created"]
        assert net["IPAM"]["Config"][0]["Gateway"] == str(next(subnets[0].hosts()))
        ep = net["Containers"][cid]
        assert ep["Name"] == "onauto" and ep["MacAddress"]
        assert ipaddress.IPv4Interface(ep["IPv4Address"]).network == subnets[0]
        assert (
            cocin.ok("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "auto17a").stdout
            == f"{subnets[0]}\n"
        )
        lines = cocin.ok("network", "ls").stdout.splitlines()
        assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        row = [ln.split() for ln in lines if " auto17a " in ln + " "][0]
        assert row == [net["Id"][:12], "auto17a", "bridge", "local"]
    finally:
        cocin("rm", "-f", "onauto")
        for name in made:
            cocin("network", "rm", name)
