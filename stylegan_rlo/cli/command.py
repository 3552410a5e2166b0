"""The one way every command-line tool is declared: `@command()` gives `-h/--help` and turns a UserError (and a
failed download) into `Error: <message>` on stderr with exit status 2, never a traceback."""

from __future__ import annotations

from typing import Any, Callable

import click

from dnnlib.util import DownloadError
from stylegan_rlo.errors import UserError

# dnnlib sits below stylegan_rlo (it must not import it), so its DownloadError cannot derive from UserError.
USER_ERRORS = (UserError, DownloadError)
USER_ERROR_EXIT_CODE = 2


class UserErrorExit(click.ClickException):
    """A user error as click reports it: `Error: message`, exit status 2 (as click's own usage errors)."""
    exit_code = USER_ERROR_EXIT_CODE


class Command(click.Command):
    """A click command whose user errors (while parsing, e.g. in an option callback, or while running) end in one
    clean line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except USER_ERRORS as e:
            raise UserErrorExit(str(e)) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise UserErrorExit(str(e)) from None


def command(**kwargs: Any) -> Callable[[Callable], click.Command]:
    """`click.command` with -h/--help and the user-error handling of Command."""
    kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
    return click.command(cls=Command, **kwargs)
