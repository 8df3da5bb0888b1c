"""The `raices` command line: it parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.errors import RaicesError
from app.settings import get_settings

app = typer.Typer(
    help="Raíces: priority municipios for the root causes of migration.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="The database: local cluster, migrations, URL.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: RaicesError) -> None:
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    for line in getattr(exc, "errors", [])[:20]:
        err.print(f"  - {line}", highlight=False)
    raise typer.Exit(code=2)


@db_app.command("start")
def db_start(
    install: Annotated[
        bool, typer.Option(help="Install PostGIS with apt-get when missing (root or sudo)")
    ] = True,
) -> None:
    """Start (or reuse) the local PostGIS cluster under .data/ unless DATABASE_URL is set."""
    _db_start(install)


def _db_start(install: bool) -> None:
    from app.cluster import Cluster, ensure_postgis, pg_bindir

    settings = get_settings()
    if settings.database_url:
        console.print("DATABASE_URL is set: using that database, no local cluster started.")
        return
    try:
        ensure_postgis(pg_bindir(), allow_install=install)
        cluster = Cluster(settings.data_dir)
        was_running = cluster.running()
        cluster.start()
    except RaicesError as exc:
        _fail(exc)
    state = "reused" if was_running else "started"
    console.print(f"Local PostGIS cluster {state}: {cluster.url}", highlight=False)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local PostGIS cluster."""
    from app.cluster import Cluster

    settings = get_settings()
    cluster = Cluster(settings.data_dir)
    try:
        stopped = cluster.stop()
    except RaicesError as exc:
        _fail(exc)
    console.print("Local PostGIS cluster stopped." if stopped else "No local PostGIS cluster is running.")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations."""
    from app.db import database_url, upgrade

    try:
        upgrade(database_url(get_settings()), revision)
    except RaicesError as exc:
        _fail(exc)
    console.print(f"Database migrated to {revision}.")


@db_app.command("url")
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password too")] = False,
) -> None:
    """Print the URL of the database in use (for notebooks and tools)."""
    from app.db import database_url

    try:
        url = database_url(get_settings())
    except RaicesError as exc:
        _fail(exc)
    print(url.render_as_string(hide_password=not show_password))


@app.command("load")
def load(
    source: Annotated[
        str, typer.Argument(help="A source id from the manifest, 'all', or 'table' / 'raster'")
    ],
    file: Annotated[Path | None, typer.Argument(help="With 'table' or 'raster': the file to load")] = None,
    missing: Annotated[bool, typer.Option("--missing", help="With 'all': only sources never loaded")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even when the files are unchanged")] = False,
    indicator: Annotated[str | None, typer.Option(help="table/raster: the indicator code to create")] = None,
    name: Annotated[str | None, typer.Option(help="table/raster: the indicator's name")] = None,
    theme: Annotated[str, typer.Option(help="migration, I, II, III, IV, V or context")] = "context",
    direction: Annotated[int, typer.Option(help="1 when higher is worse, -1 when higher is better")] = 1,
    unit: Annotated[str, typer.Option(help="The unit of the values")] = "as supplied",
    measure: Annotated[str, typer.Option(help="count or rate")] = "rate",
    period: Annotated[str, typer.Option(help="The period the values describe")] = "unstated",
    key: Annotated[str, typer.Option(help="table: pcode, national_code or name")] = "pcode",
    key_column: Annotated[
        str | None, typer.Option(help="table: the column with the key (default: --key)")
    ] = None,
    value_column: Annotated[str, typer.Option(help="table: the column with the values")] = "value",
    department_column: Annotated[
        str | None, typer.Option(help="table, key=name: the department column")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="GTM, SLV or HND (for national codes and names)")
    ] = None,
    set_id: Annotated[str | None, typer.Option("--set", help="The boundary set to load into")] = None,
    sheet: Annotated[str | None, typer.Option(help="table: the XLSX sheet")] = None,
    accept_partial: Annotated[
        bool, typer.Option(help="table: store the matched rows even if some do not match")
    ] = False,
    stat: Annotated[str, typer.Option(help="raster: mean, min, max, sum, share_above, share_below")] = "mean",
    threshold: Annotated[float | None, typer.Option(help="raster: threshold for share_above/below")] = None,
) -> None:
    """Load a source (or all bundled sources), or a table or raster of your own, atomically."""
    from app.db import make_engine
    from app.ingest.run import loadable_ids

    settings = get_settings()
    try:
        engine = make_engine(settings)
        if source in ("table", "raster"):
            _load_user(
                engine,
                source,
                file,
                indicator,
                name,
                theme,
                direction,
                unit,
                measure,
                period,
                key,
                key_column,
                value_column,
                department_column,
                country,
                set_id,
                sheet,
                accept_partial,
                stat,
                threshold,
                force,
            )
            return
        ids = loadable_ids() if source == "all" else [source]
        if source == "all" and missing:
            ids = _missing_sources(engine, settings)
            if not ids:
                console.print(
                    "Every bundled source is loaded; nothing to do (`raices load all --force` reloads)."
                )
                return
        _load_sources(engine, settings, ids, force=force)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)


def _missing_sources(engine: Any, settings: Any = None) -> list[str]:
    """The bundled sources never loaded, in load order (a query: no loader is imported); with `settings`,
    also those whose indicator definitions in the catalogue differ from the stored ones
    (`app.ingest.run.catalogue_changed`, which reads the catalogue: about 3 s of imports), so that a
    catalogue change is loaded and re-scores."""
    from app.ingest.run import catalogue_changed, loadable_ids, loaded_source_ids

    done = loaded_source_ids(engine)
    if settings is not None:
        done -= catalogue_changed(engine, settings)
    return [i for i in loadable_ids() if i not in done]


def _load_sources(engine: Any, settings: Any, ids: list[str], *, force: bool = False) -> None:
    """Load these sources in order, a spinner per source and a report line after each."""
    from app.ingest.run import load_source
    from app.sources import load_manifest

    manifest = load_manifest(settings.manifest)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        for sid in ids:
            task = bar.add_task(f"{sid}: resolving files")

            def step(msg: str, t: TaskID = task, s: str = sid) -> None:
                bar.update(t, description=f"{s}: {msg}")

            report = load_source(engine, settings, sid, force=force, sources=manifest, progress=step)
            bar.remove_task(task)
            _print_report(sid, report)


def _print_report(label: str, report: Any) -> None:
    console.print(
        f"[green]{label}[/]: {report.status}, {report.summary()} in {report.seconds:.1f}s", highlight=False
    )
    for note in getattr(report, "notes", []):
        console.print(f"  note: {note}", highlight=False)
    for w in report.warnings:
        console.print(f"  [yellow]warning:[/] {w}", highlight=False)


def _load_user(
    engine: Any,
    kind: str,
    file: Path | None,
    indicator: str | None,
    name: str | None,
    theme: str,
    direction: int,
    unit: str,
    measure: str,
    period: str,
    key: str,
    key_column: str | None,
    value_column: str,
    department_column: str | None,
    country: str | None,
    set_id: str | None,
    sheet: str | None,
    accept_partial: bool,
    stat: str,
    threshold: float | None,
    force: bool,
) -> None:
    import time

    from app.errors import InvalidParameter
    from app.ingest.layers import store_layer
    from app.ingest.userdata import TableSpec, check_code_free, prepare_user_layer, user_indicator

    if file is None or indicator is None:
        raise InvalidParameter(f"`raices load {kind}` needs a FILE and --indicator CODE.")
    if not file.is_file():
        raise InvalidParameter(f"No such file: {file}")
    started = time.perf_counter()
    ind = user_indicator(
        indicator, name=name, theme=theme, direction=direction, unit=unit, measure=measure, period=period
    )
    spec = TableSpec(
        key=key,
        key_column=key_column or key,
        value_column=value_column,
        department_column=department_column,
        country=country,
        set_id=set_id,
        sheet=sheet,
        accept_partial=accept_partial,
    )
    with engine.connect() as conn:
        check_code_free(conn, ind.code)
        layer = prepare_user_layer(
            conn, file, ind, spec, raster=kind == "raster", stat=stat, threshold=threshold
        )
    report = store_layer(engine, layer, force=force)
    report.seconds = time.perf_counter() - started
    _print_report(f"{kind} {file.name}", report)


@app.command("score")
def score_cmd(
    profile: Annotated[
        str | None,
        typer.Option(
            help="A bundled profile id (see /v1/profiles) or a profile JSON file (default: root-causes-2021)"
        ),
    ] = None,
    country: Annotated[str | None, typer.Option(help="Only this country (ISO3)")] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows per country")] = 15,
    set_id: Annotated[str | None, typer.Option("--set", help="Score on this boundary set")] = None,
) -> None:
    """Score a profile (stored per profile hash and data version) and print a ranked table per country."""
    import json

    from pydantic import ValidationError

    from app.scoring import service
    from app.scoring.profile import Profile

    settings = get_settings()
    try:
        if profile is None or (profile in service.bundled_profiles() and not Path(profile).exists()):
            spec = service.profile_by_id(profile or service.DEFAULT_PROFILE)
        else:
            try:
                spec = Profile.model_validate(json.loads(Path(profile).read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError, ValidationError) as exc:
                err.print(f"[bold red]error:[/] {profile} is not a valid profile: {exc}", highlight=False)
                raise typer.Exit(code=2) from None
        _score_and_print(settings, spec, country, top, set_id)
    except RaicesError as exc:
        _fail(exc)


def _score_and_print(
    settings: Any, spec: Any, country: str | None, top: int, set_id: str | None, status: bool = True
) -> None:
    """Score a profile (a stored run when there is one) and print its top `top` per country."""
    from app.db import make_engine
    from app.scoring import read, service

    engine = make_engine(settings)
    try:
        with (
            console.status(f"scoring {spec.id} ({spec.draws} Monte Carlo draws, hotspots, zones)…")
            if status
            else contextlib.nullcontext()
        ):
            run = service.ensure_run(
                engine,
                spec,
                [set_id] if set_id else None,
                retention=service.Retention.from_settings(settings),
            )
        with engine.connect() as conn:
            f = read.PriorityFilter.parse(country, None, None, None, top)
            _, items, _ = read.priorities(conn, run, f, limit=10000, offset=0)
        fit = service.run_fit(engine, run)
    finally:
        engine.dispose()
    console.print(f"profile {spec.id} (hash {spec.hash()})", highlight=False)
    if fit:
        _print_fit(fit)
    for iso in sorted({i["country"] for i in items}):
        table = Table(
            "rank",
            "5–95 %",
            "municipio",
            "department",
            "score",
            "tier",
            "pillar",
            "2nd",
            "hotspot",
            "zone",
            title=iso,
        )
        for i in (x for x in items if x["country"] == iso):
            lo, hi = i["rank_interval"] or ("", "")
            table.add_row(
                str(i["rank"]),
                f"{lo}–{hi}",
                i["name"],
                i["department"]["name"] or "",
                f"{i['score']:.1f}",
                str(i["tier"]),
                i["pillar"] or "—",
                i["pillar_secondary"] or "—",
                i["hotspot"],
                i["zone"] or "",
            )
        console.print(table, width=max(console.width, 150))


def _print_fit(fit: dict[str, Any]) -> None:
    """A fitted profile's figures per country: association, not cause."""
    table = Table("country", "status", "units", "out-of-sample ρ", "R²", "largest coefficients", title="fit")
    for f in fit["countries"]:
        oos = f["out_of_sample"]
        top = ", ".join(f"{c['code']} {c['coefficient']:+.3f}" for c in f["coefficients"][:3])
        table.add_row(
            f["country"],
            f["status"],
            str(f["units_with_outcome"]),
            "—" if oos["spearman"] is None else f"{oos['spearman']:.2f}",
            "—" if oos["r2"] is None else f"{oos['r2']:.2f}",
            top,
        )
    console.print(table, width=max(console.width, 150))
    console.print("Association, not cause: drivers that go with out-migration here.", highlight=False)


