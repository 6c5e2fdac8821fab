"""The `pacsguard` command line: thin wrappers over the library, readable output, --json for CI."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from pacsguard import __version__
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import MissingPlugin, PacsguardError
from pacsguard.core.escaping import configure_logging, terminal_safe
from pacsguard.core.settings import Settings, load_settings
from pacsguard.jobs.schedule import JobName


def _help_width() -> None:
    """Help as wide as the terminal, and 120 columns where there is none (a pipe, CI): rich's default
    of 80 cuts option names such as --max-connections-per-address. TERMINAL_WIDTH still wins."""
    try:
        from typer import rich_utils
    except ImportError:  # pragma: no cover - typer without rich prints plain help, unwrapped
        return
    if not os.environ.get("TERMINAL_WIDTH"):
        rich_utils.MAX_WIDTH = shutil.get_terminal_size(fallback=(0, 0)).columns or 120


_help_width()
app = typer.Typer(
    name="pacsguard",
    help="Security monitoring for PACS audit trails on OpenSearch.\n\n"
         "Start with `pacsguard up` (a local node, the pack, the alert engine and the console), send events "
         "(`collect`, or straight to the data stream), see alerts (`alerts`, `console`; `watch` is the engine), "
         "answer one (`respond <alert id>`), audit the posture (`checklist`). The pack on any cluster: "
         "`plan`, `diff`, `install`/`upgrade`, `status`, `uninstall`; rules: `rules`, `test-rules`; "
         "history: `simulate`, `backtest`, `demo`.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(help="A local development/CI OpenSearch node (or Docker where an engine runs).")
app.add_typer(cluster_app, name="cluster")
jobs_app = typer.Typer(help="Scheduled jobs that keep per-user baselines and profiles for the rules.")
app.add_typer(jobs_app, name="jobs")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR, EXIT_MISSING_PLUGIN, EXIT_UNHEALTHY = 1, 3, 4


@dataclass
class Options:
    settings_file: Path | None = None
    overrides: dict[str, Any] | None = None
    json: bool = False
    verbose: bool = False

    def settings(self) -> Settings:
        return load_settings(self.settings_file, self.overrides)


try:  # typer >= 0.2x carries its own copy of click: its context stack is that copy's
    from typer._click.globals import get_current_context as _current_context
except ImportError:  # pragma: no cover - older typer runs on the click package
    from click import get_current_context as _current_context


def opts() -> Options:
    """The global options of this invocation (kept on the root click context, not in module state)."""
    ctx = _current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Options) else Options()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pacsguard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    settings_file: Annotated[Path | None, typer.Option("--settings", envvar="PACSGUARD_SETTINGS",
                                                        help="User settings YAML (overrides pack defaults).")] = None,
    url: Annotated[str | None, typer.Option("--url", envvar="PACSGUARD_URL", help="Cluster URL.")] = None,
    username: Annotated[str | None, typer.Option("--username", envvar="PACSGUARD_USERNAME",
                                                 help="Basic-auth user (enables basic auth).")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", envvar="PACSGUARD_PASSWORD_FILE",
                                                       help="File holding the password.")] = None,
    ca_bundle: Annotated[Path | None, typer.Option("--ca-bundle", envvar="PACSGUARD_CA_BUNDLE",
                                                   help="CA bundle that signs the cluster certificate.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do NOT verify TLS certificates (test clusters only).")] = False,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Data stream namespace.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    cluster: dict[str, Any] = {}
    if url:
        cluster["url"] = url
    if username:
        cluster.update(auth="basic", username=username)
    if password_file:
        cluster["password_file"] = str(password_file)
    if ca_bundle:
        cluster["ca_bundle"] = str(ca_bundle)
    if insecure:
        cluster["verify_tls"] = False
    overrides: dict[str, Any] = {"cluster": cluster} if cluster else {}
    if namespace:
        overrides["namespace"] = namespace
    ctx.obj = Options(settings_file, overrides, json_out, verbose)


def handle_errors(func: F) -> F:
    """Expected failures print one line to stderr and exit non-zero; no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MissingPlugin as exc:
            _fail(str(exc), EXIT_MISSING_PLUGIN)
        except PacsguardError as exc:
            _fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int) -> None:
    if opts().json:
        typer.echo(json.dumps({"ok": False, "error": message}))
    else:
        typer.secho(f"error: {terminal_safe(message)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def progress(message: str) -> None:
    if not opts().json:
        typer.secho(f"  {terminal_safe(message)}", err=True, fg=typer.colors.BRIGHT_BLACK)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[terminal_safe(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def connect(url: str | None = None) -> tuple[Cluster, Settings]:
    """The cluster of the settings (or of url, for the node `up` just started) and the settings."""
    o = opts()
    overrides = dict(o.overrides or {})
    if url:
        overrides["cluster"] = {**overrides.get("cluster", {}), "url": url}
    settings = load_settings(o.settings_file, overrides)
    return Cluster.connect(settings.cluster), settings


def emit(data: Any, text: str) -> None:
    """JSON (which escapes control characters itself) or the text, with no control character but LF."""
    typer.echo(json.dumps(data, indent=2, default=str) if opts().json else terminal_safe(text, keep_newlines=True))


# ------------------------------------------------------------------ pack


def _plan_rows(plan: Any, include_unchanged: bool) -> list[list[str]]:
    return [[c.action, c.kind, c.id, c.reason] for c in plan.changes if include_unchanged or c.action != "unchanged"]


@app.command()
@handle_errors
def plan(all_objects: Annotated[bool, typer.Option("--all", help="Also list unchanged objects.")] = False) -> None:
    """Show what `install` would change, without changing anything."""
    from pacsguard.services.install import install as do_install

    cluster, settings = connect()
    result = do_install(cluster, settings, dry_run=True)
    counts = result.plan.summary()
    data = {"ok": True, "summary": counts,
            "changes": [{"action": c.action, "kind": c.kind, "id": c.id, "reason": c.reason}
                        for c in result.plan.changes if all_objects or c.action != "unchanged"]}
    rows = _plan_rows(result.plan, all_objects)
    body = table(["action", "kind", "id", "reason"], rows) if rows else "nothing to change"
    blocked = f", {counts['blocked']} blocked (plugin missing)" if counts["blocked"] else ""
    blocked += f", {counts['skipped']} skipped (optional plugin not running)" if counts["skipped"] else ""
    data["warnings"] = result.plan.warnings
    warnings = "".join(f"\nWARNING {w}" for w in result.plan.warnings)
    from pacsguard.rules.catalog import override_lines

    data["overrides"] = override_lines(settings)
    body += "".join(f"\noverride {line}" for line in data["overrides"])
    emit(data, f"{body}\n\nplan: {counts['create']} to create, {counts['update']} to update, "
               f"{counts['delete']} to delete, {counts['unchanged']} unchanged{blocked}{warnings}")


@app.command()
@handle_errors
def diff() -> None:
    """Show, per object that would change, a unified diff of cluster vs pack content."""
    from pacsguard.packobjects import KINDS
    from pacsguard.services.install import desired_objects, make_plan

    cluster, settings = connect()
    plan_ = make_plan(cluster, settings, desired_objects(cluster, settings))
    out: list[str] = []
    data: list[dict[str, Any]] = []
    for change in plan_.pending:
        kind = KINDS[change.kind]
        live = kind.get(cluster, change.id) if change.action != "create" else None
        want = change.obj.body if change.obj else None
        left = json.dumps(live, indent=2, sort_keys=True).splitlines() if live is not None else []
        right = json.dumps(want, indent=2, sort_keys=True).splitlines() if want is not None else []
        lines = list(difflib.unified_diff(left, right, f"cluster/{change.kind}/{change.id}",
                                          f"pack/{change.kind}/{change.id}", lineterm=""))
        out.extend(lines or [f"= {change.kind} {change.id}: only the pacsguard stamp differs"])
        data.append({"kind": change.kind, "id": change.id, "action": change.action, "diff": lines})
    emit({"ok": True, "changes": data}, "\n".join(out) if out else "no differences")


# OpenSearch Dashboards is another server: options of its own (password from env or file only).
DashUrl = Annotated[str | None, typer.Option("--dashboards-url", envvar="PACSGUARD_DASHBOARDS_URL",
                                             help="OpenSearch Dashboards base URL: also install the dashboards.")]
DashCa = Annotated[Path | None, typer.Option("--dashboards-ca-bundle", envvar="PACSGUARD_DASHBOARDS_CA_BUNDLE",
                                             help="CA bundle that signs the Dashboards certificate.")]
DashUser = Annotated[str | None, typer.Option("--dashboards-username", envvar="PACSGUARD_DASHBOARDS_USERNAME",
                                              help="Dashboards basic-auth user.")]
DashPwFile = Annotated[Path | None, typer.Option(
    "--dashboards-password-file", envvar="PACSGUARD_DASHBOARDS_PASSWORD_FILE",
    help="File holding the Dashboards password (or set PACSGUARD_DASHBOARDS_PASSWORD).")]
DashTenant = Annotated[str | None, typer.Option("--dashboards-tenant", envvar="PACSGUARD_DASHBOARDS_TENANT",
                                                help="Security plugin tenant (securitytenant header).")]
DashInsecure = Annotated[bool, typer.Option("--dashboards-insecure",
                                            help="Do NOT verify the Dashboards certificate (test only).")]


@app.command()
@handle_errors
def install(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Same as `plan`.")] = False,
    skip_detections: Annotated[bool, typer.Option(
        "--skip-detections", help="Install without monitors/channels where the cluster lacks Alerting/Notifications.")] = False,
    dashboards_url: DashUrl = None, dashboards_ca_bundle: DashCa = None, dashboards_username: DashUser = None,
    dashboards_password_file: DashPwFile = None, dashboards_tenant: DashTenant = None,
    dashboards_insecure: DashInsecure = False,
) -> None:
    """Install or upgrade the pack: writes only objects whose content changed."""
    from pacsguard.services.install import install as do_install

    cluster, settings = connect()
    # Dashboards is checked first: an unreachable one fails before the cluster is touched.
    dashboards = None
    if dashboards_url:
        dashboards = dashboards_connection(dashboards_url, dashboards_ca_bundle, dashboards_username,
                                           dashboards_password_file, dashboards_tenant, dashboards_insecure)
        dashboards.status()
    result = do_install(cluster, settings, progress=progress, dry_run=dry_run, allow_missing_plugins=skip_detections)
    counts = result.plan.summary()
    changed = len(result.applied) + len(result.data_streams)
    data: dict[str, Any] = {"ok": True, "changes": changed, "summary": counts,
                            "applied": [{"action": c.action, "kind": c.kind, "id": c.id} for c in result.applied],
                            "data_streams": result.data_streams, "dry_run": dry_run}
    verb = "would change" if dry_run else "changed"
    text = (f"pacsguard {__version__} at {cluster.url}: {verb} {changed} object(s) "
            f"({counts['create']} created, {counts['update']} updated, {counts['delete']} deleted, "
            f"{counts['unchanged']} unchanged)")
    data["warnings"] = result.plan.warnings
    text += "".join(f"\nWARNING {w}" for w in result.plan.warnings)
    if dashboards is not None:
        data["dashboards"] = install_dashboards(dashboards, dry_run)
        dash = data["dashboards"]["summary"]
        text += (f"\nDashboards {dashboards.url}: {verb} {dash['create']} created, {dash['update']} updated, "
                 f"{dash['delete']} deleted, {dash['unchanged']} unchanged saved object(s)")
    emit(data, text)


@app.command()
@handle_errors
def upgrade() -> None:
    """Alias of install: replaces only what changed since the installed version."""
    install(dry_run=False, skip_detections=False, dashboards_url=None)


@app.command()
@handle_errors
def status(strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 4 on drift, missing plugins, or a rule that does not run.")] = False) -> None:
    """Installed version, drift (objects changed by hand) and the plugins the pack needs."""
    from pacsguard.services.install import status as do_status

    cluster, settings = connect()
    st = do_status(cluster, settings)
    data = {"ok": st.healthy, "url": st.url, "cluster_version": st.cluster_version,
            "cluster_supported": st.cluster_supported, "cluster_support": st.cluster_support,
            "installed_version": st.installed_version, "missing_plugins": st.missing_plugins,
            "objects": [o.__dict__ for o in st.objects], "data_streams": st.data_streams, "late_event": None}
    lines = [f"cluster   {st.url} (OpenSearch {st.cluster_version}: {st.cluster_support})",
             f"installed {st.installed_version or 'not installed'} (this CLI: {__version__})"]
    for name, why in st.missing_plugins.items():
        lines.append(f"MISSING   {name}: needed for {why}")
    for name, count in st.data_streams.items():
        lines.append(f"data      {name}: {count} events")
    if st.data_streams:
        from pacsguard.services.arrivals import late_event, late_text

        data["late_event"] = late = late_event(cluster, settings)
        if late:
            lines.append(f"late      {late_text(late)}")
    lines.append("")
    lines.append(table(["state", "kind", "id", "detail"], [[o.state, o.kind, o.id, o.detail] for o in st.objects]))
    healthy = st.healthy
    if st.installed_version:
        from pacsguard.services.rulestatus import rule_runs
        from pacsguard.services.watch import watch_leader

        rules = rule_runs(cluster, settings)
        data["rules"] = [r.as_dict() for r in rules]
        data["watch_leader"] = leader = watch_leader(cluster, settings)
        lines += ["", table(["signal", "engine", "running", "last run", "evaluated through", "catching up",
                             "last error", "in queue", "rule"],
                            [[r.signal, r.engine, "yes" if r.running else ("disabled" if not r.enabled else "NO"),
                              r.last_run or "never", r.evaluated_through or "-",
                              f"{r.catching_up} period(s)" if r.catching_up else "-", r.last_error or "-",
                              r.open_alerts, r.rule] for r in rules])]
        if leader:
            lines.append(f"watch leader: {leader.get('holder')} (epoch {leader.get('epoch')}, "
                         f"renewed {leader.get('renewed_at')})")
        from pacsguard.services.exceptions import entries

        silenced = entries(cluster, settings)
        data["exceptions"] = [e.as_dict() for e in silenced]
        lines += [f"{e.kind:<9} {e.id}: {e.target()} until {e.expires} ({e.author}: {e.reason})" for e in silenced]
        excepted = sum(1 for e in silenced if e.kind == "exception")
        lines.append(f"excepted  {excepted} entit{'y' if excepted == 1 else 'ies'} in force, "
                     f"{len(silenced) - excepted} snooze(s)")
        idle = [r.signal for r in rules if not r.healthy]
        if idle:
            healthy = False
            lines.append(f"NOT RUNNING {', '.join(idle)}: no recent run or a failed run on its engine"
                         + (" (is `pacsguard watch` up?)" if any(r.engine == "pacsguard" for r in rules
                                                                 if r.signal in idle) else ""))
    for warning in st.warnings:
        lines.append(f"WARNING   {warning}")
    data["ok"], data["warnings"] = healthy, st.warnings
    emit(data, "\n".join(lines))
    if strict and not healthy:
        raise typer.Exit(EXIT_UNHEALTHY)


@app.command()
@handle_errors
def uninstall(
    purge: Annotated[bool, typer.Option("--purge", help="Also delete event data and failures.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dashboards_url: DashUrl = None, dashboards_ca_bundle: DashCa = None, dashboards_username: DashUser = None,
    dashboards_password_file: DashPwFile = None, dashboards_tenant: DashTenant = None,
    dashboards_insecure: DashInsecure = False,
) -> None:
    """Remove exactly the pack's objects (and its saved objects with --dashboards-url). Event data is kept
    unless --purge."""
    from pacsguard.services.install import uninstall as do_uninstall

    cluster, settings = connect()
    removed_saved: list[tuple[str, str]] = []
    if dashboards_url:
        from pacsguard.services.dashboards import uninstall as uninstall_saved_objects

        conn = dashboards_connection(dashboards_url, dashboards_ca_bundle, dashboards_username,
                                     dashboards_password_file, dashboards_tenant, dashboards_insecure)
        removed_saved = uninstall_saved_objects(conn, settings, progress=progress)
    if purge and not yes:
        if not sys.stdin.isatty():
            raise PacsguardError("--purge deletes event data: add --yes to confirm when not interactive")
        typer.confirm(f"Delete ALL pacsguard event data in {cluster.url}?", abort=True)
    result = do_uninstall(cluster, settings, purge=purge, progress=progress)
    data = {"ok": True, "removed": [{"kind": k, "id": i} for k, i in result.removed],
            "kept": result.kept, "purged": result.purged,
            "saved_objects_removed": [{"type": t, "id": i} for t, i in removed_saved]}
    text = f"removed {len(result.removed)} pack object(s)"
    if dashboards_url:
        text += f" and {len(removed_saved)} saved object(s) from Dashboards"
    if result.kept:
        text += f"; kept event data: {', '.join(result.kept)}"
    if result.purged:
        text += f"; purged: {', '.join(result.purged)}"
    emit(data, text)


# -------------------------------------------------------------- jobs


@jobs_app.command("run")
@handle_errors
def jobs_run(
    job: Annotated[JobName, typer.Argument(help="baselines | profiles | directory | all")],
    every: Annotated[str | None, typer.Option("--every", help="Run on this interval (e.g. 5m) until "
                                              "SIGTERM / Ctrl-C; without it, run once.")] = None,
    lookback: Annotated[str | None, typer.Option("--lookback", help="Profiles: mark values first seen this "
                                                 "recently as new (default: 2 x --every, at least 15m and "
                                                 "at least the escalation window).")] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=10_000,
                                           help="Composite aggregation page size.")] = 10_000,
    full: Annotated[bool, typer.Option("--full", help="Profiles: reread every user's history now (otherwise "
                                       "a run rewrites only the users with new events or ageing values, and "
                                       "a full run comes every engine.profiles_full_every).")] = False,
) -> None:
    """Recompute baselines and/or profiles from the events: once, or every --every."""
    from pacsguard.core.settings import duration_seconds
    from pacsguard.jobs.profiles import default_lookback
    from pacsguard.jobs.schedule import loop, run_once, stop_on_signals

    try:
        every_s = duration_seconds(every) if every else None
        lookback_s = duration_seconds(lookback) if lookback else None
    except ValueError as exc:
        raise PacsguardError(str(exc)) from None
    if every_s is not None and every_s < 60:
        raise PacsguardError("--every must be at least 1m: a run pages through the whole window")
    cluster, settings = connect()
    if lookback_s is None:
        lookback_s = default_lookback(settings, every_s)

    def show(reports: list[Any]) -> None:
        for r in reports:
            if opts().json:
                typer.echo(json.dumps({"ok": True, **r.as_dict()}))
            else:
                typer.echo(terminal_safe(f"{r.started_at} {r.summary()}"))

    if every_s is None:
        show(run_once(cluster, settings, job, lookback_seconds=lookback_s, page_size=page_size, full=full))
        return
    with stop_on_signals() as stop:
        progress(f"running {job.value} every {every} (lookback {lookback_s}s); SIGTERM or Ctrl-C stops")
        forced = [full]  # --full: the loop's first run only

        def one_run() -> list[Any]:
            force, forced[0] = forced[0], False
            return run_once(cluster, settings, job, lookback_seconds=lookback_s, page_size=page_size, stop=stop,
                            full=force)

        runs = loop(one_run,
                    every_s, stop, show, lambda msg: typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED))
    if opts().json:
        typer.echo(json.dumps({"ok": True, "stopped": True, "runs": runs}))
    else:
        progress(f"stopped after {runs} run(s)")


# ------------------------------------------------------------ exceptions and snoozes

exceptions_app = typer.Typer(help="Entity exceptions with a reason, an author and an expiry (both engines).")
app.add_typer(exceptions_app, name="exceptions")
snooze_app = typer.Typer(help="Snoozes: a rule (or a rule for one entity) records its alerts but delivers none "
                              "until the snooze ends.")
app.add_typer(snooze_app, name="snooze")
UntilOpt = Annotated[str, typer.Option("--until", help="The end: 8h, 7d, friday, 2026-12-11, or an ISO time.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept with it).")]
RuleOpt = Annotated[list[str] | None, typer.Option("--rule", help="Rule signal (repeatable; default: every rule).")]


def _entry_rows(found: list[Any]) -> str:
    return table(["id", "kind", "rules", "field", "value", "until", "author", "reason"],
                 [[e.id, e.kind, ",".join(e.rules), e.field or "-", e.value or "(whole rule)", e.expires, e.author,
                   e.reason] for e in found])


@exceptions_app.command("add")
@handle_errors
def exceptions_add(
    until: UntilOpt, reason: ReasonOpt, by: Annotated[str, typer.Option("--by", envvar="USER", help="Author.")],
    rule: RuleOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="Except this user.name.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Except this source.ip.")] = None,
    field: Annotated[str | None, typer.Option("--field", help="Except a value of this field (a custom rule's "
                                                              "entity, e.g. observer.hostname).")] = None,
    value: Annotated[str | None, typer.Option("--value", help="The value of --field.")] = None,
) -> None:
    """Except an entity from a rule (or every rule) until a time; it stops applying by itself at its end."""
    from pacsguard.services.exceptions import add

    picked = [(f, v) for f, v in (("user.name", user), ("source.ip", ip), (field, value)) if v is not None]
    if len(picked) != 1 or (field is not None) != (value is not None):
        raise typer.BadParameter("name one entity: --user, --ip, or --field with --value")
    cluster, settings = connect()
    entry = add(cluster, settings, rules=list(rule or ["*"]), field=picked[0][0], value=picked[0][1],
                reason=reason, author=by, until=until)
    emit({"ok": True, "exception": entry.as_dict()}, f"exception {entry.id}: {entry.target()} until {entry.expires}")


@exceptions_app.command("list")
@handle_errors
def exceptions_list(expired: Annotated[bool, typer.Option("--expired", help="Also those that ended.")] = False) -> None:
    """Exceptions and snoozes in force (with --expired: also those that ended), soonest end first."""
    from pacsguard.services.exceptions import entries

    cluster, settings = connect()
    found = entries(cluster, settings, expired=expired)
    emit({"ok": True, "entries": [e.as_dict() for e in found]}, _entry_rows(found) if found else "none")


@exceptions_app.command("remove")
@handle_errors
def exceptions_remove(entry_id: Annotated[str, typer.Argument(help="Exception or snooze id.")]) -> None:
    """Remove an exception or a snooze now."""
    from pacsguard.services.exceptions import remove

    cluster, settings = connect()
    remove(cluster, settings, entry_id)
    emit({"ok": True, "removed": entry_id}, f"removed {entry_id}")


@snooze_app.command("add")
@handle_errors
def snooze_add(
    rule: Annotated[str, typer.Argument(help="Rule signal.")], until: UntilOpt, reason: ReasonOpt,
    by: Annotated[str, typer.Option("--by", envvar="USER", help="Author.")],
    entity: Annotated[str | None, typer.Option("--entity", help="Only this entity (as alerts name it).")] = None,
) -> None:
    """Mute a rule's deliveries until a time: its alerts are still recorded (the pacsguard engine)."""
    from pacsguard.rules.exceptions import SNOOZE
    from pacsguard.services.exceptions import add
    from pacsguard.services.install import alerting_signals

    cluster, settings = connect()
    entry = add(cluster, settings, kind=SNOOZE, rules=[rule], field=None, value=entity, reason=reason, author=by,
                until=until)
    text = f"snooze {entry.id}: {entry.target()} until {entry.expires}"
    if rule in alerting_signals(settings, cluster.installed_components()[0]):
        text += (f"\nWARNING rule {rule} runs on OpenSearch Alerting, whose Notifications deliver without asking "
                 "the pack: the snooze is recorded and shown by status, but holds only on the pacsguard engine")
    emit({"ok": True, "snooze": entry.as_dict()}, text)


@snooze_app.command("list")
@handle_errors
def snooze_list() -> None:
    """Snoozes in force and their ends."""
    from pacsguard.rules.exceptions import SNOOZE
    from pacsguard.services.exceptions import entries

    cluster, settings = connect()
    found = entries(cluster, settings, kind=SNOOZE)
    emit({"ok": True, "snoozes": [e.as_dict() for e in found]}, _entry_rows(found) if found else "none")


# ------------------------------------------------------------ detections

rules_app = typer.Typer(help="Detection rules: validate and inspect.")
app.add_typer(rules_app, name="rules")


@rules_app.command("validate")
@handle_errors
def rules_validate(
    folder: Annotated[Path | None, typer.Argument(help="A team's rules folder (default: the pack's and those of "
                                                       "settings rules.folders).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text | json | github | junit")] = "text",
) -> None:
    """Validate every rule file and the version lock; each problem is reported as path:line: field: message.

    --format github prints GitHub Actions annotations (::error file=...,line=...::), junit a JUnit XML
    report (one test case per rule file and lock); the exit code is 1 when a problem was found."""
    from pacsguard.services.rulecheck import render, validate

    if fmt not in ("text", "json", "github", "junit"):
        raise typer.BadParameter(f"--format {fmt!r}: one of text, json, github, junit")
    v = validate(opts().settings(), folder)
    rows = [[r.signal, "custom" if r.custom else "pack", r.severity, r.detection.type, f"v{r.version}", str(r.id),
             r.name] for r in sorted(v.rules, key=lambda r: (r.custom, r.signal))]
    heads = ["signal", "origin", "severity", "type", "version", "id", "name"]
    if fmt == "json" or opts().json:
        typer.echo(json.dumps({"ok": v.ok, "rules": [dict(zip(heads, r)) for r in rows],
                               "problems": [p.__dict__ for p in v.problems]}, indent=2))
    elif fmt in ("github", "junit"):
        typer.echo(render(v, fmt))
    elif v.ok:
        typer.echo(table(heads, rows) + f"\n\n{len(v.rules)} rule(s) valid")
    else:
        typer.echo(render(v, "text"), err=True)
    if not v.ok:
        raise typer.Exit(EXIT_ERROR)


@rules_app.command("lock")
@handle_errors
def rules_lock(folder: Annotated[Path | None, typer.Argument(help="A team's rules folder (default: every "
                                                                   "folder of the settings).")] = None) -> None:
    """Record each rule's version and content hash in its folder's rules.lock.yaml (after bumping the versions of
    changed rules)."""
    from pacsguard.services.rulecheck import lock

    done = lock(opts().settings(), folder)
    emit({"ok": True, "locks": [{"lock": str(p), "rules": n} for p, n in done]},
         "\n".join(f"locked {n} rule(s) in {p}" for p, n in done))


@rules_app.command("export")
@handle_errors
def rules_export(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the Sigma files into.")],
    fmt: Annotated[str, typer.Option("--format", help="sigma")] = "sigma",
) -> None:
    """Write the rules Sigma can express as Sigma YAML (a base rule and, for a threshold, a correlation rule),
    and say for the others why not."""
    from pacsguard.rules.catalog import all_rules
    from pacsguard.rules.sigma import export_text

    if fmt != "sigma":
        raise typer.BadParameter(f"--format {fmt!r}: only sigma")
    settings = opts().settings()
    files, refused = export_text(all_rules(settings), settings)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    emit({"ok": True, "written": sorted(files), "not_exported": refused},
         "\n".join([f"wrote {out / n}" for n in sorted(files)] + [f"NOT EXPORTED {why}" for why in refused.values()]))


@rules_app.command("import")
@handle_errors
def rules_import(
    file: Annotated[Path, typer.Argument(help="A Sigma detection rule (YAML).")],
    signal: Annotated[str, typer.Option("--signal", help="The custom rule's signal (a name of its own).")],
    out: Annotated[Path, typer.Option("--out", help="The team's rules folder to write it into.")],
) -> None:
    """Turn a Sigma detection rule into a custom rule of ours (refusing what it cannot express, with why)."""
    from pacsguard.rules.model import load_rule
    from pacsguard.rules.sigma import import_rule

    text = import_rule(file.read_text(), signal, str(file))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"imported_{signal.replace('-', '_')}.yml"
    path.write_text(text)
    rule = load_rule(path)  # the same validation as every rule: a bad field fails here, naming path:line
    emit({"ok": True, "rule": str(path), "signal": rule.signal},
         f"wrote {path} (signal {rule.signal}); add scenarios, then `pacsguard rules lock {out}`")


@app.command("test-rules")
@handle_errors
def test_rules(
    signal: Annotated[list[str] | None, typer.Option("--signal", help="Only these signals (repeatable).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scenario install for inspection.")] = False,
    junit_file: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML report here (one test "
                                                                    "case per scenario case).")] = None,
) -> None:
    """Run every rule's positive and negative scenarios against the cluster (isolated install, removed after):
    the pack's and those of the team's folders (settings rules.folders)."""
    from pacsguard.services.scenarios import junit_report, run_scenarios

    cluster, settings = connect()
    report = run_scenarios(cluster, settings, progress=progress, only=set(signal) if signal else None, keep=keep)
    if junit_file is not None:
        junit_file.write_text(junit_report(report))
    rows = [["PASS" if r.passed else "FAIL", r.signal, r.case, ",".join(sorted(r.expected)) or "-",
             ",".join(sorted(r.fired)) or "-"] for r in report.results]
    engines = sorted({r.engine for r in report.results})
    data = {"ok": report.passed, "engine": engines, "monitor_ms": report.monitor_ms,
            "results": [{"signal": r.signal, "case": r.case, "passed": r.passed, "expected": sorted(r.expected),
                         "fired": sorted(r.fired), "escalated": sorted(r.escalated)} for r in report.results]}
    failed = sum(not r.passed for r in report.results)
    emit(data, table(["result", "signal", "case", "expected", "fired"], rows)
         + f"\n\n{len(report.results) - failed} passed, {failed} failed (engine: {', '.join(engines)})")
    if failed:
        raise typer.Exit(EXIT_ERROR)


