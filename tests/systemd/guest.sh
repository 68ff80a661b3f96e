#!/bin/bash
# tests/systemd/guest.sh: the checks, run as root inside the booted Debian (systemd is PID 1).
#
# Drives the README's "Running under systemd" blocks literally (extracted by
# readme_steps.py into $P/steps/NAME.sh), then checks what they should have
# done, then the things the README promises but a reader would not try
# (watchdog, sandboxed plugins, exit 2/3 not restarted, /tmp homes), then the
# README's "Units for a cluster" block, literally too. One PASS/FAIL/SKIP line
# per check; INFO lines are measurements.
set -u
P=/root/payload                 # videos, steps/, the README's working directory
W=$P/work                       # ./forgesyte (the checkout) and holiday.mp4, as in the README
H=/srv/videos                   # service install --inbox /srv/videos/inbox: home next to the inbox
INBOX=/srv/videos/inbox
UNIT=/etc/systemd/system/forgesyte.service
DROPIN=/etc/systemd/system/forgesyte.service.d
STEP_LOG=/tmp/readme-steps.log
# No FORGESYTE_* here: the README's blocks must work with what they set themselves (the
# 'use' block's export). The checks after that block export the unit's Environment=.
unset FORGESYTE_HOME FORGESYTE_INBOX FORGESYTE_OUTPUT FORGESYTE_STATE FORGESYTE_CONFIG

pass() { echo "PASS $1: $2"; }
skip() { echo "SKIP $1: $2"; }
info() { echo "INFO $1: $2"; }
fail() {   # fail NAME TEXT [SINCE-EPOCH [UNIT]]: also shows the unit's journal since the check began
    echo "FAIL $1: $2"
    [ -n "${3:-}" ] && journalctl --no-pager -o short-precise -u "${4:-forgesyte}" --since "@$3" | tail -25 | sed 's/^/    | /'
}
now() { date +%s; }
prop() { systemctl show -p "$1" --value "${2:-forgesyte}"; }
jsince() { journalctl --no-pager -o short-precise -u "${2:-forgesyte}" --since "@$1"; }
py() { python3 -c "$1"; }
wait_until() {   # wait_until SECONDS CMD...: true once CMD succeeds
    local end=$(( $(now) + $1 )); shift
    while [ "$(now)" -le "$end" ]; do "$@" && return 0; sleep 0.5; done
    return 1
}
field() { forgesyte show "$1" --json 2>/dev/null | py "import json,sys; print(json.load(sys.stdin).get('$2'))" 2>/dev/null; }
finished() { case "$(field "$1" status)" in completed|failed) return 0 ;; esac; return 1; }
drop() {   # drop VIDEO REL: a complete file appears at once (a rename), as careful writers do
    mkdir -p "$(dirname "$INBOX/$2")" && cp "$P/$1" "$INBOX/$2.tmp" && mv "$INBOX/$2.tmp" "$INBOX/$2"
}
restart_clean() { systemctl daemon-reload; systemctl reset-failed forgesyte 2>/dev/null; systemctl restart forgesyte; }

# The README runner: each command of a block, in this shell (so `export` holds for the next
# line), output to $STEP_LOG; the first command that fails ends the block. A `... -f`
# (follow) command runs for 3 s, as a reader would watch it and press Ctrl-C.
STEP_FAILED=""
step() {
    local cmd run bare rc
    cmd=$(cat)
    [ -n "$STEP_FAILED" ] && return 1
    bare=${cmd%% #*}; bare=${bare%"${bare##*[! ]}"}
    run=$cmd
    case "$bare" in *" -f") run="timeout 3 $cmd" ;; esac
    echo "\$ $cmd" >> "$STEP_LOG"
    eval "$run" >> "$STEP_LOG" 2>&1 < /dev/null; rc=$?
    if [ $rc != 0 ] && ! { [ $rc = 124 ] && [ "$run" != "$cmd" ]; }; then
        STEP_FAILED="'$cmd' exited $rc"
        echo "  -> exit $rc" >> "$STEP_LOG"
        return $rc
    fi
}
readme() {   # readme NAME: run the README's block NAME; true if every command succeeded
    STEP_FAILED=""
    echo "== README block '$1'" >> "$STEP_LOG"
    [ -f "$P/steps/$1.sh" ] || { STEP_FAILED="README.md has no systemd-test block '$1'"; return 1; }
    cd "$W" || return 1
    # shellcheck disable=SC1090
    source "$P/steps/$1.sh"
    cd / || return 1
    [ -z "$STEP_FAILED" ]
}
steplog() { tail -n "${1:-8}" "$STEP_LOG" | sed 's/^/    | /'; }

