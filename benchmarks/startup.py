"""Start-up cost: `raysparse --help` and `import raysparse` in fresh interpreters, against a bare
`python -c pass` (the floor every command pays), interleaved so machine noise hits all three.

Run: .venv/bin/python benchmarks/startup.py [--rounds 10]
Prints the median wall seconds of each and what each costs beyond the bare interpreter
(goal: `raysparse --help` under 0.5 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

RAYSPARSE = str(Path(sys.executable).with_name("raysparse"))
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import raysparse": [sys.executable, "-c", "import raysparse"],
    "raysparse --help": [RAYSPARSE, "--help"],
    "import raysparse.train (torch)": [sys.executable, "-c", "import raysparse.train"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)
    floor = statistics.median(seconds["python -c pass"])
    print(f"{'command':32} {'median s':>9} {'beyond python':>14}")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name:32} {median:9.3f} {median - floor:14.3f}")


if __name__ == "__main__":
    main()
