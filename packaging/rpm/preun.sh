# driftguard %preun ($1: 0 = erase, >= 1 = upgrade).
# On erase: stop and disable the agent, then unload enforcement while /usr/bin/driftguard still
# exists, so uninstalling leaves no pinned programs or maps behind. On upgrade: nothing
# (enforcement stays pinned, %post of the new version restarts the agent).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop driftguard.service >/dev/null 2>&1 || :
    fi
    systemctl disable driftguard.service >/dev/null 2>&1 || :
    if [ -x /usr/bin/driftguard ]; then
        /usr/bin/driftguard unload || echo "driftguard %preun: 'driftguard unload' failed; removing /sys/fs/bpf/driftguard" >&2
    fi
    # Removing the pins on bpffs detaches the links and frees programs and maps.
    rm -rf /sys/fs/bpf/driftguard
fi
exit 0
