"""Shared helpers for the scripts: errors meant for people, and the command-line wrapper."""
import sys


class UserError(Exception):
    """A mistake the user can fix (a bad path, an unknown model name, a wrong checkpoint).

    Scripts print its message, without a traceback, and exit with status 2.
    """


def run_cli(main) -> None:
    """Run a script's `main()`, turning a UserError into one line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
