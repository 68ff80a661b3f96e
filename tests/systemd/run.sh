#!/bin/bash
# tests/systemd/run.sh [--preflight]: ForgeSyte under a real systemd (`make test-systemd`).
#
# Boots a minimal Debian bookworm with systemd as PID 1 (debootstrap +
# `systemd-nspawn --boot`), installs this checkout the way the README says
# (venv + pip, offline from wheels fetched on the host) and runs
# tests/systemd/guest.sh inside: the README's systemd blocks literally, then
# the checks. One PASS/FAIL/SKIP line per check; exit 1 on any FAIL, 2 when
# the harness itself cannot run.
#
# This host's PID 1 need not be systemd: nspawn runs with --register=no
# --keep-unit, in a cgroup of its own, in a private mount namespace with a
# tmpfs on /run/systemd, on an overlay of the cached rootfs (so a run never
# changes the cache).
#
# --preflight: say in one line whether this machine can run it (root,
# namespaces, cgroups, debootstrap and a mirror or a cached rootfs); exit 0
# if so. Installs debootstrap and systemd-container with apt when missing.
#
# Env: FORGESYTE_SYSTEMD_CACHE (default /var/cache/forgesyte-systemd): the
# rootfs and the wheels, kept between runs; this run's files are in its run/.
# PYTHON: a python with PyAV for the test videos (make passes the venv's).
# MIRROR: the Debian mirror (default: from apt's sources). KEEP=1: leave the
# container running at the end, and print how to enter it.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${FORGESYTE_SYSTEMD_CACHE:-/var/cache/forgesyte-systemd}
RUN=$CACHE/run
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,python3,python3-venv,procps,sudo
ROOTFS=$CACHE/rootfs-$SUITE-$(echo "$INCLUDE" | sha256sum | cut -c1-8)
MACHINE=forgesyte-ci
CG=forgesyte-systemd-test-$$
T_START=$(date +%s)
export GIT_OPTIONAL_LOCKS=0   # read-only git: never touch the checkout's index

die() { echo "HARNESS-ERROR test-systemd: $*" >&2; exit 2; }
phase() { echo "== $* ($(( $(date +%s) - T_START ))s)"; }

cgroup_roots() {   # the hierarchies the container's cgroup is made in (v1 name=systemd, hybrid, v2)
    local d
    for d in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do [ -d "$d" ] && echo "$d"; done
    [ -f /sys/fs/cgroup/cgroup.controllers ] && echo /sys/fs/cgroup
}

mirror() {
    local m=${MIRROR:-}
    [ -n "$m" ] || m=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$m" ] || m=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    echo "${m:-http://deb.debian.org/debian}"
}

# Why this machine cannot run the test (empty: it can).
why_not() {
    [ "$(uname -s)" = Linux ] || { echo "not Linux"; return; }
    [ "$(id -u)" = 0 ] || { echo "not root (it debootstraps, mounts and boots a container)"; return; }
    unshare --mount --propagation private true 2>/dev/null || { echo "cannot make a mount namespace (unshare --mount failed)"; return; }
    local r probe=forgesyte-systemd-probe-$$
    [ -n "$(cgroup_roots)" ] || { echo "no cgroup filesystem under /sys/fs/cgroup"; return; }
    for r in $(cgroup_roots); do
        mkdir "$r/$probe" 2>/dev/null && rmdir "$r/$probe" || { echo "cannot create a cgroup under $r (read-only cgroupfs?)"; return; }
    done
    if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
        command -v apt-get >/dev/null || { echo "debootstrap/systemd-nspawn missing and no apt-get to install them"; return; }
        (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            debootstrap systemd-container) >/dev/null 2>&1 \
            || { echo "apt-get could not install debootstrap and systemd-container"; return; }
    fi
    if [ ! -f "$ROOTFS/.complete" ]; then
        python3 - "$(mirror)/dists/$SUITE/Release" <<'EOF' 2>/dev/null || { echo "no cached rootfs and the Debian mirror $(mirror) is not reachable"; return; }
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20).read(64)
EOF
    fi
    [ -x "$PYTHON" ] && "$PYTHON" -c 'import av, numpy' 2>/dev/null || { echo "$PYTHON cannot import av (run make first)"; return; }
}

if [ "${1:-}" = --preflight ]; then
    reason=$(why_not)
    [ -z "$reason" ] && { echo "test-systemd can run here"; exit 0; }
    echo "$reason"; exit 1
fi
reason=$(why_not)
[ -z "$reason" ] || die "$reason"
mkdir -p "$CACHE" || die "cannot create $CACHE"

