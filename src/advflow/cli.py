"""The command line: ``advflow`` (or ``python -m advflow``) lists the presets, checks a config, runs the workflow
and names its report.

    advflow presets                                 # the configs beside the Snakefile, with what each runs
    advflow check tiny --set inputs.n=4             # the workflow's config checks, without running anything
    advflow run tiny --set inputs.n=4 -d work       # check, then Snakemake; its last line is the report's path
    advflow report tiny -d work                     # the report of a finished run

A config is a preset's name (``tiny``, ``default`` for ``config.yaml``) or a file. ``--set KEY=VALUE`` sets one
key, nested ones by their dotted path (``inputs.n=4``, ``models.good_init.epochs=3``); VALUE is read as YAML
(``4`` an integer, ``true`` a boolean, ``[fgsm, cw]`` a list, ``null``). ``run`` writes the config with its
``--set`` keys to ``DIR/.advflow/config.cli.yaml`` and passes that file to Snakemake as ``--configfile``: Snakemake's
own ``--config`` takes top-level keys only (README, "Command line"). Every error is one line, prefixed by the
command; a missing config file exits with status 2, an invalid config with 1.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from advflow.config import SCHEMA_PATH, config_errors, load_config_file, load_schema, size_errors, user_model_errors
from advflow.workflow.catalog import is_user_model, role_model, split_sizes, trajectories_wanted
from advflow.workflow.errors import ConfigError
from advflow.workflow.worker import source_root

#: The checkout this package is part of: the Snakefile, config.yaml and configs/ (``src/advflow`` two parents up).
ROOT = source_root().parent
#: Where ``run`` writes the config it passes to Snakemake when ``--set`` changed keys (inside the working directory).
CLI_CONFIG = Path(".advflow") / "config.cli.yaml"
#: Exit status of a config file (or preset) that does not exist, and of an invalid config.
MISSING, INVALID = 2, 1


class CommandError(Exception):
    """A one-line error of the command line, with its exit status."""

    def __init__(self, message: str, status: int = INVALID) -> None:
        super().__init__(message)
        self.status = status


# --- presets and config files --------------------------------------------------------------------------------


def presets() -> dict[str, Path]:
    """Each preset's name and file: ``default`` (``config.yaml`` beside the Snakefile), then ``configs/*.yaml``."""
    found = {"default": ROOT / "config.yaml"} if (ROOT / "config.yaml").is_file() else {}
    found.update({path.stem: path for path in sorted((ROOT / "configs").glob("*.yaml"))})
    return found


def _shown(path: Path) -> str:
    """``path`` relative to the checkout where it lies there (``configs/tiny.yaml``), else as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def header(path: Path) -> list[str]:
    """The comment lines at the top of a YAML file, without their ``#``."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def _without_parentheses(text: str) -> str:
    while True:
        shorter = re.sub(r"\s*\([^()]*\)", "", text)
        if shorter == text:
            return shorter
        text = shorter


def describe(path: Path, width: int = 120) -> tuple[str, str | None]:
    """A preset's one-line description (the first sentence of its top comment, parentheses left out, cut at a comma
    to at most ``width`` characters) and the run time (or the machine it is sized for) that comment states, if any."""
    lines = header(path)
    text = " ".join(line for line in lines if line)
    first = re.split(r"(?<=[\w)\]][.!?])\s+", text, maxsplit=1)[0] if text else ""
    first = _without_parentheses(first).rstrip(".")
    if len(first) > width:
        cut = first[:width]
        first = (cut.rsplit(", ", 1)[0] if ", " in cut else cut.rsplit(" ", 1)[0]).rstrip(",;:") + " ..."
    when = re.search(r"(?:about |a few |~)?\d*[\d.,]*\s*(?:seconds|minutes|hours)(?: on (?:an? |one |\d+ )?"
                     r"[\w-]+(?: CPU| GPU)?)?", text)
    sized = re.search(r"[Ss]ized for (an? [\w-]+(?: CPU| GPU)?|[\w-]+ GPUs?)", text)
    found = when.group(0).strip() if when and when.group(0).strip() else None
    if found is None and sized:
        found = f"sized for {sized.group(1)}"
    if found and found in first:  # said already
        found = None
    return first or "(no description: the file starts without a comment)", found


