"""``cocin build``: an image from a Dockerfile, one step at a time, with a cache.

This is Docker's *classic* builder. Each instruction of a stage takes the
image made by the one before (its *parent*) and makes a new image:

* a **filesystem step** (``RUN``, ``COPY``, ``ADD``, ``WORKDIR``) changes files.
  ``RUN`` runs its command in a real container of the parent image (the
  usual namespaces, cgroup, capabilities and seccomp filter, and the build's
  network); ``COPY``/``ADD``/``WORKDIR`` write into an overlay of the parent's
  layers, mounted only in a short-lived child process with a mount namespace
  of its own (so no mount can outlive it). Either way the changes land in an
  overlay ``upper`` directory, which becomes **one new layer**, exactly as
  ``commit`` does it (a step that changed nothing makes none: Docker then
  marks the step ``empty_layer``, as below);
* a **metadata step** (``ENV``, ``CMD``, ``LABEL``, ``EXPOSE``, ...) only
  changes the image config; its history entry says ``empty_layer``.

The steps' images are kept, untagged, in the **build cache**: a file
``buildcache/<key>`` holds the image a step made, where the key is a hash of
the parent image ID and of the step as written into its history
(``created_by``: the command, with the build args it saw, ``|1 V=2 /bin/sh -c
make``; for ``COPY``/``ADD`` a hash of the copied files' contents and
metadata, ``COPY file:3b0c... in /app``). The same step on the same parent
is the same key: a rebuild with nothing changed runs nothing and makes no
layer. Change one file and its ``COPY`` misses, and so does every step after
it (their parent changed). ``--no-cache`` skips the lookups. The cache keeps
its images (and so their layers) until ``cocin builder prune``; the garbage
collector of ``images`` asks ``images.build_cache_ids`` which those are.

Stages (``FROM ... AS name``) build only when the target stage needs them,
through ``FROM name`` or ``COPY --from=name``.

Safety: the context is first copied (``.dockerignore`` applied) into a
private directory, by directory descriptors that never follow a symlink; a
source path is then resolved inside that copy (symlinks followed, but with
the copy as ``/``). A destination is resolved the same way inside the image's
tree (``rootfs.inside``), and written by descriptors in the mounted overlay,
never through a host path the image controls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time

from . import dockerfile, dockerignore, images, layers, state
from .dockerfile import DockerfileError, Instruction, Lexer, LexError
from .state import CocinError, NotFound

DEFAULT_SHELL = ["/bin/sh", "-c"]
# container.Config's field order, as Docker writes an image's "config"
CONFIG_ORDER = (
    "Hostname",
    "Domainname",
    "User",
    "ExposedPorts",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
)
FS_STEPS = ("RUN", "COPY", "ADD", "WORKDIR")


class BuildError(CocinError):
    exit_code = 1


class BuildOptions:
    def __init__(
        self,
        context: str,
        tags=(),
        dockerfile: str | None = None,
        build_args=None,
        target: str | None = None,
        no_cache: bool = False,
        pull: bool = False,
        network: str = "bridge",
        labels=None,
        quiet: bool = False,
        iidfile: str | None = None,
    ):
        self.context, self.tags, self.dockerfile = context, list(tags), dockerfile
        self.build_args: dict[str, str | None] = dict(build_args or {})
        self.target, self.no_cache, self.pull, self.network = target, no_cache, pull, network
        self.labels: dict[str, str] = dict(labels or {})
        self.quiet, self.iidfile = quiet, iidfile


# --- the build cache ------------------------------------------------------------------


def cache_dir() -> str:
    return os.path.join(state.root(), "buildcache")


def _cache_key(parent: str, created_by: str) -> str:
    return hashlib.sha256(f"{parent}\n{created_by}".encode()).hexdigest()


def _cache_get(key: str) -> str | None:
    try:
        with open(os.path.join(cache_dir(), key)) as f:
            image_id = f.read().strip()
    except OSError:
        return None
    return image_id if os.path.exists(os.path.join(images.imagedb(), image_id)) else None


def prune_cache() -> list[str]:
    """Forget every cached step; the images only the cache kept are deleted."""
    from .images import _drop_image_if_unused, _read_repos

    gone: list[str] = []
    images.repositories()
    with state.locked():
        try:
            names = os.listdir(cache_dir())
        except FileNotFoundError:
            return []
        ids = set()
        for n in names:
            try:
                with open(os.path.join(cache_dir(), n)) as f:
                    ids.add(f.read().strip())
                os.unlink(os.path.join(cache_dir(), n))
            except OSError:
                pass
        repos = _read_repos()
        for image_id in sorted(ids):
            gone += _drop_image_if_unused(image_id, repos)
    return gone


# --- configs ---------------------------------------------------------------------------


def _ordered(run: dict) -> dict:
    """The set fields of a run config in Go's order; maps sorted, as Go's JSON writes them."""
    run = {
        k: dict(sorted(v.items())) if k in ("ExposedPorts", "Labels", "Volumes") and v else v for k, v in run.items()
    }
    out = {k: run[k] for k in CONFIG_ORDER if run.get(k) not in (None, [], {}, "")}
    out.update({k: v for k, v in run.items() if k not in out and k not in CONFIG_ORDER and v not in (None, [], {}, "")})
    return out


def _image_config(base: dict, run: dict, diff_id: str | None, created_by: str, author: str | None) -> dict:
    from .image_build import host_arch, rfc3339

    now = time.time()
    step: dict[str, object] = {"created": rfc3339(now), "created_by": created_by}
    if diff_id is None:
        step["empty_layer"] = True
    diff_ids = list((base.get("rootfs") or {}).get("diff_ids", [])) + ([diff_id] if diff_id else [])
    cfg = {"architecture": base.get("architecture") or host_arch()}
    if author:
        cfg["author"] = author
    cfg.update(
        {
            "config": _ordered(run),
            "created": rfc3339(now),
            "history": list(base.get("history") or []) + [step],
            "os": base.get("os") or "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    return cfg


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _go_list(items) -> str:
    """Go's ``%q`` of a []string: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(i) for i in items) + "]"


def _go_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return sign + _trim(ns / 1000) + "µs"
    if ns < 1_000_000_000:
        return sign + _trim(ns / 1_000_000) + "ms"
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    s = _trim(rest / 10**9) + "s"
    if h:
        return f"{sign}{h}h{m}m{s}"
    if m:
        return f"{sign}{m}m{s}"
    return sign + s


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


