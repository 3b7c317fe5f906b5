# driftguard %postun ($1: 0 = erase, >= 1 = upgrade). The binary is gone: plain shell cleanup.
if [ "$1" -eq 0 ]; then
    rm -rf /sys/fs/bpf/driftguard /run/driftguard
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
    fi
fi
exit 0
