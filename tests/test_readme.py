"""The README is the user's manual: it stays short, starts with the quick start, and every command it shows in a
```bash (```sh, ```console) block is run by a test, here in a cheap form (a dry run, ``make -n``, ``--help``) and,
where only a long test can run it as written, by the test named in :data:`LONG_TESTS`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 480  # the manual, with the worked example of a user's own model and data (issue 30)

#: Commands of the README that only a long test runs as written: command (as :func:`readme_commands` normalises
#: it) -> the test that runs it. Each is also run here in its cheap form.
LONG_TESTS = {
    # the tiny_run fixture (tests/conftest.py) runs it; this test is the first to use that run
    "snakemake --cores all --configfile configs/tiny.yaml": "test_tiny_config_trains_all_six_models_end_to_end",
    "snakemake --profile profiles/slurm --default-resources slurm_partition=cpu slurm_account=myproj mem_mb=4000 "
    "runtime=60 --set-resources attack:slurm_partition=gpu features:slurm_partition=gpu mi:slurm_partition=gpu":
        "test_tiny_config_through_slurm_runs_every_job_as_a_slurm_job_with_the_local_runs_results",
    # the worked example of "Your own model and data" (tests/test_user_workflow.py writes its files and runs it)
    "advflow run my_study.yaml --cores all":
        "test_the_readme_example_runs_end_to_end_on_the_users_models_and_its_report_names_them",
}

#: What ``make -n <target>`` must plan for the README's make commands. ``make run`` as written is the default run
#: (about 2 hours on 2 cores; ``benchmarks/default_workflow.sh`` measures it) and ``make test`` the whole suite (what CI,
#: ``.ci/run``, runs): no test runs either as written.
MAKE_PLANS = {"run": ["pip install -e", "-m snakemake --cores all"], "test": ["pip install -e", "-m pytest"]}


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```bash, ```sh and ```console blocks, in order."""
    return re.findall(r"^```(?:bash|sh|console|shell)[ \t]*\n(.*?)^```", text, re.S | re.M)


