"""The HTTP layer of `copyseek serve`: FastAPI routes that only parse, authorise and call
`IndexService` (engine.py), which calls the same API a script calls.

Errors are JSON `{"error": message, "status": code}`: a `CopyseekError` is 400, an unreadable image
422, an unknown reference 404, a taken id 409, a body over the limit 413, a request over its time
limit 503. Nothing a client sends should give a 500 (the fuzz test in tests/service checks it).
"""


import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from copyseek import __version__
from copyseek.errors import CopyseekError
from copyseek.service.engine import Conflict, IndexService, NotFound, TooLarge, UnreadableImage, Upload
from copyseek.service.keys import KeyStore
from copyseek.service.metrics import Metrics

T = TypeVar("T")

ERROR_STATUS = {UnreadableImage: 422, NotFound: 404, Conflict: 409, TooLarge: 413}
"""Statuses of the CopyseekError kinds that are not plain bad requests (400)."""

IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def images_body(field: str, extra: dict | None = None) -> dict:
    properties = {field: {"type": "array", "items": {"type": "string", "format": "binary"}}, **(extra or {})}
    schema = {"type": "object", "properties": properties, "required": [field]}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes (declared or streamed) with 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            text = f"request body over the limit of {self.limit:,} bytes" if status == 413 else "bad Content-Length"
            return await error_response(status, text)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body over the limit of {self.limit:,} bytes")
            return message

        return await self.app(scope, limited, send)


class Measure:
    """ASGI middleware: every answer into the metrics, labelled by its route template. (A plain
    ASGI wrapper, not Starlette's BaseHTTPMiddleware, whose extra task per request costs latency.)"""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status[0], time.perf_counter() - start)


