"""The scene data contract: an interactions table and an item table, validated.

Interactions: user, item, time, scene (and an optional label; rows labelled 0 are dropped,
since training is on implicit positives). Items: item, text, category, price.
Every violation raises `DataError` naming the file, column and row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedscene.common.config import InteractionColumns, ItemColumns
from fedscene.common.errors import DataError

INTERACTION_FIELDS = ("user", "item", "time", "scene")
ITEM_FIELDS = ("item", "text", "category", "price")


@dataclass(frozen=True)
class RawDataset:
    """Validated tables in canonical columns.

    interactions: user (str), item (str), time (datetime64), scene (str)
    items: item (str, unique), text (str), category (str, may be ""), price (float >= 0)
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    origin: str


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """Read CSV, CSV.gz or Parquet; missing or unreadable files get a clear error."""
    file = Path(path)
    if not str(path):
        raise DataError(f"{what}: no file given; set data.path (and data.items_path)")
    if not file.is_file():
        raise DataError(f"{file}: {what} file not found; check data.path in the config")
    name = file.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            return pd.read_parquet(file)
        if name.endswith(".csv") or name.endswith(".csv.gz"):
            return pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{file}: cannot read {what} table: {error}") from None
    raise DataError(f"{file}: unsupported format; use .csv, .csv.gz or .parquet")


def _require_columns(frame: pd.DataFrame, wanted: dict[str, str], origin: str) -> None:
    for field, column in wanted.items():
        if column and column not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise DataError(
                f"{origin}: column '{column}' (for {field}) not found; columns are: {have}. "
                f"Fix the column mapping in the config"
            )


def _first_bad_row(mask: pd.Series) -> int:
    """1-based data row number (header excluded) of the first True in mask."""
    return int(mask.to_numpy().nonzero()[0][0]) + 1


TIME_FORMATS = ("ISO dates/times (2010-12-01 08:26:00), epoch seconds (1291191960) or "
                "epoch milliseconds (1291191960000)")
EPOCH_MS_FROM = 1e11  # epoch seconds reach 1e11 only in the year 5138


def parse_times(values: pd.Series, time_format: str, origin: str, column: str) -> pd.Series:
    """Timestamps from ISO strings, epoch seconds or epoch milliseconds (`time_format`
    "iso", "epoch_s", "epoch_ms", or "auto": all digits is epoch, in milliseconds from 1e11
    on). An unparseable value raises DataError naming the row, value and accepted formats."""
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.to_datetime(values)
    else:
        text = values.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        epoch = time_format in ("epoch_s", "epoch_ms") or (
            time_format == "auto" and text.str.fullmatch(r"\d+(\.\d+)?").all())
        if epoch:
            unit = ("ms" if time_format == "epoch_ms" or (
                time_format == "auto" and numeric.median() >= EPOCH_MS_FROM) else "s")
            times = pd.to_datetime(numeric, unit=unit, errors="coerce")
        else:
            times = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if times.isna().any():
        position = _first_bad_row(times.isna()) - 1
        row = int(values.index[position]) + 1  # the file's data row (header excluded)
        raise DataError(f"{origin}: row {row}, column '{column}': value "
                        f"{values.iloc[position]!r} is not a date/time; accepted: "
                        f"{TIME_FORMATS} (set data.columns.time_format to say which)")
    return times


def validate_interactions(frame: pd.DataFrame, columns: InteractionColumns, origin: str,
                          default_scene: str = "") -> pd.DataFrame:
    """Map, type-check and clean an interactions table into canonical columns."""
    wanted = {"user": columns.user, "item": columns.item, "time": columns.time}
    if columns.label:
        wanted["label"] = columns.label
    if columns.scene and not default_scene:
        wanted["scene"] = columns.scene
    _require_columns(frame, wanted, origin)
    out = pd.DataFrame()
    for field in ("user", "item"):
        values = frame[wanted[field]]
        missing = values.isna()
        if missing.any():
            raise DataError(f"{origin}: row {_first_bad_row(missing)}, column "
                            f"'{wanted[field]}': empty {field}; every row needs one")
        out[field] = values.astype(str)
    out["time"] = parse_times(frame[wanted["time"]], columns.time_format, origin,
                              wanted["time"]).to_numpy()
    if "scene" in wanted:
        scenes = frame[wanted["scene"]]
        if scenes.isna().any():
            raise DataError(f"{origin}: row {_first_bad_row(scenes.isna())}, column "
                            f"'{wanted['scene']}': empty scene name")
        out["scene"] = scenes.astype(str)
    else:
        out["scene"] = default_scene or "default"
    if "label" in wanted:
        labels = pd.to_numeric(frame[wanted["label"]], errors="coerce")
        if labels.isna().any():
            raise DataError(f"{origin}: row {_first_bad_row(labels.isna())}, column "
                            f"'{wanted['label']}': label must be a number (0 or 1)")
        out = out[labels.to_numpy() > 0]
    if out.empty:
        raise DataError(f"{origin}: no interactions left after validation")
    return out.reset_index(drop=True)


def validate_items(frame: pd.DataFrame, columns: ItemColumns, origin: str) -> pd.DataFrame:
    """Map, type-check and clean an item table into canonical columns."""
    wanted = {"item": columns.item, "text": columns.text, "price": columns.price}
    if columns.category:
        wanted["category"] = columns.category
    _require_columns(frame, wanted, origin)
    out = pd.DataFrame({"item": frame[wanted["item"]].astype(str)})
    out["text"] = frame[wanted["text"]].fillna("").astype(str)
    out["category"] = (frame[wanted["category"]].fillna("").astype(str)
                       if "category" in wanted else "")
    prices = pd.to_numeric(frame[wanted["price"]], errors="coerce")
    bad = prices.isna() | (prices < 0) | ~pd.Series(prices).apply(pd.notna)
    if bad.any():
        row = _first_bad_row(bad)
        raise DataError(f"{origin}: row {row}, column '{wanted['price']}': price "
                        f"{frame[wanted['price']].iloc[row - 1]!r} is missing, not a number or "
                        f"negative; prices must be numbers >= 0")
    out["price"] = prices.astype(float)
    duplicated = out["item"].duplicated()
    if duplicated.any():
        row = _first_bad_row(duplicated)
        raise DataError(f"{origin}: row {row}, column '{wanted['item']}': item "
                        f"{out['item'].iloc[row - 1]!r} appears twice; item ids must be unique")
    return out.reset_index(drop=True)


def check_referential_integrity(raw: RawDataset) -> None:
    """Every interacted item must be in the item table."""
    known = set(raw.items["item"])
    unknown = ~raw.interactions["item"].isin(known)
    if unknown.any():
        row = _first_bad_row(unknown)
        item = raw.interactions["item"].iloc[row - 1]
        raise DataError(f"{raw.origin}: interaction row {row}: item {item!r} is not in the item "
                        f"table; add it there or drop the interaction")