class _AlertOrCommand(TyperGroup):
    """`pacsguard respond <alert-id>` is `pacsguard respond show <alert-id>`: the routine for one alert;
    `respond contain|preserve|scope|reset|verify ...` are its steps."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


respond_app = typer.Typer(
    cls=_AlertOrCommand, no_args_is_help=True,
    help="The 10-minute response routine for one alert: contain, preserve, scope, reset.\n\n"
         "`pacsguard respond <alert id>` shows the routine for that alert: each step, its command, whether it "
         "is done, and the response history. The steps: `respond contain|preserve|scope|reset <alert id>` "
         "(contain and reset are dry runs unless --execute); `respond verify <bundle.zip>` checks an evidence "
         "bundle; `respond <rule id or signal>` prints a rule's guide.")
app.add_typer(respond_app, name="respond")
ByOpt = Annotated[str, typer.Option("--by", envvar="USER", help="Who acts (recorded with every action).")]
ExecuteOpt = Annotated[bool, typer.Option("--execute", help="Act. Without it: a dry run that changes nothing.")]
BeforeOpt = Annotated[str | None, typer.Option("--before", help="Window start before the alert (default: "
                                                               "response.evidence_before, 24h).")]
AfterOpt = Annotated[str | None, typer.Option("--after", help="Window end after the alert (default: now).")]


def _rule_guide(rule: str) -> bool:
    """The old `respond <rule>`: the routine as text for a rule id or signal; False if no such rule."""
    from pacsguard.rules.catalog import all_rules
    from pacsguard.rules.compiler import evidence_query

    found = [r for r in all_rules(opts().settings()) if rule in (str(r.id), r.signal)]
    if not found:
        return False
    r = found[0]
    g = r.guide
    steps = [("triage", g.triage), ("1 contain", g.contain), ("2 preserve", g.preserve), ("3 scope", g.scope),
             ("4 reset", g.reset)]
    text = "\n".join([f"{r.name} (signal {r.signal}, {r.severity})", f"evidence: {evidence_query(r)}", ""]
                     + [f"{k:<11} {v}" for k, v in steps])
    emit({"ok": True, "rule": str(r.id), "signal": r.signal, **g.model_dump(), "evidence": evidence_query(r)}, text)
    return True


@respond_app.command("show")
@handle_errors
def respond_show(alert_id: Annotated[str, typer.Argument(help="Alert id (either engine), or a rule id/signal "
                                                              "for the rule's guide.")]) -> None:
    """The routine for one alert: each step, its command, whether it is done, and the whole response history."""
    from pacsguard.services.alerts import PACK_ID_PREFIX
    from pacsguard.services.response.routine import walk, walk_text

    if not alert_id.startswith(PACK_ID_PREFIX) and _rule_guide(alert_id):
        return
    cluster, settings = connect()
    data = walk(cluster, settings, alert_id)
    emit({"ok": True, **data}, walk_text(data))


def _step(alert_id: str, step: Any, by: str, execute: bool) -> None:
    from pacsguard.services.response.act import run_step

    def say(line: str) -> None:  # each action as it happens, so a later failure leaves the earlier ones shown
        if not opts().json:
            typer.echo(terminal_safe(line))

    cluster, settings = connect()
    report = run_step(cluster, settings, alert_id, step, by, execute, progress=say)
    lines = [] if report.records else [f"no connector action for this alert ({step})"]
    if report.records and report.nothing_to_change:
        lines.append("nothing to change: every action was already done")
    lines += [f"by hand: {item}" for item in report.by_hand]
    if not execute and any(r.result == "planned" for r in report.records):
        lines.append("dry run: nothing was changed; run again with --execute to act")
    emit({"ok": True, **report.as_dict()}, "\n".join(lines))


@respond_app.command("contain")
@handle_errors
def respond_contain(alert_id: Annotated[str, typer.Argument(help="Alert id.")], execute: ExecuteOpt = False,
                    by: ByOpt = "analyst") -> None:
    """Contain: disable the account and end its sessions (Keycloak), ask webhooks (e.g. expire share links)."""
    _step(alert_id, "contain", by, execute)


@respond_app.command("reset")
@handle_errors
def respond_reset(alert_id: Annotated[str, typer.Argument(help="Alert id.")], execute: ExecuteOpt = False,
                  by: ByOpt = "analyst") -> None:
    """Reset: what to rotate for this rule, with the connector actions that do it (password update, role removal)."""
    _step(alert_id, "reset", by, execute)


@respond_app.command("preserve")
@handle_errors
def respond_preserve(alert_id: Annotated[str, typer.Argument(help="Alert id.")],
                     out: Annotated[Path | None, typer.Option("--out", help="Bundle path (default: "
                                                                            "./evidence-<alert>-<time>.zip).")] = None,
                     before: BeforeOpt = None, after: AfterOpt = None, by: ByOpt = "analyst") -> None:
    """Preserve: an evidence bundle (zip): the alert, the rule, the entity's events, a SHA-256 manifest."""
    from pacsguard.services.response.preserve import preserve

    cluster, settings = connect()
    bundle, rec = preserve(cluster, settings, alert_id, by, out, before, after)
    emit({"ok": True, "path": str(bundle.path), "sha256": bundle.sha256, "manifest_sha256": bundle.whole_sha256,
          "events": bundle.events, "action": rec.as_dict()},
         f"{bundle.path}: window {rec.data['from']} .. {rec.data['to']}: {bundle.events} event(s); "
         f"sha256 {bundle.sha256} (also in {bundle.path.name}.sha256)\n"
         f"check it with: pacsguard respond verify {bundle.path}")


