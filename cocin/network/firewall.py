"""The packet-filter rules cocin owns, rebuilt as a whole from its records.

Netfilter is the kernel's packet filter. Its *nat* table can rewrite
addresses as packets pass the hooks:

* PREROUTING (a packet arrives) and OUTPUT (a local program sends): a
  **DNAT** rule rewrites the destination — "host port 8080 is really
  172.29.0.2:80" — which is how ports are published;
* POSTROUTING (a packet leaves): **MASQUERADE** rewrites the source to the
  address of the outgoing interface, so containers with private addresses
  can reach other networks and the answers find their way back.

cocin never edits the host's own chains beyond one *jump* rule each into
chains it owns (``COCIN`` for DNAT, ``COCIN-POSTROUTING``, and
``COCIN-FORWARD`` in the filter table only when the FORWARD policy is DROP;
see ``chain_names``).
Its rules are not added and deleted one by one: ``apply(rules)`` receives
the complete list computed from the network records and replaces the
content of cocin's chains in one ``iptables-restore --noflush``
transaction. A rule can therefore never be left behind: when the last
network goes, the list is empty and the chains and jumps are removed.

Every ``iptables`` process costs milliseconds, and cocin recomputes the
rules after every attach and detach, so the work is cut to what changed.
What was applied last is kept in ``<state dir>/.firewall.json`` (written
under the network lock, like the records): when the new list is the same,
nothing runs at all; otherwise a single ``iptables-restore`` does
everything, jumps included, from what that file says is in place. The
file is trusted for ``REVALIDATE_SECONDS`` within one boot, and so is the
backend it names (no tool is looked for); after that as well while the
nftables ruleset has not changed at all (its generation counter, one
netlink request, says so), which covers iptables-nft and nft. Otherwise,
or when a restore fails, one ``iptables-save`` shows what is really there
and the next restore repairs whatever someone else removed (say a firewall
reload).
Which tools work on this host is probed once per boot and kept in
``/run/cocin/firewall-tools.json``. Nothing here imports ``subprocess`` or
``shutil`` until a tool must really run or be found.

Two tools can program netfilter. ``iptables`` (legacy or the nf_tables
variant) is preferred; on a host with only ``nft`` the same rules go into
a table ``ip cocin`` of cocin's own, replaced atomically by ``nft -f``.
Set ``$COCIN_PORT_BACKEND`` to ``iptables`` or ``nft`` to choose.

One module although it is long (~800 lines): the rules, their two renderings
(iptables, nft) and the bookkeeping of what is in place are one model; split,
each part would need the others' internals.
"""

from __future__ import annotations

import os
import time

from cocin.network import NetworkError, state_dir, store
from cocin.paths import DEFAULT_ROOT, RUN_DIR
from cocin.record import Record

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    # What is in place, as far as cocin's own chains and jumps go:
    # {"chains": [[table, chain]...], "jumps": [[table, host chain, rule spec]...],
    #  "forward_drops": bool}. A jump's spec is what follows "-A HOSTCHAIN".
    Present = dict[str, Any]

DEFAULT_STATE_DIR = os.path.join(DEFAULT_ROOT, "networks")
REVALIDATE_SECONDS = 60.0


def chain_names() -> dict[str, tuple[str, str]]:
    """``{rule chain: (table, iptables chain)}`` for this state root.

    The normal root owns ``COCIN`` (DNAT), ``COCIN-POSTROUTING`` and
    ``COCIN-FORWARD``. Another root (a test suite's ``$COCIN_ROOT``) gets
    names with a short hash, ``COCIN-1a2b3c``..., so that rebuilding its
    chains never wipes the rules of containers it does not know about.
    """
    return names_for(_suffix())


def names_for(suffix: str) -> dict[str, tuple[str, str]]:
    """The chains of the state root whose ``root_suffix`` is ``suffix``."""
    base = "COCIN" + suffix
    return {
        "dnat": ("nat", base),
        "postrouting": ("nat", f"{base}-POSTROUTING"),
        "forward": ("filter", f"{base}-FORWARD"),
    }


