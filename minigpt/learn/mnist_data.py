"""Handwritten digits for the mnist lesson: the shipped 8x8 UCI digits, or the real 28x28 MNIST.

`load(spec)` returns `Digits` (pixels scaled to [0, 1], flattened; labels 0-9) from:
- None or "digits": data/digits.csv.gz, the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
  Kaynak 1998; 1,797 images of 8x8 pixels valued 0-16, CC BY 4.0; the copy scikit-learn ships), split by a
  seeded shuffle into 1,438 train and 359 test images;
- "ylecun/mnist" (or "mnist"): MNIST from the Hugging Face Hub through `datasets` (online; 60,000 + 10,000);
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
    if spec in (None, "digits"):
        return shipped_digits(seed)
    if spec in (HUB_ID, "mnist"):
        return hub_mnist()
    path = Path(spec)
    if not path.exists():
        raise MinigptError(f"--data {spec}: no such file or folder; give a folder of MNIST IDX files, a .parquet "
                           f"file or folder, or {HUB_ID} (online)")
    if path.is_dir() and any(_find(path, stem) for stem in IDX_FILES["train"]):
        return idx_folder(path)
    files = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    if not files or any(f.suffix != ".parquet" for f in files):
        raise MinigptError(f"--data {spec}: neither MNIST IDX files (train-images-idx3-ubyte, ...) nor .parquet "
                           "files; give one of those")
    return parquet_files(files, seed)


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


def _as_digits(name: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Digits:
    side = images["train"].shape[-1]
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
    return _as_digits(f"MNIST ({folder})", images, labels)


def _pixels(image) -> np.ndarray:
    """A PIL image, or the Hub's {"bytes": PNG} struct, as a uint8 array."""
    from PIL import Image

    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _rows(dataset) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([_pixels(im) for im in dataset["image"]]), np.asarray(dataset["label"])


def parquet_files(files: list[Path], seed: int = 0) -> Digits:
    from ..text.sources import _datasets

    test = [str(f) for f in files if f.name.startswith("test")]
    train = [str(f) for f in files if not f.name.startswith("test")]
    try:
        ds = _datasets().load_dataset("parquet", data_files={"train": train, **({"test": test} if test else {})},
                                      cache_dir=str(minigpt_home() / "datasets"))
    except Exception as e:  # datasets raises many kinds of errors for a bad file
        raise MinigptError(f"{files[0]}: could not read it as parquet ({e})") from None
    if not {"image", "label"} <= set(ds["train"].column_names):
        raise MinigptError(f"{files[0]}: needs an image and a label column, has {ds['train'].column_names}")
    if not test:
        x, y = _rows(ds["train"])
        return Digits(f"MNIST ({files[0]})", x.shape[-1], *_split(x.reshape(len(x), -1).astype(np.float32) / 255.0,
                                                                   y.astype(np.int64), seed))
    (xi, yi), (xt, yt) = _rows(ds["train"]), _rows(ds["test"])
    return _as_digits(f"MNIST ({files[0].parent})", {"train": xi, "test": xt}, {"train": yi, "test": yt})


def hub_mnist() -> Digits:
    from ..text.sources import _datasets

    try:
        ds = _datasets().load_dataset(HUB_ID, cache_dir=str(minigpt_home() / "datasets"))
    except Exception as e:  # offline: ConnectionError, or datasets' own errors
        raise MinigptError(f"--data {HUB_ID}: could not load it from the Hub ({type(e).__name__}); offline, "
                           "drop --data for the shipped 8x8 digits, or give a folder of MNIST IDX or parquet "
                           "files") from None
    (xi, yi), (xt, yt) = _rows(ds["train"]), _rows(ds["test"])
    return _as_digits(f"MNIST ({HUB_ID})", {"train": xi, "test": xt}, {"train": yi, "test": yt})
