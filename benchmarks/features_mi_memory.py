"""Peak memory (and time) of the features and MI stages for one set of 1,000 inputs.

The measuring model is ``good_init`` on CIFAR-10 shapes (3x32x32, 15 conv layers, 128 target maps of
8x8), seeded and untrained: memory and time depend on the shapes, not on the weights. The set is 1,000
seeded random inputs in [-1, 1], written as an adversarial-set file. Each stage runs in a fresh child
process, as a workflow job does, and its peak resident memory is read from the kernel
(the child's own ``ru_maxrss``); the import of torch is included. Settings are the workflow's defaults
(float16, gzip level 4, feature batches of 100, MI batches of 16) unless given.

    python benchmarks/features_mi_memory.py [--inputs 1000] [--threads 2]

Target (issue #4): under 4 GiB for each stage. Output: JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FEATURES = """
import sys, torch
torch.set_num_threads({threads})
from advflow.information.features import record_features
record_features("{model}", "{set}", "{out}", set_name="bench@good_init", batch_size={batch})
import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

MI = """
import torch
torch.set_num_threads({threads})
from advflow.information.stage import measure_set
measure_set("{features}", "{mi}", "{paths}", buckets=8, batch_size={batch})
import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_child(code: str) -> dict:
    """Run ``code`` in a fresh Python; its wall time and its own peak RSS (it prints ru_maxrss, KiB)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    peak_kib = int(out.stdout.split()[-1])
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features-batch", type=int, default=100)
    parser.add_argument("--mi-batch", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import h5py
    import torch

    from advflow.models.architectures import ConvNet, architecture, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        save_checkpoint(ConvNet(architecture("good_init", 3, (32, 32), 10)), folder / "good_init.pt")
        generator = torch.Generator().manual_seed(1)
        with h5py.File(folder / "set.h5", "w") as h5:
            h5["adversarial"] = (torch.rand(args.inputs, 3, 32, 32, generator=generator) * 2 - 1).numpy()
            h5["labels"] = torch.randint(0, 10, (args.inputs,), generator=generator).numpy()
        features = run_child(FEATURES.format(threads=args.threads, model=folder / "good_init.pt",
                                             set=folder / "set.h5", out=folder / "features.h5",
                                             batch=args.features_batch))
        features["file_mib"] = round((folder / "features.h5").stat().st_size / 2 ** 20, 1)
        mi = run_child(MI.format(threads=args.threads, features=folder / "features.h5", mi=folder / "mi.h5",
                                 paths=folder / "paths.csv", batch=args.mi_batch))
        mi["file_mib"] = round((folder / "mi.h5").stat().st_size / 2 ** 20, 1)
    report = {"benchmark": "features_mi_memory", "model": "good_init, 3x32x32 (CIFAR-10 shapes), untrained",
              "inputs": args.inputs, "threads": args.threads, "features": features, "mi": mi,
              "target_peak_rss_mib": 4096,
              "within_target": features["peak_rss_mib"] < 4096 and mi["peak_rss_mib"] < 4096}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
