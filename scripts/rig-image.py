#!/usr/bin/env python3
"""Writes a single-layer image as a docker-archive tarball (what `ctr images import` reads), without a
container engine: the same shape as the Dockerfile's distroless result.

  rig-image.py --out IMG.tar --name REPO:TAG --entrypoint /bin-in-image [--cmd run] [--user 65532:65532]
               --file SRC=/path/in/image[:MODE] ... [--libs-of SRC] [--ca-certs] [--passwd] [--port 8080]

--libs-of copies the shared libraries `ldd SRC` lists (and the dynamic loader) at their own paths.
Entries have fixed owners (root) and mtime 0, so the same inputs give the same image id.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile


def ldd_libs(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


class Layer:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0, uid: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, 0
        ti.uid = ti.gid = uid
        ti.uname = ti.gname = ""
        return ti

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                last = i == len(parts)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if last else 0o755, uid=uid if last else 0))

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.mkdir(os.path.dirname(path))
        self.tar.addfile(self._info(path, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def add_file(self, src: str, path: str, mode: int | None = None) -> None:
        real = os.path.realpath(src)
        with open(real, "rb") as f:
            data = f.read()
        self.add_bytes(path, data, mode if mode is not None else (os.stat(real).st_mode & 0o777))

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--entrypoint", required=True)
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--user", default="65532:65532")
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--libs-of", action="append", default=[])
    ap.add_argument("--ca-certs", action="store_true")
    ap.add_argument("--passwd", action="store_true")
    ap.add_argument("--port", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--symlink", action="append", default=[], help="/path=target")
    a = ap.parse_args()

    layer = Layer()
    for spec in a.file:
        src, dst = spec.split("=", 1)
        mode = None
        if re.search(r":[0-7]{3,4}$", dst):
            dst, m = dst.rsplit(":", 1)
            mode = int(m, 8)
        layer.add_file(src, dst, mode)
    seen = set()
    for binary in a.libs_of:
        for lib in ldd_libs(binary):
            if lib not in seen:
                seen.add(lib)
                layer.add_file(lib, lib, 0o755)
    for spec in a.symlink:
        path, target = spec.split("=", 1)
        layer.mkdir(os.path.dirname(path))
        ti = layer._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        layer.tar.addfile(ti)
    if a.ca_certs:
        layer.add_file("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
    if a.passwd:
        layer.add_bytes("/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        layer.add_bytes("/etc/group", b"root:x:0:\nnonroot:x:65532:\n")
        layer.mkdir("/home/nonroot", 0o700, uid=65532)
    layer.mkdir("/tmp", 0o1777)
    blob = layer.close()
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()

    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {
            "User": a.user,
            "Entrypoint": [a.entrypoint],
            "Cmd": a.cmd or None,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "WorkingDir": "/",
            "ExposedPorts": {f"{p}/tcp": {} for p in a.port} or None,
            "Labels": dict(label.split("=", 1) for label in a.label) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/rig-image.py"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [a.name], "Layers": [layer_name]}]).encode()

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        for name, data in ((layer_name, blob), (cfg_name, cfg), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            out.addfile(ti, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(f"{a.name} {config['rootfs']['diff_ids'][0][:19]} {len(blob) // 1024} KiB layer -> {a.out}")


if __name__ == "__main__":
    main()
