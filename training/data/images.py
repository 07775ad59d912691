"""Image datasets: scikit-learn's bundled digits, or a folder with one sub-folder per class.

Arrays returned here are ``x: float32 [N, C, H, W]`` raw pixel values in the dataset's
`value_range` and ``y: int64 [N]`` class ids indexing `labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset in raw pixel units."""

    x: np.ndarray  # float32 [N, C, H, W]
    y: np.ndarray  # int64 [N]
    labels: tuple[str, ...]
    value_range: tuple[float, float]
    name: str
    source: str

    def image_meta(self) -> dict[str, Any]:
        """The ``image`` block of metadata.json."""
        c, h, w = self.shape
        return {"channels": c, "height": h, "width": w, "value_range": list(self.value_range)}

    def dataset_meta(self, n_train: int, n_val: int, n_test: int) -> dict[str, Any]:
        """The ``dataset`` block of metadata.json."""
        return {
            "name": self.name,
            "source": self.source,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
        }

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        _, c, h, w = self.x.shape
        return int(c), int(h), int(w)


def load_digits() -> ImageData:
    """scikit-learn's 1,797 handwritten digits, 8×8 grey levels 0..16, 10 classes."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return ImageData(
        x,
        y,
        tuple(str(i) for i in range(10)),
        (0.0, 16.0),
        "digits",
        "sklearn.datasets.load_digits",
    )


def load_folder(root: Path, size: tuple[int, int], channels: int) -> ImageData:
    """Images under ``root/<class>/*.png|jpg…``, resized to `size` (H, W), 1 or 3 channels."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise DataError(f"data: image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(
            f"data: {root} must hold one sub-folder per class (at least 2); found {len(classes)}"
        )
    mode = "L" if channels == 1 else "RGB"
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for idx, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"data: class folder {root / cls} holds no images ({IMAGE_SUFFIXES})")
        for path in files:
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert(mode).resize((size[1], size[0])), np.float32)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"data: cannot read image {path}: {exc}") from exc
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(idx)
    return ImageData(
        np.stack(xs), np.asarray(ys, np.int64), tuple(classes), (0.0, 255.0), root.name, str(root)
    )


def load_images(data: str, size: tuple[int, int], channels: int) -> ImageData:
    """`data` is ``digits`` or the path of an image folder."""
    if data == "digits":
        return load_digits()
    return load_folder(Path(data), size, channels)
