"""HTTP API for operators and the console: incidents, acknowledge, resolve, statistics.

OpenAPI at ``/openapi.json`` (docs at ``/docs``). Every route but ``/health`` and
``/metrics`` (Prometheus text format) needs ``Authorization: Bearer <token>``. Acknowledging
and resolving name the person; resolving needs a note, because closing the loop means saying
what was done.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from central.incidents.aggregator import Aggregator
from central.incidents.book import LifecycleError, Status
from central.incidents.ops import CommandTimeout, LocalOps, Ops, utc_day


class Acknowledge(BaseModel):
    by: str = Field(min_length=1, max_length=100, description="who acknowledges")


class Resolve(BaseModel):
    by: str = Field(min_length=1, max_length=100, description="who resolves")
    note: str = Field(min_length=1, max_length=4000, description="what was done")


class ModeChange(BaseModel):
    mode: str | None = Field(description="an emergency mode from the config, or null for "
                                         "the normal plans")
    by: str = Field(min_length=1, max_length=100, description="who switches")


class ModeControl(Protocol):
    """The emergency plan set: read and switched at runtime (shared by every worker)."""

    def current_mode(self) -> str | None: ...

    def available_modes(self) -> list[str]: ...

    def switch_mode(self, mode: str | None, who: str) -> None: ...


def create_app(aggregator: Aggregator, token: str, *,
               registry: CollectorRegistry | None = None, ops: Ops | None = None,
               modes: ModeControl | None = None) -> FastAPI:
    """The API bound to one aggregator; ``token`` is the shared bearer token.

    ``ops`` answers for incidents (default: this aggregator's own book; a scaled-out central
    passes ``central.incidents.ops.IncidentOps``, which sees every worker's incidents and routes
    changes to their owner). ``modes`` enables ``/mode``. ``/metrics`` serves ``registry``: by
    default the one the aggregator's metrics live in, else the process-wide ``REGISTRY``.
    """
    ops = ops if ops is not None else LocalOps(aggregator)
    if len(token) < 16:
        raise ValueError("the API token must be at least 16 characters")
    app = FastAPI(title="perimeter central", version="1",
                  description="Incidents from perimeter alarms, kept until a person "
                              "resolves them.")
    bearer = HTTPBearer(auto_error=False)

    # A default rather than Annotated: the local ``bearer`` is invisible to FastAPI's
    # resolution of postponed annotations, which would make ``cred`` a query parameter.
    def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    Auth = Depends(auth)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness for probes: answered from memory, so it stays cheap and answers
        "degraded" (not an error) while Redis is down. ``incidents_open`` counts the
        incidents this worker holds (all of them unless the central is scaled out)."""
        try:
            redis_ok = bool(aggregator.store.r.ping())
        except Exception:
            redis_ok = False
        return {"status": "ok" if redis_ok else "degraded", "redis": redis_ok,
                "incidents_open": sum(1 for i in aggregator.incidents()
                                      if i.status is not Status.RESOLVED),
                "messages": dict(aggregator.counts)}

    scraped = registry if registry is not None else (
        aggregator.metrics.registry if aggregator.metrics is not None else REGISTRY)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text format; no token, like ``/health`` (bind the API to a trusted
        network)."""
        return Response(generate_latest(scraped), media_type=CONTENT_TYPE_LATEST)

    @app.get("/incidents", dependencies=[Auth])
    def list_incidents(status: Status | None = None, zone: str | None = None,
                       site: str | None = None, kind: str | None = None,
                       since: float | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        out = []
        for inc in ops.incidents():
            if ((status and inc["status"] != status.value) or (zone and inc["zone"] != zone)
                    or (site and inc["site"] != site) or (kind and kind not in inc["kinds"])
                    or (since is not None and inc["last_activity"] < since)):
                continue
            out.append(inc)
            if len(out) >= limit:
                break
        return out

    @app.get("/incidents/{incident_id}", dependencies=[Auth])
    def get_incident(incident_id: str) -> dict[str, Any]:
        try:
            inc = ops.get(incident_id)
        except KeyError:
            raise HTTPException(404, f"no incident {incident_id}") from None
        return {**inc, "events": aggregator.store.events(incident_id)}

    def lifecycle(fn: Any, incident_id: str, *args: str) -> dict[str, Any]:
        try:
            return dict(fn(incident_id, *args))
        except KeyError:
            raise HTTPException(404, f"no incident {incident_id}") from None
        except LifecycleError as exc:
            raise HTTPException(409, str(exc)) from None
        except CommandTimeout as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "2"}) from None

    @app.post("/incidents/{incident_id}/acknowledge", dependencies=[Auth])
    def acknowledge(incident_id: str, body: Acknowledge) -> dict[str, Any]:
        return lifecycle(ops.acknowledge, incident_id, body.by)

    @app.post("/incidents/{incident_id}/resolve", dependencies=[Auth])
    def resolve(incident_id: str, body: Resolve) -> dict[str, Any]:
        return lifecycle(ops.resolve, incident_id, body.by, body.note)

    if modes is not None:
        control = modes

        @app.get("/mode", dependencies=[Auth])
        def get_mode() -> dict[str, Any]:
            """The emergency plan set in force (null: the normal plans)."""
            return {"mode": control.current_mode(), "available": control.available_modes()}

        @app.put("/mode", dependencies=[Auth])
        def put_mode(body: ModeChange) -> dict[str, Any]:
            """Switch every worker to an emergency plan set (typhoon, flood, cold wave) or
            back (``mode: null``); the switch is logged with who made it."""
            if body.mode is not None and body.mode not in control.available_modes():
                raise HTTPException(422, f"no emergency mode {body.mode!r} "
                                         f"(have: {control.available_modes()})")
            control.switch_mode(body.mode, body.by)
            return {"mode": control.current_mode(), "available": control.available_modes()}

    @app.get("/stats", dependencies=[Auth])
    def stats(days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
        """Incidents per zone and day (UTC): the input for grading zones high/medium/low."""
        since = aggregator.clock() - days * 86400
        per: Counter[tuple[str, str, str]] = Counter()
        for inc in ops.incidents():
            day = utc_day(inc["opened_at"])  # None: a time no real incident has (old data)
            if day is not None and inc["opened_at"] >= since:
                per[(inc["site"], inc["zone"], day)] += 1
        return {"days": days, "per_zone_day": [
            {"site": s, "zone": z, "day": d, "incidents": n}
            for (s, z, d), n in sorted(per.items())]}

    return app
