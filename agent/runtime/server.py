"""The agent's HTTP endpoints: health, readiness, its own metrics, and an Alertmanager webhook.

- GET /healthz: 200 while the event loop runs (liveness); its body lists the stuck actions, if any
  (in flight with no running task, or Pending, for longer than the runner's STUCK_AFTER_SECONDS):
  rule, object, state and since when.
- GET /actions/stuck: the same stuck actions as JSON (a list of {rule, object, state, since, why}).
- GET /readyz: 200 once rules are loaded, every watch-fed cache has listed once and the first cycle
  of every rule has run; 503 before, with the reason in the body (`caches not synced: <kinds>`, a
  watch that failed for good, or `first cycle pending for <rules>`).
  With --leader-elect, a standby replica is ready (200): it is healthy and serves metrics, and an
  unready standby would hold up every rolling update; the leader is ready after its first cycles.
- GET /metrics: agent.runtime.telemetry in the Prometheus text format.
- GET /rules: each rule's health after its last cycle ("ok", or what it could not see), as JSON.
- POST /api/v1/alerts: an Alertmanager-compatible webhook. Each firing alert triggers an immediate
  evaluation of the rule named by its `autopilot_rule` label, or of every rule when none is named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from agent.adapters.kubernetes.statuscodec import format_time
from agent.runtime.runner import StuckAction
from agent.runtime.telemetry import Telemetry


@dataclass
class Endpoints:
    telemetry: Telemetry
    readiness: Callable[[], str | None]
    """None when ready, else why not."""
    trigger: Callable[[Iterable[str] | None], list[str]]
    """Trigger the named rules (None = all); returns the rules triggered."""
    health: Callable[[], Mapping[str, str]] = dict
    stuck: Callable[[], Sequence[StuckAction]] = list
    """Actions in flight with no progress for too long (agent.runtime.runner.ActionRunner.stuck)."""

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/rules", self.rules),
                web.get("/actions/stuck", self.stuck_actions),
                web.post("/api/v1/alerts", self.alerts),
            ]
        )
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        lines = [
            f"stuck action: rule={found.rule} object={found.object} state={found.state} "
            f"since={format_time(found.since)} ({found.why})\n"
            for found in self.stuck()
        ]
        return web.Response(text="ok\n" + "".join(lines))

    async def stuck_actions(self, _request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "rule": found.rule,
                    "object": found.object,
                    "state": found.state,
                    "since": format_time(found.since),
                    "why": found.why,
                }
                for found in self.stuck()
            ]
        )

    async def readyz(self, _request: web.Request) -> web.Response:
        why = self.readiness()
        if why is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.telemetry.render(), content_type="text/plain", charset="utf-8")

    async def rules(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.health()))

    async def alerts(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            alerts = body["alerts"]
            if not isinstance(alerts, list):
                raise TypeError("alerts must be a list")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            return web.json_response(
                {"error": f"expected an Alertmanager webhook body with an 'alerts' list: {error}"}, status=400
            )
        named: set[str] = set()
        everything = False
        for alert in alerts:
            if not isinstance(alert, dict) or alert.get("status", "firing") != "firing":
                continue
            rule = alert.get("labels", {}).get("autopilot_rule")
            if rule:
                named.add(str(rule))
            else:
                everything = True
        if not named and not everything:
            return web.json_response({"triggered": []})
        triggered = self.trigger(None if everything else sorted(named))
        return web.json_response({"triggered": triggered})


async def serve(endpoints: Endpoints, *, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(endpoints.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    return runner