def locate(spec: str | None, command: str) -> Path:
    """The config file that ``spec`` names: None is ``config.yaml``; an existing file; a preset's name (``tiny``);
    a path inside the checkout (``configs/tiny.yaml`` from any folder). Else a :class:`CommandError` (status 2)
    that names the presets that exist."""
    if spec is None:
        return ROOT / "config.yaml"
    given = Path(spec).expanduser()
    if given.is_dir():
        raise CommandError(f"advflow {command}: {spec} is a folder, not a config file", MISSING)
    if given.is_file():
        return given
    known = presets()
    if spec in known:
        return known[spec]
    if not given.is_absolute() and (ROOT / given).is_file():
        return ROOT / given
    names = ", ".join(known) or "none"
    what = f"no such config file {spec}" if ("/" in spec or spec.endswith((".yaml", ".yml", ".json"))) else \
        f"no preset or config file {spec!r}"
    raise CommandError(f"advflow {command}: {what}; the presets are {names} (advflow presets describes them)",
                       MISSING)


def read_config(path: Path, command: str) -> dict[str, Any]:
    """The config in ``path``, or a one-line :class:`CommandError` where it cannot be read, is not YAML, is not a
    mapping, or is some other kind of file (none of its keys is a config key)."""
    try:
        config = load_config_file(path)
    except UnicodeDecodeError:
        raise CommandError(f"advflow {command}: {path}: not a text file; a config is a YAML file of keys "
                           f"(e.g. configs/tiny.yaml)") from None
    except ConfigError as error:
        raise CommandError(f"advflow {command}: " + " ".join(str(error).split())) from None
    keys = set(yaml.safe_load(SCHEMA_PATH.read_text())["properties"])
    if not keys & set(map(str, config)):
        found = ", ".join(list(map(str, config))[:4]) + (", ..." if len(config) > 4 else "")
        raise CommandError(f"advflow {command}: {path}: not an advflow config (its keys {found} are none of the "
                           f"config's, e.g. seed, dataset, models); advflow presets lists the configs")
    return config


# --- --set KEY=VALUE ---------------------------------------------------------------------------------------------


