"""``python -m ws_gateway``: the WebSocket gateway on PULSE_HTTP_PORT (8090)."""

from __future__ import annotations

import asyncio

from pulse.auth import TokenVerifier
from pulse.channels import ChannelKeys
from pulse.clients import aws_client, pubsub_client, redis_client
from pulse.collector import Freezer, settle_collector
from pulse.health import HealthReporter
from pulse.logging import get_logger
from pulse.service import Lifecycle, run_service, serving_api
from ws_gateway.burst import SocketBurst, default_threads
from ws_gateway.durable import DurableRecord
from ws_gateway.front import front_door
from ws_gateway.health import Connections, E2eLatency
from ws_gateway.history import ChannelHistory
from ws_gateway.live import LiveHub
from ws_gateway.presence import Presence
from ws_gateway.server import Gateway
from ws_gateway.settings import GatewaySettings, load_gateway_settings

log = get_logger("ws_gateway")


async def serve(lifecycle: Lifecycle) -> None:
    settings = lifecycle.settings
    if not isinstance(settings, GatewaySettings):  # run_service passes what main() loaded
        raise TypeError("ws-gateway needs GatewaySettings")
    keys = ChannelKeys(settings.redis_prefix)
    redis = redis_client(settings)
    lifecycle.add_check("redis", redis.ping)
    durable = DurableRecord(
        aws_client("dynamodb", settings, read_timeout=10.0, max_attempts=3),
        settings.names.events_table,
        limit=settings.durable_recovery_limit,
        settle_seconds=settings.durable_settle_seconds,
    )
    history = ChannelHistory(
        redis,
        keys,
        batch_size=settings.replay_batch_size,
        limits=settings.history,
        durable=durable,
    )
    latency = E2eLatency()
    burst = SocketBurst(settings.fanout_threads or default_threads())
    # The pub/sub connection gets a client of its own, without redis-py's health checks; its
    # name lets an operator (and the gap-fill test) find it in CLIENT LIST.
    hub = LiveHub(
        pubsub_client(settings, client_name=f"{settings.redis_prefix}ws-gateway-live"),
        keys,
        history,
        latency=latency,
        burst=burst,
    )
    await hub.start()
    verifier = TokenVerifier.from_settings(settings)
    presence = Presence(redis, keys, lease_seconds=settings.presence_lease_seconds)
    presence_upkeep = asyncio.create_task(presence.run(lifecycle.stopping), name="presence")
    gateway = Gateway(settings, lifecycle, hub, history, verifier=verifier, presence=presence)
    health = HealthReporter.of(redis, settings)
    health.add(latency, Connections(gateway.clients))
    try:
        # The ops routes (/healthz, /readyz, /metrics) are mounted by serving_api: on the
        # public port, or /metrics on PULSE_OPS_PORT alone when that is set. A listen queue of
        # 2,048 absorbs bursts of thousands of connects while the loop is busy fanning out.
        # The front door serves WebSocket upgrades itself and hands the rest to aiohttp.
        async with (
            serving_api(
                gateway.app(),
                lifecycle,
                backlog=2048,
                front=front_door(gateway.websocket_protocol),
            ),
            health.running(lifecycle.stopping),
        ):
            log.info("ws-gateway listening", host=settings.http_host, port=settings.http_port)
            # What start-up made (modules, classes, settings) lives as long as the process:
            # keep it out of every later garbage collection. A full collection scans every
            # tracked object, and with thousands of connections each one stalls every client.
            settle_collector()
            # Connections live long too: what survives a collection is frozen every so often,
            # so that full collections walk only what came since, not every connection.
            freezer = None
            if settings.gc_freeze_interval_seconds > 0:
                freezer = asyncio.create_task(
                    Freezer(settings.gc_freeze_interval_seconds).run(lifecycle.stopping),
                    name="gc-freezer",
                )
            try:
                await lifecycle.stopping.wait()
            finally:
                if freezer is not None:
                    await freezer
                # Close every connection with 1001 so clients reconnect elsewhere, then stop.
                await gateway.close_all_within(settings.shutdown_grace_seconds)
    finally:
        # Ends the presence upkeep too when serving failed to start (a port already in use):
        # the process must exit with the error, not wait for a signal.
        lifecycle.stopping.set()
        await presence_upkeep
        await hub.close()
        await redis.aclose()
        burst.close()


def main() -> None:
    raise SystemExit(run_service(load_gateway_settings, serve, package="pulse-ws-gateway"))


if __name__ == "__main__":
    main()
