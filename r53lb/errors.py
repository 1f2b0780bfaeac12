"""The one base error: what the CLI turns into one clear line on stderr and an exit code.

Each subclass names what failed; `prefix` is put before the message ("route53: ...") and
`exit_code` is the code the CLI exits with (1 unless the class says otherwise).
"""

from __future__ import annotations


class R53lbError(Exception):
    """An error an operator can act on; its message is one line, never a traceback."""

    prefix = ""
    exit_code = 1
    plain = False  # True: never a traceback, even with -v (the line says all there is)

    def line(self) -> str:
        return f"{self.prefix}{self}"
