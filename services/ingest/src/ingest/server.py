"""The ingest HTTP API (aiohttp): create and read payments, the audit trail, the review of
payments held in REVIEW, webhook endpoints (:mod:`ingest.webhooks_api`), the OpenAPI spec.

Browsers of ``PULSE_CORS_ORIGINS`` pass :class:`ingest.cors.Cors` first. Every ``/v1/``
request passes :class:`ingest.access.AccessControl` (credential, failed-
credential limit, the principal's budget); handlers ask :func:`ingest.authz.authorize` what
the principal may do, parse bodies and queries with :mod:`ingest.validation` and headers and
ids with :mod:`ingest.request_ids`, build items with :mod:`ingest.records` and talk to
DynamoDB only through :class:`ingest.store.PaymentStore`.
Every error leaves as an RFC 9457 problem (:mod:`pulse.problems`); unexpected exceptions are
logged with their traceback and answered with a bare 500 problem.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from ingest.access import AccessControl
from ingest.authz import Action, Verdict, authorize
from ingest.cors import Cors
from ingest.handling import allowed, json_response, read_body, too_large
from ingest.health import IngestThroughput
from ingest.metrics import PAYMENTS_CREATED, PAYMENTS_REJECTED, REJECTION_REASONS
from ingest.openapi import openapi_document
from ingest.records import created_payment, new_payment, payment_item
from ingest.request_ids import (
    parse_idempotency_key,
    parse_payment_id,
    parse_traceparent,
    payment_id_for_key,
)
from ingest.settings import IngestSettings, load_ingest_settings
from ingest.store import PaymentStore
from ingest.validation import (
    PaymentRequest,
    parse_payment_request,
    parse_review_listing,
    parse_review_request,
    request_hash,
)
from ingest.webhooks_api import WebhookEndpointsApi
from pulse.api_keys import ApiKeyTable
from pulse.auth import TokenVerifier
from pulse.clients import RedisClient, aws_client, redis_client
from pulse.collector import BATCH_YOUNG_THRESHOLD, settle_collector
from pulse.credentials import Authenticator
from pulse.errors import RetryableError
from pulse.events import new_traceparent, utc_now
from pulse.health import HealthReporter
from pulse.logging import event_context, get_logger
from pulse.metrics import http_metrics_middleware
from pulse.payment_states import Reviewer, why_not_reviewed
from pulse.payments import payment_from_item
from pulse.problems import Problem, not_found
from pulse.service import Lifecycle, serving_api
from pulse.throttling import Quota, Throttle
from pulse.topology import WebhookNames
from pulse.webhook_attempts import AttemptLog
from pulse.webhook_deliveries import DeliveryQueue
from pulse.webhook_endpoints import WebhookEndpoints

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pulse.credentials import Principal

__all__ = ["create_app", "serve"]


log = get_logger("ingest.server")


IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
TRACEPARENT_HEADER: Final = "traceparent"


def _from_http_exception(exc: web.HTTPException) -> Problem:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(exc.text or "")
    problem = Problem.from_status(exc.status)
    problem.headers = dict(exc.headers)  # Problem.response() leaves the body's own out
    return problem


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Render every error as ``application/problem+json``; never leak a stack trace."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:  # noqa: PLR2004 - redirects pass through
            raise
        return _from_http_exception(exc).response()
    except RetryableError as exc:
        log.warning("dependency unavailable", error=str(exc), path=request.path)
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            "a dependency is busy or unreachable; retry later",
            headers={"Retry-After": "1"},
        ).response()
    except Exception:
        log.exception("unexpected error", method=request.method, path=request.path)
        return Problem(500, "internal", "Internal server error").response()


class PaymentsApi:
    """The handlers of ``/v1/payments``."""

    def __init__(self, settings: IngestSettings, store: PaymentStore) -> None:
        self._settings = settings
        self._store = store

    async def _parse(self, request: web.Request) -> tuple[PaymentRequest, str | None]:
        """The validated body and idempotency key; counts and re-raises every refusal."""
        try:
            raw = await read_body(request, self._settings.max_body_bytes, "the payment")
            key = parse_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
            body = parse_payment_request(raw, max_amount=self._settings.max_amount)
        except Problem as problem:
            if problem.slug in REJECTION_REASONS:
                PAYMENTS_REJECTED.labels(problem.slug).inc()
            raise
        return body, key

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/payments``: one conditional PutItem; a refused put tells replay from reuse."""
        principal = allowed(request, Action.CREATE)
        body, key = await self._parse(request)
        if authorize(principal, Action.CREATE, body.account_id) is not Verdict.ALLOW:
            raise Problem(
                403,
                "forbidden",
                "Forbidden",
                f"this credential may not create payments for account {body.account_id}",
            )
        traceparent = parse_traceparent(request.headers.get(TRACEPARENT_HEADER))
        traceparent = traceparent or new_traceparent()
        payment_id = payment_id_for_key(key)
        digest = request_hash(body)
        payment = new_payment(
            body,
            payment_id=payment_id,
            request_hash=digest,
            traceparent=traceparent,
            idempotency_key=key,
            now=utc_now(),
        )
        item = payment_item(payment)
        with event_context(None, traceparent.split("-")[1], payment_id=payment_id):
            # A stored item can vanish between the refused put and the read (deleted):
            # then the put is tried once more.
            for _ in range(2):
                if await self._store.put_new(item):
                    PAYMENTS_CREATED.labels("created").inc()
                    log.debug(
                        "payment created", account_id=body.account_id, principal=principal.label
                    )
                    return self._created(created_payment(payment), traceparent)
                stored = await self._store.get(payment_id)
                if stored is not None:
                    return self._replay(stored, digest, traceparent)
        raise Problem(409, "conflict", "Conflict", "the payment changed concurrently; retry")

    def _replay(self, stored: dict[str, Any], digest: str, traceparent: str) -> web.Response:
        if stored.get("request_hash") != digest:
            PAYMENTS_CREATED.labels("conflict").inc()
            log.info("idempotency key reused with another body")
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request body",
            )
        PAYMENTS_CREATED.labels("replayed").inc()
        log.debug("payment replayed")
        original_trace = str(stored.get("traceparent") or traceparent)
        return self._created(created_payment(stored), original_trace, replayed=True)

    @staticmethod
    def _created(
        payment: dict[str, Any], traceparent: str, *, replayed: bool = False
    ) -> web.Response:
        headers = {
            "Location": f"/v1/payments/{payment['payment_id']}",
            TRACEPARENT_HEADER: traceparent,
        }
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        return json_response(payment, status=201, headers=headers)

    def _payment_id(self, request: web.Request) -> str:
        payment_id = parse_payment_id(request.match_info["payment_id"])
        if payment_id is None:
            raise not_found("payment ids are UUIDs")
        return payment_id

    async def _readable(self, principal: Principal, payment_id: str) -> dict[str, Any]:
        """The payment, if ``principal`` may read it; else 404, as for one that is absent."""
        item = await self._store.get(payment_id)
        if item is None or (
            authorize(principal, Action.READ, str(item.get("account_id"))) is not Verdict.ALLOW
        ):
            raise not_found(f"no payment {payment_id}")
        return item

    async def get(self, request: web.Request) -> web.Response:
        """``GET /v1/payments/{payment_id}``."""
        principal = allowed(request, Action.READ)
        payment_id = self._payment_id(request)
        return json_response(payment_from_item(await self._readable(principal, payment_id)))

    async def events(self, request: web.Request) -> web.Response:
        """``GET /v1/payments/{payment_id}/events``: the audit trail, oldest first.

        Operators read any trail, a deleted payment's included; an account reads the trail
        of a payment it owns (which must still exist, to say whose it is).
        """
        principal = allowed(request, Action.READ)
        payment_id = self._payment_id(request)
        if not principal.is_ops:
            await self._readable(principal, payment_id)
        events = await self._store.events(payment_id, self._settings.max_audit_events)
        if not events and principal.is_ops and await self._store.get(payment_id) is None:
            raise not_found(f"no payment {payment_id}")
        return json_response({"payment_id": payment_id, "events": events})

    async def list_in_review(self, request: web.Request) -> web.Response:
        """``GET /v1/payments?status=REVIEW&limit=&cursor=``: payments waiting for an
        operator's decision, oldest first (operators only)."""
        allowed(request, Action.REVIEW)
        listing = parse_review_listing(request.query)
        page = await self._store.review_queue(listing.limit, listing.cursor)
        return json_response(
            {
                "items": [payment_from_item(p) for p in page.payments],
                "next_cursor": page.next_cursor,
            }
        )

    async def review(self, request: web.Request) -> web.Response:
        """``POST /v1/payments/{payment_id}/review``: an operator approves or declines a
        payment held in REVIEW, once (:mod:`pulse.payment_states`)."""
        principal = allowed(request, Action.REVIEW)
        payment_id = self._payment_id(request)
        raw = await read_body(request, self._settings.max_body_bytes, "the decision")
        body = parse_review_request(raw)
        reviewer = Reviewer.operator(principal.account_id)
        result = await self._store.review(payment_id, body.decision, reviewer, body.note)
        if result.payment is None:
            raise not_found(f"no payment {payment_id}")
        if not result.applied:
            raise _not_in_review(payment_id, result.payment)
        with event_context(None, None, payment_id=payment_id):
            log.info("payment reviewed", decision=body.decision, reviewed_by=reviewer.name)
        return json_response(payment_from_item(result.payment))


