"""The HTTP API (FastAPI, OpenAPI 3, under /v1): reads profiles and audiences from the online store,
definitions from config; checks API keys and scopes, masks PII and logs PII reads."""

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from serving.access import PII_ID_TYPES, PII_SCOPE, AccessLog, ApiKey, KeyRing, mask, masked_profile
from serving.export import FORMATS, ExportError, stream, tag_dataset
from serving.store import (
    NotPublishedError,
    OnlineStore,
    StoreError,
    default_store_url,
    open_store,
    serving_dir,
)
from spark_jobs.config import ID_TYPES
from spark_jobs.identity.stage import canonical_identifier
from spark_jobs.tables import TableNotFoundError

ID_KINDS = (*ID_TYPES, "person_id")
MAX_BATCH = 100
MAX_PAGE = 1000
MAX_EVENTS = 100


class IdentifierError(ValueError):
    """An identifier that does not parse; the message says why."""


def parse_identifier(text: str, phone_region: str) -> tuple[str, str]:
    """(id_type, canonical value) of `type:value`, normalised exactly as the pipeline stores it."""
    id_type, sep, raw = text.partition(":")
    if not sep:
        raise IdentifierError(f"{text!r} is not an identifier: write it as <type>:<value>, e.g. phone:13912345678; "
                              f"types are {', '.join(ID_KINDS)}")
    if id_type not in ID_KINDS:
        raise IdentifierError(f"unknown identifier type {id_type!r}: one of {', '.join(ID_KINDS)}")
    value = (raw.strip() or None) if id_type == "person_id" else canonical_identifier(id_type, raw, phone_region)
    if value is None:
        raise IdentifierError(f"{raw!r} is not a valid {id_type}")
    return id_type, value


# --- response models (the OpenAPI schema) ---------------------------------------------------------------

Scalar = bool | int | float | str | None


class Attribute(BaseModel):
    value: Scalar = Field(description="the golden value (masked without pii:read for name, phone, email, birthday)")
    source: str | None = Field(description="the source whose value won (survivorship)")


class Identifier(BaseModel):
    type: str
    value: str


class Score(BaseModel):
    score: float | None
    decile: int | None
    version: str | None
    as_of: str | None


class Membership(BaseModel):
    segment: str
    entered_on: str | None


class Profile(BaseModel):
    person_id: str
    as_of: str
    profile: dict[str, Attribute]
    age: int | None
    first_seen: str | None
    last_seen: str | None
    tenure_days: int | None
    channels: list[str]
    tags: dict[str, Scalar]
    scores: dict[str, Score]
    segments: list[Membership]
    identifiers: list[Identifier]


class Event(BaseModel):
    time: str = Field(description="when it happened, UTC, ISO 8601")
    action: str = Field(description="the event name, or `order`")
    channel: str
    id: str = Field(description="event_id or order_id")
    amount: str | None = Field(None, description="an order's amount: exact decimal text, two places (e.g. `312.80`)")


class EventsPage(BaseModel):
    identifier: str = Field(description="the identifier as looked up: type and canonical value")
    person_id: str
    as_of: str
    events: list[Event] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ProfileAnswer(BaseModel):
    identifier: str = Field(description="the identifier as looked up: type and canonical value")
    as_of: str
    profile: Profile


class BatchRequest(BaseModel):
    identifiers: list[str] = Field(min_length=1, max_length=MAX_BATCH, description=f"up to {MAX_BATCH} `type:value` identifiers")


class BatchItem(BaseModel):
    identifier: str = Field(description="as given")
    status: str = Field(description="found | not_found | invalid")
    error: str | None = None
    profile: Profile | None = None


class BatchAnswer(BaseModel):
    as_of: str | None
    results: list[BatchItem]


class MembershipAnswer(BaseModel):
    segment: str
    identifier: str
    person_id: str
    member: bool
    entered_on: str | None
    as_of: str


class Member(BaseModel):
    person_id: str
    entered_on: str | None


class MembersPage(BaseModel):
    segment: str
    as_of: str
    members: list[Member]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Audience(BaseModel):
    name: str
    description: str
    members: int | None = Field(description="members in the published snapshot; null when not published")


class AudienceList(BaseModel):
    as_of: str | None
    audiences: list[Audience]


class Health(BaseModel):
    status: str
    as_of: str | None
    people: int | None


class ErrorBody(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 503)}


