"""ElasticFace teacher-student training (MaskInv recipe): ``distill train``.

Two stages, each a plain supervised loop over the configured face source:

* **teacher**: backbone + ElasticFace head on *clean* faces (skipped when
  ``teacher.checkpoint`` is given).
* **student**: initialised from the teacher (backbone and head) or from scratch; every sample
  is masked with probability ``masking.p``; the loss is ::

      CE(head(student(masked)), label) + w · MSE(normalise(student(masked)),
                                                normalise(teacher(clean)))

  The teacher is frozen (no gradients), in eval mode (BatchNorm statistics fixed), and always
  sees the *clean* image of the same sample (never the masked one: the masked view is a new
  tensor, see :class:`maskgen.augment.MaskedPairs`).

Optimisation: SGD (momentum, weight decay), learning rate ``stage.lr · global_batch /
optim.base_batch_size`` with cosine or step decay and optional linear warm-up (per step),
gradient-norm clipping of the backbone, AMP on CUDA (bf16, or fp16 with a gradient scaler).

Distributed: under ``torchrun`` (or ``train.distributed=on``) the run uses DDP with NCCL on
CUDA and gloo on CPU. ``train.batch_size`` is the *global* batch, split over the processes,
so the step count, the learning rate and the sample order do not depend on the number of
processes, and a run can resume on another number of processes.

Checkpoints: ``<output>/<role>/last.pt`` is rewritten atomically after every epoch with the
model, head, optimizer, scheduler, scaler, RNG states, epoch and step
(:mod:`distill.checkpoint`). ``train.resume=true`` continues each stage from it, at the same
step and learning rate, with the config the run started with: a changed key is refused unless
``train.allow_changes`` (``--allow-changes``) is given (:mod:`~distill.training.resume`), and
the metrics rows after the resumed step are dropped. A NaN/inf loss (or gradient norm) stops
the run with :class:`TrainingDivergedError`; so does a model whose weights or eval-mode
embeddings are not finite when an epoch ends: a non-finite checkpoint is never written, the
last good one is left untouched.

Outputs: ``config.yaml`` (resolved), ``train.log``, ``<role>/metrics.csv``, TensorBoard
events under ``<role>/tb`` when ``torch.utils.tensorboard`` is importable (otherwise only the
CSV; the log says so).

Modules: :mod:`~distill.training.run` (:func:`prepare`, :func:`train`),
:mod:`~distill.training.stage` (one stage: build, restore, epochs, steps, checkpoints),
:mod:`~distill.training.resume` (what a resume checks: the config, each stage's ``last.pt``),
:mod:`~distill.training.step` (AMP, backward, clipping, optimizer step, NaN guard),
:mod:`~distill.training.loss`, :mod:`~distill.training.schedule`,
:mod:`~distill.training.masking` (device masking), :mod:`~distill.training.distributed`,
:mod:`~distill.training.state` (RNG), :mod:`~distill.training.logs` (log, CSV, TensorBoard),
:mod:`~distill.training.results` and :mod:`~distill.training.errors`.

Example:
    >>> from distill.training import prepare, train  # the entry points
    >>> lr_factor(0, total=10, warmup=2, schedule="cosine")  # first warm-up step
    0.5
"""

from __future__ import annotations

from distill.training.distributed import DistContext, setup_distributed
from distill.training.errors import OutputExistsError, TrainingDivergedError
from distill.training.loss import compute_loss
from distill.training.results import StageResult, TrainResult
from distill.training.run import prepare, train
from distill.training.schedule import lr_factor
from distill.training.step import apply_step, backward

__all__ = [
    "DistContext",
    "OutputExistsError",
    "StageResult",
    "TrainResult",
    "TrainingDivergedError",
    "apply_step",
    "backward",
    "compute_loss",
    "lr_factor",
    "prepare",
    "setup_distributed",
    "train",
]
