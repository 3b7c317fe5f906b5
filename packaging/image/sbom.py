#!/usr/bin/env python3
"""The image's software bill of materials, SPDX 2.3 JSON (packaging/image/build.sh).

    sbom.py --name REF --version V --epoch SECONDS --libraries FILE --out FILE

Lists what the image is made of, for scanners (`trivy sbom`, `grype sbom:`) and audits:

- the image itself (the package the document describes), and driftguard (this checkout's
  `driftguard` and `driftguard-oci-hook`) in it;
- every Rust crate compiled into those two binaries: cargo's own answer (`cargo tree`: normal
  edges, no proc-macros, the build machine's target) for `driftguard` and
  `driftguard-oci-hook` as packaging/build.sh builds them, with its purl
  (`pkg:cargo/NAME@VERSION`), the license its manifest declares and, for crates from
  the registry, the SHA-256 of the .crate that Cargo.lock pins;
- every Debian package the image's other files were copied from, as
  /usr/share/doc/driftguard/image-libraries.txt names them (`pkg:deb/debian/NAME@VERSION`).

Deterministic: `created` is --epoch, the namespace is derived from the content, every list is
sorted, so the same checkout and build machine give the same bytes (the image stays
reproducible with the document inside it).
"""
import argparse
import datetime
import hashlib
import json
import re
import subprocess
import sys
import tomllib

ROOTS = ("driftguard", "driftguard-oci-hook")


def spdx_id(*parts: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", "-".join(parts))


def license_expr(lic) -> str:
    """A crate's `license` as an SPDX expression: the old `MIT/Apache-2.0` form means OR."""
    if not lic:
        return "NOASSERTION"
    return " OR ".join(p.strip() for p in lic.split("/"))


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("host: "):
            return line.split(None, 1)[1]
    sys.exit("sbom.py: rustc -vV names no host")


def crates(root_dir: str):
    """(name, version, license, source, checksum) of every crate linked into the binaries.

    The set is cargo's own answer for the build packaging/build.sh and build.sh make (`cargo
    build --release -p driftguard -p driftguard-oci-hook --bins`): `cargo tree` over normal
    edges, without proc-macros, for this target. Licenses and sources come from `cargo metadata`,
    checksums from Cargo.lock."""
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root_dir).stdout
    sel = []
    for r in ROOTS:
        sel += ["-p", r]
    tree = run("cargo", "tree", "--locked", "-q", *sel, "-e", "normal,no-proc-macro", "--target", host_triple(),
               "--prefix", "none", "--format", "{p}")
    linked = set()
    for line in tree.splitlines():
        f = line.split()
        if len(f) >= 2 and f[1].startswith("v"):
            linked.add((f[0], f[1][1:]))
    meta = json.loads(run("cargo", "metadata", "--locked", "--format-version", "1"))
    with open(f"{root_dir}/Cargo.lock", "rb") as f:
        lock = tomllib.load(f)
    sums = {(p["name"], p["version"]): p.get("checksum") for p in lock.get("package", [])}
    info = {(p["name"], p["version"]): p for p in meta["packages"]}
    if not set(ROOTS) <= {n for n, _ in linked}:
        sys.exit(f"sbom.py: cargo tree does not list {ROOTS}")
    out = []
    for name, version in linked:
        p = info.get((name, version))
        if p is None:
            sys.exit(f"sbom.py: {name} {version} from cargo tree is not in cargo metadata")
        out.append((name, version, license_expr(p.get("license")), p.get("source"), sums.get((name, version))))
    return sorted(out)


def debs(libraries: str):
    """(name, version) of the Debian packages image-libraries.txt names."""
    found = set()
    with open(libraries) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            _, pkg, ver = line.split()
            if pkg == "unknown":
                sys.exit(f"sbom.py: {line.strip()}: no package for a file in the image")
            found.add((pkg, ver))
    return sorted(found)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--epoch", type=int, required=True)
    ap.add_argument("--libraries", required=True)
    ap.add_argument("--arch", required=True, help="Debian architecture of the copied files (dpkg --print-architecture)")
    ap.add_argument("--root", default=".")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    image = spdx_id("Image", a.name)
    packages = [
        {
            "SPDXID": image,
            "name": a.name,
            "versionInfo": a.version,
            "primaryPackagePurpose": "CONTAINER",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }
    ]
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image}]
    for name, version, lic, source, checksum in crates(a.root):
        pid = spdx_id("Package-cargo", name, version)
        p = {
            "SPDXID": pid,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": lic,
            "copyrightText": "NOASSERTION",
            "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": f"pkg:cargo/{name}@{version}"}
            ],
        }
        if source is None:
            # this workspace: driftguard's own binaries and crates
            p["primaryPackagePurpose"] = "APPLICATION" if name in ROOTS else "LIBRARY"
        else:
            p["primaryPackagePurpose"] = "LIBRARY"
            if checksum:
                p["checksums"] = [{"algorithm": "SHA256", "checksumValue": checksum}]
        packages.append(p)
        rels.append({"spdxElementId": image, "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    for name, version in debs(a.libraries):
        pid = spdx_id("Package-deb", name, version)
        packages.append(
            {
                "SPDXID": pid,
                "name": name,
                "versionInfo": version,
                "primaryPackagePurpose": "LIBRARY",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": f"pkg:deb/debian/{name}@{version}?arch={a.arch}",
                    }
                ],
            }
        )
        rels.append({"spdxElementId": image, "relationshipType": "CONTAINS", "relatedSpdxElement": pid})

    body = {"packages": packages, "relationships": rels}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    created = datetime.datetime.fromtimestamp(a.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{a.name} image",
        "documentNamespace": f"https://driftguard.dev/spdx/image/{a.version}/{digest}",
        "creationInfo": {"created": created, "creators": ["Tool: driftguard packaging/image/sbom.py"]},
        **body,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
