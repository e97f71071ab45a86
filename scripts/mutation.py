"""Mutation testing of the core modules, one module at a time with its own fast tests, then the score of each.

    python scripts/mutation.py                    # every module of [tool.mutation.tests] in pyproject.toml
    python scripts/mutation.py sweeps tta         # some of them (cifar_lightning/<name>.py)
    python scripts/mutation.py --scores           # only the table, from the runs already made
    python scripts/mutation.py --survivors tta    # after adding tests: run only the mutants that survived

Slow (minutes per module; not part of CI) and CPU-heavy, so mutmut runs at the lowest priority.
Each module runs in ``.mutation/<module>/`` (ignored by git): links to the sources and tests and a
pyproject.toml with ``[tool.mutmut]`` plus that module and its tests, so mutmut's first pass, which
runs every selected test, runs only that module's. A module run again reuses its results where its
code did not change, even where its tests did: ``--survivors`` runs the surviving mutants again against the
current tests. ``cd .mutation/<module> && mutmut show <mutant>`` prints one mutant's diff.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
MUTMUT = [sys.executable, "-m", "mutmut"]
LINKED = ["cifar_lightning", "tests", "conf", "train.py"]
NOT_RUN = ("not checked", "check was interrupted by user", "skipped")  # mutmut's statuses of mutants it did not finish


def module_name(path: str) -> str:
    """cifar_lightning/models/net.py -> models.net"""
    return path.removeprefix("cifar_lightning/").removesuffix(".py").replace("/", ".")


def configured() -> tuple[dict, dict[str, tuple[str, list[str]]]]:
    """pyproject.toml's ``[tool]`` and, by module name, (source file, its test selection)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    return tool, {module_name(path): (path, tests) for path, tests in tool["mutation"]["tests"].items()}


def toml_table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())  # JSON is TOML here


def workspace(module: str, tool: dict, path: str, tests: list[str]) -> Path:
    """``.mutation/<module>/``: the tree by links, the pytest settings, and mutmut's config for this module alone."""
    work = WORK / module
    work.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name)
    mutmut = {**tool["mutmut"], "only_mutate": [path], "pytest_add_cli_args_test_selection": tests}
    (work / "pyproject.toml").write_text(toml_table("tool.mutmut", mutmut) + "\n"
                                         + toml_table("tool.pytest.ini_options", tool["pytest"]["ini_options"]))
    return work


def results(work: Path) -> dict[str, str]:
    """The module's mutants and their status, from ``mutmut results --all true`` (lines ``<mutant>: <status>``)."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=work, check=True, capture_output=True,
                         text=True).stdout
    return dict(line.strip().rpartition(": ")[::2] for line in out.splitlines() if ": " in line)


def statuses(work: Path) -> Counter:
    return Counter(results(work).values())


def score_table(counts_by_module: dict[str, Counter]) -> str:
    """Markdown: killed (or timed out) / mutants run, per module; "not run" mutants were not (or not fully) run."""
    lines = ["| module | mutants | killed | survived | no tests | not run | score |", "|---|---|---|---|---|---|---|"]
    for module, counts in counts_by_module.items():
        killed = counts["killed"] + counts["timeout"]
        not_run = sum(counts[status] for status in NOT_RUN)
        run = sum(counts.values()) - not_run
        score = f"{100 * killed / run:.0f}%" if run else "not run"
        lines.append(f"| {module} | {sum(counts.values())} | {killed} | {counts['survived']} | {counts['no tests']} "
                     f"| {not_run} | {score} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="module names, e.g. sweeps models.net (default: all)")
    parser.add_argument("--scores", action="store_true", help="print the table only; run nothing")
    parser.add_argument("--survivors", action="store_true",
                        help="run only the mutants that survived (or had no tests) in the last run")
    args = parser.parse_args()
    tool, modules = configured()
    if unknown := sorted(set(args.modules) - set(modules)):
        parser.error(f"not in [tool.mutation.tests]: {', '.join(unknown)}; pick from {', '.join(modules)}")
    chosen = args.modules or list(modules)
    for module in chosen:
        work = workspace(module, tool, *modules[module])
        if args.scores:
            continue
        names = []  # all of them, unless only the survivors of an earlier run
        if args.survivors and (work / "mutants").is_dir():
            names = [name for name, status in results(work).items() if status in ("survived", "no tests")]
            if not names:
                continue
        subprocess.run(["nice", "-n", "19", *MUTMUT, "run", "--max-children", "2", *names], cwd=work, check=True)
    print(score_table({m: statuses(WORK / m) for m in chosen if (WORK / m / "mutants").is_dir()}))


if __name__ == "__main__":
    main()
