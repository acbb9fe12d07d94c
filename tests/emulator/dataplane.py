"""The VPC's data plane for the rig: its Amazon-provided resolver and a Bedrock runtime stand-in.

Both serve inside a network namespace the rig (or a test) created, never on a host address:

* `Resolver`: a DNS server (dnslib) at the VPC CIDR base + 2, as in a VPC. It answers the Bedrock
  services' standard names with the ENI addresses of the VPC's available private-DNS endpoint for
  that service, else with the "public" address; an endpoint's regional and zonal `vpce-...` names
  with its ENI addresses; everything else NXDOMAIN. The control API can pin any name to other
  addresses (custom DNS servers, forwarding rules) or to NXDOMAIN.
* `BedrockStandIn`: HTTPS (a rig CA) on port 443 of every ENI address of every endpoint in the VPC
  (listeners come and go with the ENIs) and of the public address. It answers the bedrock-runtime
  calls InvokeModel, InvokeModelWithResponseStream, Converse and ConverseStream with canned
  content in AWS's wire shapes. On an endpoint address it enforces the endpoint's state and
  security groups (a kernel socket filter drops the SYN of a refused source: no answer at all, as
  with a dropped packet) and its current policy (endpoint_policy.py), with AWS's
  AccessDeniedException. Every served call is recorded.

Sockets are opened by one thread that has joined the namespace with setns(2) (a socket keeps the
namespace it was created in); addresses are added to the namespace's `lo` with `ip`.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import datetime
import http.server
import ipaddress
import json
import logging
import os
import queue
import re
import socket
import selectors
import ssl
import struct
import subprocess
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

import endpoint_policy

LOG = logging.getLogger("bpl-dataplane")

CLONE_NEWNET = 0x40000000
SO_ATTACH_FILTER = 26
HTTPS_PORT = 443
DNS_PORT = 53
DEFAULT_PUBLIC_ADDRESS = "203.0.113.10"  # TEST-NET-3: a "public" Bedrock address, inside the netns only
ACCOUNT_ID = "123456789012"
DEFAULT_PRINCIPALS = {
    "testing": {"arn": f"arn:aws:iam::{ACCOUNT_ID}:role/bpl-rig-workload", "org_id": "o-bplrig0001"},
}
# Regions an inference profile routes to, by its geographic prefix (AWS's lists are longer).
PROFILE_REGIONS = {
    "us.": ["us-east-1", "us-east-2", "us-west-2"],
    "us-gov.": ["us-gov-east-1", "us-gov-west-1"],
    "eu.": ["eu-central-1", "eu-west-1", "eu-west-3"],
    "apac.": ["ap-northeast-1", "ap-southeast-1", "ap-southeast-2"],
    "jp.": ["ap-northeast-1", "ap-northeast-3"],
    "global.": ["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"],
}
# bedrock-runtime operations: path suffix -> (operation, IAM action AWS authorizes it as)
OPERATIONS = {
    "invoke": ("InvokeModel", "bedrock:InvokeModel"),
    "invoke-with-response-stream": ("InvokeModelWithResponseStream", "bedrock:InvokeModelWithResponseStream"),
    "converse": ("Converse", "bedrock:InvokeModel"),
    "converse-stream": ("ConverseStream", "bedrock:InvokeModelWithResponseStream"),
}
ERROR_TYPE_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"

_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------- namespace
class Netns:
    """A thread inside a network namespace that opens sockets and runs `ip` there for us."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise SystemExit(f"network namespace {path} does not exist")
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="bpl-netns", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def _run(self, ready: Future) -> None:
        if _libc.setns(self._fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            ready.set_exception(OSError(err, f"setns({self.path}): {os.strerror(err)}"))
            return
        ready.set_result(True)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, fut = job
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def call(self, fn: Callable[[], Any]) -> Any:
        fut: Future = Future()
        self._jobs.put((fn, fut))
        return fut.result(timeout=30)

    def ip(self, *commands: str) -> None:
        """`ip -batch` inside the namespace; -force goes on past an address already (or not) there."""
        if not commands:
            return
        subprocess.run(
            ["nsenter", f"--net={self.path}", "ip", "-force", "-batch", "-"],
            input="\n".join(commands) + "\n", text=True, capture_output=True, check=False,
        )

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)
        os.close(self._fd)


