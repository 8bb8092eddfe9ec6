"""API keys of a served index: random bearer tokens, stored only as SHA-256 hashes in the index folder.

`INDEX/service-keys.json` holds, per key, its name, scope and hash. The token itself is printed once
when the key is made (`copyseek serve keys add --scope write`) and never stored: a copy of the index
folder does not leak working keys. Tokens are 32 random bytes, so a plain (unsalted) SHA-256 is enough
to make them unguessable from their hash, and a lookup is one dictionary access.

Scopes: `read` (match, explain, info, reference lookups) and `write` (also add and remove references).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from copyseek.errors import CopyseekError
from copyseek.store.files import atomic_write

KEYS_FILE = "service-keys.json"
SCOPES = ("read", "write")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the token, only its hash."""

    name: str
    scope: str
    sha256: str
    created: float

    def allows(self, scope: str) -> bool:
        """A write key may also read."""
        return self.scope == "write" or scope == "read"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    """The keys of one index folder. Reads the file once; `add`/`remove` rewrite it atomically."""

    def __init__(self, index_path: str | os.PathLike):
        self.path = Path(index_path) / KEYS_FILE
        self._stamp = self._file_stamp()
        self._keys: dict[str, ApiKey] = {key.sha256: key for key in self._load()}

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
            return stat.st_mtime_ns, stat.st_ino
        except OSError:
            return None

    def refresh(self) -> None:
        """Re-read the file if it changed (keys added or revoked by `copyseek serve keys` while
        the service runs take effect at the next request). A damaged file keeps the known keys."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            try:
                self._keys = {key.sha256: key for key in self._load()}
                self._stamp = stamp
            except CopyseekError:
                pass

    def _load(self) -> list[ApiKey]:
        if not self.path.exists():
            return []
        try:
            rows = json.loads(self.path.read_text())["keys"]
            return [ApiKey(**row) for row in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CopyseekError(f"cannot read the API keys in {self.path}: {exc}") from None

    def _save(self) -> None:
        text = json.dumps({"keys": [asdict(k) for k in self._keys.values()]}, indent=1)
        atomic_write(self.path, lambda handle: handle.write(text.encode()))
        os.chmod(self.path, 0o600)
        self._stamp = self._file_stamp()

    @property
    def keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: k.created)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, scope: str, name: str | None = None) -> str:
        """Make a key; returns its token (shown once, never stored)."""
        if scope not in SCOPES:
            raise CopyseekError(f"unknown key scope {scope!r}; choose one of {', '.join(SCOPES)}")
        name = name or f"{scope}-{len(self._keys) + 1}"
        if not _NAME.match(name):
            raise CopyseekError(f"key name {name!r}: use 1-64 letters, digits and _ . @ -")
        if any(k.name == name for k in self._keys.values()):
            raise CopyseekError(f"a key named {name!r} already exists")
        token = f"cs_{scope}_{secrets.token_urlsafe(32)}"
        key = ApiKey(name, scope, hash_token(token), time.time())
        self._keys[key.sha256] = key
        self._save()
        return token

    def remove(self, name: str) -> None:
        found = [h for h, k in self._keys.items() if k.name == name]
        if not found:
            raise CopyseekError(f"no key named {name!r} in {self.path}")
        del self._keys[found[0]]
        self._save()

    def find(self, token: str) -> ApiKey | None:
        """The key a bearer token belongs to, or None."""
        self.refresh()
        digest = hash_token(token)
        key = self._keys.get(digest)
        # the dictionary lookup already matched; compare_digest keeps the final check constant-time
        return key if key is not None and hmac.compare_digest(key.sha256, digest) else None
