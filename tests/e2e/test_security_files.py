"""End-to-end: host-side file handling that no container or image can redirect.

Issue 13's findings 1-5, each tried for real against files the test itself
made in its own temporary directory (never a real host file):

1. a running container swaps a directory and a symlink to a host directory
   while ``export``/``commit`` copy its files;
2. a tarball hard-links (through a symlink) a root-owned 0600 file, to chown
   and chmod it;
3. a tarball sets a directory member's mode through a symlink;
4. a set-user-ID file committed by a container, reachable by other users;
5. a symlink planted at the name ``save -o``/``export -o`` used to write to.

Every test here fails on the code before the fix.
"""

from __future__ import annotations

import shlex
import uuid

import pytest


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    assert lines[0].startswith("cocin: error: "), lines[0]
    return lines[0]


def _stat(cocin, path: str) -> str:
    """Mode, owner, link count, inode and content digest of a host file."""
    r = cocin.sh(f"stat -c '%a %u %g %h %i' {shlex.quote(path)} && sha256sum < {shlex.quote(path)}")
    assert r.rc == 0, r.stderr
    return r.stdout


def _victim(cocin, target_tmp) -> tuple[str, str]:
    """A root-owned 0600 file in a directory of its own: (directory, file)."""
    d = target_tmp / "hostdir"
    f = target_tmp.write("hostdir/victim", f"host secret {uuid.uuid4().hex}\n")
    assert cocin.sh(f"chown 0:0 {f} && chmod 0600 {f} && chmod 0755 {d}").rc == 0
    return d, f


def _make_tar(cocin, path: str, members: str, pax: dict | None = None) -> str:
    """A tarball built with Python's tarfile on the target host.

    ``members`` is Python code calling ``add(name, data=b'', **TarInfo attributes)``.
    """
    script = (
        "import io, tarfile\n"
        f"t = tarfile.open({path!r}, 'w', format=tarfile.PAX_FORMAT, pax_headers={pax or {}!r})\n"
        "def add(name, data=b'', **kw):\n"
        "    i = tarfile.TarInfo(name)\n"
        "    i.mode = 0o644\n"
        "    for k, v in kw.items(): setattr(i, k, v)\n"
        "    i.size = len(data)\n"
        "    t.addfile(i, io.BytesIO(data) if data else None)\n"
        f"{members}\n"
        "t.close()\n"
    )
    r = cocin.sh(f"{cocin.python} -c {shlex.quote(script)}")
    assert r.rc == 0, r.stderr
    return path


def _images(cocin) -> list[str]:
    return [line.split()[0] for line in cocin.ok("images").stdout.splitlines()[1:]]


def _import_or_load(cocin, how: str, tar: str):
    """``cocin import TAR evil`` or ``cocin load -i TAR`` (the tarball then
    carries the name ``evil`` in its pax header)."""
    return cocin("import", tar, "evil") if how == "import" else cocin("load", "-i", tar)


PAX = {"COCIN.image": '{"name": "evil", "source": "test"}'}


# --- findings 2 and 3: evil tarballs ---------------------------------------------------


@pytest.mark.parametrize("how", ["import", "load"])
def test_tarball_hard_link_through_symlink_leaves_host_file_alone(cocin, target_tmp, how):
    """``h -> /host/dir`` then a hard link ``stolen -> h/victim`` (04777, uid
    65534): the old extraction linked the host file into the layer and then
    chowned and chmodded it. Now the member is refused: it goes through a symlink."""
    d, victim = _victim(cocin, target_tmp)
    before = _stat(cocin, victim)
    tar = _make_tar(
        cocin,
        target_tmp / "evil.tar",
        (
            f"add('h', type=tarfile.SYMTYPE, linkname={d!r})\n"
            "add('stolen', type=tarfile.LNKTYPE, linkname='h/victim', mode=0o4777, uid=65534, gid=65534)\n"
        ),
        PAX if how == "load" else None,
    )
    try:
        r = _import_or_load(cocin, how, tar)
        assert _stat(cocin, victim) == before
        assert r.rc == 125, r.stdout
        assert "symlink" in one_error_line(r)
        assert "evil" not in _images(cocin)
    finally:
        cocin("rmi", "-f", "evil")