@respond_app.command("scope")
@handle_errors
def respond_scope(alert_id: Annotated[str, typer.Argument(help="Alert id.")], before: BeforeOpt = None,
                  after: AfterOpt = None, by: ByOpt = "analyst") -> None:
    """Scope: what the entity touched in the window: studies, patients, destinations, recipients, IPs."""
    from pacsguard.services.response.scope import scope, scope_text

    cluster, settings = connect()
    report = scope(cluster, settings, alert_id, before, after, by=by)
    emit({"ok": True, **report}, scope_text(report))


@respond_app.command("verify")
@handle_errors
def respond_verify(bundle: Annotated[Path, typer.Argument(help="Evidence bundle (zip).")],
                   sha256: Annotated[str | None, typer.Option("--sha256", help="The zip's expected SHA-256 "
                                                                               "(default: <bundle>.sha256 if present).")] = None) -> None:
    """Recompute every hash of an evidence bundle; non-zero exit naming the file that changed."""
    from pacsguard.response.evidence import verify_bundle

    result = verify_bundle(bundle, sha256)
    emit({"ok": True, "path": str(result.path), "alert_id": result.alert_id, "events": result.events,
          "sha256": result.zip_sha256, "manifest_sha256": result.whole_sha256, "checked": result.checked,
          "zip_hash_checked": result.sidecar_checked},
         f"{bundle}: OK: {len(result.checked)} files, {result.events} event(s), alert {result.alert_id}"
         + ("" if result.sidecar_checked else " (no .sha256 beside it: the zip file hash was not checked)"))