@app.command("series")
def series_cmd(
    pcode: Annotated[str, typer.Argument(help="A municipio's P-code (see /v1/municipalities)")],
    indicator: Annotated[str, typer.Option(help="An indicator code (see /v1/indicators)")],
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table")] = False,
) -> None:
    """Every period of one indicator for one municipio, oldest first, with its flags and source."""
    from app import indicators
    from app.db import make_engine

    try:
        engine = make_engine(get_settings())
        with engine.connect() as conn:
            body = indicators.unit_series(conn, pcode, indicator)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    if as_csv:
        typer.echo(indicators.series_csv(body), nl=False)
        return
    unit, ind = body["unit"], body["indicator"]
    table = Table(
        title=f"{ind['code']} — {ind['name_en']} ({ind['unit']})\n{unit['pcode']} {unit['name']}, {unit['country']}"
    )
    for column in ("period", "value", "flags"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for i in body["items"]:
        table.add_row(i["period"], "" if i["value"] is None else f"{i['value']:,.6g}", ", ".join(i["flags"]))
    console.print(table)
    console.print(f"source: {body['source']['title']} · publisher: {ind['publisher']}", highlight=False)


@app.command("export")
def export_cmd(
    output: Annotated[Path, typer.Argument(help="The file to write")],
    fmt: Annotated[str, typer.Option("--format", help="gpkg, fgb, geojson or csv")] = "gpkg",
    profile: Annotated[
        Path | None, typer.Option(help="A profile JSON file (default: root-causes-2021)")
    ] = None,
    country: Annotated[str | None, typer.Option(help="Only this country (ISO3)")] = None,
    department: Annotated[str | None, typer.Option(help="Only this department (P-code)")] = None,
    pillar: Annotated[str | None, typer.Option(help="Only municipios led by this pillar")] = None,
    tier: Annotated[int | None, typer.Option(help="Only this tier")] = None,
    top: Annotated[int | None, typer.Option(help="Only ranks 1…top in each country")] = None,
    wkt: Annotated[bool, typer.Option(help="csv: add a WKT geometry column")] = False,
) -> None:
    """Export the scored, filtered priorities: a QGIS-styled GeoPackage, FlatGeobuf, GeoJSON or CSV."""
    import json

    from pydantic import ValidationError

    from app import exports
    from app.db import make_engine
    from app.scoring import read, service
    from app.scoring.profile import Profile

    if fmt not in exports.EXPORT_FORMATS:
        err.print(
            f"[bold red]error:[/] --format must be one of {', '.join(exports.EXPORT_FORMATS)}",
            highlight=False,
        )
        raise typer.Exit(code=2)
    settings = get_settings()
    try:
        if profile is None:
            spec = service.profile_by_id(service.DEFAULT_PROFILE)
        else:
            try:
                spec = Profile.model_validate(json.loads(profile.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError, ValidationError) as exc:
                err.print(f"[bold red]error:[/] {profile} is not a valid profile: {exc}", highlight=False)
                raise typer.Exit(code=2) from None
        f = read.PriorityFilter.parse(country, department, pillar, tier, top)
        engine = make_engine(settings)
        run = service.ensure_run(engine, spec)
        with engine.connect() as conn:
            frame = read.priorities_frame(conn, run, f)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "gpkg":
        exports.to_gpkg(frame, output, title=f"Raíces priorities ({spec.id})")
    elif fmt == "fgb":
        exports.to_fgb(frame, output)
    elif fmt == "geojson":
        output.write_bytes(exports.to_geojson(frame))
    else:
        output.write_text(exports.to_csv(frame, wkt=wkt), encoding="utf-8")
    console.print(
        f"{len(frame)} municipios written to {output} ({fmt}, profile {spec.id} {spec.hash()})",
        highlight=False,
    )


@app.command("validate")
def validate_cmd(
    file: Annotated[Path, typer.Argument(help="The reference table: .csv or .json")],
    measures: Annotated[str | None, typer.Option(help="What the values measure")] = None,
    source: Annotated[str | None, typer.Option(help="Who published them")] = None,
    period: Annotated[str | None, typer.Option(help="The period they describe")] = None,
    url: Annotated[str | None, typer.Option(help="Where they are published")] = None,
    direction: Annotated[
        int | None, typer.Option(help="1: higher should mean higher priority (default); -1: lower")
    ] = None,
    country: Annotated[str | None, typer.Option(help="ISO3 for rows without a country column")] = None,
    profile: Annotated[
        str | None, typer.Option(help="A bundled profile id (default: root-causes-2021)")
    ] = None,
    per_capita: Annotated[
        bool, typer.Option("--per-capita", help="The values are counts: per 1,000")
    ] = False,
    top_k: Annotated[int | None, typer.Option(help="k of the top-k overlap and tier-1 hit rate (20)")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap (0)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON")] = False,
) -> None:
    """Compare a profile's ranking with a reference table: matches, Spearman (95 % bootstrap interval), top-k
    overlap and tier-1 hit rate against chance, the largest disagreements. Nothing is stored."""
    import json

    from app import validation
    from app.db import make_engine

    fields = {
        "measures": measures,
        "source": source,
        "period": period,
        "url": url,
        "direction": direction,
        "country": country,
        "profile": profile,
        "per_capita": per_capita or None,
        "top_k": top_k,
        "seed": seed,
    }
    try:
        try:
            data = file.read_bytes()
        except OSError as exc:
            err.print(f"[bold red]error:[/] cannot read {file}: {exc.strerror}", highlight=False)
            raise typer.Exit(code=2) from None
        engine = make_engine(get_settings())
        try:
            result = validation.validate(engine, fields, (file.name, data))
        finally:
            engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    if as_json:
        console.print_json(json.dumps(result))
        return
    _print_validation(result)


def _dash(value: Any) -> str:
    return "—" if value is None else str(value)


def _print_validation(result: dict[str, Any]) -> None:
    """The figures of a validation as short tables: per country, municipios and departments."""
    ref, prof = result["reference"], result["profile"]
    console.print(
        f"reference: {ref['measures']} ({ref['source']}, {ref['period']}), {ref['rows']} rows by "
        f"{ref['level']}; profile {prof['id']} (hash {prof['hash']})",
        highlight=False,
    )
    console.print(
        f"matched {result['matched']}, unmatched {len(result['unmatched'])}, not ranked "
        f"{len(result['not_ranked'])}, no population {len(result['no_population'])}",
        highlight=False,
    )
    for m in result["unmatched"][:20]:
        hint = ", ".join(f"{s['name']} ({s['pcode']})" for s in m["suggestions"])
        console.print(
            f"  {m['row']}: {m['reason']}" + (f"; did you mean {hint}?" if hint else ""), highlight=False
        )
    for iso, c in result["countries"].items():
        table = Table("level", "figure", "value", "95 % / chance", title=f"{iso}: {c['matched']} matched")
        for level in ("units", "departments"):
            block = c[level]
            if block is None:
                continue
            sp = block["spearman"]
            ci = f"{sp['ci95'][0]} to {sp['ci95'][1]}" if sp["ci95"] else sp.get("note", "")
            table.add_row(level, f"Spearman (n={sp['n']})", _dash(sp["rho"]), ci)
            if level == "units":
                tk, t1 = block["top_k"], block["tier1"]
                table.add_row(
                    "",
                    f"top-{tk['k']} overlap",
                    _dash(tk["overlap"]),
                    tk.get("note") or f"chance {tk['expected_by_chance']} (p {tk['p_value']})",
                )
                table.add_row(
                    "",
                    f"tier-1 hits of top {t1['k']}",
                    f"{t1['hits']} ({t1['hit_rate']})",
                    f"chance {t1['expected_by_chance']} ({t1['chance_rate']}; p {t1['p_value']})",
                )
        console.print(table)
        units = c["units"] or c["departments"]
        if not units["disagreements"]:
            console.print("no disagreements: both put the matched units in the same order")
            continue
        worst = Table(
            "pcode",
            "name",
            "value",
            "reference rank",
            "profile rank",
            "difference",
            title="largest disagreements",
        )
        for d in units["disagreements"]:
            worst.add_row(
                d["pcode"],
                d["name"] or "",
                str(d["value"]),
                f"{d['reference_rank']:g}",
                f"{d['profile_rank']:g}",
                f"{d['rank_difference']:+g}",
            )
        console.print(worst)


@app.command("sources")
def sources() -> None:
    """List the sources of the manifest."""
    from app.sources import load_manifest

    try:
        manifest = load_manifest(get_settings().manifest)
    except RaicesError as exc:
        _fail(exc)
    table = Table("id", "kind", "title", "licence", "files")
    for s in manifest.values():
        table.add_row(s.id, s.kind, s.title, s.licence[:60], str(len(s.files)))
    console.print(table)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Default: RAICES_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default: PORT or 8000")] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="First do what `make db` does, in this process: start the local cluster, migrate, load "
            "what is missing; the default profile is scored once /health answers (what `make run` does)",
        ),
    ] = False,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    from app.logs import uvicorn_config

    settings = get_settings()
    if prepare:
        _prepare(settings)
        host_for_poll = (
            "127.0.0.1" if (host or settings.host) in ("0.0.0.0", "::") else (host or settings.host)
        )
        threading.Thread(
            target=_score_when_healthy,
            args=(settings, f"http://{host_for_poll}:{port or settings.port}/health"),
            name="raices-prepare-score",
            daemon=True,
        ).start()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # each worker writes its metrics to files here and /metrics sums them (set before any import of
        # prometheus_client in the workers, which inherit the environment)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="raices-metrics-")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_config(settings),  # RAICES_LOG_FORMAT from the first line uvicorn writes
    )


