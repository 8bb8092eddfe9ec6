import pytest

from copyseek.describe.registry import pipeline_options
from copyseek.errors import CopyseekError


def test_pipeline_defaults_apply_unless_overridden():
    assert pipeline_options("fused") == {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224+short:256"}, "local": {}}
    chosen = pipeline_options("fused", {"global": {"resize": "square:320", "model": "sscd-fast"}})
    assert chosen["global"] == {"resize": "square:320", "model": "sscd-fast"}
    assert pipeline_options("global") == {"global": {}}


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(CopyseekError, match="unknown pipeline 'fuzed'"):
        pipeline_options("fuzed")