@pytest.mark.parametrize("how", ["import", "load"])
def test_tarball_hard_link_to_absolute_symlink_links_the_symlink(cocin, target_tmp, how):
    """A hard link whose target is a symlink ``s -> /host/victim``: link(2)
    through Python's default follows it (the old code linked, then chmodded,
    the host file); linkat without AT_SYMLINK_FOLLOW links the symlink itself."""
    _d, victim = _victim(cocin, target_tmp)
    before = _stat(cocin, victim)
    tar = _make_tar(
        cocin,
        target_tmp / "evil.tar",
        (
            f"add('s', type=tarfile.SYMTYPE, linkname={victim!r})\n"
            "add('l', type=tarfile.LNKTYPE, linkname='s', mode=0o4777, uid=65534, gid=65534)\n"
            "add('bin/busybox', open('/bin/busybox', 'rb').read(), mode=0o755)\n"
        ),
        PAX if how == "load" else None,
    )
    try:
        r = _import_or_load(cocin, how, tar)
        assert _stat(cocin, victim) == before
        assert r.rc == 0, r.stderr
        out = cocin.ok("run", "--rm", "--network", "none", "evil", "/bin/busybox", "readlink", "/l").stdout
        assert out == f"{victim}\n"  # the copy is the symlink, resolved inside the container
    finally:
        cocin("rmi", "-f", "evil")


@pytest.mark.parametrize("how", ["import", "load"])
def test_tarball_directory_member_over_symlink_leaves_host_dir_alone(cocin, target_tmp, how):
    """``x -> /host/dir`` then a directory member ``x/`` with mode 07777: the old
    code set that mode (and times) on the host directory. Now the directory
    member replaces the symlink inside the layer, and the host directory keeps
    its mode, owner and times."""
    d, _victim_file = _victim(cocin, target_tmp)
    before = cocin.sh(f"stat -c '%a %u %g %Y' {d}").stdout
    tar = _make_tar(
        cocin,
        target_tmp / "evil.tar",
        (
            f"add('x', type=tarfile.SYMTYPE, linkname={d!r})\n"
            "add('x/', type=tarfile.DIRTYPE, mode=0o7777, uid=65534, gid=65534, mtime=0)\n"
            "add('bin/busybox', open('/bin/busybox', 'rb').read(), mode=0o755)\n"
        ),
        PAX if how == "load" else None,
    )
    try:
        r = _import_or_load(cocin, how, tar)
        assert cocin.sh(f"stat -c '%a %u %g %Y' {d}").stdout == before
        assert r.rc == 0, r.stderr
        out = cocin.ok(
            "run", "--rm", "--network", "none", "evil", "/bin/busybox", "stat", "-c", "%F %a %u", "/x"
        ).stdout
        assert out == "directory 7777 65534\n"
    finally:
        cocin("rmi", "-f", "evil")


# --- finding 1: export/commit racing a symlink swap ----------------------------------------


@pytest.fixture
def rename_exchange(cocin, target_tmp):
    """tests/probes/rename_exchange.c, built static into the test's directory."""
    if cocin.sh("command -v gcc").rc != 0:
        pytest.skip("gcc is needed to build the renameat2 probe (apt-get install gcc)")
    out = target_tmp / "probe/rename_exchange"
    src = f"{cocin.repo}/tests/probes/rename_exchange.c"
    r = cocin.sh(f"mkdir -p {target_tmp / 'probe'} && gcc -static -O2 -o {out} {src}")
    if r.rc != 0:
        pytest.skip(f"cannot build a static probe (libc6-dev?): {r.stderr.strip()[-200:]}")
    return target_tmp / "probe"


