"""Training configuration: one frozen dataclass, saved as ``RUN_DIR/config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are the paper's settings.

    ``size`` is the input side in pixels; ``threshold`` turns sigmoid scores into
    masks; ``device`` is "auto", "cpu", "cuda" or "cuda:N"; ``fold`` selects a
    cross-validation fold (validation on its "val" list) instead of the test split.
    """

    dataset: str
    run_dir: str
    variant: str = "full"
    width: float = 1.0
    epochs: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    size: int = 128
    threshold: float = 0.5
    augment: bool = False
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    resume: bool = False
    fold: int | None = None

    def __post_init__(self) -> None:
        from ceuspipe import configs
        from ceuspipe.model.variants import VARIANTS

        for key in ("dataset", "run_dir"):
            configs.path_or_none(key, getattr(self, key))
        configs.choice("variant", self.variant, VARIANTS)
        configs.number("width", self.width, above=0)
        configs.number("epochs", self.epochs, minimum=1, integer=True)
        configs.number("batch_size", self.batch_size, minimum=1, integer=True)
        configs.number("lr", self.lr, above=0)
        configs.number("size", self.size, minimum=16, integer=True, unit="pixels")
        configs.number("threshold", self.threshold, above=0, maximum=1)
        configs.device("device", self.device)
        configs.number("seed", self.seed, minimum=0, integer=True)
        configs.number("workers", self.workers, minimum=0, integer=True)
        configs.number("fold", self.fold, minimum=0, integer=True, optional=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
