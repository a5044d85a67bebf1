"""The agent's full command line and its serve loop, both derived from the registry in wire.py
(cli.py runs a plain ``probe`` without them)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import fsutil, netprobe, ops, probe, transfers, wire
from .keys import sweep_transfers
from .wire import SCHEMA, BadRequest, json_line


def answer(line, root, data_dir):
    """One serve request line -> one reply dict (never raises)."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"schema": SCHEMA, "error": "invalid JSON request: %s" % exc}
    if not isinstance(request, dict):
        return {"schema": SCHEMA, "error": "request must be a JSON object"}
    op = request.get("op")
    try:
        reply = ops.handle(request, ops.Context(root, data_dir))
    except BadRequest as exc:
        reply = {"schema": SCHEMA, "error": str(exc)}
    except Exception as exc:
        reply = {"schema": SCHEMA, "error": "%s failed: %s: %s" % (op, type(exc).__name__, exc)}
    if "id" in request:
        reply.setdefault("id", request["id"])  # a job reply's "id" is the job id
    return reply


def serve(root, data_dir, stdin, stdout):
    """Answer requests until EOF (binary ``stdin``/``stdout``): a framed message (wire's
    "messages") gets a framed reply, a bare JSON line a bare reply line. Every read is
    bounded: a header line by MAX_REQUEST_LINE, a body by MAX_MESSAGE_BYTES."""
    try:
        while True:
            line = stdin.readline(wire.MAX_REQUEST_LINE + 1)
            if not line:
                break
            try:
                size = wire.message_header(line)
            except wire.MessageError as exc:  # the framing is lost: say why, then stop
                stdout.write(json_line({"schema": SCHEMA, "error": str(exc)}).encode())
                stdout.flush()
                return 2
            if size is not None:
                body = stdin.read(size + 1)
                try:
                    request = wire.message_body(body)
                except wire.MessageError as exc:
                    stdout.write(json_line({"schema": SCHEMA, "error": str(exc)}).encode())
                    stdout.flush()
                    return 2
                reply = answer(request, root, data_dir)
                try:
                    stdout.write(wire.frame_message(reply) + b"\n")
                except ValueError as exc:  # a reply over the bound: an error reply instead
                    error = "%s: the reply is too large: %s" % (reply_op(request), exc)
                    stdout.write(wire.frame_message({"schema": SCHEMA, "error": error}) + b"\n")
            elif not line.endswith(b"\n") and len(line) > wire.MAX_REQUEST_LINE:
                skip_line(stdin)
                error = "a request line is longer than %d bytes: send it as a framed message" % (
                    wire.MAX_REQUEST_LINE
                )
                stdout.write(json_line({"schema": SCHEMA, "error": error}).encode())
            elif line.strip():
                stdout.write(json_line(answer(line, root, data_dir)).encode())
            stdout.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


def skip_line(stdin):
    """Read past the rest of an overlong line, a bounded piece at a time."""
    while True:
        piece = stdin.readline(wire.MAX_REQUEST_LINE)
        if not piece or piece.endswith(b"\n"):
            return


def reply_op(request):
    try:
        return str(json.loads(request).get("op"))
    except (ValueError, AttributeError):
        return "the request"


class AgentParser(argparse.ArgumentParser):
    """argparse that also answers a bad command line with a JSON error line (exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stdout.write(json_line({"schema": SCHEMA, "error": message}))
        sys.exit(2)


TYPES = {"str": str, "int": int, "float": float}


def add_args(parser, args):
    parser.add_argument("--data-dir", default=None, help=wire.DATA_DIR_HELP)
    for arg in args:
        options = {"help": arg.help or None, "type": TYPES[arg.type]}
        if arg.metavar:
            options["metavar"] = arg.metavar
        if arg.nargs:
            options["nargs"] = arg.nargs
        if arg.name.startswith("--"):
            options.update(default=arg.default, required=arg.required)
        parser.add_argument(arg.name, **options)


def build_parser():
    """The command line: one command per registered op with a CLI form, and wire.COMMANDS."""
    parser = AgentParser(prog="lepton_agent", description="leptonctl host agent")
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    for name, cls in wire.OPS.items():
        if cls.CLI is not None:
            add_args(commands.add_parser(name, help=cls.SUMMARY), cls.CLI)
    for command in wire.COMMANDS:
        add_args(commands.add_parser(command.name, help=command.summary), command.args)
    return parser


def op_command(cls, args, data_dir):
    """An op run from the command line: one JSON line; exit 2 for a malformed request."""
    request = {"op": cls.OP}
    for arg in cls.CLI:
        name = arg.name.lstrip("-").replace("-", "_")
        request[name] = getattr(args, name)
    if cls.OP == "job-status":
        request["ids"] = args.ids or None
    try:
        if cls.STDIN_FIELD:
            text = sys.stdin.read()
            try:
                request[cls.STDIN_FIELD] = json.loads(text)
            except ValueError as exc:
                what = "job spec" if cls.OP == "job-start" else cls.STDIN_FIELD
                raise BadRequest("%s on stdin is not JSON: %s" % (what, exc)) from None
        reply, code = ops.handle(request, ops.Context(getattr(args, "root", "/"), data_dir)), 0
    except BadRequest as exc:
        reply, code = {"schema": SCHEMA, "error": str(exc)}, 2
    except Exception as exc:
        error = "%s failed: %s: %s" % (args.command, type(exc).__name__, exc)
        reply, code = {"schema": SCHEMA, "error": error}, 1
    sys.stdout.write(json_line(reply))
    return code


def stream_command(args, data_dir):
    """request / send / recv / net-probe: the data plane's command lines."""
    try:
        if args.command == "recv":
            return transfers.receive(data_dir, wire.check_transfer_id(args.transfer))
        streaming = args.command in ("send", "net-probe")
        bound = wire.MAX_MESSAGE_BYTES  # a spec or request is at most one message's size
        stdin = sys.stdin.buffer
        line = stdin.readline(bound + 1) if streaming else stdin.read(bound + 1)
        if len(line) > bound:
            raise BadRequest("the request on stdin is over %d bytes" % bound)
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise BadRequest("the request on stdin is not JSON: %s" % exc) from None
        if not isinstance(request, dict):
            raise BadRequest("the request on stdin must be a JSON object")
        if args.command == "send":
            return transfers.send(data_dir, request)
        if args.command == "net-probe":
            return netprobe.net_probe(data_dir, request)
        reply = answer(json.dumps(request), "/", data_dir)
        sys.stdout.write(json_line(reply))
        return 1 if "error" in reply else 0
    except BadRequest as exc:
        sys.stdout.write(json_line({"schema": SCHEMA, "error": str(exc)}))
        return 2


def main(argv=None):
    fsutil.USER_UMASK = os.umask(0o077)  # jobs and copies get the user's umask back
    args = build_parser().parse_args(argv)
    if args.command == "version":
        sys.stdout.write(json_line(ops.HANDLERS["version"](None, None)))
        return 0
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or fsutil.default_data_dir()))
    if args.command in ("serve", "request", "send", "recv", "net-probe"):
        sweep_transfers(data_dir)  # what a killed transfer left: gone at the next use
    if args.command == "serve":
        return serve(args.root, data_dir, sys.stdin.buffer, sys.stdout.buffer)
    if args.command == "probe":
        sys.stdout.write(json_line(probe.probe(args.root, data_dir)))
        return 0
    if args.command in wire.OPS:
        return op_command(wire.OPS[args.command], args, data_dir)
    return stream_command(args, data_dir)
