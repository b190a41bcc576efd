"""The command line (advflow.cli, ``advflow`` / ``python -m advflow``): its subcommands, their --help, ``--set`` for
nested keys, the one-line errors (a missing preset, the wrong kind of file, an invalid value, no report yet), and a
training job's progress on Snakemake's console (advflow.workflow.console_progress)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advflow import cli
from advflow.models.architectures import ConvNet, architecture
from advflow.models.training import TrainSettings, duration, fit
from advflow.workflow import console_progress

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def advflow(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m advflow ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "advflow", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def main(capsys, *args: str) -> tuple[int, str, str]:
    """advflow.cli.main in this process: (status, stdout, stderr)."""
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


# --- --help ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["presets"], ["check"], ["run"], ["report"]],
                         ids=lambda c: " ".join(c) or "advflow")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: advflow {' '.join(command)}".rstrip())
    if command == ["run"]:
        assert "--set KEY=VALUE" in out and "--dry-run" in out and "--cores" in out and "-d DIR" in out


def test_python_dash_m_advflow_without_a_command_is_a_usage_error(tmp_path):
    result = advflow(cwd=tmp_path)
    assert result.returncode == 2 and "usage: advflow" in result.stderr
    assert advflow("--help", cwd=tmp_path).returncode == 0


# --- presets ------------------------------------------------------------------------------------------------------


def test_presets_lists_every_config_with_its_description(capsys):
    status, out, err = main(capsys, "presets")
    assert status == 0 and not err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"default", *(p.stem for p in (REPO / "configs").glob("*.yaml"))}
    assert "tiny" in lines and "paper-cifar10" in lines
    assert "configs/tiny.yaml: Tiny run for the tests" in lines["tiny"]
    assert "[a few minutes on a 2-core CPU]" in lines["tiny"]  # the run time the file states
    assert "config.yaml: advflow, the default run: Fashion-MNIST" in lines["default"]
    assert "[sized for a GPU]" in lines["paper-cifar10"]


def test_a_description_is_the_first_sentence_without_parentheses(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("# My run (see the notes): two models,\n# about 3 minutes on one GPU. More text.\nseed: 0\n")
    assert cli.describe(preset) == ("My run: two models, about 3 minutes on one GPU", None)
    preset.write_text("seed: 0\n")
    assert cli.describe(preset)[0].startswith("(no description")


# --- check --------------------------------------------------------------------------------------------------------


def test_check_a_good_preset_prints_ok_and_what_it_runs(capsys, tmp_path):
    status, out, err = main(capsys, "check", "tiny", "-d", str(tmp_path))
    assert status == 0 and not err
    assert out.splitlines()[0] == "configs/tiny.yaml: ok"
    assert "dataset synthetic" in out and "good_init" in out and "N = 6 inputs" in out
    assert "stages: data, training, attacks" in out and "defense (seed 003)" in out


@pytest.mark.parametrize("value, says", [("-1", "config key 'inputs.n' is -1; it must be at least 1"),
                                         ("four", "config key 'inputs.n' must be an integer; got str 'four'")])
def test_check_a_bad_value_is_one_line_and_exit_1(value, says, capsys, tmp_path):
    status, out, err = main(capsys, "check", "tiny", "--set", f"inputs.n={value}", "-d", str(tmp_path))
    assert status == 1 and not out
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"advflow check: configs/tiny.yaml with --set inputs.n={value}: {says}")


def test_set_reaches_nested_keys_as_yaml_values():
    config = {"seed": 0, "inputs": {"n": 50}, "models": {"good_init": None, "deep_conv": {"epochs": 1}}}
    changed = cli.apply_sets(config, ["inputs.n=4", "models.good_init.epochs=3", "models.deep_conv={lr: 0.5}",
                                      "mi.bias_correction=true", "datasets.mnist.path=", "seed=7"], "check")
    assert changed["inputs"] == {"n": 4} and changed["seed"] == 7
    assert changed["models"] == {"good_init": {"epochs": 3}, "deep_conv": {"epochs": 1, "lr": 0.5}}  # merged
    assert changed["mi"] == {"bias_correction": True} and changed["datasets"] == {"mnist": {"path": None}}
    assert config["inputs"]["n"] == 50  # the loaded config is left as it was


@pytest.mark.parametrize("item, says", [("inputs.n", "write KEY=VALUE"), ("inputs..n=4", "write KEY=VALUE"),
                                        ("seed.n=4", "seed is 0 in the config, not a mapping"),
                                        ("inputs.n=[4", "is not a YAML value")])
def test_a_malformed_set_is_one_line(item, says, capsys):
    status, out, err = main(capsys, "check", "tiny", "--set", item)
    assert status == 1 and len(err.splitlines()) == 1 and says in err, err


def test_an_unknown_key_set_is_named(capsys):
    status, _, err = main(capsys, "check", "tiny", "--set", "inputs.m=4")
    assert status == 1 and "unknown config key 'm' under 'inputs'; allowed: n" in err


# --- a missing preset and the wrong kind of file -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "run", "report"])
@pytest.mark.parametrize("spec", ["nope", "configs/nope.yaml"])
def test_a_missing_preset_is_one_line_naming_the_presets_and_exit_2(command, spec, capsys, tmp_path):
    status, out, err = main(capsys, command, spec, "-d", str(tmp_path))
    assert status == 2 and not out
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"advflow {command}: no ")
    assert spec in err and "the presets are default, " in err and "tiny" in err
    assert not (tmp_path / ".snakemake").exists()  # nothing ran


def test_the_missing_preset_of_python_dash_m_advflow_run(tmp_path):
    result = advflow("run", "configs/nope.yaml", "-d", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.splitlines() == [
        "advflow run: no such config file configs/nope.yaml; the presets are "
        f"{', '.join(cli.presets())} (advflow presets describes them)"]


@pytest.mark.parametrize("content, says", [
    (b"seed: 0\ndataset: [synthetic\n", "line 3, column 1: not valid YAML"),
    (b"- a list\n", "a list at the top level; a config is a mapping of keys"),
    (b"cff-version: 1.2.0\ntitle: advflow\n", "not an advflow config (its keys cff-version, title are none"),
    (b"\x89HDF\r\n\x1a\n\x00\x00\xff\xfe", "not a text file"),
])
def test_the_wrong_kind_of_file_is_one_line(content, says, capsys, tmp_path):
    path = tmp_path / "wrong.yaml"
    path.write_bytes(content)
    status, out, err = main(capsys, "check", str(path))
    assert status == 1 and not out
    assert len(err.splitlines()) == 1 and says in err, err


# --- run ------------------------------------------------------------------------------------------------------------


def test_run_dry_run_of_tiny_with_nested_sets(tmp_path):
    """`advflow run tiny --dry-run --set ...` plans the run with the set keys (trajectories.n=0 drops Q1's JSMA
    trajectories): the merged config goes to Snakemake as DIR/.advflow/config.cli.yaml; the preset is unchanged."""
    preset = (REPO / "configs" / "tiny.yaml").read_text()
    work = tmp_path / "work"
    result = advflow("run", "tiny", "--dry-run", "--set", "inputs.n=4", "--set", "trajectories.n=0", "--cores", "2",
                     "-d", str(work), cwd=tmp_path)
    both = result.stdout + result.stderr
    assert result.returncode == 0, both[-3000:]
    assert "This was a dry-run" in both and "train_model" in both and "jsma_trajectories" not in both
    written = work / ".advflow" / "config.cli.yaml"
    config = yaml.safe_load(written.read_text())
    assert config["inputs"] == {"n": 4} and config["trajectories"] == {"n": 0}
    assert config["models"] == yaml.safe_load(preset)["models"]
    assert (REPO / "configs" / "tiny.yaml").read_text() == preset
    assert f"--configfile {written}" in result.stderr and f"-d {work}" in result.stderr
    assert result.stdout.splitlines()[-1] == (f"advflow run: dry run; the report will be "
                                              f"{work / 'results' / 'synthetic' / 'report.html'}")
    assert not (work / "results").exists()


def test_run_checks_before_snakemake(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli.subprocess, "run", lambda *a, **k: pytest.fail("snakemake started"))
    status, out, err = main(capsys, "run", "tiny", "--set", "inputs.n=0", "-d", str(tmp_path))
    assert status == 1 and len(err.splitlines()) == 1 and "'inputs.n' is 0" in err
    assert not (tmp_path / ".advflow").exists()


def test_run_passes_its_options_and_names_the_report(capsys, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    status, out, err = main(capsys, "run", str(REPO / "configs" / "tiny.yaml"), "--cores", "3", "-d", str(tmp_path),
                            "--", "--keep-going")
    assert status == 0
    assert calls == [[sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
                      str(REPO / "configs" / "tiny.yaml"), "--cores", "3", "-d", str(tmp_path), "--keep-going"]]
    report = tmp_path / "results" / "synthetic" / "report.html"
    assert out == f"advflow run: done; the targets asked for did not include the report ({report})\n"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    assert main(capsys, "run", "tiny", "-d", str(tmp_path))[:2] == (0, f"report: {report}\n")
    monkeypatch.setattr(cli.subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 1))
    status, out, err = main(capsys, "run", "tiny", "-d", str(tmp_path))
    assert status == 1 and err.splitlines()[-1].startswith("advflow run: snakemake stopped with exit status 1")


def test_extra_arguments_are_for_run_only(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["check", "tiny", "--", "--keep-going"])
    assert stop.value.code == 2 and "for advflow run only" in capsys.readouterr().err


# --- report -----------------------------------------------------------------------------------------------------------


def test_report_of_a_folder_without_one_is_one_line(capsys, tmp_path):
    status, out, err = main(capsys, "report", "-d", str(tmp_path))
    assert status == 1 and not out
    assert err.splitlines() == [f"advflow report: no report in {tmp_path / 'results'} yet; "
                                f"advflow run -d {tmp_path} makes one"]
    status, out, err = main(capsys, "report", "tiny", "-d", str(tmp_path))
    assert status == 1 and err.splitlines() == [
        f"advflow report: {tmp_path / 'results' / 'synthetic' / 'report.html'} does not exist yet; "
        f"advflow run tiny -d {tmp_path} makes it"]
    status, out, err = main(capsys, "report", "paper-defense", "-d", str(tmp_path))
    assert status == 1 and "makes no report.html (no attack_sets)" in err and len(err.splitlines()) == 1


def test_report_prints_the_path_of_a_finished_run(capsys, tmp_path):
    report = tmp_path / "results" / "synthetic" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    assert main(capsys, "report", "tiny", "-d", str(tmp_path)) == (0, f"{report}\n", "")
    assert main(capsys, "report", "-d", str(tmp_path)) == (0, f"{report}\n", "")


# --- training's progress on the console ------------------------------------------------------------------------------


def toy_data(n=60):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = (rng.random((n, 1, 8, 8)) * 80 + labels[:, None, None, None] * 80).astype(np.uint8)
    return images, labels


def test_duration_reads_as_a_clock():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3661)] == ["0:00", "0:59", "1:01", "59:59", "1:01:01"]


@pytest.mark.parametrize("interval, expected", [(0.0, 4 + 1), (3600.0, 1 + 1)])
def test_training_progress_reaches_the_console_handler(interval, expected, capsys, caplog):
    """Every progress line (epoch, batch, images/s, time left) reaches the console handler, at most one per
    interval, and the last line (training's end) always."""
    images, labels = toy_data()
    torch.manual_seed(0)
    model = ConvNet(architecture("deep_conv", 1, (8, 8), 3))
    handler = console_progress(sys.stderr, "train_model model=deep_conv", interval=interval)
    try:
        with caplog.at_level("INFO", logger="advflow.models.training"):
            fit(model, images, labels, TrainSettings(epochs=1, batch_size=16, log_every=1), seed=0,
                device=torch.device("cpu"))
    finally:
        logging.getLogger("advflow.models.training").removeHandler(handler)
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("advflow train_model model=deep_conv: ") for line in lines), lines
    assert len(lines) == expected, lines
    assert " epoch 1/1 batch 1/4 loss " in lines[0] and " img/s, " in lines[0] and lines[0].endswith(" left)")
    assert "trained 1 epoch(s) of 4 batches in " in lines[-1]
    ours = [r.getMessage() for r in caplog.records if r.name == "advflow.models.training"]
    assert len(ours) == 4 + 1  # the rule's log has them all


