"""`rpremote serve`: the local endpoint emulator's command line (``local/serve.py`` runs it).

The arguments split into the server's own and one group per ``--endpoint NAME``, each parsed
by its own parser, so an option is refused or taken where it stands.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .. import platform as rp


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rpremote serve",
        usage="rpremote serve [server options] [--endpoint NAME [endpoint options]] ...",
        description=textwrap.fill(
            "Run the local RunPod Serverless endpoint emulator. It hosts any `runpod` worker: "
            "give each endpoint with --endpoint NAME followed by its own options (--worker-cmd, "
            "--workers-min, ...: the endpoint options below). --endpoint may be repeated. "
            "Server options may come anywhere: before, between or after the endpoints. (An "
            "option of both kinds would belong to the endpoint it follows.)", 78),
        epilog=_endpoint_options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p._optionals.title = "server options"
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--api-key", default=None,
                   help="key clients must send (default: $RPREMOTE_API_KEY, else generated "
                        "and stored 0600 in the state directory)")
    p.add_argument("--state", type=Path, default=None,
                   help="directory of the job store, key and worker logs; reuse it to resume")
    p.add_argument("--idle-shutdown", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without client requests or jobs "
                        "(the server rpremote starts on its own uses this)")
    p.add_argument("--idle-stop", default=None, metavar="DURATION",
                   help="in a RunPod Pod: stop the Pod after this long (90s, 30m, 2h) without "
                        "requests or jobs, through the API with the Pod's own key")
    p.add_argument("--max-hours", type=float, default=None, metavar="H",
                   help="in a RunPod Pod: stop the Pod H hours after the server started, busy "
                        "or not (its unfinished jobs fail with a note saying why)")
    p.add_argument("--no-resume-queue", action="store_true",
                   help="fail, instead of running, the jobs a previous server left queued in "
                        "--state (the server rpremote starts on its own: their callers were "
                        "told that their outcome is unknown)")
    p.add_argument("--image", action="append", default=[], metavar="NAME=COMMAND",
                   help="run workers of container image NAME (endpoints made through "
                        "POST /v2/serverless) with COMMAND, e.g. --image "
                        "myorg/worker:1.0='python handler.py'; NAME without a tag serves every "
                        "tag (repeatable; rpremote's own worker image is built in)")
    p.add_argument("--pod-capacity", action="append", default=[], metavar="GPU_TYPE=N",
                   help="at most N GPUs of this GPU type id in running Pods (POST /v2/pods); "
                        "a Pod beyond it is refused as RunPod refuses one without capacity "
                        "(400), e.g. --pod-capacity 'NVIDIA GeForce RTX 4090=0' (repeatable; "
                        "types not named: no limit)")
    p.add_argument("--pod-proxy-timeout", type=float, default=100.0, metavar="SECONDS",
                   help="the Pod proxy's 524 after this long without a response (RunPod: 100)")
    t = p.add_argument_group("timings (mostly for tests)")
    t.add_argument("--take-hold", type=float, default=20.0, help="job-take long-poll, s")
    t.add_argument("--stop-hold", type=float, default=20.0, help="job-stop long-poll, s")
    t.add_argument("--stream-hold", type=float, default=3.0, help="/stream long-poll, s")
    t.add_argument("--ping-interval", type=int, default=2000, help="worker heartbeat, ms (>=1000)")
    t.add_argument("--lost-after", type=float, default=30.0,
                   help="heartbeat silence after which a worker is lost, s")
    t.add_argument("--stop-grace", type=float, default=10.0,
                   help="a worker still running a stopped job after this long is refreshed, s")
    t.add_argument("--retention-run", type=float, default=rp.RETENTION_RUN_S,
                   help="result retention of /run jobs, s")
    t.add_argument("--retention-sync", type=float, default=rp.RETENTION_RUNSYNC_S,
                   help="result retention of /runsync jobs, s")
    t.add_argument("--webhook-retry-delay", type=float, default=rp.WEBHOOK_RETRY_DELAY_S,
                   help="delay between webhook attempts, s")
    b = p.add_argument_group("offload store (big payloads)")
    b.add_argument("--blob-ttl", type=float, default=24 * 3600.0,
                   help="pieces unused this long are removed, s (default one day)")
    b.add_argument("--blob-max-mb", type=int, default=8192, help="largest piece, MiB")
    b.add_argument("--blob-total-mb", type=int, default=65536,
                   help="store size; least recently used pieces go first, MiB")
    return p


def _endpoint_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpremote serve ... --endpoint NAME", add_help=False,
                                usage="--endpoint NAME [endpoint options]")
    p.add_argument("name")
    p.add_argument("--worker-cmd", default=None,
                   help='command that starts one worker, e.g. "python handler.py"')
    p.add_argument("--workers-min", type=int, default=rp.WORKERS_MIN_DEFAULT)
    p.add_argument("--workers-max", type=int, default=rp.WORKERS_MAX_DEFAULT)
    p.add_argument("--idle-timeout", type=int, default=rp.IDLE_TIMEOUT_DEFAULT_S, help="seconds")
    p.add_argument("--scaler", choices=rp.SCALER_TYPES, default=rp.SCALER_QUEUE_DELAY)
    p.add_argument("--scaler-value", type=float, default=rp.SCALER_VALUE_DEFAULT)
    p.add_argument("--execution-timeout", type=int, default=rp.EXECUTION_TIMEOUT_DEFAULT_MS,
                   help="default policy.executionTimeout, ms")
    p.add_argument("--gpu", default="CPU", help="label passed to workers as ?gpu=")
    p.add_argument("--cwd", default=None, help="working directory of the workers")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="environment variable for the workers (repeatable)")
    return p


def _endpoint_options_help() -> str:
    parser = _endpoint_parser()
    formatter = parser._get_formatter()
    formatter.start_section("endpoint options (after --endpoint NAME, for that endpoint)")
    formatter.add_arguments([a for a in parser._actions if a.option_strings])
    formatter.end_section()
    return formatter.format_help()


def _takes_value(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Each option string of ``parser``, and whether a value follows it."""
    return {opt: action.nargs != 0 for action in parser._actions for opt in action.option_strings}


