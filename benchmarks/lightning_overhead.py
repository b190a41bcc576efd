"""Training throughput: advflow's ``fit`` (Lightning) vs. the fastest plain-PyTorch recipes for the same model.

Every recipe trains the same model (``good_init`` on 28x28 grayscale inputs, Fashion-MNIST's shape, LSUV
initialised like :func:`advflow.models.recipes.new_model`) from the same initial weights, on the same random uint8
images, with the same Adam + one-cycle schedule, uint8 -> [-1, 1] conversion, DataLoader and
flush-denormal setting. Recipes:

* ``fit``: :func:`advflow.models.training.fit` as the workflow calls it (its default ``TrainSettings`` layout);
* ``fit contiguous``: ``fit`` with ``channels_last=False``;
* ``plain``: the loop Lightning replaces, written out by hand; contiguous (NCHW) tensors;
* ``plain channels_last``: model and batches in channels-last (NHWC) memory format;
* ``plain compile`` / ``plain compile+channels_last``: the model under ``torch.compile`` (Inductor, which
  needs a C++ compiler on a CPU); its compile time is measured once, separately, and the timed runs
  are steady state (the same compiled module, fresh initial weights and optimizer for every run);
* ``plain threads=N``: ``torch.set_num_threads`` = physical cores where that differs from ``--threads``
  (by default the logical cores available to this process), and 1 on machines of <= 2 cores, whose
  cores other processes share at times (OpenMP's barriers wait for a descheduled thread);
* ``plain channels_last threads=1``: the combination, on such machines;
* ``plain interop=1``: ``torch.set_num_interop_threads(1)``, which only works before the first parallel
  work of a process, so this recipe runs in a fresh subprocess (its start and warm-up are not timed);

Runs alternate (one run of every recipe per round, ``--repeats`` rounds) so drift of this shared,
noisy machine hits all of them; the figures to compare are ratios of median images/s to ``fit``'s.

    python benchmarks/lightning_overhead.py [--images 1000] [--repeats 3] [--threads N] [--model good_init]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advflow.data import to_model_space
from advflow.models.architectures import ConvNet, architecture, lsuv_init
from advflow.models.training import TrainSettings, fit, make_loader


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str = "plain"                # "plain" loop or advflow's "fit"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None         # None: --threads
    interop: int | None = None         # set in a fresh subprocess


def logical_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_cores() -> int:
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
        if count:
            return min(int(count), logical_cores())
    except ImportError:
        pass
    try:  # (physical id, core id) pairs of /proc/cpuinfo
        cores, physical = set(), "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                cores.add((physical, value.strip()))
        return min(len(cores), logical_cores()) if cores else logical_cores()
    except OSError:
        return logical_cores()


def data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def initial_state(model: str) -> dict[str, torch.Tensor]:
    """The workflow's initial weights: seeded, then LSUV on 256 images."""
    torch.manual_seed(0)
    net = ConvNet(architecture(model, 1, (28, 28), 10))
    lsuv_init(net, to_model_space(torch.as_tensor(data(256)[0]).float()))
    return {k: v.clone() for k, v in net.state_dict().items()}


