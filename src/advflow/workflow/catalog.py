"""Names the workflow knows and where raw data lives. Imports nothing heavy, so the Snakefile
can use it while parsing (config checks, a missing dataset reported before any job starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Every model name the workflow knows, in the order the report lists them.
MODELS = ("good_init", "deep_conv", "vgg_like", "compressed", "distilled", "ensemble")
#: Models trained from scratch on labels (compressed, distilled and ensemble derive from these).
TRAINED_FROM_SCRATCH = ("good_init", "deep_conv", "vgg_like")

#: The study's roles (config key ``study``; docs/method.md, "Experiments") and the model each names by default:
#: Q2 attacks ``base``, Q3 compares ``base`` with ``compressed``, Q4 attacks ``distilled``, Table VI transfers from
#: ``ensemble`` and Q1 records JSMA's crafting ``trajectories`` on its model. Any role may name a model of the user's.
ROLES = {"base": "good_init", "compressed": "compressed", "distilled": "distilled", "ensemble": "ensemble",
         "trajectories": "good_init"}


def is_user_model(settings: Any) -> bool:
    """Whether a ``models.<name>`` entry is a model of the user's: it names the ``module`` that builds it
    (:mod:`advflow.models.user`)."""
    return isinstance(settings, dict) and "module" in settings


def user_models(config: dict[str, Any]) -> list[str]:
    """The names of the user's models under ``models``, in the config's order."""
    return [name for name, entry in ((config or {}).get("models") or {}).items() if is_user_model(entry)]


def chosen_roles(config: dict[str, Any]) -> dict[str, str | None]:
    """``{role: the name the config gives it}``: ``study.<role>`` (None where null), else :data:`ROLES`'s default,
    whether or not that model is under ``models``."""
    given = (config or {}).get("study") or {}
    return {role: given.get(role, default) for role, default in ROLES.items()}


def roles(config: dict[str, Any]) -> dict[str, str | None]:
    """``{role: model}`` of a config: its :func:`chosen_roles` model when that model is under ``models``, else None
    (the questions of that role say "cannot be checked")."""
    models = (config or {}).get("models") or {}
    return {role: (model if model in models else None) for role, model in chosen_roles(config).items()}


def role_model(config: dict[str, Any], role: str) -> str | None:
    """The model of one role (:func:`roles`), or None."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return roles(config)[role]


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

    Returns ``None`` for the generated dataset and for a download that is still to happen. A dataset of the
    user's own (settings with a ``format``) is :func:`custom_path`: its file or folder, resolved.
    """
    settings = settings or {}
    if is_custom(settings):
        return custom_path(name, settings)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}, or one of your own: set "
                         f"datasets.{name}.format ({' or '.join(CUSTOM_FORMATS)}) and datasets.{name}.path")
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


# --------------------------------------------------------------------------- datasets of the user's own
# ``datasets: NAME: {format: npz | folder, path: ...}`` (advflow.data's docstring describes the formats). What is
# here reads headers, labels and file listings only; advflow.data reads the pixels. NumPy and Pillow are imported
# inside the functions that need them.

#: The formats of a dataset of the user's own (``datasets.<name>.format``).
CUSTOM_FORMATS = ("npz", "folder")
#: The arrays an ``npz`` dataset holds; an optional ``classes`` array of strings names the classes.
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
#: The image files of a ``folder`` dataset (any case); other files are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The smallest image height and width the models accept.
MIN_SIDE = 8
#: What ``datasets.<name>.path`` must be, per format.
CUSTOM_EXPECTS = {
    "npz": "an .npz file (numpy.savez) holding the arrays x_train, y_train, x_test and y_test, optionally classes",
    "folder": "a folder holding train/<class>/*.png|*.jpg|*.jpeg and test/<class>/... (one subfolder per class)",
}
_NPZ_EXAMPLE = "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
_TO_UINT8 = "write uint8 pixels in [0, 255] (floats in [0, 1]: (x * 255).round().astype(numpy.uint8))"
#: Pillow modes read as grey (one channel; "LA" loses its alpha); integer modes are grey when their values lie in
#: [0, 255]; "F" (floating point) is refused; every other mode is converted to RGB (alpha dropped).
GREY_MODES = ("L", "1", "LA")
WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def is_custom(settings: dict[str, Any] | None) -> bool:
    """Whether a dataset's settings make it one of the user's own: they give a ``format``."""
    return isinstance(settings, dict) and settings.get("format") is not None


def _custom_config_problem(name: str, settings: dict[str, Any]) -> str | None:
    """The problem of a custom dataset's config alone (name, format, path given), or None."""
    if name in DATASETS:
        return f"datasets.{name}: '{name}' is a built-in dataset; give yours another name"
    fmt = settings.get("format")
    if fmt not in CUSTOM_FORMATS:
        return f"datasets.{name}.format is {fmt!r}; allowed: {', '.join(CUSTOM_FORMATS)}"
    if not settings.get("path"):
        return f"datasets.{name}.path is not set; set it to {CUSTOM_EXPECTS[fmt]}"
    return None