NSPAWN_PID=""
CPID=""
ct() {   # a command inside the booted container: its namespaces, its root, a clean environment
    nsenter -t "$CPID" -m -u -i -n -p -C -r -w -- /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root USER=root LOGNAME=root \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
cleanup() {
    local rc=$? r
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        if [ "${KEEP:-0}" = 1 ]; then
            echo "KEEP=1: container left running (nspawn pid $NSPAWN_PID)."
            echo "  enter: nsenter -t $CPID -m -u -i -n -p -C -r -w /bin/bash"
            echo "  stop:  kill $NSPAWN_PID; then rmdir the cgroups $CG under $(cgroup_roots | tr '\n' ' ')"
            exit $rc
        fi
        [ -n "$CPID" ] && ct systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 1 30); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then   # nspawn: a first TERM halts, a second ends it at once
            kill -TERM "$NSPAWN_PID" 2>/dev/null; sleep 5; kill -TERM "$NSPAWN_PID" 2>/dev/null; sleep 2
            kill -KILL "$NSPAWN_PID" 2>/dev/null
        fi
    fi
    rm -f "$CACHE/nspawn.pid"
    for r in $(cgroup_roots); do
        [ -d "$r/$CG" ] && find "$r/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A container left by an earlier run of this script that was killed (its pid is recorded).
if [ -f "$CACHE/nspawn.pid" ]; then
    old=$(cat "$CACHE/nspawn.pid")
    if [ -n "$old" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null)" = systemd-nspawn ] \
       && tr '\0' ' ' < "/proc/$old/cmdline" | grep -q -- "--machine=$MACHINE"; then
        echo "stopping the container of an earlier run (nspawn pid $old)"
        kill -TERM "$old"; sleep 5; kill -0 "$old" 2>/dev/null && kill -TERM "$old"; sleep 2
        kill -0 "$old" 2>/dev/null && kill -KILL "$old"
    fi
    rm -f "$CACHE/nspawn.pid"
    for r in $(cgroup_roots); do
        for d in "$r"/forgesyte-systemd-test-*; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
    done
fi

# ------------------------------------------------------------------ the rootfs (cached)
if [ ! -f "$ROOTFS/.complete" ]; then
    phase "debootstrap $SUITE into $ROOTFS (once; cached)"
    rm -rf "$ROOTFS.tmp"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS.tmp" "$(mirror)" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    echo "$MACHINE" > "$ROOTFS.tmp/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n' "$MACHINE" > "$ROOTFS.tmp/etc/hosts"
    : > "$ROOTFS.tmp/etc/machine-id"   # a fresh id at every boot
    touch "$ROOTFS.tmp/.complete"
    rm -rf "$ROOTFS"; mv "$ROOTFS.tmp" "$ROOTFS"
fi
GUEST_PYVER=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || die "cannot run python3 in $ROOTFS"

# ------------------------------------------------------------------ this run's payload
phase "payload: the checkout, wheels for python $GUEST_PYVER, videos, the README's steps"
if [ -d "$RUN/merged" ] && mountpoint -q "$RUN/merged"; then die "$RUN/merged is still mounted by another run"; fi
rm -rf "$RUN"; mkdir -p "$RUN/upper/root/payload/work/forgesyte" "$RUN/upper/etc" "$RUN/work" "$RUN/merged"
P=$RUN/upper/root/payload
# The checkout as it is now (tracked and new files, not ignored ones), without touching it.
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    echo "checkout: $(git -C "$REPO" log -1 --format='%h %s')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    git -C "$REPO" ls-files -z -co --exclude-standard \
        | tar -C "$REPO" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$P/work/forgesyte" -xf -
else
    tar -C "$REPO" --exclude=./.venv --exclude=./build --exclude='*.egg-info' -cf - . | tar -C "$P/work/forgesyte" -xf -
fi

# Wheels of every dependency (and of the build backend, for `pip install ./forgesyte`),
# for the guest's interpreter; cached while setup.cfg and pyproject.toml stay the same.
WHEELS=$CACHE/wheels-$(cat "$REPO/setup.cfg" "$REPO/pyproject.toml" <(echo "$GUEST_PYVER") | sha256sum | cut -c1-12)
if [ ! -f "$WHEELS/.complete" ]; then
    rm -rf "$WHEELS.tmp"; mkdir -p "$WHEELS.tmp" "$RUN/build"
    "$PYTHON" -m pip wheel -q --no-deps --disable-pip-version-check -w "$RUN/build" "$P/work/forgesyte" > "$RUN/wheel.log" 2>&1 \
        || { tail -20 "$RUN/wheel.log"; die "pip wheel of the checkout failed (log $RUN/wheel.log)"; }
    rm -rf "$P/work/forgesyte/build" "$P"/work/forgesyte/*.egg-info
    plats=(); for v in $(seq 17 39); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
    plats+=(--platform manylinux2014_x86_64 --platform linux_x86_64)
    "$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: \
        --python-version "$GUEST_PYVER" --implementation cp --abi "cp${GUEST_PYVER/./}" --abi abi3 --abi none \
        "${plats[@]}" -d "$WHEELS.tmp" "$(ls "$RUN"/build/forgesyte-*.whl)[all,cluster]" "setuptools>=64" wheel \
        > "$RUN/download.log" 2>&1 \
        || { grep -v '^WARNING' "$RUN/download.log" | tail -20; die "pip download of the dependencies failed (log $RUN/download.log)"; }
    rm -f "$WHEELS.tmp"/forgesyte-*.whl
    touch "$WHEELS.tmp/.complete"
    rm -rf "$WHEELS"; mv "$WHEELS.tmp" "$WHEELS"
fi
for old in "$CACHE"/wheels-* "$CACHE"/rootfs-*; do   # sets for an older setup.cfg or package list
    [ "$old" = "$WHEELS" ] || [ "$old" = "$ROOTFS" ] || rm -rf "$old"
done
echo "wheels: $(ls "$WHEELS" | wc -l) in $WHEELS"
# pip in the guest installs from those wheels only, as on a machine without an index.
printf '[global]\nno-index = true\nfind-links = /root/wheels\ndisable-pip-version-check = true\n' > "$RUN/upper/etc/pip.conf"

"$PYTHON" "$REPO/tests/systemd/make_videos.py" "$P/work" holiday > "$RUN/videos.log" 2>&1 \
    && "$PYTHON" "$REPO/tests/systemd/make_videos.py" "$P" v2 v3 v4 v5 >> "$RUN/videos.log" 2>&1 \
    || { cat "$RUN/videos.log"; die "PyAV could not write the test videos"; }
"$PYTHON" "$REPO/tests/systemd/readme_steps.py" "$REPO/README.md" "$P/steps" | sed 's/^/README block /' \
    || die "the README's systemd blocks could not be extracted"
cp "$REPO/tests/systemd/guest.sh" "$P/guest.sh"

# ------------------------------------------------------------------ boot
phase "boot $SUITE under systemd-nspawn"
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1   # cgroup v2 in the guest, like a stock bookworm
setsid bash -c '
    # a cgroup of its own in every hierarchy (--keep-unit uses the caller'"'"'s), then a private
    # mount namespace: the overlay root and a tmpfs on /run/systemd never show on the host
    for r in '"$(cgroup_roots | tr '\n' ' ')"'; do mkdir -p "$r/'"$CG"'" && echo $$ > "$r/'"$CG"'/cgroup.procs" || exit 3; done
    exec unshare --mount --propagation private -- /bin/bash -c "
        mount -t tmpfs -o mode=0755 tmpfs /run/systemd || exit 4
        mount -t overlay overlay -o lowerdir='"$ROOTFS"',upperdir='"$RUN/upper"',workdir='"$RUN/work"' '"$RUN/merged"' || exit 5
        exec systemd-nspawn --quiet --boot --directory='"$RUN/merged"' --machine='"$MACHINE"' --hostname='"$MACHINE"' \
            --register=no --keep-unit --private-network --console=pipe --timezone=off --resolv-conf=off \
            --link-journal=no --bind-ro='"$WHEELS"':/root/wheels"
' > "$RUN/console.log" 2>&1 < /dev/null &
NSPAWN_PID=$!
echo "$NSPAWN_PID" > "$CACHE/nspawn.pid"
T_BOOT=$(date +%s)
for _ in $(seq 1 150); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    CPID=$(cat "/proc/$NSPAWN_PID/task/$NSPAWN_PID/children" 2>/dev/null | awk '{print $1}')
    [ -n "$CPID" ] && [ "$(cat "/proc/$CPID/comm" 2>/dev/null)" = systemd ] && break
    CPID=""; sleep 0.2
done
[ -n "$CPID" ] || { cat "$RUN/console.log"; echo "FAIL boot: systemd-nspawn did not start systemd (console above)"; exit 1; }
state=""
for _ in $(seq 1 180); do
    state=$(ct systemctl is-system-running 2>/dev/null)
    case "$state" in running|degraded|maintenance|stopping|offline) break ;; esac
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.5
done
case "$state" in
    running|degraded) echo "PASS boot: $(ct systemctl --version | head -1) is PID 1, is-system-running=$state after $(( $(date +%s) - T_BOOT ))s" ;;
    *) cat "$RUN/console.log"; echo "FAIL boot: is-system-running=$state"; exit 1 ;;
esac

# ------------------------------------------------------------------ the checks
phase "checks inside the container"
T_CHECKS=$(date +%s)
ct timeout 900 /bin/bash /root/payload/guest.sh 2>&1 | tee "$RUN/guest.log"
T_CHECKS=$(( $(date +%s) - T_CHECKS ))
ct journalctl --no-pager -b -o short-precise > "$RUN/journal.txt" 2>&1
ct cat /tmp/readme-steps.log > "$RUN/readme-steps.log" 2>&1

n_pass=$(grep -c '^PASS ' "$RUN/guest.log"); n_fail=$(grep -c '^FAIL ' "$RUN/guest.log"); n_skip=$(grep -c '^SKIP ' "$RUN/guest.log")
if ! grep -q '^DONE guest checks' "$RUN/guest.log"; then
    echo "FAIL guest-complete: the checks stopped early (see $RUN/guest.log)"; n_fail=$((n_fail + 1))
fi
grep '^FAIL ' "$RUN/guest.log" | sed 's/^/   /'
echo "== checks took ${T_CHECKS}s, the whole run $(( $(date +%s) - T_START ))s; logs: $RUN/guest.log $RUN/readme-steps.log $RUN/journal.txt"
echo "test-systemd: $n_pass passed, $n_fail failed, $n_skip skipped"
[ "$n_fail" = 0 ] && [ "$n_pass" -gt 0 ]
