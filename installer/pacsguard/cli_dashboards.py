"""`pacsguard dashboards ...` and `pacsguard console`: the analysts' commands (registered by cli.py).

Dashboards has options of its own (it is another server, often with another
CA, user and tenant than the cluster): --dashboards-url, --dashboards-ca-bundle,
--dashboards-username with the password from PACSGUARD_DASHBOARDS_PASSWORD or
--dashboards-password-file, --dashboards-tenant, --dashboards-insecure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from pacsguard.cli import (
    DashCa,
    DashInsecure,
    DashPwFile,
    DashTenant,
    DashUrl,
    DashUser,
    app,
    connect,
    emit,
    handle_errors,
    progress,
    table,
)
from pacsguard.core.dashboards import Dashboards, DashboardsSettings
from pacsguard.core.errors import PacsguardError

dashboards_app = typer.Typer(help="OpenSearch Dashboards content: index patterns, visualizations, dashboards.")
app.add_typer(dashboards_app, name="dashboards")

def dashboards_connection(url: str | None, ca_bundle: Path | None = None, username: str | None = None,
                          password_file: Path | None = None, tenant: str | None = None,
                          insecure: bool = False) -> Dashboards:
    if not url:
        raise PacsguardError("no Dashboards URL: give --dashboards-url or PACSGUARD_DASHBOARDS_URL")
    password: SecretStr | None = None
    if password_file is not None:
        try:
            password = SecretStr(password_file.read_text().strip())
        except OSError as exc:
            raise PacsguardError(f"cannot read --dashboards-password-file {password_file}: {exc.strerror}") from None
    elif os.environ.get("PACSGUARD_DASHBOARDS_PASSWORD"):
        password = SecretStr(os.environ["PACSGUARD_DASHBOARDS_PASSWORD"])
    return Dashboards(DashboardsSettings(url, username, password, ca_bundle, not insecure, tenant))


def install_dashboards(conn: Dashboards, dry_run: bool = False) -> dict[str, Any]:
    """Install (or plan) the saved objects; used by `install --dashboards-url` and `dashboards install`."""
    from pacsguard.services import dashboards as svc

    _, settings = connect()
    result = svc.install(conn, settings, progress=progress, dry_run=dry_run)
    return svc.summary(result) | {"applied": [[c.action, c.kind, c.id] for c in result.applied]}


def _dashboards_text(data: dict[str, Any], verb: str) -> str:
    counts = data["summary"]
    return (f"Dashboards {data['url']}: {verb} {counts['create']} created, {counts['update']} updated, "
            f"{counts['delete']} deleted, {counts['unchanged']} unchanged saved object(s)")


@dashboards_app.command("install")
@handle_errors
def dashboards_install(url: DashUrl = None, ca_bundle: DashCa = None, username: DashUser = None,
                       password_file: DashPwFile = None, tenant: DashTenant = None,
                       insecure: DashInsecure = False,
                       dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only.")] = False) -> None:
    """Import the pack's saved objects (only what changed) and delete those that left the pack."""
    conn = dashboards_connection(url, ca_bundle, username, password_file, tenant, insecure)
    data = install_dashboards(conn, dry_run)
    emit({"ok": True, **data}, _dashboards_text(data, "would change" if dry_run else "changed"))


@dashboards_app.command("plan")
@handle_errors
def dashboards_plan(url: DashUrl = None, ca_bundle: DashCa = None, username: DashUser = None,
                    password_file: DashPwFile = None, tenant: DashTenant = None,
                    insecure: DashInsecure = False) -> None:
    """What `dashboards install` would change."""
    conn = dashboards_connection(url, ca_bundle, username, password_file, tenant, insecure)
    data = install_dashboards(conn, dry_run=True)
    rows = data["changes"]
    emit({"ok": True, **data}, (table(["action", "type", "id", "reason"], rows) + "\n\n" if rows else "")
         + _dashboards_text(data, "would change"))


@dashboards_app.command("status")
@handle_errors
def dashboards_status(url: DashUrl = None, ca_bundle: DashCa = None, username: DashUser = None,
                      password_file: DashPwFile = None, tenant: DashTenant = None,
                      insecure: DashInsecure = False) -> None:
    """Each saved object: ok, missing, outdated, drifted (edited by hand), unmanaged or orphan."""
    from pacsguard.services import dashboards as svc

    conn = dashboards_connection(url, ca_bundle, username, password_file, tenant, insecure)
    _, settings = connect()
    rows = svc.status(conn, settings)
    emit({"ok": all(r.state == "ok" for r in rows), "objects": [r.__dict__ for r in rows]},
         table(["state", "type", "id", "detail"], [[r.state, r.kind, r.id, r.detail] for r in rows]))


@dashboards_app.command("uninstall")
@handle_errors
def dashboards_uninstall(url: DashUrl = None, ca_bundle: DashCa = None, username: DashUser = None,
                         password_file: DashPwFile = None, tenant: DashTenant = None,
                         insecure: DashInsecure = False) -> None:
    """Delete exactly the saved objects stamped as this installation's."""
    from pacsguard.services import dashboards as svc

    conn = dashboards_connection(url, ca_bundle, username, password_file, tenant, insecure)
    _, settings = connect()
    removed = svc.uninstall(conn, settings, progress=progress)
    emit({"ok": True, "removed": [{"type": t, "id": i} for t, i in removed]},
         f"removed {len(removed)} saved object(s) from {conn.url}")


@dashboards_app.command("export")
@handle_errors
def dashboards_export(out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (default: stdout).")]
                      = None) -> None:
    """The stamped ndjson, for Stack Management > Saved objects > Import in a Dashboards this CLI cannot reach."""
    from pacsguard.cli import opts
    from pacsguard.core.settings import load_settings
    from pacsguard.services.dashboards import export_ndjson

    o = opts()
    text = export_ndjson(load_settings(o.settings_file, o.overrides))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {text.count(chr(10))} saved objects to {out}", err=True)


# ------------------------------------------------------------------ console


@app.command()
@handle_errors
def console(
    host: Annotated[str, typer.Option("--host", envvar="PACSGUARD_CONSOLE_HOST",
                                      help="Address to bind (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="PACSGUARD_CONSOLE_PORT", help="Port.")] = 8765,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar="PACSGUARD_CONSOLE_TOKEN_FILE",
        help="File holding the access token (or PACSGUARD_CONSOLE_TOKEN); required off loopback.")] = None,
) -> None:
    """A small web console: open alerts (acknowledge/close), alert detail, overview charts."""
    from pacsguard.services.console.app import ConsoleConfig, serve

    cluster, settings = connect()
    config = ConsoleConfig.build(host, port, token_file)
    typer.echo(f"pacsguard console on {config.url} (cluster {cluster.url}); Ctrl-C stops it", err=True)
    serve(cluster, settings, config)