echo "guest: $(systemctl --version | head -1); $(python3 --version); kernel $(uname -r); cgroup fs $(stat -fc %T /sys/fs/cgroup)"

# ------------------------------------------------------------------ install, as the README says
t=$(now)
if readme install; then
    pass install "README 'install' block: venv, pip install './forgesyte[all]' (offline, host-built wheels), CLI on PATH, service install ($(( $(now) - t ))s); $(forgesyte --version)"
else
    fail install "$STEP_FAILED"; steplog 15; echo "DONE guest checks"; exit 1
fi
unit_ok=1; why=""
grep -q '/root' $UNIT && { unit_ok=0; why="$why mentions /root;"; }
for line in "Environment=FORGESYTE_HOME=$H" \
            "SyslogIdentifier=forgesyte" "PrivateTmp=yes" "RestartPreventExitStatus=2 3" \
            "ReadWritePaths=-$INBOX -$H/output -$H/state"; do
    grep -qxF "$line" $UNIT || { unit_ok=0; why="$why no '$line';"; }
done
[ $unit_ok = 1 ] && pass unit-home "service install as root: home $H (next to the inbox), inbox $INBOX, SyslogIdentifier=forgesyte, PrivateTmp=yes, RestartPreventExitStatus=2 3; nothing under /root" \
    || fail unit-home "$UNIT:$why"
out=$(systemd-analyze verify $UNIT 2>&1); rc=$?
[ $rc = 0 ] && pass unit-verify "systemd-analyze verify: ${out:-no complaints}" || fail unit-verify "rc $rc: $out"

# ------------------------------------------------------------------ account, start
t=$(now)
if readme account && [ "$(prop ActiveState)/$(prop SubState)" = active/running ]; then
    a=$(prop ExecMainStartTimestampMonotonic); b=$(prop ActiveEnterTimestampMonotonic)
    pass start "README 'account' block: active (running) as $(ps -o user= -p "$(prop MainPID)"), READY=1 $(( (b - a) / 1000 )) ms after exec"
    info ready-ms "$(( (b - a) / 1000 ))"
else
    fail start "${STEP_FAILED:-not active}: $(prop ActiveState)/$(prop SubState) Result=$(prop Result)" "$t"; steplog
fi
st=$(prop StatusText)
if echo "$st" | grep -qE "^Watching $INBOX: [0-9]+ pending, [0-9]+ running, [0-9]+ completed, [0-9]+ failed"; then
    pass status-line "STATUS= '$st' (systemctl status shows it)"
else
    fail status-line "StatusText '$st'" "$t"
fi
[ -e /root/.local/share/forgesyte ] && fail no-root-home "/root/.local/share/forgesyte exists"

# ------------------------------------------------------------------ use: drop, wait, results, prune as root; reload; stop
t=$(now); pid=$(prop MainPID); t0=$(date +%s%3N)
ok_use=0; readme use && ok_use=1
if [ $ok_use = 1 ]; then
    pass readme-use "README 'use' block: every command exited 0 with only its own export ($(( $(now) - t ))s)"
else
    fail readme-use "$STEP_FAILED" "$t"; steplog
fi
[ "${FORGESYTE_HOME:-}" = $H ] || fail readme-env "after the 'use' block FORGESYTE_HOME is '${FORGESYTE_HOME:-}', not $H"
export FORGESYTE_HOME=$H FORGESYTE_INBOX=$INBOX   # the unit's Environment=, for the checks below
codec=$(forgesyte results holiday.mp4 2>/dev/null | py 'import json,sys; print(json.load(sys.stdin)["plugins"]["metadata"]["video"]["codec"])' 2>/dev/null)
id=$(field holiday.mp4 id)
if [ "$(field holiday.mp4 status)" = completed ] && [ "$codec" = h264 ]; then
    pass job "holiday.mp4 -> job $id completed, metadata.video.codec=$codec"
    info job-seconds "$(field holiday.mp4 created_at) -> $(field holiday.mp4 finished_at)"
else
    fail job "holiday.mp4: status $(field holiday.mp4 status), codec '$codec', error $(field holiday.mp4 error)" "$t"
fi
# STATUS= follows the jobs (every 2 s), not only the count at READY.
status_after() { prop StatusText | grep -qE "^Watching $INBOX: 0 pending, 0 running, [1-9][0-9]* completed, 0 failed"; }
if wait_until 15 status_after; then
    pass status-after-job "STATUS= after the job: '$(prop StatusText)'"
