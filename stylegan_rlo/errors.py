"""The one error type the command-line tools catch: a mistake in the user's input or environment.

Its message says what was wrong and what to do; the CLIs print it as `Error: ...` and exit 2. Library modules
subclass it only where a caller needs to tell cases apart.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file, an unusable environment: something the user can fix. Never a bug."""
