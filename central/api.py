"""HTTP API for operators and the console: incidents, acknowledge, resolve, statistics.

Every route but ``/health`` (which then says only ok or degraded) needs a signed-in person
(session cookie) or an API key (``Authorization: Bearer <key>``), checked before the body is
read, and the route's role (``central.auth``): a viewer reads incidents, statistics, the mode,
``/metrics``, ``/openapi.json`` and ``/docs``; an operator also acknowledges and resolves; a
supervisor also switches the emergency mode; an admin also manages accounts. Who acts is the
authenticated caller, never a name in the body; a caller limited to some sites sees and
closes only their incidents. Resolving needs a note, because closing the loop means saying
what was done.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from central.auth import Accounts, Guard, Principal, Role, caller, maybe_caller, needs, secured_app
from central.incidents.aggregator import Aggregator
from central.incidents.book import LifecycleError, Status
from central.incidents.ops import CommandTimeout, LocalOps, Ops, utc_day


class Body(BaseModel):
    """Request bodies refuse unknown fields: a ``by`` sent by an old client is an error, not
    a name silently ignored (who acts is whoever signed in)."""

    model_config = ConfigDict(extra="forbid")


class Acknowledge(Body):
    """Nothing to say: who acknowledges is whoever signed in (an empty body is fine)."""


class Resolve(Body):
    note: str = Field(min_length=1, max_length=4000, description="what was done")


class ModeChange(Body):
    mode: str | None = Field(description="an emergency mode from the config, or null for "
                                         "the normal plans")


Caller = Annotated[Principal, Depends(caller)]


class ModeControl(Protocol):
    """The emergency plan set: read and switched at runtime (shared by every worker)."""

    def current_mode(self) -> str | None: ...

    def available_modes(self) -> list[str]: ...

    def switch_mode(self, mode: str | None, who: str) -> None: ...


def create_app(aggregator: Aggregator, accounts: Accounts | Guard, *,
               registry: CollectorRegistry | None = None, ops: Ops | None = None,
               modes: ModeControl | None = None) -> FastAPI:
    """The API bound to one aggregator; callers are identified by ``accounts`` (or a
    ``Guard`` around them, to set its throttle or cookie policy).

    ``ops`` answers for incidents (default: this aggregator's own book; a scaled-out central
    passes ``central.incidents.ops.IncidentOps``, which sees every worker's incidents and routes
    changes to their owner). ``modes`` enables ``/mode``. ``/metrics`` serves ``registry``: by
    default the one the aggregator's metrics live in, else the process-wide ``REGISTRY``.
    """
    ops = ops if ops is not None else LocalOps(aggregator)
    guard = accounts if isinstance(accounts, Guard) else Guard(accounts)
    app = secured_app(guard, title="perimeter central", version="1",
                      description="Incidents from perimeter alarms, kept until a person "
                                  "resolves them.")
    viewer, operator = needs(Role.VIEWER), needs(Role.OPERATOR)

    @app.get("/health")
    def health(who: Principal | None = Depends(maybe_caller)) -> dict[str, Any]:  # noqa: B008
        """Liveness for probes, without sign-in: only ``ok`` or ``degraded`` (Redis down).
        A signed-in caller also gets the counts: open incidents this worker holds (all of
        them unless the central is scaled out) and messages by result. Answered from memory,
        so it stays cheap and answers while Redis is down."""
        try:
            redis_ok = bool(aggregator.store.r.ping())
        except Exception:
            redis_ok = False
        status = {"status": "ok" if redis_ok else "degraded"}
        if who is None:
            return status
        return {**status, "redis": redis_ok,
                "incidents_open": sum(1 for i in aggregator.incidents()
                                      if i.status is not Status.RESOLVED),
                "messages": dict(aggregator.counts)}

    scraped = registry if registry is not None else (
        aggregator.metrics.registry if aggregator.metrics is not None else REGISTRY)

    @app.get("/metrics", include_in_schema=False, openapi_extra=viewer)
    def metrics() -> Response:
        """Prometheus text format, for a viewer key (Prometheus sends it as
        ``authorization: {credentials: ...}``): zone names are site layout."""
        return Response(generate_latest(scraped), media_type=CONTENT_TYPE_LATEST)

    def visible(who: Principal, incident_id: str) -> dict[str, Any]:
        """The incident if the caller may see its site; 404 alike for unknown and hidden."""
        try:
            inc = ops.get(incident_id)
        except KeyError:
            raise HTTPException(404, f"no incident {incident_id}") from None
        if not who.sees(inc["site"]):
            raise HTTPException(404, f"no incident {incident_id}")
        return inc

    @app.get("/incidents", openapi_extra=viewer)
    def list_incidents(who: Caller, status: Status | None = None, zone: str | None = None,
                       site: str | None = None, kind: str | None = None,
                       since: float | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        out = []
        for inc in ops.incidents():
            if ((status and inc["status"] != status.value) or (zone and inc["zone"] != zone)
                    or (site and inc["site"] != site) or (kind and kind not in inc["kinds"])
                    or (since is not None and inc["last_activity"] < since)
                    or not who.sees(inc["site"])):
                continue
            out.append(inc)
            if len(out) >= limit:
                break
        return out

    @app.get("/incidents/{incident_id}", openapi_extra=viewer)
    def get_incident(incident_id: str, who: Caller) -> dict[str, Any]:
        inc = visible(who, incident_id)
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

    @app.post("/incidents/{incident_id}/acknowledge", openapi_extra=operator)
    def acknowledge(incident_id: str, who: Caller,
                    body: Acknowledge | None = None) -> dict[str, Any]:
        """Acknowledge in the caller's name (an operator or above)."""
        visible(who, incident_id)
        return lifecycle(ops.acknowledge, incident_id, who.actor)

    @app.post("/incidents/{incident_id}/resolve", openapi_extra=operator)
    def resolve(incident_id: str, body: Resolve, who: Caller) -> dict[str, Any]:
        """Resolve in the caller's name with a note saying what was done."""
        visible(who, incident_id)
        return lifecycle(ops.resolve, incident_id, who.actor, body.note)

    if modes is not None:
        control = modes

        @app.get("/mode", openapi_extra=viewer)
        def get_mode() -> dict[str, Any]:
            """The emergency plan set in force (null: the normal plans)."""
            return {"mode": control.current_mode(), "available": control.available_modes()}

        @app.put("/mode", openapi_extra=needs(Role.SUPERVISOR))
        def put_mode(body: ModeChange, who: Caller) -> dict[str, Any]:
            """Switch every worker to an emergency plan set (typhoon, flood, cold wave) or
            back (``mode: null``); a supervisor's act, logged with their name."""
            if body.mode is not None and body.mode not in control.available_modes():
                raise HTTPException(422, f"no emergency mode {body.mode!r} "
                                         f"(have: {control.available_modes()})")
            control.switch_mode(body.mode, who.actor)
            return {"mode": control.current_mode(), "available": control.available_modes()}

    @app.get("/stats", openapi_extra=viewer)
    def stats(who: Caller, days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
        """Incidents per zone and day (UTC): the input for grading zones high/medium/low."""
        since = aggregator.clock() - days * 86400
        per: Counter[tuple[str, str, str]] = Counter()
        for inc in ops.incidents():
            day = utc_day(inc["opened_at"])  # None: a time no real incident has (old data)
            if day is not None and inc["opened_at"] >= since and who.sees(inc["site"]):
                per[(inc["site"], inc["zone"], day)] += 1
        return {"days": days, "per_zone_day": [
            {"site": s, "zone": z, "day": d, "incidents": n}
            for (s, z, d), n in sorted(per.items())]}

    return app
