#!/usr/bin/env python3
"""Write a directory as a one-layer OCI image archive, reproducibly (packaging/image/build.sh).

    oci.py --rootfs DIR --out FILE.tar --name REF --version V --epoch SECONDS

The layer is a tar of DIR with entries sorted by path, every mtime = --epoch, uid/gid 0 and no
user/group names, compressed with gzip without a timestamp. The archive is an OCI image layout
(oci-layout, index.json, blobs/sha256/...) in a tar written the same way; index.json names the
image with `io.containerd.image.name` (ctr import) and `org.opencontainers.image.ref.name` (the
tag; skopeo, podman). Prints the manifest digest.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import tarfile


def normalize(ti: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    ti.mtime = epoch
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def layer_tar(rootfs: str, epoch: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        paths = []
        for d, dirs, files in os.walk(rootfs):
            for n in dirs + files:
                paths.append(os.path.relpath(os.path.join(d, n), rootfs))
        for rel in sorted(paths):
            full = os.path.join(rootfs, rel)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                ti = tar.gettarinfo(full, arcname=rel)
                tar.addfile(normalize(ti, epoch))
            elif stat.S_ISREG(st.st_mode):
                ti = tar.gettarinfo(full, arcname=rel)
                with open(full, "rb") as f:
                    tar.addfile(normalize(ti, epoch), f)
            else:
                raise SystemExit(f"oci.py: {full}: not a file, directory or symlink")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--epoch", type=int, default=0)
    a = ap.parse_args()

    blobs = {}

    def put(data: bytes) -> tuple[str, int]:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d, len(data)

    def js(obj) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    raw = layer_tar(a.rootfs, a.epoch)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=6, mtime=0, filename="") as g:
        g.write(raw)
    layer_digest, layer_size = put(gz.getvalue())

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    created = __import__("datetime").datetime.fromtimestamp(a.epoch, __import__("datetime").timezone.utc)
    labels = {
        "org.opencontainers.image.title": "driftguard",
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.licenses": "Apache-2.0 AND GPL-2.0-only",
        "org.opencontainers.image.description": "driftguard agent and OCI hook (container drift prevention)",
    }
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/usr/bin/driftguard"],
            "Cmd": ["--config", "/etc/driftguard/config.toml", "run"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "created_by": "packaging/image/build.sh"}],
    }
    config_digest, config_size = put(js(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        "annotations": labels,
    }
    manifest_digest, manifest_size = put(js(manifest))
    tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag},
        }],
    }

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, data: bytes, mode: int = 0o644, kind=tarfile.REGTYPE) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = mode
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(normalize(ti, a.epoch), io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("blobs", b"", 0o755, tarfile.DIRTYPE)
        add("blobs/sha256", b"", 0o755, tarfile.DIRTYPE)
        for d in sorted(blobs):
            add("blobs/sha256/" + d.split(":", 1)[1], blobs[d])
        add("index.json", js(index))
        add("oci-layout", js({"imageLayoutVersion": "1.0.0"}))
    os.replace(tmp, a.out)
    print(manifest_digest)


if __name__ == "__main__":
    main()
