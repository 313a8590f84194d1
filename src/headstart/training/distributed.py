"""Several processes, GPUs and machines, all through Lightning.

``--devices N`` starts N processes per machine (Lightning's own launcher re-runs the command
per rank), ``--num-nodes M`` spreads them over M machines (each started by ``torchrun``, by
SLURM's ``srun``, or by hand with ``NODE_RANK``/``MASTER_ADDR``), and ``--strategy-dist``
picks how the processes share the work: ``ddp`` (a full replica per process, gradients
all-reduced; CPU via gloo or CUDA via NCCL) or ``fsdp`` (parameters sharded; Lightning runs it on
CUDA only, so headstart refuses it elsewhere rather than silently falling back).

Only global rank 0 creates the run folder and writes the evaluation; the other ranks write into
the folder rank 0 announces (Lightning's launcher) or into ``--out`` (external launchers, which
start every rank at once: there ``--out`` is required so that all ranks agree on the folder).
See docs/scale-out.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.errors import HeadstartError

RUN_DIR_ENV = "HEADSTART_DDP_RUN_DIR"
"""Set by rank 0 after creating the run folder; Lightning's launcher passes it to the ranks."""


def world_size(config: TrainConfig) -> int:
    """Processes taking part in training: ``devices x num_nodes``."""
    return config.devices * config.num_nodes


def external_launcher() -> str | None:
    """``"torchrun"`` or ``"slurm"`` when such a launcher started this process (it starts every
    rank itself), else ``None``."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchrun"
    if SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    return None


def global_rank(config: TrainConfig) -> int:
    """This process's rank among all training processes, known before the Trainer exists."""
    launcher = external_launcher()
    if launcher == "torchrun":
        return int(os.environ.get("RANK", "0") or 0)
    if launcher == "slurm":
        return int(os.environ.get("SLURM_PROCID", "0") or 0)
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return node * config.devices + local


def check_distributed(config: TrainConfig) -> None:
    """Refuse settings that cannot run here, with what to do instead.

    Raises :class:`HeadstartError` for FSDP without CUDA, and for multi-node or externally
    launched runs without ``--out`` (every rank must write to the same folder).
    """
    if config.strategy_dist == "fsdp":
        cuda = torch.cuda.is_available() and config.accelerator in ("auto", "cuda", "gpu")
        if not cuda:
            raise HeadstartError(
                "--strategy-dist fsdp needs CUDA GPUs: Lightning's FSDP does not run on "
                f"accelerator={config.accelerator!r}"
                f"{'' if torch.cuda.is_available() else ' (no CUDA GPU visible)'}. "
                "Use --strategy-dist ddp (works on CPU and GPU)."
            )
    launcher = external_launcher()
    if (config.num_nodes > 1 or launcher) and world_size(config) > 1 and not config.out:
        how = (
            f"{launcher} starts every rank"
            if launcher
            else "--num-nodes > 1 runs on several machines"
        )
        raise HeadstartError(
            f"{how}, so the run folder must be named: pass --out <folder> on a disk every "
            "process can write (a shared filesystem for several machines)."
        )


def trainer_strategy(config: TrainConfig) -> Any:
    """The Lightning ``strategy=`` argument for ``config``: ``"auto"`` for one process, else a
    DDP strategy (gloo without CUDA) or FSDP (CUDA only; see :func:`check_distributed`)."""
    if config.strategy_dist == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        # use_orig_params: frozen and trainable parameters may share an FSDP unit, and stages
        # unfrozen later join the optimizer as their own parameter groups.
        # state_dict_type="full": rank 0 writes one ordinary checkpoint that evaluate/predict/
        # export and --resume read like any other.
        return FSDPStrategy(use_orig_params=True, state_dict_type="full")
    if world_size(config) == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(
        find_unused_parameters=True,
        process_group_backend=None if torch.cuda.is_available() else "gloo",
    )


def rank_run_dir(config: TrainConfig) -> Path | None:
    """For a process other than global rank 0: the run folder rank 0 creates. ``None`` for
    rank 0 (and single-process runs), which create the folder themselves."""
    if global_rank(config) == 0:
        return None
    if RUN_DIR_ENV in os.environ and not external_launcher():
        return Path(os.environ[RUN_DIR_ENV])
    if config.out:
        return Path(config.out)
    raise HeadstartError(  # check_distributed normally catches this first
        "a non-zero rank does not know the run folder: pass --out <shared folder>"
    )


def unsharded_copy(run_dir: Path) -> Any:
    """The run's best checkpoint in a freshly built, unsharded model (as ``headstart evaluate``
    loads it), in eval mode: after FSDP training the trained module holds only its shard."""
    from headstart.evaluation.loading import load_run

    return load_run(run_dir).model.eval()


def announce_run_dir(path: Path) -> None:
    """Rank 0: tell ranks started later by Lightning's launcher where the run folder is."""
    os.environ[RUN_DIR_ENV] = str(path)
