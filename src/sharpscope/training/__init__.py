"""Training: configuration, tasks, losses, checkpoints and the one training loop.

The entry point is :func:`train`, driven by a validated :class:`TrainConfig`
(loaded from YAML with :func:`load_config`; command-line flags override it).
``config.task`` says what is trained: ``'restoration'`` (the restoration networks,
on simulated or real pairs) or ``'psf-identification'`` (the PSF identifier of
:mod:`sharpscope.models.psfnet`).

=============================================  ==========================================
module                                         owns
=============================================  ==========================================
:mod:`sharpscope.training.config`              :class:`TrainConfig`, :func:`load_config`,
                                               device defaults, the learning-rate schedule
:mod:`sharpscope.training.losses`              :func:`restoration_loss`, :func:`fft_loss`,
                                               :func:`psf_identification_loss`
:mod:`sharpscope.training.checkpoint`          resumable checkpoints, log, plot, run lock
:mod:`sharpscope.training.tasks`               the task interface and restoration
:mod:`sharpscope.training.psfid`               the PSF-identification task
:mod:`sharpscope.training.loop`                :func:`train`, the loop every task shares
=============================================  ==========================================

Examples
--------
>>> from sharpscope.training import TrainConfig
>>> TrainConfig(task="psf-identification", model={"arch": "psfnet"}).psfid.fc
(0.1, 0.25)
"""

from sharpscope.training.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_COLUMNS,
    LOG_NAME,
    MODEL_NAME,
    PLOT_NAME,
    load_checkpoint,
    run_lock,
)
from sharpscope.training.config import (
    CONFIG_VERSION,
    DEFAULT_PRESET,
    DEVICE_DEFAULTS,
    RESUMABLE_CHANGES,
    AugmentConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    PSFIdConfig,
    TrainConfig,
    config_diff,
    load_config,
    lr_at,
    with_device_defaults,
)
from sharpscope.training.loop import STATUS_SECONDS, TrainResult, format_duration, train
from sharpscope.training.losses import fft_loss, psf_identification_loss, psf_snr, restoration_loss
from sharpscope.training.tasks import RestorationTask, Task, make_task

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "CONFIG_VERSION",
    "DEFAULT_PRESET",
    "DEVICE_DEFAULTS",
    "LOG_COLUMNS",
    "LOG_NAME",
    "MODEL_NAME",
    "PLOT_NAME",
    "RESUMABLE_CHANGES",
    "STATUS_SECONDS",
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "PSFIdConfig",
    "RestorationTask",
    "Task",
    "TrainConfig",
    "TrainResult",
    "config_diff",
    "fft_loss",
    "format_duration",
    "load_checkpoint",
    "load_config",
    "lr_at",
    "make_task",
    "psf_identification_loss",
    "psf_snr",
    "restoration_loss",
    "run_lock",
    "train",
    "with_device_defaults",
]