def _not_in_review(payment_id: str, payment: dict[str, Any]) -> Problem:
    detail = why_not_reviewed(payment_id, payment)
    return Problem(409, "not-in-review", "Payment not in review", detail)


def create_app(
    settings: IngestSettings,
    store: PaymentStore,
    access: AccessControl,
    webhooks: WebhookEndpointsApi,
) -> web.Application:
    """The aiohttp application: API routes (payments, webhook endpoints) behind the access
    middleware, metrics and the problem middleware.

    The ops routes are mounted by :func:`pulse.service.serving_api`, which decides which of
    them the public port carries (``PULSE_OPS_PORT``).
    """
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # access outside problem_middleware: its RateLimit fields reach every answer.
        middlewares=[
            http_metrics_middleware(settings.service_name),
            Cors(settings.cors_origins).middleware,  # preflights need no credential
            access.middleware,
            problem_middleware,
        ],
    )
    api = PaymentsApi(settings, store)
    spec = orjson.dumps(
        openapi_document(
            max_body_bytes=settings.max_body_bytes,
            max_amount=settings.max_amount,
            metrics=settings.separate_ops_port is None,
        )
    )

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_post("/v1/payments", api.create)
    app.router.add_get("/v1/payments", api.list_in_review)
    app.router.add_get("/v1/payments/{payment_id}", api.get)
    app.router.add_get("/v1/payments/{payment_id}/events", api.events)
    app.router.add_post("/v1/payments/{payment_id}/review", api.review)
    webhooks.add_routes(app)
    app.router.add_get("/openapi.json", openapi)
    return app


