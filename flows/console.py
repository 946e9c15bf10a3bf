"""`stockshift console`: the planners' web console (Starlette, server-rendered with Jinja2,
no JavaScript). Wiring only: what is shown and allowed comes from operators.approvals, the
reading and writing from adapters.console_backend, sign-in from adapters.console_auth.

Security: sessions are signed cookies (Starlette's SessionMiddleware: HttpOnly, SameSite
strict, Secure unless STOCKSHIFT_CONSOLE_SECURE_COOKIES=false); every form carries a
per-session CSRF token checked on POST; control commands are signed on the server with
its key (the browser never sees one); answers and commands go to the audit trail with the
user; nothing secret is rendered or logged. Failed sign-ins are throttled per name and
address in Redis (`SignInThrottle`), passwords are checked off the event loop two at a
time, and a request body over 1 MiB is refused (`BodyLimit`).
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from adapters import clock
from adapters.console_auth import Account, SignInThrottle, check_password, from_headers
from adapters.console_backend import Backend, sorted_waiting
from adapters.request_limits import BodyLimit
from operators import approvals
from operators.codec import rfc3339
from operators.parse import Invalid
from state.console import Role, User
from state.governance import Governance

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PAGE_SIZE = 50
SORTS = [
    ("age", "Age"),
    ("expires", "Time left"),
    ("value", "Value"),
    ("benefit", "Net benefit"),
    ("sku", "SKU"),
    ("site", "Site"),
]
COMMANDS = ["pause", "resume", "freeze_site", "unfreeze_site", "freeze_sku", "unfreeze_sku"]


def _duration(ms: int) -> str:
    minutes = max(ms, 0) // 60_000
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class Console:
    def __init__(
        self,
        backend: Backend,
        accounts: dict[str, Account],
        governance: Callable[[int], Governance],
        throttle: SignInThrottle | None = None,
    ) -> None:
        self.backend, self.accounts, self.governance = backend, accounts, governance
        self.settings = backend.settings
        self.throttle = throttle
        # Password checks at once: each argon2 check holds 64 MiB and tens of ms of a core,
        # off the event loop (created on first use: it belongs to the server's loop).
        self._checks: anyio.CapacityLimiter | None = None

    # -- who ----------------------------------------------------------------------------
    def user(self, request: Request) -> User | None:
        if self.settings.console_auth == "headers":
            host = request.client.host if request.client else None
            return from_headers(
                self.accounts, request.headers, host, self.settings.console_trusted_proxies
            )
        name = request.session.get("user")
        account = self.accounts.get(name) if isinstance(name, str) else None
        return account.user if account is not None else None

    @staticmethod
    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return token

    async def form(self, request: Request) -> dict[str, Any] | None:
        """The posted form, or None when its CSRF token is missing or wrong."""
        form = await request.form()
        given, expected = str(form.get("csrf", "")), request.session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(given, expected):
            return None
        return {"ids": form.getlist("ids"), **{k: str(v) for k, v in form.items() if k != "ids"}}

    def render(
        self,
        request: Request,
        name: str,
        status: int = 200,
        retry_after: int | None = None,
        **context: Any,
    ) -> Response:
        context.setdefault("message", request.query_params.get("message", ""))
        context.setdefault("error", request.query_params.get("error") == "1")
        return TEMPLATES.TemplateResponse(
            request,
            name,
            {"csrf": self.csrf(request), "user": self.user(request), **context},
            status_code=status,
            headers={"Retry-After": str(retry_after)} if retry_after else None,
        )

    def signed_in(self, request: Request) -> User | Response:
        user = self.user(request)
        if user is not None:
            return user
        if self.settings.console_auth == "headers":
            return PlainTextResponse("no identity from the proxy", status_code=401)
        return RedirectResponse("/login", status_code=303)

    # -- pages --------------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", title="Sign in", page="login")

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return PlainTextResponse("form expired or forged (CSRF)", status_code=403)
        name, address = form.get("name", ""), request.client.host if request.client else "-"
        throttle = self.throttle
        wait = throttle.wait_seconds(name, address) if throttle is not None else 0
        if wait:
            return self.render(
                request,
                "login.html",
                429,
                title="Sign in",
                page="login",
                message=f"Too many failed sign-ins; try again in {wait} s.",
                error=True,
                retry_after=wait,
            )
        user = await self._check(name, form.get("password", ""))
        if throttle is not None and user is None:
            throttle.failed(name, address)
        elif throttle is not None:
            throttle.succeeded(name, address)
        if user is None:
            return self.render(
                request,
                "login.html",
                401,
                title="Sign in",
                page="login",
                message="Wrong name or password.",
                error=True,
            )
        request.session.clear()
        request.session["user"] = user.name
        request.session["csrf"] = secrets.token_urlsafe(32)  # a new session, a new token
        return RedirectResponse("/", status_code=303)

    async def _check(self, name: str, password: str) -> User | None:
        """`check_password` in a worker thread, at most two at once."""
        if self._checks is None:
            self._checks = anyio.CapacityLimiter(2)
        return await anyio.to_thread.run_sync(
            check_password, self.accounts, name, password, limiter=self._checks
        )

    async def logout(self, request: Request) -> Response:
        if await self.form(request) is None:
            return PlainTextResponse("form expired or forged (CSRF)", status_code=403)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def waiting(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        q = request.query_params
        site, sku, sort, desc = (
            q.get("site", ""),
            q.get("sku", ""),
            q.get("sort", "age"),
            q.get("desc") == "1",
        )
        now = clock.now_ms()
        items = sorted_waiting(self.backend.waiting(now, site, sku), sort, desc)
        pages = max(math.ceil(len(items) / PAGE_SIZE), 1)
        page_no = min(max(_page_number(q.get("page", "1")), 1), pages)
        shown = items[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
        base = {"site": site, "sku": sku, "sort": sort, "desc": "1" if desc else ""}
        return self.render(
            request,
            "waiting.html",
            title="Waiting for approval",
            page="waiting",
            items=shown,
            total=len(items),
            site=site,
            sku=sku,
            sort=sort,
            desc=desc,
            sorts=SORTS,
            ages={w.proposal_id: _duration(now - w.created_ms) for w in shown},
            lefts={w.proposal_id: _duration(w.expires_ms - now) for w in shown},
            page_no=page_no,
            pages=pages,
            prev_url="/?" + urlencode({**base, "page": page_no - 1}),
            next_url="/?" + urlencode({**base, "page": page_no + 1}),
            can_answer=user.role.answers,
        )

    async def why(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        item = self.backend.get(request.path_params["proposal_id"])
        if item is None:
            return PlainTextResponse("no such proposal waits for approval", status_code=404)
        points = approvals.projection(item)
        top = max(max(p.with_transfer for p in points), 1.0)
        horizon = points[-1].hour or 1.0

        def polyline(values: list[float]) -> str:
            return " ".join(
                f"{40 + 470 * p.hour / horizon:.1f},{170 - 160 * v / top:.1f}"
                for p, v in zip(points, values, strict=True)
            )

        return self.render(
            request,
            "why.html",
            title=f"Why {item.sku}",
            page="why",
            item=item,
            lines=approvals.explanation(item),
            created=rfc3339(item.created_ms),
            expires=rfc3339(item.expires_ms),
            horizon=round(horizon),
            with_points=polyline([p.with_transfer for p in points]),
            without_points=polyline([p.without for p in points]),
            top=top,
            last_with=points[-1].with_transfer,
            last_without=points[-1].without,
            can_answer=item.answer is None and user.may_answer(item.from_site, item.to_site),
        )

    async def answer(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        form = await self.form(request)
        if form is None:
            return PlainTextResponse("form expired or forged (CSRF)", status_code=403)
        approve = form.get("action") == "approve"
        note = form.get("note", "")[: approvals.MAX_NOTE_CHARS]
        results = [self.backend.answer(pid, approve, user, note) for pid in form["ids"]]
        refused = [r for r in results if isinstance(r, approvals.Refusal)]
        if not results:
            return RedirectResponse(
                "/?" + urlencode({"message": "Nothing selected.", "error": "1"}), 303
            )
        if refused and len(refused) == len(results):
            status = max(r.status for r in refused)
            return self.render(
                request,
                "base.html",
                status,
                title="Not done",
                page="waiting",
                message="; ".join(r.message for r in refused),
                error=True,
            )
        verb = "approved" if approve else "rejected"
        message = f"{len(results) - len(refused)} {verb}" + (
            f"; {len(refused)} not: " + "; ".join(r.message for r in refused) if refused else ""
        )
        return RedirectResponse("/?" + urlencode({"message": message}), status_code=303)

    async def exceptions(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        return self.render(
            request,
            "exceptions.html",
            title="Exceptions",
            page="exceptions",
            cases=self.backend.exceptions(),
            can_act=user.role.answers,
        )

    async def act_on_exception(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        if await self.form(request) is None or not user.role.answers:
            return PlainTextResponse("forbidden", status_code=403)
        pid, what = request.path_params["proposal_id"], request.path_params["what"]
        said = (
            self.backend.retry(pid, user) if what == "retry" else self.backend.withdraw(pid, user)
        )
        if said == "forbidden":
            return PlainTextResponse("forbidden", status_code=403)
        return RedirectResponse("/exceptions?" + urlencode({"message": f"{pid}: {said}"}), 303)

    async def network(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        now = clock.now_ms()
        return self.render(
            request,
            "network.html",
            title="Network now",
            page="network",
            governance=self.governance(now),
            stats=self.backend.stats(now),
            commands=COMMANDS,
            can_control=user.role is Role.ADMIN,
        )

    async def control(self, request: Request) -> Response:
        user = self.signed_in(request)
        if not isinstance(user, User):
            return user
        form = await self.form(request)
        if form is None or user.role is not Role.ADMIN:
            return PlainTextResponse("forbidden", status_code=403)
        command, target = form.get("command", ""), form.get("target", "").strip() or None
        if command not in COMMANDS or (command.startswith(("freeze", "unfreeze")) and not target):
            return RedirectResponse(
                "/network?"
                + urlencode(
                    {"message": "Choose a command (and a target for freezes).", "error": "1"}
                ),
                303,
            )
        try:
            self.backend.control(user, command, target)
        except (PermissionError, ConnectionError, Invalid) as exc:  # Invalid: nothing sent
            return RedirectResponse(
                "/network?" + urlencode({"message": str(exc), "error": "1"}), 303
            )
        return RedirectResponse("/network?" + urlencode({"message": f"{command} sent"}), 303)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def app(console: Console) -> Starlette:
    s = console.settings
    routes = [
        Route("/", console.waiting),
        Route("/login", console.login_page),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/answer", console.answer, methods=["POST"]),
        Route("/proposals/{proposal_id}", console.why),
        Route("/exceptions", console.exceptions),
        Route("/exceptions/{proposal_id}/{what:str}", console.act_on_exception, methods=["POST"]),
        Route("/network", console.network),
        Route("/control", console.control, methods=["POST"]),
        Route("/healthz", console.healthz),
    ]
    secret = s.console_secret or secrets.token_urlsafe(32)
    session = Middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="stockshift_session",
        max_age=8 * 3600,
        same_site="strict",
        https_only=s.console_secure_cookies,
    )
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit), session])


def build(settings: Any) -> tuple[Console, Backend]:
    """The console's parts from the settings (shared by `console` and the CLI answers)."""
    import redis
    from confluent_kafka import Producer

    from adapters.configfiles import load_config
    from adapters.console_auth import load_users
    from flows.entry import create_topics, start_control
    from state.config import ConfigError

    if not settings.redis_url:
        raise ConfigError("STOCKSHIFT_REDIS_URL: the console claims answers in Redis")
    config = load_config(settings.network_path, settings.policy_path, settings.policies_dir)
    if settings.create_topics:
        create_topics(settings)
    control, _ = start_control(settings, config.policy.version, config.policies)
    producer = Producer(
        {
            "bootstrap.servers": ",".join(settings.brokers),
            "enable.idempotence": True,
            **settings.kafka_config,
        }
    )
    backend = Backend(settings, redis.Redis.from_url(settings.redis_url), producer)
    accounts = load_users(settings.console_users)
    throttle = SignInThrottle(settings.redis_url, key_prefix=f"{settings.redis_prefix}signin")
    return Console(backend, accounts, control.board.at, throttle), backend


def serve(settings: Any, host: str = "0.0.0.0") -> int:
    import uvicorn

    console, backend = build(settings)
    backend.start()
    backend.wait_caught_up(settings.broker_wait_s)
    uvicorn.run(
        app(console),
        host=host,
        port=settings.console_port,
        log_config=None,
        server_header=False,
        **proxy_options(settings),
    )
    return 0


def proxy_options(settings: Any) -> dict[str, Any]:
    """Whose `X-Forwarded-For` uvicorn believes: the console's trusted proxies only, one
    setting for both uses. With identity headers (`console_auth = "headers"`) it believes
    none: the trust check must see the proxy itself, and uvicorn would otherwise put the
    forwarded client in its place (a sidecar oauth2-proxy on 127.0.0.1 sends the header, so
    no one could sign in). With passwords it believes them, so the sign-in throttle counts
    the client behind the proxy, not the proxy."""
    return {
        "proxy_headers": settings.console_auth != "headers",
        "forwarded_allow_ips": list(settings.console_trusted_proxies),
    }


def _page_number(text: str) -> int:
    """`?page=` as a number, 1 for anything else: `isdigit` also passes "²", which `int`
    refuses (a crafted link answered 500)."""
    try:
        return int(text[:12])
    except ValueError:
        return 1
