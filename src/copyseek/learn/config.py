"""Training configuration: defaults, overridden by a TOML file, overridden by the command line."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from copyseek.errors import CopyseekError
from copyseek.learn.models import ARCHS

DEVICES = ("auto", "cpu", "cuda")
HEADS = ("global", "how")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as RUN_DIR/config.json so that --resume continues it."""

    # data
    images: str = ""  # folder (each photo its own class, or one class per sub-folder) or .txt list
    severity: float = 1.0  # strength of the random edits that make positives
    colour_edits: float = 0.0  # share of the views that also get a colour edit (learn/data.py COLOUR_EDITS)
    # share of the photos in batches of collection photos (pseudo-labels, mined tuples, reported pairs)
    # that get a random edit at `severity` first (learn/mining.py PhotoBatches; 0: the photos as they are)
    photo_edits: float = 0.0
    # label propagation rounds (--pseudo-labels lp, learn/lploop.py): steps on the labelled photos alone
    # before round 1, as the paper starts (0: round 1 propagates with `init` as it is)
    labelled_steps: int = 0
    # the rounds' batches (learn/pseudo.py PseudoLabelBatches): share of each class's views that are its
    # labelled photos (0: drawn by confidence alone), and share of its propagated photos that train, most
    # confident first (1: all), of each class's ("class") or of all ("global")
    seed_views: float = 0.0
    confident_share: float = 1.0
    confident_select: str = "class"
    # least RANSAC inliers (copyseek's local branch) with a labelled photo of its class for a propagated
    # label to train (0: no verification)
    pseudo_inliers: int = 0
    bank_views: int = 0  # views per class made once and reused (0: fresh edits every batch)
    bank: str = ""  # folder of the view bank (default RUN_DIR/bank); reused if it exists
    workers: int = 0  # processes making bank views, or fresh views ahead of the trainer (0: in the training process)
    # model
    arch: str = "resnet-small"
    dim: int = 512
    image_size: int = 160  # training views and the exported model's square resize
    init: str = ""  # start from the weights of this checkpoint or snapshot (.pt), copyseek-small or our .onnx
    freeze_norm: int = 0  # 1: BatchNorm layers keep their statistics (fine-tuning; copyseek-small's are folded)
    name: str = "copyseek-student"  # recorded in the exported model's sidecar
    head: str = "global"  # "global": a global descriptor; "how": HOW local descriptors (dim = theirs, e.g. 128)
    # HOW (head = "how", copyseek.learn.how): trunk stages dropped, and how photos are described for
    # the whitening that initialises the reduction and for the ASMK codebook learned at export
    skip_stages: int = 0
    how_side: int = 512
    how_scales: str = "1,0.707,0.5"
    how_features: int = 300
    codebook_words: int = 1024
    # loss: terms joined by "+", e.g. "recall@k+simix", "contrastive", "distill+recall@k"
    loss: str = "recall@k+simix"  # terms registered in learn/registry.py
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    tau1: float = 0.01  # rank sigmoid temperature
    tau2: float = 1.0  # recall@k sigmoid temperature
    simix_max: int = 0  # at most this many virtual items per batch (0: every positive pair)
    pos_margin: float = 1.0
    neg_margin: float = 0.3
    miner: str = "all"  # contrastive pairs: "all" or "hard" (learn/registry.py: MINERS)
    # collection miners (miner "manifold" or "knn", learn/mining.py): they describe the training photos
    # with the model, mine tuples on the kNN graph and batch them (no labels, no edits);
    # k values 0 = scaled to the collection's size
    mine_k_positive: int = 0
    mine_k_negative: int = 0
    mine_graph_k: int = 0
    mine_euclidean_k: int = 0
    mine_manifold_pool: int = 0
    mine_anchors: str = "stationary"  # "stationary" (the paper's random-walk modes) or "all"
    # miner "pool" (HOW's, learn/mining.py PoolNegatives): every pool_every steps the training photos and
    # pool_views edits of each are described with the current model; each class of a batch brings its
    # pool_negatives hardest negatives from that pool
    pool_every: int = 10
    pool_negatives: int = 2
    pool_views: int = 1
    # reported pairs weighted by relevance (learn/reports.py): a `copyseek triage` queue
    # (query_id,reference_id,relevance), its references among `images`, its queries under pair_queries
    pairs: str = ""
    pair_queries: str = ""
    distill_direct: float = 1.0  # weight of 1 - cos(student, teacher)
    distill_relational: float = 1.0  # weight of the batch similarity-matrix match
    recall_weight: float = 1.0  # weight of the ranking term when distilling too
    teacher: str = "sscd"  # sscd, onnx:PATH, torchscript:PATH
    # batches
    classes_per_batch: int = 128
    views_per_class: int = 4
    chunk_size: int = 64  # images per forward/backward pass: bounds memory, not the batch
    # optimisation and budget
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the budget with a linearly rising learning rate
    minutes: float = 0.0  # training time budget (0: none); the schedule follows elapsed time
    steps: int = 0  # step budget (0: none); at least one budget must be set
    seed: int = 0
    device: str = "auto"
    checkpoint_minutes: float = 2.0
    snapshot_minutes: float = 0.0  # keep the model every so often in RUN_DIR/snapshots (0: never)

    @property
    def loss_terms(self) -> set[str]:
        return set(self.loss.split("+"))

    @property
    def needs_teacher(self) -> bool:
        from copyseek.learn.registry import LOSSES

        return any(LOSSES[t].role == "teacher" for t in self.loss_terms if t in LOSSES)

    def validate(self) -> "TrainConfig":
        from copyseek.learn.registry import check_miner, loss_terms  # torch: only when a run starts

        loss_terms(self.loss)
        check_miner(self.miner)
        self.mining_params()
        if bool(self.pairs) != bool(self.pair_queries):
            raise CopyseekError("pairs (a triage queue) and pair_queries (its query images) go together")
        if self.arch not in ARCHS:
            raise CopyseekError(f"unknown arch {self.arch!r}; choose one of {sorted(ARCHS)}")
        if self.head not in HEADS:
            raise CopyseekError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.head == "how" and self.needs_teacher:
            raise CopyseekError("a HOW head trains its local descriptors by ranking: use contrastive or recall@k, not distill")
        if self.device not in DEVICES:
            raise CopyseekError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.minutes <= 0 and self.steps <= 0:
            raise CopyseekError("set a training budget: --minutes or steps")
        if not self.images:
            raise CopyseekError("no training images: use --images DIR or a .txt list")
        if self.miner == "pool" and self.needs_teacher:
            raise CopyseekError("miner pool adds negatives without teacher embeddings: use it with ranking losses only")
        if self.miner == "pool" and self.pairs:
            raise CopyseekError("miner pool mines the training photos' pool: not with reported pairs")
        for name in ("colour_edits", "photo_edits", "seed_views"):
            if not 0 <= getattr(self, name) <= 1:
                raise CopyseekError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.confident_share <= 1:
            raise CopyseekError(f"confident_share must be in (0, 1], got {self.confident_share}")
        if self.confident_select not in ("class", "global"):
            raise CopyseekError(f"confident_select must be 'class' or 'global', got {self.confident_select!r}")
        for name in ("pool_views", "bank_views", "workers", "labelled_steps", "pseudo_inliers"):
            if getattr(self, name) < 0:
                raise CopyseekError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.workers > 0 and self.bank_views <= 0 and self.needs_teacher:
            raise CopyseekError("fresh views made by workers carry no teacher embeddings: distil from a view bank "
                                "(bank_views) or set workers = 0")
        for name in ("dim", "image_size", "classes_per_batch", "views_per_class", "chunk_size", "pool_every",
                     "pool_negatives"):
            if getattr(self, name) < 1:
                raise CopyseekError(f"{name} must be positive, got {getattr(self, name)}")
        return self

    def mining_params(self):
        """The collection miners' MiningParams (learn/mining.py), checked."""
        from copyseek.learn.mining import MiningParams

        return MiningParams(self.mine_k_positive, self.mine_k_negative, self.mine_graph_k, self.mine_euclidean_k,
                            self.mine_manifold_pool, self.mine_anchors)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def updated(config: TrainConfig, values: dict, origin: str) -> TrainConfig:
    """A copy of `config` with `values` applied; unknown keys and wrong types are errors naming `origin`."""
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise CopyseekError(f"{origin}: unknown setting(s) {unknown}; known: {sorted(FIELD_TYPES)}")
    data = config.to_dict()
    for key, value in values.items():
        expected = {"int": int, "float": (int, float), "str": str, "list[int]": list}[FIELD_TYPES[key]]
        items = value if isinstance(value, list) else []
        if not isinstance(value, expected) or isinstance(value, bool) or not all(type(v) is int for v in items):
            raise CopyseekError(f"{origin}: {key} must be {FIELD_TYPES[key]}, got {value!r}")
        data[key] = float(value) if FIELD_TYPES[key] == "float" else value
    return TrainConfig(**data)


def read_toml(path: Path) -> dict:
    """Settings of a TOML config file (top-level keys, or a [train] table)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CopyseekError(f"cannot read config {path}: {exc}") from exc
    return data.get("train", data)


def read_saved(path: Path) -> dict:
    """Settings saved by a run (RUN_DIR/config.json)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CopyseekError(f"cannot read saved config {path}: {exc}") from exc


def parse_assignment(text: str) -> tuple[str, object]:
    """'key=value' with a TOML value (bare words are strings): 'ks=[1,4]', 'arch=vit-tiny'."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CopyseekError(f"--set expects key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
