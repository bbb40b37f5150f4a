"""Supervised dense multi-task learning on mtrl's balancers: data sets, losses, metrics, Δm (and models, trainer)."""

from mtrl.vision.data import DATASETS, Cityscapes, DenseDigits, NYUv2, SyntheticScenes, make_dataset
from mtrl.vision.delta import REFERENCE_BASELINES, Baseline, DeltaResult, delta_m
from mtrl.vision.losses import multi_task_losses, task_loss
from mtrl.vision.metrics import HIGHER_IS_BETTER, MultiTaskMetrics
from mtrl.vision.tasks import TaskSpec

__all__ = [
    "DATASETS",
    "HIGHER_IS_BETTER",
    "REFERENCE_BASELINES",
    "Baseline",
    "Cityscapes",
    "DeltaResult",
    "DenseDigits",
    "MultiTaskMetrics",
    "NYUv2",
    "SyntheticScenes",
    "TaskSpec",
    "delta_m",
    "make_dataset",
    "multi_task_losses",
    "task_loss",
]

# Models, configuration and trainer (appended by the models/trainer owner).
from mtrl.vision.config import VisionConfig
from mtrl.vision.models import MODELS, MultiTaskDenseModel, make_model
from mtrl.vision.step import BalancedStep
from mtrl.vision.trainer import VisionTrainer, train

__all__ += ["MODELS", "BalancedStep", "MultiTaskDenseModel", "VisionConfig", "VisionTrainer", "make_model", "train"]
