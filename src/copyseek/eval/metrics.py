"""DISC21 / ISC2021 matching-track metrics, computed as the ISC reference code does.

All queries' predictions are pooled and sorted by decreasing score; among equal scores the wrong
predictions come first (worst case, so a constant score gains nothing). A prediction is right when
its (query, reference) pair is in the ground truth; predictions for queries that copy nothing are
false positives. Recall is over all ground-truth pairs, so missing predictions cost recall.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import GroundTruth, Prediction


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall after each prediction in score order; thresholds are the scores."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class Metrics:
    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None
    accuracy_at_1: float
    n_predictions: int
    n_positives: int
    n_queries_predicted: int
    curve: PRCurve

    def summary(self) -> str:
        threshold = "n/a" if self.threshold_at_p90 is None else f"{self.threshold_at_p90:.4f}"
        return (
            f"muAP            {self.micro_ap:.4f}\n"
            f"recall@P90      {self.recall_at_p90:.4f}  (threshold {threshold})\n"
            f"accuracy@1      {self.accuracy_at_1:.4f}\n"
            f"predictions     {self.n_predictions} for {self.n_queries_predicted} queries; "
            f"{self.n_positives} ground-truth pairs"
        )


def check_no_duplicates(predictions: list[Prediction]) -> None:
    """Raise CopyseekError if a (query, reference) pair is predicted twice (an error in ISC)."""
    counts = Counter((p.query_id, p.reference_id) for p in predictions)
    dupes = [pair for pair, n in counts.items() if n > 1]
    if dupes:
        shown = ", ".join(f"{q},{r}" for q, r in dupes[:5])
        raise CopyseekError(f"{len(dupes)} (query, reference) pair(s) predicted more than once: {shown}")


def precision_recall(correct: np.ndarray, scores: np.ndarray, n_positives: int) -> PRCurve:
    """PR curve of pooled predictions.

    correct: (n,) bool, whether each prediction is a ground-truth pair.
    scores:  (n,) float, higher = more similar.
    Ties are broken worst case: wrong predictions first among equal scores.
    """
    order = np.lexsort((correct.astype(np.int8), -scores.astype(np.float64)))
    hits = correct[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / max(n_positives, 1)
    return PRCurve(precision, recall, scores[order])


def average_precision(curve: PRCurve) -> float:
    """Area under the step PR curve: sum of precision x recall increment, recall starting at 0."""
    if len(curve.recall) == 0:
        return 0.0
    gains = np.diff(np.concatenate([[0.0], curve.recall]))
    return float(np.sum(curve.precision * gains))


def recall_at_precision(curve: PRCurve, min_precision: float = 0.9) -> tuple[float, float | None]:
    """Highest recall reached at a point with precision >= min_precision, and its score threshold."""
    ok = np.flatnonzero(curve.precision >= min_precision)
    if len(ok) == 0:
        return 0.0, None
    best = ok[np.argmax(curve.recall[ok])]
    return float(curve.recall[best]), float(curve.thresholds[best])


def accuracy_at_1(predictions: list[Prediction], ground_truth: GroundTruth) -> float:
    """Share of ground-truth pairs whose query's best-scored prediction is that pair."""
    if not ground_truth.pairs:
        return 0.0
    best: dict[str, Prediction] = {}
    for p in predictions:
        if p.query_id not in best or p.score > best[p.query_id].score:
            best[p.query_id] = p
    hits = sum((q, best[q].reference_id) in ground_truth.pairs for q, _ in ground_truth.pairs if q in best)
    return hits / len(ground_truth.pairs)


def evaluate(predictions: list[Prediction], ground_truth: GroundTruth) -> Metrics:
    """Micro-AP, recall at precision 0.9 and accuracy@1 of pooled predictions.

    Predictions for queries not in the ground truth raise CopyseekError (a wrong file pairing is
    likelier than an intended extra query).
    """
    check_no_duplicates(predictions)
    unknown = {p.query_id for p in predictions} - ground_truth.queries
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise CopyseekError(
            f"{len(unknown)} predicted query id(s) are not in the ground truth (e.g. {shown}): "
            "are the predictions and the ground truth from the same query set?"
        )
    correct = np.array([(p.query_id, p.reference_id) in ground_truth.pairs for p in predictions], dtype=bool)
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    curve = precision_recall(correct, scores, len(ground_truth.pairs))
    recall90, threshold90 = recall_at_precision(curve, 0.9)
    return Metrics(
        micro_ap=average_precision(curve),
        recall_at_p90=recall90,
        threshold_at_p90=threshold90,
        accuracy_at_1=accuracy_at_1(predictions, ground_truth),
        n_predictions=len(predictions),
        n_positives=len(ground_truth.pairs),
        n_queries_predicted=len({p.query_id for p in predictions}),
        curve=curve,
    )
