"""Set names have one home, advflow.workflow.catalog: its functions round-trip, and no other module of the library
or the workflow scripts builds a name with "@" itself (read with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from advflow.workflow import catalog
from advflow.workflow.catalog import (CONTROL_PREFIX, CONTROL_TRAJECTORY, TRAJECTORY, attacked_by, control_name,
                                      control_set, control_trajectory_set, is_control, is_trajectory, parse_set_name,
                                      set_name, set_path, trajectory_set)

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "src" / "advflow" / "workflow" / "catalog.py"
READ = (REPO / "src" / "advflow", REPO / "workflow_scripts")


# --- the catalog's names, by hand and round trip ------------------------------------------------------------------

def test_a_set_is_named_attack_at_target():
    assert set_name("fgsm", "good_init") == "fgsm@good_init"
    assert set_name("jsma_adaptive", "distilled") == "jsma_adaptive@distilled"
    assert set_name("pgd_eps0.1", "vgg_like") == "pgd_eps0.1@vgg_like"


@pytest.mark.parametrize("attack, target", [("fgsm", "good_init"), ("cw", "compressed"), ("random_jsma", "deep_conv"),
                                            ("jsma_control", "distilled"), (TRAJECTORY, "good_init"),
                                            ("pgd_eps0.1", "vgg_like")])
def test_parse_set_name_undoes_set_name(attack, target):
    name = set_name(attack, target)
    assert parse_set_name(name) == (attack, target)
    assert set_name(*parse_set_name(name)) == name


@pytest.mark.parametrize("name", ["normal_test", "normal_train", "@good_init", "fgsm@", "fgsm@good_init@x", ""])
def test_parse_set_name_refuses_what_is_not_an_adversarial_set(name):
    with pytest.raises(ValueError, match="not an adversarial set"):
        parse_set_name(name)


@pytest.mark.parametrize("attack, target", [("", "good_init"), ("fgsm", ""), ("a@b", "good_init"), ("fgsm", "x@y")])
def test_set_name_refuses_parts_that_would_not_parse_back(attack, target):
    with pytest.raises(ValueError):
        set_name(attack, target)


def test_control_names():
    assert control_name("fgsm") == "random_fgsm" == CONTROL_PREFIX + "fgsm"
    assert is_control("random_fgsm") and not is_control("fgsm")
    assert attacked_by(control_name("jsma_control")) == "jsma_control"
    with pytest.raises(ValueError, match="not a control"):
        attacked_by("fgsm")


def test_a_sets_control_keeps_its_target():
    assert control_set("fgsm@good_init") == "random_fgsm@good_init"
    assert control_set(set_name("cw", "compressed")) == set_name(control_name("cw"), "compressed")
    assert parse_set_name(control_set("jsma@deep_conv")) == ("random_jsma", "deep_conv")
    with pytest.raises(ValueError):
        control_set("normal_test")


def test_trajectory_sets():
    assert trajectory_set("good_init") == "trajectory@good_init"
    assert control_trajectory_set("good_init") == "random_trajectory@good_init"
    assert CONTROL_TRAJECTORY == control_name(TRAJECTORY)
    assert is_trajectory(trajectory_set("good_init")) and is_trajectory(control_trajectory_set("deep_conv"))
    assert not is_trajectory(set_name("fgsm", "good_init")) and not is_trajectory("normal_test")


def test_set_path_reads_the_names_the_catalog_makes():
    assert set_path("r", set_name("fgsm", "good_init")) == "r/adv/good_init/fgsm.h5"
    assert set_path("r", control_set(set_name("fgsm", "compressed"))) == "r/adv/compressed/random_fgsm.h5"
    assert set_path("r", trajectory_set("good_init")) == "r/trajectories/good_init/jsma.h5"
    assert set_path("r", control_trajectory_set("good_init")) == "r/trajectories/good_init/random_jsma.h5"
    assert set_path("r", "normal_test") == "r/inputs/normal_test.h5"
    with pytest.raises(ValueError, match="unknown set"):
        set_path("r", "fgsm")


def test_measurements_name_every_set_through_the_catalog():
    pairs = catalog.measurements({"good_init": ["fgsm", "jsma"], "compressed": ["fgsm"]},
                                 [["good_init", "compressed"]], trajectories=2)
    sets = {s for _, s in pairs}
    assert {set_name("fgsm", "good_init"), set_name("jsma", "good_init"), set_name("fgsm", "compressed"),
            control_set("fgsm@good_init"), control_set("jsma@good_init"), control_set("fgsm@compressed"),
            trajectory_set("good_init"), control_trajectory_set("good_init")} <= sets
    assert ("compressed", set_name("fgsm", "good_init")) in pairs  # transferred within the group
    assert ("good_init", set_name("fgsm", "compressed")) in pairs
    assert ("compressed", set_name("jsma", "good_init")) not in pairs  # compressed was not attacked with JSMA
    for name in sets - set(catalog.PROFILES):
        attack, target = parse_set_name(name)  # every name parses back
        assert target in ("good_init", "compressed")


# --- no set name is built outside the catalog -----------------------------------------------------------------------

def _builds_a_name(node: ast.AST) -> bool:
    """An f-string with "@" in its literal text, a ``+`` with an "@" operand, or ``"@".join(...)``."""
    def at(value: ast.AST) -> bool:
        return isinstance(value, ast.Constant) and isinstance(value.value, str) and "@" in value.value
    if isinstance(node, ast.JoinedStr):
        return any(at(v) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return at(node.left) or (isinstance(node.op, ast.Add) and at(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
        return at(node.func.value)
    return False


def names_built(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}" for node in ast.walk(tree)
            if _builds_a_name(node)]


def test_the_reader_finds_names_built_inline():
    found = lambda source: [n for n in ast.walk(ast.parse(source)) if _builds_a_name(n)]  # noqa: E731
    assert found('s = f"{attack}@{target}"') and found('s = f"{a}@{t} on {m}"') and found('s = a + "@" + t')
    assert found('s = "@".join((a, t))') and found('s = "%s@%s" % (a, t)')
    assert not found('s = set_name(a, t)') and not found('s = f"{set_name(a, t)} on {m}"')
    assert not found('"""A docstring naming fgsm@good_init."""') and not found('s = "fgsm@good_init"')


def test_no_module_but_the_catalog_builds_a_set_name():
    files = sorted(p for folder in READ for p in folder.rglob("*.py") if p.resolve() != HOME.resolve())
    assert len(files) > 20, "the library was not found"
    built = [hit for path in files for hit in names_built(path)]
    assert not built, ("set names are built with advflow.workflow.catalog (set_name, control_set, trajectory_set, "
                       "...), not inline:\n" + "\n".join(built))
