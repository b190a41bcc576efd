"""The library's layout: a package per stage, named like its rule file, stacked in floors that import only
downwards, with no import circle and no two sibling modules whose names differ by one letter (read with ast)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from advflow.workflow.digests import code_modules

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "advflow"

#: Each top-level part of the library and its floor: a module imports only from its own part and lower floors.
#: The plumbing is the ground floor; the config checks know every stage's settings, so they sit above the stages;
#: the command line (cli, and python -m advflow's __main__ on it) is the top.
FLOORS = {"advflow": 0, "workflow": 0, "data": 1, "models": 2, "attacks": 3, "information": 4, "defenses": 5,
          "perturbations": 5, "config": 6, "report": 7, "api": 8, "cli": 9, "__main__": 10}
#: The rule file of each stage package (rules/<name>.smk runs advflow.<name>).
STAGES = ("data", "models", "attacks", "information", "defenses", "perturbations", "report")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The library modules that ``name`` imports anywhere in its body (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def part(name: str) -> str:
    """The top-level part of the library a module belongs to (``advflow`` itself: its version and the lazy API)."""
    return name.split(".")[1] if name.count(".") else "advflow"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items() if name != "advflow"}


def test_the_library_has_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if state.get(other) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(other):] + [other]))
            if other not in state:
                visit(other)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_every_part_of_the_library_has_a_floor():
    assert {part(name) for name in graph()} <= set(FLOORS), set(map(part, graph())) - set(FLOORS)


def test_no_module_imports_up_the_floors_or_across_one():
    wrong = []
    for name, targets in graph().items():
        here = part(name)
        for target in targets:
            there = part(target)
            if there != here and (FLOORS[there] > FLOORS[here] or FLOORS[there] == FLOORS[here]):
                wrong.append(f"{name} imports {target} ({there}, floor {FLOORS[there]} >= {here}'s {FLOORS[here]})")
    assert not wrong, "\n".join(wrong)


def _one_letter_apart(a: str, b: str) -> bool:
    """Names one letter apart (a numbered series such as q1 … q5 is not)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        differ = [(x, y) for x, y in zip(a, b) if x != y]
        return len(differ) == 1 and not (differ[0][0].isdigit() and differ[0][1].isdigit())
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def test_no_two_siblings_differ_by_one_letter():
    folders = {LIBRARY, *(p for p in LIBRARY.rglob("*") if p.is_dir() and (p / "__init__.py").exists())}
    clashes = []
    for folder in folders:
        names = sorted({p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
                       | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()})
        clashes += [(folder.name, a, b) for i, a in enumerate(names) for b in names[i + 1:] if _one_letter_apart(a, b)]
    assert not clashes


def test_one_letter_apart_is_what_it_says():
    assert _one_letter_apart("control", "controls") and _one_letter_apart("model", "modes")
    assert not _one_letter_apart("mi", "io")  # two letters apart
    assert not _one_letter_apart("q1", "q2")  # a numbered series
    assert not _one_letter_apart("grid", "data") and not _one_letter_apart("sets", "sets")


def rule_scripts() -> dict[str, list[Path]]:
    """Each rule file's stage and the workflow scripts its rules run."""
    found = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        scripts = [s for s in re.findall(r'script:\s*\n?\s*"([^"]+)"', text) if "{" not in s]
        # rules written once with `use rule ... with:` name their script in a param the script path reads
        scripts += [f"../workflow_scripts/{s}" for s in re.findall(r'^\s+script="([^"]+)",', text, re.M)]
        found[smk.stem] = [(smk.parent / s).resolve() for s in scripts]
        assert all(path.is_file() for path in found[smk.stem]), found[smk.stem]
    return found


def test_each_stage_package_has_a_rule_file_of_its_name_and_back():
    rules = {name for name, scripts in rule_scripts().items() if scripts}
    assert rules == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_runs_its_own_package_and_nothing_above_it(stage):
    """What makes a change to one stage's module rerun that stage and what follows, nothing upstream: a
    rule's code digest covers exactly the modules its script imports (advflow.workflow.digests), and no
    rule of a stage imports a module of a later stage."""
    for script in rule_scripts()[stage]:
        modules = code_modules(script)  # the library the Snakefile's digests read (advflow.workflow.digests' root)
        assert modules == code_modules(script, LIBRARY), "the digests' default library root is not src/advflow"
        parts = {part(name) for name in modules if name != "advflow"}
        assert stage in parts, f"{script.name} runs no module of advflow.{stage}"
        above = {p for p in parts if FLOORS[p] > FLOORS[stage] and p != "config"}
        assert not above, f"{script.name} ({stage}) runs modules of later stages: {above}"
