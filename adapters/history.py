"""Read a sales history file (CSV or Parquet: `date` or `ts`, `sku`, `site`, `qty`) for
`stockshift warmup`, refusing what cannot be placed: a site the network does not know is an
error listing the ids (a history in the store system's own ids would otherwise teach
nothing, silently)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from operators.history import HistoryRow, id_within_limit
from operators.parse import Invalid, parse_object
from state.config import ConfigError, Network


def read_sales_file(path: Path, site_map: Mapping[str, str] | None = None) -> pl.DataFrame:
    """A sales file as a frame: Parquet by its suffix, else CSV (gzip too); with a site map,
    its store ids renamed to the network's site ids (ids the map lacks stay as they are, and
    are then reported as sites the network does not have)."""
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"{path}: cannot read the sales file: {first_line(exc)}") from None
    if site_map and "site" in frame.columns:
        frame = frame.with_columns(pl.col("site").cast(pl.String).replace(dict(site_map)))
    return frame


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def read_site_map(path: Path) -> dict[str, str]:
    """A CSV with columns `store` (the id in the sales file) and `site` (the network's)."""
    try:
        frame = pl.read_csv(path, schema_overrides={"store": pl.String, "site": pl.String})
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"{path}: cannot read the site map: {exc}") from None
    if not {"store", "site"} <= set(frame.columns):
        raise ConfigError(f"{path}: a site map needs the columns store and site")
    stores = frame["store"].to_list()
    if frame["store"].null_count() or frame["site"].null_count():
        raise ConfigError(f"{path}: a site map row has an empty store or site")
    repeated = sorted({s for s in stores if stores.count(s) > 1})
    if repeated:
        raise ConfigError(f"{path}: stores mapped more than once: {', '.join(repeated[:10])}")
    return dict(zip(stores, frame["site"].to_list(), strict=True))


def read_history(
    path: Path, network: Network, site_map: Mapping[str, str] | None = None
) -> list[HistoryRow]:
    frame = read_sales_file(path, site_map)
    missing = {"sku", "site", "qty"} - set(frame.columns)
    if missing or not ({"date", "ts"} & set(frame.columns)):
        raise ConfigError(f"{path}: needs columns sku, site, qty and date or ts")
    unknown = sorted(set(map(str, frame["site"].unique())) - set(network.sites))
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise ConfigError(f"{path}: {len(unknown)} sites not in the network: {shown}")
    daily = "ts" not in frame.columns
    starts = epoch_ms(frame, path)
    rows = []
    for number, (start, sku, site, qty) in enumerate(
        zip(starts, frame["sku"].to_list(), frame["site"].to_list(), frame["qty"].to_list(),
            strict=True),
        start=1,
    ):  # fmt: skip
        units = whole_units(qty)
        if start is None or units is None or sku is None or site is None:
            raise ConfigError(
                f"{path}: row {number} ({sku!s:.40}@{site!s:.40}, qty {qty!r:.40}) needs "
                "a time, a sku, a site and a whole number of units, 0 or more"
            )
        rows.append(HistoryRow(str(sku), str(site), start, units, daily))
    return rows