def nft_table(suffix: str | None = None) -> str:
    return "cocin" + (_suffix() if suffix is None else suffix).replace("-", "_")


def root_suffix() -> str:
    """ "" for the normal root, else "-" and 6 hex digits of a hash of its
    state directory: what names this root's chains (and its default bridge)."""
    return _suffix()


_suffixes: dict[str, str] = {}


def _suffix() -> str:
    directory = os.path.abspath(state_dir())
    if directory not in _suffixes:
        suffix = ""
        if directory != DEFAULT_STATE_DIR:
            # Imported only here: most runs never render a rule.
            import hashlib

            suffix = "-" + hashlib.sha256(directory.encode()).hexdigest()[:6]
        _suffixes[directory] = suffix
    return _suffixes[directory]


def jumps(chains: dict[str, tuple[str, str]] | None = None) -> list[tuple[str, str, list[str], str]]:
    """The one rule per host chain that sends packets into ours:
    ``(table, host chain, match, our chain)``."""
    chains = chains or chain_names()
    local = ["-m", "addrtype", "--dst-type", "LOCAL"]
    return [
        ("nat", "PREROUTING", local, chains["dnat"][1]),
        ("nat", "OUTPUT", local, chains["dnat"][1]),
        ("nat", "POSTROUTING", [], chains["postrouting"][1]),
        ("filter", "FORWARD", [], chains["forward"][1]),
    ]


class Rule(Record):
    """One rule, independent of the tool that installs it.

    ``chain`` is "dnat", "postrouting" or "forward"; ``target`` is "DNAT"
    (with ``to`` = "ip:port"), "MASQUERADE" or "ACCEPT". Unset matches
    match everything. Rules are values: equal and hashable by their fields
    (so duplicates can be dropped), never changed once made.
    """

    chain: str
    target: str
    proto: str | None = None
    src: str | None = None
    dst: str | None = None
    dport: int | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    out_negated: bool = False
    established: bool = False
    to: str | None = None
    comment: str | None = None

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().values()))


