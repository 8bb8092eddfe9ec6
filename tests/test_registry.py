"""The registry (copyseek/registry.py): pipelines' options, and registering new pieces."""

import numpy as np
import pytest

from copyseek import registry
from copyseek.describe.base import Branch
from copyseek.errors import CopyseekError
from copyseek.registry import pipeline_options


def test_pipeline_defaults_apply_unless_overridden():
    assert pipeline_options("fused") == {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224+short:256"}, "local": {}}
    chosen = pipeline_options("fused", {"global": {"resize": "square:320", "model": "sscd-fast"}})
    assert chosen["global"] == {"resize": "square:320", "model": "sscd-fast"}
    assert pipeline_options("global") == {"global": {}}


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(CopyseekError, match="unknown pipeline 'fuzed'"):
        pipeline_options("fuzed")


class Toy(Branch):
    """A registered branch made in the test: the mean colour as its feature."""

    name = "toy"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    @classmethod
    def from_options(cls, options: dict) -> "Toy":
        return cls(**options)

    @property
    def decode_side(self) -> int:
        return 32

    def spec(self) -> dict:
        return {"toy": self.scale}

    def extract(self, images, *, query=False):
        return [{"mean": image.reshape(-1, 3).mean(0).astype(np.float32) * self.scale} for image in images]

    def pack(self, features):
        return {"means": np.array([f["mean"] for f in features], np.float32).reshape(-1, 3)}

    def new_searcher(self):
        raise NotImplementedError


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry's tables as copies, so that what a test registers is gone after it."""
    for table in ("BRANCHES", "PIPELINES", "PIPELINE_DEFAULTS", "SCORERS"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))


def test_register_branch_and_pipeline_make_them_buildable_by_name(clean_registry):
    registry.register_branch("toy", Toy)
    registry.register_pipeline("toys", ("toy",), defaults={"toy": {"scale": 2.0}})
    assert registry.pipeline_branches("toys") == ("toy",)
    options = registry.pipeline_options("toys")
    assert options == {"toy": {"scale": 2.0}}
    branch = registry.make_branch("toy", options["toy"])
    assert isinstance(branch, Toy) and branch.spec() == {"toy": 2.0}
    # speed options are handed to every branch and dropped by those that do not take them
    assert registry.make_branch("toy", {"threads": 4, "batch_size": 2}).spec() == {"toy": 1.0}
    # a one-branch pipeline scores with the branch's own scores unless a scorer is registered
    from copyseek.match.scoring import branch_scorer

    assert registry.scorer_factory("toys") is branch_scorer


def test_lazy_names_load_on_first_use(clean_registry):
    registry.register_branch("toy", "tests.test_registry:Toy")
    assert isinstance(registry.make_branch("toy", {}), Toy)
    registry.register_branch("broken", "tests.test_registry:NoSuchThing")
    with pytest.raises(CopyseekError, match="cannot be loaded"):
        registry.make_branch("broken", {})


def test_plain_constructor_functions_still_register(clean_registry):
    registry.register_branch("toy", lambda options: Toy(**options))
    assert registry.make_branch("toy", {"scale": 3.0}).spec() == {"toy": 3.0}
    assert registry.options_from_spec("toy", {"toy": 3.0}) == {}
    registry.register_branch("not-a-branch", lambda options: object())
    with pytest.raises(CopyseekError, match="not a Branch"):
        registry.make_branch("not-a-branch", {})


def test_register_scorer_names_the_pipelines_rule(clean_registry):
    registry.register_branch("toy", Toy)

    def factory(index, normalizer):
        return lambda batch: batch.candidates["toy"]

    registry.register_pipeline("two-toys", ("toy", "global"), scorer=factory)
    assert registry.scorer_factory("two-toys") is factory
    registry.register_pipeline("toy-and-global", ("toy", "global"))
    with pytest.raises(CopyseekError, match="no scorer is registered for pipeline 'toy-and-global'"):
        registry.scorer_factory("toy-and-global")
    assert registry.scorer_factory("fused").__name__ == "FusedScorer"  # named lazily, loaded here


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: registry.register_branch("global", Toy), "already registered as 'global'"),
        (lambda: registry.register_branch("a b", Toy), "name must be"),
        (lambda: registry.register_branch("toy", 42), "expected a Branch subclass"),
        (lambda: registry.register_pipeline("p", ("nope",)), "unregistered branch"),
        (lambda: registry.register_pipeline("p", ()), "one or more distinct branches"),
        (lambda: registry.register_pipeline("p", ("global",), defaults={"local": {}}), "defaults for branches it lacks"),
        (lambda: registry.register_pipeline("global", ("pdq",)), "already registered"),
        (lambda: registry.register_scorer("global", "x:y"), "already registered"),
        (lambda: registry.make_branch("nope", {}), "unknown branch 'nope'"),
        (lambda: registry.pipeline_options("global", {"local": {}}), "keyed by its branches"),
    ],
)
def test_registering_or_naming_badly_is_a_clear_error(clean_registry, call, message):
    with pytest.raises(CopyseekError, match=message):
        call()


def test_registering_the_same_piece_twice_is_harmless(clean_registry):
    registry.register_branch("toy", Toy)
    registry.register_branch("toy", Toy)
    registry.register_pipeline("global", ("global",))


def test_options_pinned_by_a_spec_come_from_the_branch():
    assert registry.options_from_spec("local", {"max_keypoints": 100, "codec": "x"}) == {"max_keypoints": 100}
    assert registry.options_from_spec("pdq", {"hash": "pdq", "bits": 256}) == {}