class Runner:
    """Runs one recipe once; keeps compiled modules so that timed runs of them are steady state."""

    def __init__(self, model: str, state: dict[str, torch.Tensor], images: np.ndarray, labels: np.ndarray,
                 settings: TrainSettings, threads: int) -> None:
        self.model, self.state, self.images, self.labels = model, state, images, labels
        self.settings, self.threads = settings, threads
        self.compiled: dict[bool, torch.nn.Module] = {}
        self.compile_seconds: dict[bool, float] = {}

    def fresh(self, channels_last: bool) -> ConvNet:
        net = ConvNet(architecture(self.model, 1, (28, 28), 10))
        net.load_state_dict(self.state)
        return net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def compiled_model(self, channels_last: bool) -> torch.nn.Module:
        """The compiled module of this layout, compiled (first two steps: full and last partial batch) once."""
        if channels_last not in self.compiled:
            base = self.fresh(channels_last)
            compiled = torch.compile(base)
            n = self.settings.batch_size + (len(self.images) % self.settings.batch_size or self.settings.batch_size)
            start = time.perf_counter()
            self.loop(compiled, base, self.images[:n], self.labels[:n], channels_last)
            self.compile_seconds[channels_last] = time.perf_counter() - start
            self.compiled[channels_last] = compiled
        return self.compiled[channels_last]

    def loop(self, net: torch.nn.Module, params: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
             channels_last: bool, seed: int = 0) -> float:
        """The loop Lightning replaces, written out by hand. Returns seconds."""
        torch.manual_seed(seed)
        net.train()
        loader = make_loader(images, labels, self.settings.batch_size, seed)
        optimizer = torch.optim.Adam(params.parameters(), lr=self.settings.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.settings.lr,
                                                       total_steps=self.settings.epochs * len(loader))
        layout = torch.channels_last if channels_last else torch.contiguous_format
        torch.set_flush_denormal(True)  # as fit does on a CPU
        try:
            start = time.perf_counter()
            for _ in range(self.settings.epochs):
                for batch, targets in loader:
                    batch = to_model_space(batch.float()).contiguous(memory_format=layout)
                    loss = F.cross_entropy(net(batch), targets)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
            return time.perf_counter() - start
        finally:
            torch.set_flush_denormal(False)

    def run(self, recipe: Recipe) -> float:
        """Images per second of one run."""
        torch.set_num_threads(recipe.threads or self.threads)
        try:
            if recipe.kind == "fit":
                settings = replace(self.settings, channels_last=recipe.channels_last)
                history = fit(self.fresh(False), self.images, self.labels, settings, seed=0,
                              device=torch.device("cpu"))
                return len(self.images) * self.settings.epochs / history["seconds"]
            if recipe.compile:
                net = self.compiled_model(recipe.channels_last)
                base = net._orig_mod
                with torch.no_grad():  # fresh initial weights, in place (the compiled graph stays valid)
                    for key, value in base.state_dict().items():
                        value.copy_(self.state[key])
                seconds = self.loop(net, base, self.images, self.labels, recipe.channels_last)
            else:
                net = self.fresh(recipe.channels_last)
                seconds = self.loop(net, net, self.images, self.labels, recipe.channels_last)
            return len(self.images) * self.settings.epochs / seconds
        finally:
            torch.set_num_threads(self.threads)

    def warm_up(self) -> None:
        """oneDNN kernels and the allocator, for both layouts."""
        for channels_last in (False, True):
            net = self.fresh(channels_last)
            self.loop(net, net, self.images[:256], self.labels[:256], channels_last)