# ---------------------------------------------------------------- TLS
def ensure_tls(tls_dir: str, names: list[str]) -> dict[str, str]:
    """The rig CA (kept if tls_dir already has one) and a server certificate for `names`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(tls_dir, exist_ok=True)
    ca_pem, ca_key_pem = os.path.join(tls_dir, "ca.pem"), os.path.join(tls_dir, "ca.key")
    now = datetime.datetime.now(datetime.timezone.utc)
    if os.path.exists(ca_pem) and os.path.exists(ca_key_pem):
        ca_cert = x509.load_pem_x509_certificate(open(ca_pem, "rb").read())
        ca_key = serialization.load_pem_private_key(open(ca_key_pem, "rb").read(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bpl rig CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_pem, ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()), 0o600)
        _write(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem, key_pem = os.path.join(tls_dir, "bedrock.pem"), os.path.join(tls_dir, "bedrock.key")
    _write(key_pem, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), 0o600)
    _write(cert_pem, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM),
           0o644)
    return {"ca": ca_pem, "cert": cert_pem, "key": key_pem}


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# ---------------------------------------------------------------- security group filter
def ingress_filter(cidrs: list[ipaddress.IPv4Network]) -> bytes:
    """A classic BPF socket filter passing IPv4 packets whose source is in one of `cidrs`.

    On a listening TCP socket the kernel runs it on every incoming SYN before answering, so a
    refused source gets no SYN-ACK: its connect times out, as when a security group drops it.
    """
    ld_src = (0x20, 0, 0, (-0x100000 + 12) & 0xFFFFFFFF)  # ld [SKF_NET_OFF + 12]: IPv4 source
    insns: list[tuple[int, int, int, int]] = []
    checks = [c for c in cidrs if c.version == 4][:80]  # jump offsets are 8 bits
    for i, net in enumerate(checks):
        insns.append(ld_src)
        insns.append((0x54, 0, 0, int(net.netmask)))  # and #mask
        # jeq #net -> accept (jt), else next check; accept is the last instruction.
        remaining = 3 * (len(checks) - i - 1) + 1  # instructions between this jeq and accept
        insns.append((0x15, remaining, 0, int(net.network_address)))
    insns.append((0x06, 0, 0, 0))  # ret #0: drop
    insns.append((0x06, 0, 0, 0x40000))  # ret #262144: accept
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    n = len(program) // 8
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", n, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


# ---------------------------------------------------------------- AWS event stream
def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One application/vnd.amazon.eventstream message (string headers only)."""
    hbytes = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hbytes += struct.pack("!B", len(n)) + n + struct.pack("!BH", 7, len(v)) + v
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(hbytes))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + hbytes + payload
    return body + struct.pack("!I", binascii.crc32(body) & 0xFFFFFFFF)


def event(event_type: str, obj: Any) -> bytes:
    return event_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(obj, separators=(",", ":")).encode(),
    )


# ---------------------------------------------------------------- views of EC2 state
@dataclass
class EndpointView:
    id: str
    service: str  # short name, e.g. bedrock-runtime
    state: str
    private_dns: bool
    policy: str
    addresses: dict[str, str]  # ENI address -> AZ
    cidrs: list[ipaddress.IPv4Network]  # sources admitted on tcp/443 by its groups
    dns_names: dict[str, list[str]]  # vpce-... name -> addresses
    private_name: str | None


@dataclass
class Snapshot:
    vpc_id: str | None
    resolver: str | None
    endpoints: list[EndpointView] = field(default_factory=list)

    def by_address(self) -> dict[str, EndpointView]:
        return {a: ep for ep in self.endpoints for a in ep.addresses}