def custom_path(name: str, settings: dict[str, Any]) -> Path:
    """The resolved file (``npz``) or folder (``folder``) of custom dataset ``name``. ValueError for a config that
    cannot name one (a built-in name, an unknown format); :class:`DatasetMissingError` when the path is not set, not
    there, or a file where a folder is expected (or the reverse)."""
    problem = _custom_config_problem(name, settings)
    if problem and ".path is not set" in problem:
        raise DatasetMissingError(problem)
    if problem:
        raise ValueError(problem)
    fmt = settings["format"]
    path = Path(str(settings["path"])).expanduser().resolve()
    if not path.exists():
        raise DatasetMissingError(f"datasets.{name}: {path} not found; format {fmt} expects {CUSTOM_EXPECTS[fmt]}")
    if fmt == "npz" and not path.is_file():
        raise DatasetMissingError(f"datasets.{name}: {path} is a folder; format npz expects {CUSTOM_EXPECTS['npz']}")
    if fmt == "folder" and not path.is_dir():
        raise DatasetMissingError(f"datasets.{name}: {path} is a file; format folder expects "
                                  f"{CUSTOM_EXPECTS['folder']}")
    return path


def image_layout(shape: tuple[int, ...]) -> str | None:
    """How an image array of ``shape`` is laid out: ``"NHW"`` (3-D, grey), ``"NCHW"`` or ``"NHWC"`` (4-D), or None.

    A 4-D array is NCHW when axis 1 is 1 or 3 and the last axis is not; else NHWC when the last axis is 1 or 3
    (so an ambiguous (N, 3, H, 3) is NHWC); None when neither holds 1 or 3 channels (and for other ranks)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        return None
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    return None


def image_chw(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(channels, height, width) of one image of an array of ``shape`` (:func:`image_layout`), or None."""
    layout = image_layout(shape)
    if layout == "NHW":
        return 1, int(shape[1]), int(shape[2])
    if layout == "NCHW":
        return int(shape[1]), int(shape[2]), int(shape[3])
    if layout == "NHWC":
        return int(shape[3]), int(shape[1]), int(shape[2])
    return None


def npz_headers(path: str | Path) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """``{array name: (dtype, shape)}`` of an .npz file, read from the arrays' headers: no data is read and nothing
    is unpickled. Raises (zipfile.BadZipFile, OSError, ValueError) when the file is not an npz archive."""
    import zipfile

    from numpy.lib import format as npformat

    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as fh:
                version = npformat.read_magic(fh)
                read = getattr(npformat, "_read_array_header", None)  # the one reader of every version (1, 2, 3)
                if read is not None:
                    shape, _, dtype = read(fh, version)
                elif version == (1, 0):
                    shape, _, dtype = npformat.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = npformat.read_array_header_2_0(fh)
            headers[info.filename[: -len(".npy")]] = (dtype, tuple(int(n) for n in shape))
    return headers


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _pixel_values_problem(key: str, images: Any) -> str | None:
    """Why the pixels of an image array (not uint8) cannot be converted exactly to uint8, or None."""
    import numpy as np

    kind, dtype = images.dtype.kind, images.dtype.name
    if kind in "iu":
        if not images.size or (images.min() >= 0 and images.max() <= 255):
            return None
        return (f"{key} pixels are {dtype} with values {images.min()} to {images.max()}, outside [0, 255]; "
                "write uint8 pixels in [0, 255] (rescale them into that range first)")
    if kind == "f":
        nan = int(np.isnan(images).sum())
        finite = images[np.isfinite(images)]
        found = f"{nan} NaN" if nan else (f"values {finite.min():g} to {finite.max():g}" if finite.size else "no values")
        return f"{key} pixels are {dtype} ({found}); {_TO_UINT8}"
    return f"{key} pixels are {dtype}; {_TO_UINT8}"


