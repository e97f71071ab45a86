"""Mutation testing of the core modules, one module at a time, then the score of each.

    python scripts/mutation.py                    # every module of [tool.mutmut] only_mutate
    python scripts/mutation.py summary tta        # some of them (cifar_lightning/<name>.py)
    python scripts/mutation.py --scores           # only the table, from what mutants/ holds

Slow (minutes per module; not part of CI) and CPU-heavy, so mutmut runs at the lowest priority.
Each mutant runs the fast tests of ``pytest_add_cli_args_test_selection`` that call its function.
Results accumulate in ``mutants/`` (ignored by git): a module run again reuses them where its
code and tests did not change. ``mutmut show <mutant>`` prints one mutant's diff.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
KILLED = {"killed", "timeout"}  # a mutant that makes the tests hang is caught too


def configured_modules() -> list[str]:
    """``only_mutate`` as module names: cifar_lightning/models/net.py -> models.net."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [p.removeprefix("cifar_lightning/").removesuffix(".py").replace("/", ".") for p in config["only_mutate"]]


def run_module(module: str) -> None:
    subprocess.run(["nice", "-n", "19", *MUTMUT, "run", "--max-children", "2", f"cifar_lightning.{module}.*"],
                   cwd=ROOT, check=True)


def statuses() -> dict[str, Counter]:
    """Mutant statuses by module, from ``mutmut results --all true`` (lines ``<module>.<function>__mutmut_N: <status>``)."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    by_module: dict[str, Counter] = defaultdict(Counter)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            by_module[name.rsplit(".", 1)[0].removeprefix("cifar_lightning.")][status] += 1
    return by_module


def score_table(by_module: dict[str, Counter]) -> str:
    """Markdown: killed / (all mutants that were run), per module; "not checked" mutants were not run."""
    lines = ["| module | mutants | killed | survived | no tests | not checked | score |", "|---|---|---|---|---|---|---|"]
    for module, counts in sorted(by_module.items()):
        killed = sum(counts[s] for s in KILLED)
        run = sum(counts.values()) - counts["not checked"]
        score = f"{100 * killed / run:.0f}%" if run else "-"
        lines.append(f"| {module} | {sum(counts.values())} | {killed} | {counts['survived']} | {counts['no tests']} "
                     f"| {counts['not checked']} | {score} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="module names as in only_mutate (default: all of them)")
    parser.add_argument("--scores", action="store_true", help="print the table only; run nothing")
    args = parser.parse_args()
    known = configured_modules()
    if unknown := sorted(set(args.modules) - set(known)):
        parser.error(f"not in [tool.mutmut] only_mutate: {', '.join(unknown)}; pick from {', '.join(known)}")
    if not args.scores:
        for module in args.modules or known:
            run_module(module)
    print(score_table(statuses()))


if __name__ == "__main__":
    main()
