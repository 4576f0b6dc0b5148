"""Conservative class suggestions for a file's columns, from their names (Chinese and
English) and types, never from their values.

A suggestion never holds a value of the data: no bounds (declared bounds are shown to
providers and fix the DP sensitivity, and the file's own minimum and maximum would reveal
values), no categories.  What the data may tell is only its shape: a column's type, whether
it has empty values, and whether a text column has few distinct values (a count, not
the values).  When in doubt, the stricter class: an unknown numeric column is confidential.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from analytics.schema import ColumnClass, ColumnType
from i18n import Msg

#: Recipes and process parameters (配方, 工艺参数): nothing leaves.
SECRET_WORDS: Final = (
    "配方", "工艺参数", "工艺", "参数配比", "配比", "秘方", "设定值",
    "recipe", "recipes", "formula", "formulation", "setpoint", "setpoints",
)  # fmt: skip
#: Costs, prices, yields, outputs, pay, customers: DP only.
CONFIDENTIAL_WORDS: Final = (
    "成本", "单价", "价格", "良率", "合格率", "产量", "工资", "薪", "利润", "收入", "客户",
    "供应商",
    "cost", "costs", "price", "prices", "yield", "salary", "wage", "wages", "pay", "revenue",
    "profit", "margin", "customer", "supplier", "defects", "scrap",
)  # fmt: skip
#: Sensor readings and times, internal when numeric (aggregates and DP).
INTERNAL_WORDS: Final = (
    "温度", "压力", "转速", "振动", "电流", "电压", "节拍", "周期", "时长", "湿度",
    "temperature", "temp", "pressure", "speed", "rpm", "vibration", "current", "voltage",
    "cycle", "duration", "humidity",
)  # fmt: skip
#: Categories a plant shows freely (班次, 机型, 车间): public when they have few values.
CATEGORY_WORDS: Final = (
    "班次", "班组", "机型", "车间", "产线", "工序", "型号", "机台", "设备类型",
    "shift", "machine", "type", "line", "workshop", "model", "station", "plant", "site",
)  # fmt: skip
#: At most this many distinct values, each seen this often on average: a category.
CATEGORY_LIMIT: Final = 50
_TOKEN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


@dataclass(frozen=True)
class Suggestion:
    """A suggested class and why; the enterprise confirms or changes it."""

    column_class: ColumnClass
    reason: Msg


def _matches(name: str, words: tuple[str, ...]) -> bool:
    tokens = {t.lower() for t in _TOKEN.findall(name)}
    return any(w in tokens if w.isascii() else w in name for w in words)


def suggest(name: str, kind: ColumnType, *, few_values: bool = False) -> Suggestion:
    """The class to suggest for a column named ``name`` of type ``kind``; ``few_values``:
    a text column with at most ``CATEGORY_LIMIT`` distinct values, each repeated."""
    if _matches(name, SECRET_WORDS):
        return Suggestion(
            ColumnClass.SECRET, Msg("the name suggests a recipe or a process parameter")
        )
    if _matches(name, CONFIDENTIAL_WORDS):
        return Suggestion(
            ColumnClass.CONFIDENTIAL,
            Msg("the name suggests a cost, price, yield, output, pay or a business partner"),
        )
    if kind is ColumnType.STRING:
        if few_values and _matches(name, CATEGORY_WORDS):
            return Suggestion(
                ColumnClass.PUBLIC,
                Msg("a category with few values (shift, machine type, workshop, ...)"),
            )
        if few_values:
            return Suggestion(ColumnClass.INTERNAL, Msg("text with few values, of unknown meaning"))
        return Suggestion(ColumnClass.CONFIDENTIAL, Msg("text of unknown meaning"))
    if _matches(name, INTERNAL_WORDS):
        return Suggestion(ColumnClass.INTERNAL, Msg("the name suggests a sensor reading or a time"))
    return Suggestion(
        ColumnClass.CONFIDENTIAL,
        Msg("a value of unknown meaning: the stricter class until you decide"),
    )


#: Shown next to numeric columns' empty bounds.
BOUNDS_HELP: Final = Msg(
    "Enter the range this column can take (a sensor's range, a price list's limits). Veil does "
    "not fill it in from the file: declared bounds are shown to the providers you grant and "
    "fix how much noise differential privacy adds, and the file's own minimum and maximum "
    "would reveal values of your data."
)
