"""``validate_model`` on the 64-px synthetic set: both metric sets, and ground truth equal to Ultralytics' own."""

from __future__ import annotations

import json

import pytest
from ultralytics import YOLO

from yolokd.evaluation.coco_gt import build_coco_gt, image_id
from yolokd.evaluation.validate import CocoDetectionValidator, FullNMSValidator, validate_model

pytestmark = pytest.mark.integration

VAL_ARGS = dict(imgsz=64, batch=8, device="cpu", plots=False, verbose=False)


def test_val_writes_both_metric_sets(synthetic_data, teacher_checkpoint, tmp_path):
    """val_metrics.json holds Ultralytics' results and the six COCO columns; predictions use GT image ids."""
    result = validate_model(
        teacher_checkpoint("yolov8n.yaml"), data=str(synthetic_data), project=str(tmp_path), **VAL_ARGS
    )
    saved = json.loads(result.files["metrics"].read_text())
    assert "metrics/mAP50-95(B)" in saved["ultralytics"]
    assert set(saved["coco"]) >= {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"}
    assert saved["coco"]["images"] == 8 and saved["coco"]["annotations"] > 0
    gt = json.loads(result.files["coco_gt"].read_text())
    if result.files.get("predictions"):
        predicted = {entry["image_id"] for entry in json.loads(result.files["predictions"].read_text())}
        assert predicted <= {image["id"] for image in gt["images"]}


def test_gt_matches_ultralytics_loader(synthetic_data, teacher_checkpoint, tmp_path):
    """Our YOLO -> COCO conversion equals the ground truth Ultralytics' validator builds from its data loader."""
    validators = []
    model = YOLO(str(teacher_checkpoint("yolov8n.yaml")))
    model.add_callback("on_val_end", validators.append)
    model.val(
        validator=CocoDetectionValidator, data=str(synthetic_data), save_json=True, project=str(tmp_path), **VAL_ARGS
    )
    validator = validators[-1]
    files = validator.dataloader.dataset.im_files
    theirs = sorted(
        (image_id(files[a["image_id"]]), a["category_id"], *a["bbox"]) for a in validator.gdict["annotations"]
    )
    ours = sorted(
        (a["image_id"], a["category_id"], *a["bbox"]) for a in build_coco_gt(files, validator.class_map)["annotations"]
    )
    assert len(ours) == len(theirs) > 0
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine[:2] == reference[:2]
        assert mine[2:] == pytest.approx(reference[2:], abs=0.02)  # pixels; theirs went through the letterbox


def test_single_cls_with_coco_refused(synthetic_data, teacher_checkpoint):
    """single_cls would renumber the predictions' classes, so COCO mode refuses it and says how to proceed."""
    with pytest.raises(ValueError, match="coco=false"):
        validate_model(teacher_checkpoint("yolov8n.yaml"), data=str(synthetic_data), single_cls=True, **VAL_ARGS)


def test_coco_metrics_on_a_task_model_refused(synthetic_data, tmp_path):
    """coco=true on a segment model (the COCO box metrics are detect-only) is one line naming the task and the fix;
    left unset it is off for task models (they validate with their task's metrics, tested on trained students)."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    checkpoint = tmp_path / "seg.pt"  # the task in train_args, as a trained checkpoint has it
    torch.save(
        {"model": SegmentationModel("yolov8n-seg.yaml", nc=8, verbose=False), "train_args": {"task": "segment"}},
        checkpoint,
    )
    with pytest.raises(ValueError, match=r"^coco: .* is a segment model: validate it with coco=false") as error:
        validate_model(checkpoint, coco=True, data=str(synthetic_data))
    assert "\n" not in str(error.value)


def test_nms_is_never_cut_short(monkeypatch):
    """Ultralytics' NMS gives up after 2 + 0.05 x batch seconds and leaves later images empty; ours never does.

    A clock that jumps 100 s per reading makes every image "too slow": Ultralytics' own postprocess keeps the first
    image's detections only, the validator's keeps every image's.
    """
    from types import SimpleNamespace

    import torch
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import nms

    clock = iter(range(0, 10**6, 100))
    monkeypatch.setattr(nms.time, "time", lambda: float(next(clock)))
    boxes = torch.tensor([[20.0, 20.0, 10.0, 10.0], [60.0, 60.0, 12.0, 12.0]]).T  # (4, A) xywh, apart
    scores = torch.tensor([[0.9, 0.8], [0.0, 0.0]])  # (C, A): one class above conf, so one detection per box
    preds = torch.cat((boxes, scores)).unsqueeze(0).repeat(4, 1, 1)  # (B=4, 4 + C, A)
    args = SimpleNamespace(conf=0.001, iou=0.7, task="detect", single_cls=False, agnostic_nms=False, max_det=300)

    def detections(validator_class) -> list[int]:
        validator = validator_class.__new__(validator_class)
        validator.args, validator.nc, validator.end2end = args, 2, False
        return [len(image["conf"]) for image in validator.postprocess(preds)]

    assert detections(DetectionValidator) == [2, 0, 0, 0]  # the limit this guards against is real
    assert detections(CocoDetectionValidator) == [2, 2, 2, 2]
    assert detections(FullNMSValidator) == [2, 2, 2, 2]


def test_distillation_trainer_validates_with_the_full_nms(tmp_path):
    """Validation during a detect run (best.pt, results.csv) uses the same NMS as ``yolokd val``."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import callbacks

    from yolokd.engine.trainer import DistillationTrainer

    trainer = DistillationTrainer.__new__(DistillationTrainer)
    trainer.test_loader, trainer.save_dir, trainer.args = None, tmp_path, get_cfg()
    trainer.callbacks = callbacks.get_default_callbacks()
    assert isinstance(trainer.get_validator(), FullNMSValidator)
