"""advflow: how information flows through a CNN's feature maps for normal and adversarial inputs.

The Python API (:mod:`advflow.api`), loaded on first use so that ``import advflow`` stays light::

    advflow.information_paths(model, x)      # IIP and OIP of each input through any nn.Module's conv layers
    advflow.conv_layer_maps(model, x)        # each conv layer's maps, by forward hooks
    advflow.default_layers(model, x)         # which modules those conv layers are, and why
    advflow.mutual_information(a, b)         # MI of two maps, two stacks or two batches of maps, in nats
    advflow.aggregate(paths)                 # the GP aggregate of a set's paths, with its 95 % band
    advflow.path_shift(adv, clean)           # the standardized paired shift, with its 95 % interval
    advflow.shift_difference(adv, control, clean), advflow.verdict(interval)  # a claim and its verdict
    advflow.read_features(path), advflow.read_mi(path), advflow.read_set(path)  # the workflow's files

A package per stage of the workflow, each named like its rule file (rules/<stage>.smk), stacked so that a
stage imports only the stages before it (tests/test_layout.py): ``workflow`` (the plumbing: catalog of names
and files, I/O, device, code digests, warm worker), ``data``, ``models``, ``attacks`` (with the input profiles,
the adversarial sets and their random controls), ``information`` (features, MI, paths, aggregates, shifts),
``defenses``, ``perturbations`` (seed 001's statistics and grid), ``config`` (the config checks) and
``report``. The method they implement is docs/method.md.
"""

__version__ = "0.1.0"

_API = ("Paths", "conv_layer_maps", "information_paths", "mutual_information", "default_layers", "LayerChoice",
        "LayerChoiceWarning", "aggregate", "AggregatedPath", "path_shift", "shift_difference", "verdict", "Interval",
        "Features", "read_features", "MIFile", "read_mi", "AdversarialSet", "read_set")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        # importlib rather than an import statement: the workflow's code digests (advflow.workflow.digests) follow
        # import statements, and no workflow script uses the API, so changing the modules behind it
        # must not rerun every rule.
        import importlib

        return getattr(importlib.import_module("advflow.api"), name)
    raise AttributeError(f"module 'advflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