def test_a_job_shows_training_progress_on_its_stderr_and_keeps_it_in_its_log(tmp_path):
    """advflow.workflow.start, as a job calls it: the rule's log gets every line, the job's own stderr (Snakemake's
    console in a local run) the progress too."""
    log = tmp_path / "train.log"
    script = textwrap.dedent(f"""
        import types
        import numpy as np, torch
        from snakemake.iocontainers import Wildcards
        from advflow.workflow import start
        sm = types.SimpleNamespace(log=[{str(log)!r}], threads=1, config={{"device": "cpu"}}, rule="train_model",
                                   wildcards=Wildcards(fromdict={{"dataset": "synthetic", "model": "good_init"}}))
        device = start(sm)
        print("to the log only")
        from advflow.models.architectures import ConvNet, architecture
        from advflow.models.training import TrainSettings, fit
        labels = np.arange(40) % 2
        images = (np.random.default_rng(0).random((40, 1, 8, 8)) * 200).astype(np.uint8)
        fit(ConvNet(architecture("deep_conv", 1, (8, 8), 2)), images, labels,
            TrainSettings(epochs=1, batch_size=20, log_every=1), seed=0, device=device)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stderr.splitlines()
    assert console[0].startswith("advflow train_model model=good_init: epoch 1/1 batch 1/2 loss "), console
    assert "img/s, " in console[0] and console[0].endswith(" left)")
    assert console[-1].startswith("advflow train_model model=good_init: trained 1 epoch(s) of 2 batches in ")
    # the first line, then at most one per 10 s, and the last; nothing else (Lightning's own lines go to the log)
    assert all(line.startswith("advflow train_model model=good_init: ") for line in console) and not result.stdout
    text = log.read_text()
    assert "to the log only" in text and "epoch 1/1 batch 2/2" in text and "trained 1 epoch(s)" in text
