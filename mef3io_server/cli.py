"""The ``mef3io-server`` command line (click).

``mef3io-server serve [PATH]`` runs the server; with no PATH and ``--demo``
it writes the demo recording on first run and serves it. More subcommands
(``demo``, ``ls``, ``info``, ``get``, ``plot``) are listed by ``--help``.
"""
from __future__ import annotations

import os
import sys

import click

from . import client_commands
from .server.config import ConfigError, load_settings


#: Exit status of a command whose reader went away (128 + SIGPIPE), as Unix tools give.
EXIT_BROKEN_PIPE = 128 + 13


class _OneLineErrors(click.Group):
    """Any failure of a subcommand is shown as one line, ``Error: ...``, never a traceback.

    A closed output pipe (``mef3io-server ls | head -1``) ends the command
    quietly, with status 141, as it ends ``cat`` or ``seq``.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except BrokenPipeError:
            _quiet_broken_pipe()
        except Exception as e:  # noqa: BLE001 - the command line shows every failure as one line
            raise click.ClickException(client_commands.one_line(e)) from None


def _quiet_broken_pipe() -> None:
    """Leave quietly: later writes (and Python's flush at exit) go to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mef3io-server")
def cli():
    """mef3io-server: fast, concurrent gRPC access to MEF 3.0 recordings."""


@cli.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--demo", is_flag=True, help="Serve the built-in demo recording "
              "(written on first run) when no PATH is given: on this machine only "
              "(BIND_ADDRESS=localhost), its folder only (DATA_ROOTS), with the web "
              "viewer on port 8080 (HTTP_PORT), unless those variables are set.")
def serve(path, demo):
    """Run the server (configured by environment variables; see docs/configuration.md).

    PATH, if given, is a recording opened at start-up (in the shared default
    session) so it is listed and ready; every other readable path can be
    opened by clients too (confine them with DATA_ROOTS).
    """
    try:
        settings = load_settings()
    except ConfigError as e:
        click.echo(f"mef3io-server: configuration error: {e}", err=True)
        sys.exit(2)
    from .server.app import serve as run

    preload = path
    if preload is None and demo:
        from .demo import demo_ready, write_demo

        if not demo_ready():
            click.echo("writing the demo recording (first run only: a few seconds)...", err=True)
        preload = str(write_demo())
        settings = _demo_settings(settings, preload)
    sys.exit(run(settings, preload=preload))


#: The demo's web viewer port (HTTP_PORT), unless set.
DEMO_HTTP_PORT = 8080


def _demo_settings(settings, recording: str):
    """The demo's defaults: this machine only, the demo's folder only, and the web
    viewer on port 8080 (unless set)."""
    changes = {}
    if not os.environ.get("HTTP_PORT", "").strip():
        changes["http_port"] = DEMO_HTTP_PORT
    if not os.environ.get("BIND_ADDRESS", "").strip():
        changes["bind_address"] = "localhost"
    if not os.environ.get("DATA_ROOTS", "").strip():
        changes["data_roots"] = (os.path.realpath(os.path.dirname(recording)),)
    if changes:
        click.echo("the demo serves " + " and ".join(
            (["this machine only (BIND_ADDRESS=:: serves others)"]
             if "bind_address" in changes else [])
            + ([f"{changes['data_roots'][0]} only (DATA_ROOTS serves other folders)"]
               if "data_roots" in changes else [])), err=True)
    return settings.replace(**changes)


@cli.command("demo")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Where to write it (default: $DEMO_DIR or ~/.cache/mef3io-server/demo.mefd).")
@click.option("--force", is_flag=True, help="Rewrite it even if it exists.")
def demo_cmd(output, force):
    """Write the demo recording (16 channels, 1 hour, 256 Hz, one gap)."""
    from .demo import write_demo

    p = write_demo(output, overwrite=force)
    click.echo(str(p))


# ls / info / get / plot: the commands that talk to a running server.
for _command in client_commands.COMMANDS:
    cli.add_command(_command)


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="mef3io-server", standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