def _prepare(settings: Any) -> None:
    """`make db` in one process, each step a cheap check first: start (or reuse) the local cluster, apply the
    migrations when the database is behind, load the bundled sources never loaded (as
    `raices load all --missing`). No scoring stack and no loader is imported when there is nothing to do."""
    from app.db import current_revision, database_url, make_engine, upgrade

    _db_start(install=True)
    try:
        engine = make_engine(settings)
        with engine.connect() as conn:
            behind = current_revision(conn) not in migration_heads()
        if behind:
            console.print("Applying the migrations…")
            upgrade(database_url(settings))
        ids = _missing_sources(engine)
        if ids:
            _load_sources(engine, settings, ids)
        else:
            console.print(
                "Every bundled source is loaded; nothing to do (`raices load all --force` reloads)."
            )
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)


_REVISION = re.compile(r"^(down_)?revision\b[^=\n]*=\s*(.+)$", re.M)


def migration_heads() -> set[str]:
    """The revisions no migration builds on, read from the migration files' `revision` and `down_revision`
    lines: what Alembic's ScriptDirectory says (a test checks), without importing Alembic (0.4 s of every
    start). A database at one of them needs no upgrade; anything else goes to `upgrade`, where Alembic
    decides."""
    from app.db import MIGRATIONS

    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            ids = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (parents if down else revisions).update(ids)
    return revisions - parents