def test_export_and_commit_do_not_follow_a_racing_symlink(cocin, target_tmp, rename_exchange):
    """A container swaps ``/race/d`` (a directory holding its own set-user-ID
    ``victim``) with ``/race/s`` (a symlink to a host directory) a million times
    a second. The old copy, working by host path in the container's upper
    directory, walked into the host directory (its file ended up in the
    export) or wrote into it (the host file replaced, set-user-ID). Now every
    name is opened relative to its parent's descriptor with O_NOFOLLOW."""
    d, victim = _victim(cocin, target_tmp)
    secret = cocin.sh(f"cat {victim}").stdout.strip()
    ls = f"ls -lAi --time-style=+%s {d} && stat -c '%a %u %Y' {d}"
    before, listing = _stat(cocin, victim), cocin.sh(ls).stdout
    script = (
        "mkdir -p /race/d && echo from-container > /race/d/victim && chmod 4755 /race/d/victim && "
        f"ln -s {d} /race/s && exec /probe/rename_exchange /race/d /race/s"
    )
    cocin.ok(
        "run",
        "-d",
        "--name",
        "racer",
        "--network",
        "none",
        "-v",
        f"{rename_exchange}:/probe",
        "busybox",
        "sh",
        "-c",
        script,
    )
    out = target_tmp / "out.tar"
    try:
        for i in range(30):
            rec = cocin.record("racer")
            assert rec["state"] == "running", "the swapping probe stopped (see cocin logs racer)"
            if i % 5 == 4:
                cocin.ok("commit", "--force", "racer", "raced")
                tree = f"{cocin.root}/layers/sha256"  # every layer of every image
                found = cocin.sh(f"grep -rlF {shlex.quote(secret)} {tree}").stdout
                assert not found, f"commit {i}: the host file was copied into the image: {found}"
            else:
                cocin.ok("export", "racer", "-o", out)
                assert cocin.sh(f"grep -cF {shlex.quote(secret)} {out}").stdout.strip() == "0", (
                    f"export {i}: the host file is in the export"
                )
            assert _stat(cocin, victim) == before, f"round {i}: the host file changed"
            assert cocin.sh(ls).stdout == listing, f"round {i}: the host directory changed"
    finally:
        cocin("rm", "-f", "racer")
        cocin("rmi", "-f", "raced")


def test_a_tree_deeper_than_the_recursion_limit_is_committed_exported_and_removed(cocin, target_tmp):
    """A container can make its files as deep as it likes: ``commit``,
    ``export`` and ``rm`` walk them with a stack of directory fds, not Python
    recursion (the old ones died with a RecursionError traceback; ``rm`` left
    the directory behind)."""
    cocin.ok(
        "run",
        "--name",
        "deep",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 1100 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done",
    )
    try:
        cid = cocin.full_id("deep")
        cocin.ok("commit", "deep", "deepimg")
        r = cocin.ok(
            "run",
            "--rm",
            "--network",
            "none",
            "deepimg",
            "sh",
            "-c",
            "n=0; while cd d 2>/dev/null; do n=$((n+1)); done; echo $n",
        )
        assert r.stdout == "1100\n"
        cocin.ok("export", "deep", "-o", target_tmp / "deep.tar")
        assert cocin.sh(f"tar -tf {target_tmp / 'deep.tar'} | grep -c '^d/'").stdout == "1100\n"
        r = cocin("rm", "deep")
        assert r.rc == 0 and r.stderr == "", r.stderr[-500:]
        left = cocin.sh(f"ls -A {cocin.root}/containers").stdout
        assert cid not in left
        r = cocin("rmi", "deepimg")
        assert r.rc == 0 and r.stderr == "", r.stderr[-500:]
    finally:
        cocin("rm", "-f", "deep")
        cocin("rmi", "-f", "deepimg")
        cocin.sh(f"rm -rf {cocin.root}/containers/.rm-* {cocin.root}/layers/.tmp-*")


# --- finding 4: the state root ----------------------------------------------------------------


def _as_nobody(cocin, test_args: str) -> int:
    """``test ARGS`` as user nobody (a probe: test -x / -r, never running the file)."""
    for tool in (
        f"setpriv --reuid=65534 --regid=65534 --clear-groups test {test_args}",
        f"runuser -u nobody -- test {test_args}",
    ):
        r = cocin.sh(f"command -v {tool.split()[0]} >/dev/null && {tool}")
        if r.rc in (0, 1):
            return r.rc
    pytest.skip("neither setpriv nor runuser is installed: cannot act as another user")


def test_committed_setuid_file_is_out_of_other_users_reach(cocin):
    """A container makes a set-user-ID copy of busybox and commits it: with the
    old world-traversable state root (0755) any host user could run it from
    ``layers/sha256/<chain>/diff/`` as root. Checked with ``test -x``/``test -r`` as nobody."""
    cocin.ok(
        "run",
        "--name",
        "suid",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /suidsh && chmod 4755 /suidsh",
    )
    try:
        cocin.ok("commit", "suid", "suidimg")
        suid = cocin.sh(f"ls {cocin.root}/layers/sha256/*/diff/suidsh").stdout.strip()
        assert cocin.sh(f"stat -c %a {suid}").stdout == "4755\n"  # the image keeps its mode
        assert _as_nobody(cocin, f"-x {suid}") == 1, "a host user can run the committed setuid file"
        assert _as_nobody(cocin, f"-r {cocin.root}/repositories.json") == 1
        assert _as_nobody(cocin, f"-e {cocin.root}/names") == 1
        modes = cocin.sh(
            f"cd {cocin.root} && stat -c '%n %a' . layers imagedb l containers names "
            f"repositories.json imagedb/* containers/*/config.json"
        ).stdout.split("\n")
        for line in filter(None, modes):
            name, mode = line.split()
            assert mode in ("700", "600"), f"{name} is {mode}"
    finally:
        cocin("rm", "-f", "suid")
        cocin("rmi", "-f", "suidimg")