async def serve(lifecycle: Lifecycle) -> None:
    """Serve until SIGTERM, then stop listening and let in-flight requests finish."""
    settings = lifecycle.settings
    if not isinstance(settings, IngestSettings):
        settings = load_ingest_settings()
    # asyncio.to_thread runs boto3 calls in the default executor: bound it to the pool size.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=settings.aws_concurrency, thread_name_prefix="dynamodb")
    )
    # Every request ingest sends is built by its own code from a validated payment or id:
    # botocore's check of each against the API model, and its User-Agent assembled twice
    # per call, are CPU spent on every payment for nothing (DynamoDB still refuses a bad
    # request). See pulse.clients.aws_client.
    ddb = aws_client(
        "dynamodb",
        settings,
        max_pool=settings.aws_concurrency,
        parameter_validation=False,
        user_agent="pulse-ingest",
    )
    store = PaymentStore(ddb, settings.names)
    lifecycle.add_check("dynamodb", store.check_tables)
    authenticator = Authenticator(
        TokenVerifier.from_settings(settings),
        ApiKeyTable(ddb, settings.names.api_keys_table),
        key_cache_seconds=settings.api_key_cache_seconds,
    )
    # The throttles' Redis: a reply within 2 s or the request goes on unthrottled, and no
    # waiting out a failover (pulse.throttling fails open).
    throttle_redis = redis_client(
        settings, max_connections=32, pool_timeout=2, socket_timeout=2, failover_retries=0
    )
    throttles = _throttles(settings, throttle_redis)
    access = AccessControl(
        authenticator, **throttles, trusted_proxy_hops=settings.trusted_proxy_hops
    )
    hooks = WebhookNames.from_prefix(settings.resource_prefix)
    webhooks = WebhookEndpointsApi(
        settings,
        WebhookEndpoints.of(ddb, aws_client("ssm", settings), hooks, settings),
        DeliveryQueue(aws_client("sqs", settings), hooks.queue),
        AttemptLog(ddb, hooks.attempts),
        ddb,
    )
    app = create_app(settings, store, access, webhooks)
    # Modules and the client's service model live as long as the process; a request's
    # objects die young. The collector had taken about 4% of the CPU per payment, most of
    # it in full collections walking what start-up made.
    settle_collector(BATCH_YOUNG_THRESHOLD)
    health = HealthReporter.of(throttle_redis, settings)
    health.add(IngestThroughput())
    try:
        async with serving_api(app, lifecycle), health.running(lifecycle.stopping):
            await lifecycle.stopping.wait()
            log.info("stopping: finishing in-flight requests")
    finally:
        await authenticator.close()
        await throttle_redis.aclose()


def _throttles(settings: IngestSettings, redis: RedisClient) -> dict[str, Throttle | None]:
    """The principals' budget and the failed-credential limit per address (None: off)."""
    prefix = settings.redis_prefix
    budget = failures = None
    if settings.rate_limit_per_second > 0:
        quota = Quota.from_rate(
            "per-principal", settings.rate_limit_per_second, settings.rate_limit_burst
        )
        budget = Throttle(redis, quota, key_prefix=prefix)
    if settings.auth_failures_per_minute > 0:
        quota = Quota("failed-credentials", settings.auth_failures_per_minute, 60)
        failures = Throttle(redis, quota, key_prefix=prefix)
    return {"budget": budget, "failures": failures}
