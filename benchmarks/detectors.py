"""Each detector's fit time and scoring time per 1,000 inputs, side by side in one run, on a finished run's defense
classifier, autoencoders and data (the same process, the same threads, one detector after another).

    python benchmarks/detectors.py WORKDIR [--dataset fashion_mnist] [--fit 1000] [--score 1000] [--threads 2]

Fit: on ``--fit`` clean training images (MagNet's detectors read their trained autoencoders and fit nothing here;
MID trains MINE with the run's ``defense.mine`` steps; the information-path detector, Mahalanobis and LID with the
run's settings). Score: ``--score`` clean test images, reported per 1,000. The dropout vote is scored by its own rule
(K forward passes with dropout on) and is timed by ``benchmarks/defense_stage.py``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from advflow.attacks.sets import _model_space
from advflow.data import load_prepared
from advflow.defenses import registry
from advflow.defenses.magnet import load_autoencoder
from advflow.defenses.settings import defense_settings
from advflow.models.architectures import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, help="a finished run's working directory (with results/{dataset}/)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--fit", type=int, default=1000, help="clean training images each detector is fitted on")
    parser.add_argument("--score", type=int, default=1000, help="clean test images scored")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = args.workdir / "results" / args.dataset
    config = yaml.safe_load((results / "config.resolved.yaml").read_text())
    settings = defense_settings(config)
    if settings is None:
        raise SystemExit(f"{results}/config.resolved.yaml has no defense block: run the defense stage first")
    classifier = load_checkpoint(results / "models" / f"{settings['classifier']}.pt")
    autoencoders = {name: load_autoencoder(results / "defense" / "autoencoders" / f"{name}.pt")
                    for name in ("ae_i", "ae_ii")}
    data = load_prepared(args.workdir / "data" / f"{args.dataset}.h5")
    rng = np.random.default_rng(0)
    fit_index = np.sort(rng.choice(len(data.train.images), min(args.fit, len(data.train.images)), replace=False))
    x_fit, y_fit = _model_space(data.train.images[fit_index]), data.train.labels[fit_index].astype(np.int64)
    x_score = _model_space(data.test.images[:args.score])
    print(f"| detector | fit (s, {len(fit_index)} clean images) | scoring (s per 1,000 inputs) |\n| --- | ---: | ---: |")
    for name in registry.scored_by_scores_rule():
        spec = registry.get(name)
        detector = registry.build(name, registry.Built(classifier, autoencoders, {}, settings, 0))
        started = time.perf_counter()
        if spec.state is not None:
            detector.fit(x_fit, y_fit) if spec.labels else detector.fit(x_fit)
        fitted = time.perf_counter() - started
        started = time.perf_counter()
        detector.score(x_score)
        scored = (time.perf_counter() - started) / len(x_score) * 1000
        fit_text = f"{fitted:.1f}" if spec.state is not None else "— (its autoencoder)"
        print(f"| {name} | {fit_text} | {scored:.2f} |")


if __name__ == "__main__":
    main()
