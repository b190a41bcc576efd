"""Names the workflow knows and where raw data lives. Imports nothing heavy, so the Snakefile
can use it while parsing (config checks, a missing dataset reported before any job starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Every model name the workflow knows, in the order the report lists them.
MODELS = ("good_init", "deep_conv", "vgg_like", "compressed", "distilled", "ensemble")
#: Models trained from scratch on labels (compressed, distilled and ensemble derive from these).
TRAINED_FROM_SCRATCH = ("good_init", "deep_conv", "vgg_like")


class DatasetMissingError(FileNotFoundError):
    """The raw dataset was not found; the message says where we looked and how to get it."""


DATASETS = ("fashion_mnist", "mnist", "cifar10", "synthetic")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]

#: Where each dataset is looked for when the config gives no path (first match wins).
DEFAULT_LOCATIONS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "data/raw/fashion-mnist"),
    "mnist": ("/usr/share/datasets/mnist", "data/raw/mnist"),
    "cifar10": ("data/raw/cifar-10-batches-py", "data/raw"),
}

HOW_TO_GET = {
    "fashion_mnist": (
        "Install Debian's package: `sudo apt-get install dataset-fashion-mnist` "
        "(puts the IDX files under /usr/share/datasets/fashion-mnist), or set "
        "`datasets.fashion_mnist.path` in the config to a folder holding "
        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
    ),
    "mnist": (
        "Set `datasets.mnist.path` in the config to a folder holding the four MNIST IDX files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz]), or set `datasets.mnist.download: true` on a machine with "
        "network access."
    ),
    "cifar10": (
        "Set `datasets.cifar10.path` in the config to the `cifar-10-batches-py` folder "
        "(data_batch_1..5, test_batch, batches.meta from "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or set "
        "`datasets.cifar10.download: true` on a machine with network access."
    ),
}


def find_idx(folder: Path, stem: str) -> Path | None:
    # Distributions name the files "train-images-idx3-ubyte" or "train-images.idx3-ubyte".
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_folder_complete(folder: Path) -> bool:
    return all(find_idx(folder, stem) for stem in IDX_STEMS.values())


def cifar_folder(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file() and (candidate / "data_batch_1").is_file():
            return candidate
    return None


def locate_dataset(name: str, settings: dict[str, Any] | None = None) -> Path | None:
    """Return the folder that holds ``name``'s raw files, or raise :class:`DatasetMissingError`.

    Returns ``None`` for the generated dataset and for a download that is still to happen.
    """
    settings = settings or {}
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "synthetic":
        return None
    candidates = [settings["path"]] if settings.get("path") else list(DEFAULT_LOCATIONS[name])
    complete = cifar_folder if name == "cifar10" else (lambda f: f if idx_folder_complete(f) else None)
    for candidate in candidates:
        found = complete(Path(candidate))
        if found is not None:
            return found
    if settings.get("download"):
        return None
    looked = ", ".join(str(Path(c).resolve()) for c in candidates)
    raise DatasetMissingError(f"Dataset {name!r} not found. Looked in: {looked}. {HOW_TO_GET[name]}")


PROFILES = ("normal_train", "normal_test")
#: Between a set's attack and its target: ``fgsm@good_init`` is FGSM's set crafted on good_init.
SET_SEPARATOR = "@"
#: A random-perturbation control set is ``{CONTROL_PREFIX}{attack}@{target}`` (advflow.attacks.controls).
CONTROL_PREFIX = "random_"
#: The "attack" of Q1's JSMA crafting trajectories: ``trajectory@{model}``.
TRAJECTORY = "trajectory"
#: Q1's control trajectories (random pixels moved by theta, as many steps as JSMA took).
CONTROL_TRAJECTORY = CONTROL_PREFIX + TRAJECTORY


# Set names. Every name of a set (and of a control's attack) is built and read here, and only here
# (tests/test_catalog.py reads the library for names built anywhere else).

def set_name(attack: str, target: str) -> str:
    """The name of the set crafted by ``attack`` on ``target``: ``{attack}@{target}``."""
    if not attack or not target or SET_SEPARATOR in attack or SET_SEPARATOR in target:
        raise ValueError(f"a set's attack and target are names without {SET_SEPARATOR!r}; got {attack!r} and "
                         f"{target!r}")
    return f"{attack}{SET_SEPARATOR}{target}"


def parse_set_name(name: str) -> tuple[str, str]:
    """``(attack, target)`` of a set name built by :func:`set_name`; ValueError for anything else (a profile)."""
    attack, sep, target = name.partition(SET_SEPARATOR)
    if not sep or not attack or not target or SET_SEPARATOR in target:
        raise ValueError(f"{name!r} is not an adversarial set's name ({{attack}}{SET_SEPARATOR}{{target}})")
    return attack, target


def control_name(attack: str) -> str:
    """The attack name of ``attack``'s random control (``fgsm`` -> ``random_fgsm``)."""
    return CONTROL_PREFIX + attack


