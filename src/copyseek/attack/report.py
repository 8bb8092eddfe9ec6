"""`copyseek attack --report`: how the attack fares, and how copyseek's pipelines resist it.

On a benchmark made by `copyseek bench build`, (target, carrier) pairs are drawn with an explicit
generator: targets are copy queries (they have a reference in the benchmark), carriers photos of the
benchmark's hold-out list (in neither the references, the queries nor the background set). Each
carrier becomes an adversarial image that the attacked model should describe as its target.

Two tables (markdown):
- the attack: SSIM of the adversarial image to its carrier and to its target, and the agreement of
  retrieval (over the benchmark's references) with the adversarial image vs with the target:
  rank-1 agreement and top-10 overlap, on the attacked model at its attacked input size, at an
  input size it was not attacked at, and on a model it never saw (SSCD, by transfer);
- robustness: for each pipeline, at its operating threshold (precision 0.9 on the benchmark's own
  queries), the share of images reported as a copy of the target's reference, for the carriers, the
  adversarial images, and the adversarial images re-encoded as JPEG or resized.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.attack.metrics import TIE_MARGIN, rank1_by_margin, retrieval_agreement, ssim
from copyseek.attack.mismatch import AttackParams, TargetedMismatch
from copyseek.attack.models import AttackModel
from copyseek.errors import CopyseekError
from copyseek.io.images import ImageFile, load_rgb
from copyseek.progress import progress_bar
from copyseek.validation import check_int, check_number

DEFAULT_PIPELINES = ("sscd", "sscd+sn", "local", "fused+sn")
"""global, global with background normalisation, the local branch alone (the fused pipeline's
verification), and fused (with normalisation: the README's most accurate set-up)."""


@dataclass(frozen=True)
class Pair:
    """pid: the pair's id (file stem of its images); target: a copy query; reference: its reference id."""

    pid: str
    target: Path
    carrier: Path
    reference: str


@dataclass(frozen=True)
class ReportParams:
    """pairs: how many (target, carrier) pairs. seed: of the pair draw. max_side: longer side of the
    carriers (and so of the adversarial images) in pixels. jpeg: quality of the re-encoding
    variant. shrink: scale of the resizing variant. unseen: the attacked model's input size that
    the attack did not use. pipelines: `copyseek bench run` pipeline names."""

    pairs: int = 30
    seed: int = 0
    max_side: int = 256
    jpeg: int = 75
    shrink: float = 0.5
    unseen: int = 224
    pipelines: tuple[str, ...] = DEFAULT_PIPELINES

    def __post_init__(self) -> None:
        check_int("pairs", self.pairs, minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_int("max side", self.max_side, 32, 4096)
        check_int("JPEG quality", self.jpeg, 1, 95)
        check_number("shrink", self.shrink, 0, 1, open_minimum=True)
        check_int("unseen size", self.unseen, 16, 2048)


def draw_pairs(bench: Path, count: int, seed: int) -> list[Pair]:
    """`count` (copy query, hold-out photo) pairs of a benchmark, drawn by np.random.default_rng(seed)."""
    from copyseek.bench.run import benchmark_paths
    from copyseek.io.csvfiles import read_ground_truth
    from copyseek.io.images import find_images

    paths = benchmark_paths(bench)
    holdout = bench / "holdout.txt"
    if not holdout.exists():
        raise CopyseekError(f"{bench} has no holdout.txt to draw carriers from (build it with --holdout 0.3)")
    carriers = [Path(line.strip()) for line in holdout.read_text().splitlines() if line.strip()]
    queries = {f.id: f.path for f in find_images(paths["queries"])[0]}
    copies = sorted(read_ground_truth(paths["gt"]).pairs)
    if count > min(len(copies), len(carriers)):
        raise CopyseekError(f"{bench} has {len(copies)} copies and {len(carriers)} hold-out photos; cannot draw {count} pairs")
    rng = np.random.default_rng(seed)
    chosen = [copies[i] for i in rng.choice(len(copies), count, replace=False)]
    carrier_paths = [carriers[i] for i in rng.choice(len(carriers), count, replace=False)]
    return [Pair(f"pair{i:03d}", queries[q], c, r) for i, ((q, r), c) in enumerate(zip(chosen, carrier_paths))]


def fit_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """Shrink (bilinear) so the longer side is at most `side` pixels; smaller images are kept."""
    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(image)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def shrink(rgb: np.ndarray, scale: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (max(16, round(width * scale)), max(16, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


@dataclass
class AttackRun:
    """The images of one attack configuration: image set name -> pid -> file, and per-pair SSIMs."""

    folder: Path
    sets: dict[str, dict[str, Path]] = field(default_factory=dict)
    ssim_carrier: list[float] = field(default_factory=list)
    ssim_target: list[float] = field(default_factory=list)
    seconds_per_pair: float = 0.0
    cpu_seconds_per_pair: float | None = None
    finished: list[str] = field(default_factory=list)
    """pids of the pairs whose adversarial image exists (the SSIM lists follow this order)."""


def make_adversarials(model: AttackModel, pairs: list[Pair], attack: AttackParams, params: ReportParams, folder: Path,
                      progress: bool = True, shard: tuple[int, int] = (0, 1)) -> AttackRun:
    """Attack every pair; write carriers, targets, adversarial images and their JPEG and resized
    variants (PNG) under `folder`, and a record per pair (pairs/PID.json). A pair whose record
    was made with the same settings is not attacked again, so a run resumes, and `shard` (i, n)
    attacks only the pairs i, i + n, ... (several processes share the work; a run without shard
    then finds them all done)."""
    images = {k: v for k, v in asdict(params).items() if k in ("max_side", "jpeg", "shrink")}  # what the images depend on
    settings = {"attack": asdict(attack), "images": images, "model": model.name}
    names = ("carrier", "target", "adversarial", f"adversarial+jpeg{params.jpeg}", f"adversarial+x{params.shrink:g}")
    for name in (*names, "pairs"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    run = AttackRun(folder, {name: {p.pid: folder / name / f"{p.pid}.png" for p in pairs} for name in names})
    index, count = shard
    seconds, cpu_seconds = [], []
    with progress_bar(len(pairs[index::count]), "attacking", disable=not progress, unit="pair") as bar:
        for i, pair in enumerate(pairs):
            record_path = folder / "pairs" / f"{pair.pid}.json"
            # through JSON, so that it compares equal to a stored record (tuples come back as lists)
            expected = json.loads(json.dumps({**settings, "target": str(pair.target), "carrier": str(pair.carrier)}))
            record = json.loads(record_path.read_text()) if record_path.exists() else {}
            if not _same_settings(record.get("settings"), expected):
                if i % count != index:
                    continue
                start, cpu_start = time.perf_counter(), time.process_time()
                target = load_rgb(pair.target)
                carrier = fit_side(load_rgb(pair.carrier), params.max_side)
                adversarial = TargetedMismatch(model, attack).fit(fit_side(target, params.max_side)).transform(carrier)
                made = (carrier, target, adversarial, jpeg(adversarial, params.jpeg), shrink(adversarial, params.shrink))
                for name, rgb in zip(names, made):
                    Image.fromarray(rgb).save(run.sets[name][pair.pid])
                record = {"settings": expected, "ssim_carrier": ssim(carrier, adversarial), "ssim_target": ssim(adversarial, target),
                          "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
                record_path.write_text(json.dumps(record))
                bar.update(1)
            run.finished.append(pair.pid)
            run.ssim_carrier.append(record["ssim_carrier"])
            run.ssim_target.append(record["ssim_target"])
            seconds.append(record["seconds"])
            cpu_seconds.append(record.get("cpu_seconds"))  # records of older runs have wall time only
    run.seconds_per_pair = float(np.mean(seconds)) if seconds else 0.0
    if cpu_seconds and None not in cpu_seconds:
        run.cpu_seconds_per_pair = float(np.mean(cpu_seconds))
    return run


ADDED_PARAMETERS = {"schedule": "constant", "goal": 0.0, "budget": 0.0, "lowres": 0}
"""Attack parameters added after the first records were written, at the values that reproduce the
attack of those records."""


def _same_settings(stored: dict | None, expected: dict) -> bool:
    """Whether a stored record was made with the expected settings; a record without one of the
    ADDED_PARAMETERS matches an attack that has it at its old-behaviour value."""
    if stored is None or {k: v for k, v in stored.items() if k != "attack"} != {k: v for k, v in expected.items() if k != "attack"}:
        return False
    old = {**ADDED_PARAMETERS, **stored["attack"]}
    return set(old) == set(expected["attack"]) and all(old[key] == value for key, value in expected["attack"].items())


def _embed_files(model, files: list[Path], batch: int = 32) -> np.ndarray:
    vectors = []
    for i in range(0, len(files), batch):
        vectors.append(model.embed(np.stack([model.preprocess.apply(load_rgb(f)) for f in files[i : i + batch]])))
    return np.concatenate(vectors)


def _reference_vectors(model, files: list[Path], cache: Path | None) -> np.ndarray:
    """The references' vectors, kept in `cache` (a folder) under the model's fingerprint and size."""
    if cache is None:
        return _embed_files(model, files)
    key = hashlib.sha1(json.dumps([model.spec(), [str(f) for f in files]]).encode()).hexdigest()[:16]
    path = cache / f"references-{key}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, _embed_files(model, files))
    return np.load(path)


def retrieval_rows(runs: dict[str, AttackRun], pairs: list[Pair], bench: Path, views: dict[str, tuple[str, str]],
                   cache: Path | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Agreement of retrieval with the adversarial images (and their re-encoded and resized
    variants) vs the targets over the benchmark's references, for each attack run and each view
    name -> (global model spec, resize): {run: {view: {"rank1", "top10", "cosine", "rank1 <variant>"...}}}."""
    from copyseek.describe.models import load_model
    from copyseek.describe.preprocess import Preprocess
    from copyseek.io.images import find_images

    references = [f.path for f in find_images(bench / "references")[0]]
    rows: dict[str, dict[str, dict[str, float]]] = {name: {} for name in runs}
    for view, (spec, resize) in views.items():
        model = load_model(spec, Preprocess.parse(resize), threads=1)
        database = _reference_vectors(model, references, cache)
        for name, run in runs.items():
            targets = _embed_files(model, [run.sets["target"][p.pid] for p in pairs])
            adversarial = _embed_files(model, [run.sets["adversarial"][p.pid] for p in pairs])
            row = retrieval_agreement(adversarial, targets, database, k=10)
            row["cosine"] = float(np.mean(np.sum(adversarial * targets, axis=1)))
            row.update(rank1_by_margin(adversarial, targets, database))
            for variant in (s for s in run.sets if s.startswith("adversarial+")):
                changed = _embed_files(model, [run.sets[variant][p.pid] for p in pairs])
                row[f"rank1 {variant}"] = retrieval_agreement(changed, targets, database, k=10)["rank1"]
            rows[name][view] = row
    return rows


@dataclass
class PipelineVerdicts:
    """share[image set] = share of pairs reported as a copy of the target's reference at the threshold;
    any[image set] = share of pairs with any reference above it."""

    name: str
    threshold: float | None
    recall: float
    share: dict[str, float]
    any: dict[str, float]


def calibrate(bench: Path, name: str, workdir: Path, progress: bool = True) -> tuple[Path, float | None, float]:
    """Index the benchmark's references with bench pipeline `name` (kept in `workdir`) and find its
    operating threshold, precision 0.9 on the benchmark's queries: (index folder, threshold or
    None, recall there). Both are kept, so a second call only reads them."""
    from copyseek.bench.run import benchmark_paths, parse_pipeline
    from copyseek.eval.metrics import evaluate
    from copyseek.io.csvfiles import read_ground_truth
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    paths = benchmark_paths(bench)
    pipe = parse_pipeline(name)
    index_dir = workdir / f"index-{pipe.pipeline}-{hashlib.sha1(pipe.index_key.encode()).hexdigest()[:10]}"
    saved = index_dir / f"p90-{name.replace('/', '_').replace(':', '_')}.json"
    if saved.exists():
        found = json.loads(saved.read_text())
        return index_dir, found["threshold"], found["recall"]
    with Index.open_or_create(index_dir, pipe.pipeline, pipe.options) as index:
        index.add(paths["references"], progress=progress, on_skip=_quiet)
        options = MatchOptions(k=10, background=paths["background"] if pipe.normalize else None)
        result = match(index, paths["queries"], options, progress=progress, on_skip=_quiet)
    metrics = evaluate(result.predictions, read_ground_truth(paths["gt"]))
    saved.write_text(json.dumps({"threshold": metrics.threshold_at_p90, "recall": metrics.recall_at_p90}))
    return index_dir, metrics.threshold_at_p90, metrics.recall_at_p90


def _quiet(file, reason) -> None:
    """A benchmark counts skipped images; it does not print them."""


def pipeline_verdicts(bench: Path, pipelines: tuple[str, ...], run: AttackRun, pairs: list[Pair], workdir: Path,
                      progress: bool = True, sets: tuple[str, ...] | None = None) -> list[PipelineVerdicts]:
    """For each pipeline (`calibrate`d), match the image `sets` of `run` and count the verdicts;
    each image's verdict is kept in the run's folder (verdicts/PIPELINE-SET/PID.json), so a
    process can judge the pairs finished so far and another the rest.
    By default every set but the targets: they are benchmark queries, so each pipeline's recall at
    its threshold (the table's recall@P90 column) already says how it finds them."""
    from copyseek.bench.run import benchmark_paths, parse_pipeline
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    paths = benchmark_paths(bench)
    verdicts = []
    for name in pipelines:
        index_dir, threshold, recall = calibrate(bench, name, workdir, progress)
        options = MatchOptions(k=10, background=paths["background"] if parse_pipeline(name).normalize else None)
        share, flagged = {}, {}
        for set_name in sets or [name for name in run.sets if name != "target"]:
            folder = run.folder / "verdicts" / f"{name.replace('/', '_').replace(':', '_')}-{set_name}"
            folder.mkdir(parents=True, exist_ok=True)
            # only images whose pair is finished (its record written last) and not judged yet
            todo = {pid: path for pid, path in run.sets[set_name].items()
                    if (run.folder / "pairs" / f"{pid}.json").exists() and not (folder / f"{pid}.json").exists()}
            if todo:
                with Index.open(index_dir) as index:
                    found = match(index, [ImageFile(pid, path) for pid, path in todo.items()], options, progress=progress,
                                  on_skip=_quiet)
                above = [p for p in found.predictions if threshold is not None and p.score >= threshold]
                for pid in todo:
                    verdict = {"copy": any(p.query_id == pid and p.reference_id == _reference_of(pairs, pid) for p in above),
                               "any": any(p.query_id == pid for p in above)}
                    (folder / f"{pid}.json").write_text(json.dumps(verdict))
            judged = [json.loads((folder / f"{p.pid}.json").read_text()) for p in pairs if (folder / f"{p.pid}.json").exists()]
            share[set_name] = sum(v["copy"] for v in judged) / len(pairs)
            flagged[set_name] = sum(v["any"] for v in judged) / len(pairs)
        verdicts.append(PipelineVerdicts(name, threshold, recall, share, flagged))
    return verdicts


def _reference_of(pairs: list[Pair], pid: str) -> str:
    return next(p.reference for p in pairs if p.pid == pid)


def attack_table(rows: dict[str, dict], runs: dict[str, AttackRun], views: dict[str, tuple[str, str]]) -> str:
    """Markdown: one row per attack configuration, per retrieval view rank-1 / top-10 / cosine."""
    header = "| attack | s/pair wall (CPU) | SSIM to carrier | SSIM to target | " + " | ".join(
        f"{name}: rank-1 / top-10 / cos / rank-1 after JPEG, resize" for name in views) + " |"
    lines = [header, "|" + "---|" * (4 + len(views))]
    for config, per_view in rows.items():
        run = runs[config]
        cells = [f"{per_view[v]['rank1']:.2f} / {per_view[v]['top10']:.2f} / {per_view[v]['cosine']:.2f} / "
                 + ", ".join(f"{value:.2f}" for key, value in per_view[v].items() if key.startswith("rank1 adversarial+")) for v in views]
        cpu = f" ({run.cpu_seconds_per_pair:.1f})" if run.cpu_seconds_per_pair is not None else ""
        lines.append(f"| {config} | {run.seconds_per_pair:.1f}{cpu} | {np.mean(run.ssim_carrier):.3f} (min {np.min(run.ssim_carrier):.2f}) "
                     f"| {np.mean(run.ssim_target):.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def margin_table(rows: dict[str, dict], views: dict[str, tuple[str, str]]) -> str:
    """Markdown: per attack configuration and view, the rank-1 agreement on targets whose own first
    result is decided (leads the second by >= TIE_MARGIN) and on near ties, with the decided share."""
    lines = [f"| attack | " + " | ".join(f"{name}: decided targets / rank-1 on them / rank-1 on near ties" for name in views) + " |",
             "|" + "---|" * (1 + len(views))]
    for config, per_view in rows.items():
        cells = [f"{per_view[v]['decided']:.2f} / {per_view[v]['rank1 decided']:.2f} / {per_view[v]['rank1 tied']:.2f}" for v in views]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robustness_table(verdicts: list[PipelineVerdicts]) -> str:
    """Markdown: per pipeline, its P90 threshold and recall, and the share of each image set
    reported as a copy of the target's reference (and, in brackets, flagged as a copy of anything)."""
    sets = list(verdicts[0].share)
    lines = ["| pipeline | threshold (P90) | recall@P90 | " + " | ".join(sets) + " |", "|" + "---|" * (3 + len(sets))]
    for v in verdicts:
        threshold = f"{v.threshold:.3f}" if v.threshold is not None else "none"
        cells = [f"{v.share[s]:.2f} ({v.any[s]:.2f})" for s in sets]
        lines.append(f"| {v.name} | {threshold} | {v.recall:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_report(bench: str | Path, model_spec: str, configs: dict[str, AttackParams], params: ReportParams | None = None,
               workdir: str | Path | None = None, progress: bool = True, robustness: str | None = None,
               finished_only: bool = False) -> str:
    """Both tables as markdown. configs: attack name -> parameters, all run on the same pairs;
    robustness: the configuration whose images the pipelines judge (default: the last one);
    finished_only: attack nothing, tabulate the pairs that every configuration has finished (for a
    run cut short; the first line says how many)."""
    from copyseek.attack.models import load_attack_model

    bench, params = Path(bench), params or ReportParams()
    if model_spec.startswith("learn:"):
        raise CopyseekError("the report queries the attacked model through copyseek's engine: export the learn "
                            "model first (copyseek train writes model.onnx) and attack onnx:RUN/model.onnx")
    if not configs:
        raise CopyseekError("the report needs at least one attack configuration")
    workdir = Path(workdir) if workdir else bench / "attack-report"
    model = load_attack_model(model_spec)
    pairs = draw_pairs(bench, params.pairs, params.seed)
    attacked = sorted({s for attack in configs.values() for s in attack.sizes})
    views = {f"{model_spec} square:{s} (attacked)": (model_spec, f"square:{s}") for s in attacked}
    views[f"{model_spec} square:{params.unseen} (unseen size)"] = (model_spec, f"square:{params.unseen}")
    views["sscd square:320 (transfer)"] = ("sscd", "square:320")
    folders = {name: workdir / "".join(c if c.isalnum() or c in "-_." else "_" for c in name) for name in configs}
    shard = (0, 1)
    if finished_only:
        shard = (-1, 1)  # no pair index matches: nothing is attacked
        done = [set(make_adversarials(model, pairs, attack, params, folders[name], False, shard).finished)
                for name, attack in configs.items()]
        pairs = [p for p in pairs if all(p.pid in d for d in done)]
        if not pairs:
            raise CopyseekError("no pair is finished by every configuration yet")
    runs = {name: make_adversarials(model, pairs, attack, params, folders[name], progress, shard) for name, attack in configs.items()}
    rows = retrieval_rows(runs, pairs, bench, views, cache=workdir)
    lines = [f"{len(pairs)} (target, carrier) pairs of {bench}, attacked model {model_spec}, carriers at <= {params.max_side} px",
             "", attack_table(rows, runs, views), "",
             f"Rank-1 agreement by how decided each target's own first result is (margin to its second >= {TIE_MARGIN} cosine):",
             "", margin_table(rows, views)]
    if params.pipelines:
        judged = robustness or list(configs)[-1]
        verdicts = pipeline_verdicts(bench, params.pipelines, runs[judged], pairs, workdir, progress)
        lines += ["", f"Pipelines judging the images of `{judged}`: share reported as a copy of the target's reference "
                  "(in brackets: of any reference) at each pipeline's precision-0.9 threshold on the benchmark's queries",
                  "", robustness_table(verdicts)]
    return "\n".join(lines)
