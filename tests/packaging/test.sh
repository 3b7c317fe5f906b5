#!/usr/bin/env bash
# Packaging and deployment checks (issue 6). Run as root on Debian 12 after (or instead of)
# packaging/build.sh:
#
#     sudo tests/packaging/test.sh
#
# Builds the .deb/.rpm if they are missing or older than any of their inputs (sources, packaging
# files, release binaries), installs the .deb on THIS machine, checks it, purges it again,
# inspects the .rpm, and validates deploy/ (Kubernetes manifests, Helm chart rendered without
# helm, Prometheus rules, Grafana dashboard). Prints "ok <name>" or "FAIL <name>: why"
# per check and ends with "N passed, M failed"; exits non-zero on any failure.
#
# Environment: CARGO_TARGET_DIR (default ./target) as for packaging/build.sh;
# DRIFTGUARD_PKG_REBUILD=1 rebuilds even when packages exist.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

passed=0
failed=0
ok() { echo "ok $1${2:+ ($2)}"; passed=$((passed + 1)); }
bad() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
# check NAME CMD...: ok if CMD succeeds, else FAIL with the last line of its output.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"; fi
}
finish() {
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
    exit
}

[[ $(id -u) -eq 0 ]] || { bad root "run as root (dpkg -i / --purge)"; finish; }
ok root

PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
if ! "$PY" -c 'import yaml' 2>/dev/null; then
    echo "# installing python3-yaml" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null 2>&1; }
fi
check python3-yaml "$PY" -c 'import yaml, tomllib'

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac

# ---- expected contents ---------------------------------------------------------------------
shopt -s nullglob
oci_src=(packaging/oci/*.json)
shopt -u nullglob
hooks=()
placeholder=0
if [[ ${#oci_src[@]} -gt 0 ]]; then
    for h in "${oci_src[@]}"; do hooks+=("/usr/share/containers/oci/hooks.d/$(basename "$h")"); done
else
    # packaging/oci/ (the OCI hook descriptors) is owned by the oci-hook work and not there yet:
    # packaging/build.sh then packages an inert placeholder, expected here instead.
    placeholder=1
    hooks=(/usr/share/containers/oci/hooks.d/driftguard-placeholder.json)
fi
common=(
    /usr/bin/driftguard
    /usr/bin/driftguard-oci-hook
    /etc/driftguard/config.toml
    /usr/share/driftguard/containerd/nri-1.7.toml
    /usr/share/driftguard/containerd/nri-2.x.toml
    /usr/share/driftguard/containerd/oci-hook-1.7.toml
    /usr/share/driftguard/containerd/oci-hook-2.x.toml
    /usr/share/driftguard/containerd/base-runtime-spec.json
    /usr/share/doc/driftguard/README.md
    /usr/share/doc/driftguard/LICENSE
    /usr/share/doc/driftguard/copyright
    "${hooks[@]}"
    # Operator kit (issue 16): docs, man pages and completions generated from the CLI definition,
    # logrotate for the events file, the Grafana dashboard and the Prometheus rules.
    /usr/share/man/man1/driftguard.1
    /usr/share/man/man1/driftguard-run.1
    /usr/share/man/man1/driftguard-status.1
    /usr/share/man/man1/driftguard-check.1
    /usr/share/bash-completion/completions/driftguard
    /usr/share/fish/vendor_completions.d/driftguard.fish
    /etc/logrotate.d/driftguard
    /usr/share/driftguard/grafana/driftguard-dashboard.json
    /usr/share/driftguard/prometheus/driftguard-alerts.yaml
    /usr/share/driftguard/prometheus/driftguard-rules.yaml
)
for d in docs/*.md; do common+=("/usr/share/doc/driftguard/docs/$(basename "$d")"); done
deb_files=("${common[@]}" /lib/systemd/system/driftguard.service /usr/share/zsh/vendor-completions/_driftguard)
rpm_files=("${common[@]}" /usr/lib/systemd/system/driftguard.service /usr/share/zsh/site-functions/_driftguard)

# ---- build ---------------------------------------------------------------------------------
find_pkgs() {
    shopt -s nullglob
    debs=("$target"/debian/driftguard_*.deb)
    rpms=("$target"/generate-rpm/driftguard-*.rpm)
    shopt -u nullglob
}
# stale: prints the first package input (source, packaging file, release binary) newer than the
# oldest package found, so that a re-run never tests a package built from older sources.
stale() {
    local oldest=${debs[0]}
    [[ ${rpms[0]} -ot $oldest ]] && oldest=${rpms[0]}
    find Cargo.toml Cargo.lock build.rs src bpf nri-plugin/src nri-plugin/Cargo.toml oci-hooks/src \
        oci-hooks/Cargo.toml packaging deploy docs README.md LICENSE \
        "$target"/release/driftguard "$target"/release/driftguard-oci-hook \
        -newer "$oldest" -type f -print -quit 2>/dev/null
}
find_pkgs
newer=
if [[ ${#debs[@]} -eq 1 && ${#rpms[@]} -eq 1 ]]; then newer=$(stale); fi
if [[ ${#debs[@]} -ne 1 || ${#rpms[@]} -ne 1 || -n $newer || ${DRIFTGUARD_PKG_REBUILD:-0} == 1 ]]; then
    echo "# building packages with packaging/build.sh${newer:+ ($newer is newer than the packages)}" >&2
    rm -f "${debs[@]}" "${rpms[@]}"
    if DRIFTGUARD_PKG_PLACEHOLDER_HOOKS=$placeholder packaging/build.sh >/tmp/driftguard-pkg-build.log 2>&1; then
        ok build "packaging/build.sh"
    else
        bad build "packaging/build.sh failed, see /tmp/driftguard-pkg-build.log: $(tail -n 2 /tmp/driftguard-pkg-build.log | tr '\n' ' ')"
    fi
    find_pkgs
fi
if [[ ${#debs[@]} -eq 1 && ${#rpms[@]} -eq 1 ]]; then
    ok packages-exist "$(basename "${debs[0]}") $(basename "${rpms[0]}")"
else
    bad packages-exist "expected one .deb in $target/debian and one .rpm in $target/generate-rpm, found ${#debs[@]} and ${#rpms[@]}"
    finish
fi
deb=${debs[0]}
rpm=${rpms[0]}
if [[ $placeholder == 1 ]]; then
    ok oci-hook-descriptors "PLACEHOLDER: packaging/oci/*.json does not exist yet; expecting driftguard-placeholder.json"
else
    ok oci-hook-descriptors "${oci_src[*]}"
fi

# ---- static checks of the sources ----------------------------------------------------------
unit=packaging/systemd/driftguard.service
unit_text_check() {
    local u=$1 errs=()
    grep -qx 'ExecStart=/usr/bin/driftguard run' "$u" || errs+=("ExecStart is not '/usr/bin/driftguard run'")
    grep -qx 'Restart=always' "$u" || errs+=("no Restart=always")
    grep -qx 'StartLimitIntervalSec=0' "$u" || errs+=("no StartLimitIntervalSec=0 (restarts would stop after 5 failures)")
    grep -qx 'Type=notify' "$u" || errs+=("no Type=notify")
    grep -qx 'NotifyAccess=main' "$u" || errs+=("no NotifyAccess=main")
    grep -Eq '^WatchdogSec=[1-9]' "$u" || errs+=("no WatchdogSec=")
    grep -Eq '^After=.*containerd\.service' "$u" || errs+=("no After=containerd.service")
    grep -qx 'Wants=containerd.service' "$u" || errs+=("no Wants=containerd.service")
    grep -Eq '^(Requires|BindsTo|Requisite)=.*containerd' "$u" && errs+=("hard dependency on containerd")
    grep -Eq '^ExecStop=' "$u" && errs+=("ExecStop= present (stopping must not unload)")
    grep -Eq '^KillMode=(mixed|process)$' "$u" || errs+=("KillMode is not mixed/process")
    grep -Eq '^ConditionPathIsMountPoint=' "$u" && errs+=("ConditionPathIsMountPoint= present")
    grep -Eq '^ProtectKernelTunables=(yes|true)' "$u" && errs+=("ProtectKernelTunables=yes makes /sys/fs/bpf read-only")
    grep -Eq '^ProtectSystem=strict' "$u" && errs+=("ProtectSystem=strict")
    grep -Eq '^PrivateUsers=(yes|true)' "$u" && errs+=("PrivateUsers=yes")
    grep -Eq '^(ProtectProc=invisible|ProcSubset=pid)' "$u" && errs+=("/proc hidden")
    local caps
    caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$u")
    [[ $caps == "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN" ]] || errs+=("CapabilityBoundingSet is '$caps'")
    [[ $(sed -n 's/^AmbientCapabilities=//p' "$u") == "$caps" ]] || errs+=("AmbientCapabilities differs from the bounding set")
    for d in NoNewPrivileges=yes ProtectHome=yes PrivateTmp=yes LimitMEMLOCK=infinity RuntimeDirectory=driftguard \
        WantedBy=multi-user.target; do
        grep -qx "$d" "$u" || errs+=("no $d")
    done
    grep -Eq "^ExecStartPre=-?\+.*mount -t bpf -o mode=0700 bpf /sys/fs/bpf" "$u" || errs+=("no host-namespace bpffs mount (mode=0700) in ExecStartPre=+")
    # every CAP_ named in the bounding set is justified in a comment
    for c in $caps; do grep -Eq "^#.*${c#CAP_}" "$u" || errs+=("$c not explained in a comment"); done
    [[ ${#errs[@]} -eq 0 ]] || { printf '%s; ' "${errs[@]}"; return 1; }
}
check unit-directives unit_text_check "$unit"

scripts_syntax() {
    local s rc=0
    for s in packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm packaging/rpm/*.sh; do
        sh -n "$s" || { echo "$s has syntax errors"; rc=1; }
    done
    return $rc
}
check maintainer-scripts-syntax scripts_syntax
no_containerd_edit() {
    # postinst/%post print advice; they must never write containerd's config.
    ! grep -En '(sed -i|tee|>>?|cp|mv|install).*containerd/config\.toml|>.*/etc/containerd' "$@"
}
check postinst-leaves-containerd-config no_containerd_edit packaging/debian/postinst packaging/rpm/post.sh

