"""The settings of `copyseek bench build` (no heavy imports: the CLI reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass

from copyseek.errors import CopyseekError


@dataclass(frozen=True)
class BenchConfig:
    """What to build. Sizes are numbers of images.

    n_references:         references, copied and never-copied.
    n_copied:             references that have at least one copy among the queries.
    n_copies:             copy queries (>= n_copied; extra copies go round-robin to copied references).
    n_distractor_queries: queries made from photos that are not references.
    n_background:         untouched photos in background/.
    n_donors:             photos that composite edits paste in; None: all photos left over.
    severity:             0..2 edit strength. 1.6 (default) is calibrated to DISC21: on a benchmark
                          from ../shared/images SSCD gives muAP 0.625 raw, 0.756 normalised
                          (DISC21: 0.61 and 0.72); 1.0 gives 0.84 and 0.91.
    holdout:              fraction 0..1 of the photos kept out of the benchmark (chosen by hashing
                          their file names, so the same photos whatever the seed).
    max_side:             longest side, in pixels, of every written image.
    quality:              JPEG quality of re-encoded images.
    variants_per_reference: extra references that are edited versions of each reference (reference
                          families, as banks and archives hold several versions of one photo);
                          listed in families.csv. Queries still copy the original reference.
    variant_severity:     edit strength of those versions (no composite edits).
    """

    seed: int = 0
    n_references: int = 200
    n_copied: int = 100
    n_copies: int = 150
    n_distractor_queries: int = 80
    n_background: int = 60
    n_donors: int | None = None
    severity: float = 1.6
    holdout: float = 0.0
    max_side: int = 1024
    quality: int = 90
    variants_per_reference: int = 0
    variant_severity: float = 1.0

    def validate(self) -> None:
        """Raise CopyseekError on inconsistent or out-of-range settings."""
        counts = {
            "n_references": self.n_references,
            "n_copied": self.n_copied,
            "n_copies": self.n_copies,
            "n_distractor_queries": self.n_distractor_queries,
            "n_background": self.n_background,
            "n_donors": 0 if self.n_donors is None else self.n_donors,
            "variants_per_reference": self.variants_per_reference,
        }
        for name, value in counts.items():
            if int(value) != value or value < 0:
                raise CopyseekError(f"{name} must be a whole number >= 0, got {value}")
        if self.n_references < 1:
            raise CopyseekError("a benchmark needs at least one reference (n_references >= 1)")
        if self.n_copied > self.n_references:
            raise CopyseekError(
                f"n_copied ({self.n_copied}) cannot exceed n_references ({self.n_references})"
            )
        if self.n_copies < self.n_copied or (self.n_copies > 0 and self.n_copied == 0):
            raise CopyseekError(
                f"every copied reference needs a copy and every copy a copied reference: "
                f"n_copies ({self.n_copies}) must be >= n_copied ({self.n_copied}), and 0 if n_copied is 0"
            )
        if self.n_copies + self.n_distractor_queries < 1:
            raise CopyseekError("a benchmark needs at least one query (n_copies + n_distractor_queries >= 1)")
        from copyseek.edits import MAX_SEVERITY  # imported late: the CLI reads defaults without AugLy

        if not 0.0 <= self.severity <= MAX_SEVERITY:
            raise CopyseekError(f"severity must be between 0 and {MAX_SEVERITY:g}, got {self.severity:g}")
        if not 0.0 <= self.variant_severity <= MAX_SEVERITY:
            raise CopyseekError(f"variant_severity must be between 0 and {MAX_SEVERITY:g}, got {self.variant_severity:g}")
        if not 0.0 <= self.holdout < 1.0:
            raise CopyseekError(f"holdout must be a fraction in [0, 1), got {self.holdout:g}")
        if self.max_side < 32:
            raise CopyseekError(f"max_side must be at least 32 pixels, got {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise CopyseekError(f"JPEG quality must be between 1 and 100, got {self.quality}")

    def photos_needed(self) -> int:
        """Photos the pools take: references, distractor-query sources, background, donors (>= 1
        when n_donors is None)."""
        donors = 1 if self.n_donors is None else self.n_donors
        return self.n_references + self.n_distractor_queries + self.n_background + donors
