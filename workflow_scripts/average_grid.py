"""Rule average_grid: seed 001's average-adversarial grid (Fig. 1), mean perturbations (Fig. 4), pixel histograms."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from pathlib import Path  # noqa: E402

from advflow.data import load_prepared  # noqa: E402
from advflow.perturbations.grid import average_grid, write_grid  # noqa: E402
from advflow.models.architectures import load_checkpoint  # noqa: E402
from advflow.perturbations.tables import grid_outputs  # noqa: E402

ready()

dataset = load_prepared(sm.input.data)
model = load_checkpoint(sm.input.model, device)
settings = dict(sm.params.settings)
grid = average_grid(model, dataset.test.images, dataset.test.labels, settings, seed=sm.params.seed, device=device)
write_grid(sm.output.grid, grid, {"model": model.arch["name"], "m": settings["m"], "settings": repr(sorted(
    settings.items())), "seed": sm.params.seed})
pair = sm.params.pair
grid_outputs(grid, list(dataset.classes), list(pair) if pair else None, Path(sm.output.figures))