check containerd-snippets "$PY" - <<'EOF'
import tomllib
for f, ver in (("packaging/containerd/nri-1.7.toml", 2), ("packaging/containerd/nri-2.x.toml", 3)):
    d = tomllib.load(open(f, "rb"))
    assert d["version"] == ver, f"{f}: version {d['version']} != {ver}"
    nri = d["plugins"]["io.containerd.nri.v1.nri"]
    assert nri["disable"] is False, f"{f}: disable is not false"
    assert nri["socket_path"] == "/var/run/nri/nri.sock", f
import json
for f, ver, cri in (("packaging/containerd/oci-hook-1.7.toml", 2, "io.containerd.grpc.v1.cri"),
                    ("packaging/containerd/oci-hook-2.x.toml", 3, "io.containerd.cri.v1.runtime")):
    d = tomllib.load(open(f, "rb"))
    assert d["version"] == ver, f"{f}: version {d['version']} != {ver}"
    rt = d["plugins"][cri]["containerd"]["runtimes"]["runc"]
    assert rt["base_runtime_spec"] == "/usr/share/driftguard/containerd/base-runtime-spec.json", f
    assert rt["pod_annotations"] == ["driftguard.dev/*"] and rt["container_annotations"] == ["driftguard.dev/*"], f
spec = json.load(open("packaging/containerd/base-runtime-spec.json"))
for stage, arg in (("createRuntime", "create-runtime"), ("poststop", "poststop")):
    h = spec["hooks"][stage]
    assert h[0]["path"] == "/usr/bin/driftguard-oci-hook" and h[0]["args"][1:] == [arg], (stage, h)