@app.command()
@handle_errors
def checklist(
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown for an audit file.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the answer to this file too.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 4 when an item is FAIL.")] = False,
) -> None:
    """The eight baseline-audit questions, each PASS / FAIL / UNKNOWN from data, with its evidence."""
    from pacsguard.services.checklist import as_markdown, as_text
    from pacsguard.services.checklist import checklist as answer

    cluster, settings = connect()
    answers = answer(cluster, settings)
    data = {"ok": True, "items": [a.as_dict() for a in answers]}
    text = as_markdown(answers, settings) if markdown else as_text(answers)
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n" if opts().json else text + ("" if markdown else "\n"))
    emit(data, text)
    if strict and any(a.status == "FAIL" for a in answers):
        raise typer.Exit(EXIT_UNHEALTHY)


# -------------------------------------------------------------- collector


@app.command()
@handle_errors
def collect(
    udp: Annotated[list[str] | None, typer.Option("--udp", metavar="HOST:PORT",
                                                  help="Syslog over UDP (RFC 5426), e.g. 0.0.0.0:514.")] = None,
    tcp: Annotated[list[str] | None, typer.Option("--tcp", metavar="HOST:PORT",
                                                  help="Syslog over TCP, octet-counting or newline framing.")] = None,
    tls: Annotated[list[str] | None, typer.Option("--tls", metavar="HOST:PORT",
                                                  help="Syslog over TLS (RFC 5425), e.g. 0.0.0.0:6514.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Server certificate chain (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Server private key (PEM).")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option("--tls-client-ca",
                                                       help="Require client certificates signed by this CA.")] = None,
    http: Annotated[list[str] | None, typer.Option("--http", metavar="HOST:PORT",
                                                   help="FHIR AuditEvent endpoint: POST /fhir, /fhir/AuditEvent.")] = None,
    https: Annotated[list[str] | None, typer.Option("--https", metavar="HOST:PORT",
                                                    help="The FHIR endpoint over TLS (uses --tls-cert/--tls-key, "
                                                         "and --tls-client-ca to require client certificates).")] = None,
    files: Annotated[list[Path] | None, typer.Option("--file", metavar="PATH", help="Tail a JSON-lines file (one event a line).")] = None,
    keycloak_files: Annotated[list[Path] | None, typer.Option("--keycloak-file", metavar="PATH",
                                                              help="Tail a Keycloak log; only event lines are sent.")] = None,
    syslog_files: Annotated[list[Path] | None, typer.Option(
        "--syslog-file", metavar="PATH",
        help="Tail a file of syslog frames (RFC 5424 or 3164, one a line, as rsyslog writes them); "
             "ATNA XML goes through the same parser as the network inputs.")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir",
                                                   help="File offsets and the spool (default ~/.local/state/pacsguard/...).")] = None,
    spool_max: Annotated[str, typer.Option("--spool-max", help="Disk spool size cap.")] = "512MiB",
    max_message_size: Annotated[str, typer.Option("--max-message-size", help="Larger events are rejected.")] = "1MiB",
    http_max_body: Annotated[str, typer.Option("--http-max-body", help="Larger HTTP bodies get 413.")] = "16MiB",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Events per bulk request.")] = 500,
    flush_interval: Annotated[float, typer.Option("--flush-interval", min=0.01,
                                                  help="Seconds to wait to fill a batch.")] = 1.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Bulk requests in flight at once.")] = 2,
    queue_size: Annotated[str, typer.Option("--queue-size", help="In-memory queue cap (bytes).")] = "64MiB",
    retry_budget: Annotated[float, typer.Option("--retry-budget", min=0,
                                                help="Seconds of retries before spooling to disk.")] = 5.0,
    progress_interval: Annotated[float, typer.Option("--progress-interval",
                                                     help="Seconds between progress lines (0: none).")] = 10.0,
    shutdown_timeout: Annotated[float, typer.Option("--shutdown-timeout",
                                                    help="Seconds to flush on SIGTERM before spooling the rest.")] = 15.0,
    http_token_file: Annotated[Path | None, typer.Option(
        "--http-token-file", help="Bearer token FHIR senders must present (or PACSGUARD_COLLECTOR_TOKEN).")] = None,
    max_connections: Annotated[int, typer.Option("--max-connections", min=1,
                                                 help="Open connections per TCP/TLS/HTTP input.")] = 512,
    max_connections_per_address: Annotated[int, typer.Option("--max-connections-per-address", min=1,
                                                             help="Open connections per input from one address.")] = 64,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=0.1,
                                                help="Close a connection silent this many seconds.")] = 600.0,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=0.1,
                                                   help="A frame or HTTP request must complete within this.")] = 60.0,
    max_buffered: Annotated[str, typer.Option("--max-buffered",
                                              help="Partial frames and bodies held per input, all connections.")] = "64MiB",
    udp_receive_buffer: Annotated[str, typer.Option("--udp-receive-buffer",
                                                    help="Kernel receive buffer asked for per UDP socket.")] = "8MiB",
    proxy_from: Annotated[list[str] | None, typer.Option(
        "--proxy-from", metavar="ADDRESS[/BITS]",
        help="A load balancer in front of this collector: its TCP syslog connections start with a PROXY "
             "protocol v1 header naming the sender (nginx stream `proxy_protocol on;`), and its own "
             "connections are not held to --max-connections-per-address.")] = None,
    instance_name: Annotated[str | None, typer.Option(
        "--instance-name", help="This instance's name in /health (default: the host name).")] = None,
) -> None:
    """Receive audit events (syslog UDP/TCP/TLS, files, FHIR over HTTP) and bulk them into the data stream.

    Runs until SIGTERM/SIGINT, then flushes (or spools) what is queued and prints the counters:
    received = indexed + failed + spooled + rejected + in_flight.
    """
    import logging

    from pacsguard.collector.sender import SenderConfig
    from pacsguard.collector.service import (
        CollectorConfig,
        Listen,
        default_state_dir,
        parse_networks,
        parse_size,
        run_collector,
    )

    configure_logging(logging.INFO if opts().verbose else logging.WARNING,
                      "%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import SecretStr

    from pacsguard.collector.failures import resolve_failures_key
    from pacsguard.collector.limits import Limits

    cluster, settings = connect()
    token = os.environ.get("PACSGUARD_COLLECTOR_TOKEN") or (
        http_token_file.read_text().strip() if http_token_file else None)
    config = CollectorConfig(
        http_token=SecretStr(token) if token else None,
        failures_key=resolve_failures_key(create=True),
        limits=Limits(max_connections=max_connections, max_connections_per_address=max_connections_per_address,
                      idle_timeout=idle_timeout, request_timeout=request_timeout,
                      max_buffered_bytes=parse_size(max_buffered), proxies=parse_networks(proxy_from or [])),
        instance=instance_name or "",
        udp_receive_buffer=parse_size(udp_receive_buffer),
        state_dir=state_dir or default_state_dir(settings),
        udp=tuple(Listen.parse(a) for a in udp or []),
        tcp=tuple(Listen.parse(a) for a in tcp or []),
        tls=tuple(Listen.parse(a) for a in tls or []),
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        http=tuple(Listen.parse(a) for a in http or []),
        https=tuple(Listen.parse(a) for a in https or []),
        files=tuple([(p, "json") for p in files or []] + [(p, "keycloak") for p in keycloak_files or []]
                    + [(p, "syslog") for p in syslog_files or []]),
        max_message_bytes=parse_size(max_message_size),
        http_max_body_bytes=parse_size(http_max_body),
        spool_max_bytes=parse_size(spool_max),
        sender=SenderConfig(batch_size=batch_size, flush_interval=flush_interval, workers=workers,
                            retry_budget=retry_budget, queue_bytes=parse_size(queue_size)),
        progress_interval=progress_interval,
        shutdown_timeout=shutdown_timeout,
    )
    config.validate()

    def say(line: str) -> None:  # a long-running service: progress goes to stderr even with --json
        typer.secho(f"  {line}", err=True, fg=typer.colors.BRIGHT_BLACK)

    snap = run_collector(config, cluster, settings, say)
    reconciles = snap["received"] == sum(snap[k] for k in ("indexed", "failed", "spooled", "rejected", "in_flight"))
    emit({"ok": True, "counters": snap, "reconciles": reconciles},
         f"received {snap['received']}: indexed {snap['indexed']}, failed {snap['failed']} (failure index), "
         f"spooled {snap['spooled']}, rejected {snap['rejected']}, in flight {snap['in_flight']}; "
         f"{snap['events_per_second']} events/s")


# -------------------------------------------------------------- failures


failures_app = typer.Typer(help="The failure index: list failed events, decrypt their sealed originals, replay them "
                                "(failure-reviewer role and the failures key).")
app.add_typer(failures_app, name="failures")


@failures_app.command("list")
@handle_errors
def failures_list(size: Annotated[int, typer.Option("--size", min=1, max=10000)] = 50) -> None:
    """The newest failures: id, time, format, error, whether the original is sealed."""
    from pacsguard.services.failures import list_failures

    cluster, settings = connect()
    rows = list_failures(cluster, settings, size)
    emit({"ok": True, "failures": rows},
         "\n".join(f"{r['id']}  {r['timestamp']}  {r['format'] or '-'}  {'sealed' if r['sealed'] else 'no original'}"
                   f"  {(r['error'] or '')[:100]}" for r in rows) or "no failures")


@failures_app.command("decrypt")
@handle_errors
def failures_decrypt(
    failure_id: Annotated[str, typer.Argument(help="The failed event's id (from `failures list`).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the original here (mode 0600) "
                                                "instead of stdout.")] = None,
) -> None:
    """Open the sealed original of a failed event (needs the failures key: PACSGUARD_FAILURES_KEY[_FILE])."""
    from pacsguard.collector.failures import resolve_failures_key
    from pacsguard.services.failures import decrypt_failure

    cluster, settings = connect()
    text = decrypt_failure(cluster, settings, failure_id, resolve_failures_key())
    if output is not None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        emit({"ok": True, "id": failure_id, "output": str(output)}, f"original of {failure_id} written to {output}")
    else:
        emit({"ok": True, "id": failure_id, "original": text}, text)


@failures_app.command("replay")
@handle_errors
def failures_replay(
    failure_id: Annotated[str, typer.Argument(help="The failed event's id.")],
    from_file: Annotated[Path | None, typer.Option("--from", help="Replay this (fixed) text instead of the "
                                                   "decrypted original.")] = None,
) -> None:
    """Send a failed event again (as it was, or fixed) through the router under a new id."""
    from pacsguard.collector.failures import resolve_failures_key
    from pacsguard.services.failures import decrypt_failure, replay_failure

    cluster, settings = connect()
    text = (from_file.read_text(encoding="utf-8") if from_file
            else decrypt_failure(cluster, settings, failure_id, resolve_failures_key()))
    result = replay_failure(cluster, settings, failure_id, text)
    emit({"ok": True, **result}, f"replayed {failure_id} as {result['id']}: it landed in the {result['landed']} "
         f"index ({result['index']})")


# -------------------------------------------------------------- local node


PortOpt = Annotated[int, typer.Option("--port", envvar="PACSGUARD_NODE_PORT", help="HTTP port on 127.0.0.1.")]
NodeVersionOpt = Annotated[str | None, typer.Option(
    "--version", envvar="PACSGUARD_OPENSEARCH_VERSION",
    help="OpenSearch version of the node: 2.19.x or 3.x (default 2.19.6; CI also tests 3.8.0).")]


@cluster_app.command("up")
@handle_errors
def cluster_up(
    port: PortOpt = 9200,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start with empty data.")] = False,
    mode: Annotated[str, typer.Option("--mode", help="local | docker | auto (docker if an engine answers).")] = "auto",
    version: NodeVersionOpt = None,
) -> None:
    """Build (first time, cached) and start an OpenSearch node (2.19 or 3.x, --version); print its URL."""
    from pacsguard.devnode import start

    node = start(port=port, mode=mode, fresh=fresh, progress=progress, version=version)
    emit({"ok": True, **node}, f"OpenSearch {node['version']} is up at {node['url']} ({node['mode']} mode)")


@cluster_app.command("down")
@handle_errors
def cluster_down(port: PortOpt = 9200) -> None:
    """Stop the node this project started on --port (and only that one)."""
    from pacsguard.devnode import stop

    stopped = stop(port=port)
    emit({"ok": True, "stopped": stopped}, "stopped" if stopped else f"no pacsguard node running on port {port}")


@cluster_app.command("status")
@handle_errors
def cluster_status(port: PortOpt = 9200) -> None:
    """Whether the node runs, and the plugins and modules it really has."""
    from pacsguard.devnode import describe

    info = describe(port=port)
    if not info["running"]:
        emit({"ok": False, **info}, f"no pacsguard node running on port {port}")
        raise typer.Exit(EXIT_ERROR)
    lines = [f"url       {info['url']} ({info['mode']} mode, OpenSearch {info['version']}, {info['health']})",
             f"version   OpenSearch {info['version']}: {info['support']}",
             f"modules   {', '.join(info['modules'])}",
             f"plugins   {', '.join(info['plugins']) or '(none)'}"]
    for name, why in info["missing"].items():
        lines.append(f"MISSING   {name}: needed for {why}")
    emit({"ok": True, **info}, "\n".join(lines))


@cluster_app.command("logs")
@handle_errors
def cluster_logs(port: PortOpt = 9200, lines: Annotated[int, typer.Option("--lines", "-n")] = 50) -> None:
    """The last lines of the node's log."""
    from pacsguard.devnode import logs

    typer.echo(logs(port=port, lines=lines))


pacs_app = typer.Typer(help="A local PACS front for trying the proxy source: Orthanc with DICOMweb behind nginx "
                            "(Debian packages, loopback).")
cluster_app.add_typer(pacs_app, name="pacs")
PacsPortOpt = Annotated[int, typer.Option("--port", envvar="PACSGUARD_PACS_PORT",
                                          help="nginx port on 127.0.0.1 (Orthanc gets the next free one).")]
DEFAULT_PACS_PORT = 8042


@pacs_app.command("up")
@handle_errors
def pacs_up(
    port: PacsPortOpt = DEFAULT_PACS_PORT,
    fresh: Annotated[bool, typer.Option("--fresh", help="Restart with a new run directory.")] = False,
) -> None:
    """Start Orthanc (DICOMweb plugin) behind nginx writing the documented JSON access log; print where things are."""
    from pacsguard.devnode import pacs

    pacs.install_software(progress)  # what is missing, as root; a clear error otherwise
    state = pacs.up(port, progress=progress, fresh=fresh)
    emit({"ok": True, **asdict(state)}, "\n".join([
        (f"PACS front  {state.url} (nginx pid {state.nginx_pid}; Orthanc pid {state.orthanc_pid} on "
         f"127.0.0.1:{state.orthanc_port})"),
        f"DICOMweb    {state.dicomweb_url} (send the user in the X-Auth-Request-User header, as an auth proxy does)",
        f"access log  {state.access_log}: pacsguard collect --file {state.access_log}",
        f"logs        {state.orthanc_log}, {state.nginx_error_log}"]))


@pacs_app.command("down")
@handle_errors
def pacs_down(port: PacsPortOpt = DEFAULT_PACS_PORT) -> None:
    """Stop the PACS front this project started on --port (and only that one)."""
    from pacsguard.devnode import pacs

    stopped = pacs.down(port)
    emit({"ok": True, "stopped": stopped}, "stopped" if stopped else f"no pacsguard PACS front running on port {port}")


@pacs_app.command("status")
@handle_errors
def pacs_status(port: PacsPortOpt = DEFAULT_PACS_PORT) -> None:
    """Whether our PACS front runs on --port, and its access log."""
    from pacsguard.devnode import pacs

    state = pacs.status(port)
    if state is None:
        emit({"ok": False, "port": port, "running": False}, f"no pacsguard PACS front running on port {port}")
        raise typer.Exit(EXIT_ERROR)
    emit({"ok": True, "running": True, **asdict(state)},
         f"PACS front {state.url}, DICOMweb {state.dicomweb_url}, access log {state.access_log}")


keycloak_app = typer.Typer(help="A local Keycloak for development and CI (Maven Central, loopback, non-root).")
cluster_app.add_typer(keycloak_app, name="keycloak")
KcPortOpt = Annotated[int | None, typer.Option(
    "--port", envvar="PACSGUARD_KEYCLOAK_PORT", help="HTTP port on 127.0.0.1 (default 8180; 0: any free port).")]


def _keycloak_port(port: int | None) -> int:
    from pacsguard.devnode import keycloak

    return int(keycloak.load_recipe()["default_port"]) if port is None else port


@keycloak_app.command("up")
@handle_errors
def keycloak_up(
    port: KcPortOpt = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start with an empty database (new secrets).")] = False,
    log_format: Annotated[str, typer.Option("--log-format", help="Console log: text | json | ecs.")] = "text",
    event_log_format: Annotated[str | None, typer.Option(
        "--event-log-format", help="The event log file the collector tails (default: --log-format).")] = None,
) -> None:
    """Start (download once, cached) a Keycloak with realm `pacs`, its users and clients; print where things are."""
    from pacsguard.devnode import keycloak

    state = keycloak.up(_keycloak_port(port) or None, progress=progress, fresh=fresh, console_format=log_format,
                        file_format=event_log_format)
    secrets_dir = Path(state.admin_password_file).parent
    text = "\n".join([
        f"Keycloak {state.version} is up at {state.url} (pid {state.pid})",
        f"realm      {state.realm}; password logins through client {state.login_client}",
        f"event log  {state.event_log} ({state.file_format}): pacsguard collect --keycloak-file {state.event_log}",
        f"console    {state.console_log} ({state.console_format})",
        f"secrets    {secrets_dir}/ (admin-password, connector-secret, users.json; mode 0600, not shown)",
        "connector  export PACSGUARD_CONNECTORS__KEYCLOAK__URL=" + state.url,
        "           export PACSGUARD_CONNECTORS__KEYCLOAK__REALM=" + state.realm,
        "           export PACSGUARD_CONNECTORS__KEYCLOAK__CLIENT_SECRET_FILE=" + state.connector_secret_file,
    ])
    emit({"ok": True, **state.public()}, text)


@keycloak_app.command("down")
@handle_errors
def keycloak_down(port: KcPortOpt = None) -> None:
    """Stop the Keycloak this project started on --port (and only that one)."""
    from pacsguard.devnode import keycloak

    stopped = keycloak.down(_keycloak_port(port))
    emit({"ok": True, "stopped": stopped}, "stopped" if stopped else f"no pacsguard Keycloak running on port "
                                                                     f"{_keycloak_port(port)}")


@keycloak_app.command("status")
@handle_errors
def keycloak_status(port: KcPortOpt = None) -> None:
    """Whether our Keycloak runs on --port, its memory and its log files."""
    from pacsguard.devnode import keycloak

    info = keycloak.describe(_keycloak_port(port))
    if not info["running"]:
        emit({"ok": False, **info}, f"no pacsguard Keycloak running on port {info['port']}")
        raise typer.Exit(EXIT_ERROR)
    emit({"ok": True, **info}, "\n".join([
        (f"url        {info['url']} (Keycloak {info['version']}, pid {info['pid']}, "
         f"{'ready' if info['ready'] else 'NOT answering'}, RSS {info['rss_bytes'] / 2**20:.0f} MiB)"),
        f"realm      {info['realm']}",
        f"event log  {info['event_log']} ({info['file_format']})",
        f"console    {info['console_log']} ({info['console_format']})"]))


@app.command()
@handle_errors
def up(port: PortOpt = 9200,
       version: NodeVersionOpt = None,
       no_watch: Annotated[bool, typer.Option("--no-watch", help="Do not start `watch` in the background.")] = False,
       no_console: Annotated[bool, typer.Option("--no-console", help="Do not start the web console.")] = False,
       console_port: Annotated[int, typer.Option("--console-port", envvar="PACSGUARD_CONSOLE_PORT",
                                                 help="Port of the web console on 127.0.0.1.")] = 8765,
       ) -> None:
    """The main job on the embedded default: start the local node, install the pack, start the alert engine."""
    from pacsguard.devnode import start
    from pacsguard.engines.channels.inbox import inbox_path
    from pacsguard.services import background
    from pacsguard.services.install import alerting_signals
    from pacsguard.services.install import install as do_install

    node = start(port=port, mode="auto", fresh=False, progress=progress, version=version)
    cluster, settings = connect(node["url"])
    result = do_install(cluster, settings, progress=progress, allow_missing_plugins=True)
    counts = result.plan.summary()
    plugins, _ = cluster.installed_components()
    on_alerting = sorted(alerting_signals(settings, plugins))
    watch = None if no_watch else background.start(port, node["url"], opts().settings_file)
    from pacsguard.services.console import process as console_process
    console = None if no_console else console_process.start(port, node["url"], opts().settings_file, console_port)
    channels = [f"{c.name} ({c.type})" for c in settings.notifications.channels]
    inbox = None if channels else str(inbox_path(settings))
    alerting = "opensearch-alerting" in plugins
    data = {"ok": True, "url": node["url"], "summary": counts, "rules_on_alerting": on_alerting, "watch": watch,
            "channels": channels, "inbox": inbox, "owner": settings.routing.default_owner, "console": console,
            "alerting": alerting}
    text = (f"OpenSearch {node['version']} {node['url']} ({node['mode']}); pack installed: {counts['create']} created, "
            f"{counts['update']} updated, {counts['unchanged']} unchanged.\n"
            f"Send events to the data stream {settings.index('events_data_stream')} (op_type=create).")
    if not alerting:
        text += ("\nAlerting: not available on this node (Maven Central serves no Alerting or Notifications "
                 "plugin zip for it); the pack's own engine, pacsguard watch, runs the rules instead.")
    if watch:
        text += (f"\nAlert engine: pacsguard watch (pid {watch['pid']}, log {watch['log']}) runs the rules"
                 + (f" except {', '.join(on_alerting)} (on Alerting)" if on_alerting else "") + ".")
    where = ", ".join(channels) if channels else f"the local inbox {inbox} (no channel configured yet)"
    text += f"\nAlerts go to: {where}; owner {settings.routing.default_owner}."
    if console:
        text += f"\nConsole: {console['url']} (alerts, overview charts; log {console['log']})"
    emit(data, text + "\n\n" + next_steps(node["url"], settings, console["url"] if console else None, inbox))


def next_steps(url: str, settings: Settings, console_url: str | None, inbox: str | None) -> str:
    """What to try first after `up`: a burst that raises an alert, where it shows, how to add a channel."""
    cli = "pacsguard" if url == DEFAULT_LOCAL_URL else f"pacsguard --url {url}"
    seen = ", ".join(([f"the console {console_url}"] if console_url else [])
                     + ([f"the inbox file {inbox}"] if inbox else [])) or "the routed channels"
    return "\n".join([
        "Next steps:",
        "  1. Send 9 failed logins for one account (README \"Quick start\"):",
        f"     {burst_command(url, settings.index('events_data_stream'))}",
        f"  2. Within a minute alert 1a (dr.smith) appears: {cli} alerts list --wait 120; also in {seen}.",
        "  3. Add a channel (webhook, Slack, e-mail): README \"Alert channels\" has an example settings file;",
        "     then export PACSGUARD_SETTINGS=FILE, and pacsguard down; pacsguard up (watch reads it at start).",
        "  Or watch a whole simulated morning, every attack kind: pacsguard demo (about 7 minutes).",
    ])


DEFAULT_LOCAL_URL = "http://127.0.0.1:9200"
BURST_EVENT = ('{"message": "{\\"timestamp\\":\\"\'"$(date -u +%FT%TZ)"\'\\",\\"app\\":\\"cloudpacs\\",'
               '\\"action\\":\\"user-login\\",\\"outcome\\":\\"failure\\",\\"user\\":\\"dr.smith\\",'
               '\\"source_ip\\":\\"81.2.69.142\\"}"}')


def burst_command(url: str, data_stream: str) -> str:
    """The README's quick-start burst as one shell line: 9 failed logins of dr.smith, stamped now."""
    return (f"for i in $(seq 9); do curl -s -o /dev/null -w '%{{http_code}} ' -XPOST "
            f"'{url}/{data_stream}/_doc?op_type=create' -H 'content-type: application/json' "
            f"-d '{BURST_EVENT}'; done; echo")


@app.command()
@handle_errors
def down(port: PortOpt = 9200) -> None:
    """Stop what `up` started: the background `watch`, the console and the local node."""
    from pacsguard.devnode import stop
    from pacsguard.services import background
    from pacsguard.services.console import process as console_process

    watch = background.stop(port)
    console = console_process.stop(port)
    node = stop(port=port)

    def said(what: str, stopped: bool) -> str:
        return f"{what} {'stopped' if stopped else 'was not running'}"

    emit({"ok": True, "watch_stopped": watch, "console_stopped": console, "node_stopped": node},
         "; ".join([said("watch", watch), said("console", console), said("node", node)]))


# ------------------------------------------------------------------ alerts

alerts_app = typer.Typer(help="Alerts of both engines: list, show, acknowledge, close.")
app.add_typer(alerts_app, name="alerts")
WhoOpt = Annotated[str, typer.Option("--by", envvar="USER", help="Who acts (recorded on the alert).")]


def _alert_rows(views: list[Any]) -> str:
    return table(["id", "engine", "status", "condition", "severity", "signal", "entity", "count", "owner", "start"],
                 [[v.id, v.engine, v.status, v.condition, v.severity, v.signal, v.entity,
                   "-" if v.count is None else v.count, v.owner, v.start_time] for v in views])


@alerts_app.command("list")
@handle_errors
def alerts_list(
    state: Annotated[list[str] | None, typer.Option(
        "--state", help="Condition as Alerting names it: ACTIVE, ACKNOWLEDGED, COMPLETED, ERROR, DELETED.")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="open, acknowledged, closed.")] = None,
    all_alerts: Annotated[bool, typer.Option("--all", help="Every alert, closed ones included.")] = False,
    signal: Annotated[str | None, typer.Option("--signal", help="Only this signal, e.g. 4a.")] = None,
    wait: Annotated[int, typer.Option("--wait", min=0, help="Seconds to wait for a first alert (of --state "
                                      "and --signal) when there is none yet.")] = 0,
) -> None:
    """The alert queue of this installation, newest first (both engines).

    By default every alert nobody has closed: open or acknowledged, whether its condition is
    still active or has cleared. --all, --status or --state choose otherwise. While no channel is
    configured, it names the local inbox the pack's engine delivers to."""
    import time

    from pacsguard.engines.channels.inbox import inbox_path
    from pacsguard.services.alerts import QUEUE, list_alerts

    cluster, settings = connect()
    statuses = [s.lower() for s in status] if status else (None if all_alerts or state else list(QUEUE))
    deadline = time.monotonic() + wait
    while True:
        views = list_alerts(cluster, settings, [s.upper() for s in state] if state else None, signal, statuses)
        if views or time.monotonic() >= deadline:
            break
        time.sleep(2)
    what = "in the queue (open or acknowledged)" if statuses == list(QUEUE) else ""
    inbox = None if settings.notifications.channels else str(inbox_path(settings))
    emit({"ok": True, "alerts": [v.as_dict() for v in views], "inbox": inbox},
         (_alert_rows(views) if views else "no alerts") + f"\n\n{len(views)} alert(s) {what}".rstrip()
         + (f"\nno channel configured: the pack's engine delivers alerts to the inbox {inbox}" if inbox else ""))


