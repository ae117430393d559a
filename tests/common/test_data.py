from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscene.common.config import DataConfig, ModelConfig
from fedscene.common.data import build_scene, load_raw_dataset, resolve_scenes
from fedscene.common.data.families import FAMILIES, product_family
from fedscene.common.data.online_retail import load_online_retail
from fedscene.common.errors import DataError
from fedscene.common.privacy_units import ShopperUnit, shopper_rows
from tests.conftest import synthetic_data

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "online_retail"


def test_embedded_default_loads_seven_category_malls():
    data = DataConfig()
    raw = load_raw_dataset(data)
    scenes = resolve_scenes(raw, data)
    assert set(scenes) == {name for name, _ in FAMILIES}
    # Non-product codes are gone: every stock code is five digits and an optional letter.
    assert raw.interactions["item"].str.fullmatch(r"\d{5}[A-Z]?").all()
    # A mall sells one family: every purchase in it is of an item whose title is that family.
    family = dict(zip(raw.items["item"], raw.items["text"].map(product_family), strict=True))
    assert (raw.interactions["item"].map(family) == raw.interactions["scene"]).all()
    # Shoppers appear in several malls.
    assert raw.interactions.groupby("user")["scene"].nunique().max() == len(FAMILIES)


def test_country_scenes_keep_every_purchase_and_families_as_categories():
    by_country = load_raw_dataset(DataConfig(scene_by="country"))
    by_mall = load_raw_dataset(DataConfig())
    assert {"United Kingdom", "Germany", "France"} <= set(by_country.interactions["scene"])
    unclaimed = by_country.items["category"] == ""
    assert 0 < unclaimed.sum() < len(by_country.items)  # some titles belong to no family
    assert len(by_mall.interactions) == (~by_country.interactions["item"].isin(
        by_country.items.loc[unclaimed, "item"])).sum()


@pytest.mark.parametrize(("title", "family"), [
    ("JUMBO BAG VINTAGE CHRISTMAS", "christmas"),  # the first family in priority order
    ("LUNCH BAG RED RETROSPOT", "bags"),
    ("WHITE HANGING HEART T-LIGHT HOLDER", "lighting"),
    ("SET OF 3 CAKE TINS PANTRY DESIGN", "kitchen"),
    ("PACK OF 72 RETROSPOT CAKE CASES", "kitchen"),
    ("ROUND SNACK BOXES SET OF4 WOODLAND", "home"),  # plural "ES"
    ("spaceboy birthday card", "stationery"),  # case does not matter
    ("PENDANT SHELL NECKLACE", None),  # whole words: PEN does not claim PENDANT
    ("PINK STRAWBERRY HANDBAG", "bags"),  # nor STRAW STRAWBERRY
    ("LIGHTHOUSE METAL SIGN", "home"),  # nor LIGHT LIGHTHOUSE
    ("PAINTED METAL PEARS ASSORTED", None),  # nor PAINT PAINTED
])
def test_product_family_rule(title, family):
    assert product_family(title) == family


@pytest.mark.skipif(not (SHARED / "online_retail_ci_sample.csv").exists(), reason="no shared/")
def test_online_retail_adapter_drops_non_purchases(tmp_path):
    frame = pd.read_csv(SHARED / "online_retail_ci_sample.csv", nrows=200, dtype=str)
    frame = frame[frame["StockCode"].str.fullmatch(r"\d{5}[A-Za-z]?")]
    extra = frame.iloc[:4].copy()
    extra["InvoiceNo"] = ["C1", "2", "3", "4"]
    extra["StockCode"] = [frame["StockCode"].iloc[0], "POST", frame["StockCode"].iloc[0], "M"]
    extra["Quantity"] = ["1", "1", "-3", "1"]
    path = tmp_path / "retail.csv"
    pd.concat([frame, extra]).to_csv(path, index=False)
    raw = load_online_retail(path)
    assert len(raw.interactions) == len(frame)


def test_temporal_split_never_trains_on_later_than_test(small_scene):
    scene = small_scene
    for user in np.unique(scene.test_user):
        latest_train = scene.train_time[scene.train_user == user].max()
        earliest_test = scene.test_time[scene.test_user == user].min()
        assert latest_train <= earliest_test


@pytest.fixture(scope="module")
def christmas():
    data = DataConfig()
    return build_scene(load_raw_dataset(data), "christmas", data, ModelConfig())