def is_control(attack: str) -> bool:
    """Whether ``attack`` names a random control (``random_fgsm``)."""
    return attack.startswith(CONTROL_PREFIX)


def attacked_by(control: str) -> str:
    """The attack a control stands beside (``random_fgsm`` -> ``fgsm``)."""
    if not is_control(control):
        raise ValueError(f"{control!r} is not a control set's attack name (they start with {CONTROL_PREFIX!r})")
    return control[len(CONTROL_PREFIX):]


def control_set(name: str) -> str:
    """The random control of set ``name`` (``fgsm@good_init`` -> ``random_fgsm@good_init``)."""
    attack, target = parse_set_name(name)
    return set_name(control_name(attack), target)


def trajectory_set(model: str) -> str:
    """Q1's set of JSMA's crafting steps on ``model``: ``trajectory@{model}``."""
    return set_name(TRAJECTORY, model)


def control_trajectory_set(model: str) -> str:
    """The random control of :func:`trajectory_set`: ``random_trajectory@{model}``."""
    return set_name(CONTROL_TRAJECTORY, model)


def is_trajectory(name: str) -> bool:
    """Whether set ``name`` holds crafting steps (JSMA's trajectories or their random control)."""
    return name.partition(SET_SEPARATOR)[0] in (TRAJECTORY, CONTROL_TRAJECTORY)


def set_path(results: str, name: str) -> str:
    """Where the inputs of set ``name`` live under ``results`` (``results/{dataset}``)."""
    if name in PROFILES:
        return f"{results}/inputs/{name}.h5"
    try:
        attack, target = parse_set_name(name)
    except ValueError:
        raise ValueError(f"unknown set {name!r}: a set is normal_train, normal_test, {{attack}}@{{target}} "
                         "or trajectory@{target}") from None
    if attack == TRAJECTORY:
        return f"{results}/trajectories/{target}/jsma.h5"
    if attack == CONTROL_TRAJECTORY:
        return f"{results}/trajectories/{target}/random_jsma.h5"
    return f"{results}/adv/{target}/{attack}.h5"


def trajectories_wanted(attack_sets: dict[str, list[str]], trajectories: int) -> bool:
    """Q1's JSMA trajectories are recorded when good_init is attacked with JSMA and n > 0."""
    return "jsma" in (attack_sets.get("good_init") or []) and trajectories > 0


def measurements(attack_sets: dict[str, list[str]], transfer_groups: list[list[str]],
                 trajectories: int) -> list[tuple[str, str]]:
    """(measuring model, set) pairs the experiments need (docs/method.md, "Experiments"): every adversarial set
    on its target, and on the other members of each transfer group it belongs to when they were
    attacked the same way (Q3: good_init vs compressed; Q5: the three architectures); the normal
    profiles on every measuring model; the JSMA trajectories on good_init (Q1). Every adversarial set's
    random control (``random_{attack}@{target}``) is measured wherever its attack is, and the control
    trajectories beside the trajectories. The ensemble has no feature maps of its own: its sets enter
    Table VI, not the MI stages."""
    pairs = set()
    for target, attacks in attack_sets.items():
        if target == "ensemble" or not attacks:
            continue
        pairs.update((target, set_name(attack, target)) for attack in attacks)
        for group in transfer_groups or []:
            if target not in group:
                continue
            for model in group:
                if model not in (target, "ensemble"):
                    shared = set(attacks) & set(attack_sets.get(model) or [])
                    pairs.update((model, set_name(attack, target)) for attack in shared)
    # Each control is measured on its attack's target, where the findings compare the attack with it.
    pairs.update((target, set_name(control_name(attack), target)) for target, attacks in attack_sets.items()
                 if target != "ensemble" for attack in attacks or [])
    for model in {m for m, _ in pairs}:
        pairs.update((model, profile) for profile in PROFILES)
    if trajectories_wanted(attack_sets, trajectories):
        pairs.add(("good_init", trajectory_set("good_init")))
        pairs.add(("good_init", control_trajectory_set("good_init")))
    return sorted(pairs)