def _split_endpoints(argv: list[str]) -> tuple[list[str], list[list[str]]]:
    """The server's arguments, and one group per ``--endpoint`` (its NAME, then its options).

    A server option goes to the server wherever it stands, with its value (``--state DIR`` or
    ``--state=DIR``); every other argument goes to the endpoint group it follows, so an unknown
    option is refused by the parser of where it stands, naming itself. An option of both kinds
    (none today) belongs to the endpoint it follows. An option's value stays with it, whatever
    it looks like. An endpoint option before any ``--endpoint`` is an error that says so.
    """
    server = _takes_value(_serve_parser())
    endpoint = _takes_value(_endpoint_parser())
    groups: list[list[str]] = []
    head: list[str] = []
    args = iter(argv)
    for arg in args:
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name == "--endpoint":
            groups.append([] if arg == name else [arg.split("=", 1)[1]])
            continue
        if groups and name in endpoint:
            into, takes = groups[-1], endpoint[name]
        elif name in server:
            into, takes = head, server[name]
        elif not groups and name in endpoint:
            _serve_parser().error(f"{name} is an endpoint option: give it after --endpoint NAME")
        else:
            into, takes = (groups[-1] if groups else head), False
        into.append(arg)
        if takes and arg == name:  # the value is the next argument, whatever it looks like
            value = next(args, None)
            if value is not None:
                into.append(value)
    return head, groups


def main(argv: list[str]) -> int:
    from ..local.config import EmulatorTimings, EndpointSpec
    from ..local.images import parse_image_option
    from ..local.pod_runner import PodSettings, parse_capacity_option
    from ..local.serve import ServeError, serve
    from ..paths import data_dir

    head, groups = _split_endpoints(argv)
    args = _serve_parser().parse_args(head)
    images = {}
    for value in args.image:
        try:
            name, command = parse_image_option(value)
        except ValueError as err:
            _serve_parser().error(str(err))
        images[name] = command
    capacity = {}
    for value in args.pod_capacity:
        try:
            gpu_type, free = parse_capacity_option(value)
        except ValueError as err:
            _serve_parser().error(str(err))
        capacity[gpu_type] = free
    if args.pod_proxy_timeout <= 0:
        _serve_parser().error("--pod-proxy-timeout must be more than 0 seconds")
    specs = []
    for group in groups:
        ep_parser = _endpoint_parser()
        if not group or group[0].startswith("-"):
            ep_parser.error("--endpoint needs a NAME")
        e = ep_parser.parse_args(group)
        env = {}
        for kv in e.env:
            if "=" not in kv:
                ep_parser.error(f"--env {kv!r}: expected K=V")
            k, v = kv.split("=", 1)
            env[k] = v
        try:
            specs.append(EndpointSpec(
                id=e.name, workerCmd=e.worker_cmd, env=env, cwd=e.cwd, gpu=e.gpu,
                workersMin=e.workers_min, workersMax=e.workers_max, idleTimeout=e.idle_timeout,
                scalerType=e.scaler, scalerValue=e.scaler_value,
                executionTimeoutMs=e.execution_timeout,
            ))
        except ValueError as err:
            print(f"rpremote serve: endpoint {e.name}: {err}", file=sys.stderr)
            return 2
    from ..durations import seconds
    from ..errors import ConfigError

    try:
        idle_stop_s = seconds(args.idle_stop) if args.idle_stop else None
    except ConfigError as err:
        _serve_parser().error(f"--idle-stop: {err}")
    if args.max_hours is not None and args.max_hours <= 0:
        _serve_parser().error("--max-hours is a positive number of hours")
    timings = EmulatorTimings(
        take_hold_s=args.take_hold, stop_hold_s=args.stop_hold, stream_hold_s=args.stream_hold,
        ping_interval_ms=args.ping_interval, lost_after_s=args.lost_after,
        stop_grace_s=args.stop_grace, retention_run_s=args.retention_run,
        retention_sync_s=args.retention_sync, webhook_retry_delay_s=args.webhook_retry_delay,
        blob_ttl_s=args.blob_ttl, blob_piece_max_mb=args.blob_max_mb,
        blob_total_max_mb=args.blob_total_mb,
    )
    try:
        return serve(
            host=args.host or "127.0.0.1", port=args.port,
            state_dir=args.state or data_dir() / "emulator", api_key=args.api_key,
            endpoints=specs, timings=timings, explicit_host=args.host is not None,
            idle_shutdown_s=args.idle_shutdown, resume_queue=not args.no_resume_queue,
            images=images, idle_stop_s=idle_stop_s, max_hours=args.max_hours,
            pods=PodSettings(capacity=capacity, proxy_timeout_s=args.pod_proxy_timeout),
        )
    except ServeError as err:
        print(f"rpremote serve: {err}", file=sys.stderr)
        return 2
