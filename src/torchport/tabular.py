"""Raw table rows to the float matrix a tabular model takes: the one encoder that training and inference share.

Training learns one ``ColumnEncoding`` per feature column (numeric, or categorical with its sorted categories),
writes them into the checkpoint and the bundle's manifest, and encodes its own rows with :func:`encode_rows`;
``Bundle.predict`` and the server encode a caller's raw rows with the same function, so an answer never depends on
who did the encoding. A numeric column is one float32 feature; a categorical one is a one-hot block in the order
of its categories, named ``"column=value"``.

Categories are kept as text, since text is what every language and the v2 protocol's BYTES tensors can send:
a value matches a category when its text does (``str(value)``, or UTF-8 for bytes). The order of the categories
is the values' own order (2 before 10), the text order only when they cannot be compared.

Only NumPy and (lazily) pandas are used here: this module sits low, where the data readers, the bundle writer,
``Bundle.predict`` and the server can all reach it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from torchport.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["numeric", "categorical"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical")
# An error lists at most this many known categories or columns: it must stay one readable line.
MAX_LISTED = 20


class DescribedColumn(Protocol):
    """Anything that describes one column's encoding: a ``ColumnEncoding``, or the manifest's entry for it."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def categories(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class ColumnEncoding:
    """How one raw column becomes features: ``numeric`` is one float32, ``categorical`` one-hot over ``categories``."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()  # categorical only, in one-hot order; () for numeric

    def feature_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name]
        return [f"{self.name}={category}" for category in self.categories]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: a checkpoint is read with ``torch.load(weights_only=True)``."""
        return {"name": self.name, "kind": self.kind, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ColumnEncoding:
        """Read what :meth:`to_dict` wrote; ``where`` names the entry in the one-line refusal."""
        if not isinstance(raw, Mapping) or set(raw) != {"name", "kind", "categories"}:
            raise DataError(f"{where}: expected {{name, kind, categories}}, got {_short(raw)}")
        name, kind, categories = raw["name"], raw["kind"], raw["categories"]
        if not isinstance(name, str) or kind not in KINDS:
            raise DataError(f"{where}: name must be text and kind one of {', '.join(KINDS)}, got {_short(raw)}")
        if not isinstance(categories, list | tuple) or not all(isinstance(c, str) for c in categories):
            raise DataError(f"{where}: categories must be a list of text, got {_short(categories)}")
        return cls(name=name, kind=kind, categories=tuple(categories))


def feature_names(encodings: Sequence[ColumnEncoding]) -> list[str]:
    """The encoded matrix's column names, in order: ``"area"``, ``"color=blue"``, ``"color=red"``, ..."""
    return [feature for encoding in encodings for feature in encoding.feature_names()]


def numeric_encodings(names: Sequence[str]) -> tuple[ColumnEncoding, ...]:
    """Columns that are all numbers already (the bundled scikit-learn tables)."""
    return tuple(ColumnEncoding(str(name), "numeric") for name in names)


def learn_encodings(
    frame: pd.DataFrame, features: Sequence[str], categorical: Collection[str]
) -> tuple[ColumnEncoding, ...]:
    """What training learns of ``frame``: each of ``features`` in order, one-hot over its sorted values when it is
    in ``categorical``, a number otherwise. The caller has chosen the columns and refused missing values."""
    encodings = []
    for name in features:
        if name in categorical:
            encodings.append(ColumnEncoding(name, "categorical", _categories(name, frame[name])))
        else:
            encodings.append(ColumnEncoding(name, "numeric"))
    return tuple(encodings)


def _categories(name: str, column: Any) -> tuple[str, ...]:
    """The distinct values as text, sorted by their own order (text order when they cannot be compared)."""
    values = _values(column).astype(object)
    try:
        distinct = np.unique(values)
    except TypeError:  # a column mixing numbers and text
        distinct = np.unique(values.astype(str))
    categories = _texts(name, distinct)
    # Each value must match exactly one category by its text: 1 and 1.0 are one value to np.unique but two texts.
    shared = [text for text, count in Counter(categories).items() if count > 1]
    ambiguous = shared + sorted(set(_texts(name, values)) - set(categories))
    if ambiguous:
        raise DataError(
            f"column '{name}': its values mix types that do not match one category each as text "
            f"(e.g. {ambiguous[0]!r}); give the column values of one type"
        )
    return tuple(categories)


def encode_rows(columns: Mapping[str, Any] | pd.DataFrame, encodings: Sequence[DescribedColumn]) -> np.ndarray:
    """Raw rows as the model's float32 features, (N, F) in the order of ``encodings``.

    ``columns``: a pandas DataFrame, or a mapping of column name to its values (a list, an (N,) or (N, 1) array,
    or one value for one row). Columns the model was not trained on are ignored, so a whole CSV row (target
    included) can be given. A missing column, an unseen category, a value that is not a finite number in a
    numeric column, or columns of unequal length: a one-line DataError naming the column.
    """
    if not encodings:
        raise DataError("encode_rows: no column encodings given; this model does not take table rows")
    missing = [column.name for column in encodings if column.name not in columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"column '{missing[0]}' is missing{more}; the model was trained on: "
            f"{_listing([column.name for column in encodings])}"
        )
    values = {column.name: _one_per_row(column.name, columns[column.name]) for column in encodings}
    _check_lengths(values)
    blocks = [_encode_column(column, values[column.name]) for column in encodings]
    return np.concatenate(blocks, axis=1)


def _values(column: Any) -> np.ndarray:
    """A pandas Series or any array-like as a NumPy array (a Series' own dtype kept, no copy when possible)."""
    return column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)