else
    fail status-after-job "StatusText '$(prop StatusText)' 15 s after holiday.mp4 finished" "$t"
fi
# The README: people in the forgesyte group read the state and results without root.
useradd --no-create-home --shell /bin/bash --groups forgesyte reader 2>/dev/null || usermod -aG forgesyte reader
as_reader() { runuser -u reader -- env FORGESYTE_HOME=$H FORGESYTE_INBOX=$INBOX forgesyte "$@"; }
st=$(cd / && as_reader status --json 2>&1)
read_status=$(echo "$st" | py 'import json,sys; d=json.load(sys.stdin); print(d["daemon"]["running"], d["counts"]["completed"])' 2>/dev/null)
rcodec=$(cd / && as_reader results holiday.mp4 2>/dev/null | py 'import json,sys; print(json.load(sys.stdin)["plugins"]["metadata"]["video"]["codec"])' 2>/dev/null)
case "$read_status" in
    "True "[1-9]*) if [ "$rcodec" = h264 ]; then
            pass group-reads "user 'reader' (groups: $(id -nG reader)), not root: status --json says daemon running, completed ${read_status#True }; results holiday.mp4 readable"
        else fail group-reads "user 'reader': status ok, but results holiday.mp4 gave codec '$rcodec'"; fi ;;
    *) fail group-reads "user 'reader' (groups: $(id -nG reader)): status --json gave: $(echo "$st" | head -3 | tr '\n' ' ')" ;;
esac
# The daemon held the state lock throughout, so a prune that succeeded went through the mailbox.
pruned=$(grep -A1 '^\$ sudo -E forgesyte prune' $STEP_LOG | sed -n 2p)
if [ $ok_use = 1 ] && [ -n "$pruned" ] && [ "$(prop MainPID)" = "$pid" ]; then
    pass cli-handoff-prune "root's prune handed to the daemon (account forgesyte, PrivateUsers=yes) while it ran: '$pruned'"
else
    fail cli-handoff-prune "$(grep -A3 '^\$ sudo -E forgesyte prune' $STEP_LOG | tr '\n' ' ')" "$t"
fi
t=$(now)
if readme reload && wait_until 30 sh -c "journalctl --no-pager -u forgesyte --since @$t | grep -q 'forgesyte\[$pid\]: .*configuration reloaded'" \
   && [ "$(prop MainPID)" = "$pid" ]; then
    pass reload "README 'reload' block: the same process ($pid) re-read its configuration: '$(jsince "$t" | grep -m1 'configuration reloaded' | cut -d' ' -f5-)'"
else
    fail reload "${STEP_FAILED:-no 'configuration reloaded' from MainPID $pid within 30 s}; MainPID now $(prop MainPID)" "$t"
fi
t=$(now)
if readme stop && [ "$(prop ActiveState)" = inactive ] && [ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ] \
   && ! jsince "$t" | grep -qE "code=killed|Failed with result|SIGKILL"; then
    pass stop "README 'stop' block: Result=success, exit status 0: '$(jsince "$t" | grep -m1 'stopped' | cut -d' ' -f5-)'"
else
    fail stop "${STEP_FAILED:-} state $(prop ActiveState), Result=$(prop Result), ExecMainStatus=$(prop ExecMainStatus)" "$t"
fi
if out=$(journalctl --no-pager -t forgesyte -o cat | grep -m1 "holiday.mp4: completed") \
   && ! journalctl --no-pager -u forgesyte | grep -qE ' python3?\[|\]: <[0-7]>|Traceback'; then
    pass journal "journalctl -t forgesyte: '$out'; no python3[PID] lines, no raw <N>, no traceback"
else
    fail journal "journalctl -t forgesyte has no transition line for holiday.mp4, or python3[PID]/<N>/Traceback lines" "$t"
fi
# (the home itself, /srv/videos, is root's: the README's mkdir makes it; only the three folders are handed over)
left=$(find $INBOX $H/output $H/state ! -user forgesyte ! -name holiday.mp4 2>/dev/null | head -3 | tr '\n' ' ')
reqs=$(ls -A $H/state/requests 2>/dev/null | wc -l)
if [ -z "$left" ] && [ "$reqs" = 0 ]; then
    pass root-leaves-nothing "root's CLI left no root-owned file in the inbox, output or state and no request behind"
else
    fail root-leaves-nothing "root-owned: $left; $reqs files left in requests/"