def loaded_now(engine: Any) -> set[str]:
    """The sources recorded as loaded."""
    from app.ingest.run import loaded_source_ids

    return loaded_source_ids(engine)


def _score_when_healthy(settings: Any, health_url: str) -> None:
    """Once the server answers /health: score the default profile (a stored run when the data have not
    changed) and print the top 5 of each country, as `raices score --top 5` in `make db`. A request that
    needs the run meanwhile computes it (one run: ensure_run locks), so the server need not wait for this."""
    import urllib.error
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(health_url, timeout=5) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    from app.db import make_engine
    from app.scoring import service

    try:
        # a catalogue change is loaded here, after /health answers: each load is one transaction that bumps
        # the data epoch, so the service serves the previous data until it commits, then re-scores
        engine = make_engine(settings)
        changed = [i for i in _missing_sources(engine, settings) if i in loaded_now(engine)]
        if changed:
            console.print(f"The catalogue changed for {', '.join(changed)}: loading again…")
            _load_sources(engine, settings, changed)
        engine.dispose()
        _score_and_print(
            settings, service.profile_by_id(service.DEFAULT_PROFILE), None, 5, None, status=False
        )
    except RaicesError as exc:
        err.print(f"[bold red]error:[/] scoring the default profile: {exc.message}", highlight=False)