assert spec["process"] and spec["root"] and spec["linux"]["namespaces"], "base spec is not a full spec"
EOF
check license-file grep -q "Apache License" LICENSE
check bpf-license-mentioned grep -q "GPL-2.0-only" packaging/copyright packaging/doc/README.md

# ---- .deb ------------------------------------------------------------------------------------
deb_list=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
missing=()
for f in "${deb_files[@]}"; do grep -qx "$f" <<<"$deb_list" || missing+=("$f"); done
[[ ${#missing[@]} -eq 0 ]] && ok deb-contents || bad deb-contents "missing ${missing[*]}"

ctrl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctrl"
check deb-conffiles grep -qx /etc/driftguard/config.toml "$ctrl/conffiles"
check deb-conffiles-logrotate grep -qx /etc/logrotate.d/driftguard "$ctrl/conffiles"
# The man page and completions are generated from the CLI definition: they know its flags.
generated_docs_check() {
    local x errs=()
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    for f in --nri-socket --pin-dir --containerd-config; do
        # roff escapes hyphens (\-): compare without backslashes.
        cat "$x/usr/share/man/man1/driftguard.1" "$x/usr/share/man/man1/driftguard-check.1" | tr -d '\\' \
            | grep -q -- "$f" || errs+=("man pages lack $f")
        grep -q -- "$f" "$x/usr/share/bash-completion/completions/driftguard" || errs+=("bash completion lacks $f")
    done
    grep -q '^\.TH driftguard 1' "$x/usr/share/man/man1/driftguard.1" || errs+=("driftguard.1 has no .TH header")
    bash -n "$x/usr/share/bash-completion/completions/driftguard" || errs+=("bash completion has syntax errors")
    rm -rf "$x"
    [[ ${#errs[@]} -eq 0 ]] || { printf '%s; ' "${errs[@]}"; return 1; }
}
check deb-man-and-completions-from-cli generated_docs_check
logrotate_check() {
    grep -q 'copytruncate' packaging/logrotate/driftguard || { echo "no copytruncate (the agent does not reopen the file)"; return 1; }
    if ! command -v logrotate >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate >/dev/null 2>&1; }
    fi
    command -v logrotate >/dev/null || { echo "logrotate could not be installed"; return 1; }
    local st
    st=$(mktemp)
    logrotate --debug --state "$st" packaging/logrotate/driftguard
}
check logrotate-config logrotate_check
check deb-control-package grep -qx 'Package: driftguard' "$ctrl/control"
deb_scripts_check() {
    local d=$1 errs=()
    for s in postinst prerm postrm; do [[ -x $d/$s ]] || errs+=("no executable $s"); done
    grep -q 'driftguard check' "$d/postinst" || errs+=("postinst does not run driftguard check")
    grep -Eq 'deb-systemd-helper enable|systemctl enable' "$d/postinst" || errs+=("postinst does not enable the unit")
    grep -Eq 'deb-systemd-invoke stop|systemctl stop' "$d/prerm" || errs+=("prerm does not stop the service")
    grep -q '/usr/bin/driftguard unload' "$d/prerm" || errs+=("prerm does not run driftguard unload")
    grep -q 'rm -rf /sys/fs/bpf/driftguard' "$d/postrm" || errs+=("postrm does not remove the pins")
    grep -q 'rm -rf /run/driftguard' "$d/postrm" || errs+=("postrm does not remove /run/driftguard")
    grep -q 'rm -rf /etc/driftguard' "$d/postrm" || errs+=("postrm purge does not remove /etc/driftguard")
    [[ ${#errs[@]} -eq 0 ]] || { printf '%s; ' "${errs[@]}"; return 1; }
}
check deb-maintainer-scripts deb_scripts_check "$ctrl"
pkg_conf=$(mktemp -d)
dpkg-deb -x "$deb" "$pkg_conf"
check deb-config-is-packaging-config cmp "$pkg_conf/etc/driftguard/config.toml" packaging/config.toml
check deb-unit-is-packaging-unit cmp "$pkg_conf/lib/systemd/system/driftguard.service" "$unit"
rm -rf "$ctrl" "$pkg_conf"

# ---- install on this machine -----------------------------------------------------------------
pin_dir=/sys/fs/bpf/driftguard
safe=1
if [[ -d $pin_dir && -n $(ls -A "$pin_dir" 2>/dev/null) ]]; then
    safe=0
    bad install-safety "$pin_dir is in use by something else on this machine; not installing/purging (the package's removal would unload it)"
fi
if [[ $safe == 1 && -d /run/driftguard ]] && ! dpkg -s driftguard >/dev/null 2>&1; then
    safe=0
    bad install-safety "/run/driftguard exists and does not belong to the package; not installing/purging"
fi
if [[ $safe == 1 ]]; then
    if dpkg -s driftguard >/dev/null 2>&1; then
        dpkg --purge driftguard >/dev/null 2>&1 || true
    fi
    if out=$(dpkg -i "$deb" 2>&1); then
        ok dpkg-install
        printf '%s\n' "$out" | grep -q 'driftguard check' && ok postinst-prints-check || bad postinst-prints-check "postinst output has no driftguard check section"
    else
        bad dpkg-install "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
    fi
    missing=()
    for f in "${deb_files[@]}"; do [[ -e $f ]] || missing+=("$f"); done
    [[ ${#missing[@]} -eq 0 ]] && ok installed-files || bad installed-files "missing ${missing[*]}"
    check installed-binaries-executable test -x /usr/bin/driftguard -a -x /usr/bin/driftguard-oci-hook

    if command -v systemd-analyze >/dev/null; then
        if va=$(systemd-analyze verify /lib/systemd/system/driftguard.service 2>&1); then
            ok unit-verify "systemd-analyze verify"
        elif grep -q 'driftguard\.service' <<<"$va"; then
            bad unit-verify "$(grep 'driftguard\.service' <<<"$va" | head -n 3 | tr '\n' ' ')"
        else
            ok unit-verify "systemd-analyze verify could not run here ($(head -n 1 <<<"$va")); textual check unit-directives used"
        fi
    else
        ok unit-verify "systemd-analyze not installed; textual check unit-directives used"
    fi

    v=$(/usr/bin/driftguard --version 2>&1)
    [[ $v == "driftguard "* ]] && ok driftguard-version "$v" || bad driftguard-version "got '$v'"
    h=$(/usr/bin/driftguard --help 2>&1)
    missing=()
    for c in run status events check demo unload --config; do grep -q -- "$c" <<<"$h" || missing+=("$c"); done
    [[ ${#missing[@]} -eq 0 ]] && ok driftguard-help || bad driftguard-help "--help lacks ${missing[*]}"
    c=$(timeout 60 /usr/bin/driftguard check 2>&1)
    rc=$?
    if [[ $rc -eq 124 ]]; then
        bad driftguard-check "timed out"
    elif [[ -n $c ]]; then
        ok driftguard-check "exit $rc, $(wc -l <<<"$c") lines"
    else
        bad driftguard-check "printed nothing (exit $rc)"
    fi
    conff=$(dpkg-query -W -f='${Conffiles}\n' driftguard 2>&1)
    grep -q '/etc/driftguard/config.toml' <<<"$conff" && ok dpkg-conffiles || bad dpkg-conffiles "dpkg-query Conffiles: $conff"

    # Leftovers the purge must remove: a (non-pin) directory on bpffs in the pin dir, runtime state.
    if grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
        mkdir -p "$pin_dir" && ok pin-dir-simulated "mkdir $pin_dir on bpffs" || bad pin-dir-simulated "mkdir $pin_dir failed"
    else
        ok pin-dir-simulated "bpffs not mounted on /sys/fs/bpf; not simulated"
    fi
    mkdir -p /run/driftguard && echo '{}' >/run/driftguard/containers.json
    if out=$(dpkg --purge driftguard 2>&1); then ok dpkg-purge; else bad dpkg-purge "$(tail -n 3 <<<"$out" | tr '\n' ' ')"; fi
    left=()
    for f in "${deb_files[@]}" /etc/driftguard /run/driftguard "$pin_dir"; do [[ -e $f ]] && left+=("$f"); done
    [[ ${#left[@]} -eq 0 ]] && ok purge-leaves-nothing || bad purge-leaves-nothing "left behind: ${left[*]}"
    dpkg -s driftguard >/dev/null 2>&1 && bad purge-status "dpkg still knows driftguard" || ok purge-status
fi

# ---- .rpm ------------------------------------------------------------------------------------
if command -v rpm >/dev/null; then
    rpm_list=$(rpm -qlp "$rpm" 2>/dev/null)
    missing=()
    for f in "${rpm_files[@]}"; do grep -qx "$f" <<<"$rpm_list" || missing+=("$f"); done
    [[ ${#missing[@]} -eq 0 ]] && ok rpm-contents || bad rpm-contents "missing ${missing[*]}"
    info=$(rpm -qip "$rpm" 2>/dev/null)
    grep -Eq '^Name +: driftguard' <<<"$info" && grep -q 'Apache-2.0' <<<"$info" \
        && ok rpm-info "$(grep -E '^(Version|Release|Architecture)' <<<"$info" | awk '{print $NF}' | tr '\n' ' ')" \
        || bad rpm-info "$(head -n 3 <<<"$info" | tr '\n' ' ')"
    flags=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null)
    grep -Eq '^/etc/driftguard/config.toml c.*n' <<<"$flags" && ok rpm-config-noreplace || bad rpm-config-noreplace "$(grep config.toml <<<"$flags")"
    grep -Eq '^/etc/logrotate.d/driftguard c.*n' <<<"$flags" && ok rpm-logrotate-noreplace || bad rpm-logrotate-noreplace "$(grep logrotate <<<"$flags")"
    scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
    rpm_scripts_check() {
        local errs=()
        grep -q '^postinstall scriptlet' <<<"$scripts" || errs+=("no %post")
        grep -q '^preuninstall scriptlet' <<<"$scripts" || errs+=("no %preun")
        grep -q '^postuninstall scriptlet' <<<"$scripts" || errs+=("no %postun")
        grep -q 'systemctl enable driftguard.service' <<<"$scripts" || errs+=("%post does not enable")
        grep -q 'driftguard check' <<<"$scripts" || errs+=("%post does not run driftguard check")
        grep -q 'systemctl stop driftguard.service' <<<"$scripts" || errs+=("%preun does not stop")
        grep -q '/usr/bin/driftguard unload' <<<"$scripts" || errs+=("%preun does not unload")
        grep -q 'rm -rf /sys/fs/bpf/driftguard /run/driftguard' <<<"$scripts" || errs+=("%postun does not clean up")
        [[ ${#errs[@]} -eq 0 ]] || { printf '%s; ' "${errs[@]}"; return 1; }
    }
    check rpm-scripts rpm_scripts_check
else
    bad rpm-tools "rpm not installed (apt-get install rpm)"
fi

# ---- deploy/ ---------------------------------------------------------------------------------
check deploy-yaml-parses "$PY" - <<'EOF'
import glob, json, yaml
files = [f for f in glob.glob("deploy/**/*.yaml", recursive=True) if "/templates/" not in f]
assert files, "no YAML under deploy/"
for f in files:
    list(yaml.safe_load_all(open(f)))
json.load(open("deploy/grafana/driftguard-dashboard.json"))
EOF

check daemonset-fields "$PY" - <<'EOF'
import tomllib, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/daemonset.yaml")) if d]
kinds = {d["kind"]: d for d in docs}
for k in ("Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service"):
    assert k in kinds, f"no {k}"
assert kinds["Namespace"]["metadata"]["name"] == "driftguard-system"
for d in docs:
    if d["kind"] != "Namespace":
        assert d["metadata"]["namespace"] == "driftguard-system", d["kind"]
ds = kinds["DaemonSet"]
pod = ds["spec"]["template"]
spec = pod["spec"]
assert spec["hostPID"] is True, "hostPID"
assert spec["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
ann = pod["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9963", ann
[c] = spec["containers"]
assert c["image"] == "ghcr.io/driftguard/driftguard:0.1.0", c["image"]
assert "run" in c["command"], c["command"]
assert {"containerPort": 9963, "name": "metrics", "protocol": "TCP"} in c["ports"], c["ports"]
assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, c["livenessProbe"]
assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, c["readinessProbe"]
sc = c["securityContext"]
assert sc.get("privileged") is False, "expected capabilities instead of privileged"
caps = set(sc["capabilities"]["add"])
assert {"BPF", "PERFMON", "SYS_ADMIN"} <= caps, caps
assert sc["capabilities"]["drop"] == ["ALL"]
vols = {v["name"]: v for v in spec["volumes"]}
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
need = {"/sys/fs/bpf": False, "/var/run/nri": False, "/sys/kernel/security": True,
        "/sys/fs/cgroup": True, "/sys/kernel/btf": True, "/run/driftguard": False, "/var/log/driftguard": False}
for path, ro in need.items():
    assert path in mounts, f"no mount at {path}"
    m = mounts[path]
    v = vols[m["name"]]
    assert v["hostPath"]["path"] == path, (path, v)
    if ro:
        assert m.get("readOnly") is True, f"{path} should be read-only"
assert mounts["/sys/fs/bpf"].get("mountPropagation") == "HostToContainer"
cfgvol = vols[mounts["/etc/driftguard"]["name"]]
assert cfgvol["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
cfg = tomllib.loads(kinds["ConfigMap"]["data"]["config.toml"])
assert cfg["metrics"]["address"].endswith(":9963")
assert set(cfg) <= {"default_mode", "failure_policy", "nri", "bpf", "events", "metrics", "log", "cgroup", "exclusions", "rules"}, cfg
assert cfg["exclusions"] == {"kube_system": True, "own_namespace": "driftguard-system"}, cfg["exclusions"]
# Events in a rotated file on the node, not on stdout (kubectl logs shows the agent's log only).
assert cfg["events"] == {"stdout": False, "file": "/var/log/driftguard/events.jsonl", "file_max_bytes": 52428800, "file_keep": 4}, cfg["events"]
assert vols[mounts["/var/log/driftguard"]["name"]]["hostPath"]["type"] == "DirectoryOrCreate"
svc = kinds["Service"]
assert svc["spec"]["ports"][0]["port"] == 9963
assert all(pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector"
assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
assert svc["spec"].get("publishNotReadyAddresses") is True, "unready agents must still be scraped"
# Fail-closed start: the init container installs the hook, its config and the base runtime spec
# under /opt/driftguard on the node (tests/cri.rs daemonset_node_setup_* runs the script against
# a real containerd); the agent sees the node's containerd config and /opt/driftguard for check.
[init] = spec["initContainers"]
assert init["command"] == ["/bin/sh", "/etc/driftguard/node-setup.sh"], init["command"]
assert init["image"] == c["image"], "node-setup runs the agent's image"
assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_CHROOT"]}, init["securityContext"]
imounts = {m["mountPath"]: m for m in init["volumeMounts"]}
assert vols[imounts["/host"]["name"]]["hostPath"]["path"] == "/" and imounts["/host"].get("readOnly") is True
assert vols[imounts["/host/opt/driftguard"]["name"]]["hostPath"]["path"] == "/opt/driftguard"
assert not imounts["/host/opt/driftguard"].get("readOnly"), "node-setup writes /opt/driftguard"
for path in ("/etc/containerd", "/opt/driftguard"):
    assert mounts[path].get("readOnly") is True and vols[mounts[path]["name"]]["hostPath"]["path"] == path, path
script = kinds["ConfigMap"]["data"]["node-setup.sh"]
assert script == open("deploy/kustomize/base/node-setup.sh").read(), \
    "deploy/daemonset.yaml's node-setup.sh differs from deploy/kustomize/base/node-setup.sh (run deploy/kustomize/render.sh)"
EOF

check helm-chart-files "$PY" - <<'EOF'
import glob, re, yaml
chart = yaml.safe_load(open("deploy/helm/driftguard/Chart.yaml"))
assert chart["apiVersion"] == "v2" and chart["name"] == "driftguard", chart
values = yaml.safe_load(open("deploy/helm/driftguard/values.yaml"))
for f in glob.glob("deploy/helm/driftguard/templates/*"):
    for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", open(f).read()):
        cur = values
        for p in ref.split("."):
            assert isinstance(cur, dict) and p in cur, f"{f}: .Values.{ref} not in values.yaml"
            cur = cur[p]
EOF

render=tests/packaging/render_chart.py
check helm-render-matches-daemonset "$PY" - "$render" <<'EOF'
import subprocess, sys, tomllib, yaml
out = subprocess.run([sys.executable, sys.argv[1], "deploy/helm/driftguard"], check=True,
                     capture_output=True, text=True).stdout
r = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
p = {d["kind"]: d for d in yaml.safe_load_all(open("deploy/daemonset.yaml")) if d}
for k in ("ServiceAccount", "ConfigMap", "DaemonSet", "Service"):
    assert k in r, f"chart renders no {k}"
    assert r[k]["metadata"]["name"] == p[k]["metadata"]["name"], k
    assert r[k]["metadata"]["namespace"] == "driftguard-system", k
assert tomllib.loads(r["ConfigMap"]["data"]["config.toml"]) == tomllib.loads(p["ConfigMap"]["data"]["config.toml"]), "config.toml differs"
assert r["ConfigMap"]["data"]["node-setup.sh"] == p["ConfigMap"]["data"]["node-setup.sh"], "node-setup.sh differs"
rs, ps = r["DaemonSet"]["spec"], p["DaemonSet"]["spec"]
assert rs["selector"] == ps["selector"], "selector"
rt, pt = rs["template"]["spec"], ps["template"]["spec"]
ann = dict(rs["template"]["metadata"]["annotations"]); ann.pop("checksum/config")
assert ann == ps["template"]["metadata"]["annotations"], "pod annotations"
for k in set(rt) | set(pt):
    assert rt.get(k) == pt.get(k), f"pod spec field {k} differs:\n chart: {rt.get(k)}\n plain: {pt.get(k)}"
assert r["Service"]["spec"] == p["Service"]["spec"], "Service spec"
assert r["ServiceAccount"].get("automountServiceAccountToken") == p["ServiceAccount"].get("automountServiceAccountToken")
EOF

check helm-render-options "$PY" - "$render" <<'EOF'
import subprocess, sys, yaml
out = subprocess.run([sys.executable, sys.argv[1], "deploy/helm/driftguard",
                      "--set", "securityContext.privileged=true", "--set", "prometheusRule.enabled=true",
                      "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.port=9999",
                      "--set", "image.tag=9.9.9", "--set", "hostNetwork=false",
                      "--set", "config.exclusions.ownNamespace=false", "--namespace", "security",
                      "--set", 'config.policy="[[rules]]\\nname = \\"payments\\"\\nnamespaces = [\\"payments\\"]\\nmode = \\"enforce\\"\\n"'],
                     check=True, capture_output=True, text=True).stdout
r = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
import tomllib
cfg = tomllib.loads(r["ConfigMap"]["data"]["config.toml"])
assert cfg["exclusions"] == {"kube_system": True, "own_namespace": ""}, cfg["exclusions"]
assert cfg["rules"] == [{"name": "payments", "namespaces": ["payments"], "mode": "enforce"}], cfg.get("rules")
c = r["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
assert c["securityContext"]["privileged"] is True and "capabilities" not in c["securityContext"]
assert c["image"].endswith(":9.9.9") and c["ports"][0]["containerPort"] == 9999
assert "dnsPolicy" not in r["DaemonSet"]["spec"]["template"]["spec"]
assert '0.0.0.0:9999' in r["ConfigMap"]["data"]["config.toml"]
rules = yaml.safe_load(open("deploy/prometheus/driftguard-rules.yaml"))
assert r["PrometheusRule"]["spec"] == rules, "chart PrometheusRule differs from deploy/prometheus/driftguard-rules.yaml"
assert r["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"
EOF

check prometheus-alerts "$PY" - <<'EOF'
import yaml
pr = yaml.safe_load(open("deploy/prometheus/driftguard-alerts.yaml"))
assert pr["kind"] == "PrometheusRule" and pr["apiVersion"] == "monitoring.coreos.com/v1"
plain = yaml.safe_load(open("deploy/prometheus/driftguard-rules.yaml"))
chart = yaml.safe_load(open("deploy/helm/driftguard/files/driftguard-rules.yaml"))
assert pr["spec"] == plain == chart, "PrometheusRule, rules file and chart copy differ"
rules = {r["alert"]: r for g in plain["groups"] for r in g["rules"]}
need = {
    "DriftguardDenialsSpike": 'driftguard_verdicts_total{action=~"deny|kill"}',
    "DriftguardRingbufDrops": "driftguard_ringbuf_drops_total",
    "DriftguardNRIDisconnected": "driftguard_nri_connected == 0",
    "DriftguardEnforcementDegraded": 'driftguard_enforcement_path{path="tracepoint_kill"} == 1',
    "DriftguardContainersRefused": "driftguard_containers_refused_total",
}
for name, frag in need.items():
    assert name in rules, f"no alert {name}"
    assert frag in rules[name]["expr"], f"{name}: {rules[name]['expr']}"
for r in rules.values():
    assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"], r["alert"]
EOF

check grafana-dashboard "$PY" - <<'EOF'
import json
d = json.load(open("deploy/grafana/driftguard-dashboard.json"))
exprs = " ".join(t["expr"] for p in d["panels"] for t in p["targets"])
for m in ("driftguard_verdicts_total", "driftguard_containers_under_policy", "driftguard_ringbuf_drops_total",
          "driftguard_nri_reconnects_total", "driftguard_nri_handler_seconds_bucket",
          "driftguard_enforcement_path", "driftguard_nri_connected"):
    assert m in exprs, f"no panel uses {m}"
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
assert d["uid"] and d["title"]
EOF

check annotated-pod "$PY" - <<'EOF'
import re, yaml
pod = yaml.safe_load(open("deploy/examples/annotated-pod.yaml"))
ann = pod["metadata"]["annotations"]
names = {c["name"] for c in pod["spec"]["containers"]}
keys = {"mode", "allow", "deny", "drift", "fileless", "non-image", "non-overlay", "exec-volumes", "allowlist-only", "failure-policy"}
assert ann.get("driftguard.dev/mode") == "enforce", "no pod-level driftguard.dev/mode: enforce"
overrides = 0
for k, v in ann.items():
    assert k.startswith("driftguard.dev/"), k
    key, _, ctr = k[len("driftguard.dev/"):].partition(".")
    assert key in keys, f"unknown key {k}"
    if ctr:
        overrides += 1
        assert ctr in names, f"{k}: no container {ctr}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", ctr)
    if key == "mode":
        assert v in ("off", "monitor", "enforce"), v
    assert len(k.split("/", 1)[1]) <= 63, k
assert overrides, "no per-container override"
EOF

# ---- kustomize: the base is deploy/daemonset.yaml; overlays; the chart agrees -----------------
kustomize=${KUSTOMIZE:-$root/.cache/kustomize/root/usr/bin/kustomize}
[[ -x $kustomize ]] || kustomize=$(command -v kustomize || true)
renders=$(mktemp -d)
if [[ -n $kustomize ]]; then
    ok kustomize "$kustomize"
    for k in base overlays/prometheus overlays/privileged overlays/pinned overlays/kernel-before-5.11; do
        out=$renders/kustomize-${k//\//-}.yaml
        if err=$("$kustomize" build "deploy/kustomize/$k" 2>&1 >"$out"); then ok "kustomize-build-${k//\//-}"; else bad "kustomize-build-${k//\//-}" "$err"; fi
    done
    check daemonset-is-kustomize-base "$PY" - "$renders" <<'EOF'
import sys, yaml
d = sys.argv[1]
key = lambda o: (o["kind"], o["metadata"]["name"])
base = sorted((o for o in yaml.safe_load_all(open(f"{d}/kustomize-base.yaml")) if o), key=key)
plain = sorted((o for o in yaml.safe_load_all(open("deploy/daemonset.yaml")) if o), key=key)
assert base == plain, "deploy/daemonset.yaml is not the rendering of deploy/kustomize/base: run deploy/kustomize/render.sh"
EOF
    check kustomize-overlays-match-chart "$PY" - "$renders" "$render" <<'EOF'
import subprocess, sys, yaml
d, render = sys.argv[1], sys.argv[2]
def objs(f):
    return {o["kind"]: o for o in yaml.safe_load_all(open(f)) if o}
def chart(*sets):
    args = [sys.executable, render, "deploy/helm/driftguard"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return {o["kind"]: o for o in yaml.safe_load_all(out) if o}
base = objs(f"{d}/kustomize-base.yaml")
# privileged: the agent container's security context is the chart's securityContext.privileged=true
priv = objs(f"{d}/kustomize-overlays-privileged.yaml")
cpriv = chart("securityContext.privileged=true")
sc = priv["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
assert sc == cpriv["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"], sc
assert sc["privileged"] is True and "capabilities" not in sc
p, b = priv["DaemonSet"]["spec"]["template"]["spec"], base["DaemonSet"]["spec"]["template"]["spec"]
assert p["initContainers"] == b["initContainers"] and p["volumes"] == b["volumes"], "privileged overlay changed more"
# prometheus: the chart's ServiceMonitor and PrometheusRule
prom = objs(f"{d}/kustomize-overlays-prometheus.yaml")
cprom = chart("prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true")
for k in ("ServiceMonitor", "PrometheusRule"):
    assert prom[k]["spec"] == cprom[k]["spec"], f"{k} differs from the chart's"
    assert prom[k]["metadata"]["namespace"] == "driftguard-system", k
# kernel-before-5.11: SYS_RESOURCE added, as the chart's securityContext.memlock=true; the
# base and the chart's default do without it (a node lacking it in its bounding set could not
# start the agent)
old = objs(f"{d}/kustomize-overlays-kernel-before-5.11.yaml")
sc_old = old["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
cmem = chart("securityContext.memlock=true")
assert sc_old == cmem["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"], sc_old
assert sc_old["capabilities"]["add"] == ["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"], sc_old
for default in (base, chart()):
    caps = default["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    assert caps == ["BPF", "PERFMON", "SYS_ADMIN"], caps
# pinned: both containers take the image by digest
pin = objs(f"{d}/kustomize-overlays-pinned.yaml")["DaemonSet"]["spec"]["template"]["spec"]
imgs = {c["image"] for c in pin["containers"] + pin["initContainers"]}
assert len(imgs) == 1 and "@sha256:" in imgs.pop(), pin
EOF
else
    bad kustomize "no kustomize: run scripts/install-containerd.sh kustomize (or set KUSTOMIZE)"
fi
# The chart reads node-setup.sh through a symlink to the base's file: one copy.
check chart-node-setup-is-base-file test "$(readlink -f deploy/helm/driftguard/files/node-setup.sh)" = "$(readlink -f deploy/kustomize/base/node-setup.sh)"

# ---- every rendering against the Kubernetes schemas (kubernetes-validate, no network) -----------
kv=${KUBERNETES_VALIDATE:-$root/.cache/pyenv/bin/kubernetes-validate}
[[ -x $kv ]] || kv=$(command -v kubernetes-validate || true)
if [[ -n $kv ]]; then
    "$PY" "$render" deploy/helm/driftguard >"$renders/chart-default.yaml" 2>&1 || bad chart-render "$(tail -n 2 "$renders/chart-default.yaml")"
    "$PY" "$render" deploy/helm/driftguard --set securityContext.privileged=true --set prometheusRule.enabled=true \
        --set metrics.serviceMonitor.enabled=true --set hostNetwork=false >"$renders/chart-options.yaml" 2>&1 \
        || bad chart-render "$(tail -n 2 "$renders/chart-options.yaml")"
    # Strict: unknown fields are errors. prometheus-operator kinds have no schema here (counted).
    # 1.30: the oldest Kubernetes with securityContext.appArmorProfile (docs/install.md); 1.37:
    # the newest this kubernetes-validate knows.
    for f in "$renders"/*.yaml deploy/daemonset.yaml; do
        for v in 1.30 1.37; do
            n=$(basename "$f" .yaml)-$v
            if out=$("$kv" --strict -k "$v" "$f" 2>&1); then
                ok "kubernetes-validate-$n" "$(grep -c 'passed for resource' <<<"$out") objects valid, $(grep -c 'find schema' <<<"$out") without a schema"
            else
                bad "kubernetes-validate-$n" "$(grep -v -e '^$' -e 'find schema' -e 'passed for resource' <<<"$out" | head -n 3 | tr '\n' ' ')"
            fi
        done
    done
else
    bad kubernetes-validate "not installed: scripts/install-deps.sh puts it into .cache/pyenv (or set KUBERNETES_VALIDATE)"
fi
rm -rf "$renders"

# ---- the container image: reproducible, runnable -------------------------------------------------
image_check() {
    local a b d1 d2
    a=$(mktemp -d)
    d1=$(packaging/image/build.sh --bin-dir "$target/release" --out "$a/1.tar" 2>"$a/log") || { tail -n 3 "$a/log"; rm -rf "$a"; return 1; }
    d2=$(packaging/image/build.sh --bin-dir "$target/release" --out "$a/2.tar" 2>"$a/log") || { tail -n 3 "$a/log"; rm -rf "$a"; return 1; }
    b=$(cmp "$a/1.tar" "$a/2.tar" 2>&1) || { echo "two builds differ: $b ($d1 $d2)"; rm -rf "$a"; return 1; }
    [[ $d1 == "$d2" && $d1 == sha256:* ]] || { echo "digests $d1 $d2"; rm -rf "$a"; return 1; }
    tar -xOf "$a/1.tar" index.json | grep -q '"io.containerd.image.name":"ghcr.io/driftguard/driftguard:' \
        || { echo "index.json does not name the image"; rm -rf "$a"; return 1; }
    b=$(sbom_check "$a/1.tar" "$a/1.spdx.json" 2>&1) || { echo "SBOM: $b"; rm -rf "$a"; return 1; }
    echo "$d1; SBOM: $b"
    rm -rf "$a"
}

# The image's SBOM: the same inside the image and next to the archive; every crate whose sources
# the binaries name (panic locations under cargo's registry/src) is in it, with the license its
# manifest declares and Cargo.lock's checksum; its Debian packages are those of every copied file
# the image lists.
sbom_check() {
    "$PY" - "$1" "$2" "$target/release/driftguard" "$target/release/driftguard-oci-hook" <<'EOF'
import gzip, io, json, re, sys, tarfile, tomllib
archive, sidecar, bins = sys.argv[1], sys.argv[2], sys.argv[3:]
with tarfile.open(archive) as t:
    blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
    index = json.loads(t.extractfile("index.json").read())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    [layer] = manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as l:
        inside = l.extractfile("usr/share/doc/driftguard/sbom.spdx.json").read()
        libs = l.extractfile("usr/share/doc/driftguard/image-libraries.txt").read().decode()
with open(sidecar, "rb") as f:
    assert f.read() == inside, "the SBOM next to the archive differs from the one in the image"
doc = json.loads(inside)
assert doc["spdxVersion"] == "SPDX-2.3" and doc["SPDXID"] == "SPDXRef-DOCUMENT", doc["spdxVersion"]
ids = {p["SPDXID"]: p for p in doc["packages"]}
assert len(ids) == len(doc["packages"]), "SPDXIDs repeat"
[described] = [r["relatedSpdxElement"] for r in doc["relationships"] if r["relationshipType"] == "DESCRIBES"]
assert ids[described]["name"].startswith("ghcr.io/driftguard/driftguard:"), ids[described]
contained = {r["relatedSpdxElement"] for r in doc["relationships"] if r["spdxElementId"] == described and r["relationshipType"] == "CONTAINS"}
assert contained == set(ids) - {described}, "packages the image does not CONTAIN"
purls = {}
for p in doc["packages"]:
    assert p["licenseDeclared"], p["name"]
    for r in p.get("externalRefs", []):
        if r["referenceType"] == "purl":
            purls[r["referenceLocator"].split("?")[0]] = p
listed = {u for u in purls if u.startswith("pkg:cargo/")}
named = set()
for b in bins:
    with open(b, "rb") as f:
        for m in re.finditer(rb"registry/src/[^/]+/([A-Za-z0-9_-]+)-([0-9]+[.][0-9]+[.][0-9]+[A-Za-z0-9.+-]*)/", f.read()):
            named.add(f"pkg:cargo/{m[1].decode()}@{m[2].decode()}")
assert len(named) >= 20, f"only {len(named)} crates named in the binaries: {sorted(named)}"
assert named <= listed, f"crates in the binaries, not in the SBOM: {sorted(named - listed)}"
with open("Cargo.lock", "rb") as f:
    lock = {(p["name"], p["version"]): p.get("checksum") for p in tomllib.load(f)["package"]}
for u in listed:
    p = purls[u]
    want = lock[(p["name"], p["versionInfo"])]
    got = [c["checksumValue"] for c in p.get("checksums", []) if c["algorithm"] == "SHA256"]
    assert got == ([want] if want else []), f"{u}: checksum {got}, Cargo.lock {want}"
[bpf] = [purls[u] for u in listed if u.startswith("pkg:cargo/libbpf-rs@")]
assert bpf["licenseDeclared"] == "LGPL-2.1-only OR BSD-2-Clause", bpf["licenseDeclared"]
debs = {f"pkg:deb/debian/{pkg}@{ver}" for _, pkg, ver in (l.split() for l in libs.splitlines() if l and not l.startswith("#"))}
assert debs and debs == {u for u in purls if u.startswith("pkg:deb/")}, f"Debian packages {sorted(debs)}"
print(f"{len(listed)} crates ({len(named)} named in the binaries), {len(debs)} Debian packages")
EOF
}
if [[ -x $target/release/driftguard && -x $target/release/driftguard-oci-hook ]]; then
    if out=$(image_check 2>&1); then ok image-reproducible "$out"; else bad image-reproducible "$out"; fi
else
    bad image-reproducible "no release binaries in $target/release (packaging/build.sh builds them)"
fi

docs_check() {
    local f=docs/install.md errs=()
    [[ -f $f ]] || { echo "no $f"; return 1; }
    for s in "packaging/build.sh" "dpkg -i" "rpm -i" "systemctl enable --now driftguard" "driftguard check" \
        "dpkg --purge driftguard" "driftguard unload" "kubectl apply -f deploy/daemonset.yaml" \
        "helm install driftguard deploy/helm/driftguard" "deploy/grafana/driftguard-dashboard.json" \
        "kubectl apply -k deploy/kustomize/base" "packaging/image/build.sh" "deploy/kustomize/render.sh" \
        "deploy/prometheus/driftguard-alerts.yaml" 'disable = false' "version = 2" "version = 3" \
        "## Install on a node" "## Install on a cluster"; do
        grep -qF -- "$s" "$f" || errs+=("'$s'")
    done
    [[ ${#errs[@]} -eq 0 ]] || { echo "docs/install.md lacks ${errs[*]}"; return 1; }
}
check docs-install docs_check

finish