fi

# ------------------------------------------------------------------ retry as root while the daemon runs
t=$(now)
systemctl start forgesyte
printf 'not a video\n' > $INBOX/junk.mp4
if wait_until 60 finished junk.mp4 && [ "$(field junk.mp4 status)" = failed ]; then
    first=$(field junk.mp4 started_at)
    ran_again() { local s; s=$(field junk.mp4 started_at); [ "$s" != None ] && [ "$s" != "$first" ] && finished junk.mp4; }
    if out=$(timeout 30 forgesyte retry junk.mp4 2>&1) && wait_until 60 ran_again; then
        pass cli-handoff-retry "retry as root while the daemon runs: '$out'; the job ran again (started $first, then $(field junk.mp4 started_at))"
    else
        fail cli-handoff-retry "rc $? '$out'; started_at $first -> $(field junk.mp4 started_at)" "$t"
    fi
else
    fail cli-handoff-retry "junk.mp4 did not fail: $(field junk.mp4 status)" "$t"
fi

# ------------------------------------------------------------------ every built-in plugin under the full sandbox
t=$(now)
listed=$(forgesyte plugins --json)
plugins=$(echo "$listed" | py 'import json,sys; print(",".join(p["name"] for p in json.load(sys.stdin) if not p["error"]))')
broken=$(echo "$listed" | py 'import json,sys; print("; ".join(p["name"] + ": " + p["error"] for p in json.load(sys.stdin) if p["error"]))')
if [ -z "$plugins" ]; then
    fail plugins-load "plugins --json listed no loadable plugin: $(echo "$listed" | head -c 300)"
elif [ -n "$broken" ]; then   # installed with [all]: every built-in must load, or the sandbox check below misses it
    fail plugins-load "loaded $plugins, but not: $broken"
else
    pass plugins-load "every installed plugin loads: $plugins"
fi
mkdir -p $DROPIN
printf '[Service]\nEnvironment=FORGESYTE_PLUGINS=%s\n' "$plugins" > $DROPIN/50-plugins.conf
restart_clean
drop v2.mp4 cam/all.mp4
if wait_until 240 finished cam/all.mp4; then
    keys=$(forgesyte results cam/all.mp4 2>/dev/null | py 'import json,sys; print(",".join(json.load(sys.stdin)["plugins"]))' 2>/dev/null)
    if [ "$(field cam/all.mp4 status)" = completed ] && [ "$keys" = "$plugins" ]; then
        pass plugins-sandboxed "cam/all.mp4 completed with every built-in plugin ($keys) under the unit's sandbox in $(( $(now) - t ))s"
    else
        fail plugins-sandboxed "status $(field cam/all.mp4 status), sections '$keys' (wanted '$plugins'), error: $(field cam/all.mp4 error)" "$t"
    fi
else
    fail plugins-sandboxed "not finished within 240 s" "$t"
fi
bad=$(jsince "$t" | grep -E 'status=31/SYS|Bad system call|SIGSYS|code=dumped|Traceback')
[ -z "$bad" ] && pass no-sigsys "no SIGSYS, core dump or traceback in the journal while they ran" || fail no-sigsys "$bad"
rm -f $DROPIN/50-plugins.conf