def test_an_open_state_root_is_closed_by_the_next_command(cocin, target_tmp):
    """A state root left by an older cocin (0755 everywhere, records 0644) is
    tightened by the next command, whatever it is (here ``ps``)."""
    root = target_tmp / "oldroot"
    env = {"COCIN_ROOT": root}
    cocin.ok("run", "-d", "--name", "old", "--network", "none", "busybox", "true", env=env)
    try:
        cocin.ok("wait", "old", env=env)
        files = {
            "repositories.json": "600",
            "names/old": "600",
            "containers/*/config.json": "600",
            "containers/*/container.log": "640",
        }
        dirs = {d: "700" for d in (".", "layers", "imagedb", "l", "containers", "names", "locks")}
        assert cocin.sh(f"cd {root} && chmod 755 {' '.join(dirs)} && chmod 644 {' '.join(files)}").rc == 0
        cocin.ok("ps", "-a", env=env)
        for path, mode in {**dirs, **files}.items():
            assert cocin.sh(f"cd {root} && stat -c %a {path}").stdout == mode + "\n", path
    finally:
        cocin("rm", "-f", "old", env=env)


# --- finding 5: save/export -o through a planted symlink ------------------------------------


@pytest.mark.parametrize("verb", ["save", "export"])
def test_output_is_not_written_through_a_planted_symlink(cocin, target_tmp, verb):
    """Whoever can write to the output directory could plant a symlink at the
    old temporary name ``OUT.tmp-<pid>`` (the PID is easy to guess) and make
    root write the tarball into any file. The shell below plants it for the
    very PID cocin then runs as (``exec``), pointing at a file of the test's."""
    victim = target_tmp.write("victim", "untouched\n")
    before = _stat(cocin, victim)
    out = target_tmp / "out.tar"
    if verb == "export":
        cocin.ok("run", "--name", "exp5", "--network", "none", "busybox", "true")
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in cocin.env.items())
    argv = ["save", "busybox", "-o", out] if verb == "save" else ["export", "exp5", "-o", out]
    cmd = (
        f"ln -s {victim} {out}.tmp-$$ && exec env -u PYTHONDONTWRITEBYTECODE {envs} "
        f"{cocin.python} {cocin.repo}/cocin.py {' '.join(map(shlex.quote, argv))}"
    )
    try:
        r = cocin.sh(f"timeout 60 sh -c {shlex.quote(cmd)}")
        assert _stat(cocin, victim) == before, "cocin wrote through the planted symlink"
        assert r.rc == 0, r.stderr
        member = "manifest.json" if verb == "save" else "bin/busybox"  # save: a docker save archive
        assert member in cocin.sh(f"tar -tf {out}").stdout.split()
        assert cocin.sh(f"stat -c %a {out}").stdout == "600\n"  # as docker save -o makes it
        left = cocin.sh(f"ls -A {target_tmp}").stdout.split()
        assert sorted(x for x in left if ".tmp" in x and not x.startswith("out.tar.tmp-")) == []
    finally:
        cocin("rm", "-f", "exp5")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_output_to_a_device_or_fifo_is_written_not_replaced(cocin, target_tmp, kind):
    """``save -o /dev/null`` must write to the device, not rename a regular file
    over it (which would replace the host's /dev/null). The test makes its own
    null device node (c 1 3) and FIFO in its temp dir; the host's are never used."""
    out = target_tmp / "out"
    make = f"mknod {out} c 1 3" if kind == "device" else f"mkfifo {out}"
    assert cocin.sh(make).rc == 0
    reader = "" if kind == "device" else f"(tar -tf {out} > {target_tmp / 'list'}) & "
    cmd = cocin.cmdline("save", "busybox", "-o", out)
    r = cocin.sh(f"{reader}{cmd}; rc=$?; wait; exit $rc")
    assert r.rc == 0, r.stderr
    kind_now = cocin.sh(f"stat -c %F {out}").stdout.strip()
    assert kind_now == ("character special file" if kind == "device" else "fifo")
    if kind == "fifo":
        assert "manifest.json" in target_tmp.read("list").split()