def run_in_subprocess(recipe: Recipe, args: argparse.Namespace, state_path: str) -> float:
    """A recipe that needs a fresh process (inter-op threads): its images/s, timed inside it."""
    command = [sys.executable, __file__, "--worker", json.dumps(recipe.__dict__), "--state", state_path,
               "--images", str(args.images), "--batch-size", str(args.batch_size), "--model", args.model,
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RATE ")]
    if done.returncode or not lines:
        raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def worker(args: argparse.Namespace) -> None:
    recipe = Recipe(**json.loads(args.worker))
    if recipe.interop:
        torch.set_num_interop_threads(recipe.interop)
    torch.set_num_threads(args.threads)
    images, labels = data(args.images)
    state = torch.load(args.state, weights_only=True)
    runner = Runner(args.model, state, images, labels, settings_of(args), args.threads)
    runner.warm_up()
    print(f"RATE {runner.run(replace(recipe, interop=None)):.3f}", flush=True)


def settings_of(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(epochs=1, batch_size=args.batch_size, lr=1e-3, log_every=10**9)


def table(rates: dict[str, list[float]], reference: str) -> str:
    ref = statistics.median(rates[reference])
    rows = [f"{'recipe':<30} {'median img/s':>12} {'vs fit':>8}  runs (img/s, in round order)"]
    for name, values in rates.items():
        if not values:
            continue
        median = statistics.median(values)
        rows.append(f"{name:<30} {median:>12.1f} {median / ref:>8.3f}  " + ", ".join(f"{v:.1f}" for v in values))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per timed run (one epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; every recipe runs once per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="good_init")
    parser.add_argument("--threads", type=int, default=logical_cores(),
                        help="torch.set_num_threads for every recipe but the thread ones (default: logical cores)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile recipes")
    parser.add_argument("--cold-compile", action="store_true",
                        help="compile with an empty Inductor cache (default: the user's cache, as a later run would)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    if args.cold_compile:  # an empty Inductor cache: the compile time of a first run on a machine
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    images, labels = data(args.images)
    settings = settings_of(args)
    physical, logical = physical_cores(), logical_cores()
    print(f"torch {torch.__version__}; {logical} logical / {physical} physical cores available; "
          f"--threads {args.threads}; {args.images} images per run, batch {args.batch_size}, {args.repeats} rounds; "
          f"fit's default layout: {'channels_last' if settings.channels_last else 'contiguous'}", flush=True)

    state = initial_state(args.model)
    runner = Runner(args.model, state, images, labels, settings, args.threads)
    recipes = [Recipe("fit", "fit", channels_last=settings.channels_last),
               Recipe("fit contiguous" if settings.channels_last else "fit channels_last", "fit",
                      channels_last=not settings.channels_last),
               Recipe("plain"), Recipe("plain channels_last", channels_last=True)]
    notes = []
    if not args.no_compile:
        for channels_last in (False, True):
            name = "plain compile" + ("+channels_last" if channels_last else "")
            try:
                runner.compiled_model(channels_last)
                recipes.append(Recipe(name, compile=True, channels_last=channels_last))
                notes.append(f"{name}: compile + first 2 steps took {runner.compile_seconds[channels_last]:.1f} s "
                             f"(not in the timed runs)")
            except Exception as error:  # noqa: BLE001 - report why and go on
                notes.append(f"{name}: torch.compile failed, recipe left out: {type(error).__name__}: "
                             f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}")
                traceback.print_exc()
                break
    counts = {physical, logical} | ({1} if logical <= 2 else set())  # 1: cores shared with other processes
    for threads in sorted(counts - {args.threads}):
        recipes.append(Recipe(f"plain threads={threads}", threads=threads))
    if physical == logical:
        notes.append(f"threads: physical = logical = {physical} cores here")
    recipes.append(Recipe("plain interop=1", interop=1))
    if 1 in counts - {args.threads}:
        recipes.append(Recipe("plain channels_last threads=1", channels_last=True, threads=1))
    for note in notes:
        print(note, flush=True)

    runner.warm_up()
    rates: dict[str, list[float]] = {r.name: [] for r in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        state_path = str(Path(tmp) / "state.pt")
        torch.save(state, state_path)
        for round_index in range(args.repeats):
            for recipe in recipes:
                try:
                    rate = run_in_subprocess(recipe, args, state_path) if recipe.interop else runner.run(recipe)
                except Exception as error:  # noqa: BLE001
                    print(f"round {round_index + 1}: {recipe.name} failed: {error}", flush=True)
                    continue
                rates[recipe.name].append(rate)
                print(f"round {round_index + 1}: {recipe.name:<30} {rate:7.1f} img/s", flush=True)
    print()
    print(table(rates, "fit"))
    for note in notes:
        print(note)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"model": args.model, "images": args.images, "batch_size": args.batch_size, "threads": args.threads,
             "physical_cores": physical, "logical_cores": logical, "notes": notes,
             "compile_seconds": {("channels_last" if k else "contiguous"): round(v, 2)
                                 for k, v in runner.compile_seconds.items()},
             "median_img_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items() if v},
             "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()}}, indent=2))


if __name__ == "__main__":
    main()
