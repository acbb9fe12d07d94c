#!/usr/bin/env python3
"""Joins the rig's node network namespace to the host's loopback services, without any host address.

  rig-netns-proxy.py --netns /run/netns/NAME --forward NODE_IP:PORT=127.0.0.1:PORT ... --egress-uds PATH

* --forward: a listening socket created inside the node namespace (so pods and the kubelet reach
  NODE_IP:PORT) whose connections are relayed to a loopback address of the host namespace
  (kube-apiserver, the EC2 emulator). A socket keeps the namespace it was created in, so one process
  holds both sides.
* --egress-uds: kube-apiserver's egress selector ("cluster" traffic: kubelet logs/exec, proxy to pods
  and Services) speaks HTTP CONNECT over this Unix socket; the target is dialled from inside the node
  namespace. The host namespace never gets a route or an address outside 127.0.0.0/8.
"""

import argparse
import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
HOST_NS = os.open("/proc/self/ns/net", os.O_RDONLY)
NODE_NS = -1


def setns(fd: int) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def node_socket(kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in the node namespace (the event loop is single-threaded)."""
    setns(NODE_NS)
    try:
        return socket.socket(socket.AF_INET, kind)
    finally:
        setns(HOST_NS)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def splice(r1, w1, r2, w2) -> None:
    try:
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    finally:
        for w in (w1, w2):
            w.close()


def forward_handler(host: str, port: int):
    async def handle(reader, writer):
        try:
            r2, w2 = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await splice(reader, writer, r2, w2)

    return handle


async def egress(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP CONNECT host:port -> a connection made from the node namespace."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) < 2 or line[0] != "CONNECT":
            raise ValueError(f"not a CONNECT request: {line}")
        host, _, port = line[1].rpartition(":")
        # the apiserver's own loopback (e.g. a webhook on 127.0.0.1) stays on the host
        s = socket.socket() if host.startswith("127.") or host == "localhost" else node_socket()
        s.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (host.strip("[]"), int(port))), 10)
        r2, w2 = await asyncio.open_connection(sock=s)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        try:
            writer.write(f"HTTP/1.1 503 Service Unavailable\r\n\r\n{e}\n".encode())
            await writer.drain()
        except OSError:
            pass
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await splice(reader, writer, r2, w2)


async def main() -> None:
    global NODE_NS
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns", required=True)
    ap.add_argument("--forward", action="append", default=[], help="NODE_IP:PORT=127.0.0.1:PORT")
    ap.add_argument("--egress-uds")
    a = ap.parse_args()
    NODE_NS = os.open(a.netns, os.O_RDONLY)
    servers = []
    for spec in a.forward:
        listen, target = spec.split("=")
        lh, lp = listen.rsplit(":", 1)
        th, tp = target.rsplit(":", 1)
        if not th.startswith("127."):
            sys.exit(f"forward target {target} is not a loopback address")
        s = node_socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((lh, int(lp)))
        s.listen(128)
        servers.append(await asyncio.start_server(forward_handler(th, int(tp)), sock=s))
        print(f"forward {listen} (node netns) -> {target} (host)", flush=True)
    if a.egress_uds:
        try:
            os.unlink(a.egress_uds)
        except FileNotFoundError:
            pass
        servers.append(await asyncio.start_unix_server(egress, path=a.egress_uds))
        os.chmod(a.egress_uds, 0o600)
        print(f"egress CONNECT proxy on {a.egress_uds} -> node netns", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
