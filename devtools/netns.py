"""Test hosts on one machine: a network namespace joined to this one by a veth link.

    with TestHost("a") as host:             # needs root and iproute2
        start_worker(env, log, via=host.exec_prefix)   # the worker runs "on" host a
        host.cut()                          # every packet on the link vanishes, both ways
        host.heal()

The test process stays in the machine's own namespace, which plays the surviving host: its
address on the link is ``host.peer_address`` and servers that host a should reach listen there.
A cut is silent, as a failed switch or a partition is: ``tc``'s ``pfifo limit 0`` drops every
packet queued on either end, and permanent neighbour entries keep ARP from timing out into
"host unreachable" errors that a real partition would not give.
"""

import os
import re
import shutil
import subprocess


def unavailable_reason() -> str:
    """Why test hosts cannot be made here, or "" when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "iproute2 (ip, tc) is not installed"
    probe = f"offload-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return ""


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


class TestHost:
    """A namespace ``offload-<name>-<pid>`` with address 10.<n>.<m>.2, linked to this host's
    10.<n>.<m>.1 (a /30 picked from the pid, so parallel runs do not clash)."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str):
        pid = os.getpid()
        self.namespace = f"offload-{name}-{pid}"
        self.link = f"ofl{pid % 10**9}"[:15]  # our end; interface names have at most 15 chars
        self.inner = "eth0"
        net = f"10.{200 + pid % 50}.{pid // 50 % 250}"
        self.peer_address, self.address = f"{net}.1", f"{net}.2"
        self.exec_prefix = ["ip", "netns", "exec", self.namespace]

    def create(self) -> "TestHost":
        ns, link = self.namespace, self.link
        _run("ip", "netns", "add", ns)
        try:
            _run("ip", "link", "add", link, "type", "veth", "peer", "name", self.inner, "netns", ns)
            _run("ip", "addr", "add", f"{self.peer_address}/30", "dev", link)
            _run("ip", "link", "set", link, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address}/30", "dev", self.inner)
            _run("ip", "-n", ns, "link", "set", self.inner, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # Each end knows the other's hardware address for good: during a cut, ARP would
            # otherwise fail and turn the silence into "no route to host" errors.
            _run("ip", "neigh", "replace", self.address, "lladdr", self._mac(ns, self.inner),
                 "dev", link, "nud", "permanent")  # fmt: skip
            _run("ip", "-n", ns, "neigh", "replace", self.peer_address, "lladdr",
                 self._mac(None, link), "dev", self.inner, "nud", "permanent")  # fmt: skip
        except BaseException:
            self.destroy()
            raise
        return self

    @staticmethod
    def _mac(namespace: str | None, device: str) -> str:
        where = ["-n", namespace] if namespace else []
        shown = _run("ip", *where, "link", "show", device)
        return re.search(r"link/ether ([0-9a-f:]{17})", shown).group(1)

    def cut(self) -> None:
        """Drop every packet on the link, both ways, from now on: no RST, no ICMP, silence."""
        _run("tc", "qdisc", "add", "dev", self.link, "root", "pfifo", "limit", "0")
        _run(
            *self.exec_prefix,
            "tc",
            "qdisc",
            "add",
            "dev",
            self.inner,
            "root",
            "pfifo",
            "limit",
            "0",
        )

    def heal(self) -> None:
        _run("tc", "qdisc", "del", "dev", self.link, "root")
        _run(*self.exec_prefix, "tc", "qdisc", "del", "dev", self.inner, "root")

    def destroy(self) -> None:
        """Remove the namespace and the link (deleting one end of a veth deletes both)."""
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)

    def __enter__(self) -> "TestHost":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()
