"""Every endpoint of the OpenAPI schema, driven with generated requests (hypothesis): valid and
broken images, wrong types, hostile strings, wrong content types, with and without keys. Bounded
in examples and time; no answer may be a 5xx, and the service must still match afterwards."""

from __future__ import annotations

import io
import time
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import bearer, make_client

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES_PER_OPERATION = 20
SECONDS = 25


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def sample_files(query: bytes) -> list[bytes]:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return [
        query,
        query[: len(query) // 3],  # truncated JPEG
        encoded(small, "PNG"),
        encoded(small.convert("RGBA"), "WEBP"),
        encoded(Image.new("L", (1, 1)), "BMP"),
        encoded(Image.new("RGB", (20000, 3000)), "PNG"),  # over the pixel limit
        b"",
        b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 300, dtype=np.uint8)),  # PNG signature, garbage after
        bytes(rng.integers(0, 255, 2000, dtype=np.uint8)),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ]


def value_for(schema: dict) -> st.SearchStrategy:
    """A value of the parameter's type, or something else that a careless client sends."""
    kind = schema.get("type") or next((s.get("type") for s in schema.get("anyOf", []) if s.get("type") != "null"), "string")
    wrong = st.one_of(st.text(max_size=20), st.sampled_from(["", "-1", "1e309", "nan", "null", "%00", "0x10", "[]"]))
    right = {
        "integer": st.integers(-(2**40), 2**40),
        "number": st.floats(allow_nan=True, allow_infinity=True),
        "boolean": st.booleans(),
        "string": st.one_of(st.text(max_size=40), st.sampled_from(["img0001", "img0003", "../../etc/passwd", "a" * 200])),
    }.get(kind, st.text(max_size=20))
    return st.one_of(right.map(str), wrong)


def request_strategy(path: str, method: str, operation: dict, files: list[bytes], tokens: list[str | None]):
    """(method, url, kwargs) for httpx2 / TestClient."""
    params = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {})

    @st.composite
    def build(draw):
        url = path
        query = {}
        for p in params:
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(draw(value_for(p.get("schema", {}))), safe="") or "x")
            elif p["in"] == "query" and (p.get("required") or draw(st.booleans())):
                query[p["name"]] = draw(value_for(p.get("schema", {})))
        if draw(st.integers(0, 9)) == 0:
            query[draw(st.text(min_size=1, max_size=8))] = draw(st.text(max_size=8))
        token = draw(st.sampled_from(tokens))
        kwargs: dict = {"params": query, "headers": bearer(token) if token else {}}
        if body:
            shape = draw(st.sampled_from(sorted(body) + ["json", "none"]))
            if shape == "multipart/form-data":
                fields = body[shape]["schema"].get("properties", {})
                names = list(fields) + [draw(st.text(min_size=1, max_size=6))]
                upload, data = [], {}
                for name in names:
                    if name in fields and fields[name].get("type") == "string" and "format" not in fields[name]:
                        data[name] = draw(st.text(max_size=30))
                    else:
                        for _ in range(draw(st.integers(0, 3))):
                            upload.append((name, (draw(st.text(max_size=12)) or "f", draw(st.sampled_from(files)))))
                kwargs.update(files=upload or None, data=data or None)
            elif shape == "json":
                kwargs["json"] = draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
            elif shape != "none":
                kwargs["content"] = draw(st.sampled_from(files))
                kwargs["headers"]["Content-Type"] = draw(st.sampled_from([shape, "image/jpeg", "text/plain", "multipart/form-data"]))
        return method.upper(), url, kwargs

    return build()


def test_no_generated_request_gets_a_5xx_and_the_service_survives(served, keys):
    query = (served / "query.jpg").read_bytes()
    files = sample_files(query)
    tokens = [None, keys["read"], keys["write"], "not-a-key"]
    with make_client(served / "index", max_pixels=20_000_000, max_upload_bytes=2_000_000, timeout=30) as client:
        schema = client.get("/openapi.json").json()
        operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
        assert len(operations) >= 10
        seen: dict[str, set[int]] = {}
        for path, method, operation in operations:
            # each operation gets its share of the time; its first example runs whatever the clock says
            deadline = time.monotonic() + SECONDS / len(operations)

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(request_strategy(path, method, operation, files, tokens))
            def check(request):
                if time.monotonic() > deadline and f"{method.upper()} {path}" in seen:
                    return
                verb, url, kwargs = request
                response = client.request(verb, url, **kwargs)
                seen.setdefault(f"{verb} {path}", set()).add(response.status_code)
                assert response.status_code < 500, f"{verb} {url} {kwargs.get('params')}: {response.status_code} {response.text[:300]}"
                if response.status_code >= 400:
                    assert "error" in response.json(), response.text

            check()
        assert len(seen) == len(operations), "every operation was exercised"
        assert any(s < 300 for codes in seen.values() for s in codes)
        assert client.get("/healthz").status_code == 200
        after = client.post("/v1/match?k=1", content=query, headers=bearer(keys["read"]))
        assert after.status_code == 200 and after.json()["matches"][0]["id"] == "img0003"