@alerts_app.command("show")
@handle_errors
def alerts_show(alert_id: Annotated[str, typer.Argument(help="Alert id.")]) -> None:
    """One alert: its message, deliveries and history."""
    from pacsguard.services.alerts import show_alert

    cluster, settings = connect()
    view = show_alert(cluster, settings, alert_id)
    d = view.detail or {}
    safe = terminal_safe  # every value on one line of its own: a CR or LF in it cannot forge another
    count = "" if view.count is None else f"; count {view.count}"
    lines = [(f"{safe(view.id)}  {view.status} (condition {view.condition}, {view.state})  {view.severity}  "
              f"signal {view.signal}  entity {safe(view.entity)}"),
             f"engine {view.engine}; owner {safe(view.owner or '-')}; opened {view.start_time}{count}", "",
             terminal_safe((d.get("message") or {}).get("text", ""), keep_newlines=True)]
    for item in d.get("deliveries", []):
        lines.append(f"delivery {safe(item['channel'])} ({item['kind']}): {'ok' if item['ok'] else 'FAILED'} "
                     f"after {item['attempts']} attempt(s), {safe(item.get('status'))}")
    for h in d.get("history", []):
        lines.append(f"{h['at']}  {h.get('status') or h['state']:<13} {safe(h['by'])}  {safe(h.get('note', ''))}")
    from pacsguard.services.response.routine import actions_not_in_history

    extra = actions_not_in_history(cluster, settings, view.id, d.get("history", []))
    for rec in extra:  # response actions (pacsguard respond) the alert document itself does not hold
        lines.append(f"{rec.at}  {view.state:<13} {safe(rec.by)}  {safe(rec.line())}")
    emit({"ok": True, "alert": view.as_dict(), "actions": [r.as_dict() for r in extra]}, "\n".join(lines))