def _run(args: list[str], stdin: str | None = None, check: bool = True) -> tuple[int, str]:
    """Run a command; return (exit status, stdout). Imported lazily: most
    cocin commands never touch the firewall."""
    import subprocess

    try:
        proc = subprocess.run(args, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise NetworkError(f"{args[0]} is not installed") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetworkError(f"{' '.join(args[:4])} failed: {detail[-1] if detail else f'exit status {proc.returncode}'}")
    return proc.returncode, proc.stdout


_boot_id: list[str] = []


def boot_id() -> str:
    """A random id the kernel draws at every boot: state tagged with it is
    known to describe this boot's kernel, not an earlier one's."""
    if not _boot_id:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id.append(f.read().strip())
        except OSError:
            _boot_id.append("")
    return _boot_id[0]


def _read_cache(path: str) -> Any:
    """A cache file's content, or None when missing or unreadable (caches are
    written without fsync: after a power loss one may be torn)."""
    try:
        return store.read_json(path)
    except (OSError, ValueError):
        return None


def _write_cache(path: str, data: Any) -> None:
    try:
        store.write_json(path, data, durable=False)
    except OSError:
        pass  # a cache that cannot be written only costs time


TOOL_BINARIES = {"iptables": ("iptables", "iptables-restore", "iptables-save"), "nft": ("nft",)}


def _which(binary: str) -> str | None:
    """The first executable ``binary`` on ``$PATH``: ``shutil.which``,
    without importing ``shutil`` (~10 ms)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", binary)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _tool_signature(tool: str) -> list[Any] | None:
    """Which binaries ``tool`` would run (path, inode, mtime), or None if one
    is missing. Installing, upgrading or switching alternatives (legacy ↔
    nft) changes it and so invalidates the cached probe."""
    signature: list[Any] = []
    for binary in TOOL_BINARIES[tool]:
        path = _which(binary)
        if not path:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        signature.append([path, st.st_ino, st.st_mtime_ns])
    return signature


def _probe_tool(tool: str) -> bool:
    if tool == "iptables":
        return _run(["iptables", "-w", "-t", "nat", "-S"], check=False)[0] == 0
    return _run(["nft", "list", "tables"], check=False)[0] == 0


_works_cache: dict[str, bool] = {}


def _works(tool: str) -> bool:
    """Is ``tool`` installed and allowed to read the nat table here?
    (Asked once per process.)"""
    if tool not in _works_cache:
        _works_cache[tool] = _probe_works(tool)
    return _works_cache[tool]


def _probe_works(tool: str) -> bool:
    """Probing means running the tool, so the answer is kept for the whole
    boot in ``/run/cocin/firewall-tools.json`` (by root only), next to the
    identity of the binaries it was found with."""
    signature = _tool_signature(tool)
    if signature is None:
        return False
    path = os.path.join(RUN_DIR, "firewall-tools.json")
    cache = _read_cache(path) if os.geteuid() == 0 else None
    if not isinstance(cache, dict) or cache.get("boot") != boot_id():
        cache = {"boot": boot_id(), "tools": {}}
    known = cache["tools"].get(tool)
    if isinstance(known, dict) and known.get("signature") == signature:
        return bool(known.get("works"))
    works = _probe_tool(tool)
    if os.geteuid() == 0:
        cache["tools"][tool] = {"signature": signature, "works": works}
        _write_cache(path, cache)
    return works


def _wanted() -> str:
    """The backend ``$COCIN_PORT_BACKEND`` asks for ("" = choose)."""
    wanted = os.environ.get("COCIN_PORT_BACKEND", "")
    return wanted if wanted in ("iptables", "nft") else ""


def backend() -> str | None:
    """ "iptables", "nft", or None when neither can be used.

    While the recorded state is trusted (see ``_trusted_state``), the
    backend it was applied with; otherwise the tools are checked.
    """
    state = _trusted_state()
    if state is not None:
        return state["backend"]
    return _choose_backend()


def _choose_backend() -> str | None:
    wanted = _wanted()
    if wanted:
        return wanted if _works(wanted) else None
    for tool in ("iptables", "nft"):
        if _works(tool):
            return tool
    return None


def forward_policy_drops() -> bool:
    """Does the host's filter FORWARD chain drop what no rule accepts?

    Docker sets this policy, and so do many firewall setups; then packets
    routed to and from the bridge need explicit ACCEPT rules. The answer
    of the last check is used while it is fresh (see ``apply``).
    """
    if backend() != "iptables":
        return False
    state = _trusted_state()
    if state is not None and "forward_drops" in state:
        return bool(state["forward_drops"])
    return _snapshot()["forward_drops"]


# ---------------------------------------------------------------- iptables --


def iptables_args(rule: Rule) -> list[str]:
    """``Rule`` → the arguments after ``-A CHAIN``."""
    args: list[str] = []
    if rule.in_iface:
        args += ["-i", rule.in_iface]
    if rule.out_iface:
        args += (["!"] if rule.out_negated else []) + ["-o", rule.out_iface]
    if rule.src:
        args += ["-s", rule.src]
    if rule.dst:
        args += ["-d", rule.dst]
    if rule.proto:
        args += ["-p", rule.proto]
    if rule.dport:
        args += ["--dport", str(rule.dport)]
    if rule.established:
        args += ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
    if rule.comment:
        args += ["-m", "comment", "--comment", rule.comment]
    args += ["-j", rule.target]
    if rule.to:
        args += ["--to-destination", rule.to]
    return args


def iptables_restore_input(rules: list[Rule]) -> str:
    """The ``iptables-restore --noflush`` text that sets cocin's chains.

    Declaring ``:CHAIN - [0:0]`` creates the chain or, if it exists, empties
    it; the ``-A`` lines then fill it, all in one commit per table.
    """
    chains = chain_names()
    tables: dict[str, list[str]] = {"nat": [], "filter": []}
    for table, chain in chains.values():
        if table == "filter" and not any(r.chain == "forward" for r in rules):
            continue
        tables[table].append(f":{chain} - [0:0]")
    for rule in rules:
        table, chain = chains[rule.chain]
        tables[table].append(" ".join([f"-A {chain}"] + [_quote(a) for a in iptables_args(rule)]))
    text = ""
    for table, lines in tables.items():
        if lines:
            text += f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"
    return text


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c.isspace() for c in arg) else arg


_last_snapshot: tuple[float, Present] | None = None


def _jump_spec(match: list[str], chain: str) -> str:
    return " ".join([*match, "-j", chain])


def parse_iptables_save(text: str, chains: dict[str, tuple[str, str]] | None = None) -> Present:
    """Read ``iptables-save`` output: which of this root's chains (or of
    ``chains``) exist, every rule jumping into them from a host chain, the
    FORWARD policy."""
    ours = {chain: table for table, chain in (chains or chain_names()).values()}
    present: Present = {"chains": [], "jumps": [], "forward_drops": False}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name, policy = (line[1:].split() + ["", ""])[:2]
            if ours.get(name) == table:
                present["chains"].append([table, name])
            if table == "filter" and name == "FORWARD" and policy == "DROP":
                present["forward_drops"] = True
        elif line.startswith("-A "):
            parts = line.split(None, 2)
            if len(parts) == 3:
                words = parts[2].split()
                if (
                    len(words) >= 2
                    and words[-2] in ("-j", "--jump")
                    and ours.get(words[-1]) == table
                    and parts[1] not in ours
                ):
                    present["jumps"].append([table, parts[1], parts[2]])
    return present


def _snapshot() -> Present:
    """What is in place now, from one ``iptables-save``. Kept for a moment,
    so that ``forward_policy_drops()`` and the ``apply()`` that follows it
    in the same reconcile share one process."""
    global _last_snapshot
    if _last_snapshot is not None and time.monotonic() - _last_snapshot[0] < 2.0:
        return _last_snapshot[1]
    status, text = _run(["iptables-save"], check=False)
    if status != 0:
        # Some table it cannot show (one made by nft with features iptables
        # lacks, say): the two cocin uses will do.
        text = "".join(_run(["iptables-save", "-t", table], check=False)[1] for table in ("nat", "filter"))
    present = parse_iptables_save(text)
    _last_snapshot = (time.monotonic(), present)
    return present


def iptables_transaction(rules: list[Rule], present: Present, chains: dict[str, tuple[str, str]] | None = None) -> str:
    """The one ``iptables-restore --noflush`` input taking the host from
    ``present`` to exactly ``rules``: wanted chains declared (created, or
    emptied) and filled, the jumps into them added where missing, and
    unwanted jumps and chains deleted. Empty when there is nothing to do.
    (``chains``: another root's, to remove them: ``rules`` is then empty.)"""
    chains = chains or chain_names()
    wanted = {chains[r.chain] for r in rules}
    if rules:
        wanted |= {chains["dnat"], chains["postrouting"]}
    existing = {tuple(c) for c in present["chains"]}
    per_table: dict[str, dict[str, list[str]]] = {
        t: {"declare": [], "delete_jumps": [], "delete_chains": [], "rules": [], "jumps": []} for t in ("nat", "filter")
    }
    for table, chain in chains.values():
        if (table, chain) in wanted:
            per_table[table]["declare"].append(f":{chain} - [0:0]")
        elif (table, chain) in existing:
            per_table[table]["delete_chains"] += [f"-F {chain}", f"-X {chain}"]
    for rule in rules:
        table, chain = chains[rule.chain]
        per_table[table]["rules"].append(" ".join([f"-A {chain}"] + [_quote(a) for a in iptables_args(rule)]))
    for table, host_chain, match, chain in jumps(chains):
        found = [
            spec for t, h, spec in present["jumps"] if t == table and h == host_chain and spec.split()[-1] == chain
        ]
        if (table, chain) not in wanted:
            per_table[table]["delete_jumps"] += [f"-D {host_chain} {spec}" for spec in found]
        elif not found:
            # FORWARD: insert first, before any rule that would drop.
            op = "-I" if host_chain == "FORWARD" else "-A"
            per_table[table]["jumps"].append(f"{op} {host_chain} {_jump_spec(match, chain)}")
    text = ""
    for table, parts in per_table.items():
        lines = parts["declare"] + parts["delete_jumps"] + parts["delete_chains"] + parts["rules"] + parts["jumps"]
        if lines:
            text += f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"
    return text


def _present_after(rules: list[Rule], forward_drops: bool) -> Present:
    """What ``iptables_transaction(rules, ...)`` leaves in place."""
    chains = chain_names()
    wanted = {chains[r.chain] for r in rules}
    if rules:
        wanted |= {chains["dnat"], chains["postrouting"]}
    return {
        "chains": sorted([t, c] for t, c in wanted),
        "jumps": [[t, h, _jump_spec(m, c)] for t, h, m, c in jumps() if (t, c) in wanted],
        "forward_drops": forward_drops,
    }


def _apply_iptables(rules: list[Rule], present: Present | None = None) -> tuple[Present, bool]:
    """One ``iptables-restore``: from ``present`` if given (trusted), else
    from an ``iptables-save`` snapshot. Returns what is in place after it,
    and whether it was looked at (rather than trusted)."""
    known = present if present is not None else _snapshot()
    text = iptables_transaction(rules, known)
    if text:
        try:
            _run(["iptables-restore", "-w", "--noflush"], stdin=text)
        except NetworkError:
            if present is None:
                raise
            # The trusted state was wrong (someone changed the rules behind
            # cocin's back): look, and try again from what is really there.
            return _apply_iptables(rules)
    return _present_after(rules, bool(known.get("forward_drops"))), present is None


# --------------------------------------------------------------------- nft --


def nft_rule(rule: Rule) -> str:
    """``Rule`` → one nft rule statement."""
    parts: list[str] = []
    if rule.in_iface:
        parts.append(f'iifname "{rule.in_iface}"')
    if rule.out_iface:
        parts.append(f'oifname {"!= " if rule.out_negated else ""}"{rule.out_iface}"')
    if rule.src:
        parts.append(f"ip saddr {rule.src}")
    if rule.dst:
        parts.append(f"ip daddr {rule.dst}")
    if rule.proto and rule.dport:
        parts.append(f"{rule.proto} dport {rule.dport}")
    elif rule.proto:
        parts.append(f"meta l4proto {rule.proto}")
    if rule.established:
        parts.append("ct state related,established")
    parts.append({"DNAT": f"dnat to {rule.to}", "MASQUERADE": "masquerade", "ACCEPT": "accept"}[rule.target])
    if rule.comment:
        parts.append(f'comment "{rule.comment}"')
    return " ".join(parts)


def nft_script(rules: list[Rule]) -> str:
    """An ``nft -f`` script replacing table ``ip cocin`` in one transaction.

    "table; delete table" first makes sure the delete never fails; an empty
    rule list leaves no table at all. FORWARD ACCEPT rules are not rendered:
    an accept in our table cannot overrule a drop in another table.
    """
    table = nft_table()
    script = f"table ip {table}\ndelete table ip {table}\n"
    rules = [r for r in rules if r.chain != "forward"]
    if not rules:
        return script
    dnat = "\n".join(f"    {nft_rule(r)}" for r in rules if r.chain == "dnat")
    postrouting = "\n".join(f"    {nft_rule(r)}" for r in rules if r.chain == "postrouting")
    return (
        script
        + f"""table ip {table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump ports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump ports
  }}
  chain ports {{
{dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
{postrouting}
  }}
}}
"""
    )


def _apply_nft(rules: list[Rule]) -> None:
    _run(["nft", "-f", "-"], stdin=nft_script(rules))


# ------------------------------------------------------------------- apply --


def _state_path() -> str:
    return os.path.join(state_dir(), ".firewall.json")


def _load_state() -> dict[str, Any] | None:
    state = _read_cache(_state_path())
    if not isinstance(state, dict) or state.get("boot") != boot_id():
        return None
    return state


def _trusted_state(state: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The recorded state if it can be trusted without looking: same boot,
    same ``$COCIN_PORT_BACKEND``, and checked against the kernel (and the
    tools chosen) less than ``REVALIDATE_SECONDS`` ago — or, if older, with
    the same tools and an nftables ruleset unchanged since it was applied
    (see ``_ruleset_version``): then nobody can have removed a rule."""
    state = state if state is not None else _load_state()
    if state is None or "backend" not in state or state.get("wanted", "") != _wanted():
        return None
    if 0 <= time.time() - float(state.get("checked", 0)) < REVALIDATE_SECONDS:
        return state
    version = state.get("version")
    if not version:
        return None
    key = (state["backend"], *version)
    answer = _unchanged.get(key)
    # Asked again after a moment: a monitor lives for days, and a firewall
    # reload in the meantime must be noticed at its container's next restart.
    if answer is None or time.monotonic() - answer[1] > UNCHANGED_MEMO_SECONDS:
        answer = (
            _choose_backend() == state["backend"] and _ruleset_version(state["backend"]) == version,
            time.monotonic(),
        )
        _unchanged[key] = answer
    return state if answer[0] else None


UNCHANGED_MEMO_SECONDS = 2.0
_unchanged: dict[tuple[Any, ...], tuple[bool, float]] = {}


def _ruleset_version(chosen: str | None) -> list[Any] | None:
    """What tells, cheaply, whether anybody changed the rules: the program
    that applies them and nftables' generation counter (one netlink
    request, see ``netlink.nftables_generation``). Only for rules kept in
    nftables: ``nft`` itself, and iptables-nft (``xtables-nft-multi``),
    not legacy iptables, whose tables nftables does not see (None)."""
    if chosen == "iptables":
        path = _which("iptables-restore")
        tool = os.path.realpath(path) if path else ""
        if "nft" not in os.path.basename(tool):
            return None
    elif chosen == "nft":
        tool = "nft"
    else:
        return None
    from cocin.network import netlink

    try:
        return [tool, netlink.nftables_generation()]
    except OSError:
        return None


def _rules_key(chosen: str | None, rules: list[Rule]) -> str:
    """What identifies a rule list (the chain names are fixed per state dir,
    like the state file, so they need not be part of it)."""
    return f"{chosen}:{rules!r}"


def apply(rules: list[Rule]) -> None:
    """Make cocin's chains hold exactly ``rules`` (no-op without a backend).

    Nothing runs when ``rules`` is what was applied last and that is
    recent enough to be trusted. Rules left by the *other* tool (say the
    backend was switched while containers ran) are removed as well.
    Callers hold the network lock (``bridge``), which also guards the
    state file.
    """
    global _last_snapshot
    state = _load_state()
    fresh = _trusted_state(state)
    chosen = fresh["backend"] if fresh is not None else _choose_backend()
    key = _rules_key(chosen, rules)
    if fresh is not None and fresh.get("applied") == key:
        return
    # Forget the old state first: a crash halfway leaves no state, so the
    # next apply looks at what is really there.
    if state is not None:
        store.remove(_state_path())
    new: dict[str, Any] = {
        "boot": boot_id(),
        "backend": chosen,
        "wanted": _wanted(),
        "applied": key,
        "checked": time.time(),
    }
    if rules:
        register_root()  # before the chains exist: whose they are (see prune_orphans)
    else:
        store.remove(_registry_path(_suffix()))  # the chains go: nothing left to tell
    try:
        if chosen == "iptables":
            present, looked = _apply_iptables(rules, (fresh or {}).get("present"))
            if not looked and fresh is not None:
                new["checked"] = fresh["checked"]  # trusted, not looked at
            new["present"] = present
            new["forward_drops"] = present["forward_drops"]
        elif chosen == "nft":
            _apply_nft(rules)
        elif fresh is not None:
            new["checked"] = fresh["checked"]  # no tool: nothing was looked at
        if state is None or state.get("backend") != chosen:
            # First apply of this boot, or another backend: clean the other.
            if chosen != "iptables" and _works("iptables") and _has_leftovers("iptables"):
                _apply_iptables([])
            if chosen != "nft" and _works("nft") and _has_leftovers("nft"):
                _apply_nft([])
    finally:
        _last_snapshot = None
    new["version"] = _ruleset_version(chosen)  # read after our own change
    _write_cache(_state_path(), new)


def _has_leftovers(tool: str) -> bool:
    if tool == "nft":
        return _run(["nft", "list", "table", "ip", nft_table()], check=False)[0] == 0
    present = _snapshot()
    return bool(present["chains"] or present["jumps"])


# ----------------------------------------------------- state roots, orphans --
#
# A chain named COCIN-1a2b3c says only a hash of its state directory. So that
# the chains of a directory removed by hand can be recognised, every root
# writes its directory into ``/run/cocin/roots/<hash>`` (``default`` for the
# normal root) before it makes chains; ``/run`` is emptied at boot, exactly
# when the chains vanish too. A registered directory that no longer exists
# has left orphans behind: ``prune_orphans`` removes its chains, jumps, nft
# table and default bridge. Chains of a root that is not registered (made
# by an older cocin) and chains that are not cocin's are never touched.


def _registry_path(suffix: str) -> str:
    return os.path.join(RUN_DIR, "roots", suffix.lstrip("-") or "default")


def register_root() -> None:
    """Record which state directory this root's chains belong to (once)."""
    path = _registry_path(_suffix())
    if not os.path.exists(path):
        try:
            store.write_json(path, {"state_dir": os.path.abspath(state_dir())}, durable=False)
        except OSError:
            pass  # only costs the ability to prune them later


def registered_roots() -> dict[str, str]:
    """``{suffix: state directory}`` of every root that made chains this boot."""
    try:
        names = os.listdir(os.path.join(RUN_DIR, "roots"))
    except FileNotFoundError:
        return {}
    roots = {}
    for name in names:
        if name.startswith("."):
            continue
        entry = _read_cache(os.path.join(RUN_DIR, "roots", name))
        if isinstance(entry, dict) and isinstance(entry.get("state_dir"), str):
            roots["" if name == "default" else "-" + name] = entry["state_dir"]
    return roots


def owner_of(chain_or_bridge: str) -> str | None:
    """The state directory a chain ``COCIN-xxxxxx...`` or a default bridge
    ``cocin-xxxxxx`` was made for, if it is registered."""
    name = chain_or_bridge.upper()
    if not name.startswith("COCIN"):
        return None
    rest = name[len("COCIN") :]
    suffix = rest[:7].lower() if len(rest) >= 7 and rest[0] == "-" else ""
    if suffix and any(c not in "0123456789abcdef" for c in suffix[1:]):
        suffix = ""
    return registered_roots().get(suffix)


def prune_orphans() -> list[str]:
    """Remove what state roots whose directory is gone left on the host:
    their chains and the jumps into them, their nft table, their default
    bridge. Returns what was removed, described."""
    removed: list[str] = []
    for suffix, directory in sorted(registered_roots().items()):
        if os.path.isdir(directory):
            continue  # a live root: its chains are its own business
        root = os.path.dirname(directory)
        chains = names_for(suffix)
        if _works("iptables"):
            present = parse_iptables_save(_run(["iptables-save"], check=False)[1], chains)
            text = iptables_transaction([], present, chains)
            if text:
                _run(["iptables-restore", "-w", "--noflush"], stdin=text)
                removed += [f"chain {c} (of {root})" for _t, c in present["chains"]]
        if _works("nft") and _run(["nft", "list", "table", "ip", nft_table(suffix)], check=False)[0] == 0:
            _run(["nft", "delete", "table", "ip", nft_table(suffix)])
            removed.append(f"nft table ip {nft_table(suffix)} (of {root})")
        if suffix:
            from cocin.network import netlink

            bridge = "cocin" + suffix
            try:
                netlink.delete_link(bridge)
                removed.append(f"bridge {bridge} (of {root})")
            except OSError:
                pass  # not there
        store.remove(_registry_path(suffix))
    return removed