#: Q5's subsets of a set measured on another model of its group (the aggregate stage fits each).
TRANSFER_SUBSETS = ("transferable", "non_transferable")


def q5_group(attack_sets: dict[str, list[str]], transfer_groups: list[list[str]]) -> tuple[str, ...]:
    """Q5's models: the first transfer group with three or more attacked models (the ensemble aside)."""
    for group in transfer_groups or []:
        members = tuple(m for m in group if m != "ensemble" and attack_sets.get(m))
        if len(members) >= 3:
            return members
    return ()


def q5_attacks(attack_sets: dict[str, list[str]], transfer_groups: list[list[str]]) -> tuple[str, ...]:
    """Q5's attacks: those crafted on every model of the Q5 group, in the first member's order."""
    group = q5_group(attack_sets, transfer_groups)
    if not group:
        return ()
    return tuple(a for a in attack_sets[group[0]] if all(a in attack_sets[m] for m in group))


def transfer_subsets(attack_sets: dict[str, list[str]], transfer_groups: list[list[str]]
                     ) -> list[tuple[str, str, str]]:
    """(measuring model, set, subset) of Q5: each set of the group measured on another member, split into its
    transferable and non-transferable inputs (:data:`TRANSFER_SUBSETS`)."""
    group = q5_group(attack_sets, transfer_groups)
    return [(model, set_name(attack, target), subset) for attack in q5_attacks(attack_sets, transfer_groups)
            for target in group for model in group if model != target for subset in TRANSFER_SUBSETS]


#: Split sizes of the datasets whose files are fixed: (training images, test images, test images per class; None
#: where classes differ in size). Used to check a config's counts before any job runs.
KNOWN_SIZES: dict[str, tuple[int, int, list[int] | None]] = {
    "fashion_mnist": (60000, 10000, [1000] * 10),
    "mnist": (60000, 10000, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    "cifar10": (50000, 10000, [1000] * 10),
}
SYNTHETIC_DEFAULTS = {"n_train": 600, "n_test": 200, "num_classes": 10}


def split_sizes(name: str, settings: dict[str, Any] | None, prepared: str | Path | None = None
                ) -> dict[str, Any] | None:
    """``{"train", "test", "test_per_class", "where"}`` of dataset ``name``: ``synthetic`` computed from its
    settings (its labels cycle through the classes; an older prepared file is rebuilt when they change, so it is
    not read); the others read from their prepared file when there is one (shapes and the test labels only),
    else their published sizes. None when nothing can be known."""
    if name != "synthetic" and prepared is not None and Path(prepared).is_file():
        try:
            import h5py
            import numpy as np

            with h5py.File(prepared, "r") as h5:
                labels = np.asarray(h5["test/labels"])
                counts = np.bincount(labels[labels >= 0]).tolist() if labels.size else []
                return {"train": int(h5["train/labels"].shape[0]), "test": int(labels.size),
                        "test_per_class": counts, "where": str(prepared)}
        except Exception:  # a damaged prepared file: its own check (rule prepare_data's readers) reports it
            return None
    if name == "synthetic":
        s = {**SYNTHETIC_DEFAULTS, **(settings or {})}
        k, n_test = int(s["num_classes"]), int(s["n_test"])
        return {"train": int(s["n_train"]), "test": n_test,
                "test_per_class": [n_test // k + (i < n_test % k) for i in range(k)],
                "where": "the synthetic dataset's settings"}
    if name in KNOWN_SIZES:
        train, test, per_class = KNOWN_SIZES[name]
        return {"train": train, "test": test, "test_per_class": per_class, "where": f"the {name} files"}
    return None
