"""Adapter for the UCI Online Retail dataset (Chen, Sain & Guo 2012, CC BY 4.0).

Customers are users, stock codes are items and product descriptions are the item text.
Scenes are countries (`scene_by="country"`, the platforms) or category malls
(`scene_by="category"`): the product family each title belongs to (`families.py`), with
purchases of products no family claims left out. Each item's family is also its public
category feature, in both cases. Cancellations, rows without a customer, non-positive quantities and
non-product lines (postage, carriage, manual entries, discounts, fees...) are dropped:
real product codes are five digits with an optional letter suffix.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedscene.common.data.contract import RawDataset, parse_times, read_table
from fedscene.common.data.families import product_family
from fedscene.common.errors import DataError

COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
           "CustomerID", "Country")
PRODUCT_CODE = r"^\d{5}[A-Za-z]?$"


def load_online_retail(path: str | Path, scene_by: str = "country") -> RawDataset:
    """Read an Online Retail CSV(.gz) and return clean interactions and items, with
    countries (`scene_by="country"`) or product families (`"category"`) as scenes."""
    origin = str(path)
    frame = read_table(path, "Online Retail")
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"{origin}: not an Online Retail file, missing column(s) "
                        f"{', '.join(missing)}; expected {', '.join(COLUMNS)}")
    quantity = pd.to_numeric(frame["Quantity"], errors="coerce")
    price = pd.to_numeric(frame["UnitPrice"], errors="coerce")
    keep = (
        frame["CustomerID"].notna()
        & ~frame["InvoiceNo"].astype(str).str.startswith("C")
        & (quantity > 0)
        & frame["StockCode"].astype(str).str.match(PRODUCT_CODE)
        & price.notna() & (price >= 0)
    )
    clean = frame.loc[keep]
    if clean.empty:
        raise DataError(f"{origin}: no purchase rows left after dropping cancellations, rows "
                        f"without CustomerID and non-product codes")
    times = parse_times(clean["InvoiceDate"], "iso", origin, "InvoiceDate")
    users = pd.to_numeric(clean["CustomerID"], errors="coerce")
    interactions = pd.DataFrame({
        "user": users.astype("int64").astype(str).to_numpy(),
        "item": clean["StockCode"].astype(str).str.upper().to_numpy(),
        "time": times.to_numpy(),
        "scene": clean["Country"].astype(str).to_numpy(),
    })
    rows = pd.DataFrame({
        "item": interactions["item"],
        "text": clean["Description"].fillna("").astype(str).str.strip().to_numpy(),
        "price": price.loc[keep].to_numpy(),
    })
    items = rows.groupby("item", sort=True).agg(
        text=("text", lambda texts: texts.value_counts().index[0]),
        price=("price", "median"),
    ).reset_index()
    family = items["text"].map(product_family)
    items["category"] = family.fillna("").to_numpy()
    if scene_by == "category":
        mall = interactions["item"].map(dict(zip(items["item"], family, strict=True)))
        interactions = interactions.assign(scene=mall.to_numpy()).loc[mall.notna().to_numpy()]
        interactions = interactions.reset_index(drop=True)
        if interactions.empty:
            raise DataError(f"{origin}: no purchase of a product any family claims; use "
                            f"data.scene_by = \"country\"")
    return RawDataset(interactions=interactions,
                      items=items[["item", "text", "category", "price"]], origin=origin)