class DataPlane:
    """The resolver and the stand-in, following a Harness's EC2 state."""

    def __init__(self, harness: Any, netns: str, tls_dir: str, services: dict[str, str],
                 public_address: str = DEFAULT_PUBLIC_ADDRESS, vpc_id: str | None = None,
                 sync_seconds: float = 0.1, drop_hold_seconds: float = 30.0):
        """`services`: short service name -> private DNS name template ({region})."""
        self.h = harness
        self.services = services
        self.netns_path = netns
        self.netns: Netns | None = None  # joined once the path exists (see _follow_netns)
        self._netns_id: tuple[int, int] | None = None
        self.tls_dir = tls_dir
        self.public_address = public_address
        self.vpc_id = vpc_id  # None: the seeded cluster VPC
        self.sync_seconds = sync_seconds
        self.drop_hold_seconds = drop_hold_seconds
        self.lock = threading.Lock()
        self.overrides: dict[str, list[str] | None] = {}  # name -> addresses; None = NXDOMAIN
        self.principals: dict[str, dict[str, str]] = json.loads(json.dumps(DEFAULT_PRINCIPALS))
        self.calls: list[dict[str, Any]] = []
        self.queries: list[dict[str, Any]] = []
        self.listeners: dict[str, _HttpsListener] = {}
        self.dns: tuple[str, list[DNSServer]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        region = harness.region
        names = []
        for template in services.values():
            private = template.format(region=region)
            names += [private, f"*.{private.split('.')[0]}.{region}.vpce.amazonaws.com"]
        self.tls = ensure_tls(tls_dir, names)
        self.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_ctx.load_cert_chain(self.tls["cert"], self.tls["key"])
        self.ssl_ctx.set_alpn_protocols(["http/1.1"])
        self._owned_addresses: set[str] = set()
        self._sync_lock = threading.Lock()
        self._synced_changes: int | None = None  # the harness's `changes` at the last snapshot
        # The latest snapshot: (harness `changes` read before it, when it began, the snapshot).
        self._snap: tuple[int | None, float, Snapshot] | None = None
        self._snap_lock = threading.Lock()
        self._synced_netns: tuple[int, int] | None = None
        self.acceptor = _Acceptor()

    # -------------------------------------------------------- lifecycle
    def start(self) -> "DataPlane":
        if not os.path.exists(self.netns_path):
            LOG.warning("network namespace %s does not exist yet; serving once it does", self.netns_path)
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="bpl-dataplane", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._sync_lock:
            self._detach(remove_addresses=True)
        self.acceptor.close()

    def _follow_netns(self) -> bool:
        """Join the namespace when its path appears, and again if it is replaced (the rig's node
        namespace is recreated by `rig down`/`up` while the emulator may keep running)."""
        try:
            st = os.stat(self.netns_path)
            ident = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        if ident == self._netns_id and self.netns is not None:
            return True
        if self.netns is not None:
            LOG.info("network namespace %s replaced or gone; leaving the old one", self.netns_path)
            self._detach(remove_addresses=False)
        if ident is None:
            return False
        self.netns = Netns(self.netns_path)
        self._netns_id = ident
        self.netns.ip("link set lo up")
        self._add_address(self.public_address)
        self.listeners[self.public_address] = self._listen(self.public_address, None)
        LOG.info("serving in network namespace %s", self.netns_path)
        return True

    def _detach(self, remove_addresses: bool) -> None:
        for address in list(self.listeners):
            self._unlisten(address)
        self._stop_dns(remove_address=remove_addresses)
        if self.netns is not None:
            if remove_addresses:
                self.netns.ip(*[f"addr del {a}/32 dev lo" for a in sorted(self._owned_addresses)])
            self.netns.close()
        self._owned_addresses.clear()
        self.netns, self._netns_id = None, None

    def _loop(self) -> None:
        while not self._stop.wait(self.sync_seconds):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep serving; the next sync retries
                LOG.exception("data plane sync failed")

    def _add_address(self, address: str) -> None:
        assert self.netns is not None
        self.netns.ip(f"addr replace {address}/32 dev lo")
        self._owned_addresses.add(address)

    def _del_address(self, address: str) -> None:
        assert self.netns is not None
        self.netns.ip(f"addr del {address}/32 dev lo")
        self._owned_addresses.discard(address)

    # -------------------------------------------------------- EC2 state
    def snapshot(self) -> Snapshot:
        h = self.h
        with h.lock:
            h.tick()
            be = h._backend(h.region)
            vpc_id = self.vpc_id or (h.seed or {}).get("vpc_id")
            vpc = be.vpcs.get(vpc_id) if vpc_id else None
            if vpc is None:
                return Snapshot(None, None)
            net = ipaddress.ip_network(vpc.cidr_block)
            snap = Snapshot(vpc.id, str(net.network_address + 2))
            for ep in be.vpc_end_points.values():
                if ep.vpc_id != vpc.id or (ep.vpc_endpoint_type or "").lower() != "interface":
                    continue
                if ep.state == "deleted":
                    continue
                snap.endpoints.append(self._view(be, ep))
            return snap

    def current(self) -> Snapshot:
        """The EC2 state as it is now, shared: a snapshot begun after this call was made (by a
        concurrent caller), or the latest one if nothing changed since, else a new one. A walk of
        every endpoint under the harness lock is O(endpoints): with a thousand endpoints a snapshot
        per DNS query starved the EC2 API (every reconcile's path check resolves names)."""
        asked = time.monotonic()
        with self._snap_lock:
            cached = self._snap
            if cached is not None and cached[1] >= asked:
                return cached[2]
            h = self.h
            with h.lock:
                h.tick()
                changes = getattr(h, "changes", None)
            if cached is not None and changes is not None and cached[0] == changes:
                return cached[2]
            started = time.monotonic()
            snap = self.snapshot()
            self._snap = (changes, started, snap)
            return snap

    def _view(self, be: Any, ep: Any) -> EndpointView:
        addresses: dict[str, str] = {}
        for eni_id in ep.network_interface_ids:
            eni = be.enis.get(eni_id)
            if eni is not None and eni.private_ip_address:
                addresses[eni.private_ip_address] = eni.subnet.availability_zone
        cidrs: list[ipaddress.IPv4Network] = []
        for gid in ep.security_group_ids:
            group = be.get_security_group_from_id(gid)
            for rule in getattr(group, "ingress_rules", []) if group else []:
                if not _rule_admits_443(rule):
                    continue
                cidr = (rule.ip_range or {}).get("CidrIp")
                if cidr:
                    cidrs.append(ipaddress.ip_network(cidr, strict=False))
        short = ep.service_name.split(".")[-1]
        names: dict[str, list[str]] = {}
        private_name = None
        for entry in getattr(ep, "dns_entries", None) or []:
            name = entry["DnsName"].lower()
            if ".vpce.amazonaws.com" in name:
                zone = next((az for az in set(addresses.values()) if name.split(".")[0].endswith(f"-{az}")), None)
                names[name] = sorted(a for a, az in addresses.items() if zone is None or az == zone)
            else:
                private_name = name
        return EndpointView(
            id=ep.id, service=short, state=ep.state, private_dns=_truthy(ep.private_dns_enabled),
            policy=ep.policy_document, addresses=addresses, cidrs=cidrs, dns_names=names,
            private_name=private_name,
        )

    def sync(self) -> None:
        """Listeners and addresses to match the ENIs; filters to match state and groups."""
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        if not self._follow_netns():
            return
        # The snapshot walks every endpoint under the harness lock (which every EC2 call needs):
        # with a thousand endpoints, ten walks a second would slow the emulator down. Take one
        # only when the EC2 state may have moved since the last (calls, clock, control API).
        h = self.h
        with h.lock:
            h.tick()
            changes = getattr(h, "changes", None)
        if changes is not None and changes == self._synced_changes and self._synced_netns == self._netns_id:
            return
        snap = self.current()
        self._synced_changes, self._synced_netns = changes, self._netns_id
        self._sync_dns(snap.resolver)
        wanted = snap.by_address()
        for address in [a for a in self.listeners if a != self.public_address and a not in wanted]:
            self._unlisten(address)
            self._del_address(address)
        for address, ep in wanted.items():
            listener = self.listeners.get(address)
            if listener is None:
                self._add_address(address)
                listener = self.listeners[address] = self._listen(address, ep.id)
            listener.apply(ep.cidrs if ep.state == "available" else [])

    def _sync_dns(self, resolver: str | None) -> None:
        if self.dns and self.dns[0] == resolver:
            return
        self._stop_dns()
        if resolver is None:
            return
        self._add_address(resolver)
        assert self.netns is not None
        servers = self.netns.call(lambda: [
            DNSServer(_Resolver(self), port=DNS_PORT, address=resolver, tcp=tcp,
                      logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
            for tcp in (False, True)
        ])
        for s in servers:
            s.start_thread()
        self.dns = (resolver, servers)

    def _stop_dns(self, remove_address: bool = True) -> None:
        if self.dns:
            for s in self.dns[1]:
                s.server.shutdown()
                s.server.server_close()
            if remove_address:
                self._del_address(self.dns[0])
            self.dns = None

    def _listen(self, address: str, endpoint_id: str | None) -> "_HttpsListener":
        assert self.netns is not None
        listener = self.netns.call(lambda: _HttpsListener(self, address, endpoint_id))
        self.acceptor.add(listener)
        return listener

    def _unlisten(self, address: str) -> None:
        listener = self.listeners.pop(address)
        self.acceptor.remove(listener)
        listener.close()

    # -------------------------------------------------------- DNS answers
    def lookup(self, name: str) -> list[str] | None:
        """Addresses for a name (None: NXDOMAIN), as the VPC's resolver answers now."""
        name = name.rstrip(".").lower()
        with self.lock:
            if name in self.overrides:
                o = self.overrides[name]
                return None if o is None else list(o)
        snap = self.current()
        region = self.h.region
        private_names = {t.format(region=region): s for s, t in self.services.items()}
        if name in private_names:
            for ep in snap.endpoints:
                if ep.private_name == name and ep.private_dns and ep.state == "available":
                    return sorted(ep.addresses)
            return [self.public_address]
        for ep in snap.endpoints:
            if name in ep.dns_names:
                return ep.dns_names[name]
        return None

    def record_query(self, client: str, name: str, qtype: str, answer: list[str] | None) -> None:
        with self.lock:
            self.queries.append({"time": time.time(), "client": client, "name": name, "type": qtype,
                                 "answer": answer if answer is not None else "NXDOMAIN"})
            del self.queries[:-5000]

    # -------------------------------------------------------- Bedrock calls
    def admits(self, address: str, source: str) -> bool:
        if address == self.public_address:
            return True
        ep = self.current().by_address().get(address)
        if ep is None or ep.state != "available":
            return False
        src = ipaddress.ip_address(source)
        return any(src in c for c in ep.cidrs)

    def serve(self, address: str, source: str, method: str, path: str, headers: Any, body: bytes
              ) -> tuple[int, dict[str, str], bytes]:
        rec: dict[str, Any] = {"time": time.time(), "address": address, "source": source,
                               "host": headers.get("Host"), "path": path}
        status, out_headers, out = self._serve(address, method, path, headers, body, rec)
        rec["status"] = status
        with self.lock:
            rec["seq"] = len(self.calls) + 1
            self.calls.append(rec)
        LOG.info("bedrock %s", json.dumps(rec, sort_keys=True))
        return status, out_headers, out

    def _serve(self, address: str, method: str, path: str, headers: Any, body: bytes,
               rec: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        ep = None
        if address == self.public_address:
            rec["endpoint"], rec["path_kind"] = "public", "public"
        else:
            snap = self.current()
            ep = snap.by_address().get(address)
            rec["endpoint"] = ep.id if ep else None
            rec["path_kind"] = "private"
            rec["vpc_id"] = snap.vpc_id
        m = re.fullmatch(r"/model/([^/]+)/([a-z-]+)", path.split("?")[0])
        op = OPERATIONS.get(m.group(2)) if m and method == "POST" else None
        if ep is not None and ep.service != "bedrock-runtime":
            op = None  # another Bedrock service's endpoint: the runtime API is not there
        if op is None:
            rec.update(decision="rejected", reason="unknown operation")
            return _error(404, "UnknownOperationException", "Unknown operation")
        operation, action = op
        model = unquote(m.group(1))  # type: ignore[union-attr]
        rec.update(operation=operation, action=action, model=model)
        key = _access_key(headers.get("Authorization", ""))
        if key is None:
            rec.update(decision="rejected", reason="unsigned")
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        with self.lock:
            who = self.principals.get(key)
        rec["access_key"] = key
        if who is None:
            rec.update(decision="rejected", reason="unknown access key")
            return _error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        principal = who["arn"]
        rec["principal"] = principal
        account = principal.split(":")[4]
        resources = model_resources(model, self.h.region, account)
        rec["resources"] = resources
        if ep is not None:
            context = {"aws:PrincipalArn": _role_of(principal), "aws:PrincipalAccount": account,
                       "aws:SourceVpce": ep.id, "aws:SourceVpc": rec.get("vpc_id") or ""}
            if who.get("org_id"):
                context["aws:PrincipalOrgID"] = who["org_id"]
            try:
                decision, resource = endpoint_policy.evaluate_all(ep.policy, action, resources, principal, context)
            except endpoint_policy.PolicyError as e:
                decision, resource = endpoint_policy.Decision(endpoint_policy.IMPLICIT_DENY), resources[0]
                rec["policy_error"] = str(e)
            rec["policy_statement"] = decision.statement
            if not decision.allowed:
                msg = endpoint_policy.denial_message(principal, action, resource, decision)
                rec.update(decision="denied", reason=msg)
                return _error(403, "AccessDeniedException", msg)
        rec["decision"] = "allowed"
        where = f"private path through {ep.id} at {address}" if ep else f"public path at {address}"
        try:
            return canned_answer(operation, model, body, where)
        except ValueError as e:
            rec.update(decision="rejected", reason=str(e))
            return _error(400, "ValidationException", str(e))

    # -------------------------------------------------------- control API
    def route(self, method: str, route: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        if route == "dataplane" and method == "GET":
            snap = self.current()
            return 200, {
                "netns": self.netns_path, "attached": self.netns is not None, "vpc_id": snap.vpc_id, "resolver": snap.resolver,
                "public_address": self.public_address, "ca_file": self.tls["ca"],
                "listeners": [{"address": a, "endpoint": l.endpoint_id, "admitted": ["0.0.0.0/0"] if l.endpoint_id is None else [str(c) for c in l.cidrs or []]}
                              for a, l in sorted(self.listeners.items())],
            }
        if route == "dns/overrides":
            if method == "GET":
                with self.lock:
                    return 200, {"overrides": dict(self.overrides)}
            if method == "POST":
                name = body.get("name")
                if not isinstance(name, str) or not name:
                    return 400, {"error": "name is required"}
                if body.get("nxdomain"):
                    value = None
                else:
                    addrs = body.get("addresses")
                    if not isinstance(addrs, list) or not addrs:
                        return 400, {"error": "give addresses (a non-empty list) or nxdomain: true"}
                    try:
                        value = [str(ipaddress.IPv4Address(a)) for a in addrs]
                    except ValueError as e:
                        return 400, {"error": str(e)}
                with self.lock:
                    self.overrides[name.rstrip(".").lower()] = value
                return 200, {"name": name.rstrip(".").lower(), "addresses": value}
            if method == "DELETE":
                with self.lock:
                    if body.get("name"):
                        self.overrides.pop(str(body["name"]).rstrip(".").lower(), None)
                    else:
                        self.overrides = {}
                return 200, {"ok": True}
        if route == "dns/resolve" and method == "POST":
            name = str(body.get("name") or "")
            answer = self.lookup(name)
            return 200, {"name": name, "addresses": answer, "nxdomain": answer is None}
        if route == "dns/queries":
            with self.lock:
                if method == "GET":
                    return 200, {"queries": list(self.queries)}
                if method == "DELETE":
                    self.queries = []
                    return 200, {"ok": True}
        if route == "bedrock/calls":
            with self.lock:
                if method == "GET":
                    return 200, {"calls": list(self.calls)}
                if method == "DELETE":
                    self.calls = []
                    return 200, {"ok": True}
        if route == "bedrock/principals":
            if method == "GET":
                with self.lock:
                    return 200, {"principals": dict(self.principals)}
            if method == "POST":
                key, arn = body.get("access_key"), body.get("arn")
                if not isinstance(key, str) or not key or not isinstance(arn, str) or not arn.startswith("arn:"):
                    return 400, {"error": "give access_key and arn (arn:aws:iam::ACCOUNT:user/NAME or role/NAME)"}
                entry = {"arn": arn}
                if body.get("org_id"):
                    entry["org_id"] = str(body["org_id"])
                with self.lock:
                    self.principals[key] = entry
                return 200, {"access_key": key, **entry}
            if method == "DELETE":
                with self.lock:
                    if body.get("access_key"):
                        self.principals.pop(str(body["access_key"]), None)
                    else:
                        self.principals = json.loads(json.dumps(DEFAULT_PRINCIPALS))
                return 200, {"ok": True}
        return None

    def reset(self) -> None:
        with self.lock:
            self.overrides, self.calls, self.queries = {}, [], []
            self.principals = json.loads(json.dumps(DEFAULT_PRINCIPALS))


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def _rule_admits_443(rule: Any) -> bool:
    if getattr(rule, "is_egress", False):
        return False
    proto = rule.ip_protocol
    if proto == "-1":
        return True
    if proto != "tcp":
        return False
    return rule.from_port is not None and rule.from_port <= HTTPS_PORT <= rule.to_port


def _access_key(auth: str) -> str | None:
    m = re.search(r"Credential=([^/,\s]+)/", auth or "")
    return m.group(1) if m else None


def _role_of(principal: str) -> str:
    """aws:PrincipalArn of an assumed-role session is the role's ARN."""
    m = re.match(r"^arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/", principal)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else principal


def model_resources(model: str, region: str, account: str) -> list[str]:
    """What AWS authorizes a call on `model` against: the model, or an inference profile and
    every foundation model it routes to."""
    if model.startswith("arn:"):
        m = re.match(r"^arn:([^:]+):bedrock:([^:]*):(\d*):inference-profile/(.+)$", model)
        if not m:
            return [model]
        partition, profile = m.group(1), m.group(4)
    else:
        partition, profile = "aws", model
    prefix = next((p for p in PROFILE_REGIONS if profile.startswith(p)), None)
    if prefix is None:
        return [f"arn:aws:bedrock:{region}::foundation-model/{model}"]
    base = profile[len(prefix):]
    profile_arn = model if model.startswith("arn:") else f"arn:{partition}:bedrock:{region}:{account}:inference-profile/{model}"
    return [profile_arn] + [f"arn:{partition}:bedrock:{r}::foundation-model/{base}" for r in PROFILE_REGIONS[prefix]]


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code + ERROR_TYPE_NS}, json.dumps(
        {"message": message}).encode()


def canned_answer(operation: str, model: str, body: bytes, where: str) -> tuple[int, dict[str, str], bytes]:
    """What the model says, in AWS's shapes for each operation."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        raise ValueError("Malformed input request, please reformat your input and try again.")
    if not isinstance(request, dict):
        raise ValueError("Malformed input request, please reformat your input and try again.")
    if operation in ("Converse", "ConverseStream") and not request.get("messages"):
        raise ValueError("A conversation must start with a user message. Try again with a conversation that "
                         "starts with a user message.")
    text = f"Hello from the Bedrock stand-in ({where})."
    words = text.split(" ")
    in_tokens, out_tokens = max(1, len(body) // 4), len(words)
    usage = {"inputTokens": in_tokens, "outputTokens": out_tokens, "totalTokens": in_tokens + out_tokens}
    json_type = {"Content-Type": "application/json"}
    stream_type = {"Content-Type": "application/vnd.amazon.eventstream"}
    if operation == "Converse":
        return 200, json_type, json.dumps({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 12},
        }).encode()
    if operation == "ConverseStream":
        events = [event("messageStart", {"role": "assistant"})]
        events += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w + " "}}) for w in words]
        events += [event("contentBlockStop", {"contentBlockIndex": 0}),
                   event("messageStop", {"stopReason": "end_turn"}),
                   event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}})]
        return 200, stream_type, b"".join(events)
    counts = {"X-Amzn-Bedrock-Input-Token-Count": str(in_tokens), "X-Amzn-Bedrock-Output-Token-Count": str(out_tokens)}
    anthropic = "anthropic." in model
    if operation == "InvokeModel":
        if anthropic:
            answer = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
                      "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                      "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens}}
        else:
            answer = {"inputTextTokenCount": in_tokens,
                      "results": [{"tokenCount": out_tokens, "outputText": text, "completionReason": "FINISH"}]}
        return 200, {**json_type, **counts}, json.dumps(answer).encode()
    # InvokeModelWithResponseStream: each chunk's `bytes` is the model's own streaming JSON.
    if anthropic:
        parts = [{"type": "message_start", "message": {"role": "assistant", "model": model, "content": []}},
                 {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
        parts += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w + " "}}
                  for w in words]
        parts += [{"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": out_tokens}},
                  {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                      "inputTokenCount": in_tokens, "outputTokenCount": out_tokens}}]
    else:
        parts = [{"outputText": w + " ", "index": 0, "completionReason": None} for w in words]
        parts[-1]["completionReason"] = "FINISH"
    chunks = [event("chunk", {"bytes": base64.b64encode(json.dumps(p).encode()).decode()}) for p in parts]
    return 200, stream_type, b"".join(chunks)


# ---------------------------------------------------------------- servers
class _Resolver(BaseResolver):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        answer = self.plane.lookup(qname)
        self.plane.record_query(handler.client_address[0], qname.rstrip(".").lower(), qtype, answer)
        if answer is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype in ("A", "ANY"):
            for address in answer:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=5))
        return reply


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_HttpsListener"  # what BaseRequestHandler calls the server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._answer("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, out = self.server.plane.serve(
            self.server.address, self.client_address[0], method, self.path, self.headers, body)
        self.send_response(status)
        headers = {**headers, "x-amzn-RequestId": str(uuid.uuid4()), "Content-Length": str(len(out))}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Acceptor:
    """One thread accepting on every listener (thousands of ENIs must not mean thousands of
    threads); each connection is served by a thread of its own."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="bpl-https-accept", daemon=True)
        self.thread.start()

    def add(self, listener: "_HttpsListener") -> None:
        with self.lock:
            self.selector.register(listener.sock, selectors.EVENT_READ, listener)
        self._wake_w.send(b"x")

    def remove(self, listener: "_HttpsListener") -> None:
        with self.lock:
            try:
                self.selector.unregister(listener.sock)
            except (KeyError, ValueError):
                pass
        self._wake_w.send(b"x")

    def close(self) -> None:
        self._closed = True
        self._wake_w.send(b"x")
        self.thread.join(timeout=5)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    continue
                listener = key.data
                try:
                    conn, peer = listener.sock.accept()
                except (BlockingIOError, OSError):
                    continue
                threading.Thread(target=listener.serve_connection, args=(conn, peer), daemon=True).start()


class _HttpsListener:
    """A listening socket on address:443 (created inside the namespace) and its ingress filter."""

    def __init__(self, plane: DataPlane, address: str, endpoint_id: str | None):
        self.plane, self.address, self.endpoint_id = plane, address, endpoint_id
        self.cidrs: list[ipaddress.IPv4Network] | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if endpoint_id is not None:
            self.apply([])  # nothing admitted until the first sync says otherwise
        self.sock.bind((address, HTTPS_PORT))
        self.sock.listen(128)
        self.sock.setblocking(False)

    def apply(self, cidrs: list[ipaddress.IPv4Network]) -> None:
        if cidrs != self.cidrs:
            attach_filter(self.sock, ingress_filter(cidrs))
            self.cidrs = list(cidrs)

    def serve_connection(self, conn: socket.socket, peer: Any) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(30)
            if not self.plane.admits(self.address, peer[0]):
                # Only reached if a SYN slipped past the filter while it was being replaced.
                time.sleep(self.plane.drop_hold_seconds)
                return
            try:
                tls = self.plane.ssl_ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
            _Handler(tls, peer, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()
