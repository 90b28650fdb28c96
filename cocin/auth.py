"""``login`` and ``logout``: registry credentials, kept where Docker keeps them.

A registry that wants to know who asks answers ``401`` with a
``WWW-Authenticate`` challenge: ``Basic`` (the user and password go with
every request) or ``Bearer`` (they are shown once to a token server, the
*realm*, which hands out a short-lived token). ``login`` checks a user and
password the way a pull would use them: ``GET /v2/`` (the API's root), then
the challenge's dance, then ``GET /v2/`` again with what it yielded. Only
credentials that worked are stored.

They are stored as the Docker client stores them, so both tools share them:
``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``), under
``auths``, keyed by the registry's ``host[:port]`` (Docker Hub's key is
``https://index.docker.io/v1/``), as ``{"auth": base64("user:password")}``.
Base64 is an encoding, not encryption: the file is what protects them, so
it is written mode 0600 (its directory 0700), atomically (a new file renamed
over the old one) while holding a ``flock`` on the directory, keeping every
other key of the file (``credsStore``, other registries) as it was.
With a credential helper configured (``credsStore``, or ``credHelpers`` for
one registry), the secret goes to it instead, as Docker does: the program
``docker-credential-NAME`` (``pass``, ``secretservice``, ...) is run with
``store``/``get``/``erase`` and talks JSON on its standard input and output;
``auths`` then holds an empty entry for the registry.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import sys

from . import reference, registry, state
from .state import CocinError

HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def server_key(server: str | None) -> tuple[str, str]:
    """``(domain, key in auths)`` of a server as the user writes it
    (``127.0.0.1:5000``, ``https://ghcr.io``, nothing: Docker Hub)."""
    text = (server or "").strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    if not text or text in _HUB_NAMES:
        return reference.DEFAULT_DOMAIN, HUB_KEY
    if not reference._domain_ok(text):
        raise CocinError(f"invalid registry address {server!r}")
    return text, text


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CocinError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise CocinError(f"cannot read {path}: not a JSON object")
    return data


class _ConfigLock:
    """The config file's directory (made 0700), ``flock``-ed while it changes."""

    def __enter__(self) -> str:
        path = registry.docker_config_path()
        directory = os.path.dirname(path)
        os.makedirs(directory, 0o700, exist_ok=True)
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return path

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _auths(data: dict) -> dict:
    found = data.get("auths")
    return found if isinstance(found, dict) else {}


def _write_config(path: str, data: dict) -> None:
    with state.AtomicFile(path, mode=0o600) as f:
        f.write((json.dumps(data, indent="\t") + "\n").encode())


def _helper_argv(helper: str, action: str) -> list[str]:
    if not helper or not all(c.isalnum() or c in "-_." for c in helper) or helper.startswith("."):
        raise CocinError(f"invalid credential helper name {helper!r}")
    return [f"docker-credential-{helper}", action]


def _helper(helper: str, action: str, data: str) -> str:
    import subprocess

    argv = _helper_argv(helper, action)
    try:
        r = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise CocinError(f"credential helper {argv[0]}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise CocinError(f"credential helper {argv[0]} did not answer") from None
    if r.returncode != 0:
        raise CocinError(f"credential helper {argv[0]} {action}: {(r.stdout + r.stderr).strip()}")
    return r.stdout


def helper_get(helper: str, server: str) -> tuple[str, str] | None:
    """The helper's credentials for ``server`` (None when it has none or cannot be run)."""
    try:
        answer = json.loads(_helper(helper, "get", server))
    except (CocinError, ValueError):
        return None
    if not isinstance(answer, dict) or not answer.get("Secret"):
        return None
    return str(answer.get("Username", "")), str(answer["Secret"])


def check(domain: str, user: str, password: str) -> None:
    """``GET /v2/`` with these credentials (through the challenge's dance)."""
    client = registry.Client(reference.Reference(domain, "login", "latest", None))
    client.creds, client.scopes = (user, password), []
    resp = client.send("GET", "/v2/", allow=(401, 403, 404))
    resp.close()
    if resp.getcode() in (401, 403):
        raise CocinError(f"login to {domain} failed: unauthorized: incorrect username or password")
    if resp.getcode() == 404:
        raise CocinError(f"login to {domain} failed: {client.base} is not a registry (no /v2/)")


def login(server: str | None, user: str | None, password: str | None) -> None:
    domain, key = server_key(server)
    if user is None and password is None:
        stored = registry.credentials(domain)
        if stored:
            print("Authenticating with existing credentials...", flush=True)
            check(domain, *stored)
            print("Login Succeeded")
            return
    if user is None:
        if not sys.stdin.isatty():
            raise CocinError("Cannot perform an interactive login from a non TTY device")
        user = input("Username: ").strip()
    if not user:
        raise CocinError("Username is required")
    if password is None:
        if not sys.stdin.isatty():
            raise CocinError("Cannot perform an interactive login from a non TTY device")
        import getpass

        password = getpass.getpass("Password: ")
    if not password:
        raise CocinError("Password is required")
    check(domain, user, password)
    with _ConfigLock() as path:
        data = _read_config(path)
        auths = _auths(data)
        helper = (data.get("credHelpers") or {}).get(domain) or data.get("credsStore")
        if helper:
            _helper(helper, "store", json.dumps({"ServerURL": key, "Username": user, "Secret": password}))
            auths[key] = {}
        else:
            auths[key] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
            sys.stderr.write(
                f"WARNING! Your password will be stored unencrypted in {path}.\n"
                "Configure a credential helper (credsStore) to remove this warning.\n\n"
            )
        data["auths"] = auths
        _write_config(path, data)
    print("Login Succeeded")


def logout(server: str | None) -> None:
    domain, key = server_key(server)
    with _ConfigLock() as path:
        data = _read_config(path)
        auths = _auths(data)
        keys = [k for k in dict.fromkeys((key, domain, "https://" + domain, "http://" + domain)) if k in auths]
        helper = (data.get("credHelpers") or {}).get(domain) or data.get("credsStore")
        if helper and helper_get(helper, key):
            _helper(helper, "erase", key)
            keys = keys or [key]
        if not keys:
            print(f"Not logged in to {key}")
            return
        print(f"Removing login credentials for {key}")
        for k in keys:
            auths.pop(k, None)
        data["auths"] = auths
        _write_config(path, data)


def password_from_stdin() -> str:
    """``--password-stdin``: all of standard input, its trailing newline dropped."""
    text = sys.stdin.read()
    text = text[:-1] if text.endswith("\n") else text
    return text[:-1] if text.endswith("\r") else text
