"""Product families read from catalogue titles: the category malls of Online Retail.

A category mall is a scene that sells one family of products (bags, Christmas, kitchen...).
The rule is deterministic and reads only the public catalogue: a title belongs to the
first family in `FAMILIES` with a keyword that is a whole word (or words) of the title,
upper-cased, alone or with a plural "S"/"ES": "JUMBO BAG VINTAGE CHRISTMAS" is Christmas,
"LUNCH BAGS RED RETROSPOT" is bags, and "STRAWBERRY" is not "STRAW". A title no family
claims belongs to no mall.
"""

from __future__ import annotations

import re

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE",
                   "NATIVITY", "BAUBLE")),
    ("bags", ("BAG", "HANDBAG", "PURSE", "TOTE", "SHOPPER", "LUNCH BOX")),
    ("lighting", ("LIGHT", "LANTERN", "CANDLE", "T-LIGHT", "TEALIGHT", "LAMP")),
    ("kitchen", ("MUG", "CUP", "TEA", "TEAPOT", "PLATE", "BOWL", "SPOON", "CAKE", "BAKING",
                 "JAM", "JUG", "TIN", "LUNCH", "KITCHEN", "APRON", "NAPKIN", "CUTLERY",
                 "BOTTLE", "TRAY", "COASTER", "EGG", "CHOPPING", "PANTRY", "JAR", "RECIPE",
                 "OVEN", "BEAKER", "FOOD", "STRAW")),
    ("stationery", ("CARD", "PAPER", "WRAP", "NOTEBOOK", "PENCIL", "PEN",
                    "STICKER", "BOOK", "ENVELOPE", "TAPE", "GIFT TAG", "CALENDAR", "RIBBON",
                    "CHALK", "NOTE")),
    ("toys", ("TOY", "GAME", "DOLL", "PLAYING", "JIGSAW", "SPACEBOY", "PARTY", "BALLOON",
              "KIT", "CHILDREN", "CHILDS", "PAINT", "SKIPPING", "BUNTING")),
    ("home", ("FRAME", "CLOCK", "SIGN", "CUSHION", "DOORMAT", "HOOK", "HANGER", "HANGING",
              "HEART", "DECORATION", "WALL", "DOORSTOP", "MIRROR", "VASE", "DRAWER", "BOX",
              "BASKET", "STORAGE", "FLOWER", "GARDEN", "PLANT", "PLANTER", "BIRD", "ORNAMENT",
              "WICKER", "WOODEN", "ZINC")),
)
"""Families in priority order, each with the keywords that claim a title for it."""

_PATTERNS = tuple(
    (name, re.compile(r"\b(?:" + "|".join(re.escape(k) for k in keys) + r")(?:S|ES)?\b"))
    for name, keys in FAMILIES)


def product_family(title: str) -> str | None:
    """The family of a product title, or None when no family's keyword is a word of it."""
    text = title.upper()
    for name, pattern in _PATTERNS:
        if pattern.search(text):
            return name
    return None
