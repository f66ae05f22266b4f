"""Pre- and postprocessing of the Jetson runner in NumPy (OpenCV for the resize when present), as Ultralytics does.

``letterbox`` matches ``ultralytics.data.augment.LetterBox(auto=False)``; ``nms`` matches
``ultralytics.utils.nms.non_max_suppression`` (class-offset boxes, greedy IoU suppression, max_det) on raw
(B, 4 + C, A) predictions and filters (B, N, 6) end-to-end detections by score; tests compare both with Ultralytics.
"""

from __future__ import annotations

import numpy as np

MAX_WH = 7680  # class offset of Ultralytics' batched NMS, pixels
MAX_NMS = 30000  # most boxes that enter NMS per image


def letterbox(image: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
    """Resize keeping the aspect ratio and pad with grey 114 to imgsz (height, width), centred.

    Args:
        image (ndarray[H, W, 3]): BGR uint8.
        imgsz (tuple[int, int]): output (height, width), pixels.

    Returns:
        (ndarray[h, w, 3]): BGR uint8.
    """
    import cv2

    height, width = image.shape[:2]
    ratio = min(imgsz[0] / height, imgsz[1] / width)
    new_width, new_height = max(1, round(width * ratio)), max(1, round(height * ratio))
    pad_width, pad_height = (imgsz[1] - new_width) / 2, (imgsz[0] - new_height) / 2
    if (width, height) != (new_width, new_height):
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(pad_height - 0.1), round(pad_height + 0.1)
    left, right = round(pad_width - 0.1), round(pad_width + 0.1)
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def preprocess(frames: list[np.ndarray], imgsz: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """Letterbox BGR frames into ``out`` (B, 3, h, w) as RGB in [0, 1] (out's dtype: float32 or float16)."""
    for index, frame in enumerate(frames):
        boxed = letterbox(frame, imgsz) if frame.shape[:2] != tuple(imgsz) else frame
        out[index] = boxed[..., ::-1].transpose(2, 0, 1) * np.asarray(1 / 255, dtype=out.dtype)
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with boxes (N, 4), pixels."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return intersection / (area + areas - intersection + 1e-9)


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS (torchvision.ops.nms semantics: drop IoU > iou): kept indices by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:  # one pass per kept box; vectorised over the remaining ones
        best = order[0]
        keep.append(best)
        order = order[1:][box_iou(boxes[best], boxes[order[1:]]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def nms(predictions: np.ndarray, conf: float, iou: float, max_det: int = 300, end2end: bool = False) -> list:
    """Detections per image, (N, 6) xyxy pixels, score, class, by decreasing score.

    Args:
        predictions (ndarray[B, 4 + C, A] | ndarray[B, N, 6]): raw xywh + class probabilities, or end-to-end
            detections (xyxy, score, class) when ``end2end``.
    """
    results = []
    for image in predictions.astype(np.float32):
        if end2end:
            kept = image[image[:, 4] > conf][:max_det]
            results.append(kept)
            continue
        scores_all = image[4:].T  # (A, C)
        classes = scores_all.argmax(1)
        scores = scores_all[np.arange(len(classes)), classes]
        candidates = np.flatnonzero(scores > conf)
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")][:MAX_NMS]
        xywh = image[:4, candidates].T
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        offset = boxes + classes[candidates, None] * MAX_WH
        kept = nms_indices(offset, scores[candidates], iou)[:max_det]
        results.append(
            np.concatenate([boxes[kept], scores[candidates][kept, None], classes[candidates][kept, None]], 1)
        )
    return results


def scale_boxes(imgsz: tuple[int, int], boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes (N, 4) xyxy from the letterboxed input back to the original image (height, width), clipped."""
    gain = min(imgsz[0] / shape[0], imgsz[1] / shape[1])
    pad_x = round((imgsz[1] - shape[1] * gain) / 2 - 0.1)
    pad_y = round((imgsz[0] - shape[0] * gain) / 2 - 0.1)
    boxes = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], dtype=boxes.dtype)) / gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[0])
    return boxes