def _npz_image_problem(key: str, dtype: Any, shape: tuple[int, ...], dtype_too: bool = True) -> str | None:
    if len(shape) not in (3, 4):
        return (f"{key} has shape {_shape_text(shape)}; expected images (N, H, W) grey, or (N, H, W, C) or "
                "(N, C, H, W) with C 1 (grey) or 3 (RGB); reshape it")
    chw = image_chw(shape)
    if chw is None:
        return (f"{key} has shape {_shape_text(shape)}: neither axis 1 (N, C, H, W) nor axis 3 (N, H, W, C) holds "
                "1 (grey) or 3 (RGB) channels; write grey or RGB images")
    if shape[0] == 0:
        return f"{key} holds no images (shape {_shape_text(shape)}); write at least one image per split"
    c, h, w = chw
    if h < MIN_SIDE or w < MIN_SIDE:
        return (f"{key} images are {h}x{w} pixels (shape {_shape_text(shape)}, read as {image_layout(shape)}); "
                f"height and width must be at least {MIN_SIDE}, write larger images")
    if dtype_too and dtype.kind not in "iu":
        return f"{key} pixels are {dtype.name}; {_TO_UINT8}"
    return None


def _npz_labels_problem(key: str, dtype: Any, shape: tuple[int, ...]) -> str | None:
    if dtype.kind not in "iu":
        return f"{key} labels are {dtype.name}; write integer labels ({key}.astype(numpy.int64))"
    if len(shape) != 1:
        return (f"{key} has shape {_shape_text(shape)}; write one integer label per image, shape (N,) "
                f"(one-hot labels: {key}.argmax(axis=1))")
    return None


