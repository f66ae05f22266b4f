"""Distillation trainers: Ultralytics' task trainer plus a frozen teacher and distillation losses.

:class:`DistillationMixin` holds everything yolokd adds; it sits in front of the Ultralytics trainer of the
student's task: ``DistillationTrainer`` (detect, ``DetectionTrainer``), ``SegmentationDistillationTrainer``
(``SegmentationTrainer``), ``PoseDistillationTrainer`` (``PoseTrainer``), ``OBBDistillationTrainer`` (``OBBTrainer``).
``trainer_for(task)`` and ``student_task(model)`` pick one; ``yolokd train`` picks by the student model's task.

The Ultralytics trainer keeps doing what it does well (data, augmentation, optimiser, EMA, AMP, validation,
callbacks, plots, checkpoints). The mixin adds exactly: the teacher and the loss modules (built once the
student exists), the student's criterion swap (:class:`~yolokd.engine.criterion.DistillationCriterion`, installed
once: copies of the student carry Ultralytics' own criterion), the recording of the student's stage outputs inside
each step, validation and balance measurement, a KD optimiser for trainable KD parts, the KD weight schedule, a NaN
guard on KD terms, a re-seed of the augmentation stream before the training loader is built
(:mod:`yolokd.engine.seeding`), the KD state file beside ``last.pt`` for resume, and on fresh runs the losses' student
initialisation (G-DetKD's head transfer). The student model, its EMA and its checkpoints never hold any of these.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from copy import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.tasks import guess_model_task, load_checkpoint, yaml_model_load
from ultralytics.utils import DEFAULT_CFG, LOCAL_RANK, LOGGER, RANK, YAML, colorstr
from ultralytics.utils.torch_utils import torch_distributed_zero_first, unwrap_model

from yolokd.config import Experiment, load_experiment
from yolokd.engine.balance import BalanceReport, measure_balance, preserved_state
from yolokd.engine.checkpoint import kd_state_path, load_kd_state, save_kd_state
from yolokd.engine.criterion import DistillationCriterion
from yolokd.engine.ddp import (
    any_rank,
    average_gradients,
    average_sums,
    balance_slice,
    broadcast_state,
    distributed,
    every_rank,
    experiment_for_ranks,
    experiment_from_launcher,
    sum_gradients,
)
from yolokd.engine.distiller import Distiller, amp_teacher_dtype, check_teacher_classes, load_teacher
from yolokd.engine.plots import plot_kd_terms
from yolokd.engine.seeding import SeededDataMixin
from yolokd.evaluation.validate import FullNMSValidator
from yolokd.heads import adapter_for
from yolokd.models import DenseDetectionModel, dense_head_name, resolve_model_yaml

ADAM_FAMILY = {"Adam", "Adamax", "AdamW", "NAdam", "RAdam"}


def build_kd_optimizer(modules: nn.Module, name: str, lr: float, momentum: float, decay: float):
    """Optimiser for trainable KD parts (aligners, ...); its lr and momentum follow the student's each step."""
    params = [p for p in modules.parameters() if p.requires_grad]
    if not params:
        return None
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if name in ADAM_FAMILY:
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def step_kd_optimizer(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, lr: float) -> bool:
    """Step the KD optimiser at the student's lr (grads unscaled and clipped); False when nothing got a gradient.

    While the KD factor is 0 (warm-up start, ``off_last_epochs``) no KD module is in the graph and none has a
    gradient: GradScaler's ``step`` would then fail ("No inf checks were recorded for this optimizer"), so the step
    is skipped. Checking ``.grad is None`` reads no tensor value: no host sync.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if all(p.grad is None for p in params):
        return False
    for group in optimizer.param_groups:
        group["lr"] = lr
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(params, max_norm=10.0)
    scaler.step(optimizer)
    optimizer.zero_grad()
    return True


def _absolute(value: Any) -> Any:
    """A path to a file that exists from the current folder, made absolute; anything else unchanged (a release name
    such as ``yolov8s.pt``, a dataset name such as ``coco.yaml``, a dict)."""
    if isinstance(value, str | Path) and Path(value).suffix and Path(value).is_file():
        return str(Path(value).resolve())
    return value


def with_absolute_files(experiment: Experiment, overrides: dict[str, Any]) -> tuple[Experiment, dict[str, Any]]:
    """The experiment and train arguments of a fresh run with their local ``teacher`` and ``data`` files as absolute
    paths: both are saved with the run (``kd_state.pt``, ``last.pt``'s train args), so ``resume=`` continues it from
    any folder instead of failing on a path relative to the folder it started in."""
    train_args = {
        **experiment.train_args,
        **({"data": _absolute(experiment.train_args["data"])} if "data" in experiment.train_args else {}),
    }
    overrides = {**overrides, **({"data": _absolute(overrides["data"])} if "data" in overrides else {})}
    return replace(experiment, train_args=train_args, teacher=_absolute(experiment.teacher)), overrides


def finished_run_error(last: str | Path, epochs: int | str) -> ValueError:
    """The one-line refusal to resume a run that already finished (Ultralytics marks its final last.pt epoch -1)."""
    return ValueError(
        f"'{last}' already finished its {epochs} epochs: nothing to resume. Start a new run (without resume=) to "
        "train further"
    )


def refuse_finished_resume(resume: Any) -> None:
    """Raise ``finished_run_error`` before anything is built when ``resume`` names a finished run's last.pt.

    Ultralytics' final checkpoint no longer holds its run folder (``save_dir``), so a resume of it would first make a
    new numbered run folder (``name-2``) and only then be refused by ``resume_training``.
    """
    if not isinstance(resume, str | Path) or not Path(resume).is_file():
        return
    ckpt = torch.load(resume, map_location="cpu", weights_only=False)
    if ckpt.get("epoch", 0) == -1:
        raise finished_run_error(resume, (ckpt.get("train_args") or {}).get("epochs", "?"))


class DistillationMixin(SeededDataMixin):
    """Train an Ultralytics student with a teacher and the experiment's distillation losses; put it before the
    Ultralytics trainer of the student's task (``class T(DistillationMixin, DetectionTrainer)``).

    Multi-GPU (``device=0,1,...``) runs on Ultralytics' DDP launcher, which rebuilds this trainer in each rank from
    its args (``cfg``, ``overrides``, ``_callbacks``); what distillation adds there is in :mod:`yolokd.engine.ddp`.

    Args:
        experiment: the validated experiment; None when resuming (it is read back from ``kd_state.pt``) and in a DDP
            rank (it comes from the launching process, :func:`~yolokd.engine.ddp.experiment_from_launcher`).
        overrides: Ultralytics train arguments (normally ``experiment.train_args``, plus ``resume``).
        cfg: Ultralytics' base configuration (its DDP launcher passes its defaults).
    """

    def __init__(
        self,
        experiment: Experiment | None = None,
        overrides: dict[str, Any] | None = None,
        _callbacks=None,
        cfg=DEFAULT_CFG,
    ):
        refuse_finished_resume((overrides or {}).get("resume"))
        if experiment is not None and not (overrides or {}).get("resume"):
            experiment, overrides = with_absolute_files(experiment, overrides or {})
        super().__init__(cfg=cfg, overrides=overrides, _callbacks=_callbacks)
        if experiment is None and RANK != -1 and experiment_from_launcher() is not None:
            experiment = load_experiment(experiment_from_launcher())  # a DDP rank: the launcher's experiment
        self.resume_state: dict[str, Any] | None = None
        if self.resume:
            self.resume_state = load_kd_state(kd_state_path(self.args.model))
            saved = load_experiment(self.resume_state["experiment"])
            if experiment is not None and experiment.to_dict()["distill"] != saved.to_dict()["distill"]:
                LOGGER.warning("resume uses the distillation settings saved with the run, not the ones given now")
            experiment = saved
        if experiment is None:
            raise ValueError(f"{type(self).__name__} needs an experiment (or resume=<last.pt> of a yolokd run)")
        self.experiment = experiment
        self.distiller: Distiller | None = None
        self.kd_optimizer: torch.optim.Optimizer | None = None
        self.balance: BalanceReport | None = None
        self.batch_in_epoch = 0
        self.epoch_scales: dict[str, float] = {}  # each method's KD scale during this epoch, for results.csv
        self.step_recording = ExitStack()  # the student's stage recording, open from batch start to batch end
        if RANK in {-1, 0}:
            YAML.save(self.save_dir / "distill.yaml", experiment.to_dict())
        for event, callback in (
            ("on_train_epoch_start", DistillationMixin._start_epoch_schedule),
            ("on_train_batch_start", DistillationMixin._step_schedule),
            ("on_train_batch_end", DistillationMixin._end_step),
            ("on_train_epoch_end", DistillationMixin._end_step),  # a step cut short (OOM retry)
            ("on_train_epoch_end", DistillationMixin._refresh_balance),
        ):
            if callback not in self.callbacks[event]:  # a DDP rank gets the launcher's callbacks, ours included
                self.add_callback(event, callback)

    def train(self):
        """Train; on several GPUs through Ultralytics' DDP launcher, the experiment travelling to the ranks."""
        if not self.ddp:
            return super().train()
        with experiment_for_ranks(self.experiment.to_dict()):
            return super().train()

    # --- building -------------------------------------------------------------------------------------------
    def get_dataset(self):
        """Ultralytics' dataset check; a missing file (data YAML, image folder) becomes a one-line FileNotFoundError."""
        try:
            return super().get_dataset()
        except RuntimeError as error:  # Ultralytics wraps every dataset error in a RuntimeError
            if not isinstance(error.__cause__, FileNotFoundError):
                raise
            raise FileNotFoundError(f"data: {' '.join(str(error.__cause__).split())}") from error

    def setup_model(self):
        """Build the student as Ultralytics does, then the teacher and loss modules that depend on it."""
        ckpt = super().setup_model()
        if self.experiment.distill:
            with torch_distributed_zero_first(LOCAL_RANK):  # a release-name teacher is downloaded once per machine
                teacher = load_teacher(self.experiment.teacher, self.device)  # each DDP rank runs its own teacher
            check_teacher_classes(teacher.names, self.data["names"])
            self.distiller = Distiller(teacher, self.model, self.experiment.distill, self.device)
            broadcast_state(self.distiller.losses)  # DDP: every rank starts from rank 0's KD modules
            spec = self.distiller.teacher_adapter.spec
            LOGGER.info(
                f"{colorstr('yolokd:')} teacher {self.experiment.teacher} ({spec.task} model, {spec.family}), "
                f"losses {list(self.distiller.losses)}, terms {list(self.distiller.term_names)}"
            )
            if not self.resume:
                self._init_student_from_teacher()
        return ckpt

    def _init_student_from_teacher(self) -> None:
        """Fresh runs only: losses with an ``init_student`` method initialise the student from the teacher.

        G-DetKD's head transfer (``init_head_from_teacher``) copies teacher head tensors into the student here, once,
        before the EMA and the optimiser are built from the student. A resumed run keeps the weights of its
        ``last.pt`` (this is not called).
        """
        student = adapter_for(self.model)
        for loss in self.distiller.losses.values():
            init_student = getattr(loss, "init_student", None)
            if init_student is not None:
                init_student(self.distiller.teacher_adapter, student)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """The student's optimiser exactly as Ultralytics builds it, plus a separate one for KD parts."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        if self.distiller is not None:
            self.kd_optimizer = build_kd_optimizer(self.distiller.losses, self.args.optimizer, lr, momentum, decay)
        return optimizer

    def _setup_train(self):
        super()._setup_train()  # resume_training() runs in here: a resumed run has its balance back already
        if self.distiller is not None:
            teacher_dtype = amp_teacher_dtype(self.args.amp if self.amp else False, self.device.type)
            if teacher_dtype is not None:
                self.distiller.use_half_teacher(teacher_dtype)  # bf16 runs store it in bf16, not rounded via fp16
            self._install_criterion(unwrap_model(self.model))
            if self.balance is None and self.experiment.balance.start_epoch == 0:
                self.balance = self.measure_balance()
            if self.balance is not None:
                self.distiller.scales = self.balance.scales
                self._show_balance()

    def measure_balance(self, detail: bool = True) -> BalanceReport:
        """The KD balance on the first ``balance.batches`` training batches (no step; nothing is left changed)."""
        model = unwrap_model(self.model)
        criterion = self._install_criterion(model)
        dataset = self.train_loader.dataset
        settings = self.experiment.balance
        with preserved_state([model, self.distiller.losses], dataset):
            self.distiller.scales = dict.fromkeys(self.distiller.scales, 1.0)
            factor, criterion.kd_factor = criterion.kd_factor, 1.0
            try:
                with torch.autocast(self.device.type, enabled=False), criterion.recording():  # fp32: no GradScaler
                    return measure_balance(
                        model,
                        criterion,
                        self._balance_batches(dataset, settings.batches),
                        self.distiller.grad_shares(),
                        settings.weight_mode,
                        detail,
                        reduce_grads=sum_gradients if distributed() else None,
                        reduce_sums=average_sums if distributed() else None,
                        layer_shares=self.distiller.layer_shares(),
                    )
            finally:
                criterion.kd_factor = factor

    def _balance_batches(self, dataset, count: int):
        """The first `count` batches of the training set in file order, augmented and preprocessed as in training
        (under DDP, this rank's share of each)."""
        for index in range(count):
            items = [dataset[i % len(dataset)] for i in balance_slice(index, self.batch_size)]
            yield self.preprocess_batch(dataset.collate_fn(items))

    def _refresh_balance(self) -> None:
        """balance.every_epoch: re-measure the GT and method gradients at an epoch's end, rescale for the next.

        Runs before ``save_model``, so ``kd_state.pt`` holds the scales the next epoch uses and a resumed run reuses
        them bit for bit. Skipped after the last epoch, when the next epoch has no KD (schedule), and after an
        epoch whose loss went NaN (Ultralytics rolls that epoch back and repeats it with the same scales).
        """
        settings = self.experiment.balance
        if self.distiller is None or self.balance is None or not settings.every_epoch or settings.weight_mode != "auto":
            return
        next_epoch = self.epoch + 1
        schedule = self.experiment.schedule
        if next_epoch >= self.epochs or schedule.factor(next_epoch, self.epochs, self.args.close_mosaic) == 0:
            return
        if self.loss is not None and not every_rank(bool(self.loss.isfinite())):  # Ultralytics' NaN-recovery test
            return
        self.balance = self.measure_balance(detail=False)
        self.distiller.scales = self.balance.scales
        shown = ", ".join(
            f"{name} share {m.measured_share:.3g} -> x{m.scale:.4g}" for name, m in self.balance.methods.items()
        )
        LOGGER.info(f"{colorstr('yolokd:')} KD balance re-measured after epoch {next_epoch}: {shown}")

    def save_metrics(self, metrics):
        """``results.csv`` as Ultralytics writes it, plus each method's KD scale in effect during the epoch."""
        if self.distiller is not None:
            metrics = {**metrics, **{f"kd/scale_{name}": scale for name, scale in self.epoch_scales.items()}}
        super().save_metrics(metrics)

    def _show_balance(self) -> None:
        if RANK not in {-1, 0}:  # DDP: every rank holds the same balance; rank 0 writes and shows it
            return
        self.balance.write(self.save_dir)
        LOGGER.info(f"{colorstr('yolokd:')} {self.balance.markdown()}(written to {self.save_dir / 'kd_balance.md'})")

    def _install_criterion(self, model: nn.Module) -> DistillationCriterion:
        """The model's DistillationCriterion, installed around its Ultralytics criterion on first use (idempotent).

        It stays installed: copies of the model (EMA, checkpoints, NaN recovery) carry the plain Ultralytics
        criterion, and hooks exist only inside ``criterion.recording()``.
        """
        base = getattr(model, "criterion", None) or model.init_criterion()
        if isinstance(base, DistillationCriterion):
            return base
        model.criterion = DistillationCriterion(
            base, model, self.distiller, follow_o2m_decay=self.experiment.schedule.follow_o2m_decay
        )
        return model.criterion

    # --- schedule and safety ----------------------------------------------------------------------------------
    def _start_epoch_schedule(self) -> None:
        self.batch_in_epoch = 0
        if self.distiller is not None:
            in_effect = self.balance is not None
            self.epoch_scales = {name: s if in_effect else math.nan for name, s in self.distiller.scales.items()}

    def _step_schedule(self) -> None:
        criterion = getattr(unwrap_model(self.model), "criterion", None)
        if isinstance(criterion, DistillationCriterion):
            progress = self.epoch + self.batch_in_epoch / max(len(self.train_loader), 1)
            if self.balance is None and progress >= self.experiment.balance.start_epoch:
                self.balance = self.measure_balance()  # balance.start_epoch > 0: measured now, on the warmed student
                self.distiller.scales = self.balance.scales
                self.epoch_scales = dict(self.balance.scales)
                self._show_balance()
            factor = self.experiment.schedule.factor(progress, self.epochs, self.args.close_mosaic)
            criterion.kd_factor = factor if self.balance is not None else 0.0  # GT only until the balance exists
            self.step_recording.enter_context(criterion.recording())  # the step's forward; closed by _end_step
        self.batch_in_epoch += 1

    def _end_step(self) -> None:
        """Close the step's recording (no hook stays on the student between steps)."""
        self.step_recording.close()

    def optimizer_step(self):
        """Refuse to step on a non-finite KD term, then step the KD optimiser beside the student's."""
        criterion = getattr(unwrap_model(self.model), "criterion", None)
        nonfinite = any_rank(criterion.nonfinite) if isinstance(criterion, DistillationCriterion) else None
        if nonfinite is not None and nonfinite.any():  # one sync per optimiser step; DDP: every rank stops together
            bad = [n for n, flag in zip(self.distiller.term_names, nonfinite.tolist(), strict=True) if flag]
            raise FloatingPointError(
                f"KD term(s) {bad} became NaN/Inf in epoch {self.epoch + 1}; the optimiser step was not taken, so "
                f"'{self.last}' still holds the last good epoch. Lower the term's weight or check the teacher, then "
                f"continue with: yolokd train resume={self.last}"
            )
        if self.kd_optimizer is not None:
            if distributed():  # DDP averaged the student's gradients in backward; the KD modules' are averaged here
                average_gradients([p for group in self.kd_optimizer.param_groups for p in group["params"]])
            student_group = next(g for g in self.optimizer.param_groups if g.get("param_group") in {"weight", "muon"})
            step_kd_optimizer(self.kd_optimizer, self.scaler, student_group["lr"])
        super().optimizer_step()

    # --- logging, validation, saving, resume ---------------------------------------------------------------
    def plot_metrics(self):
        """Ultralytics' results.png, plus kd_terms.png with every KD term per epoch."""
        super().plot_metrics()
        if self.distiller is not None:
            plot_kd_terms(self.csv, self.distiller.term_names)

    def label_loss_items(self, loss_items=None, prefix="train"):
        """Loss columns for ``results.csv``; unlike Ultralytics, no rounding to 5 decimals (KD terms can be small)."""
        if loss_items is None:
            return super().label_loss_items(None, prefix)
        return {f"{prefix}/{name}": float(value) for name, value in loss_items.items()}

    def validate(self):
        """Validate the EMA student; its KD terms (full weight, no schedule) go to the ``val/`` columns."""
        if self.distiller is None:
            return super().validate()
        with self._install_criterion(self.ema.ema).recording():
            metrics, fitness = super().validate()
        if metrics is not None:  # Ultralytics rounds val metrics to 5 decimals: keep the loss columns exact
            batches = max(len(self.validator.dataloader), 1)
            metrics.update({f"val/{name}": float(total) / batches for name, total in self.validator.loss.items()})
        return metrics, fitness

    def save_model(self):
        """Ultralytics' student checkpoints, then the KD state beside ``last.pt``."""
        saved = super().save_model()
        if saved and self.distiller is not None and RANK in {-1, 0}:  # Ultralytics saves on rank 0 only, as here
            save_kd_state(
                kd_state_path(self.last),
                epoch=self.epoch,
                experiment=self.experiment.to_dict(),
                losses=self.distiller.losses.state_dict(),
                optimizer=self.kd_optimizer.state_dict() if self.kd_optimizer is not None else None,
                balance=self.balance.to_dict() if self.balance is not None else None,
            )
        return saved

    def resume_training(self, ckpt):
        """Resume the student as Ultralytics does, then the KD modules and optimiser from the same epoch."""
        if ckpt is not None and self.resume and not 0 < ckpt.get("epoch", -1) + 1 < self.epochs:  # final: epoch -1
            raise finished_run_error(self.args.model, self.epochs)
        super().resume_training(ckpt)
        if ckpt is None or not self.resume or self.distiller is None:
            return
        state = self.resume_state
        if state["epoch"] != ckpt.get("epoch"):
            raise RuntimeError(
                f"KD state is from epoch {state['epoch'] + 1} but '{self.args.model}' is from epoch "
                f"{ckpt.get('epoch', -1) + 1}; the run folder was modified. Resume from a matching pair"
            )
        self.distiller.losses.load_state_dict(state["losses"])
        if state.get("balance") is None and self.experiment.balance.start_epoch == 0:
            raise RuntimeError(
                f"KD state of '{self.args.model}' has no KD balance (written by an older yolokd); its KD weights "
                "cannot be restored exactly. Start a new run, or finish this one with the yolokd that began it"
            )
        if state.get("balance") is not None:  # else: resumed before balance.start_epoch, measured when it comes
            self.balance = BalanceReport.from_dict(state["balance"])
        if self.kd_optimizer is not None and state["optimizer"] is not None:
            self.kd_optimizer.load_state_dict(state["optimizer"])
        LOGGER.info(
            f"{colorstr('yolokd:')} resumed KD modules {list(self.distiller.losses)} from epoch {state['epoch'] + 1}"
        )


class DistillationTrainer(DistillationMixin, DetectionTrainer):
    """Distil a detection student (Ultralytics' ``DetectionTrainer``): a YOLO, or a yolokd dense head (GFL)."""

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Ultralytics' ``DetectionModel``, or a ``DenseDetectionModel`` when the YAML's last row is a yolokd dense
        head (``GFLDetect``); a shipped model YAML is found by name (``gfl-yolov8n.yaml``)."""
        if dense_head_name(cfg) is None:
            return super().get_model(cfg, weights, verbose)
        model = self.set_model_names_for_load(
            DenseDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose)
        )
        if weights:
            model.load(weights)
        return model

    def get_validator(self) -> FullNMSValidator:
        """Ultralytics' detection validator with NMS run to the end for every image (``yolokd.evaluation.validate``:
        a RetinaNet head on a CPU crosses Ultralytics' time limit, which would leave images without detections)."""
        return FullNMSValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )


class SegmentationDistillationTrainer(DistillationMixin, SegmentationTrainer):
    """Distil a segmentation student (Ultralytics' ``SegmentationTrainer``)."""


class PoseDistillationTrainer(DistillationMixin, PoseTrainer):
    """Distil a pose student (Ultralytics' ``PoseTrainer``)."""


class OBBDistillationTrainer(DistillationMixin, OBBTrainer):
    """Distil an oriented-box student (Ultralytics' ``OBBTrainer``)."""


TRAINERS: dict[str, type[DistillationMixin]] = {
    "detect": DistillationTrainer,
    "segment": SegmentationDistillationTrainer,
    "pose": PoseDistillationTrainer,
    "obb": OBBDistillationTrainer,
}


def trainer_for(task: str) -> type[DistillationMixin]:
    """The distillation trainer of an Ultralytics task; a ValueError naming the supported tasks otherwise."""
    if task not in TRAINERS:
        raise ValueError(f"yolokd cannot distil {task} students (yet); supported tasks: {', '.join(TRAINERS)}")
    return TRAINERS[task]


def student_task(model: str | Path) -> str:
    """Ultralytics' task of a student ``model=``: a model YAML by its head, a checkpoint file by its model."""
    path = Path(str(model))
    if path.suffix == ".pt" and path.is_file():
        loaded, _ = load_checkpoint(path)
        return guess_model_task(loaded)
    if path.suffix in {".yaml", ".yml"}:
        return guess_model_task(yaml_model_load(resolve_model_yaml(path)))  # by the YAML's head (Segment -> segment)
    return guess_model_task(str(model))  # a release name such as yolov8n-seg.pt: by its name


def _trainer_class(experiment: Experiment | None, resume: str | bool | None) -> type[DistillationMixin]:
    """By the student's task: the experiment's ``model``, or on a resume the ``last.pt`` being resumed."""
    if isinstance(resume, str | Path) and str(resume):
        return trainer_for(student_task(resume))
    if experiment is None:  # resume=True without an experiment: Ultralytics finds the run; detect as before
        return DistillationTrainer
    return trainer_for(student_task(experiment.train_args.get("model", DEFAULT_CFG.model or "yolov8n.yaml")))


def train_experiment(experiment: Experiment | None, resume: str | bool | None = None) -> Path:
    """Train one experiment (or resume one from its ``last.pt``) with the trainer of its student's task; return the
    run directory."""
    overrides = dict(experiment.train_args) if experiment is not None else {}
    if resume:
        overrides["resume"] = str(resume) if not isinstance(resume, bool) else True
    trainer = _trainer_class(experiment, resume)(experiment, overrides=overrides)
    trainer.train()
    return trainer.save_dir


def measure_experiment_balance(experiment: Experiment) -> tuple[BalanceReport, Path]:
    """``yolokd balance``: build the experiment's run exactly as training would and measure its KD balance only.

    Returns the report and the run folder it was written to (``kd_balance.json`` / ``.md``); no step is taken.
    """
    if not experiment.distill:
        raise ValueError("balance: the experiment has no distill methods; add at least one under 'distill:'")
    trainer = _trainer_class(experiment, None)(experiment, overrides=dict(experiment.train_args))
    trainer._setup_train()  # builds data, student, teacher, losses; measures, prints and writes the balance
    if trainer.balance is None:  # balance.start_epoch > 0: training measures it later, on the warmed-up student
        LOGGER.warning(
            f"balance.start_epoch={experiment.balance.start_epoch}: training measures the balance after that many "
            "GT-only epochs; shown here is the balance at initialisation"
        )
        trainer.balance = trainer.measure_balance()
        trainer._show_balance()
    return trainer.balance, trainer.save_dir
