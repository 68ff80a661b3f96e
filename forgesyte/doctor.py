"""`forgesyte doctor`: check what usually goes wrong, and say what to do about it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from forgesyte.config import ConfigError, Settings, prepare_directories

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    level: str
    what: str
    fix: str = ""


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    names = ("inbox", "output", "state")
    try:
        missing = prepare_directories(settings, create=False, missing_ok=True)
        present = [name for name in names if name not in missing]
        if present:
            checks.append(Check(OK, "existing directories are writable: " + ", ".join(present)))
    except ConfigError as exc:
        checks.append(Check(FAIL, str(exc), "Remove or rename it, or fix its owner and mode "
                                              "for the user the daemon runs as."))
        missing = [name for name in names if not getattr(settings, name).exists()]
    for name in missing:
        path = getattr(settings, name)
        parent = next(p for p in path.parents if p.exists())
        if os.access(parent, os.W_OK | os.X_OK):
            checks.append(Check(WARN, f"the {name} directory {path} does not exist yet",
                                "forgesyte run creates it (mode 0750)."))
        else:
            checks.append(Check(FAIL, f"the {name} directory {path} does not exist and {parent} is not writable",
                                f"Create {path} and give it to the user the daemon runs as."))

    if settings.polling:
        checks.append(Check(OK, f"polling observer every {settings.polling_interval:g} s (no inotify limits apply)"))
    elif settings.inbox.is_dir():
        dirs = sum(1 for _ in os.walk(settings.inbox))
        watches = _read_int("/proc/sys/fs/inotify/max_user_watches")
        if watches is None:
            checks.append(Check(WARN, "cannot read fs.inotify.max_user_watches",
                                "If the inbox is large, consider --polling."))
        elif dirs > watches * 0.8:
            checks.append(Check(FAIL, f"the inbox has {dirs} directories; fs.inotify.max_user_watches is {watches}",
                                f"sysctl -w fs.inotify.max_user_watches={max(dirs * 2, 524288)} "
                                "(and persist it in /etc/sysctl.d/), or run with --polling."))
        else:
            checks.append(Check(OK, f"inotify: {dirs} directories to watch, limit {watches}"))
        instances = _read_int("/proc/sys/fs/inotify/max_user_instances")
        if instances is not None and instances < 8:
            checks.append(Check(WARN, f"fs.inotify.max_user_instances is only {instances}",
                                "sysctl -w fs.inotify.max_user_instances=128"))
        if os.path.ismount(settings.inbox) or _on_network_fs(settings.inbox):
            checks.append(Check(WARN, "the inbox is a mount point; inotify misses changes made on other machines",
                                "For NFS/CIFS shares run with --polling."))

    from forgesyte.plugins.registry import DiscoveryFailed, probe

    try:
        available = probe()
    except DiscoveryFailed as exc:
        checks.append(Check(FAIL, str(exc), "Run `forgesyte plugins` to find the plugin that crashes."))
    else:
        from forgesyte.preflight import check_plugins

        findings = check_plugins(settings, available)
        wanted = settings.all_plugin_names()
        for problem in findings.errors:
            checks.append(Check(FAIL, problem, "Fix the configuration; `forgesyte run` refuses it as it is."))
        for problem in findings.warnings:
            checks.append(Check(FAIL, problem, "Reinstall it, or remove it from the configuration."))
        for name in sorted(n for n in available if available[n]["error"] and n not in wanted):
            checks.append(Check(WARN, f"plugin {name} does not load: {available[name]['error']}",
                                "Reinstall it, or uninstall it if unused."))
        if not findings.errors and not findings.warnings:
            checks.append(Check(OK, "plugins load and their options check: "
                                + ", ".join(sorted(n for n in wanted))))

    from forgesyte.daemon.lock import daemon_info

    info = daemon_info(settings.state)
    if info["running"]:
        checks.append(Check(OK, f"daemon running (pid {info['pid']}, since {info['since']})"))
        for condition in info.get("conditions") or []:  # what the daemon lives with now
            checks.append(Check(WARN, f"the daemon reports, since {condition.get('since')}: "
                                      f"{condition.get('message')}", _CONDITION_FIX.get(condition.get("name"), "")))
    else:
        checks.append(Check(WARN, "no daemon holds this state folder",
                            "Start it: forgesyte run, or systemctl start forgesyte."))
    from forgesyte.storage.rebuild import health  # the very check of `forgesyte fsck`

    for level, what, fix in health(settings.state, settings.output, daemon_running=info["running"]):
        checks.append(Check({"ok": OK, "warn": WARN, "fail": FAIL}[level], what, fix))
    return checks


_CONDITION_FIX = {
    "inotify-watches": "Raise fs.inotify.max_user_watches as the message says; until then new files "
                       "in those folders are found by polling.",
    "output-full": "Free space on (or remount read-write) the output folder; jobs wait and resume by themselves.",
    "state-write": "Free space on the state folder's disk; the daemon retries every second.",
    "inbox-missing": "Mount the inbox again; intake resumes by itself.",
}


def _on_network_fs(path: Path) -> bool:
    try:
        best, fstype = "", ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
        return fstype in {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p"}
    except OSError:
        return False