@app.command("worker")
def worker(
    wait: Annotated[
        bool, typer.Option(help="Wait for new jobs (--no-wait: stop when the queue is empty)")
    ] = True,
) -> None:
    """Compute scenario jobs (POST /v1/scores) in this process, alongside or instead of the API's own
    workers (RAICES_INPROCESS_WORKER=false); any number may run, on any machine reaching the database."""
    from app import jobs
    from app.db import make_engine

    settings = get_settings()
    try:
        engine = make_engine(settings)
    except RaicesError as exc:
        _fail(exc)
    console.print(
        f"Worker on the queue '{jobs.QUEUE}' (concurrency {settings.worker_concurrency}); Ctrl-C stops."
    )
    jobs.run_worker(engine, settings, wait=wait)


layer_app = typer.Typer(help="Your uploaded layers (`raices load table|raster`).", no_args_is_help=True)
app.add_typer(layer_app, name="layer")


@layer_app.command("delete")
def layer_delete(
    code: Annotated[str, typer.Argument(help="The indicator code the layer was loaded under")],
) -> None:
    """Delete a user layer: its indicator, values and provenance record (bundled indicators are refused)."""
    from app.db import make_engine
    from app.ingest.userdata import delete_user_layer

    try:
        engine = make_engine(get_settings())
        gone = delete_user_layer(engine, code)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    console.print(
        f"user layer {gone.indicator} deleted: {gone.values} values, source {gone.source_id}; data epoch {gone.epoch}",
        highlight=False,
    )


