# driftguard %post ($1: 1 = install, >= 2 = upgrade).
# Enables driftguard.service (and starts it under a running systemd; restarts it on upgrade).
# It does NOT touch containerd's configuration: it prints what `driftguard check` reports.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable driftguard.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start driftguard.service >/dev/null 2>&1 || :
    fi
else
    # Upgrade: pinned enforcement stays in the kernel; the new agent adopts it.
    if [ -d /run/systemd/system ]; then
        systemctl try-restart driftguard.service >/dev/null 2>&1 || :
    fi
fi
echo "driftguard: node readiness (driftguard check). The package does not change containerd's configuration:"
timeout 30 /usr/bin/driftguard check 2>&1 | sed 's/^/  /' || :
cat <<'MSG'
driftguard: containerd must have NRI enabled. Merge the section from
  /usr/share/driftguard/containerd/nri-1.7.toml  (containerd 1.7, config "version = 2": NRI is off by default)
  /usr/share/driftguard/containerd/nri-2.x.toml  (containerd 2.x, config "version = 3": NRI is on by default)
into /etc/containerd/config.toml, run "systemctl restart containerd", then "driftguard check".
See /usr/share/doc/driftguard/README.md.
MSG
exit 0