def _cursor(as_of: str, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([as_of, after]).encode()).decode().rstrip("=")


def _uncursor(text: str, offset: bool = False) -> tuple[str, str]:
    """(as-of date, position) of a cursor `_cursor` made; `offset`: the position must be a page offset."""
    try:
        as_of, after = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(as_of, str) and isinstance(after, str) and (after.isdigit() or not offset):
            return as_of, after
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        pass
    raise HTTPException(400, "cursor is not one this API returned: pass next_cursor unchanged, or no cursor for the first page")


def create_app(store: OnlineStore, keys: KeyRing, access_log: AccessLog, phone_region: str = "CN",
               tags: list[dict] | None = None, segments: list[dict] | None = None, lakehouse: str | None = None,
               pins: Callable[[], dict[str, int]] = dict) -> FastAPI:
    """The API over `store`; `tags` and `segments` are the definitions served as data (from config); the
    bulk tag export reads `lakehouse` directly, at the table versions `pins()` gives (the last complete run)."""
    app = FastAPI(title="CDP data services", version="1", openapi_url="/v1/openapi.json", docs_url="/v1/docs",
                  redoc_url=None, description="Profiles, tags and audiences of the Customer Data Platform, from the "
                  "online store that `cdp publish` fills from the gold tables. Authenticate with the X-API-Key header.")
    tags, segments = list(tags or []), list(segments or [])
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key from `cdp api-key add`")

    # The key checks are async: a sync dependency costs a thread-pool hop per request each (bench/serve.py).
    async def caller(key: Annotated[str | None, Security(header)]) -> ApiKey:
        found = keys.check(key)
        if found is None:
            raise HTTPException(401, "missing or unknown API key: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "APIKey"})
        return found

    def scoped(scope: str):
        async def check(who: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
            if scope not in who.scopes:
                raise HTTPException(403, f"the key {who.name!r} lacks the scope {scope}")
            return who

        return check

    @app.exception_handler(NotPublishedError)
    async def not_published(request: Request, e: NotPublishedError):
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(StoreError)
    async def store_down(request: Request, e: StoreError):
        return JSONResponse({"detail": str(e)}, status_code=503)

    def key_of(text: str) -> tuple[str, str]:
        try:
            id_type, value = parse_identifier(text, phone_region)
        except IdentifierError as e:
            raise HTTPException(400, str(e)) from None
        return f"{id_type}:{value}", (mask(id_type, value) if id_type in PII_ID_TYPES else value)

    def shown(doc: dict, who: ApiKey, request: str) -> dict:
        if PII_SCOPE in who.scopes:
            access_log.write(who.name, [doc["person_id"]], request)
            return doc
        return masked_profile(doc)

    def echo(key: str, masked_value: str, who: ApiKey) -> str:
        return key if PII_SCOPE in who.scopes else f"{key.split(':', 1)[0]}:{masked_value}"

    def known_segment(segment: str, meta: dict | None) -> None:
        if segment not in {s["name"] for s in segments} and segment not in ((meta or {}).get("segments") or {}):
            raise HTTPException(404, f"unknown segment {segment!r}: see /v1/audiences")

    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> dict:
        """Whether a snapshot is published, and its as-of date (no key needed)."""
        meta = store.current()
        return {"status": "ok" if meta else "empty", "as_of": meta and meta["as_of"], "people": meta and meta["people"]}

    @app.post("/v1/profiles/batch", response_model=BatchAnswer, responses=_ERRORS, tags=["profiles"])
    def profiles_batch(body: BatchRequest, who: Annotated[ApiKey, Depends(scoped("profiles:read"))]) -> dict:
        """Up to 100 profiles by any identifiers, in order, from one snapshot."""
        parsed: list[tuple[str, str] | str] = []
        for text in body.identifiers:
            try:
                id_type, value = parse_identifier(text, phone_region)
                parsed.append((id_type, value))
            except IdentifierError as e:
                parsed.append(str(e))
        wanted = [f"{p[0]}:{p[1]}" for p in parsed if isinstance(p, tuple)]
        meta, docs = store.people(wanted) if wanted else (store.current() or {}, [])
        found = iter(docs)
        results, pii = [], []
        for text, p in zip(body.identifiers, parsed, strict=True):
            if isinstance(p, str):
                results.append({"identifier": text, "status": "invalid", "error": p})
                continue
            doc = next(found)
            if doc is None:
                results.append({"identifier": text, "status": "not_found", "error": "no person has this identifier"})
                continue
            if PII_SCOPE in who.scopes:
                pii.append(doc["person_id"])
            results.append({"identifier": text, "status": "found",
                            "profile": doc if PII_SCOPE in who.scopes else masked_profile(doc)})
        if pii:
            access_log.write(who.name, pii, "POST /v1/profiles/batch")
        return {"as_of": meta.get("as_of"), "results": results}

    # Before the profile route, whose {identifier:path} would also match ".../events".
    @app.get("/v1/profiles/{identifier:path}/events", response_model=EventsPage, responses=_ERRORS, tags=["profiles"])
    def profile_events(identifier: str, who: Annotated[ApiKey, Depends(scoped("profiles:read"))],
                       limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 20,
                       cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None) -> dict:
        """The person's recent events and orders, newest first, a page at a time (gold_recent_events: the
        newest `profiles.recent_events_limit` of the last `profiles.recent_events_days` days), all pages
        from one as-of date."""
        key, masked_value = key_of(identifier)
        since, after = _uncursor(cursor, offset=True) if cursor else (None, "0")
        meta, person, events = store.events(key)
        if since is not None and since != meta["as_of"]:
            raise HTTPException(409, f"the profile was republished as of {meta['as_of']} after this cursor's {since}: "
                                     "start again without a cursor")
        if person is None:
            raise HTTPException(404, f"no person has {key.split(':', 1)[0]} {masked_value} as of {meta['as_of']}")
        start = int(after)
        page = events[start:start + limit]
        more = start + limit < len(events)
        return {"identifier": echo(key, masked_value, who), "person_id": person, "as_of": meta["as_of"], "events": page,
                "next_cursor": _cursor(meta["as_of"], str(start + limit)) if more else None}

    @app.get("/v1/profiles/{identifier:path}", response_model=ProfileAnswer, responses=_ERRORS, tags=["profiles"])
    def profile(identifier: str, who: Annotated[ApiKey, Depends(scoped("profiles:read"))]) -> Response:
        """A person's golden record (each attribute with its source), tags, scores, audiences and identifiers,
        by any identifier: `phone:13912345678`, `email:...`, `device_id:...`, `unionid:...`, `person_id:...`;
        normalised as the pipeline normalises it."""
        key, masked_value = key_of(identifier)
        meta, (doc,) = store.people([key])
        if doc is None:
            raise HTTPException(404, f"no person has {key.split(':', 1)[0]} {masked_value} as of {meta['as_of']}")
        # The document was built to the Profile schema by publish: serialised as it is, without validating it
        # into the response model again (a third of the request's CPU, bench/serve.py).
        return Response(orjson.dumps({"identifier": echo(key, masked_value, who), "as_of": meta["as_of"],
                                      "profile": shown(doc, who, f"GET /v1/profiles/{key.split(':', 1)[0]}")}),
                        media_type="application/json")

    @app.get("/v1/audiences", response_model=AudienceList, responses=_ERRORS, tags=["audiences"])
    def audiences(who: Annotated[ApiKey, Depends(scoped("audiences:read"))]) -> dict:
        """Every audience of conf/segments.yaml with its member count in the published snapshot."""
        meta = store.current() or {}
        counts = meta.get("segments") or {}
        names = [s["name"] for s in segments] + sorted(set(counts) - {s["name"] for s in segments})
        described = {s["name"]: s.get("description") or "" for s in segments}
        return {"as_of": meta.get("as_of"),
                "audiences": [{"name": n, "description": described.get(n, ""), "members": counts.get(n)} for n in names]}

    @app.get("/v1/audiences/{segment}/members", response_model=MembersPage, responses=_ERRORS, tags=["audiences"])
    def audience_members(segment: str, who: Annotated[ApiKey, Depends(scoped("audiences:read"))],
                         limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                         cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None) -> dict:
        """The audience's members in person-id order, a page at a time, all pages from one as-of date."""
        since, after = _uncursor(cursor) if cursor else (None, None)
        meta, rows = store.members(segment, after, limit + 1)
        known_segment(segment, meta)
        if since is not None and since != meta["as_of"]:
            raise HTTPException(409, f"the audience was republished as of {meta['as_of']} after this cursor's "
                                     f"{since}: start again without a cursor")
        page = rows[:limit]
        more = len(rows) > limit
        return {"segment": segment, "as_of": meta["as_of"],
                "members": [{"person_id": m.person_id, "entered_on": m.entered_on} for m in page],
                "next_cursor": _cursor(meta["as_of"], page[-1].person_id) if more else None}

    @app.get("/v1/audiences/{segment}/members/{identifier:path}", response_model=MembershipAnswer, responses=_ERRORS,
             tags=["audiences"])
    def audience_member(segment: str, identifier: str, who: Annotated[ApiKey, Depends(scoped("audiences:read"))]) -> dict:
        """Is the person with this identifier in the audience today? With the day they entered it."""
        key, masked_value = key_of(identifier)
        meta, person, entered = store.membership(segment, key)
        known_segment(segment, meta)
        if person is None:
            raise HTTPException(404, f"no person has {key.split(':', 1)[0]} {masked_value} as of {meta['as_of']}")
        return {"segment": segment, "identifier": echo(key, masked_value, who), "person_id": person,
                "member": entered is not None, "entered_on": entered, "as_of": meta["as_of"]}

    binary = {"schema": {"type": "string", "format": "binary"}}

    @app.get("/v1/tags/export", response_class=StreamingResponse, tags=["tags"],
             responses={200: {"description": "the tag table", "content": {t: binary for t in FORMATS.values()}}, **_ERRORS})
    def tags_export(who: Annotated[ApiKey, Depends(scoped("profiles:read"))],
                    as_of: Annotated[dt.date | None, Query(description="default: the newest")] = None,
                    format: Literal["parquet", "arrow"] = "parquet",
                    shape: Annotated[Literal["wide", "long"], Query(description="wide: a column per tag (the newest "
                                     "as-of date only); long: person_id, tag, value, value_type (any as-of date)")] = "wide",
                    ) -> StreamingResponse:
        """The whole tag table of an as-of date, streamed as Parquet or Arrow IPC, read from the Delta table
        itself (no copy)."""
        if lakehouse is None:
            raise HTTPException(503, "this server has no lakehouse to export from")
        try:
            day, dataset = tag_dataset(lakehouse, as_of, shape, pins())
        except ExportError as e:
            raise HTTPException(404, str(e)) from None
        except TableNotFoundError as e:
            raise HTTPException(503, str(e)) from None
        ext = "parquet" if format == "parquet" else "arrows"
        return StreamingResponse(stream(dataset, format), media_type=FORMATS[format], headers={
            "Content-Disposition": f'attachment; filename="tags_{shape}_{day}.{ext}"', "X-As-Of": str(day)})

    @app.get("/v1/definitions/segments", responses=_ERRORS, tags=["definitions"])
    def segment_definitions(who: Annotated[ApiKey, Depends(caller)]) -> list[dict]:
        """The segment definitions of conf/segments.yaml, as data."""
        return segments

    @app.get("/v1/definitions/tags", responses=_ERRORS, tags=["definitions"])
    def tag_definitions(who: Annotated[ApiKey, Depends(caller)]) -> list[dict]:
        """The tag definitions of conf/tags.yaml, as data."""
        return tags

    return app


def app_from_config(cfg, store_url: str | None = None, keys_path: Path | None = None) -> FastAPI:
    """The API of a CDP config: the store at `store_url` (default: the lakehouse's embedded one), keys and
    access log under <lakehouse>/_serving/."""
    root = cfg.paths.lakehouse_uri()
    serving = serving_dir(root)
    store = open_store(store_url or default_store_url(root))
    from spark_jobs.runs import pinned_versions

    return create_app(store, KeyRing(keys_path or serving / "api_keys.json"), AccessLog(serving / "access.log"),
                      cfg.standardise.phone_region,
                      tags=[t.model_dump(mode="json") for t in cfg.tags.tags],
                      segments=[s.model_dump(mode="json") for s in cfg.segments.segments],
                      lakehouse=root, pins=lambda: pinned_versions(cfg))



def run_app(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run `app` on uvicorn until interrupted, as `cdp serve` does (bench/serve.py runs it the same way)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info",
                access_log=False)  # request lines carry identifiers (PII); PII reads go to the access log


def serve(cfg, host: str = "127.0.0.1", port: int = 8000, store_url: str | None = None, keys_path: Path | None = None) -> None:
    """Run the API on uvicorn until interrupted."""
    run_app(app_from_config(cfg, store_url, keys_path), host, port)