def create_app(service: IndexService, keys: KeyStore, *, public_read: bool = False) -> FastAPI:
    """The ASGI app serving `service`. Reads need a key of scope read (or write) unless
    `public_read`; writes always need a write key."""
    options = service.options
    metrics = Metrics(lambda: len(service.view()) if service.ready else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="copyseek",
        version=__version__,
        description="Find modified copies of images in a reference index.",
        docs_url=None,  # Swagger UI would load its script from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Measure, metrics=metrics)
    app.add_middleware(BodyLimit, limit=options.max_request_bytes)
    bearer = HTTPBearer(auto_error=False, description="an API key made with `copyseek serve keys add`")

    # ----------------------------------------------------------------- plumbing
    def need(scope: str) -> Callable:
        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
            if scope == "read" and public_read:
                return
            if credentials is None:
                raise ApiError(401, f"this endpoint needs an API key of scope {scope} (Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"})
            key = keys.find(credentials.credentials)
            if key is None:
                raise ApiError(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
            if not key.allows(scope):
                raise ApiError(403, f"the key {key.name!r} has scope {key.scope}; this endpoint needs {scope}")

        return check

    read, write = Depends(need("read")), Depends(need("write"))

    async def call(function: Callable[..., T], *args) -> T:
        """Run blocking work on a thread, within the request time limit."""
        if not service.ready:
            raise ApiError(503, service.load_error or "the index is still loading")
        try:
            return await asyncio.wait_for(run_in_threadpool(function, *args), options.timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, f"the request took longer than the limit of {options.timeout:g} s") from None

    async def read_images(request: Request, field: str, many: bool) -> tuple[list[Upload], dict]:
        """The uploaded images (multipart field `field`, or the raw body) and the other form fields."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=options.max_batch, max_fields=16)
            items = form.getlist(field)
            if not items:
                raise ApiError(400, f"no {field!r} file in the form")
            if not many and len(items) > 1:
                raise ApiError(400, f"one {field!r} file only (use the batch endpoint for more)")
            uploads = []
            for item in items:
                if not isinstance(item, UploadFile):
                    raise ApiError(400, f"form field {field!r} must be a file, not text")
                uploads.append(Upload(await read_limited(item), item.filename or field))
            others = {k: v for k, v in form.multi_items() if k != field and isinstance(v, str)}
            return uploads, others
        if many:
            raise ApiError(415, f"send the images as multipart/form-data (field {field!r}, once per image)")
        # anything else is the image's raw bytes, whatever it says it is (curl --data-binary sends
        # application/x-www-form-urlencoded); the image check decides
        return [Upload(await request.body(), "body")], {}

    async def read_limited(item: UploadFile) -> bytes:
        data = await item.read(options.max_upload_bytes + 1)
        if len(data) > options.max_upload_bytes:
            raise ApiError(413, f"{item.filename}: over the upload limit of {options.max_upload_bytes:,} bytes")
        return data

    # ----------------------------------------------------------------- errors and metrics
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(CopyseekError)
    async def on_copyseek_error(request: Request, exc: CopyseekError):
        status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)), 400)
        return error_response(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError):
        problems = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ())[1:]) or "request", e.get("msg", "invalid")) for e in exc.errors()]
        return error_response(400, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # ----------------------------------------------------------------- routes
    @app.get("/healthz", tags=["service"], summary="alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="ready to match (503 while the index loads)")
    async def readyz():
        if service.ready:
            return {"status": "ready", "references": len(service.view())}
        return error_response(503, service.load_error or "the index is still loading")

    @app.get("/v1/info", tags=["service"], dependencies=[read], summary="the index and the service's limits")
    async def info() -> dict:
        return await call(service.info)

    @app.get("/metrics", tags=["service"], dependencies=[read], summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, media_type = metrics.render()
        return Response(body, media_type=media_type)

    @app.post("/v1/match", tags=["match"], dependencies=[read], openapi_extra={"requestBody": IMAGE_BODY}, summary="match one image")
    async def match_one(
        request: Request,
        k: Annotated[int, Query(ge=1, le=100, description="matches to return at most")] = 10,
        threshold: Annotated[float | None, Query(description="verdict threshold (default: the service's)")] = None,
        descriptor: Annotated[bool, Query(description="also return the query's global descriptor")] = False,
    ) -> JSONResponse:
        uploads, _ = await read_images(request, "image", many=False)
        answer = await call(service.match, uploads, k, descriptor)
        outcome = answer.queries[0]
        if outcome.error:
            raise ApiError(422, outcome.error)
        # JSONResponse directly: the answer is plain JSON already, FastAPI's re-encoding costs per request
        return JSONResponse({**query_json(outcome, threshold if threshold is not None else service.threshold), "timings": answer.timings, "references": answer.references})

    @app.post("/v1/match/batch", tags=["match"], dependencies=[read], openapi_extra={"requestBody": images_body("images")}, summary="match up to max_batch images")
    async def match_batch(
        request: Request,
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        threshold: Annotated[float | None, Query()] = None,
        descriptor: Annotated[bool, Query()] = False,
    ) -> JSONResponse:
        uploads, _ = await read_images(request, "images", many=True)
        answer = await call(service.match, uploads, k, descriptor)
        cut = threshold if threshold is not None else service.threshold
        return JSONResponse({"results": [query_json(o, cut) for o in answer.queries], "timings": answer.timings, "references": answer.references})

    @app.post(
        "/v1/references",
        tags=["references"],
        dependencies=[write],
        openapi_extra={"requestBody": images_body("images", {"ids": {"type": "string", "description": "comma-separated ids, one per image (default: file names without extension)"}})},
        summary="add reference images",
    )
    async def add_references(request: Request) -> dict:
        uploads, fields = await read_images(request, "images", many=True)
        ids = [i.strip() for i in fields["ids"].split(",")] if fields.get("ids") else None
        return await call(service.add, uploads, ids)

    @app.get("/v1/references", tags=["references"], dependencies=[read], summary="list references")
    async def list_references(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        prefix: Annotated[str, Query(max_length=128)] = "",
    ) -> dict:
        view = await call(service.view)
        chosen = [i for i in view.live_ids if i.startswith(prefix)] if prefix else view.live_ids
        rows = [view.references[i] for i in chosen[offset : offset + limit]]
        return {"total": len(chosen), "offset": offset, "references": [reference_json(r) for r in rows]}

    ReferenceId = Annotated[str, Path(max_length=128, description="a reference id")]

    @app.get("/v1/references/{reference_id}", tags=["references"], dependencies=[read], summary="one reference")
    async def get_reference(reference_id: ReferenceId) -> dict:
        return reference_json(await call(service.reference, reference_id))

    @app.get("/v1/references/{reference_id}/image", tags=["references"], dependencies=[read], summary="a reference's image file")
    async def reference_image(reference_id: ReferenceId):
        info = await call(service.reference, reference_id)
        try:
            return FileResponse(info.path)
        except OSError:
            raise ApiError(404, f"the image file of {reference_id!r} is gone: {info.path}") from None

    @app.delete("/v1/references/{reference_id}", tags=["references"], dependencies=[write], summary="remove a reference")
    async def remove_reference(reference_id: ReferenceId) -> dict:
        return await call(service.remove, reference_id)

    @app.post(
        "/v1/explain",
        tags=["match"],
        dependencies=[read],
        openapi_extra={"requestBody": IMAGE_BODY},
        responses={200: {"content": {"image/png": {}}}},
        summary="the explain picture of a query against one reference (PNG)",
    )
    async def explain(request: Request, reference: Annotated[str, Query(max_length=128)]) -> Response:
        uploads, _ = await read_images(request, "image", many=False)
        return Response(await call(service.explain, uploads[0], reference), media_type="image/png")

    # ----------------------------------------------------------------- the page
    static = resources.files("copyseek.service") / "static"

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text())

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def query_json(outcome, threshold: float) -> dict:
    """One query's answer with the verdict at `threshold`: the matches at or above it, or the
    nearest miss (the best match below it)."""
    above = [m for m in outcome.matches if m["score"] >= threshold]
    out = {
        "name": outcome.name,
        "matches": outcome.matches,
        "threshold": threshold,
        "verdict": "copy" if above else "no match",
        "nearest_miss": None if above or not outcome.matches else outcome.matches[0],
    }
    if outcome.error:
        out["error"] = outcome.error
    if outcome.descriptor is not None:
        out["descriptor"] = outcome.descriptor
    return out


def reference_json(info) -> dict:
    return {"id": info.id, "path": info.path, "sha1": info.sha1, "bytes": info.bytes, "row": info.row}
