"""Handwritten digits for the mnist lesson: the shipped 8x8 UCI digits, or the real 28x28 MNIST.

`load(spec)` returns `Digits` (pixels scaled to [0, 1], flattened; labels 0-9) from:
- None or "digits": data/digits.csv.gz, the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
  Kaynak 1998; 1,797 images of 8x8 pixels valued 0-16, CC BY 4.0; the copy scikit-learn ships), split by a
  seeded shuffle into 1,438 train and 359 test images;
- "ylecun/mnist" (or "mnist"): MNIST from the Hugging Face Hub through `datasets` (online; 60,000 + 10,000),
  unless a file or folder of that name exists: then that is read;
- a folder of IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
  t10k-labels-idx1-ubyte, each optionally .gz: LeCun's original distribution);
- a .parquet file or a folder of them (the Hub's layout: an `image` column of PNG bytes and a `label` column;
  files whose name starts with "test" are the test split; a single file is split 80/20 like the digits).
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..common import MinigptError, minigpt_home

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DIGITS_CSV = DATA_DIR / "digits.csv.gz"
HUB_ID = "ylecun/mnist"
TEST_SHARE = 0.2
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass
class Digits:
    name: str
    side: int  # images are side x side pixels
    x_train: torch.Tensor  # (N, side*side) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def inputs(self) -> int:
        return self.side * self.side


def load(spec: str | None = None, seed: int = 0) -> Digits:
    """The digits `spec` names; a file or folder that exists wins over the names "digits", "mnist" and the Hub
    id (a local folder ./mnist is read, not the Hub; the lesson prints which data it read)."""
    path = Path(spec) if spec else None
    if path is None or (spec == "digits" and not path.exists()):
        return shipped_digits(seed)
    if spec in (HUB_ID, "mnist") and not path.exists():
        return hub_mnist()
    if not path.exists():
        raise MinigptError(f"--data {spec}: no such file or folder; give a folder of MNIST IDX files, a .parquet "
                           f"file or folder, or {HUB_ID} (online)")
    if path.is_dir() and any(_find(path, stem) for stem in IDX_FILES["train"]):
        return idx_folder(path)
    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    if not files or any(f.suffix != ".parquet" for f in files):
        raise MinigptError(f"--data {spec}: neither MNIST IDX files (train-images-idx3-ubyte, ...) nor .parquet "
                           "files; give one of those")
    return parquet_files(files, seed, by_name=path.is_dir())


def _split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[torch.Tensor, ...]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(x) * TEST_SHARE)
    x, y = torch.from_numpy(x)[order], torch.from_numpy(y)[order]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def shipped_digits(seed: int = 0) -> Digits:
    if not DIGITS_CSV.is_file():
        raise MinigptError(f"{DIGITS_CSV} is missing: run from a minigpt checkout, or give --data (MNIST IDX or "
                           "parquet files)")
    table = np.loadtxt(gzip.open(DIGITS_CSV, "rt"), delimiter=",", dtype=np.float32)  # 64 pixels, then the label
    x, y = table[:, :64] / 16.0, table[:, 64].astype(np.int64)
    return Digits("UCI 8x8 digits", 8, *_split(x, y, seed))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (LeCun's format): 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, each
    dimension as a big-endian uint32, then the data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 0x08:
        raise MinigptError(f"{path}: not an IDX file of unsigned bytes; give MNIST's original files")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise MinigptError(f"{path}: holds {data.size} values, its header says {dims}; the file is truncated")
    return data.reshape(dims)


def _check(where: object, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """What the network needs of a split: at least one square image, and labels that are digits 0-9."""
    if len(images) == 0:
        raise MinigptError(f"{where}: the {split} split holds no images; give MNIST data with at least one")
    if images.ndim != 3:
        raise MinigptError(f"{where}: the {split} images have shape {images.shape}, not (count, rows, columns); "
                           "give MNIST's image files")
    if images.shape[1] != images.shape[2]:
        raise MinigptError(f"{where}: the {split} images are {' x '.join(map(str, images.shape[1:]))} pixels, not "
                           "square; give square digit images (MNIST's are 28 x 28)")
    if labels.min() < 0 or labels.max() > 9:
        raise MinigptError(f"{where}: a {split} label is {labels.max() if labels.max() > 9 else labels.min()}; "
                           "the labels must be the digits 0-9")


def _as_digits(name: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], where: object) -> Digits:
    for split in images:
        _check(where, split, images[split], labels[split])
    side = images["train"].shape[-1]
    if images["test"].shape[-1] != side:
        raise MinigptError(f"{where}: the train images are {side} x {side} pixels, the test images "
                           f"{images['test'].shape[-1]} x {images['test'].shape[-1]}; give both splits one size")
    x = {s: torch.from_numpy(images[s].reshape(len(images[s]), -1).astype(np.float32) / 255.0) for s in images}
    y = {s: torch.from_numpy(labels[s].astype(np.int64)) for s in labels}
    return Digits(name, side, x["train"], y["train"], x["test"], y["test"])


def idx_folder(folder: Path) -> Digits:
    images, labels = {}, {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        found = _find(folder, image_stem), _find(folder, label_stem)
        if None in found:
            raise MinigptError(f"{folder}: missing {image_stem if found[0] is None else label_stem}[.gz]; MNIST "
                               "has four IDX files (train and t10k images and labels)")
        images[split], labels[split] = read_idx(found[0]), read_idx(found[1])
        if len(images[split]) != len(labels[split]):
            raise MinigptError(f"{folder}: {split} has {len(images[split])} images but {len(labels[split])} labels")
    return _as_digits(f"MNIST IDX files in {folder}", images, labels, folder)


def _pixels(image) -> np.ndarray:
    """A PIL image, or the Hub's {"bytes": PNG} struct, as a uint8 array."""
    from PIL import Image

    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _rows(dataset) -> tuple[np.ndarray, np.ndarray]:
    if len(dataset) == 0:
        return np.zeros((0, 0, 0), np.uint8), np.zeros(0, np.int64)
    return np.stack([_pixels(im) for im in dataset["image"]]), np.asarray(dataset["label"])


