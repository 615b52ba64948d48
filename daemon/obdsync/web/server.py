"""The dashboard's web server (aiohttp, on the daemon's event loop) and its security.

Who may do what:
- Loopback address (the default): a page or a GET of the API from this machine is
  answered (the Host header must name loopback too, against DNS rebinding).
- Any other address ([web] host): every request needs a session cookie or the API token.
- A session comes from a one-time login URL (`obdsync web login` asks the running
  daemon for one through the control door; only the user running obdsync reaches it).
  A session carries a CSRF token: every action is a POST with it in `X-CSRF-Token`
  (or a Bearer API token, which no browser sends by itself). Nothing acts on a GET.
- Clearing trouble codes: only a logged-in session from loopback, confirmed, at most
  once a minute, logged; the dongle itself refuses while the car moves.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypedDict

from aiohttp import web

from obdsync import i18n
from obdsync.messages import Units
from obdsync.web import data, pages
from obdsync.web.live import LiveHub

if TYPE_CHECKING:
    from obdsync.config import Config
    from obdsync.store import Store

log = logging.getLogger("obdsync.web")

API_VERSION = 1
COOKIE = "obdsync_session"
LOGIN_TTL_S = 600  # a one-time login link works for 10 minutes
SESSION_TTL_S = 30 * 86400
CLEAR_EVERY_S = 60.0
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}

# What the guard learnt of a request, for the handlers.
class Session(TypedDict):
    csrf: str  # what the session's pages send back with every action
    expires: float  # time.monotonic()


SESSION: web.RequestKey[Session | None] = web.RequestKey("session")
BEARER = web.RequestKey("bearer", bool)
LOCAL = web.RequestKey("local", bool)

DongleOp = Callable[[str, str | None], Awaitable[Any]]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host.lower().rstrip(".") == "localhost"


def _host_only(host_header: str) -> str:
    h = host_header.strip()
    if h.startswith("["):
        return h[1:h.find("]")]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Dashboard:
    def __init__(self, store: Store, config: Config, *, host: str = "127.0.0.1", port: int = 8765,
                 live: Callable[[], dict[str, Any]] | None = None, dongle_op: DongleOp | None = None,
                 token: str | None = None) -> None:
        self.store = store
        self.config = config
        self.host = host
        self.port = port
        self.hub = LiveHub(data.GAUGES)
        self._live = live or (lambda: {})
        self._dongle_op = dongle_op
        self._token = token or secrets.token_urlsafe(32)
        self._logins: dict[str, float] = {}  # one-time code -> expiry (monotonic)
        self._sessions: dict[str, Session] = {}  # session id -> its CSRF token and expiry
        self._last_clear = -1e9
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()  # open live streams: ended first at stop
        self.units = Units.of_display(config.display)
        self.lang = i18n.resolve(config.display.language)
        self.app = self._make_app()

    # ---- life --------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info("dashboard on %s%s", self.url, "" if is_loopback(self.host) else " (login token required)")

    async def stop(self) -> None:
        for t in list(self._streams):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    @property
    def token(self) -> str:
        """The API token (Bearer) of this run: `obdsync web login --token` prints it."""
        return self._token

    def login_url(self) -> str:
        """A one-time link that opens a session (10 minutes to use it)."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        self._logins = {c: t for c, t in self._logins.items() if t > now}
        self._logins[code] = now + LOGIN_TTL_S
        return f"{self.url}login?code={code}"

    # ---- security ----------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        s = self._sessions.get(sid or "")
        if s is None or s["expires"] < time.monotonic():
            return None
        return s

    def _bearer(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self._token)

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        peer_local = is_loopback(request.remote)
        if is_loopback(self.host) and not is_loopback(_host_only(request.host)):
            # A page elsewhere resolving its name to 127.0.0.1 (DNS rebinding) reaches us with its own Host.
            raise web.HTTPMisdirectedRequest(text="this dashboard answers to 127.0.0.1 and localhost only")
        request[SESSION] = self._session(request)
        request[BEARER] = self._bearer(request)
        request[LOCAL] = peer_local
        open_paths = request.path.startswith("/static/") or request.path == "/login"
        authed = request[SESSION] is not None or request[BEARER]
        if not open_paths and not authed and not (peer_local and is_loopback(self.host)):
            if request.path.startswith("/api/"):
                raise web.HTTPUnauthorized(text=json.dumps({"error": "login required: `obdsync web login` prints a"
                                                            " link, or send Authorization: Bearer TOKEN"}),
                                           content_type="application/json")
            raise web.HTTPUnauthorized(text="login required: run `obdsync web login` on the computer running"
                                            " obdsync and open the link it prints")
        if request.method not in ("GET", "HEAD"):
            self._check_csrf(request)
        resp = await handler(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
                                " frame-ancestors 'none'")
        return resp

    def _check_csrf(self, request: web.Request) -> None:
        if request[BEARER]:
            return  # no browser attaches a Bearer token on its own
        s = request[SESSION]
        if s is None:
            raise web.HTTPUnauthorized(text="actions need a login session (`obdsync web login`)")
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent, s["csrf"]):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page")
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text=f"cross-site request from {origin} refused")

    async def _login(self, request: web.Request) -> web.StreamResponse:
        code = request.query.get("code", "")
        expiry = self._logins.pop(code, None)
        if expiry is None or expiry < time.monotonic():
            raise web.HTTPForbidden(text="this login link is used or expired: run `obdsync web login` again")
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = {"csrf": secrets.token_urlsafe(24), "expires": time.monotonic() + SESSION_TTL_S}
        log.info("dashboard login from %s", request.remote)
        resp = web.HTTPFound("/")
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", max_age=SESSION_TTL_S, path="/")
        raise resp

    # ---- the app -----------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/login", self._login)
        r.add_get("/static/{name}", self._static)
        r.add_get("/", self._page_now)
        r.add_get("/trips", self._page_trips)
        r.add_get("/trips/{id}", self._page_trip)
        r.add_get("/fuel", self._page_fuel)
        r.add_get("/health", self._page_health)
        r.add_get("/service", self._page_service)
        r.add_get("/events", self._page_events)
        v = f"/api/v{API_VERSION}"
        r.add_get(v + "/devices", self._api_devices)
        r.add_get(v + "/now", self._api_now)
        r.add_get(v + "/live", self._api_live)
        r.add_get(v + "/trips", self._api_trips)
        r.add_get(v + "/trips/{id}", self._api_trip)
        r.add_get(v + "/fuel", self._api_fuel)
        r.add_get(v + "/health", self._api_health)
        r.add_get(v + "/service", self._api_service)
        r.add_post(v + "/service/done", self._api_service_done)
        r.add_get(v + "/events", self._api_events)
        r.add_post(v + "/dtc/clear", self._api_dtc_clear)
        return app

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or suffix not in STATIC_TYPES:
            raise web.HTTPNotFound()
        try:
            body = resources.files("obdsync.web").joinpath("static", name).read_bytes()
        except (FileNotFoundError, OSError):
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type=STATIC_TYPES[suffix],
                            headers={"Cache-Control": "max-age=3600"})

    async def _device(self, request: web.Request) -> tuple[str | None, list[str]]:
        devs = await data.devices(self.store)
        want = request.query.get("device")
        if want:
            if want not in devs:
                raise web.HTTPNotFound(text=f"no device {want} in the database (it has: {', '.join(devs) or 'none'})")
            return want, devs
        return (devs[0] if devs else None), devs

    def _can_act(self, request: web.Request) -> bool:
        return request[SESSION] is not None or request[BEARER]

    async def _page(self, request: web.Request, key: str, title: str, body: str, device: str | None,
                    devs: list[str]) -> web.Response:
        s = request[SESSION]
        html = pages.layout(key, i18n._(title, self.lang), body, lang=self.lang, csrf=s["csrf"] if s else None,
                            device=device, devices=devs, authed=self._can_act(request))
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _now_data(self, device: str) -> dict[str, Any]:
        return await data.now(self.store, self.config, device, self._live().get(device),
                              self.hub.latest.get(device))

    async def _page_now(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        body = pages.no_data(self.lang) if dev is None else pages.now_page(await self._now_data(dev), self.units,
                                                                            self.lang)
        return await self._page(request, "now", "Now", body, dev, devs)

    async def _page_trips(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        rows = await data.trips(self.store, self.config, dev) if dev else []
        return await self._page(request, "trips", "Trips",
                                pages.trips_page(rows, self.units, self.lang, self._currency(dev)), dev, devs)

    def _currency(self, dev: str | None) -> str:
        return self.config.for_device(dev).fuel.currency if dev else ""

    async def _trip_detail(self, trip_id: str) -> tuple[Any, dict[str, Any], data.Series, data.Series, data.Series,
                                                        list[tuple[int, str]]]:
        t = await data.find_trip(self.store, trip_id)
        if t is None:
            raise web.HTTPNotFound(text=f"no trip {trip_id}")
        end = t.ended_ms or int(time.time() * 1000)
        speed = await data.series(self.store, t.device, data.SPEED, t.started_ms, end)
        rpm = await data.series(self.store, t.device, data.RPM, t.started_ms, end)
        fuel = await data.series(self.store, t.device, data.FUEL, t.started_ms, end)
        moments = data.hard_moments(speed, self.config.for_device(t.device))
        return t, data.trip_summary(t, self.config), speed, rpm, fuel, moments

    async def _page_trip(self, request: web.Request) -> web.Response:
        t, summary, speed, rpm, fuel, moments = await self._trip_detail(request.match_info["id"])
        body = pages.trip_page(summary, speed, rpm, fuel, moments, self.units, self.lang, self._currency(t.device))
        return await self._page(request, "trips", "Trip", body, t.device, await data.devices(self.store))

    async def _page_fuel(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        body = pages.no_data(self.lang) if dev is None else pages.fuel_page(
            await data.fuel(self.store, self.config, dev), self.units, self.lang, self._currency(dev))
        return await self._page(request, "fuel", "Fuel", body, dev, devs)

    async def _page_health(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        can_clear = request[SESSION] is not None and request[LOCAL] and self._dongle_op is not None
        body = pages.no_data(self.lang) if dev is None else pages.health_page(
            await data.health(self.store, self.config, dev), self.lang, can_clear)
        return await self._page(request, "health", "Health", body, dev, devs)

    async def _page_service(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        body = pages.no_data(self.lang) if dev is None else pages.service_page(
            await data.service(self.store, self.config, dev), self.units, self.lang, self._can_act(request))
        return await self._page(request, "service", "Service", body, dev, devs)

    async def _page_events(self, request: web.Request) -> web.Response:
        dev, devs = await self._device(request)
        sev, typ = request.query.get("severity") or None, request.query.get("type") or None
        evs = await data.events(self.store, dev, severity=sev, type_=typ) if dev else []
        types = sorted({e.type for e in await self.store.events(dev, limit=2000)}) if dev else []
        return await self._page(request, "events", "Events",
                                pages.events_page(evs, self.units, self.lang, dev, sev, typ, types), dev, devs)

    # ---- the API (API.md) ----------------------------------------------------------

    @staticmethod
    def _json(obj: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps({"v": API_VERSION, **obj}, default=str, ensure_ascii=False),
                            status=status, content_type="application/json", headers={"Cache-Control": "no-store"})

    async def _need_device(self, request: web.Request) -> str:
        dev, _ = await self._device(request)
        if dev is None:
            raise web.HTTPNotFound(text="no device in the database yet")
        return dev

    async def _api_devices(self, request: web.Request) -> web.Response:
        return self._json({"devices": await data.devices(self.store)})

    async def _api_now(self, request: web.Request) -> web.Response:
        return self._json(await self._now_data(await self._need_device(request)))

    async def _api_live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one `data:` JSON a stored batch ({device, values: {key: {v, t,
        text}}, sent_ms}), a comment every 15 s to keep proxies and phones from closing it."""
        want = request.query.get("device")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q = self.hub.subscribe()
        task = asyncio.current_task()
        if task is not None:  # aiohttp runs each request in a task of its own
            self._streams.add(task)
        try:
            await resp.write(b": hello\n\n")
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if want and msg["device"] != want:
                    continue
                vals = {k: {**g, "text": pages.gauge_text(k, g["v"], self.units)} for k, g in msg["values"].items()}
                out = {"device": msg["device"], "values": vals, "sent_ms": msg["sent_ms"],
                       "connected": bool((self._live().get(msg["device"]) or {}).get("connected"))}
                await resp.write(b"data: " + json.dumps(out).encode() + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unsubscribe(q)
            self._streams.discard(task)
        return resp

    async def _api_trips(self, request: web.Request) -> web.Response:
        dev, _ = await self._device(request)
        return self._json({"trips": await data.trips(self.store, self.config, dev) if dev else []})

    async def _api_trip(self, request: web.Request) -> web.Response:
        _t, summary, speed, rpm, fuel, moments = await self._trip_detail(request.match_info["id"])
        return self._json({"trip": summary, "speed_kmh": speed, "rpm": rpm, "fuel_pct": fuel,
                           "hard_moments": [{"t": t, "kind": k} for t, k in moments]})

    async def _api_fuel(self, request: web.Request) -> web.Response:
        return self._json(await data.fuel(self.store, self.config, await self._need_device(request)))

    async def _api_health(self, request: web.Request) -> web.Response:
        return self._json(await data.health(self.store, self.config, await self._need_device(request)))

    async def _api_service(self, request: web.Request) -> web.Response:
        return self._json(await data.service(self.store, self.config, await self._need_device(request)))

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    async def _api_service_done(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        dev = await self._need_device(request) if not body.get("device") else str(body["device"])
        items = body.get("items")
        if items is not None and (not isinstance(items, list) or not all(isinstance(i, str) for i in items)):
            raise web.HTTPBadRequest(text="items must be a list of item names (or absent: the whole schedule)")
        km = body.get("km")
        if km is not None:
            try:
                km = float(km)
            except (TypeError, ValueError):
                raise web.HTTPBadRequest(text=f"km must be a number, got {km!r}") from None
        try:
            sid = await data.mark_done(self.store, self.config, dev, items or None, km)
        except ValueError as e:
            return self._json({"ok": False, "error": str(e)}, status=400)
        log.info("dashboard: service %s marked done for %s (from %s)", items or "all", dev, request.remote)
        return self._json({"ok": True, "id": sid, "service": await data.service(self.store, self.config, dev)})

    async def _api_events(self, request: web.Request) -> web.Response:
        from obdsync.forward.payloads import event_message
        from obdsync.messages import notification

        dev, _ = await self._device(request)
        evs = await data.events(self.store, dev, severity=request.query.get("severity") or None,
                                type_=request.query.get("type") or None)
        out = []
        for e in evs:
            m = event_message(e)
            m["title"], m["text"] = notification(m, self.units, self.lang)
            out.append(m)
        return self._json({"events": out})

    async def _api_dtc_clear(self, request: web.Request) -> web.Response:
        from obdsync.link import CommandError, LinkError
        from protocol import control

        if request[SESSION] is None or not request[LOCAL]:
            log.warning("dashboard: clear codes refused for %s (not a logged-in local user)", request.remote)
            raise web.HTTPForbidden(text="clearing codes is for a logged-in user on this computer")
        body = await self._body(request)
        if body.get("confirm") is not True:
            raise web.HTTPBadRequest(text='confirm the clear: {"confirm": true}')
        if self._dongle_op is None:
            raise web.HTTPServiceUnavailable(text="no dongle link here (the dashboard runs without the daemon)")
        now = time.monotonic()
        if now - self._last_clear < CLEAR_EVERY_S:
            wait = CLEAR_EVERY_S - (now - self._last_clear)
            log.warning("dashboard: clear codes refused (rate limit) from %s", request.remote)
            return self._json({"ok": False, "error": f"codes were cleared moments ago; try again in {wait:.0f} s"},
                              status=429)
        self._last_clear = now
        dev = body.get("device") or await self._need_device(request)
        log.warning("dashboard: clear trouble codes of %s requested from %s", dev, request.remote)
        try:
            await self._dongle_op("dtc.clear", dev)
        except CommandError as e:
            why = ("the dongle refused: the vehicle is moving (or did not say its speed). Stop the car, ignition"
                   " on, and try again." if e.status == control.REFUSED_MOVING else f"the dongle refused: {e}")
            log.warning("dashboard: clear codes of %s: %s", dev, why)
            return self._json({"ok": False, "error": why}, status=409)
        except LinkError as e:
            return self._json({"ok": False, "error": str(e)}, status=503)
        log.warning("dashboard: trouble codes of %s cleared", dev)
        return self._json({"ok": True})
