"""The ``eventcast`` command: serve | publish | subscribe | bench | operator."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

if TYPE_CHECKING:
    from app.settings import Settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="eventcast: a WebSocket event gateway.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"eventcast: {message}", err=True)
    raise typer.Exit(code)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env EVENTCAST_HOST, 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env EVENTCAST_PORT, 8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [env EVENTCAST_WORKERS, 1]")] = None,
    broker: Annotated[
        str | None, typer.Option(help="memory:// or redis://host:port/db [EVENTCAST_BROKER_URL]")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug|info|warning|error [EVENTCAST_LOG_LEVEL]")
    ] = None,
) -> None:
    """Run the gateway (every flag may also come from its EVENTCAST_* variable)."""
    from app.settings import Settings

    overrides = {"host": host, "port": port, "workers": workers, "broker_url": broker, "log_level": log_level}
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = Settings.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(problems.replace("Value error, ", ""))
        return
    # Workers are separate processes that build their settings from the environment: hand the flags down.
    for key, value in given.items():
        os.environ[f"EVENTCAST_{key.upper()}"] = str(value)
    from app.logs import log_config

    logging_config = log_config(settings)
    logging.config.dictConfig(logging_config)
    created_metrics_dir = _prepare_metrics_dir(settings)
    os.environ["EVENTCAST_INSTANCE_ID"] = settings.instance_id  # every worker of this serve shares it
    if settings.workers > 1:  # the workers exit when this process dies (app/supervisor.py)
        os.environ["EVENTCAST_SUPERVISOR_PID"] = str(os.getpid())
    base = f"http://{settings.host}:{settings.port}"
    metrics_url = (
        f"http://{settings.internal_host or settings.host}:{settings.internal_port}/metrics"
        if settings.internal_port
        else f"{base}/metrics"
    )
    if sys.stderr.isatty():
        typer.echo(
            f"eventcast on {base} (broker {settings.broker_scheme}://, {settings.workers} worker(s))\n"
            f"  subscribe: ws://{settings.host}:{settings.port}/ws/events?channels=default\n"
            f"  publish:   curl -X POST {base}/events -H 'content-type: application/json' "
            """-d '{"channel":"default","type":"hello","data":{"n":1}}'\n"""
            f"  health:    {base}/healthz  ready: {base}/readyz  metrics: {metrics_url}"
            + (f"\n  console:   {base}/console?channels=default" if settings.console else ""),
            err=True,
        )
    else:  # not a terminal (a container, a test): keep stderr pure JSON lines
        logging.getLogger("eventcast").info(
            "eventcast serving",
            extra={"event": "serve", "url": base, "metrics": metrics_url, "workers": settings.workers},
        )
    try:
        _run_uvicorn(settings, logging_config)
    finally:
        if created_metrics_dir is not None:
            shutil.rmtree(created_metrics_dir, ignore_errors=True)


def _prepare_metrics_dir(settings: Settings) -> str | None:
    """With several workers, give prometheus_client a fresh per-pod directory (returns it if we made it).

    Every worker writes its metric values there and /metrics merges them; a stale file from an earlier run
    would be counted again, so a given ``metrics_dir`` is wiped first. One worker keeps the plain registry.
    """
    if settings.workers <= 1:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    if settings.metrics_dir:
        os.makedirs(settings.metrics_dir, exist_ok=True)
        for name in os.listdir(settings.metrics_dir):
            if name.endswith(".db"):
                os.unlink(os.path.join(settings.metrics_dir, name))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.metrics_dir
        return None
    # Named after this process, so a later serve can remove what a killed one (SIGKILL, OOM) left behind.
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name.removeprefix(METRICS_DIR_PREFIX)
        if name.startswith(METRICS_DIR_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    created = os.path.join(base, f"{METRICS_DIR_PREFIX}{os.getpid()}")
    shutil.rmtree(created, ignore_errors=True)
    os.makedirs(created, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = created
    return created


METRICS_DIR_PREFIX = "eventcast-metrics-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_uvicorn(settings: Settings, logging_config: dict[str, Any]) -> None:
    import uvicorn

    from app.supervisor import ReusePortSupervisor, bind_reuseport

    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level,
        # The public port's HTTP front bounds every socket and serves subscribers natively, without ASGI
        # (app/transports/http.py); uvicorn's WebSocket serves the ASGI engine (EVENTCAST_WS_ENGINE=asgi).
        "http": "app.transports.http:GatewayHttpProtocol",
        "ws": "auto",
        "ws_max_size": settings.max_control_bytes,
        "ws_ping_interval": settings.idle_timeout_seconds / 2,
        "ws_ping_timeout": settings.idle_timeout_seconds / 2,
        "ws_per_message_deflate": settings.ws_per_message_deflate,  # the asgi engine's, per client
        "timeout_graceful_shutdown": 5,
        "lifespan": "on",
        "log_config": logging_config,
    }
    if settings.workers == 1:
        uvicorn.run("app.main:create_app", **options)
        return
    # Several workers: a listening socket each (SO_REUSEPORT), so clients spread evenly (app/supervisor.py).
    config = uvicorn.Config("app.main:create_app", **options)
    try:
        sockets = bind_reuseport(settings.host, settings.port, settings.workers, config.backlog)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error(
            "cannot listen on %s:%s: %s", settings.host, settings.port, exc
        )
        sys.exit(1)
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d, %d workers with a socket each",
        settings.host,
        sockets[0].getsockname()[1],
        settings.workers,
    )
    ReusePortSupervisor(config, sockets).run()


@cli.command()
def publish(
    channel: str,
    type: Annotated[str, typer.Argument(help="Event type, e.g. node.created")],
    data: Annotated[str, typer.Argument(help="Event data as JSON")],
    url: Annotated[str, typer.Option(help="Gateway base URL")] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(envvar="EVENTCAST_TOKEN", help="Publisher API key or JWT")
    ] = None,
) -> None:
    """Publish one event and print its id."""
    import httpx

    try:
        payload = json.loads(data)
    except ValueError as exc:
        _fail(f"DATA is not valid JSON: {exc}")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/events",
            json={"channel": channel, "type": type, "data": payload},
            headers=headers,
            timeout=10,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}", 1)
        return
    if response.status_code != 202:
        _fail(f"HTTP {response.status_code}: {response.text}", 1)
    for event_id in response.json()["ids"]:
        typer.echo(event_id)


async def _subscribe(
    url: str,
    since: str | None,
    max_events: int | None,
    reconnect: bool,
    token: str | None,
    types: list[str],
    where: list[str],
) -> None:
    """Print events as JSON lines (stdout) and the welcome, closes and gaps (stderr), through app.client."""
    from app.client import Client, Disconnect, Stopped

    def welcomed(welcome: dict[str, Any]) -> None:
        typer.echo(json.dumps(welcome), err=True)

    def disconnected(info: Disconnect) -> None:
        then = f"; reconnecting in {info.delay:.1f} s" if info.will_retry and info.delay is not None else ""
        typer.echo(f"closed: {info.code} {info.reason}{then}", err=True)

    def resync(welcome: dict[str, Any]) -> None:
        typer.echo(
            f"recovered: false ({welcome.get('reason')}): history did not cover the gap, events may be missing",
            err=True,
        )

    try:
        client = Client(
            url,
            since=since,
            token=token,
            types=[t for value in types for t in value.split(",") if t] or None,
            where=_where_options(where) or None,
            reconnect=reconnect,
            on_welcome=welcomed,
            on_disconnect=disconnected,
            on_resync=resync,
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    received = 0
    try:
        async for event in client:
            sys.stdout.write(json.dumps(event.as_dict()) + "\n")
            sys.stdout.flush()
            received += 1
            if max_events is not None and received >= max_events:
                break
    except Stopped as exc:
        _fail(f"stopped: {exc.code} {exc.reason}", 1)
    finally:
        await client.close()


def _where_options(items: list[str]) -> dict[str, Any]:
    from app.client import _where

    for item in items:
        if "=" not in item or item.startswith("="):
            _fail(f"--where {item!r}: use --where FIELD=VALUE")
    return dict(_where(items))


@cli.command()
def subscribe(
    url: Annotated[str, typer.Argument(help="e.g. ws://127.0.0.1:8000/ws/events?channels=a,b")],
    since: Annotated[str | None, typer.Option(help="Resume after this event id")] = None,
    max_events: Annotated[int | None, typer.Option(help="Exit after this many events")] = None,
    reconnect: Annotated[bool, typer.Option(help="Reconnect and resume when the connection ends")] = True,
    token: Annotated[
        str | None, typer.Option(envvar="EVENTCAST_TOKEN", help="Subscriber JWT (sent as a Bearer header)")
    ] = None,
    types: Annotated[
        list[str] | None, typer.Option("--types", help="Type globs, e.g. 'node.*,edge.added' (filter)")
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="FIELD=VALUE equality on data (repeat; filter)")
    ] = None,
) -> None:
    """Print events as JSON lines; on disconnect, reconnect with backoff and resume from the last id.

    Stops (exit 1) when the gateway refuses the subscription (4400, 4401, 4403): retrying would not help.
    """
    try:
        asyncio.run(_subscribe(url, since, max_events, reconnect, token, types or [], where or []))
    except KeyboardInterrupt:
        pass


@cli.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Namespace to watch (repeat; none: all)")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between reconciliations")] = 15.0,
    liveness: Annotated[
        str | None, typer.Option(help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(help="kopf peering object name: replicas elect one that acts (none: always act)"),
    ] = None,
    identity: Annotated[
        str | None, typer.Option(help="This replica's name in the peering (default: hostname/start time)")
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="Peering priority; the highest live one acts (default: oldest first)")
    ] = None,
    peering_lifetime: Annotated[
        int, typer.Option(min=1, max=3600, help="Seconds a silent replica stays the leader")
    ] = 60,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve the operator's own /metrics on this port")
    ] = None,
    metrics_address: Annotated[str, typer.Option(help="Address of the operator's /metrics")] = "0.0.0.0",
) -> None:
    """Run the ConnectionAutoscaler operator (kopf): docs/operator.md."""
    from app.operator.main import Options, run
    from app.operator.peering import default_identity, default_priority

    run(
        Options(
            namespaces=namespace or [],
            interval=interval,
            liveness=liveness,
            peering=peering,
            identity=identity or default_identity(),
            priority=default_priority() if priority is None else priority,
            peering_lifetime=peering_lifetime,
            metrics_address=metrics_address,
            metrics_port=metrics_port,
        )
    )


def _register_optional() -> None:
    try:
        from app.bench.command import bench  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    cli.command("bench")(bench)


_register_optional()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