@alerts_app.command("ack")
@handle_errors
def alerts_ack(alert_id: Annotated[str, typer.Argument(help="Alert id.")], by: WhoOpt = "analyst",
               note: Annotated[str, typer.Option("--note", help="Why.")] = "",
               except_until: Annotated[str | None, typer.Option(
                   "--except-until", help="Also except the alert's entity from its rule until then (8h, 7d, friday, "
                                          "2026-12-11); --note is the exception's reason.")] = None) -> None:
    """Acknowledge: a person has the alert; no further reminders. It stays in the queue until closed.

    Who (--by) and why (--note) are kept with the alert, on both engines. With --except-until, the same
    command writes a time-bound exception ("confirmed travel to GB until Friday")."""
    from pacsguard.services.alerts import acknowledge
    from pacsguard.services.exceptions import except_alert

    cluster, settings = connect()
    if except_until is not None and not note.strip():
        raise typer.BadParameter("--except-until needs --note: the exception's reason")
    view = acknowledge(cluster, settings, alert_id, by, note)
    data: dict[str, Any] = {"ok": True, "alert": view.as_dict()}
    text = f"{view.id} {view.status} (condition {view.condition})"
    if except_until is not None:
        entry = except_alert(cluster, settings, view, except_until, note, by)
        data["exception"] = entry.as_dict()
        text += f"\nexception {entry.id}: {entry.target()} until {entry.expires}"
    emit(data, text)


