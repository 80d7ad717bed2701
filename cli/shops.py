"""fieldgate shops add / list / show / set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from cli.common import (
    Column,
    ConfigOpt,
    DataDirOpt,
    InitOpt,
    JsonOpt,
    VerboseOpt,
    WideOpt,
    console,
    read_store,
    settings,
    show_rows,
    validated,
    write_store,
)
from gateway.core.models import Assignment, Locale, Shop
from gateway.errors import StoreError
from gateway.store.tables import Tables

app = typer.Typer(help="Shops: where they are and how their orders find a courier.", no_args_is_help=True)

ShopArg = Annotated[str, typer.Argument(help="the shop's id, as in orders' shop_id and shops/{shop_id}/… topics")]
NameOpt = Annotated[str | None, typer.Option(help="the shop's name, as people read it")]
LatOpt = Annotated[float | None, typer.Option(help="latitude of the shop, degrees")]
LonOpt = Annotated[float | None, typer.Option(help="longitude of the shop, degrees")]
AssignmentOpt = Annotated[Assignment | None, typer.Option(
    help="fixed: the order's courier_id, else the default courier, else the shop assigns; "
    "nearest_idle: the gateway picks the least busy, then nearest, of the shop's online couriers")]
DefaultOpt = Annotated[str | None, typer.Option("--default-courier", help="fixed: who gets orders that name nobody "
                                                "('' clears it)")]
TzOpt = Annotated[str | None, typer.Option("--timezone", help="IANA time zone, e.g. Asia/Shanghai")]
LocaleOpt = Annotated[Locale | None, typer.Option(help="language of texts for this shop's customers")]
RadiusOpt = Annotated[float | None, typer.Option("--arrival-radius-m", help="the 'arriving' geofence, metres "
                                                 "[default: arrival_radius_m in broker.yaml]")]
QuietOpt = Annotated[str | None, typer.Option("--quiet-hours", help="HH:MM-HH:MM in the shop's time zone: non-urgent "
                                              "customer notices wait until its end ('' clears it)")]
ProofOpt = Annotated[bool | None, typer.Option("--require-proof/--no-require-proof",
                                               help="delivered needs a proof-of-delivery photo")]


def _row(shop: Shop) -> dict[str, object]:
    return shop.model_dump()


COLUMNS = [
    Column("shop", lambda r: str(r["shop_id"])),
    Column("name", lambda r: str(r["name"])),
    Column("assignment", lambda r: str(r["assignment"])),
    Column("default", lambda r: str(r["default_courier"] or "-")),
    Column("lat,lon", lambda r: f"{r['lat']:.5f},{r['lon']:.5f}", wide_only=True),
    Column("time zone", lambda r: str(r["timezone"]), wide_only=True),
    Column("locale", lambda r: str(r["locale"])),
    Column("radius", lambda r: f"{r['arrival_radius_m']:g} m" if r["arrival_radius_m"] else "-", wide_only=True),
    Column("quiet", lambda r: str(r["quiet_hours"] or "-"), wide_only=True),
    Column("proof", lambda r: "yes" if r["require_proof"] else "no", wide_only=True),
]


@app.command("add")
def add_cmd(shop_id: ShopArg, name: Annotated[str, typer.Option(help="the shop's name, as people read it")],
            lat: Annotated[float, typer.Option(help="latitude of the shop, degrees")],
            lon: Annotated[float, typer.Option(help="longitude of the shop, degrees")],
            assignment: AssignmentOpt = None, default_courier: DefaultOpt = None, timezone: TzOpt = None,
            locale: LocaleOpt = None, arrival_radius_m: RadiusOpt = None, quiet_hours: QuietOpt = None,
            require_proof: ProofOpt = None, init: InitOpt = False, config: ConfigOpt = None,
            data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Register a shop. Its orders follow its assignment rule from the next order on; no restart needed.

    Example:

        fieldgate shops add rose --name "Rose & Lily" --lat 31.2304 --lon 121.4737 --quiet-hours 22:00-08:00
    """
    store = write_store(settings(config, data_dir, verbose), init=init)
    if store.get_shop(shop_id) is not None:
        raise StoreError(f"shop {shop_id!r} is registered already", hint="Change it with `fieldgate shops set`.")
    given = {"assignment": assignment, "default_courier": default_courier or None, "timezone": timezone,
             "locale": locale, "arrival_radius_m": arrival_radius_m, "quiet_hours": quiet_hours or None,
             "require_proof": require_proof}
    shop = validated(Shop, shop_id=shop_id, name=name, lat=lat, lon=lon,
                     **{k: v for k, v in given.items() if v is not None})
    with store.transaction():
        store.put_shop(shop, datetime.now(UTC))
    console.print(f"registered shop {shop.shop_id} ({shop.name}), {shop.assignment} assignment")


@app.command("set")
def set_cmd(shop_id: ShopArg, name: NameOpt = None, lat: LatOpt = None, lon: LonOpt = None,
            assignment: AssignmentOpt = None, default_courier: DefaultOpt = None, timezone: TzOpt = None,
            locale: LocaleOpt = None, arrival_radius_m: RadiusOpt = None, quiet_hours: QuietOpt = None,
            require_proof: ProofOpt = None, config: ConfigOpt = None, data_dir: DataDirOpt = None,
            verbose: VerboseOpt = False) -> None:
    """Change a registered shop; what is not given stays. Applies at once, without a restart.

    Example:

        fieldgate shops set rose --assignment fixed --default-courier c7
    """
    store = write_store(settings(config, data_dir, verbose))
    shop = _shop(store, shop_id)
    changes = {"name": name, "lat": lat, "lon": lon, "assignment": assignment, "timezone": timezone,
               "locale": locale, "arrival_radius_m": arrival_radius_m, "require_proof": require_proof}
    cleared = {key: value or None for key, value in (("default_courier", default_courier),
                                                     ("quiet_hours", quiet_hours)) if value is not None}
    updated = validated(Shop, **{**shop.model_dump(), **{k: v for k, v in changes.items() if v is not None},
                                 **cleared})
    with store.transaction():
        store.put_shop(updated, datetime.now(UTC))
    console.print(f"updated shop {shop_id}")


@app.command("list")
def list_cmd(as_json: JsonOpt = False, wide: WideOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List registered shops.

    Example:

        fieldgate shops list --wide
    """
    rows = [_row(s) for s in read_store(settings(config, data_dir, verbose)).shops()]
    show_rows(rows, COLUMNS, title="shops", empty="no shops registered: add one with `fieldgate shops add`",
              as_json=as_json, wide=wide)


@app.command("show")
def show_cmd(shop_id: ShopArg, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """Show one shop: its registration and its couriers (online, load).

    Example:

        fieldgate shops show rose
    """
    s = settings(config, data_dir, verbose)
    store = read_store(s)
    shop = _shop(store, shop_id)
    for key, value in shop.model_dump().items():
        console.print(f"{key:<17} {value if value is not None else '-'}")
    candidates = store.candidates(shop_id, s.assignment.default_max_active)
    show_rows([c.__dict__ for c in candidates], [
        Column("courier", lambda r: r["courier_id"]),
        Column("online", lambda r: "[green]yes[/]" if r["online"] else "no"),
        Column("active", lambda r: f"{r['active']}/{r['max_active']}", justify="right"),
    ], title="couriers", empty="no couriers ride for this shop: `fieldgate couriers add ID --shop " + shop_id + "`")


def _shop(store: Tables, shop_id: str) -> Shop:
    found = store.get_shop(shop_id)
    if found is None:
        raise StoreError(f"no shop {shop_id!r} is registered", hint="List them with `fieldgate shops list`.")
    return found
