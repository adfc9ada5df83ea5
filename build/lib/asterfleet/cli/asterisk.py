"""`asterfleet asterisk`: configuration Asterisk needs to join the fleet."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.capture.hepconf import UUID_TYPES, HepConf, render_hep_conf
from asterfleet.cli.common import user_errors
from asterfleet.errors import UsageError

app = typer.Typer(
    help="Render configuration files for the Asterisk boxes of the fleet.",
    no_args_is_help=True,
)


@app.command("hep-conf")
def hep_conf(
    capture: str = typer.Option(
        ...,
        "--capture",
        envvar="ASTERFLEET_CAPTURE_ADDRESS",
        help="HOST:PORT of the asterfleet capture server (UDP: res_hep sends only UDP).",
    ),
    node: str | None = typer.Option(
        None, "--node", help="Node name, sent as capture_name (Asterisk 18.16/20.1+)."
    ),
    capture_id: int = typer.Option(0, "--capture-id", help="Numeric capture agent id."),
    auth_key: str | None = typer.Option(
        None, "--auth-key", envvar="ASTERFLEET_CAPTURE_AUTH_KEY", help="The server's --auth-key."
    ),
    uuid_type: str = typer.Option(
        "call-id", "--uuid-type", help=f"Correlation id: one of {', '.join(UUID_TYPES)}."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here (e.g. /etc/asterisk/hep.conf) instead of stdout."
    ),
) -> None:
    """Render Asterisk's hep.conf so the node sends its SIP to the capture server.

    Example: `asterfleet asterisk hep-conf --capture 10.0.0.5:9060 --node ast1
    --capture-id 11 -o /etc/asterisk/hep.conf`, then `module reload res_hep.so`.
    """
    with user_errors():
        text = render_hep_conf(
            HepConf(
                capture_address=capture,
                capture_id=capture_id,
                capture_name=node,
                password=auth_key,
                uuid_type=uuid_type,
            )
        )
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            output.write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        typer.echo(f"wrote {output}")
