"""Ultralytics' DDP launcher on CPU processes (gloo), for the DDP tests; only the CUDA device selection is replaced.

``GlooDistillationTrainer`` is yolokd's ``DistillationTrainer`` with what Ultralytics reads from ``device=0,1`` set
by hand: the device count (2) in the launching process, and in each rank a CPU device, a gloo process group,
``DistributedDataParallel`` without ``device_ids`` (CPU modules take none) and the final validation's model on the CPU
(Ultralytics builds it on the rank's current GPU). Everything else is Ultralytics' launcher
(``generate_ddp_command``, ``torch.distributed.run``, the trainer rebuilt from its pickled class, args and callbacks)
and yolokd's DDP code. The class must be importable in the ranks: the launcher copies this process's ``sys.path``.

Every rank (and a 1-process run, RANK -1) writes ``rank<RANK>_start<E>.pt`` into the run folder when training starts at
epoch E and ``rank<RANK>_epoch<E>.pt`` at the end of epoch E: the student's and the KD modules' state, the KD scales
and the KD optimiser's state, for the tests to compare.
"""

from __future__ import annotations

from datetime import timedelta

import torch
from torch import distributed as dist
from torch import nn
from ultralytics.engine import validator as validator_module
from ultralytics.nn.autobackend import AutoBackend
from ultralytics.utils import LOCAL_RANK, RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolokd.engine.trainer import DistillationTrainer

WORLD = 2
KD_INIT_SEED = 1234


class _CPUDistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DDP as Ultralytics builds it, minus ``device_ids=[None]`` (the index of a CPU device), which DDP refuses."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module, device_ids=None if device_ids == [None] else device_ids, **kwargs)


def _rank_state(trainer) -> dict:
    """This process's student and KD state: parameters and buffers, KD scales, the KD optimiser's state."""
    return {
        "student": {k: v.detach().clone() for k, v in unwrap_model(trainer.model).state_dict().items()},
        "kd": {k: v.detach().clone() for k, v in trainer.distiller.losses.state_dict().items()},
        "scales": dict(trainer.distiller.scales),
        "kd_optimizer": trainer.kd_optimizer.state_dict(),
        "start_epoch": trainer.start_epoch,
    }


class _NoGPU:
    """Stands in for ``torch.cuda`` where Ultralytics' validator asks a DDP rank for its current GPU."""

    @staticmethod
    def current_device() -> int:
        return 0


def _cpu_autobackend(*args, device=None, **kwargs):
    """Ultralytics' AutoBackend on the CPU (a rank's final validation builds it on the rank's GPU)."""
    return AutoBackend(*args, device=torch.device("cpu"), **kwargs)


def dump_start_state(trainer) -> None:
    """on_train_start: the state this process begins training with (after a resume: what it restored)."""
    torch.save(_rank_state(trainer), trainer.save_dir / f"rank{RANK}_start{trainer.start_epoch + 1}.pt")


def dump_epoch_state(trainer) -> None:
    """on_train_epoch_end: the state after the epoch's optimiser steps."""
    torch.save(_rank_state(trainer), trainer.save_dir / f"rank{RANK}_epoch{trainer.epoch + 1}.pt")


def interrupt_after_save(trainer) -> None:
    """on_model_save: stop the run as a crash would, right after the checkpoint of epoch 1 is written."""
    if trainer.epoch == 0:
        raise KeyboardInterrupt("simulated interruption after the epoch-1 checkpoint")


class DumpingTrainer(DistillationTrainer):
    """DistillationTrainer that dumps its state each epoch; KD modules built from a seed that does not depend on the
    process count (rank 0 and a 1-process run: ``KD_INIT_SEED``; other ranks differ until rank 0's are broadcast)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for event, callback in (("on_train_start", dump_start_state), ("on_train_epoch_end", dump_epoch_state)):
            if callback not in self.callbacks[event]:  # a DDP rank gets the launcher's callbacks
                self.add_callback(event, callback)

    def setup_model(self):
        with torch.random.fork_rng():
            torch.manual_seed(KD_INIT_SEED + max(RANK, 0))
            return super().setup_model()


class GlooDistillationTrainer(DumpingTrainer):
    """DumpingTrainer on 2 CPU ranks through Ultralytics' DDP launcher (gloo instead of NCCL)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world_size = WORLD  # Ultralytics counts the GPUs in device=0,1; a CPU run counts none
        self.ddp = LOCAL_RANK == -1  # the launching process starts the ranks; a rank trains

    def _setup_ddp(self):
        """Ultralytics' ``_setup_ddp`` picks the rank's GPU and NCCL; here the CPU and gloo (this rank process only)."""
        nn.parallel.DistributedDataParallel = _CPUDistributedDataParallel
        validator_module.get_torch_device_backend = lambda device_type: _NoGPU  # final validation: the rank's GPU
        validator_module.AutoBackend = _cpu_autobackend
        self.device = torch.device("cpu")
        dist.init_process_group("gloo", rank=RANK, world_size=self.world_size, timeout=timedelta(minutes=5))


def gloo_available() -> str | None:
    """Why the gloo DDP tests cannot run here (None when they can)."""
    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    if not dist.is_gloo_available():
        return "torch.distributed has no gloo backend in this build"
    return None
