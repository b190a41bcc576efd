"""The GPU path against the CPU's (issue 31): the MI kernel and the features stage give the same numbers on CUDA, FGSM
the same successful inputs, one training epoch the same accuracy within a point. Each test is skipped, saying why,
where no CUDA device is present (CI has none; a lent GPU machine runs them: docs/benchmarks.md, "GPU")."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from advflow.attacks.library import run_attack
from advflow.data import make_synthetic, to_model_space
from advflow.information.features import record_features
from advflow.information.mi import bucketize, layer_mi, mi_matrix
from advflow.models.architectures import ConvNet, architecture, save_checkpoint
from advflow.models.training import TrainSettings, accuracy, fit
from conftest import BLOB_CLASSES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU path is compared with the CPU's only where "
                                       "torch.cuda.is_available() (a lent GPU machine)")
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def maps(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).relu()


def test_the_mi_kernel_on_the_gpu_equals_the_cpus():
    a, b = bucketize(maps(4, 32, 196, seed=0)), bucketize(maps(4, 24, 196, seed=1))
    np.testing.assert_allclose(mi_matrix(a.to(CUDA), b.to(CUDA)).cpu().numpy(), mi_matrix(a, b).numpy(),
                               rtol=0, atol=1e-5)
    layer, source, target = maps(3, 16, 28, 28, seed=2), maps(3, 1, 28, 28, seed=3), maps(3, 8, 7, 7, seed=4)
    on_gpu = layer_mi(layer.to(CUDA), source.to(CUDA), target.to(CUDA))
    on_cpu = layer_mi(layer, source, target)
    for gpu, cpu in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=0, atol=1e-5)


def test_the_features_stage_on_the_gpu_stores_the_cpus_maps(tmp_path):
    torch.manual_seed(0)
    model = ConvNet(architecture("vgg_like", 1, (12, 12), 4)).eval()
    save_checkpoint(model, tmp_path / "model.pt")
    data = make_synthetic(n_train=40, n_test=30, size=12, channels=1, num_classes=4)
    with h5py.File(tmp_path / "set.h5", "w") as h5:  # an adversarial set's layout: model-space inputs and labels
        h5["adversarial"] = to_model_space(data.test.images.astype(np.float32))
        h5["labels"] = data.test.labels
    for device in ("cpu", "cuda"):
        record_features(tmp_path / "model.pt", tmp_path / "set.h5", tmp_path / f"{device}.h5", set_name="fgsm@vgg_like",
                        dtype="float32", device=device)
    with h5py.File(tmp_path / "cpu.h5", "r") as cpu, h5py.File(tmp_path / "cuda.h5", "r") as gpu:
        assert list(cpu["layers"]) == list(gpu["layers"])
        for name in cpu["layers"]:
            np.testing.assert_allclose(gpu[f"layers/{name}"][:], cpu[f"layers/{name}"][:], rtol=1e-4, atol=1e-4)
        assert np.array_equal(gpu["predictions"][:], cpu["predictions"][:])


def test_fgsm_on_the_gpu_fools_the_same_inputs_as_on_the_cpu(model, seeds):
    x, y = seeds
    settings = {"epsilon": 0.6}
    outcomes = [run_attack("fgsm", model, x, y, settings, num_classes=BLOB_CLASSES, device=device, seed=0)
                for device in (CPU, CUDA)]
    model.to(CPU)
    assert outcomes[0].success.any()  # the budget fools some seeds: the comparison says something
    assert torch.equal(outcomes[0].success, outcomes[1].success)


def test_one_training_epoch_on_the_gpu_reaches_the_cpus_accuracy_within_a_point():
    data = make_synthetic(n_train=2000, n_test=500, size=12, channels=1, num_classes=4, seed=0)
    found = {}
    for device in (CPU, CUDA):
        torch.manual_seed(0)
        net = ConvNet(architecture("deep_conv", 1, (12, 12), 4))
        fit(net, data.train.images, data.train.labels, TrainSettings(epochs=1, batch_size=64, log_every=1000),
            seed=0, device=device)
        found[device.type] = accuracy(net, data.test.images, data.test.labels, device)
    assert abs(found["cuda"] - found["cpu"]) <= 0.01, found


def test_gpu_jobs_run_one_after_another_in_a_cuda_worker_that_keeps_its_context(tmp_path):
    """Without ADVFLOW_WORKER_REUSE: jobs that declare GPU memory go to a CUDA worker where the worker finds CUDA;
    the second job finds the context made, and each logs its own peak GPU memory."""
    from test_cuda_workers import launch, run_job, stop_only

    log = tmp_path / "worker.log"
    process, path = launch(log, cuda_workers=1, reuse=None)
    try:
        jobs = [run_job(tmp_path / name, path, name, JOB_DEVICE="cuda", JOB_GPU_MB="1600") for name in ("a", "b")]
    finally:
        stop_only(process)
    for job, _, err, seen in jobs:
        assert job.returncode == 0, err
        assert seen["cuda"] and seen["ppid"] == process.pid
    assert jobs[0][3]["pid"] == jobs[1][3]["pid"]
    assert "CUDA found: GPU jobs run in CUDA workers" in log.read_text()
    for name in ("a", "b"):
        text = (tmp_path / name / "job.log").read_text()
        assert "warm worker's CUDA worker" in text and "peak GPU memory" in text and "device cuda" in text
