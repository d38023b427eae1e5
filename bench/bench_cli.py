"""Command-line start-up benchmark: how long `sysmail-ops` takes to answer.

Runs three commands, each N times (default 7) as a fresh process, on a workspace
it creates with ``sysmail-ops init`` (under ``bench/results/``, removed at the
end), and prints the min and median wall time of each, process start included:

  --help          builds the whole parser (imports every command module)
  accounts list   a simple read: opens the workspace's DuckDB store
  logs summary    a simple read of the send log

One run of each command before the measured runs warms the file cache and
writes the bytecode, which the measured runs then read, as an installed package
does: ``PYTHONDONTWRITEBYTECODE`` is dropped and the bytecode goes to a scratch
folder (``PYTHONPYCACHEPREFIX``), never into the source tree. ``--no-bytecode``
keeps the caller's environment instead (with ``PYTHONDONTWRITEBYTECODE=1`` and no
``__pycache__`` every run compiles the package's sources afresh).

Run: ``python bench/bench_cli.py`` (the venv's console script ``sysmail-ops``,
found next to this Python). To measure another checkout of the code, such as
the copy before a change, with the same interpreter and packages:

    python bench/bench_cli.py --pythonpath /work/before

which runs ``python -m sysmail_ops`` with ``PYTHONPATH=DIR`` (``--module`` runs the
current code the same way, for a like-for-like comparison).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # workspaces live here (gitignored), on the project's disk
COMMANDS = {
    "--help": ["--help"],
    "accounts list": ["accounts", "list"],
    "logs summary": ["logs", "summary"],
}


def invocation(args: argparse.Namespace, scratch: Path) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment that run `sysmail-ops` as asked."""
    env = dict(os.environ)
    env.pop("SYSMAIL_HOME", None)
    if not args.no_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    if args.pythonpath or args.module:
        return [args.python, "-m", "sysmail_ops"], env
    exe = shutil.which("sysmail-ops", path=str(Path(args.python).parent))
    if not exe:
        sys.exit(f"no sysmail-ops console script next to {args.python}: pip install -e .")
    return [exe], env


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one run, in seconds; exits on failure."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7, help="measured runs per command (7)")
    ap.add_argument("--python", default=sys.executable, help="interpreter (this one)")
    ap.add_argument(
        "--pythonpath", metavar="DIR", help="run `python -m sysmail_ops` from this checkout"
    )
    ap.add_argument(
        "--module", action="store_true", help="run `python -m sysmail_ops`, not the console script"
    )
    ap.add_argument(
        "--no-bytecode", action="store_true", help="keep the environment's bytecode settings"
    )
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    # Runs start in a scratch folder: `python -m` puts the working directory first on
    # sys.path, which would shadow --pythonpath when run from a checkout.
    scratch = Path(tempfile.mkdtemp(prefix="cli-", dir=RESULTS))
    home = scratch / "ws"
    prefix, env = invocation(args, scratch)
    try:
        where = subprocess.run(
            [args.python, "-c", "import sysmail_ops; print(sysmail_ops.__file__)"],
            env=env,
            cwd=scratch,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        run([*prefix, "--home", str(home), "init"], env, scratch)
        times: dict[str, list[float]] = {}
        for name, argv in COMMANDS.items():
            cmd = [*prefix, *(argv if name == "--help" else ["--home", str(home), *argv])]
            run(cmd, env, scratch)  # warm-up
            times[name] = [run(cmd, env, scratch) for _ in range(args.n)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    bytecode = "as the environment has it" if args.no_bytecode else "cached"
    print(f"\n{' '.join(Path(p).name for p in prefix)}  (code: {Path(where).parent})")
    print(f"{args.n} runs per command, {os.cpu_count()} cores, bytecode {bytecode}\n")
    print(f"{'command':<16} {'min s':>7} {'median s':>9}")
    for name, t in times.items():
        print(f"{name:<16} {min(t):>7.3f} {statistics.median(t):>9.3f}")


if __name__ == "__main__":
    main()