def test_no_basket_spans_train_and_test(christmas):
    """Online Retail baskets are invoices (one timestamp): a test shopper's held-out basket
    is later than all their training, and none of its timestamps appears in training."""
    assert len(christmas.test_item) > 2 * len(np.unique(christmas.test_user))  # whole baskets
    for user in np.unique(christmas.test_user):
        train_times = christmas.train_time[christmas.train_user == user]
        test_times = christmas.test_time[christmas.test_user == user]
        assert len(np.unique(test_times)) == 1  # one basket (data.test_baskets = 1)
        assert train_times.max() < test_times.min()
        assert not set(train_times.tolist()) & set(test_times.tolist())


def test_session_gap_joins_nearby_invoices_into_one_basket():
    data = DataConfig()
    raw = load_raw_dataset(data)
    invoices = build_scene(raw, "christmas", data, ModelConfig())
    sessions = build_scene(raw, "christmas", data.model_copy(
        update={"session_gap_minutes": 60 * 24 * 30}), ModelConfig())
    assert len(sessions.test_item) > len(invoices.test_item)  # a month of invoices is one


def test_held_out_shoppers_are_not_in_training():
    data = DataConfig(split="shoppers", test_shoppers=0.3)
    scene = build_scene(load_raw_dataset(data), "christmas", data, ModelConfig())
    held = set(np.unique(scene.test_user).tolist())
    assert held and not held & set(scene.train_user.tolist())
    # Their earlier baskets are the context a test example sees, and are excluded from
    # ranking, but never trained on.
    assert set(np.unique(scene.seen_user).tolist()) == held
    assert (scene.test_history[:, 0] != -1).all()


@pytest.mark.parametrize(("values", "fmt"), [
    (["1291191960", "1291191961", "1291278360", "1291278361"], "auto"),
    (["1291191960000", "1291191961000", "1291278360000", "1291278361000"], "auto"),
    (["1291191960000", "1291191961000", "1291278360000", "1291278361000"], "epoch_ms"),
    (["2010-12-01 08:26:00", "2010-12-01T08:26:01", "2010-12-02", "2010-12-02 08:26:01"],
     "iso"),
])
def test_epoch_seconds_milliseconds_and_iso_are_read(tmp_path, values, fmt):
    interactions = {k: list(v) for k, v in GOOD_INTERACTIONS.items()} | {"timestamp": values}
    data = _write_table(tmp_path, interactions, GOOD_ITEMS)
    data = data.model_copy(update={"columns": data.columns.model_copy(
        update={"time_format": fmt})})
    times = load_raw_dataset(data).interactions["time"]
    assert str(times.min())[:10] == "2010-12-01" and str(times.max())[:10] == "2010-12-02"


def test_histories_only_hold_earlier_items(small_scene):
    scene = small_scene
    # The first training example of each user has an empty history.
    firsts = np.r_[0, np.flatnonzero(np.diff(scene.train_user)) + 1]
    assert (scene.train_history[firsts] == -1).all()
    assert not (scene.train_history == scene.train_item[:, None]).any()


def test_training_histories_hold_only_earlier_baskets(christmas):
    """A training example's history is what the shopper bought before its basket: never the
    rest of the same basket (a test example never sees that either)."""
    by_user_time = {}
    for user, item, when in zip(christmas.train_user, christmas.train_item, christmas.train_time,
                                strict=True):
        by_user_time[(int(user), int(item))] = when
    checked = 0
    for row in range(0, christmas.n_train, 7):
        user, when = int(christmas.train_user[row]), christmas.train_time[row]
        for item in christmas.train_history[row]:
            if item == -1:
                continue
            assert by_user_time[(user, int(item))] < when
            checked += 1
    assert checked > 1000


def test_negatives_deterministic_and_never_positive(small_scene, small_model_config):
    data = synthetic_data()
    again = build_scene(load_raw_dataset(data), "scene0", data, small_model_config)
    np.testing.assert_array_equal(small_scene.test_negatives, again.test_negatives)
    assert small_scene.test_negatives.shape[1] == 99
    positives = set(zip(small_scene.train_user, small_scene.train_item, strict=True)) | set(
        zip(small_scene.test_user, small_scene.test_item, strict=True))
    for user, row in zip(small_scene.test_user, small_scene.test_negatives, strict=True):
        assert len(set(row)) == len(row)
        assert not any((user, item) in positives for item in row)
    # Training negatives are drawn per batch, for the sampled shoppers alone.
    unit = ShopperUnit(max_examples=4)
    batch = unit.batch(small_scene, np.arange(10), np.random.default_rng(3), True, 4)
    train_pos = set(zip(small_scene.train_user, small_scene.train_item, strict=True))
    rows = [shopper_rows(small_scene)[u] for u in range(10)]
    for slot, own in enumerate(rows):
        user = small_scene.train_user[own[0]]
        candidates = batch.inputs[5].shape[-1]  # ids hold candidates, then history
        negatives = batch.inputs[4][slot, :, 1:candidates].numpy()
        assert not any((user, int(item)) in train_pos for item in negatives.ravel())


