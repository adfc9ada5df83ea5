"""The exceptions asterfleet raises, in one hierarchy.

Every error a user can meet says what input was wrong and what to do; the
command line turns :class:`UsageError` into a one-line message and exit
code 2.
"""


class AsterfleetError(Exception):
    """Base of every error asterfleet raises on purpose."""


class UsageError(AsterfleetError):
    """Bad input from the user: a flag, a file, an environment variable."""


class RecordError(AsterfleetError):
    """A record in etcd (or about to be written) does not validate."""


class EtcdUnavailable(AsterfleetError):
    """No etcd endpoint answered."""


class EtcdAccessDenied(AsterfleetError):
    """etcd answered but refused: a bad user, password or certificate, or a
    role without permission for the key."""


class RpcError(AsterfleetError):
    """Kamailio's JSON-RPC interface failed or answered with an error."""


class MissingBinary(AsterfleetError):
    """A program asterfleet runs is not installed."""

    def __init__(self, program: str, package: str) -> None:
        super().__init__(
            f"'{program}' is not installed: install the Debian package with "
            f"'apt-get install {package}' (or run 'make deps')"
        )
        self.program = program
        self.package = package