# ------------------------------------------------------------------ the watchdog
printf '[Service]\nWatchdogSec=6\n' > $DROPIN/60-watchdog.conf
t=$(now)
restart_clean
pid=$(prop MainPID); nr=$(prop NRestarts)
sleep 12   # two whole WatchdogSec periods: only pings keep it alive
if [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$pid" ] && [ "$(prop WatchdogUSec)" = 6s ]; then
    pass watchdog-pings "alive for 12 s with WatchdogSec=6s, same MainPID $pid: WATCHDOG=1 arrives"
else
    fail watchdog-pings "MainPID $pid -> $(prop MainPID), $(prop ActiveState), Result=$(prop Result)" "$t"
fi
t=$(now); pid=$(prop MainPID)
kill -STOP "$pid"
restarted() { local n; n=$(prop MainPID); [ "$(prop ActiveState)/$(prop SubState)" = active/running ] && [ "$n" != "$pid" ] && [ "$n" != 0 ]; }
if wait_until 45 restarted && jsince "$t" | grep -q "Failed with result 'watchdog'"; then
    pass watchdog-restart "SIGSTOP'd MainPID $pid: killed on the watchdog and restarted as $(prop MainPID) in $(( $(now) - t ))s"
else
    fail watchdog-restart "after SIGSTOP of $pid: $(prop ActiveState)/$(prop SubState), MainPID $(prop MainPID), Result=$(prop Result)" "$t"
    kill -CONT "$pid" 2>/dev/null
fi
drop v3.mp4 after-watchdog.mp4
if wait_until 60 finished after-watchdog.mp4 && [ "$(field after-watchdog.mp4 status)" = completed ]; then
    pass after-watchdog "the restarted daemon completes a new job; the store is intact"
else
    fail after-watchdog "after-watchdog.mp4: $(field after-watchdog.mp4 status) $(field after-watchdog.mp4 error)" "$t"
fi
rm -f $DROPIN/60-watchdog.conf; systemctl daemon-reload
systemctl stop forgesyte

# ------------------------------------------------------------------ exit 2 and exit 3 are not restarted
no_restart() {   # no_restart NAME CODE WHAT: start, expect exit CODE, failed, no restart past RestartSec
    local t; t=$(now)
    systemctl daemon-reload; systemctl reset-failed forgesyte 2>/dev/null
    systemctl start forgesyte >/dev/null 2>&1
    sleep 7   # RestartSec=5 plus margin
    if [ "$(prop ActiveState)" = failed ] && [ "$(prop ExecMainStatus)" = "$2" ] && [ "$(prop NRestarts)" = 0 ] \
       && ! jsince "$t" | grep -q 'Scheduled restart job'; then
        pass "$1" "$3: exit $2, unit failed, not restarted: '$(jsince "$t" | grep -m1 "forgesyte\[$(prop ExecMainPID)\]" | cut -d' ' -f5-)'"
    else
        fail "$1" "$3: state $(prop ActiveState), ExecMainStatus=$(prop ExecMainStatus), NRestarts=$(prop NRestarts)" "$t"
    fi
}
printf '[Service]\nEnvironment=FORGESYTE_WORKERS=abc\n' > $DROPIN/70-bad.conf
no_restart bad-config-no-restart 2 "FORGESYTE_WORKERS=abc"
rm -f $DROPIN/70-bad.conf
rm -rf /root/state.saved; cp -a $H/state /root/state.saved
find $H/state -type f ! -name '*.lock' ! -path '*/requests/*' -exec sh -c 'printf "garbage\0\377" > "$1"' _ {} \;
no_restart damaged-state-no-restart 3 "every state file garbled"
rm -rf $H/state; cp -a /root/state.saved $H/state
systemctl reset-failed forgesyte 2>/dev/null

# ------------------------------------------------------------------ a home under /tmp: no PrivateTmp
t=$(now)
if out=$(env -u FORGESYTE_HOME -u FORGESYTE_INBOX forgesyte --home /tmp/fs service install 2>&1) && mk=$(echo "$out" | grep -E '^  mkdir -p ') && eval "$mk"; then
    if grep -q '^PrivateTmp' $UNIT; then
        fail tmp-home "the unit for --home /tmp/fs keeps $(grep '^PrivateTmp' $UNIT)"
    else
        restart_clean
        cp "$P/v4.mp4" /tmp/fs/inbox/t.mp4
        if wait_until 60 sh -c 'FORGESYTE_HOME=/tmp/fs FORGESYTE_INBOX= forgesyte show t.mp4 --json 2>/dev/null | grep -q "\"status\": \"completed\""'; then
            pass tmp-home "--home /tmp/fs: no PrivateTmp in the unit, the daemon sees /tmp/fs/inbox and completes a job there"
        else
            fail tmp-home "--home /tmp/fs: $(FORGESYTE_HOME=/tmp/fs FORGESYTE_INBOX= forgesyte status 2>&1 | tr '\n' ' ')" "$t"
        fi
    fi
else
    fail tmp-home "service install --home /tmp/fs: $out"
fi
systemctl stop forgesyte
forgesyte --inbox $INBOX service install >/dev/null && systemctl daemon-reload

# ------------------------------------------------------------------ cluster units, as the README says
# The README's 'cluster' block names two kinds of machine; this one guest plays both. What the
# block takes as given is set up here: the scheduler's address on the loopback (the guest has a
# network namespace of its own, and no iproute2: the ioctls ifconfig uses), the worker machine's
# mount points of the shared folders (/srv/videos bind-mounted at /mnt/videos), and, once the
# block has installed Dask, the scheduler (the daemon and the worker keep retrying until it is up).
add_loopback_address() {   # add_loopback_address IP: IP/32 on lo, as `ip address add IP/32 dev lo`
    python3 - "$1" <<'EOF'
import fcntl, socket, struct, sys
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
def ifreq(addr):  # struct ifreq: the (alias) name, then a struct sockaddr_in
    return struct.pack("16sH2x4s16x", b"lo:cluster", socket.AF_INET, socket.inet_aton(addr))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s, SIOCSIFADDR, ifreq(sys.argv[1]))
    fcntl.ioctl(s, SIOCSIFNETMASK, ifreq("255.255.255.255"))
EOF
}
WUNIT=/etc/systemd/system/forgesyte-worker.service
t=$(now)
# tcp://HOST:PORT and the --allow network, as the block's daemon line names them
sched=$(grep -m1 -oE 'service install --scheduler tcp://[0-9.]+:[0-9]+' "$P/steps/cluster.sh" 2>/dev/null | sed 's|.*tcp://||')
net=$(grep -m1 -E 'service install --scheduler' "$P/steps/cluster.sh" 2>/dev/null | grep -oE -- '--allow [0-9./]+' | cut -d' ' -f2)
shost=${sched%:*}; sport=${sched#*:}
if ! forgesyte worker --help >/dev/null 2>&1; then
    skip cluster-units "this checkout has no 'forgesyte worker' command yet"
elif [ -z "$sched" ]; then
    fail cluster-units "README.md has no systemd-test block 'cluster' with 'service install --scheduler tcp://ADDR:PORT'"
elif ! out=$(add_loopback_address "$shost" 2>&1); then
    fail cluster-units "cannot give the guest the README's scheduler address $shost: $out"
else
    mkdir -p /mnt/videos && mount --bind $H /mnt/videos
    ok_cluster=0; readme cluster && ok_cluster=1
    systemd-run --quiet --unit=dask-scheduler -p User=forgesyte -p DynamicUser=no \
        /opt/forgesyte/bin/dask scheduler --host "$shost" --port "$sport" --no-dashboard
    drop v5.mp4 cluster.mp4
    allow=$(grep '^IPAddressAllow=' $UNIT); wallow=$(grep '^IPAddressAllow=' $WUNIT 2>/dev/null)
    fam='RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6'
    if [ $ok_cluster = 0 ]; then
        fail cluster-units "README 'cluster' block: $STEP_FAILED" "$t"; steplog 12
        jsince "$t" forgesyte-worker | tail -15 | sed 's/^/    worker| /'
    elif wait_until 120 finished cluster.mp4 && [ "$(field cluster.mp4 status)" = completed ] \
       && jsince "$t" forgesyte-worker | grep -q 'cluster.mp4: running here' \
       && grep -qx 'PrivateNetwork=no' $UNIT && grep -qx 'PrivateNetwork=no' $WUNIT \
       && grep -qxF "$fam" $UNIT && grep -qxF "$fam" $WUNIT \
       && [ "$allow" = "IPAddressAllow=localhost $shost $net" ] && [ "$wallow" = "$allow" ]; then
        pass cluster-units "README 'cluster' block: forgesyte-worker.service (through /mnt/videos) and the daemon's unit ($allow, AF_INET/AF_INET6 only) ran cluster.mp4 through the Dask scheduler at $sched: completed in $(( $(now) - t ))s"
    else
        fail cluster-units "cluster.mp4: $(field cluster.mp4 status) $(field cluster.mp4 error); worker $(prop ActiveState forgesyte-worker)/$(prop Result forgesyte-worker); daemon '$allow', worker '$wallow'" "$t"
        jsince "$t" forgesyte-worker | tail -15 | sed 's/^/    worker| /'
    fi
    systemctl disable --now forgesyte-worker >/dev/null 2>&1
    systemctl stop forgesyte dask-scheduler 2>/dev/null
    umount /mnt/videos
    forgesyte --inbox $INBOX service install >/dev/null && systemctl daemon-reload
fi

# ------------------------------------------------------------------ systemd-analyze security against the README's claim
sec=$(systemd-analyze security forgesyte --no-pager 2>&1 | grep 'Overall exposure level')
got=$(echo "$sec" | sed -E 's/.*: ([0-9.]+ [A-Z]+).*/\1/')
claim=$(grep -oE 'exposure \*\*[0-9.]+ [A-Z]+' $W/forgesyte/README.md | head -1 | sed 's/exposure \*\*//')
if [ -n "$got" ] && [ "$got" = "$claim" ]; then pass security "$sec (the README says $claim)"
else fail security "$sec; the README says '$claim'"; fi

echo "DONE guest checks"