@alerts_app.command("close")
@handle_errors
def alerts_close(alert_id: Annotated[str, typer.Argument(help="Alert id.")], by: WhoOpt = "analyst",
                 note: Annotated[str, typer.Option("--note", help="Outcome, e.g. 'travel confirmed'.")] = "") -> None:
    """Close with the outcome: out of the queue; the alert keeps its whole history (both engines).

    An alert whose condition still holds is acknowledged (nobody is reminded) and completes when it clears."""
    from pacsguard.services.alerts import close

    cluster, settings = connect()
    view = close(cluster, settings, alert_id, by, note)
    emit({"ok": True, "alert": view.as_dict()}, f"{view.id} {view.status} (condition {view.condition})")


@app.command()
@handle_errors
def watch(
    once: Annotated[bool, typer.Option("--once", help="Run every rule once, deliver, and exit.")] = False,
    no_jobs: Annotated[bool, typer.Option("--no-jobs", help="Do not run the baseline/profile jobs here.")] = False,
) -> None:
    """The pacsguard alert engine: runs the rules Alerting does not, keeps alert state, delivers alerts.

    Runs until SIGTERM/SIGINT; finishes its deliveries before it exits.
    """
    import logging

    from pacsguard.engines.delivery import delivery_problems
    from pacsguard.jobs.schedule import stop_on_signals
    from pacsguard.services.watch import Watcher, run_forever, watch_leader

    configure_logging(logging.INFO if opts().verbose else logging.WARNING)
    cluster, settings = connect()
    problems = [p for c in settings.notifications.channels for p in delivery_problems(c)]
    if problems:
        raise PacsguardError("; ".join(problems))

    def say(line: str) -> None:  # a long-running service: progress goes to stderr even with --json
        typer.secho(f"{_now()} {terminal_safe(line)}", err=True, fg=typer.colors.BRIGHT_BLACK)

    watcher = Watcher(cluster, settings, say, run_jobs=not no_jobs)
    say(f"watching {len(watcher.rules)} rule(s) on {cluster.url}: "
        f"{', '.join(s.compiled.signal for s in watcher.rules) or 'none (Alerting runs them)'}; "
        f"channels: {', '.join(watcher.channels) or 'none'}")
    if once:
        watcher.tick()
        watcher.close()
        report = watcher.report
        if not watcher.leading:
            lease = watch_leader(cluster, settings) or {}
            report.errors.append(f"another watch leads ({lease.get('holder', 'unknown')}): nothing was run")
    else:
        with stop_on_signals() as stop:
            report = run_forever(watcher, stop)
    emit({"ok": not report.errors, **report.__dict__},
         f"{report.runs} rule run(s): {report.opened} opened, {report.escalated} escalated, "
         f"{report.completed} completed; {report.delivered} delivered, {report.failed_deliveries} failed")


