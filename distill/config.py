"""Training configuration: nested dataclasses, YAML/TOML files and ``--set a.b=c`` overrides.

The defaults of :class:`Config` *are* the built-in demo (``distill train`` with no
arguments); ``distill/configs/demo.yaml`` (``distill train demo``) spells them out. A file
only needs the keys it changes. Unknown keys are an error that lists the valid ones, and
values are coerced to the type of the field they set (``"3"`` → ``3`` for an ``int`` field,
``"yes"``/``"true"``/``"1"`` → ``True`` for a ``bool``; lists and dicts are parsed as YAML
flow syntax).

Example:
    >>> cfg = apply_overrides(Config(), ["student.epochs=7", "model.backbone=iresnet50"])
    >>> cfg.student.epochs, cfg.model.backbone
    (7, 'iresnet50')
    >>> apply_overrides(Config(), ["optim.momentum=0.8"]).optim.momentum
    0.8
    >>> try:
    ...     apply_overrides(Config(), ["student.epoch=7"])
    ... except ConfigError as e:
    ...     print(str(e).splitlines()[0])
    unknown key 'student.epoch'; valid keys in 'student': distill_weight, epochs, init, lr
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maskgen.io import atomic_write_text

__all__ = [
    "DEMO_MASK_SPEC",
    "DEMO_UNSEEN_SPEC",
    "DEMO_VARIATION",
    "RESUME_SAFE_KEYS",
    "RUN_CONTROL_KEYS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MaskingConfig",
    "ModelConfig",
    "OptimConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_overrides",
    "config_changes",
    "config_from_dict",
    "config_to_dict",
    "describe_change",
    "dump_config",
    "load_config",
    "read_config",
    "save_config",
    "valid_keys",
    "validate_config",
]


#: file suffixes ``student.init`` takes as a path of weights.
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


class ConfigError(ValueError):
    """An invalid configuration file, key or value (the message says which and why)."""


#: The demo's benchmark spread of the synthetic faces (``data.variation``): wider pose,
#: expression and lighting than the generator's built-in spread, and random occluders, so
#: that the clean teacher is off the ceiling on the held-out pack (docs/evaluation.md).
DEMO_VARIATION: dict[str, float] = {
    "yaw": 40.0,
    "pitch": 18.0,
    "roll": 15.0,
    "expression": 1.5,
    "lighting": 3.0,
    "occlusion": 0.4,
}
#: The masks the demo trains on (``masking.spec``): surgical and KN95 at high and medium
#: coverage (the built-in palettes and textures).
DEMO_MASK_SPEC: dict[str, Any] = {
    "families": {"surgical": 3.0, "kn95": 1.5},
    "coverages": {"high": 6.0, "medium": 3.0},
}
#: Masks the demo never trains on (``eval.unseen_spec``): NIST-style wide and round masks and
#: gaiters, worn low (under the nose) or on the chin.
DEMO_UNSEEN_SPEC: dict[str, Any] = {
    "families": {"wide": 1.0, "round": 1.0, "gaiter": 1.0},
    "coverages": {"low": 1.0, "chin": 1.0},
}


@dataclass
class DataConfig:
    """Training data.

    Attributes:
        source: ``synthetic`` (built-in identities from :mod:`maskgen.synthetic`),
            ``folder`` (``path/<identity>/<image>``, aligned 112×112 crops) or ``recordio``
            (insightface ``train.rec`` + ``train.idx``; ``path`` is the ``.rec`` file or its
            directory).
        path: dataset location for ``folder`` / ``recordio``.
        num_identities: synthetic identities.
        images_per_identity: synthetic images per identity.
        seed: synthetic identity seed.
        cache: synthetic images: ``none`` (render on the fly), ``memory`` or ``disk`` (an
            ``.npz`` under ``<output>/cache`` reused by later runs with the same settings).
        flip: random horizontal flip (p = 0.5, the same for the masked and the clean view).
        num_workers: ``DataLoader`` worker processes per training process.
        landmarks: where the landmarks of ``folder``/``recordio`` crops come from: empty for
            the canonical ArcFace layout, or a landmark cache made by ``maskgen landmarks``
            on ``path`` (``cache:PATH`` or just the folder), so that every face is masked on
            its own 68 points. Items the cache holds no landmarks for are refused up front.
        variation: synthetic data only: the within-identity spread of the faces, overrides
            of :class:`maskgen.synthetic.Variation` (pose ranges ``yaw``/``pitch``/``roll``
            in degrees, ``expression``, ``lighting``, ``occlusion``); empty is the
            generator's built-in spread. Used for the training identities and the held-out
            pack alike. The default is the demo's benchmark spread (:data:`DEMO_VARIATION`).
    """

    source: str = "synthetic"
    path: str = ""
    landmarks: str = ""
    num_identities: int = 200
    images_per_identity: int = 24
    seed: int = 0
    cache: str = "memory"
    flip: bool = True
    num_workers: int = 1
    variation: dict[str, Any] = field(default_factory=lambda: dict(DEMO_VARIATION))


@dataclass
class MaskingConfig:
    """Online masking of the student's input.

    Attributes:
        mode: ``workers`` (rendered per sample in the ``DataLoader`` workers) or ``device``
            (``maskgen.augment.RandomFaceMask`` on the batch, on the training device).
        p: probability that a sample is masked.
        seed: seed of the per-sample mask draws: item ``i`` of epoch ``e`` gets the draw of
            (seed, key ``str(i)``, variant ``e``) of :mod:`maskgen.seeding` in both modes.
        spec: overrides of :class:`maskgen.render.MaskSpec` fields (e.g. ``{families:
            {surgical: 1}}``); empty is the default ``MaskSpec`` (every family). The default
            is the demo's training masks (:data:`DEMO_MASK_SPEC`).
    """

    mode: str = "workers"
    p: float = 0.5
    seed: int = 1234
    spec: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEMO_MASK_SPEC))


@dataclass
class ModelConfig:
    """Backbone and margin head (the same architecture for teacher and student).

    Attributes:
        backbone: a name from :func:`distill.backbones.list_backbones`.
        embedding_size: embedding dimension.
        kwargs: extra backbone arguments.
        head: a name from :func:`distill.heads.list_heads`.
        head_kwargs: head arguments (``s``, ``m``, ``std``).
    """

    backbone: str = "tiny"
    embedding_size: int = 128
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = "elasticcosface+"
    head_kwargs: dict[str, Any] = field(default_factory=lambda: {"s": 32.0})


@dataclass
class OptimConfig:
    """SGD and learning-rate schedule (shared by both stages).

    The learning rate of a stage is ``stage.lr * train.batch_size / base_batch_size`` (linear
    scaling by the global batch size).

    Attributes:
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        base_batch_size: batch size at which ``stage.lr`` applies unscaled.
        schedule: ``cosine`` (to ``min_lr_ratio · lr``) or ``step`` (× ``gamma`` at each
            epoch in ``milestones``).
        milestones: epochs at which the step schedule decays.
        gamma: step decay factor.
        min_lr_ratio: final learning rate of the cosine schedule, relative.
        warmup_epochs: linear warm-up from 0, in epochs (fractions allowed).
        clip_grad_norm: gradient-norm clipping of the backbone (0 disables).
    """

    momentum: float = 0.9
    weight_decay: float = 5e-4
    base_batch_size: int = 64
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    warmup_epochs: float = 0.0
    clip_grad_norm: float = 5.0


@dataclass
class TeacherConfig:
    """Stage ``teacher``: ElasticFace on clean faces.

    Attributes:
        checkpoint: an existing teacher checkpoint; when set, the stage is skipped.
        epochs: training epochs.
        lr: learning rate at ``optim.base_batch_size``.
    """

    checkpoint: str = ""
    epochs: int = 4
    lr: float = 0.1


@dataclass
class StudentConfig:
    """Stage ``student``: ElasticFace on possibly-masked faces + template distillation.

    Attributes:
        init: ``teacher`` (backbone and head start from the teacher), ``scratch``, or the
            path of weights that fit ``model`` (a distill checkpoint or a plain backbone
            state dict such as insightface's ``backbone.pth``).
        epochs: training epochs (0 skips the stage).
        lr: learning rate at ``optim.base_batch_size``.
        distill_weight: ``w`` in ``CE + w · MSE(normalise(student(masked)),
            normalise(teacher(clean)))``.
    """

    init: str = "teacher"
    epochs: int = 3
    lr: float = 0.05
    distill_weight: float = 100.0


@dataclass
class TrainConfig:
    """Run-level settings.

    Attributes:
        output: output directory.
        batch_size: *global* batch size (split evenly over the processes, so a run resumed
            on another number of processes takes the same steps).
        seed: seed of shuffling, initialisation and margin draws.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: ``auto`` (bf16 on CUDA when supported, else fp16 with a scaler; off on CPU),
            ``off``, ``bf16`` or ``fp16``.
        distributed: ``auto`` (when launched by ``torchrun``), ``on`` or ``off``.
        threads: CPU threads for torch (0 keeps torch's default).
        log_every: steps between log lines / CSV rows.
        max_steps_per_epoch: cap on steps per epoch (0 = full epochs; for smoke tests).
        resume: continue from the latest checkpoint in ``output``; the config must be the
            one the run was started with (``output/config.yaml``), except for the keys that
            cannot change what is trained (:data:`RESUME_SAFE_KEYS`).
        allow_changes: with ``resume``, accept a changed config: every change is logged
            (``key: old → new``) and the previous ``config.yaml`` is kept as
            ``config.yaml.<n>.bak``.
        ablation: also train the augmentation-only student (``student.distill_weight = 0``,
            same data, masking, initialisation and schedule, the same teacher) into
            ``<output>/augment`` and report it beside the distilled one.
    """

    output: str = "runs/distill-demo"
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    distributed: str = "auto"
    threads: int = 0
    log_every: int = 10
    max_steps_per_epoch: int = 0
    resume: bool = False
    allow_changes: bool = False
    ablation: bool = True


@dataclass
class EvalConfig:
    """Evaluation after training (protocols NM-NM, M-NM, M-M).

    Attributes:
        enabled: evaluate the teacher and the student at the end of the run.
        pack: an insightface ``.bin`` verification pack of aligned crops; when empty and
            ``data.source`` is ``synthetic`` a pack of held-out identities is built.
        num_identities: held-out synthetic identities for the built pack.
        images_per_identity: images per held-out identity.
        num_pairs: pairs in the built pack (half genuine, half impostor).
        seed: seed of the held-out identities (must differ from ``data.seed``).
        mask_seed: seed of the fixed evaluation mask draws.
        batch_size: evaluation batch size.
        unseen_spec: a second :class:`maskgen.render.MaskSpec` (overrides, like
            ``masking.spec``) of masks the student did not see in training; when not empty,
            M-NM and M-M are also scored on its draws and reported as "unseen" columns.
            The default (:data:`DEMO_UNSEEN_SPEC`) goes with the demo's ``masking.spec``.
    """

    enabled: bool = True
    pack: str = ""
    num_identities: int = 300
    images_per_identity: int = 8
    num_pairs: int = 3000
    seed: int = 9001
    mask_seed: int = 2024
    batch_size: int = 128
    unseen_spec: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEMO_UNSEEN_SPEC))


@dataclass
class Config:
    """The whole configuration (see the module docstring)."""

    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> Config:
        """Check every value (see :func:`validate_config`); raise :class:`ConfigError` naming
        the key."""
        validate_config(self)
        return self


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

#: seeds are 32-bit: NumPy's seeding range, and ``train.seed`` also seeds torch generators.
SEED_MAX = 2**32 - 1


def validate_config(cfg: Config) -> None:
    """Check every value of ``cfg`` before anything runs.

    Every number anywhere (also inside ``model.kwargs``, ``model.head_kwargs``,
    ``masking.spec`` and lists) must be finite; enumerations must hold one of their values;
    counts, sizes and rates must lie in their ranges; seeds in ``[0, 2**32 - 1]``;
    ``masking.spec`` must build a :class:`maskgen.render.MaskSpec`; and the keys that depend
    on each other must agree. The message of the :class:`ConfigError` starts with the key.

    >>> try:
    ...     Config(optim=OptimConfig(momentum=float("nan"))).validate()
    ... except ConfigError as e:
    ...     print(e)
    optim.momentum must be a finite number, got nan
    """
    _check_finite(cfg)
    _check_choices(cfg)
    _check_counts(cfg)
    _check_rates(cfg)
    _check_seeds(cfg)
    _check_relations(cfg)


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first (key, value) in ``value`` that is a NaN or infinite number, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    if isinstance(value, dict):
        items: Any = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_key, sub in items:
        found = _non_finite(sub, sub_key)
        if found is not None:
            return found
    return None


def _check_finite(cfg: Config) -> None:
    for section, values in config_to_dict(cfg).items():
        for name, value in values.items():
            found = _non_finite(value, f"{section}.{name}")
            if found is not None:
                raise ConfigError(f"{found[0]} must be a finite number, got {found[1]}")


def _check_choices(cfg: Config) -> None:
    choices = {
        "data.source": (cfg.data.source, ("synthetic", "folder", "recordio")),
        "data.cache": (cfg.data.cache, ("none", "memory", "disk")),
        "masking.mode": (cfg.masking.mode, ("workers", "device")),
        "optim.schedule": (cfg.optim.schedule, ("cosine", "step")),
        "train.device": (cfg.train.device, ("auto", "cpu", "cuda")),
        "train.amp": (cfg.train.amp, ("auto", "off", "bf16", "fp16")),
        "train.distributed": (cfg.train.distributed, ("auto", "on", "off")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(allowed)}")
    if cfg.student.init not in ("teacher", "scratch") and not cfg.student.init.endswith(
        _WEIGHT_SUFFIXES
    ):
        raise ConfigError(
            f"student.init = {cfg.student.init!r} is not one of teacher, scratch or a "
            f"weights file ({', '.join(_WEIGHT_SUFFIXES)})"
        )


def _check_counts(cfg: Config) -> None:
    """Sizes and counts: at least 1 (or 2 for the held-out pack), or at least 0."""
    at_least = {
        "train.batch_size": (cfg.train.batch_size, 1),
        "optim.base_batch_size": (cfg.optim.base_batch_size, 1),
        "model.embedding_size": (cfg.model.embedding_size, 1),
        "data.num_identities": (cfg.data.num_identities, 1),
        "data.images_per_identity": (cfg.data.images_per_identity, 1),
        "train.log_every": (cfg.train.log_every, 1),
        "eval.batch_size": (cfg.eval.batch_size, 1),
        # the built pack needs genuine pairs (2 images of one identity), impostor pairs
        # (2 identities) and both kinds
        "eval.num_identities": (cfg.eval.num_identities, 2),
        "eval.images_per_identity": (cfg.eval.images_per_identity, 2),
        "eval.num_pairs": (cfg.eval.num_pairs, 2),
        "teacher.epochs": (cfg.teacher.epochs, 0),
        "student.epochs": (cfg.student.epochs, 0),
        "data.num_workers": (cfg.data.num_workers, 0),
        "train.max_steps_per_epoch": (cfg.train.max_steps_per_epoch, 0),
        "train.threads": (cfg.train.threads, 0),
    }
    for key, (value, low) in at_least.items():
        if value < low:
            what = "positive" if low == 1 else f">= {low}"
            raise ConfigError(f"{key} must be {what}, got {value}")


def _check_rates(cfg: Config) -> None:
    """Learning rates, weights and factors: their ranges (all finite already)."""
    o = cfg.optim
    non_negative = {
        "teacher.lr": cfg.teacher.lr,
        "student.lr": cfg.student.lr,
        "student.distill_weight": cfg.student.distill_weight,
        "optim.weight_decay": o.weight_decay,
        "optim.warmup_epochs": o.warmup_epochs,
        "optim.clip_grad_norm": o.clip_grad_norm,
        **{f"optim.milestones[{i}]": m for i, m in enumerate(o.milestones)},
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if not 0.0 <= cfg.masking.p <= 1.0:
        raise ConfigError(f"masking.p must lie in [0, 1], got {cfg.masking.p}")
    if not 0.0 <= o.momentum < 1.0:
        raise ConfigError(f"optim.momentum must lie in [0, 1), got {o.momentum}")
    if not 0.0 < o.gamma <= 1.0:
        raise ConfigError(
            f"optim.gamma must lie in (0, 1] (the step schedule multiplies the learning rate "
            f"by it at each milestone), got {o.gamma}"
        )
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ConfigError(f"optim.min_lr_ratio must lie in [0, 1], got {o.min_lr_ratio}")
    head = cfg.model.head_kwargs
    scale, margin = head.get("s"), head.get("m")
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ConfigError(f"model.head_kwargs.s must be positive (the logit scale), got {scale}")
    if isinstance(margin, (int, float)) and margin < 0:
        raise ConfigError(f"model.head_kwargs.m must be >= 0 (the margin), got {margin}")


def _check_seeds(cfg: Config) -> None:
    seeds = {
        "data.seed": cfg.data.seed,
        "masking.seed": cfg.masking.seed,
        "train.seed": cfg.train.seed,
        "eval.seed": cfg.eval.seed,
        "eval.mask_seed": cfg.eval.mask_seed,
    }
    for key, value in seeds.items():
        if not 0 <= value <= SEED_MAX:
            raise ConfigError(f"{key} must lie in [0, {SEED_MAX}], got {value}")


def _check_relations(cfg: Config) -> None:
    """Keys that must agree with each other, and values that must build."""
    if not cfg.train.output.strip():
        raise ConfigError("train.output must not be empty")
    if cfg.train.allow_changes and not cfg.train.resume:
        raise ConfigError(
            "train.allow_changes (--allow-changes) only applies with train.resume (--resume)"
        )
    if cfg.data.source in ("folder", "recordio") and not cfg.data.path:
        raise ConfigError(f"data.path is required for data.source = {cfg.data.source!r}")
    if cfg.data.landmarks and cfg.data.source == "synthetic":
        raise ConfigError(
            "data.landmarks is for folder and recordio data (synthetic faces carry their "
            "exact landmarks)"
        )
    if cfg.teacher.epochs == 0 and not cfg.teacher.checkpoint:
        raise ConfigError("teacher.epochs is 0 but no teacher.checkpoint is given")
    held_out = cfg.eval.enabled and not cfg.eval.pack and cfg.data.source == "synthetic"
    if held_out and cfg.eval.seed == cfg.data.seed:
        raise ConfigError(
            f"eval.seed must differ from data.seed ({cfg.data.seed}): the evaluation pack is "
            "made of held-out identities"
        )
    if cfg.masking.spec:
        from maskgen.render import MaskSpec

        try:
            MaskSpec.from_dict(dict(cfg.masking.spec))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"masking.spec: {exc}") from exc
    if cfg.eval.unseen_spec:
        from maskgen.render import MaskSpec

        try:
            MaskSpec.from_dict(dict(cfg.eval.unseen_spec))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"eval.unseen_spec: {exc}") from exc
    from maskgen.synthetic import Variation

    try:
        Variation.from_dict(dict(cfg.data.variation))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.variation: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass
# ----------------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config dataclass.

    >>> [k for k in valid_keys() if k.startswith("masking.")]
    ['masking.mode', 'masking.p', 'masking.seed', 'masking.spec']
    """
    keys: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _origin(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    return origin if origin is not None else tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from a file or a ``--set`` string) to the field type ``tp``."""
    origin = _origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = _parse_flow(value, key)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = _parse_flow(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover


def _parse_flow(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(io.StringIO(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse {text!r}: {exc}") from exc


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown key {key!r}; valid keys in {where!r}: {', '.join(sorted(names))}\n"
            f"(all valid keys: {', '.join(valid_keys())})"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(data[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from nested dicts (missing keys take defaults)."""
    return _build(Config, data or {}, "").validate()


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested plain dicts (JSON/YAML serialisable)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply ``key=value`` overrides (dotted keys) and return a new, validated config.

    Values are coerced to the field's type; ``masking.spec`` and other mappings take YAML
    flow syntax (``masking.spec={families: {surgical: 1}}``).
    """
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node: Any = data
        cls: Any = Config
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                where = ".".join(parts[:depth]) or "the top level"
                raise ConfigError(
                    f"unknown key {key!r}; valid keys in {where!r}: {', '.join(sorted(names))}"
                    f"\n(all valid keys: {', '.join(valid_keys())})"
                )
            tp = _hints(cls)[part]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(
                        f"{key!r} is a section; set one of its keys: "
                        f"{', '.join(valid_keys(tp, key + '.'))}"  # type: ignore[arg-type]
                    )
                node[part] = _coerce(value, tp, key)
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"{'.'.join(parts[: depth + 1])!r} is not a section")
                node, cls = node[part], tp
    return config_from_dict(data)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | tuple = ()) -> Config:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file, then apply ``overrides``.

    ``path=None`` starts from the defaults (the built-in demo).
    """
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        text = p.read_text(encoding="utf-8")
        data = _parse_file(p, text)
        try:
            cfg = config_from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from exc
    else:
        cfg = Config().validate()
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def _parse_file(p: Path, text: str) -> Any:
    if p.suffix.lower() == ".toml":
        try:
            import tomllib  # Python >= 3.11
        except ImportError as exc:  # pragma: no cover - Python 3.10
            raise ConfigError(f"{p}: TOML configs need Python >= 3.11; use YAML") from exc
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: cannot parse the TOML config: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: cannot parse the YAML config: {exc}") from exc


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (readable back by :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, dump_config(cfg))


# ----------------------------------------------------------------------------------------------
# resume: what changed since the run started
# ----------------------------------------------------------------------------------------------

#: keys a resumed run may change without ``train.allow_changes``: how many loader processes
#: and threads it uses, whether images are cached, how often it logs, on how many processes
#: it runs (the global batch, hence every step, does not depend on it), and the evaluation
#: after training (on or off, its batch size). None of them changes what is trained.
RESUME_SAFE_KEYS = (
    "data.num_workers",
    "data.cache",
    "train.threads",
    "train.log_every",
    "train.distributed",
    "eval.enabled",
    "eval.batch_size",
)
#: keys that say how this invocation runs, never compared on resume.
RUN_CONTROL_KEYS = ("train.output", "train.resume", "train.allow_changes")


def read_config(path: str | os.PathLike[str]) -> Config:
    """The config a file holds, as it is: unknown keys and bad types are errors, values are
    not validated (a run's ``config.yaml`` is read back to be compared, not to be run)."""
    p = Path(path)
    try:
        return _build(Config, _parse_file(p, p.read_text(encoding="utf-8")), "")
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config: {exc}") from exc


def _leaves(cfg: Config) -> dict[str, Any]:
    return {
        f"{section}.{name}": value
        for section, values in config_to_dict(cfg).items()
        for name, value in values.items()
    }


def config_changes(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every key that differs, in :func:`valid_keys`
    order; :data:`RUN_CONTROL_KEYS` are left out.

    >>> config_changes(Config(), apply_overrides(Config(), ["teacher.lr=0.5", "train.resume=1"]))
    [('teacher.lr', 0.1, 0.5)]
    """
    a, b = _leaves(old), _leaves(new)
    return [(k, a[k], b[k]) for k in valid_keys() if k not in RUN_CONTROL_KEYS and a[k] != b[k]]


def describe_change(change: tuple[str, Any, Any]) -> str:
    """``key: old → new``.

    >>> describe_change(("data.cache", "memory", "none"))
    "data.cache: 'memory' → 'none'"
    """
    key, old, new = change
    return f"{key}: {old!r} → {new!r}"