baseline_app = typer.Typer(
    help="Baselines: frozen runs to compare later priorities with.", no_args_is_help=True
)
app.add_typer(baseline_app, name="baseline")


def _profile_option(profile: str | None) -> Any:
    """A bundled profile id, or a profile JSON file; exits with a message for anything else."""
    import json

    from pydantic import ValidationError

    from app.scoring import service
    from app.scoring.profile import Profile

    if profile is None or (profile in service.bundled_profiles() and not Path(profile).exists()):
        return service.profile_by_id(profile or service.DEFAULT_PROFILE)
    if not Path(profile).exists():
        return service.profile_by_id(profile)  # NotFound naming the bundled profiles
    try:
        return Profile.model_validate(json.loads(Path(profile).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        err.print(f"[bold red]error:[/] {profile} is not a valid profile: {exc}", highlight=False)
        raise typer.Exit(code=2) from None


@baseline_app.command("create")
def baseline_create(
    name: Annotated[str, typer.Argument(help="1-64 letters, digits, '.', '_' or '-'")],
    profile: Annotated[
        str | None,
        typer.Option(help="A bundled profile id or a profile JSON file (default: root-causes-2021)"),
    ] = None,
    set_id: Annotated[list[str] | None, typer.Option("--set", help="A boundary set (repeatable)")] = None,
    description: Annotated[str, typer.Option(help="What this baseline marks")] = "",
) -> None:
    """Freeze the profile's run on the current data under NAME (scoring it first when needed)."""
    from app import baselines
    from app.db import make_engine
    from app.scoring.service import Retention

    settings = get_settings()
    try:
        spec = _profile_option(profile)
        engine = make_engine(settings)
        with console.status(f"freezing {spec.id} on the current data…"):
            b = baselines.create(
                engine, name, spec, set_id or None, description, retention=Retention.from_settings(settings)
            )
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    console.print(
        f"baseline {b.name}: profile {b.profile_id} ({b.profile_hash}), data {b.data_version}, run {b.run_id}",
        highlight=False,
    )


@baseline_app.command("list")
def baseline_list() -> None:
    """The stored baselines, newest first."""
    from app import baselines
    from app.db import make_engine

    try:
        engine = make_engine(get_settings())
        with engine.connect() as conn:
            found = baselines.all_baselines(conn)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    table = Table("name", "profile", "hash", "data version", "run", "sets", "created", title="baselines")
    for b in found:
        table.add_row(
            b.name,
            b.profile_id,
            b.profile_hash,
            b.data_version,
            str(b.run_id),
            ", ".join(b.sets),
            b.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table, width=max(console.width, 150))


@baseline_app.command("delete")
def baseline_delete(name: Annotated[str, typer.Argument(help="The baseline's name")]) -> None:
    """Delete a baseline and its frozen values."""
    from app import baselines
    from app.db import make_engine

    try:
        engine = make_engine(get_settings())
        baselines.delete(engine, name)
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    console.print(f"baseline {name} deleted", highlight=False)


@baseline_app.command("diff")
def baseline_diff(
    name: Annotated[str, typer.Argument(help="The baseline's name (raices baseline list)")],
    country: Annotated[str | None, typer.Option(help="Only this country (ISO3)")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Compare with this bundled profile (default: the baseline's profile)")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Also the municipios that did not change")] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV (every municipio) instead of a table")
    ] = False,
) -> None:
    """What changed since the baseline: score, rank, tier and lead pillar then and now, and the indicators
    that moved most (changes are positive when a municipio gained priority)."""
    import csv
    import sys

    from app import baselines
    from app.db import make_engine
    from app.scoring.service import Retention

    settings = get_settings()
    try:
        engine = make_engine(settings)
        with console.status("comparing with the baseline…"):
            found = baselines.changes(
                engine,
                name,
                country=country,
                profile=profile,
                changed_only=not (every or as_csv),
                retention=Retention.from_settings(settings),
            )
        engine.dispose()
    except RaicesError as exc:
        _fail(exc)
    if as_csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=[*baselines.CHANGE_COLUMNS, "indicators_moved"], lineterminator="\n"
        )
        writer.writeheader()
        for item in found.items:
            writer.writerow(baselines.flat(item))
        return
    b = found.baseline
    console.print(
        f"baseline {b.name} ({b.profile_id}, data {b.data_version}, run {b.run_id}) → now "
        f"{found.profile.id} (data {found.data_version}, run {found.run}): {found.counts['rank_changed']} "
        f"rank changes, {found.counts['tier_changed']} tier, {found.counts['pillar_changed']} pillar",
        highlight=False,
    )
    table = Table(title=b.name)
    table.add_column("country")
    table.add_column("pcode", no_wrap=True)
    for column in ("municipio", "score", "Δ", "rank", "Δ", "tier", "pillar", "indicators moved"):
        table.add_column(column)
    for i in found.items:
        then, now, change = i["then"], i["now"], i["change"]
        table.add_row(
            i["country"],
            i["pcode"],
            i["name"],
            f"{_dash(then['score'])} → {_dash(now['score'])}",
            _dash(change["score"]),
            f"{_dash(then['rank'])} → {_dash(now['rank'])}",
            _dash(change["rank"]),
            f"{_dash(then['tier'])} → {_dash(now['tier'])}",
            f"{then['pillar'] or '—'} → {now['pillar'] or '—'}",
            ", ".join(
                f"{m['code']} {m['contribution_change']:+.2f}"
                if m["contribution_change"] is not None
                else m["code"]
                for m in i["indicators_moved"]
            ),
        )
    console.print(table, width=max(console.width, 170))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