def npz_problems(path: str | Path, pixel_values: bool = False) -> list[str]:
    """What is wrong with the npz dataset file ``path``, each as ``"<path>: <problem>; <fix>"`` ([] when fine):
    arrays missing or holding Python objects (never unpickled), image ranks, layouts (:func:`image_layout`),
    channels, sizes and dtypes, label dtypes, shapes, counts and ranges, the class names. Reads the headers, the
    labels and ``classes``; the pixels only with ``pixel_values`` (integers other than uint8 must lie in [0, 255],
    floats are refused with their range)."""
    import numpy as np

    path = Path(path)
    try:
        headers = npz_headers(path)
    except Exception as err:  # zipfile and numpy raise many types on a file that is not an npz archive
        return [f"{path}: not an .npz file ({err}); write it with {_NPZ_EXAMPLE}"]
    missing = [key for key in NPZ_ARRAYS if key not in headers]
    if missing:
        present = ", ".join(sorted(headers)) or "no arrays"
        return [f"{path}: missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)} (the file holds "
                f"{present}); save all four: {_NPZ_EXAMPLE}"]
    problems = []
    for key in (*NPZ_ARRAYS, "classes"):
        if key in headers and headers[key][0].hasobject:
            fix = ("write the names as strings, numpy.array(names, dtype=str)" if key == "classes"
                   else f"write {key} as a numeric array")
            problems.append(f"{path}: {key} holds Python objects (dtype object), which are never read (loading them "
                            f"would unpickle, i.e. run, code from the file); {fix}")
    if problems:
        return problems
    counts, chw = {}, {}
    for split in ("train", "test"):
        x, y = f"x_{split}", f"y_{split}"
        image = _npz_image_problem(x, *headers[x], dtype_too=not pixel_values)  # else: their values, below
        label = _npz_labels_problem(y, *headers[y])
        problems += [f"{path}: {p}" for p in (image, label) if p]
        if image is None:
            chw[split] = image_chw(headers[x][1])
        if image is None and label is None:
            n_images, n_labels = headers[x][1][0], headers[y][1][0]
            if n_images != n_labels:
                problems.append(f"{path}: {x} holds {n_images} images but {y} holds {n_labels} labels; write one "
                                "label per image")
            counts[split] = n_labels
    if len(chw) == 2 and chw["train"] != chw["test"]:
        problems.append(f"{path}: x_train images are {'x'.join(map(str, chw['train']))} but x_test images are "
                        f"{'x'.join(map(str, chw['test']))} (C x H x W); write both splits with one image shape")
    if problems:
        return problems
    with np.load(path, allow_pickle=False) as npz:
        labels = {split: np.asarray(npz[f"y_{split}"]) for split in ("train", "test")}
        classes = np.asarray(npz["classes"]) if "classes" in headers else None
        if pixel_values:
            for split in ("train", "test"):
                key = f"x_{split}"
                if headers[key][0] != np.uint8:
                    problem = _pixel_values_problem(key, np.asarray(npz[key]))
                    if problem:
                        problems.append(f"{path}: {problem}")
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            problems.append(f"{path}: classes is {classes.dtype.name} of shape {_shape_text(classes.shape)}; write "
                            "the class names as a 1-D array of strings, numpy.array(names, dtype=str)")
            return problems
        names = npz_class_names(classes)
        repeated = sorted({c for c in names if names.count(c) > 1})
        if not names or repeated:
            problems.append(f"{path}: " + (f"class names repeat: {', '.join(map(repr, repeated))}" if names
                                            else "classes is empty") + "; write one distinct name per class")
            return problems
        n_classes, named = len(names), f"{len(names)} classes named in 'classes'"
    else:
        n_classes = 1 + max(int(labels[s].max()) for s in labels)
        named = f"{n_classes} classes, as no 'classes' array names them"
    for split in ("train", "test"):
        low, high = int(labels[split].min()), int(labels[split].max())
        if low < 0 or high >= n_classes:
            problems.append(f"{path}: y_{split} labels must lie in [0, {n_classes - 1}] ({named}); found smallest "
                            f"{low}, largest {high}; fix the labels" + (" or the classes array" if classes is not None
                                                                        else ""))
    return problems


def npz_class_names(classes: Any) -> list[str]:
    """The class names of an npz ``classes`` array of str (or bytes, read as UTF-8)."""
    return [c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist()]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def image_folder_listing(root: str | Path) -> tuple[list[str], dict[str, list[tuple[int, Path]]], list[str]]:
    """``(classes, {"train"|"test": [(label, file)]}, problems)`` of a folder dataset, from its file names only.

    The classes are the sorted names of the subfolders of ``train/`` (hidden ones aside); each split lists its
    images (:data:`IMAGE_SUFFIXES`, any case; other files ignored) by class, then by file name. Problems, each
    ``"<path>: <problem>; <fix>"``: no ``train/`` or ``test/``, no class folders, images outside class folders, a
    train class folder without images, a test class that ``train/`` lacks, a split without images."""
    root = Path(root)
    problems: list[str] = []
    files: dict[str, list[tuple[int, Path]]] = {"train": [], "test": []}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            problems.append(f"{root}: no {split}/ folder; expected {CUSTOM_EXPECTS['folder']}")
    if problems:
        return [], files, problems
    classes = [p.name for p in _subfolders(root / "train")]
    if not classes:
        return [], files, [f"{root / 'train'}: no class folders; put each class's images in train/<class>/"]
    for split in ("train", "test"):
        loose = sorted(p.name for p in (root / split).iterdir() if _is_image(p))
        if loose:
            problems.append(f"{root / split}: {len(loose)} image{'s' if len(loose) > 1 else ''} outside the class "
                            f"folders ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); move them into "
                            f"{split}/<class>/")
        for folder in _subfolders(root / split):
            if folder.name not in classes:
                problems.append(f"{folder}: class '{folder.name}' has no folder in train/ (the classes are the "
                                f"folders of train/: {', '.join(classes)}); rename or remove it")
                continue
            images = sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)
            if not images and split == "train":
                problems.append(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); add the class's images or "
                                "remove the folder")
            files[split] += [(classes.index(folder.name), p) for p in images]
    for split in ("train", "test"):
        if not files[split] and not any(p.startswith(f"{root / split}") for p in problems):
            problems.append(f"{root / split}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders; add them")
    return classes, files, problems