def parquet_files(files: list[Path], seed: int = 0, by_name: bool = True) -> Digits:
    """`by_name` (a folder): files named test* are the test split; else (one file given) it is split 80/20."""
    from ..text.sources import _datasets

    test = [str(f) for f in files if by_name and f.name.startswith("test")]
    train = [str(f) for f in files if str(f) not in test]
    if not train:
        raise MinigptError(f"{files[0].parent}: holds only test files ({', '.join(f.name for f in files)}); add the "
                           "train files (train-*.parquet), or give one .parquet file to split 80/20")
    try:
        ds = _datasets().load_dataset("parquet", data_files={"train": train, **({"test": test} if test else {})},
                                      cache_dir=str(minigpt_home() / "datasets"))
    except Exception as e:  # datasets raises many kinds of errors for a bad file
        raise MinigptError(f"{files[0]}: could not read it as parquet ({e})") from None
    if not {"image", "label"} <= set(ds["train"].column_names):
        raise MinigptError(f"{files[0]}: needs an image and a label column, has {ds['train'].column_names}")
    if not test:
        x, y = _rows(ds["train"])
        _check(files[0], "train", x, y)
        return Digits(f"MNIST parquet {files[0]} (split 80/20)", x.shape[-1],
                      *_split(x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64), seed))
    (xi, yi), (xt, yt) = _rows(ds["train"]), _rows(ds["test"])
    return _as_digits(f"MNIST parquet files in {files[0].parent}", {"train": xi, "test": xt},
                      {"train": yi, "test": yt}, files[0].parent)


def hub_mnist() -> Digits:
    from ..text.sources import _datasets

    try:
        ds = _datasets().load_dataset(HUB_ID, cache_dir=str(minigpt_home() / "datasets"))
    except Exception as e:  # offline: ConnectionError, or datasets' own errors
        raise MinigptError(f"--data {HUB_ID}: could not load it from the Hub ({type(e).__name__}); offline, "
                           "drop --data for the shipped 8x8 digits, or give a folder of MNIST IDX or parquet "
                           "files") from None
    (xi, yi), (xt, yt) = _rows(ds["train"]), _rows(ds["test"])
    return _as_digits(f"MNIST from the Hub ({HUB_ID})", {"train": xi, "test": xt}, {"train": yi, "test": yt}, HUB_ID)