_DUR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DUR.match(text, pos)
        if not m:
            raise CocinError(f"time: invalid duration {_go_quote(text)}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return int(total)


def _go_rune(n: int) -> str:
    """Go's ``%q`` of an int: a quoted rune literal."""
    c = chr(n) if 0 <= n < 0x110000 else "\ufffd"
    if c.isprintable() and c not in "'\\":
        return f"'{c}'"
    return f"'\\x{n:02x}'" if n < 0x80 else f"'\\u{n:04x}'"


def _health_text(h: dict) -> str:
    return "&{{{} {} {} {} {}}}".format(
        _go_list(h.get("Test") or []),
        _go_quote(_go_duration(h.get("Interval", 0))),
        _go_quote(_go_duration(h.get("Timeout", 0))),
        _go_quote(_go_duration(h.get("StartPeriod", 0))),
        _go_rune(h.get("Retries", 0)),
    )


def _ports(words: list[str]) -> list[str]:
    """EXPOSE's ports as ``80/tcp`` (ranges expanded), as nat.ParsePortSpecs does."""
    out = []
    for w in words:
        port, _, proto = w.partition("/")
        proto = (proto or "tcp").lower()
        lo, _, hi = port.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
            if not (0 < a <= 65535 and 0 < b <= 65535 and a <= b) or proto not in ("tcp", "udp", "sctp"):
                raise ValueError
        except ValueError:
            raise CocinError(f"Invalid containerPort: {w}") from None
        out += [f"{p}/{proto}" for p in range(a, b + 1)]
    return out


# --- the context --------------------------------------------------------------------------


def _copy_filtered(src_fd: int, dst_fd: int, matcher: dockerignore.Matcher | None, skip=()) -> None:
    """The context copied by descriptors (``layers``' copy, never a symlink
    followed), leaving out what .dockerignore excludes and the directories
    ``skip`` ((dev, inode) pairs: cocin's own state, should the context hold it)."""
    links: dict = {}
    stack = [(src_fd, dst_fd, "", iter(sorted(os.listdir(src_fd))), None)]
    try:
        while stack:
            sfd, dfd, prefix, names, st = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if st is not None:
                    try:
                        layers.set_attrs_fd(dfd, st)
                    finally:
                        os.close(sfd)
                        os.close(dfd)
                continue
            rel = prefix + name
            if skip:
                try:
                    est = os.stat(name, dir_fd=sfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if (est.st_dev, est.st_ino) in skip:
                    continue
            if matcher is not None and matcher.excluded(rel):
                try:
                    is_dir = stat.S_ISDIR(os.stat(name, dir_fd=sfd, follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    continue
                if not (is_dir and matcher.may_hold_exceptions(rel)):
                    continue
            sub = layers._copy_entry(sfd, dfd, name, rel, False, links, dst_fd)
            if sub is not None:
                s, d, sub_st = sub
                stack.append((s, d, rel + "/", iter(sorted(os.listdir(s))), sub_st))
    finally:
        for sfd, dfd, _p, _n, st in stack:
            if st is not None:
                os.close(sfd)
                os.close(dfd)


def _looks_like_tar(path: str) -> bool:
    """A tar archive, compressed or not (as Docker decides what ADD extracts: by content)."""
    import tarfile

    try:
        with tarfile.open(path, "r:*") as tf:
            return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False


# --- the work in a mount namespace of its own ------------------------------------------


def in_mount_namespace(job) -> None:
    """Run ``job()`` in a forked child with a private mount namespace: whatever
    it mounts goes away with it, also when it fails or is killed."""
    from . import libc, rootfs

    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            libc.unshare(libc.CLONE_NEWNS)
            rootfs.make_mounts_private()
            job()
        except BaseException as e:
            if isinstance(e, CocinError):
                msg = str(e)
            elif isinstance(e, OSError):
                msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
            else:
                msg = f"{type(e).__name__}: {e}"
            try:
                os.write(w, msg.encode())
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise BuildError(msg or f"the copy process failed (status {status})")


def mount_readonly(lower: str, target: str) -> str:
    """An image's layers (overlay ``lowerdir`` value) as one read-only tree; its root."""
    from . import libc

    dirs = [d for d in lower.split(":") if d]
    if not dirs:
        return ""
    if len(dirs) == 1:
        return layers._resolve_link(dirs[0])
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        os.chdir(os.path.dirname(dirs[0]))
        opts = "lowerdir=" + ":".join(os.path.basename(d) for d in dirs)
        libc.mount("overlay", target, "overlay", libc.MS_RDONLY, opts)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return target


def _in_root(root: str, path: str) -> list[str]:
    """The names of ``path`` below ``root`` with every symlink resolved inside ``root``."""
    from . import rootfs

    rel = os.path.relpath(rootfs.inside(root, path), root)
    return [] if rel == "." else rel.split("/")


def _lookup_ids(root: str, user: str, group: str | None) -> tuple[int, int]:
    """``--chown`` names through the image's /etc/passwd and /etc/group."""

    def table(path: str) -> list[list[str]]:
        parts = _in_root(root, path)
        try:
            pfd = layers.open_beneath(_root_fd(root), "/".join(parts[:-1]))
        except OSError:
            return []
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError:
            return []
        finally:
            os.close(pfd)
        with os.fdopen(fd, "r", errors="replace") as f:
            return [ln.split(":") for ln in f.read().splitlines() if ln and not ln.startswith("#")]

    def find(rows, name, what):
        for row in rows:
            if len(row) > 2 and row[0] == name and row[2].isdigit():
                return int(row[2])
        raise CocinError(
            f"unable to convert uid/gid chown string to host mapping: can't find {what} for "
            f"{'user' if what == 'uid' else 'group'} {name}: no such {'user' if what == 'uid' else 'group'}: {name}"
        )

    uid = int(user) if user.isdigit() else find(table("/etc/passwd"), user, "uid")
    if group is None:
        return uid, uid
    gid = int(group) if group.isdigit() else find(table("/etc/group"), group, "gid")
    return uid, gid


_ROOT_FDS: dict[str, int] = {}


def _root_fd(root: str) -> int:
    """An fd of a tree's root (the child's own mount or directory); kept for the child's life."""
    if root not in _ROOT_FDS:
        _ROOT_FDS[root] = os.open(root, layers.O_DIR)
    return _ROOT_FDS[root]


def _own(dfd: int, name: str, st: os.stat_result, owner, chmod) -> None:
    if owner is not None:
        os.chown(name, owner[0], owner[1], dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode) and (owner is not None or chmod is not None):
        mode = chmod if chmod is not None else stat.S_IMODE(st.st_mode)
        os.chmod(name, mode, dir_fd=dfd)


def _copy_one(sfd: int, name: str, dfd: int, dname: str, owner, chmod, contents: bool) -> None:
    """Copy entry ``name`` of ``sfd`` to ``dname`` in ``dfd`` (a directory: its
    contents into ``dname``, made if missing), then apply ``owner``/``chmod``."""
    links: dict = {}
    pin = os.open(name, layers.O_PIN, dir_fd=sfd)
    try:
        st = os.fstat(pin)
        if not stat.S_ISDIR(st.st_mode):
            layers.remove_at(dfd, dname)
            layers._copy_nondir(pin, st, dfd, dname, dname, links, dfd)
            _own(dfd, dname, st, owner, chmod)
            return
        s, d = layers._enter_dir(pin, dfd, dname, False)
    finally:
        os.close(pin)
    stack = [(s, d, iter(sorted(os.listdir(s))), st, dfd, dname)]
    try:
        while stack:
            s, d, names, dst, pfd, pname = stack[-1]
            n = next(names, None)
            if n is None:
                stack.pop()
                try:
                    layers.set_attrs_fd(d, dst)
                    _own(pfd, pname, dst, owner, chmod)
                finally:
                    os.close(s)
                    os.close(d)
                continue
            sub = layers._copy_entry(s, d, n, n, False, links, d)
            if sub is not None:
                ss, dd, sst = sub
                stack.append((ss, dd, iter(sorted(os.listdir(ss))), sst, d, n))
            else:
                try:
                    est = os.stat(n, dir_fd=d, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                _own(d, n, est, owner, chmod)
    finally:
        for s, d, _n, _st, _p, _pn in stack:
            os.close(s)
            os.close(d)


def _make_dirs(root_fd: int, parts: list[str], owner) -> int:
    """Open (making what is missing, 0755, owned by ``owner`` or root) the
    directories ``parts`` below ``root_fd``, one name at a time, no symlink followed."""
    fd = os.dup(root_fd)
    try:
        for p in parts:
            try:
                os.mkdir(p, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(p, owner[0], owner[1], dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                nfd = os.open(p, layers.O_DIR, dir_fd=fd)
            except OSError:
                raise CocinError(f"cannot copy to /{'/'.join(parts)}: {p} is not a directory") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


# --- the builder ---------------------------------------------------------------------------


def _remove_stale(base: str) -> None:
    """The scratch directories of builds whose cocin died (killed mid-build)."""
    for name in os.listdir(base):
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == "build" and parts[1].isdigit():
            try:
                os.kill(int(parts[1]), 0)
                continue  # still building
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            state.remove_tree(os.path.join(base, name))


class StageState:
    """Where a stage is: its last image and run config, its variables."""

    def __init__(self, stage, image_id: str, config: dict):
        self.stage = stage
        self.image_id = image_id
        self.config = config  # the whole image config
        self.run = dict(config.get("config") or {})
        self.args: dict[str, str | None] = {}  # ARGs declared in this stage
        self.cmd_set = False
        self.author = config.get("author")

    @property
    def env(self) -> dict[str, str]:
        return dict(e.partition("=")[::2] for e in self.run.get("Env") or [])


class Builder:
    def __init__(self, opts: BuildOptions):
        self.opts = opts
        self.lexer = Lexer()
        self.work = ""
        self.context = ""
        self.used_args: set[str] = set()
        self.results: dict[int, str] = {}  # stage index -> image id
        self.step_no = 0
        self.total = 0

    # output
    def say(self, text: str) -> None:
        if not self.opts.quiet:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def fail(self, ins: Instruction, text: str) -> BuildError:
        return BuildError(f"Dockerfile:{ins.line}: {text}")

    # ---- setup
    def prepare(self) -> dockerfile.Dockerfile:
        images.make_layers_dir()
        base = os.path.join(state.root(), "tmp")
        os.makedirs(base, 0o700, exist_ok=True)
        _remove_stale(base)
        self.work = os.path.join(base, f"build-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(self.work, 0o700)
        self.context = os.path.join(self.work, "context")
        os.mkdir(self.context, 0o755)
        opts = self.opts
        text = None
        if opts.dockerfile == "-":
            if opts.context == "-":
                raise CocinError("invalid argument: can't use stdin for both build context and dockerfile")
            text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        if opts.context == "-":
            blob = os.path.join(self.work, "stdin")
            with open(blob, "wb") as f:
                while True:
                    chunk = sys.stdin.buffer.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
            if _looks_like_tar(blob):
                from . import tarball

                tarball.extract(blob, self.context)
                name = opts.dockerfile or "Dockerfile"
                text = self._read_in_context(name)
            else:
                with open(blob, "rb") as f:
                    text = f.read().decode("utf-8", errors="replace")
            os.unlink(blob)
            name = opts.dockerfile or "Dockerfile"
            self._apply_ignore(name)
        else:
            if not os.path.exists(opts.context):
                raise CocinError(f'unable to prepare context: path "{opts.context}" not found')
            if not os.path.isdir(opts.context):
                raise CocinError(f"unable to prepare context: context must be a directory: {opts.context}")
            if text is None:
                path = opts.dockerfile
                if path is None:
                    path = os.path.join(opts.context, "Dockerfile")
                    if not os.path.exists(path) and os.path.exists(os.path.join(opts.context, "dockerfile")):
                        path = os.path.join(opts.context, "dockerfile")
                try:
                    with open(path, "rb") as f:
                        text = f.read().decode("utf-8", errors="replace")
                except OSError as e:
                    raise CocinError(
                        "unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                        f"{e.strerror}: {path}"
                    ) from None
            src_fd = os.open(opts.context, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                matcher = self._matcher(src_fd)
                state.raise_fd_limit()
                dst_fd = layers.open_dir(self.context)
                try:
                    own = os.stat(state.root())
                    _copy_filtered(src_fd, dst_fd, matcher, {(own.st_dev, own.st_ino)})
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
        df = dockerfile.parse(text)
        self._df_stages = df.stage
        for w in df.warnings:
            sys.stderr.write(w + "\n")
        self.lexer = Lexer(df.escape)
        return df

    def _matcher(self, dir_fd: int) -> dockerignore.Matcher | None:
        try:
            fd = os.open(".dockerignore", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CocinError(f"cannot read .dockerignore: {e.strerror}") from None
        with os.fdopen(fd, "r", errors="replace") as f:
            patterns = dockerignore.read(f.read())
        return dockerignore.Matcher(patterns) if patterns else None

    def _read_in_context(self, name: str) -> str:
        parts = _in_root(self.context, name)
        try:
            pfd = layers.open_beneath(_root_fd(self.context), "/".join(parts[:-1]))
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            finally:
                os.close(pfd)
        except (OSError, IndexError):
            raise CocinError(f"cannot locate specified Dockerfile: {name}") from None
        with os.fdopen(fd, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def _apply_ignore(self, dockerfile_name: str) -> None:
        """A tar context: remove what its .dockerignore excludes (its own tree: no copy)."""
        fd = layers.open_dir(self.context)
        try:
            matcher = self._matcher(fd)
        finally:
            os.close(fd)
        if matcher is None:
            return
        doomed = [rel for _fd, _n, rel, _st in layers.entries(self.context) if matcher.excluded(rel)]
        for rel in doomed:
            parent, _, base = rel.rpartition("/")
            try:
                pfd = layers.open_beneath(_root_fd(self.context), parent)
            except OSError:
                continue
            try:
                try:
                    st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode) and matcher.may_hold_exceptions(rel):
                    continue
                layers.remove_at(pfd, base)
            finally:
                os.close(pfd)

    # ---- variables
    def meta_env(self, df) -> dict[str, str]:
        env: dict[str, str] = {}
        for ins in df.meta_args:
            for word in ins.args:
                key, eq, value = word.partition("=")
                try:
                    key = self.lexer.process_word(key, env)
                    val = self.lexer.process_word(value, env) if eq else None
                except LexError as e:
                    raise self.fail(ins, str(e)) from None
                if key in self.opts.build_args and self.opts.build_args[key] is not None:
                    val = self.opts.build_args[key]
                    self.used_args.add(key)
                if val is not None:
                    env[key] = val
                self.meta_declared[key] = val
        return env

    def build_args_for(self, st: StageState) -> dict[str, str]:
        """The ARG values a step of the stage sees (FilterAllowed): declared ARGs
        with a value, and the predefined proxy ones given with --build-arg."""
        out: dict[str, str] = {}
        for key, default in st.args.items():
            v = self.opts.build_args.get(key)
            if v is not None:
                out[key] = v
            elif default is not None:
                out[key] = default
            else:
                meta = self.meta_declared.get(key)
                if meta is not None:
                    out[key] = meta
        for key in dockerfile.PROXY_ARGS:
            proxy = self.opts.build_args.get(key)
            if key not in out and proxy is not None:
                out[key] = proxy
        return out

    def step_env(self, st: StageState) -> dict[str, str]:
        env = st.env
        for k, v in self.build_args_for(st).items():
            env.setdefault(k, v)
        return env

    def word(self, ins: Instruction, st: StageState, text: str, env=None) -> str:
        try:
            return self.lexer.process_word(text, self.step_env(st) if env is None else env)
        except LexError as e:
            raise self.fail(ins, str(e)) from None

    # ---- images
    def load_base(self, ref: str, platform: str | None, ins: Instruction) -> tuple[str, dict]:
        if ref.lower() == "scratch":
            return "", {}
        from . import registry

        try:
            if self.opts.pull and not images.reference.is_id_prefix(ref):
                img = registry.pull(ref, quiet=True, platform=platform)
            else:
                try:
                    img = images.get(ref)
                except NotFound:
                    img = registry.pull_for_run(ref)
        except CocinError as e:
            raise BuildError(f"Dockerfile:{ins.line}: {e}") from None
        if platform:
            os_name, arch, _v = registry.parse_platform(platform)
            have = (img.config.get("os") or "linux", img.config.get("architecture") or "")
            if have[1] and have != (os_name, arch):
                raise BuildError(f"Dockerfile:{ins.line}: image {ref} is for {have[0]}/{have[1]}, not {os_name}/{arch}")
        return img.id, img.config

    def store(self, raw: bytes, key: str) -> str:
        """Store a step's image config and remember it in the cache (one lock:
        no collector sees it untagged and unreferenced)."""
        from .image_build import store_config
        from .images import _drop_image_if_unused, _read_repos

        images.repositories()
        with state.locked():
            image_id = store_config(raw)
            os.makedirs(cache_dir(), 0o700, exist_ok=True)
            old = _cache_get(key)
            state.atomic_write(os.path.join(cache_dir(), key), image_id)
            if old and old != image_id:  # the step made anew (--no-cache): the old one may go
                _drop_image_if_unused(old, _read_repos())
        return image_id

    def commit(self, st: StageState, created_by: str, layer_from: str | None) -> str:
        """The step's image: the parent plus (``layer_from``: an upper directory) one layer."""
        from . import image_build

        diff_id = None
        chain = None
        if layer_from is not None:
            tmp = image_build.staging()
            try:
                layers.copy_changes(layer_from, os.path.join(tmp, "diff"))
                empty = not os.listdir(os.path.join(tmp, "diff"))
            except BaseException:
                state.remove_tree(tmp)
                raise
            if empty:  # nothing changed: no layer, an "empty_layer" step (as Docker)
                state.remove_tree(tmp)
                layer_from = None
        if layer_from is not None:
            parent_chain = None
            if st.image_id:
                chains = images.load_image(st.image_id, []).meta.get("chains") or []
                parent_chain = chains[-1] if chains else None
            chain, diff_id = image_build.add_layer(tmp, parent_chain)
        cfg = _image_config(st.config, st.run, diff_id, created_by, st.author)
        raw = image_build._compact(cfg).encode()
        try:
            image_id = self.store(raw, _cache_key(st.image_id, created_by))
        except BaseException:
            if chain:
                with state.locked():
                    image_build._drop_orphan_layers([chain])
            raise
        st.image_id, st.config = image_id, cfg
        st.run = dict(cfg["config"])
        return image_id

    def cached(self, st: StageState, created_by: str) -> bool:
        if self.opts.no_cache:
            return False
        image_id = _cache_get(_cache_key(st.image_id, created_by))
        if image_id is None:
            return False
        img = images.load_image(image_id, [])
        st.image_id, st.config, st.run = image_id, img.config, dict(img.config.get("config") or {})
        self.say(" ---> Using cache")
        return True

    def done_step(self, st: StageState) -> None:
        self.say(f" ---> {st.image_id[:12]}")

    # ---- the plan
    def needed_stages(self, df, meta: dict[str, str]) -> tuple[list[int], int]:
        if self.opts.target:
            s = df.stage(self.opts.target)
            if s is None:
                raise BuildError(f"failed to reach build target {self.opts.target} in Dockerfile")
            target = s.index
        else:
            target = len(df.stages) - 1

        def ref_of(stage, word: str) -> int | None:
            if word.isdigit():
                i = int(word)
                return i if i < stage.index else None
            other = df.stage(word)
            return other.index if other is not None and other.index < stage.index else None

        need, todo = set(), [target]
        while todo:
            i = todo.pop()
            if i in need:
                continue
            need.add(i)
            stage = df.stages[i]
            try:
                base = self.lexer.process_word(stage.base, meta)
            except LexError:
                base = stage.base
            j = ref_of(stage, base) if not base.isdigit() else None
            if j is not None:
                todo.append(j)
            for ins in stage.instructions:
                src = ins.flags.get("from") if ins.cmd == "COPY" else None
                if src:
                    j = ref_of(stage, src)
                    if j is not None:
                        todo.append(j)
        return sorted(need), target

    # ---- running
    def run(self) -> str:
        df = self.prepare()
        self.meta_declared: dict[str, str | None] = {}
        meta = self.meta_env(df)
        order, target = self.needed_stages(df, meta)
        label_steps = sorted(self.opts.labels.items())
        self.total = len(df.meta_args) + sum(1 + len(df.stages[i].instructions) for i in order) + len(label_steps)
        for ins in df.meta_args:  # counted and shown, as Docker does; they only fed the FROM lines
            self.step_no += 1
            self.say(f"Step {self.step_no}/{self.total} : {ins.original}")
        final = None
        for i in order:
            stage = df.stages[i]
            st = self.run_from(df, stage, meta)
            for ins in stage.instructions:
                self.step(st, ins)
            if i == target:
                for k, v in label_steps:
                    self.step_no += 1
                    self.say(f"Step {self.step_no}/{self.total} : LABEL {k}={v}")
                    self.label(st, [(k, v)])
                    self.done_step(st)
            self.results[i] = st.image_id
            final = st.image_id
        if not final:
            raise BuildError("No image was generated. Is your Dockerfile empty?")
        unused = sorted(k for k in self.opts.build_args if k not in self.used_args and k not in dockerfile.PROXY_ARGS)
        if unused:
            self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        return final

    def run_from(self, df, stage, meta: dict[str, str]) -> StageState:
        ins = stage.from_instruction
        self.step_no += 1
        self.say(f"Step {self.step_no}/{self.total} : {ins.original}")
        try:
            base = self.lexer.process_word(stage.base, meta)
            platform = self.lexer.process_word(stage.platform, meta) if stage.platform else None
        except LexError as e:
            raise self.fail(ins, str(e)) from None
        if not base:
            raise self.fail(ins, "base name (" + stage.base + ") should not be blank")
        prev = df.stage(base)
        if prev is not None and prev.index < stage.index:
            image_id = self.results[prev.index]
            config = images.load_image(image_id, []).config if image_id else {}
        else:
            image_id, config = self.load_base(base, platform, ins)
        st = StageState(stage, image_id, config)
        env = st.env
        if "PATH" not in env:
            st.run["Env"] = list(st.run.get("Env") or []) + [images.DEFAULT_ENV[0]]
        self.say(f" ---> {image_id[:12]}")
        triggers = list(st.run.get("OnBuild") or [])
        if triggers:
            st.run["OnBuild"] = []
            self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for text in triggers:
                try:
                    trig = dockerfile._instruction(ins.line, text, df, "Dockerfile")
                except DockerfileError as e:
                    raise BuildError(f"Dockerfile:{ins.line}: ONBUILD trigger {text!r}: {e.text}") from None
                self.dispatch(st, trig)
        return st

    def step(self, st: StageState, ins: Instruction) -> None:
        self.step_no += 1
        self.say(f"Step {self.step_no}/{self.total} : {ins.original}")
        self.dispatch(st, ins)

    def dispatch(self, st: StageState, ins: Instruction) -> None:
        handler = getattr(self, "do_" + ins.cmd.lower())
        handler(st, ins)

    # metadata steps
    def meta_step(self, st: StageState, ins: Instruction | None, comment: str, change, shell=None) -> None:
        """A step that changes only the config. Its history line is the command
        Docker's builder commits: the shell (after the step: SHELL's new one),
        ``#(nop) ``, and the instruction as it was understood."""
        created_by = " ".join((shell or st.run.get("Shell") or DEFAULT_SHELL) + ["#(nop) ", comment])
        if self.cached(st, created_by):
            self.done_step(st)
            return
        change()
        self.commit(st, created_by, None)
        self.done_step(st)

    def do_env(self, st, ins):
        env_now = self.step_env(st)
        pairs = []
        for k, v in zip(ins.args[::2], ins.args[1::2]):
            key, val = self.word(ins, st, k, env_now), self.word(ins, st, v, env_now)
            if not key:
                raise self.fail(ins, "ENV names can not be blank")
            pairs.append((key, val))

        def change():
            env = [e for e in st.run.get("Env") or []]
            for key, val in pairs:
                for n, e in enumerate(env):
                    if e.partition("=")[0] == key:
                        env[n] = f"{key}={val}"
                        break
                else:
                    env.append(f"{key}={val}")
            st.run["Env"] = env

        self.meta_step(st, ins, "ENV " + " ".join(f"{k}={v}" for k, v in pairs), change)

    def label(self, st, pairs) -> None:
        def change():
            st.run["Labels"] = {**(st.run.get("Labels") or {}), **dict(pairs)}

        self.meta_step(st, None, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), change)

    def do_label(self, st, ins):
        env_now = self.step_env(st)
        pairs = [
            (self.word(ins, st, k, env_now), self.word(ins, st, v, env_now))
            for k, v in zip(ins.args[::2], ins.args[1::2])
        ]
        if any(not k for k, _v in pairs):
            raise self.fail(ins, "LABEL names can not be blank")
        self.label(st, pairs)

    def do_maintainer(self, st, ins):
        def change():
            st.author = ins.text

        self.meta_step(st, ins, "MAINTAINER " + ins.text, change)

    def do_arg(self, st, ins):
        env_now = self.step_env(st)
        parts = []
        for word in ins.args:
            key, eq, value = word.partition("=")
            key = self.word(ins, st, key, env_now)
            val = self.word(ins, st, value, env_now) if eq else None
            parts.append((key, val))

        text = "ARG " + " ".join(k if v is None else f"{k}={v}" for k, v in parts)
        self.meta_step(st, ins, text, lambda: None)
        for key, val in parts:
            st.args[key] = val
            if key in self.opts.build_args:
                self.used_args.add(key)

    def _cmd_of(self, st, ins) -> list[str]:
        if ins.json:
            return list(ins.args)
        return list(st.run.get("Shell") or DEFAULT_SHELL) + [ins.text]

    def do_cmd(self, st, ins):
        cmd = self._cmd_of(st, ins)

        def change():
            st.run["Cmd"] = cmd
            st.cmd_set = True

        self.meta_step(st, ins, f"CMD {_go_list(cmd)}", change)
        st.cmd_set = True

    def do_entrypoint(self, st, ins):
        ep = self._cmd_of(st, ins)

        def change():
            st.run["Entrypoint"] = ep
            if not st.cmd_set:
                st.run["Cmd"] = None

        self.meta_step(st, ins, f"ENTRYPOINT {_go_list(ep)}", change)

    def do_expose(self, st, ins):
        env_now = self.step_env(st)
        words = []
        for w in ins.args:
            try:
                words += self.lexer.process_words(w, env_now)
            except LexError as e:
                raise self.fail(ins, str(e)) from None
        try:
            ports = _ports(words)
        except CocinError as e:
            raise self.fail(ins, str(e)) from None

        def change():
            st.run["ExposedPorts"] = {**(st.run.get("ExposedPorts") or {}), **{p: {} for p in ports}}

        self.meta_step(st, ins, "EXPOSE " + " ".join(words), change)

    def do_user(self, st, ins):
        user = self.word(ins, st, ins.text)

        def change():
            st.run["User"] = user

        self.meta_step(st, ins, "USER " + user, change)

    def do_volume(self, st, ins):
        env_now = self.step_env(st)
        vols = [self.word(ins, st, v, env_now) for v in ins.args]
        for v in vols:
            if not v.strip():
                raise self.fail(ins, "VOLUME specified can not be an empty string")

        def change():
            st.run["Volumes"] = {**(st.run.get("Volumes") or {}), **{v: {} for v in vols}}

        self.meta_step(st, ins, "VOLUME [" + " ".join(vols) + "]", change)

    def do_stopsignal(self, st, ins):
        from . import runtime

        sig = self.word(ins, st, ins.text)
        try:
            runtime.stop_signal({"StopSignal": sig})
        except CocinError as e:
            raise self.fail(ins, str(e)) from None

        def change():
            st.run["StopSignal"] = sig

        self.meta_step(st, ins, "STOPSIGNAL " + sig, change)

    def do_shell(self, st, ins):
        def change():
            st.run["Shell"] = list(ins.args)

        self.meta_step(st, ins, "SHELL [" + " ".join(ins.args) + "]", change, shell=list(ins.args))

    def do_onbuild(self, st, ins):
        expr = ins.text.strip()

        def change():
            st.run["OnBuild"] = list(st.run.get("OnBuild") or []) + [expr]

        self.meta_step(st, ins, "ONBUILD " + expr, change)

    def do_healthcheck(self, st, ins):
        if ins.args[0] == "NONE":
            health = {"Test": ["NONE"]}
        else:
            test = ["CMD" if ins.json else "CMD-SHELL"] + ins.args[1:]
            health = {"Test": test}
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
                text = ins.flags.get(flag)
                if text:
                    try:
                        d = parse_duration(text)
                    except CocinError as e:
                        raise self.fail(ins, str(e)) from None
                    if d < 0:
                        raise self.fail(ins, f"Interval {_go_quote(flag)} cannot be negative")
                    if 0 < d < 10**6:
                        raise self.fail(ins, f"Interval {_go_quote(flag)} cannot be less than 1ms")
                    if d:
                        health[key] = d
            if ins.flags.get("retries"):
                try:
                    retries = int(ins.flags["retries"])
                except ValueError:
                    raise self.fail(
                        ins, f'strconv.ParseInt: parsing "{ins.flags["retries"]}": invalid syntax'
                    ) from None
                if retries < 1:
                    raise self.fail(ins, f"--retries must be at least 1 (not {retries})")
                health["Retries"] = retries
        old = (st.run.get("Healthcheck") or {}).get("Test")
        if old and old[0] != "NONE":
            self.say(f"Note: overriding previous HEALTHCHECK: [{' '.join(old)}]")

        def change():
            st.run["Healthcheck"] = health

        self.meta_step(st, ins, "HEALTHCHECK " + _health_text(health), change)

    # filesystem steps
    def step_dirs(self) -> tuple[str, str, str]:
        d = os.path.join(self.work, f"step-{os.urandom(4).hex()}")
        os.mkdir(d, 0o700)
        upper, work, merged = (os.path.join(d, n) for n in ("upper", "work", "merged"))
        for x in (upper, work, merged):
            os.mkdir(x, 0o755)
        return upper, work, merged

    def with_overlay(self, st: StageState, job) -> str:
        """Run ``job(root)`` on the parent image's tree (an overlay with a fresh
        upper) in a private mount namespace; the upper directory afterwards."""
        from . import rootfs

        upper, work, merged = self.step_dirs()
        lower = images.load_image(st.image_id, []).lower if st.image_id else ""

        def inner():
            root = upper
            if lower:
                rootfs.mount_overlay(lower, upper, work, merged)
                root = merged
            job(root)

        in_mount_namespace(inner)
        return upper

    def do_workdir(self, st, ins):
        path = self.word(ins, st, ins.text)
        wd = os.path.normpath(os.path.join(st.run.get("WorkingDir") or "/", path))
        if wd.startswith("//"):
            wd = "/" + wd.lstrip("/")
        st.run["WorkingDir"] = wd
        created_by = " ".join((st.run.get("Shell") or DEFAULT_SHELL) + ["#(nop) WORKDIR " + wd])
        if self.cached(st, created_by):
            self.done_step(st)
            return

        def job(root):
            fd = _make_dirs(_root_fd(root), _in_root(root, wd), None)
            os.close(fd)

        try:
            upper = self.with_overlay(st, job)
        except BuildError as e:
            raise self.fail(ins, str(e)) from None
        self.commit(st, created_by, upper)
        self.done_step(st)

    def do_run(self, st, ins):
        from . import monitor, runtime

        cmd = self._cmd_of(st, ins)
        env = st.env
        args = {k: v for k, v in self.build_args_for(st).items() if k not in env}  # an ENV wins over an ARG
        save = list(cmd)
        if args:
            shown = sorted(f"{k}={v}" for k, v in args.items() if k in st.args or k not in dockerfile.PROXY_ARGS)
            save = [f"|{len(shown)}"] + shown + cmd
        created_by = " ".join(save)
        if self.cached(st, created_by):
            self.done_step(st)
            return
        if not st.image_id:
            raise self.fail(ins, "RUN needs a base image with a shell (FROM scratch has no files)")
        opts = runtime.RunOptions(
            image=st.image_id,
            argv=cmd,
            entrypoint="",
            network=self.opts.network,
            env=[f"{k}={v}" for k, v in args.items()],
        )
        rec = runtime.create(opts)
        try:
            self.say(f" ---> Running in {rec.id[:12]}")
            try:
                code = self._foreground(rec, monitor)
            except monitor.ChildFailed as e:  # it could not even start (no such command)
                raise BuildError(
                    f"The command '{' '.join(cmd)}' returned a non-zero code: {getattr(e, 'exit_code', 126)}: {e}"
                ) from None
            if code != 0:
                raise BuildError(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}")
            rec = state.load(rec.id)
            self.commit(st, created_by, os.path.join(rec.dir, "upper"))
        finally:
            try:
                runtime.remove(rec, force=True)
            except NotFound:
                pass
        self.say(f"Removing intermediate container {rec.id[:12]}")
        self.done_step(st)

    def _foreground(self, rec, monitor) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2), os.dup(0)
        null = os.open("/dev/null", os.O_RDWR)
        try:
            os.dup2(null, 0)
            if self.opts.quiet:
                os.dup2(null, 1)
                os.dup2(null, 2)
            else:
                os.dup2(1, 2)  # the step's output, both streams, in order (as Docker shows it)
            lock = state.container_lock(rec.id)
            try:
                return monitor.start_foreground(rec, on_started=lambda _err: lock.release())
            finally:
                lock.release()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.dup2(saved[2], 0)
            for fd in (*saved, null):
                os.close(fd)

    def do_copy(self, st, ins):
        self.copy(st, ins, add=False)

    def do_add(self, st, ins):
        self.copy(st, ins, add=True)

    def copy(self, st: StageState, ins: Instruction, add: bool) -> None:
        name = ins.cmd
        env_now = self.step_env(st)
        words = [self.word(ins, st, w, env_now) for w in ins.args]
        srcs, dest = words[:-1], words[-1]
        chown = self.word(ins, st, ins.flags["chown"], env_now) if ins.flags.get("chown") else None
        chmod = None
        if ins.flags.get("chmod"):
            text = ins.flags["chmod"]
            if not re.fullmatch(r"[0-7]{1,4}", text):
                raise self.fail(ins, f"invalid chmod parameter: {text!r} (an octal mode, e.g. 0755)")
            chmod = int(text, 8)
        wd = st.run.get("WorkingDir") or "/"
        dest_path = dest  # Docker's normalizeDest: a relative one is joined to WORKDIR
        if not dest.startswith("/"):
            dest_path = os.path.normpath(os.path.join("/", wd, dest))
            if dest.endswith("/") and dest_path != "/":
                dest_path += "/"
        from_ref = ins.flags.get("from") if name == "COPY" else None
        for s in srcs:
            if add and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s):
                raise self.fail(
                    ins, f"ADD of a URL ({s}) is not supported by cocin build: download it into the context"
                )
        src_root_lower = None
        if from_ref is not None:
            src_id = self.source_image(ins, from_ref)
            src_root_lower = images.load_image(src_id, []).lower if src_id else ""
            chosen, src_hash = self.image_sources(ins, src_root_lower, srcs)
        else:
            chosen = self.context_sources(ins, srcs)
            src_hash = sources_hash(self.context, [rel for rel, _k in chosen])
        if len(chosen) > 1 and not dest.endswith("/"):  # the destination as written, as Docker checks it
            raise self.fail(
                ins,
                f"When using {name} with more than one source file, "
                "the destination must be a directory and end with a /",
            )
        flags = (f"--chown={chown}" if chown else "") + (f"--chmod={ins.flags['chmod']}" if chmod is not None else "")
        comment = f"{name} {flags}{src_hash} in {dest} "  # the destination as written (Docker's)
        created_by = " ".join((st.run.get("Shell") or DEFAULT_SHELL) + ["#(nop) " + comment])
        if self.cached(st, created_by):
            self.done_step(st)
            return
        context = self.context
        work = self.work

        def job(root):
            owner = None
            if chown:
                user, _, group = chown.partition(":")
                owner = _lookup_ids(root, user, group or None)
            elif from_ref is None:
                owner = (0, 0)
            if src_root_lower is not None:
                mnt = os.path.join(work, f"src-{os.urandom(4).hex()}")
                os.mkdir(mnt, 0o700)
                src_root = mount_readonly(src_root_lower, mnt) if src_root_lower else mnt
                items = [rel for rel, _k in chosen]  # found (and hashed) by image_sources
            else:
                src_root = context
                items = [rel for rel, _k in chosen]
            _place(root, src_root, items, dest_path, owner, chmod, add and from_ref is None, name, work)

        try:
            upper = self.with_overlay(st, job)
        except BuildError as e:
            raise self.fail(ins, str(e)) from None
        self.commit(st, created_by, upper)
        self.done_step(st)

    def image_sources(self, ins, lower: str, srcs: list[str]) -> tuple[list[tuple[str, str]], str]:
        """``COPY --from``'s sources, found and hashed in the source image (mounted
        read-only in a child): the cache then follows the files, not the image."""
        out = os.path.join(self.work, f"hash-{os.urandom(4).hex()}")
        work = self.work

        def job():
            mnt = os.path.join(work, f"src-{os.urandom(4).hex()}")
            os.mkdir(mnt, 0o700)
            root = mount_readonly(lower, mnt) if lower else mnt
            items: list[str] = []
            for s in srcs:
                items += _resolve_sources(root, s, ins.cmd)
            with open(out, "w") as f:
                json.dump([items, sources_hash(root, items)], f)

        try:
            in_mount_namespace(job)
        except BuildError as e:
            raise self.fail(ins, str(e)) from None
        with open(out) as f:
            items, digest = json.load(f)
        return [(i, "") for i in items], digest

    def source_image(self, ins, ref: str) -> str:
        df_stage = None
        stages = getattr(self, "_df_stages", None)
        if ref.isdigit():
            idx = int(ref)
            if idx in self.results:
                return self.results[idx]
            raise self.fail(ins, f"invalid from flag value {ref}: refers to a stage that is not built yet")
        if stages is not None:
            df_stage = stages(ref)
        if df_stage is not None and df_stage.index in self.results:
            return self.results[df_stage.index]
        image_id, _cfg = self.load_base(ref, None, ins)
        return image_id

    def context_sources(self, ins, srcs: list[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for s in srcs:
            clean = os.path.normpath("/" + s).lstrip("/") if s not in ("", ".") else ""
            if ".." in os.path.normpath(s).split("/") and os.path.normpath(s).startswith(".."):
                raise self.fail(ins, f"{ins.cmd} failed: forbidden path outside the build context: {s} ()")
            if any(c in s for c in "*?["):
                rx = dockerignore._regex(clean)
                hits = [
                    (rel, "dir" if stat.S_ISDIR(st_.st_mode) else "file")
                    for _fd, _n, rel, st_ in layers.entries(self.context)
                    if rx.match(rel)
                ]
                out += hits
                continue
            try:
                parts = _in_root(self.context, "/" + clean)
                rel = "/".join(parts)
                st_ = os.stat(os.path.join(self.context, rel) if rel else self.context, follow_symlinks=False)
            except OSError:
                raise self.fail(
                    ins,
                    f"{ins.cmd} failed: file not found in build context or excluded by .dockerignore: "
                    f"stat {s}: file does not exist",
                ) from None
            out.append((rel, "dir" if stat.S_ISDIR(st_.st_mode) else "file"))
        if not out:
            raise self.fail(ins, f"{ins.cmd} failed: no source files were specified")
        return out


def _tree_hash(root: str, rel: str) -> str:
    """Contents and metadata (not times) of a path below ``root`` (link-free), as the cache sees them."""
    h = hashlib.sha256()
    top = os.path.join(root, rel) if rel else root
    st_ = os.stat(top, follow_symlinks=False)
    if not stat.S_ISDIR(st_.st_mode):
        _hash_entry(h, "", st_, os.path.dirname(top), os.path.basename(top))
        return h.hexdigest()
    for fd, name, r, s in layers.entries(top):
        _hash_entry(h, r, s, fd, name)
    return h.hexdigest()


def sources_hash(root: str, rels: list[str]) -> str:
    """What a COPY's history line names its sources by: ``file:``, ``dir:`` (one
    source) or ``multi:`` and a hash of their contents and metadata."""
    if len(rels) == 1:
        top = os.path.join(root, rels[0]) if rels[0] else root
        kind = "dir" if stat.S_ISDIR(os.stat(top, follow_symlinks=False).st_mode) else "file"
    else:
        kind = "multi"
    h = hashlib.sha256()
    for rel in rels:
        h.update(rel.encode() + b"\0" + _tree_hash(root, rel).encode() + b"\n")
    return f"{kind}:{h.hexdigest()}"


def _hash_entry(h, rel: str, st_: os.stat_result, dir_ref, name: str) -> None:
    kind = stat.S_IFMT(st_.st_mode)
    h.update(f"{rel}\0{kind}\0{stat.S_IMODE(st_.st_mode)}\0{st_.st_uid}\0{st_.st_gid}\0{st_.st_size}\0".encode())
    dir_fd = dir_ref if isinstance(dir_ref, int) else None
    if stat.S_ISLNK(st_.st_mode):
        h.update(os.readlink(name if dir_fd is not None else os.path.join(dir_ref, name), dir_fd=dir_fd).encode())
    elif stat.S_ISREG(st_.st_mode):
        fd = os.open(
            name if dir_fd is not None else os.path.join(dir_ref, name),
            os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=dir_fd,
        )
        try:
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                h.update(chunk)
        finally:
            os.close(fd)
    elif stat.S_ISCHR(st_.st_mode) or stat.S_ISBLK(st_.st_mode):
        h.update(str(st_.st_rdev).encode())
    h.update(b"\n")


def _resolve_sources(src_root: str, s: str, name: str) -> list[str]:
    """Source paths inside another image's tree (``COPY --from``), links resolved inside it."""
    clean = os.path.normpath("/" + s).lstrip("/")
    if any(c in s for c in "*?["):
        rx = dockerignore._regex(clean)
        hits = [rel for _fd, _n, rel, _st in layers.entries(src_root) if rx.match(rel)]
        if not hits:
            raise CocinError(f"{name} failed: no source files were specified")
        return hits
    parts = _in_root(src_root, "/" + clean)
    rel = "/".join(parts)
    try:
        os.stat(os.path.join(src_root, rel) if rel else src_root, follow_symlinks=False)
    except OSError:
        raise CocinError(f"{name} failed: stat {s}: file does not exist") from None
    return [rel]


def _place(root: str, src_root: str, items: list[str], dest: str, owner, chmod, extract: bool, name: str, work: str):
    """Copy each source (``src_root``-relative, link-free) to ``dest`` in the image tree ``root``."""
    root_fd = _root_fd(root)
    src_fd = _root_fd(src_root)
    to_dir = dest.endswith("/") or len(items) > 1
    dparts = _in_root(root, dest)
    if not to_dir:
        # an existing directory at dest takes the files in, as cp does
        try:
            probe = layers.open_beneath(root_fd, "/".join(dparts))
            os.close(probe)
            to_dir = True
        except OSError:
            pass
    for rel in items:
        parent, _, base = rel.rpartition("/")
        sfd = layers.open_beneath(src_fd, parent) if rel else os.dup(src_fd)
        try:
            if not rel:  # the whole context: its contents
                dfd = _make_dirs(root_fd, dparts, owner)
                try:
                    for n in sorted(os.listdir(sfd)):
                        _copy_one(sfd, n, dfd, n, owner, chmod, False)
                finally:
                    os.close(dfd)
                continue
            st_ = os.stat(base, dir_fd=sfd, follow_symlinks=False)
            if stat.S_ISDIR(st_.st_mode):
                dfd = _make_dirs(root_fd, dparts, owner)
                try:
                    sub = layers.open_dir(base, sfd)
                    try:
                        for n in sorted(os.listdir(sub)):
                            _copy_one(sub, n, dfd, n, owner, chmod, False)
                    finally:
                        os.close(sub)
                finally:
                    os.close(dfd)
                continue
            if extract and stat.S_ISREG(st_.st_mode) and _looks_like_tar_at(sfd, base):
                _extract_into(root_fd, dparts, sfd, base, work)
                continue
            if to_dir:
                dfd = _make_dirs(root_fd, dparts, owner)
                target = base
            else:
                if not dparts:
                    raise CocinError(f"{name} failed: cannot copy a file to /")
                dfd = _make_dirs(root_fd, dparts[:-1], owner)
                target = dparts[-1]
            try:
                _copy_one(sfd, base, dfd, target, owner, chmod, False)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)


def _looks_like_tar_at(dir_fd: int, name: str) -> bool:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return _looks_like_tar(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _extract_into(root_fd: int, dparts: list[str], sfd: int, base: str, work: str) -> None:
    """ADD of a local archive: extracted (safely, ``tarball``) into a fresh
    directory of our own, then copied into the image tree by descriptors."""
    from . import tarball

    fresh = os.path.join(work, f"x-{os.urandom(4).hex()}")
    os.mkdir(fresh, 0o755)
    fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        tarball.extract(f"/proc/self/fd/{fd}", fresh)
    finally:
        os.close(fd)
    dfd = _make_dirs(root_fd, dparts, None)
    try:
        ffd = layers.open_dir(fresh)
        try:
            layers.copy_tree(ffd, dfd)
        finally:
            os.close(ffd)
    finally:
        os.close(dfd)


def build(opts: BuildOptions) -> str:
    """Build; the image ID (hex). Tags are checked before anything is built."""
    from . import image_build

    keys = [image_build.check_new_name(t, replace=True) for t in opts.tags]
    if opts.network not in ("bridge", "none", "host", "default"):
        raise CocinError(f"invalid --network {opts.network!r}: cocin build takes bridge, none or host")
    if opts.network == "default":
        opts.network = "bridge"
    b = Builder(opts)
    try:
        image_id = b.run()
    finally:
        if b.work:
            state.remove_tree(b.work)
    for key in keys:
        image_build.tag(image_id, key)
    b.say(f"Successfully built {image_id[:12]}")
    for key in keys:
        b.say(f"Successfully tagged {key}")
    if opts.quiet:
        sys.stdout.write(f"sha256:{image_id}\n")
    if opts.iidfile:
        state.atomic_write(opts.iidfile, f"sha256:{image_id}")
    return image_id


def _pairs(items: list[str], what: str, env_fallback: bool) -> dict:
    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise CocinError(f"invalid {what} {item!r}: it needs a name (K=V)")
        if eq:
            out[key] = value
        elif env_fallback:
            out[key] = os.environ.get(key)  # docker: the client's value, if it has one
        else:
            out[key] = ""
    return out


def main(a) -> int:
    """The ``build`` verb (its flags are in ``cli._build_flags``)."""
    opts = BuildOptions(
        context=a.context,
        tags=a.tag,
        dockerfile=a.file,
        build_args=_pairs(a.build_arg, "--build-arg", True),
        target=a.target,
        no_cache=a.no_cache,
        pull=a.pull,
        network=a.network,
        labels=_pairs(a.label, "--label", False),
        quiet=a.quiet,
        iidfile=a.iidfile,
    )
    build(opts)
    return 0