def custom_dataset_problems(name: str, settings: dict[str, Any] | None) -> list[str]:
    """Everything wrong with custom dataset ``name`` that can be told cheaply, each ``"datasets.<name>..."`` with the
    fix; [] when fine (and for a built-in dataset without a ``format``). The config (a built-in name, the format,
    the path), then for npz :func:`npz_problems` (headers, labels and class names; not the pixel values), for a
    folder :func:`image_folder_listing` (file names; no image is opened). Never raises."""
    try:
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            return [f"datasets.{name}: expected a mapping with format ({', '.join(CUSTOM_FORMATS)}) and path; "
                    f"got {settings!r}"]
        if not is_custom(settings):
            if name in DATASETS:
                return []
            return [f"datasets.{name}.format is not set; set it to one of {', '.join(CUSTOM_FORMATS)} (or use a "
                    f"built-in dataset: {', '.join(DATASETS)})"]
        try:
            path = custom_path(name, settings)
        except (ValueError, DatasetMissingError) as err:
            return [str(err)]
        found = npz_problems(path) if settings["format"] == "npz" else image_folder_listing(path)[2]
        return [f"datasets.{name}: {p}" for p in found]
    except Exception as err:  # a check must report, never stop the caller
        return [f"datasets.{name}: cannot be checked ({type(err).__name__}: {err}); check its path and files"]


def _folder_image_shape(files: list[Path]) -> tuple[int, int, int] | None:
    """(channels, height, width) of a folder's images from their headers (first image's size), or None."""
    from PIL import Image

    channels, size = 1, None
    for file in files:
        with Image.open(file) as image:
            size = size or image.size
            if image.mode not in GREY_MODES + WIDE_GREY_MODES:
                channels = 3
                break
    return (channels, size[1], size[0]) if size else None


def _custom_facts(name: str, settings: dict[str, Any], shape: bool = False) -> dict[str, Any] | None:
    """``{"classes", "train", "test", "test_per_class", "where"}`` of a custom dataset from its files, with
    ``"chw"`` (channels, height, width) when ``shape``; None when they cannot be known."""
    import numpy as np

    if custom_dataset_problems(name, settings):
        return None
    path = custom_path(name, settings)
    if settings["format"] == "npz":
        headers = npz_headers(path)
        with np.load(path, allow_pickle=False) as npz:
            train, test = (np.asarray(npz[key]).astype(np.int64) for key in ("y_train", "y_test"))
            k = len(npz["classes"]) if "classes" in headers else 1 + int(max(train.max(), test.max()))
        facts = {"classes": k, "train": int(train.size), "test": int(test.size),
                 "test_per_class": np.bincount(test, minlength=k).tolist(), "where": str(path)}
        if shape:
            facts["chw"] = image_chw(headers["x_train"][1])
        return facts
    classes, files, _ = image_folder_listing(path)
    per_class = [0] * len(classes)
    for label, _ in files["test"]:
        per_class[label] += 1
    facts = {"classes": len(classes), "train": len(files["train"]), "test": len(files["test"]),
             "test_per_class": per_class, "where": str(path)}
    if shape:
        facts["chw"] = _folder_image_shape([file for split in ("train", "test") for _, file in files[split]])
    return facts


#: (channels, height, width, classes) of the built-in datasets whose files are fixed.
KNOWN_SHAPES = {"fashion_mnist": (1, 28, 28, 10), "mnist": (1, 28, 28, 10), "cifar10": (3, 32, 32, 10)}