def _now() -> str:
    import datetime as dt

    return dt.datetime.now().isoformat(timespec="seconds")


# ------------------------------------------------------------------ dashboards and console
# Dashboards has options of its own (another server, often with another CA, user and tenant
# than the cluster); the password comes from PACSGUARD_DASHBOARDS_PASSWORD or a file only.

dashboards_app = typer.Typer(help="OpenSearch Dashboards content: index patterns, visualizations, dashboards.")
app.add_typer(dashboards_app, name="dashboards")

def dashboards_connection(url: str | None, ca_bundle: Path | None = None, username: str | None = None,
                          password_file: Path | None = None, tenant: str | None = None,
                          insecure: bool = False) -> Any:
    import os

    from pydantic import SecretStr

    from pacsguard.core.dashboards import Dashboards, DashboardsSettings

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


def install_dashboards(conn: Any, dry_run: bool = False) -> dict[str, Any]:
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


@dashboards_app.command("diff")
@handle_errors
def dashboards_diff(url: DashUrl = None, ca_bundle: DashCa = None, username: DashUser = None,
                    password_file: DashPwFile = None, tenant: DashTenant = None,
                    insecure: DashInsecure = False) -> None:
    """A unified diff, Dashboards vs pack, per saved object that would change (JSON strings decoded)."""
    from pacsguard.services import dashboards as svc

    conn = dashboards_connection(url, ca_bundle, username, password_file, tenant, insecure)
    _, settings = connect()
    out: list[str] = []
    data: list[dict[str, Any]] = []
    for change, live, want in svc.diff(conn, settings):
        left = json.dumps(live, indent=2, sort_keys=True).splitlines() if live is not None else []
        right = json.dumps(want, indent=2, sort_keys=True).splitlines() if want is not None else []
        lines = list(difflib.unified_diff(left, right, f"dashboards/{change.kind}/{change.id}",
                                          f"pack/{change.kind}/{change.id}", lineterm=""))
        out.extend(lines or [f"= {change.kind} {change.id}: only the pacsguard stamp differs"])
        data.append({"kind": change.kind, "id": change.id, "action": change.action, "diff": lines})
    emit({"ok": True, "changes": data}, "\n".join(out) if out else "no differences")


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
    """The stamped ndjson, for Dashboards Management > Saved objects > Import where this CLI cannot reach Dashboards."""
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


GLOBAL_FLAGS = {"--json", "--verbose", "-v", "--insecure"}
GLOBAL_VALUED = {"--url", "--username", "--password-file", "--ca-bundle", "--namespace", "--settings"}


# -------------------------------------------------------------- simulate, backtest


@app.command()
@handle_errors
def simulate(
    days: Annotated[int, typer.Option("--days", min=2, max=60, help="Labelled days, ending now.")] = 14,
    users: Annotated[int, typer.Option("--users", min=8, max=5000, help="Accounts of the hospital.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same activity.")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Where the files, labels.jsonl and meta.json go.")] = Path(
        "pacsguard-simulation"),
    warmup_days: Annotated[int, typer.Option("--warmup-days", min=1, max=30,
                                             help="Normal activity before the labelled days (history).")] = 7,
    no_ship: Annotated[bool, typer.Option("--no-ship", help="Only write the files.")] = False,
) -> None:
    """A labelled hospital: users, shifts, travel, heavy exporters, attacks of every signal and near-misses,
    written as viewer JSON, Keycloak log lines and DICOM audit syslog, shipped through the collector's
    file inputs, with the user directory (CSV) loaded."""
    import datetime as dt

    from pacsguard.collector.failures import resolve_failures_key
    from pacsguard.services.simulate import ship, write
    from pacsguard.services.simulate import simulate as generate

    sim = generate(days, users, seed, dt.datetime.now(dt.timezone.utc), warmup_days)
    meta = write(sim, out, seed)
    progress(f"wrote {meta['events']['generic']} viewer events, {meta['events']['keycloak']} Keycloak lines, "
             f"{meta['events']['atna']} DICOM audit messages, {meta['users']} directory accounts and "
             f"{len(sim.labels)} labels to {out}")
    shipped = None
    if not no_ship:
        cluster, settings = connect()
        progress(f"shipping through the collector into {settings.index('events_data_stream')}")
        shipped = ship(cluster, settings, out, meta, resolve_failures_key(create=True))
    emit({"ok": True, "meta": meta, "shipped": shipped},
         f"{meta['users']} users, {meta['days']} labelled days from {meta['from']} (warm-up from "
         f"{meta['warmup_from']}): labels {meta['labels']}\n"
         + (f"shipped: received {shipped['received']}, indexed {shipped['indexed']}, failed {shipped['failed']}; "
            f"directory: {shipped['directory_accounts']} accounts\n"
            if shipped else "")
         + f"next: pacsguard backtest --labels {out / 'labels.jsonl'}")


@app.command()
@handle_errors
def backtest(
    time_from: Annotated[str | None, typer.Option("--from", help="ISO 8601 start (default: the simulation's).")] = None,
    time_to: Annotated[str | None, typer.Option("--to", help="ISO 8601 end (default: the simulation's).")] = None,
    step: Annotated[str, typer.Option("--step", help="Rules run as of every step.")] = "5m",
    jobs_every: Annotated[str | None, typer.Option("--jobs-every", help="Jobs replayed as of every ... "
                                                   "(a multiple of --step; default: the step).")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="labels.jsonl of `pacsguard simulate` "
                                                "(default: pacsguard-simulation/labels.jsonl if present).")] = None,
    users: Annotated[int | None, typer.Option("--users", help="Accounts, for false alerts per 1,000 user-days "
                                              "(default: the simulation's, else those who signed in).")] = None,
) -> None:
    """What the rules would have raised over a period: jobs replayed as of each step, every rule run as of it;
    alerts per rule per day, each alert's entity and first time, and recall/precision against labels."""
    from pacsguard.services.backtest import as_text, load_labels, parse_time
    from pacsguard.services.backtest import backtest as run_backtest

    if labels is None and Path("pacsguard-simulation/labels.jsonl").is_file():
        labels = Path("pacsguard-simulation/labels.jsonl")
    meta: dict[str, Any] = {}
    if labels is not None:
        if not labels.is_file():
            raise PacsguardError(f"--labels {labels}: no such file")
        meta_file = labels.parent / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if not (time_from or meta.get("from")) or not (time_to or meta.get("to")):
        raise PacsguardError("give --from and --to (or --labels of a simulation, whose meta.json has them)")
    start = parse_time(time_from or meta["from"], "--from")
    end = parse_time(time_to or meta["to"], "--to")
    cluster, settings = connect()
    report = run_backtest(cluster, settings, start, end, step, jobs_every,
                          load_labels(labels) if labels else None, users or meta.get("users"), progress)
    emit({"ok": True, **report.as_dict()}, as_text(report))


@app.command()
@handle_errors
def demo(
    port: PortOpt = 9200,
    users: Annotated[int, typer.Option("--users", min=8, max=500, help="Accounts of the simulated hospital.")] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Where the shipped files go (default: demo-<port> "
                                             "in the state dir, ~/.local/state/pacsguard).")] = None,
    wait: Annotated[int, typer.Option("--wait", min=10, help="Seconds to wait for alerts after the morning.")] = 420,
    console_port: Annotated[int, typer.Option("--console-port", envvar="PACSGUARD_CONSOLE_PORT",
                                              help="Port of the web console on 127.0.0.1.")] = 8765,
) -> None:
    """`up` (with the console), then a simulated morning shipped live through the collector, and the alerts
    as `watch` raises them."""
    from pacsguard.services.console import process as console_process
    from pacsguard.services.demo import demo_dir, failures_key_for_demo, run_demo

    up(port=port, no_watch=False, no_console=False, console_port=console_port)
    cluster, settings = connect(f"http://127.0.0.1:{port}")
    out = out or demo_dir(port)
    progress(f"the demo's files go to {out}")

    def show(alert: Any) -> None:
        typer.echo(terminal_safe(f"ALERT {alert.start_time}  {alert.severity:<8} {alert.signal:>3}  {alert.entity}  "
                                 f"({alert.rule}; owner {alert.owner}; pacsguard alerts show {alert.id})"))

    count = run_demo(cluster, settings, out, failures_key_for_demo(), progress, show, users, seed, wait)
    console = console_process.running(port)
    cli = "pacsguard" if port == 9200 else f"pacsguard --url http://127.0.0.1:{port}"
    typer.echo(f"{count} alert(s) arrived. All of them: {cli} alerts list"
               + (f", or the console {console['url']}" if console else "")
               + f"; the demo's files: {out}; stop everything: pacsguard down --port {port}")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let global options stand anywhere (`pacsguard status --json` as well as
    `pacsguard --json status`): they are moved in front of the command."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg == "--":
            rest += argv[i:]
            break
        if name in GLOBAL_FLAGS:
            front.append(arg)
        elif name in GLOBAL_VALUED:
            front.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                front.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run() -> None:
    """Console entry point."""
    app(args=hoist_global_options(sys.argv[1:]), prog_name="pacsguard")


if __name__ == "__main__":  # pragma: no cover
    run()
