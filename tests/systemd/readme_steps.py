"""The README's systemd steps, extracted so the systemd test runs exactly what the README says.

A shell block in README.md preceded by `<!-- systemd-test: NAME -->` is step
NAME. `python tests/systemd/readme_steps.py README.md OUTDIR` writes one
script per step, OUTDIR/NAME.sh, for tests/systemd/guest.sh to run line by
line; tests/test_service_install.py checks the blocks against what `service install`
prints.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARK = re.compile(r"^<!--\s*systemd-test:\s*([\w-]+)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


def steps(readme: str) -> dict[str, list[str]]:
    """{name: [command, ...]}: each command one logical line (backslash continuations joined)."""
    found: dict[str, list[str]] = {}
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        mark = MARK.match(lines[i].strip())
        i += 1
        if not mark:
            continue
        if i >= len(lines) or not FENCE.match(lines[i]) or FENCE.match(lines[i]).group(1) not in ("sh", "bash", "console"):
            raise ValueError(f"README.md: the systemd-test mark '{mark.group(1)}' must sit right above a ```sh block")
        i += 1
        commands: list[str] = []
        pending = ""
        while i < len(lines) and not lines[i].startswith("```"):
            line = lines[i]
            i += 1
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
        if mark.group(1) in found:
            raise ValueError(f"README.md: two systemd-test blocks are named '{mark.group(1)}'")
        found[mark.group(1)] = commands
    return found


def without_comment(command: str) -> str:
    """The command without a trailing `# ...` comment (a '#' inside quotes is kept)."""
    quote = ""
    for pos, char in enumerate(command):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (pos == 0 or command[pos - 1].isspace()):
            return command[:pos].rstrip()
    return command


def main(argv: list[str]) -> int:
    readme, outdir = Path(argv[1]), Path(argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    for name, commands in steps(readme.read_text(encoding="utf-8")).items():
        # One `step` per command, fed on stdin, so the runner shows and times each line.
        body = "".join(f"step <<'FORGESYTE_README_STEP'\n{c}\nFORGESYTE_README_STEP\n" for c in commands)
        (outdir / f"{name}.sh").write_text(f"# README.md, systemd-test block '{name}'\n{body}")
        print(f"{name}: {len(commands)} commands")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
