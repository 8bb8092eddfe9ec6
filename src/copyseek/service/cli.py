"""`copyseek serve`: the HTTP matching service and its API keys."""

from __future__ import annotations

import argparse
import ipaddress

from copyseek.errors import CopyseekError

DESCRIPTION = """Serve an index over HTTP: matching (one image or a batch), adding and removing
references, explain pictures, Prometheus metrics, an OpenAPI schema (/openapi.json) and a review page
at /. Models and searchers stay warm in this one process; writes are serialised and committed with
the index's crash-safe protocol while matches go on.

Reads need an API key of scope read (or write) unless --public-read; writes always need a write key.
The service refuses to listen beyond loopback while the index has no keys."""

EXAMPLES = """examples:
  copyseek serve --index refs.idx --public-read                 # http://127.0.0.1:8080/
  curl -F image=@query.jpg http://127.0.0.1:8080/v1/match
  copyseek serve keys add --index refs.idx --scope write         # prints the key once
  curl -H "Authorization: Bearer KEY" -F images=@new.jpg http://127.0.0.1:8080/v1/references
"""


def add_parser(subparsers) -> None:
    """Add the `serve` command (and `serve keys`) to the main CLI's sub-parsers."""
    p = subparsers.add_parser(
        "serve",
        help="serve an index over HTTP (matching API, review page, API keys)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--index", metavar="INDEX_DIR", help="the index to serve (required)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--public-read", action="store_true", help="matching and reading need no key (writes still do)")
    p.add_argument("--threshold", type=float, default=None, help="score at which a match is called a copy (default: per pipeline)")
    p.add_argument("--background", default=None, metavar="DIR", help="normalise scores against this background folder (as match --background)")
    p.add_argument("--collapse-versions", action="store_true",
                   help="answer with each query's best reference of every group of versions only (as match --collapse-versions)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default 20 MB)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest image accepted (default 40 MP)")
    p.add_argument("--max-batch", type=int, default=64, help="images per batch request at most (default 64)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (default 60)")
    p.add_argument("--threads", type=int, default=0, help="model threads; 0 = all cores (default)")
    p.set_defaults(run=run_serve)

    keys = p.add_subparsers(dest="serve_command", metavar="COMMAND")
    k = keys.add_parser("keys", help="manage the API keys stored (hashed) in the index folder")
    key_commands = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = key_commands.add_parser("add", help="make a key and print it (it is shown only once)")
    add.add_argument("--index", required=True, metavar="INDEX_DIR")
    add.add_argument("--scope", required=True, choices=("read", "write"), help="read: match and look up; write: also add and remove")
    add.add_argument("--name", default=None, help="a name to recognise the key by (default SCOPE-N)")
    add.set_defaults(run=run_keys_add)
    listing = key_commands.add_parser("list", help="list the keys' names and scopes")
    listing.add_argument("--index", required=True, metavar="INDEX_DIR")
    listing.set_defaults(run=run_keys_list)
    remove = key_commands.add_parser("remove", help="revoke a key by name")
    remove.add_argument("--index", required=True, metavar="INDEX_DIR")
    remove.add_argument("name")
    remove.set_defaults(run=run_keys_remove)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    if not args.index:
        raise CopyseekError("--index INDEX_DIR is required")
    try:
        import uvicorn

        from copyseek.service.app import create_app
    except ModuleNotFoundError as exc:
        raise CopyseekError(f"copyseek serve needs the serve extra ({exc.name} is missing): pip install 'copyseek[serve]'") from None
    from copyseek.service.engine import IndexService, ServiceOptions
    from copyseek.service.keys import KeyStore
    from copyseek.store.index import Index

    Index.open(args.index).close()  # a wrong path is a clear error now, not a failed readiness later
    keys = KeyStore(args.index)
    if not is_loopback(args.host) and not len(keys):
        raise CopyseekError(
            f"refusing to listen on {args.host} (beyond loopback) while {args.index} has no API keys: "
            f"make one with `copyseek serve keys add --index {args.index} --scope read`"
        )
    options = ServiceOptions(
        threshold=args.threshold,
        background=args.background,
        max_upload_bytes=int(args.max_upload_mb * 1e6),
        max_request_bytes=int(args.max_upload_mb * 1e6 * min(args.max_batch, 5)),
        max_pixels=int(args.max_megapixels * 1e6),
        max_batch=args.max_batch,
        timeout=args.timeout,
        collapse_versions=args.collapse_versions,
    )
    service = IndexService(args.index, options, runtime={"threads": args.threads})
    app = create_app(service, keys, public_read=args.public_read)
    access = "reads public, writes need a key" if args.public_read else f"{len(keys)} API key(s)"
    print(f"copyseek serve: {args.index} on http://{args.host}:{args.port}/ ({access})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=5)
    return 0


def run_keys_add(args: argparse.Namespace) -> int:
    from copyseek.service.keys import KeyStore
    from copyseek.store.index import Index

    Index.open(args.index).close()  # keys belong in an index folder, not in a typo
    token = KeyStore(args.index).add(args.scope, args.name)
    print(token)
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    from copyseek.service.keys import KeyStore

    for key in KeyStore(args.index).keys:
        print(f"{key.name}\t{key.scope}")
    return 0


def run_keys_remove(args: argparse.Namespace) -> int:
    from copyseek.service.keys import KeyStore

    KeyStore(args.index).remove(args.name)
    print(f"removed key {args.name}")
    return 0
