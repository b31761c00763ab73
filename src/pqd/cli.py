"""Command line: ``pqd run``, ``pqd once``, ``pqd check-config``, ``pqd hash-password``,
``pqd --version``.

Every error a user can cause ends here as one line on stderr and an exit code: 2 for usage
(flags), 78 (EX_CONFIG) for a bad config file or environment. Never a traceback for those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import pqd

if TYPE_CHECKING:
    from pqd.config.load import Config
    from pqd.supervisor.interpreter import Interpreters

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


class UsageError(Exception):
    """A bad command line; exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus a message over several lines; operators get one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _PrintVersion(argparse.Action):
    """``--version``, looked up only when asked for: argparse's own "version" action needs the
    text when the parser is built, and reading it (importlib.metadata) cost every other command,
    ``pqd once`` included, about 25 ms of CPU."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0)
        self.help = "show pqd's version and exit"

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        sys.stdout.write(f"pqd {pqd.__version__}\n")
        parser.exit()


def _build_parser() -> _Parser:
    parser = _Parser(prog="pqd", description="Probe Python multiprocessing health for Prometheus.")
    parser.add_argument("--version", action=_PrintVersion)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="run the daemon")
    _add_config_flags(run, run=True)

    once = commands.add_parser("once", help="run one cycle of each probe, print it, exit 0/1")
    _add_config_flags(once, run=False)
    once.add_argument("--probe", action="append", metavar="NAME", help="only this probe")
    once.add_argument("--json", action="store_true", help="print the results as JSON")
    once.add_argument(
        "--textfile",
        metavar="PATH",
        help="write the metrics for node_exporter's textfile collector",
    )

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", metavar="FILE")

    commands.add_parser(
        "hash-password",
        help="read a password (prompted for on a terminal, else the first line of stdin) and "
        "print its bcrypt hash for basic_auth_users in the web config",
    )
    return parser


def _add_config_flags(sub: argparse.ArgumentParser, *, run: bool) -> None:
    """--config, and a flag for each setting (pqd.config.load's table); `pqd once` leaves out those
    only the daemon uses."""
    from pqd.config.doc import flag_help
    from pqd.config.load import SETTINGS, flag_origin

    sub.add_argument("--config", metavar="FILE", help="TOML config file (or $PQD_CONFIG)")
    for setting in SETTINGS.values():
        if run or not setting.spec.daemon_only:
            sub.add_argument(
                flag_origin(setting.name),
                dest=f"override_{setting.name}",
                metavar=setting.spec.metavar,
                help=flag_help(setting),
            )


def _flag_overrides(args: argparse.Namespace) -> dict[str, str]:
    return {
        name.removeprefix("override_"): value
        for name, value in vars(args).items()
        if name.startswith("override_") and value is not None
    }


def load_config(
    args: argparse.Namespace, environ: Mapping[str, str], interpreters: Interpreters
) -> Config:
    """Defaults < file < environment < flags, through the one loader every command and test
    uses (pqd.config.load.load_config); each probe's ``python`` is asked what it is. Raises
    ConfigError naming where the bad value came from: a flag (``--workers``: a usage error),
    else the file or environment."""
    from pqd.config.load import load_config

    return load_config(args.config, environ, _flag_overrides(args), python=interpreters.problem)


def _result_json(result: Any) -> dict[str, Any]:
    import dataclasses

    from pqd.results import result_to_json
    from pqd.trace import stuck_as_shown

    data = result_to_json(result)
    # The stacks that explain the failure only, as the text and the cycle's page show them.
    data["stuck"] = [dataclasses.asdict(p) for p in stuck_as_shown(result)]
    return data


def cmd_once(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pqd.errors import ConfigError
    from pqd.runner import containment
    from pqd.supervisor.interpreter import Interpreters
    from pqd.supervisor.runners import Runners
    from pqd.trace import render_headroom, render_summary, render_trace, render_where_stuck

    if args.textfile is not None:
        _check_textfile_target(args.textfile)
    interpreters = Interpreters()
    loaded = load_config(args, environ, interpreters)
    probes = list(loaded.probes)
    if args.probe:
        unknown = sorted(set(args.probe) - {p.name for p in probes})
        if unknown:
            raise UsageError(f"--probe={unknown[0]!r}: no such probe in the config")
        probes = [p for p in probes if p.name in args.probe]
    try:
        runners = Runners(containment.cgroup_parent(loaded.containment), interpreters=interpreters)
    except containment.ContainmentError as exc:
        raise ConfigError("containment", loaded.containment, str(exc)) from None
    # Orphans of a runner killed mid-cycle come back to us, to be reaped and not left to init.
    containment.become_child_subreaper()
    results = []
    try:
        for probe in probes:
            result = runners.run_cycle(probe)
            results.append(result)
            if not args.json:
                print("\n".join(render_trace(result)))
                print()
                summary = [*render_summary(result), *render_headroom(result)]
                print("\n".join([*summary, *render_where_stuck(result)]))
                print(flush=True)
    finally:
        runners.close()
    if args.json:
        print(json.dumps([_result_json(r) for r in results], indent=2))
    if args.textfile is not None:
        _write_textfile(args.textfile, loaded, results, runners)
    return EXIT_OK if all(r.success for r in results) else EXIT_FAILED


def _check_textfile_target(path: str) -> None:
    """Before any cycle: a target that cannot be written is a usage error now, not after the
    whole cycle. The textfile is replaced by rename: only ever over a regular file (as root,
    renaming over /dev/full, a FIFO or a symlink would replace the device node, pipe or link
    itself), and the temporary file is made beside it, so its directory must take a new file."""
    import stat

    if not path:
        raise UsageError("--textfile='': a path is required")
    try:
        mode: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None  # a new file; its directory is checked below
    except (OSError, ValueError) as exc:
        raise UsageError(f"--textfile={path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(
            f"--textfile={path!r}: exists and is not a regular file; refusing to replace it"
        )
    _check_textfile_directory(path)


def _check_textfile_directory(path: str) -> None:
    """Create and remove a file where write_textfile makes its temporary one: the operation
    itself rather than access(2), which asks for the real ids, not the effective ones, and
    not for every reason a create fails (a read-only mount, chattr +i, mode bits for others
    than root, no free inode). The name ends in ``.check``, not ``.prom``: node_exporter's
    textfile collector ignores it, as it does the temporary file."""
    directory = os.path.dirname(path) or "."
    probe = f"{path}.{os.getpid()}.check"
    try:
        fd = os.open(
            probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileNotFoundError:
        raise UsageError(f"--textfile={path!r}: directory {directory!r} does not exist") from None
    except NotADirectoryError:
        raise UsageError(f"--textfile={path!r}: {directory!r} is not a directory") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise UsageError(f"--textfile={path!r}: cannot write in {directory!r}: {why}") from None
    os.close(fd)
    os.unlink(probe)


def _write_textfile(path: str, loaded: Any, results: Sequence[Any], runners: Any) -> None:
    from prometheus_client import CollectorRegistry

    from pqd.metrics.series import probe_facts
    from pqd.metrics.writer import PqdMetrics, write_textfile

    registry = CollectorRegistry()
    metrics = PqdMetrics(
        registry,
        version=pqd.__version__,
        probes=[probe_facts(p, "subreaper", runners.interpreter(p)) for p in loaded.probes],
        process_collectors=False,
    )
    for result in results:
        metrics.observe_cycle(result)
    try:
        write_textfile(path, registry)
    except OSError as exc:
        raise UsageError(f"--textfile={path!r}: {exc.strerror or exc}") from None


def cmd_hash_password() -> int:
    import getpass

    from pqd.http.webconfig import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ").encode()
        if getpass.getpass("Confirm password: ").encode() != password:
            raise UsageError("the passwords do not match")
    else:
        # Like htpasswd -i: the first line, without its line ending; bytes, so any encoding works.
        password = sys.stdin.buffer.readline().rstrip(b"\r\n")
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(hashed)
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from pqd.config.load import config_from_file
    from pqd.supervisor.interpreter import Interpreters

    loaded = config_from_file(args.file, python=Interpreters().problem)
    names = ", ".join(p.name for p in loaded.probes)
    if loaded.web_config_file is not None:
        # The web config too, as `pqd run` would load it: a bad one would stop it with 78.
        from pqd.http.webconfig import ssl_context, web_config_from_file

        web = web_config_from_file(loaded.web_config_file)
        if web.tls is not None:
            ssl_context(web.tls)
    print(f"{args.file}: ok ({len(loaded.probes)} probe(s): {names})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        args = _build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: run, once, check-config or hash-password")
        if args.command == "once":
            return cmd_once(args, env)
        if args.command == "check-config":
            return cmd_check_config(args)
        if args.command == "hash-password":
            return cmd_hash_password()
        from pqd.daemon import run_daemon  # argparse admits no command but these four
        from pqd.supervisor.interpreter import Interpreters

        interpreters = Interpreters()
        return run_daemon(
            load_config(args, env, interpreters),
            reload_config=lambda: load_config(args, os.environ, interpreters),
            interpreters=interpreters,
        )
    except UsageError as exc:
        print(f"pqd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from pqd.errors import ConfigError

        if isinstance(exc, ConfigError):
            if exc.field.startswith("--"):
                print(f"pqd: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"pqd: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        raise