def _one_per_row(name: str, column: Any) -> np.ndarray:
    """``column`` as a 1-D array: a scalar is one row, (N, 1) is N rows."""
    array = _values(column)
    if array.ndim == 0:
        return array.reshape(1)
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim != 1:
        raise DataError(
            f"column '{name}': expected one value per row, shape (N,) or (N, 1); got shape {tuple(array.shape)}"
        )
    return array


def _check_lengths(values: Mapping[str, np.ndarray]) -> None:
    lengths = {name: len(array) for name, array in values.items()}
    if len(set(lengths.values())) > 1:
        ordered = sorted(lengths.items(), key=lambda item: item[1])
        (fewest, low), (most, high) = ordered[0], ordered[-1]
        raise DataError(
            f"columns have unequal numbers of rows: '{fewest}' has {low}, '{most}' has {high}; "
            "give every column one value per row"
        )


def _encode_column(column: DescribedColumn, values: np.ndarray) -> np.ndarray:
    if column.kind == "numeric":
        return _numbers(column.name, values)[:, None]
    if column.kind != "categorical":
        raise DataError(f"column '{column.name}': unknown encoding kind '{column.kind}'")
    index = {category: position for position, category in enumerate(column.categories)}
    codes = np.empty(len(values), dtype=np.int64)
    for row, text in enumerate(_texts(column.name, values)):
        code = index.get(text)
        if code is None:
            raise DataError(
                f"column '{column.name}': value {text!r} was not seen in training; known: "
                f"{_listing(list(column.categories))}"
            )
        codes[row] = code
    return np.eye(len(column.categories), dtype=np.float32)[codes]  # (N, K), one 1.0 per row


def _numbers(name: str, values: np.ndarray) -> np.ndarray:
    """float32 values of a numeric column: converted straight from the column's own dtype, as training always did
    (int64 -> float32 directly, never through float64, so the bits match)."""
    if values.dtype.kind not in "biuf":  # text, objects (a pandas column of mixed or missing values), dates, ...
        row = next((i for i, value in enumerate(values) if not _is_number(value)), None)
        if row is not None:
            raise DataError(f"column '{name}': value {_short(values[row])} in row {row} is not a number")
    numbers = values.astype(np.float32)
    finite = np.isfinite(numbers)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DataError(f"column '{name}': value {values[row]} in row {row} is not a finite number")
    return numbers


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating | np.bool_)  # bool is an int


def _texts(name: str, values: np.ndarray) -> list[str]:
    """Each value as the text a category is matched by: UTF-8 for bytes, ``str`` otherwise. Numeric arrays go
    through ``astype(object)`` (Python numbers) so that a value's text is the same whichever dtype it came in."""
    texts = []
    for row, value in enumerate(np.asarray(values).astype(object)):
        if isinstance(value, bytes):
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"column '{name}': value in row {row} is not UTF-8 text") from None
        else:
            texts.append(str(value))
    return texts


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def _short(value: Any) -> str:
    """A value as a user would write it (``'x'``, not ``np.str_('x')``), cut to fit in one line."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."
