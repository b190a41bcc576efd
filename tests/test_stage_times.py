"""benchmarks/stage_times.py: the figures the README reports for a run (busy cores after training, start-up share),
computed from a Snakemake log and the jobs' own logs."""

import importlib.util
import logging

from conftest import REPO

spec = importlib.util.spec_from_file_location("stage_times", REPO / "benchmarks" / "stage_times.py")
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)


def job(stamp: str, rule: str, jobid: int, log: str) -> str:
    return (f"[Sat Nov 28 10:{stamp} 2026]\nrule {rule}:\n    input: a\n    output: b\n    log: {log}\n"
            f"    jobid: {jobid}\n    threads: 1\n")


def done(stamp: str, jobid: int, rule: str) -> str:
    return f"[Sat Nov 28 10:{stamp} 2026]\nFinished jobid: {jobid} (Rule: {rule})\n"


def test_busy_ratio_and_start_up_share_after_training(tmp_path):
    # Training 10:00:00-10:01:40 (its log's start-up is not counted); then features 10:01:40-10:01:50 and mi
    # 10:01:40-10:02:00 side by side on 2 cores, whose logs record 2 s and 3 s of start-up.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/train.log").write_text("start-up: 9.00 s (...)\n")
    (tmp_path / "logs/f.log").write_text("old run\nstart-up: 7.00 s\nstart-up: 2.00 s (...)\nwork\n")
    (tmp_path / "logs/m.log").write_text("start-up: 3.00 s (...)\n")
    log = tmp_path / "run.snakemake.log"
    log.write_text("Provided cores: 2\n" + job("00:00", "train_model", 1, "logs/train.log")
                   + done("01:40", 1, "train_model") + job("01:40", "features", 2, "logs/f.log")
                   + job("01:40", "mi", 3, "logs/m.log") + done("01:50", 2, "features") + done("02:00", 3, "mi"))
    figures = stage_times.after_training(tmp_path, log)
    assert figures["cores"] == 2 and figures["jobs"] == 2 and figures["wall"] == 20
    assert figures["job_seconds"] == 30 and abs(figures["busy"] - 40 / 30) < 1e-12
    assert figures["startup"] == 5 and abs(figures["startup_share"] - 5 / 30) < 1e-12


def test_every_workflow_script_logs_its_start_up(tmp_path, caplog):
    """Every script calls advflow.workflow.ready() after its imports: the line stage_times.py reads."""
    from advflow.workflow import ready

    scripts = sorted((REPO / "workflow_scripts").glob("*.py"))
    missing = [s.name for s in scripts if "\nready()\n" not in s.read_text()]
    assert scripts and not missing, f"these scripts never call ready(): {missing}"
    with caplog.at_level(logging.INFO, logger="advflow"):
        seconds = ready()
    assert seconds > 0 and stage_times.STARTUP.search(caplog.text).group(1) == f"{seconds:.2f}"


def test_gpu_peaks_are_read_per_rule_from_the_line_every_cuda_job_logs(tmp_path, caplog):
    """The line a CUDA job ends its log with (advflow.workflow.device.GPU_PEAK_LINE) is what stage_times.py collects,
    the largest per rule; a job that did not use CUDA logs none (this machine's case: log_gpu_peak returns None)."""
    import torch

    from advflow.workflow.device import GPU_PEAK_LINE, log_gpu_peak

    with caplog.at_level(logging.INFO, logger="advflow"):
        found = log_gpu_peak()
    if not torch.cuda.is_available():
        assert found is None and "peak GPU memory" not in caplog.text
    for name, peak in (("a.log", 812.0), ("b.log", 1204.5), ("c.log", None)):
        text = "rule mi: 1 thread(s)\n" + (GPU_PEAK_LINE % peak + "\n" if peak is not None else "")
        (tmp_path / name).write_text(text)
    detailed = [("mi", None, None, "a.log"), ("mi", None, None, "b.log"), ("features", None, None, "c.log")]
    assert stage_times.gpu_peaks(tmp_path, detailed) == {"mi": 1204.0}  # logged as "%.0f"