def image_shape(name: str, settings: dict[str, Any] | None, prepared: str | Path | None = None
                ) -> tuple[int, int, int, int] | None:
    """``(channels, height, width, classes)`` of dataset ``name``: read from its prepared file when there is one
    (``train/images``' shape and the ``classes`` attribute), except ``synthetic``, which its settings give
    (:data:`SYNTHETIC_DEFAULTS`; its prepared file is rebuilt when they change); else the built-ins' fixed shapes;
    a custom dataset's from its files (npz: headers and labels; folder: the images' headers). None when it cannot
    be known (a damaged file, a custom dataset with problems: :func:`custom_dataset_problems`). Never raises."""
    try:
        custom = is_custom(settings)
        if name == "synthetic" and not custom:
            s = {**SYNTHETIC_DEFAULTS, **(settings or {})}
            return int(s["channels"]), int(s["size"]), int(s["size"]), int(s["num_classes"])
        if prepared is not None and Path(prepared).is_file():
            import json

            import h5py

            try:
                with h5py.File(prepared, "r") as h5:
                    _, c, h, w = h5["train/images"].shape
                    classes = h5.attrs["classes"]
                    classes = json.loads(classes.decode() if isinstance(classes, bytes) else classes)
                return int(c), int(h), int(w), len(classes)
            except Exception:  # a damaged prepared file: its readers report it; the sources may still tell
                pass
        if custom:
            facts = _custom_facts(name, settings, shape=True)
            return (*facts["chw"], facts["classes"]) if facts and facts["chw"] else None
        return KNOWN_SHAPES.get(name)
    except Exception:
        return None


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


def trajectories_wanted(attack_sets: dict[str, list[str]], trajectories: int, model: str | None = "good_init") -> bool:
    """Q1's JSMA trajectories are recorded when ``model`` (the ``trajectories`` role) is attacked with JSMA and
    n > 0."""
    return model is not None and "jsma" in (attack_sets.get(model) or []) and trajectories > 0


def measurements(attack_sets: dict[str, list[str]], transfer_groups: list[list[str]],
                 trajectories: int, trajectory_model: str | None = "good_init") -> list[tuple[str, str]]:
    """(measuring model, set) pairs the experiments need (docs/method.md, "Experiments"): every adversarial set
    on its target, and on the other members of each transfer group it belongs to when they were
    attacked the same way (Q3: good_init vs compressed; Q5: the three architectures); the normal
    profiles on every measuring model; the JSMA trajectories on ``trajectory_model`` (Q1's role). Every adversarial set's
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
    if trajectories_wanted(attack_sets, trajectories, trajectory_model):
        pairs.add((trajectory_model, trajectory_set(trajectory_model)))
        pairs.add((trajectory_model, control_trajectory_set(trajectory_model)))
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
#: advflow.data.make_synthetic's defaults (tests/test_user_data.py checks they agree).
SYNTHETIC_DEFAULTS = {"n_train": 600, "n_test": 200, "num_classes": 10, "size": 12, "channels": 1}


def split_sizes(name: str, settings: dict[str, Any] | None, prepared: str | Path | None = None
                ) -> dict[str, Any] | None:
    """``{"train", "test", "test_per_class", "where"}`` of dataset ``name``: ``synthetic`` computed from its
    settings (its labels cycle through the classes; an older prepared file is rebuilt when they change, so it is
    not read); the others read from their prepared file when there is one (shapes and the test labels only),
    else the built-ins' published sizes and a custom dataset's counts from its files (npz: its labels; folder:
    its file names). None when nothing can be known (a custom dataset with problems:
    :func:`custom_dataset_problems`)."""
    custom = is_custom(settings)
    if (name != "synthetic" or custom) and prepared is not None and Path(prepared).is_file():
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
    if custom:
        try:
            facts = _custom_facts(name, settings)
        except Exception:  # never raises: the dataset's own checks report what is wrong
            return None
        return facts and {key: facts[key] for key in ("train", "test", "test_per_class", "where")}
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
