"""Access control of the API: API keys (a JSON file of SHA-256 hashes and scopes), PII masking, and the
access log of PII reads (JSON lines)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("profiles:read", "audiences:read", "pii:read", "sql:read")  # sql:read: the BI SQL endpoint (serving/sql/)
PII_ATTRIBUTES = ("name", "phone", "email", "birthday")  # profile attributes masked without pii:read
PII_ID_TYPES = ("phone", "email")  # identifier types whose values are masked without pii:read
PII_SCOPE = "pii:read"  # reads phones, e-mails, names and birthdays in plaintext (API, SQL endpoint, cdp whois --show-pii)
KEY_PREFIX = "cdp_"


class KeyFileError(ValueError):
    """The API key file cannot be read or names an unknown scope; the message says what to fix."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are 32 random bytes, so a plain SHA-256 cannot be brute-forced and
    needs no slow KDF (as for GitHub's or Stripe's tokens)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The API keys of `path` ({"keys": [{"name", "sha256", "scopes"}]}), re-read when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, ApiKey]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        with self._lock:
            if mtime != self._mtime:
                self._keys = _read_keys(self.path)
                self._mtime = mtime
            return self._keys

    def check(self, key: str | None) -> ApiKey | None:
        """The key's name and scopes, or None for a missing or unknown key."""
        if not key:
            return None
        digest = hash_key(key)
        for stored, api_key in self._load().items():
            if hmac.compare_digest(stored, digest):
                return api_key
        return None


def _read_keys(path: Path) -> dict[str, ApiKey]:
    try:
        data = json.loads(path.read_text())
        out = {}
        for entry in data.get("keys", []):
            bad = set(entry["scopes"]) - set(SCOPES)
            if bad:
                raise KeyFileError(f"{path}: key {entry['name']!r} has unknown scope(s) {sorted(bad)}; scopes are {', '.join(SCOPES)}")
            out[entry["sha256"]] = ApiKey(entry["name"], frozenset(entry["scopes"]))
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, KeyFileError):
            raise
        raise KeyFileError(f"{path} is not an API key file ({e}): create keys with `cdp api-key add`") from e


def add_key(path: Path, name: str, scopes: list[str]) -> str:
    """Create a key named `name` with `scopes` in the key file (replacing one of that name); returns the
    key itself, which is shown once and stored only as its hash."""
    bad = set(scopes) - set(SCOPES)
    if bad or not scopes:
        raise KeyFileError(f"unknown or no scope(s) {sorted(bad)}; scopes are {', '.join(SCOPES)}")
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"keys": []}
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    data["keys"] = [k for k in data["keys"] if k["name"] != name] + [
        {"name": name, "sha256": hash_key(key), "scopes": sorted(set(scopes)),
         "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return key


# --- masking ------------------------------------------------------------------------------------------

def mask_phone(value: str) -> str:
    """`+8613912345678` -> `+86139****5678`, `13912345678` -> `139****5678`: the last four digits and the
    three before the hidden four stay."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:-8] + "****" + value[-4:]


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


def mask_name(value: str) -> str:
    return value[:1] + "*" * max(len(value) - 1, 1)


def mask_birthday(value: str) -> str:
    return value[:4] + "-**-**"


_MASKS = {"phone": mask_phone, "email": mask_email, "name": mask_name, "birthday": mask_birthday}


def mask(kind: str, value):
    """`value` of PII `kind` masked (None stays None)."""
    return None if value is None else _MASKS[kind](str(value))


def masked_profile(doc: dict) -> dict:
    """A copy of a profile document with every PII attribute and identifier masked."""
    out = dict(doc)
    out["profile"] = {a: ({**v, "value": mask(a, v["value"])} if a in PII_ATTRIBUTES else v) for a, v in doc["profile"].items()}
    out["identifiers"] = [({**i, "value": mask(i["type"], i["value"])} if i["type"] in PII_ID_TYPES else i)
                          for i in doc["identifiers"]]
    return out


class AccessLog:
    """Appends one JSON line per PII read: who (the key's name), when, which person, by which request."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, who: str, person_ids: list[str], request: str) -> None:
        at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        lines = "".join(json.dumps({"at": at, "key": who, "person_id": p, "request": request}) + "\n" for p in person_ids)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