def readme_commands(text: str | None = None) -> list[str]:
    """Every command of the README's shell blocks: continuation lines joined, a console prompt (``$ ``) and
    comments removed, whitespace normalised."""
    commands: list[str] = []
    for block in shell_blocks(readme_text() if text is None else text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*\$\s+", "", line)
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(" ".join(tokens))
    return commands


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def run(argv: list[str] | str, *, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                            shell=isinstance(argv, str), executable="/bin/bash" if isinstance(argv, str) else None)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _venv(command: str, tmp_path: Path) -> None:
    # as typed, in an empty folder: the environment is made and the shell that sourced it uses its Python
    out = run(f"{command} && python -c 'import sys; print(sys.prefix)'", cwd=tmp_path).stdout
    assert Path(out.strip().splitlines()[-1]).resolve() == (tmp_path / ".venv").resolve()


def _make(command: str, tmp_path: Path) -> None:
    target = command.split()[1:]
    assert len(target) == 1 and target[0] in MAKE_PLANS, f"no plan to check for {command!r}: add it to MAKE_PLANS"
    plan = run(["make", "-n", target[0]], cwd=REPO).stdout
    for step in MAKE_PLANS[target[0]]:
        assert step in plan, f"make -n {target[0]} does not plan {step!r}:\n{plan}"


def _snakemake(command: str, tmp_path: Path) -> None:
    # a dry run from the repository root (relative profiles and configs resolve as for a user), its working
    # directory a temporary folder; the tiny config where the command names none
    tokens = command.split()
    extra = [] if "--configfile" in tokens else ["--configfile", "configs/tiny.yaml"]
    result = run([sys.executable, "-m", "snakemake", *tokens[1:], *extra, "-n", "-s", str(REPO / "Snakefile"),
                  "-d", str(tmp_path / "work")], cwd=REPO)
    assert "This was a dry-run" in result.stdout + result.stderr, result.stdout[-3000:]


def _config_check(command: str, tmp_path: Path) -> None:
    run([sys.executable, "-m", "advflow.config", *command.split()[3:]], cwd=REPO)


def _benchmark_help(command: str, tmp_path: Path) -> None:
    run([sys.executable, command.split()[1], "--help"], cwd=REPO)


def _own_model_example(command: str, tmp_path: Path) -> None:
    # the example's files as the README shows them, its make_my_study.py run, then the command as a dry run there
    from test_user_workflow import readme_example

    files, _ = readme_example()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run([sys.executable, "make_my_study.py"], cwd=tmp_path)
    run([sys.executable, "-m", "advflow", *command.split()[1:], "--dry-run"], cwd=tmp_path)


def _advflow(command: str, tmp_path: Path) -> None:
    # as `python -m advflow ...`; `run` as a dry run in a temporary folder (argparse keeps the last -d)
    tokens = command.split()[1:]
    extra = ["--dry-run", "-d", str(tmp_path / "work")] if tokens[:1] == ["run"] else []
    run([sys.executable, "-m", "advflow", *tokens, *extra], cwd=REPO)


#: Cheap forms: (does it apply to the command, run it). Each takes seconds and writes only under tmp_path.
CHEAP_FORMS: list[tuple[Callable[[list[str]], bool], Callable[[str, Path], None]]] = [
    (lambda t: t[:3] == ["python3", "-m", "venv"], _venv),
    (lambda t: t[0] == "make", _make),
    (lambda t: t[0] == "advflow" and "my_study.yaml" in t, _own_model_example),
    (lambda t: t[0] == "advflow", _advflow),
    (lambda t: t[0] == "snakemake", _snakemake),
    (lambda t: t[0] in ("python", "python3") and t[1:3] == ["-m", "advflow.config"], _config_check),
    (lambda t: t[0] in ("python", "python3") and len(t) > 1 and t[1].startswith("benchmarks/"), _benchmark_help),
]


def cheap_form(command: str) -> Callable[[str, Path], None] | None:
    tokens = command.split()
    return next((runner for applies, runner in CHEAP_FORMS if applies(tokens)), None)


def test_readme_stays_short():
    lines = readme_text().count("\n")
    assert lines < MAX_LINES, f"README.md has {lines} lines; the manual stays under {MAX_LINES} (details go to docs/)"


def test_the_first_section_after_the_intro_is_the_quick_start():
    text = readme_text()
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections and sections[0] == "Quick start", sections[:3]
    quick_start = text[text.index("## Quick start"):text.index(f"## {sections[1]}")]
    assert readme_commands(quick_start)[:3] == [
        "python3 -m venv .venv && . .venv/bin/activate", "make run", "make test"]
    # CI follows the quick start as a user types it
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci and "make test" in ci


def test_the_readme_shows_few_commands_and_each_has_a_test():
    commands = readme_commands()
    assert 0 < len(commands) <= 10, commands  # few, so that this file stays honest
    missing = [c for c in commands if cheap_form(c) is None and c not in LONG_TESTS]
    assert not missing, f"README commands no test runs (give them a cheap form or a LONG_TESTS entry): {missing}"
    stale = [c for c in LONG_TESTS if c not in commands]
    assert not stale, f"LONG_TESTS names commands the README no longer shows: {stale}"


@pytest.mark.parametrize("command, test", sorted(LONG_TESTS.items()), ids=lambda v: v[:40])
def test_each_long_command_is_run_by_an_existing_test(command, test):
    defined = [path for path in (REPO / "tests").rglob("test_*.py")
               if re.search(rf"^def {re.escape(test)}\(", path.read_text(encoding="utf-8"), re.M)]
    assert defined, f"{command!r} is said to be run by {test}, which no file under tests/ defines"


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: c if len(c) <= 60 else c[:57] + "...")
def test_readme_command_runs_in_a_cheap_form(command, tmp_path):
    runner = cheap_form(command)
    if runner is None:
        assert command in LONG_TESTS, f"{command!r} has no cheap form and no long test"
        pytest.skip(f"run as written by {LONG_TESTS[command]}")
    runner(command, tmp_path)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)}
                if anchor not in anchors:
                    broken.append(f"{page.name}: {target} (no such section)")
    assert not broken, broken
