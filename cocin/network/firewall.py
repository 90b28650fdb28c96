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
container goes, the list is empty and the chains and jumps are removed.

Two tools can program netfilter. ``iptables`` (legacy or the nf_tables
variant) is preferred; on a host with only ``nft`` the same rules go into
a table ``ip cocin`` of cocin's own, replaced atomically by ``nft -f``.
Set ``$COCIN_PORT_BACKEND`` to ``iptables`` or ``nft`` to choose.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from dataclasses import dataclass

from cocin.network import NetworkError, state_dir

DEFAULT_STATE_DIR = "/var/lib/cocin/networks"


def chain_names() -> dict[str, tuple[str, str]]:
    """``{rule chain: (table, iptables chain)}`` for this state root.

    The normal root owns ``COCIN`` (DNAT), ``COCIN-POSTROUTING`` and
    ``COCIN-FORWARD``. Another root (a test suite's ``$COCIN_ROOT``) gets
    names with a short hash, ``COCIN-1a2b3c``..., so that rebuilding its
    chains never wipes the rules of containers it does not know about.
    """
    base = "COCIN" + _suffix()
    return {"dnat": ("nat", base), "postrouting": ("nat", f"{base}-POSTROUTING"),
            "forward": ("filter", f"{base}-FORWARD")}


def nft_table() -> str:
    return "cocin" + _suffix().replace("-", "_")


def _suffix() -> str:
    directory = os.path.abspath(state_dir())
    if directory == DEFAULT_STATE_DIR:
        return ""
    return "-" + hashlib.sha256(directory.encode()).hexdigest()[:6]


def jumps() -> list[tuple[str, str, list[str], str]]:
    """The one rule per host chain that sends packets into ours:
    ``(table, host chain, match, our chain)``."""
    chains = chain_names()
    local = ["-m", "addrtype", "--dst-type", "LOCAL"]
    return [
        ("nat", "PREROUTING", local, chains["dnat"][1]),
        ("nat", "OUTPUT", local, chains["dnat"][1]),
        ("nat", "POSTROUTING", [], chains["postrouting"][1]),
        ("filter", "FORWARD", [], chains["forward"][1]),
    ]


@dataclass(frozen=True)
class Rule:
    """One rule, independent of the tool that installs it.

    ``chain`` is "dnat", "postrouting" or "forward"; ``target`` is "DNAT"
    (with ``to`` = "ip:port"), "MASQUERADE" or "ACCEPT". Unset matches
    match everything.
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
        raise NetworkError(f"{' '.join(args[:4])} failed: "
                           f"{detail[-1] if detail else f'exit status {proc.returncode}'}")
    return proc.returncode, proc.stdout


@functools.cache
def _works(tool: str) -> bool:
    """Is ``tool`` installed and allowed to read the nat table here?"""
    if tool == "iptables":
        if not (shutil.which("iptables") and shutil.which("iptables-restore")):
            return False
        return _run(["iptables", "-w", "-t", "nat", "-S"], check=False)[0] == 0
    if not shutil.which("nft"):
        return False
    return _run(["nft", "list", "tables"], check=False)[0] == 0


def backend() -> str | None:
    """"iptables", "nft", or None when neither can be used."""
    wanted = os.environ.get("COCIN_PORT_BACKEND", "")
    if wanted in ("iptables", "nft"):
        return wanted if _works(wanted) else None
    for tool in ("iptables", "nft"):
        if _works(tool):
            return tool
    return None


def forward_policy_drops() -> bool:
    """Does the host's filter FORWARD chain drop what no rule accepts?

    Docker sets this policy, and so do many firewall setups; then packets
    routed to and from the bridge need explicit ACCEPT rules.
    """
    if backend() != "iptables":
        return False
    _status, out = _run(["iptables", "-w", "-S", "FORWARD"], check=False)
    return "-P FORWARD DROP" in out


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


def _iptables_has(table: str, args: list[str]) -> bool:
    return _run(["iptables", "-w", "-t", table, "-C", *args], check=False)[0] == 0


def _iptables_chain_exists(table: str, chain: str) -> bool:
    return _run(["iptables", "-w", "-t", table, "-S", chain], check=False)[0] == 0


def _apply_iptables(rules: list[Rule]) -> None:
    chains = chain_names()
    wanted_chains = {chains[r.chain] for r in rules}
    if rules:
        wanted_chains |= {chains["dnat"], chains["postrouting"]}
        _run(["iptables-restore", "-w", "--noflush"], stdin=iptables_restore_input(rules))
    for table, host_chain, match, chain in jumps():
        jump = [host_chain, *match, "-j", chain]
        if (table, chain) in wanted_chains:
            if not _iptables_has(table, jump):
                # FORWARD: insert first, before any rule that would drop.
                op = "-I" if host_chain == "FORWARD" else "-A"
                _run(["iptables", "-w", "-t", table, op, *jump])
        else:
            while _iptables_has(table, jump):
                _run(["iptables", "-w", "-t", table, "-D", *jump])
    for table, chain in chains.values():
        if (table, chain) not in wanted_chains and _iptables_chain_exists(table, chain):
            _run(["iptables", "-w", "-t", table, "-F", chain])
            _run(["iptables", "-w", "-t", table, "-X", chain])


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
    parts.append({"DNAT": f"dnat to {rule.to}", "MASQUERADE": "masquerade",
                  "ACCEPT": "accept"}[rule.target])
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
    return script + f"""table ip {table} {{
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


def _apply_nft(rules: list[Rule]) -> None:
    _run(["nft", "-f", "-"], stdin=nft_script(rules))


# ------------------------------------------------------------------- apply --

def apply(rules: list[Rule]) -> None:
    """Make cocin's chains hold exactly ``rules`` (no-op without a backend).

    Rules left by the *other* tool (say the backend was switched while
    containers ran) are removed as well.
    """
    chosen = backend()
    if chosen == "iptables":
        _apply_iptables(rules)
    elif chosen == "nft":
        _apply_nft(rules)
    for other in ("iptables", "nft"):
        if other != chosen and _works(other) and _has_leftovers(other):
            (_apply_iptables if other == "iptables" else _apply_nft)([])


def _has_leftovers(tool: str) -> bool:
    if tool == "nft":
        return _run(["nft", "list", "table", "ip", nft_table()], check=False)[0] == 0
    return any(_iptables_chain_exists(t, c) for t, c in chain_names().values())
