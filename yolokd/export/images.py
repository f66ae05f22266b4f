"""Real images for export checks, INT8 calibration files and benchmarks, preprocessed as Ultralytics predicts.

Default images are Ultralytics' bundled ``assets`` (bus.jpg, zidane.jpg); with ``data=`` a split of the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def split_images(data: str | Path, split: str) -> list[Path]:
    """Image files of one split (``train`` / ``val`` / ``test``) of an Ultralytics data YAML, sorted."""
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset

    dataset = check_det_dataset(str(data))
    if not dataset.get(split):
        raise ValueError(
            f"data: {data} has no '{split}' split (splits: {[k for k in ('train', 'val', 'test') if dataset.get(k)]})"
        )
    sources = dataset[split] if isinstance(dataset[split], list) else [dataset[split]]
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += [p for p in source.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS]
        elif source.suffix == ".txt":
            lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
            files += [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
        elif source.is_file():
            files.append(source)
    if not files:
        raise ValueError(f"data: the '{split}' split of {data} has no images")
    return sorted(files)


def default_images() -> list[Path]:
    """Ultralytics' bundled real photos (bus.jpg, zidane.jpg): no dataset or download needed."""
    from ultralytics.utils import ASSETS

    return sorted(ASSETS.glob("*.jpg"))


def pick(files: list[Path], count: int) -> list[Path]:
    """``count`` files spread evenly over the list (all of them when there are fewer), repeating none."""
    if count >= len(files):
        return list(files)
    return [files[int(index)] for index in np.linspace(0, len(files) - 1, count).round()]


def read_images(files: list[Path]) -> list[np.ndarray]:
    """Decode images as BGR uint8 (H, W, 3), as cv2 and Ultralytics' predictor read them."""
    import cv2

    images = []
    for file in files:
        image = cv2.imread(str(file))
        if image is None:
            raise ValueError(f"{file}: not a readable image")
        images.append(image)
    return images


def letterbox(images: list[np.ndarray], imgsz: tuple[int, int]) -> np.ndarray:
    """Ultralytics' LetterBox (aspect kept, grey 114 padding, centred) then BGR->RGB, HWC->CHW.

    Args:
        images (list[ndarray[H, W, 3]]): BGR uint8 images of any size.
        imgsz (tuple[int, int]): model input (height, width), pixels.

    Returns:
        (ndarray[B, 3, h, w]): RGB uint8, contiguous.
    """
    from ultralytics.data.augment import LetterBox

    boxer = LetterBox(tuple(imgsz), auto=False, stride=32)
    batch = np.stack([boxer(image=image) for image in images])
    return np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2))


def image_size(imgsz: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """``640`` or ``[480, 640]`` -> (height, width)."""
    if isinstance(imgsz, int):
        return imgsz, imgsz
    sides = [int(side) for side in imgsz]
    if len(sides) == 1:
        return sides[0], sides[0]
    if len(sides) != 2:
        raise ValueError(f"imgsz: expected one side or (height, width), got {imgsz}")
    return sides[0], sides[1]