def _merge(config: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


def apply_sets(config: dict[str, Any], sets: list[str], command: str) -> dict[str, Any]:
    """A copy of ``config`` with each ``KEY=VALUE`` of ``sets`` applied in order: KEY a dotted path (missing
    mappings on the way are made), VALUE read as YAML; a mapping VALUE is merged into a mapping already there."""
    config = copy.deepcopy(config)
    for item in sets:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise CommandError(f"advflow {command}: --set {item!r}: write KEY=VALUE with a dotted KEY, e.g. "
                               "--set inputs.n=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise CommandError(f"advflow {command}: --set {item!r}: {text!r} is not a YAML value; quote it, "
                               f"e.g. --set '{key}=\"{text}\"'") from None
        node = config
        for i, name in enumerate(parts[:-1]):
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            elif not isinstance(child, dict):
                raise CommandError(f"advflow {command}: --set {item!r}: {'.'.join(parts[: i + 1])} is {child!r} "
                                   "in the config, not a mapping of keys")
            node = child
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return config


# --- checks -----------------------------------------------------------------------------------------------------


def problems(config: dict[str, Any], workdir: Path) -> list[str]:
    """Every problem the workflow would stop at before its first job (advflow.config's checks, in the
    Snakefile's order: the schema and cross-key rules, the defense and seed 001 blocks, then the counts
    against ``workdir/data/{dataset}.h5`` or the dataset's known sizes)."""
    messages = config_errors(config, load_schema(SCHEMA_PATH))
    if messages:
        return messages
    from advflow.defenses.settings import defense_settings
    from advflow.perturbations.settings import perturbation_settings

    try:
        defense_settings(config)
        perturbation_settings(config)
        dataset = config["dataset"]
        sizes = split_sizes(dataset, (config.get("datasets") or {}).get(dataset),
                            workdir / "data" / f"{dataset}.h5")
        found = size_errors(config, sizes)
        if found:
            return found
        # the user's models, built and run once as the workflow's check does, from the run's folder (their modules
        # are imported from there)
        here = Path.cwd()
        try:
            os.chdir(workdir if workdir.is_dir() else here)
            return user_model_errors(config, workdir.resolve() / "data" / f"{dataset}.h5")
        finally:
            os.chdir(here)
    except ConfigError as error:
        return [" ".join(str(error).split())]


def summary(config: dict[str, Any]) -> list[str]:
    """What a run of a valid ``config`` does, in a few lines."""
    from advflow.config import with_defaults
    from advflow.defenses.settings import defense_settings
    from advflow.perturbations.settings import perturbation_settings

    filled = with_defaults(config)
    attack_sets = {t: list(a) for t, a in (config.get("attack_sets") or {}).items() if a}
    models = config.get("models") or {}
    loaded = [m for m, entry in models.items() if is_user_model(entry) and entry.get("checkpoint")]
    stages = ["data", "training" if len(loaded) < len(models) else "models (loaded from their checkpoints)"]
    if attack_sets:
        stages += ["attacks", "information flow (Q1-Q5)", "report"]
        if trajectories_wanted(attack_sets, filled["trajectories"]["n"], role_model(config, "trajectories")):
            stages.insert(3, "JSMA trajectories")
    if defense_settings(config):
        stages.append("defense (seed 003)")
    if perturbation_settings(config):
        stages.append("perturbations (seed 001)")
    sets = sum(len(a) for a in attack_sets.values())
    study = (f"N = {filled['inputs']['n']} inputs (inputs.n); {sets} attack set(s) on {len(attack_sets)} model(s)"
             if attack_sets else "no attack_sets: no information-flow study and no report.html")
    return [f"dataset {config['dataset']}, device {filled['device']}, seed {config.get('seed')}",
            f"models: {', '.join(config.get('models') or {}) or 'none'}", study, f"stages: {', '.join(stages)}"]


def checked(spec: str | None, sets: list[str], workdir: Path, command: str) -> tuple[Path, dict[str, Any]]:
    """The config file ``spec`` names and its config with ``sets`` applied, checked: a :class:`CommandError`
    with one line per problem where it is invalid."""
    path = locate(spec, command)
    config = apply_sets(read_config(path, command), sets, command)
    found = problems(config, workdir)
    if found:
        where = _shown(path) + (" with --set " + " ".join(sets) if sets else "")
        raise CommandError("\n".join(f"advflow {command}: {where}: {m}" for m in found))
    return path, config


def report_path(config: dict[str, Any], workdir: Path) -> Path:
    """Where the Snakefile writes the run's report (rules/report.smk), in ``workdir``."""
    return workdir / "results" / str(config["dataset"]) / "report.html"


# --- the subcommands --------------------------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    found = presets()
    if not found:
        raise CommandError(f"advflow presets: no config.yaml or configs/*.yaml under {ROOT}")
    width = max(len(name) for name in found)
    print(f"Presets (advflow run NAME; the files are in {ROOT}):")
    for name, path in found.items():
        text, when = describe(path)
        print(f"  {name:<{width}}  {_shown(path)}: {text}" + (f" [{when}]" if when else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    workdir = Path(args.directory)
    path, config = checked(args.config, args.set, workdir, "check")
    print(f"{_shown(path)}" + (f" with --set {' '.join(args.set)}" if args.set else "") + ": ok")
    for line in summary(config):
        print(f"  {line}")
    return 0


def snakemake_command(configfile: Path, workdir: Path, cores: str, dry_run: bool, extra: list[str]) -> list[str]:
    """The Snakemake command line of ``advflow run``."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile",
            str(configfile), "--cores", cores, "-d", str(workdir), *(["-n"] if dry_run else []), *extra]


def cmd_run(args: argparse.Namespace) -> int:
    if not (ROOT / "Snakefile").is_file():
        raise CommandError(f"advflow run: no Snakefile in {ROOT}; run advflow from its checkout "
                           "(pip install -e .)", MISSING)
    workdir = Path(args.directory).resolve()
    path, config = checked(args.config, args.set, workdir, "run")
    configfile = path.resolve()
    if args.set:  # the config with its --set keys, as one file (Snakemake's --config takes top-level keys only)
        configfile = workdir / CLI_CONFIG
        configfile.parent.mkdir(parents=True, exist_ok=True)
        configfile.write_text(f"# Written by advflow run: {_shown(path)} with --set {' '.join(args.set)}\n"
                              + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    command = snakemake_command(configfile, workdir, args.cores, args.dry_run, args.snakemake)
    print("advflow run: " + shlex.join(command), file=sys.stderr, flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        raise CommandError(f"advflow run: snakemake stopped with exit status {status}; its messages are above "
                           "(a failed job's log is named there)", status)
    report = report_path(config, workdir)
    if not config.get("attack_sets"):
        print(f"advflow run: {'dry run; ' if args.dry_run else ''}this config makes no report.html (no attack_sets);"
              f" its results are under {report.parent}")
    elif args.dry_run:
        print(f"advflow run: dry run; the report will be {report}")
    elif report.is_file():
        print(f"report: {report}")
    else:  # targets of its own after --
        print(f"advflow run: done; the targets asked for did not include the report ({report})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    workdir = Path(args.directory).resolve()
    spec = args.config
    config = read_config(locate(spec, "report"), "report") if spec is not None else None
    how = " ".join(["advflow run", *([spec] if spec else []),
                    *(["-d", args.directory] if args.directory != "." else [])])
    if config is None:
        found = sorted(workdir.glob("results/*/report.html"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CommandError(f"advflow report: no report in {workdir / 'results'} yet; {how} makes one")
        for path in found:
            print(path)
        return 0
    report = report_path(config, workdir)
    if not config.get("attack_sets"):
        raise CommandError(f"advflow report: {spec} makes no report.html (no attack_sets); its results are under "
                           f"{report.parent}")
    if not report.is_file():
        raise CommandError(f"advflow report: {report} does not exist yet; {how} makes it")
    print(report)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="advflow",
        description="The advflow workflow from the command line: list the presets, check a config, run it with "
                    "Snakemake and name the report. A CONFIG is a preset's name (advflow presets) or a YAML file.",
        epilog="Each command has its own --help, e.g. advflow run --help.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    set_help = ("set one config key, nested by its dotted path (inputs.n=4, models.good_init.epochs=3); VALUE is "
                "read as YAML (4, 0.5, true, null, [fgsm, cw], {n: 4}); repeatable")

    p = commands.add_parser("presets", help="list the presets with what each runs",
                            description="List config.yaml (the default) and configs/*.yaml: the first sentence of "
                                        "each file's top comment, and the run time it states.")
    p.set_defaults(func=cmd_presets)

    p = commands.add_parser("check", help="check a config without running anything",
                            description="Check a config as the workflow does before its first job (the schema, "
                                        "the cross-key rules, the counts the dataset can supply) and print 'ok' "
                                        "with what it runs, or one line per problem (exit status 1; 2 where the "
                                        "config file does not exist).")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="a preset's name or a config file (default: "
                                                               "config.yaml beside the Snakefile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("-d", "--directory", default=".", metavar="DIR",
                   help="the run's working directory, whose data/{dataset}.h5 the counts are checked against "
                        "(default: this folder)")
    p.set_defaults(func=cmd_check)

    p = commands.add_parser("run", help="check a config, run the workflow, print the report's path",
                            description="Check the config, run the workflow with Snakemake (python -m snakemake "
                                        "--snakefile <checkout>/Snakefile --configfile CONFIG --cores N -d DIR), "
                                        "then print the report's path. With --set, the changed config is written "
                                        "to DIR/.advflow/config.cli.yaml and passed as --configfile.",
                            epilog="Arguments after -- go to Snakemake, e.g. advflow run tiny -- --keep-going.")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="a preset's name (tiny) or a config file "
                                                               "(default: config.yaml beside the Snakefile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--cores", default="all", metavar="N", help="cores for Snakemake's jobs (default: all)")
    p.add_argument("-d", "--directory", default=".", metavar="DIR",
                   help="the run's working directory: data/, results/ and .snakemake/ go there (default: this "
                        "folder)")
    p.add_argument("-n", "--dry-run", action="store_true", help="plan the jobs without running them (snakemake -n)")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("report", help="print the path of a finished run's report",
                            description="Print the path of the report of a finished run in DIR: that CONFIG's "
                                        "results/{dataset}/report.html, or without CONFIG every report under "
                                        "DIR/results. One line saying which command makes it where there is none.")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the run's preset or config file (default: every "
                                                               "report in DIR)")
    p.add_argument("-d", "--directory", default=".", metavar="DIR", help="the run's working directory (default: "
                                                                        "this folder)")
    p.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    """``advflow COMMAND ...``: the exit status (0, 1 for an invalid config or a failed run, 2 for a config file
    that does not exist or a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # the rest goes to Snakemake (advflow run ... -- --keep-going)
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    args = parser().parse_args(argv)
    if extra and args.command != "run":
        parser().error(f"arguments after -- are for advflow run only: {' '.join(extra)}")
    args.snakemake = extra
    try:
        return args.func(args)
    except CommandError as error:
        print(error, file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("advflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