def test_a_shoppers_batch_does_not_depend_on_other_shoppers(small_scene):
    """Removing one shopper from the scene leaves every other shopper's batch (examples,
    candidates, negatives) exactly as it was, given the same random stream."""
    unit = ShopperUnit(max_examples=4)
    groups = shopper_rows(small_scene)
    keep = np.concatenate(groups[1:])
    keep.sort()
    without = replace(small_scene, train_user=small_scene.train_user[keep],
                      train_item=small_scene.train_item[keep],
                      train_time=small_scene.train_time[keep],
                      train_history=small_scene.train_history[keep])
    full = unit.batch(small_scene, np.arange(1, 6), np.random.default_rng(7), True, 4)
    less = unit.batch(without, np.arange(0, 5), np.random.default_rng(7), True, 4)
    for got, expected in zip(less.inputs, full.inputs, strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def _write_table(tmp_path, interactions: dict, items: dict) -> DataConfig:
    pd.DataFrame(interactions).to_csv(tmp_path / "inter.csv", index=False)
    pd.DataFrame(items).to_csv(tmp_path / "items.csv", index=False)
    return DataConfig(source="table", path=str(tmp_path / "inter.csv"),
                      items_path=str(tmp_path / "items.csv"))


GOOD_INTERACTIONS = {"user_id": ["a", "a", "b", "b"], "item_id": ["x", "y", "x", "z"],
                     "timestamp": ["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-03"],
                     "scene": ["s", "s", "s", "s"]}
GOOD_ITEMS = {"item_id": ["x", "y", "z"], "title": ["red mug", "blue mug", "lamp"],
              "price": [1.0, 2.5, 10.0]}


def test_table_source_loads(tmp_path):
    data = _write_table(tmp_path, GOOD_INTERACTIONS, GOOD_ITEMS)
    raw = load_raw_dataset(data)
    assert len(raw.interactions) == 4
    assert resolve_scenes(raw, data.model_copy(update={"min_users": 2})) == ["s"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda i, t: i.pop("timestamp"), r"inter.csv: column 'timestamp' \(for time\) not found"),
    (lambda i, t: i.__setitem__("timestamp", ["2024-01-01", "soon", "2024", "2024"]),
     r"row 2, column 'timestamp': value 'soon' is not a date/time; accepted: ISO.*epoch "
     r"seconds.*epoch milliseconds"),
    (lambda i, t: t.__setitem__("price", [1.0, -2.0, 3.0]),
     r"items.csv: row 2, column 'price'.*negative"),
    (lambda i, t: t.__setitem__("price", [1.0, None, 3.0]),
     r"items.csv: row 2, column 'price'.*missing"),
    (lambda i, t: i.__setitem__("item_id", ["x", "y", "x", "w"]),
     r"row 4: item 'w' is not in the item table"),
])
def test_bad_tables_get_one_line_errors(tmp_path, change, message):
    interactions = {k: list(v) for k, v in GOOD_INTERACTIONS.items()}
    items = {k: list(v) for k, v in GOOD_ITEMS.items()}
    change(interactions, items)
    with pytest.raises(DataError, match=message) as caught:
        load_raw_dataset(_write_table(tmp_path, interactions, items))
    assert "\n" not in str(caught.value)


def test_missing_file_unknown_scene_and_single_user(tmp_path):
    with pytest.raises(DataError, match="interactions file not found"):
        load_raw_dataset(DataConfig(source="table", path=str(tmp_path / "none.csv")))
    data = _write_table(tmp_path, GOOD_INTERACTIONS, GOOD_ITEMS)
    raw = load_raw_dataset(data)
    with pytest.raises(DataError, match=r"unknown scene 'Mars'.*known scenes: s"):
        resolve_scenes(raw, data.model_copy(update={"scenes": ["Mars"]}))
    one = {k: list(v) for k, v in GOOD_INTERACTIONS.items()}
    one["user_id"] = ["a"] * 4
    one["item_id"] = ["x", "y", "z", "x"]
    raw = load_raw_dataset(_write_table(tmp_path, one, GOOD_ITEMS))
    with pytest.raises(DataError, match="scene 's' has 1 user"):
        resolve_scenes(raw, data.model_copy(update={"scenes": ["s"]}))
    with pytest.raises(DataError, match="only one user"):
        build_scene(raw, "s", data, ModelConfig())


def test_synthetic_shift_controls_shared_structure():
    same = load_raw_dataset(synthetic_data(shift=0.0)).interactions
    assert set(same["scene"]) == {"scene0", "scene1"}
    again = load_raw_dataset(synthetic_data(shift=0.0)).interactions
    pd.testing.assert_frame_equal(same, again)