def whole_units(value: object) -> int | None:
    """A sales quantity as a whole number of units, 0 or more; None for anything else (a
    fraction, NaN, text, a negative number): a count that is not one is refused, not
    rounded into one."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def check_quantities(frame: pl.DataFrame, path: Path) -> None:
    """Every `qty` a whole number of units, 0 or more (`whole_units`), else an error naming
    the first row that is not (the simulator's trace replay: a `nan` or `-3` ended it in a
    ValueError from deep inside)."""
    for number, qty in enumerate(frame["qty"].to_list(), start=1):
        if whole_units(qty) is None:
            raise ConfigError(
                f"{path}: row {number}: qty {qty!r:.40} is not a whole number of units, 0 or more"
            )


def check_events(
    path: Path, topic_kind: str, events: Sequence[Mapping[str, object]], network: Network
) -> None:
    """Each event as the flow's parser will judge it: an error counting and showing the
    ones it would refuse, before anything is published (they would only reach the
    dead-letter topic, and the warm-up would teach less than it said)."""
    sites = frozenset(network.sites)
    refused = []
    for event in events:
        try:
            parse_object(topic_kind, event, sites)
        except Invalid as exc:
            refused.append(f"{event.get('sku')!s:.40}@{event.get('site')!s:.40}: {exc}")
    if refused:
        shown = "; ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
        raise ConfigError(
            f"{path}: the flow would refuse {len(refused)} of {len(events)} events: {shown}"
        )


def epoch_ms(frame: pl.DataFrame, path: Path) -> list[int | None]:
    """Each row's time in epoch ms: its `ts` (RFC 3339 or epoch ms), or the first
    millisecond of its `date` (UTC)."""
    if "ts" not in frame.columns and "date" not in frame.columns:
        raise ConfigError(f"{path}: needs a `ts` or a `date` column")
    try:
        if "ts" in frame.columns:
            when = frame["ts"]
            if when.dtype == pl.String:
                when = when.str.to_datetime(time_zone="UTC")
            else:
                when = when.cast(pl.Int64).cast(pl.Datetime("ms", "UTC"))
            return list(when.dt.epoch("ms").to_list())
        day = frame["date"].cast(pl.String).str.to_date().cast(pl.Datetime("ms", "UTC"))
        return list(day.dt.epoch("ms").to_list())
    except pl.exceptions.PolarsError as exc:
        # Polars adds lines naming its own expression; the first says what is wrong.
        raise ConfigError(f"{path}: unreadable dates or times: {first_line(exc)}") from None


def read_forecasts(
    path: Path, network: Network, issued_ms: int, site_map: Mapping[str, str] | None = None
) -> list[dict[str, object]]:
    """A forecast file (CSV or Parquet: `sku`, `site`, `mean_per_day`, optional `error_cv`,
    `forecast_version`, `ts`) as `stockshift.forecasts` events, issued at its `ts` or at
    `issued_ms`. Ids are stable per SKU-site and version, so publishing a file twice is
    ignored the second time. Rows that break the contract are errors naming the row."""
    frame = read_sales_file(path, site_map)
    missing = {"sku", "site", "mean_per_day"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: needs columns sku, site, mean_per_day")
    unknown = sorted(set(map(str, frame["site"].unique())) - set(network.sites))
    if unknown:
        raise ConfigError(f"{path}: {len(unknown)} sites not in the network: {unknown[:10]}")
    issued = epoch_ms(frame, path) if "ts" in frame.columns else [issued_ms] * len(frame)
    return [
        _forecast_event(path, row, ts, frozenset(network.sites))
        for row, ts in zip(frame.iter_rows(named=True), issued, strict=True)
    ]


def _forecast_event(
    path: Path, row: Mapping[str, object], ts_ms: int | None, sites: frozenset[str]
) -> dict[str, object]:
    """The row as a forecast message, checked by the same parser the flow uses."""
    if row.get("sku") is None or row.get("site") is None:
        raise ConfigError(f"{path}: a forecast row has no sku or no site: {dict(row)!r:.200}")
    body: dict[str, object] = {
        "event_id": id_within_limit(
            f"forecast-{row['site']}-{row['sku']}-{row.get('forecast_version') or ts_ms}"
        ),
        "ts": ts_ms,
        "sku": str(row["sku"]),
        "site": str(row["site"]),
        "type": "forecast",
        "mean_per_day": row["mean_per_day"],
    }
    for name in ("error_cv", "forecast_version"):
        if row.get(name) is not None:
            body[name] = row[name]
    try:
        parse_object("forecasts", body, sites)
    except Invalid as exc:
        raise ConfigError(f"{path}: forecast for {row['sku']}@{row['site']}: {exc}") from None
    return body
