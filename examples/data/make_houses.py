"""Write houses.csv, the small regression table used by examples/tabular_csv.yaml.

Run once (``python examples/data/make_houses.py``); it is deterministic, so running it again rewrites the
same bytes. The prices follow a simple made-up rule plus noise, so a small MLP can learn them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ROWS = 240
NEIGHBOURHOODS = {"centre": 1.35, "suburb": 1.0, "village": 0.8}


def make_rows(rows: int = ROWS, seed: int = 7) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    names = list(NEIGHBOURHOODS)
    table = []
    for _ in range(rows):
        area = float(rng.uniform(35, 220))
        bedrooms = int(np.clip(round(area / 40 + rng.normal(0, 0.7)), 1, 6))
        age = int(rng.integers(0, 90))
        distance = float(rng.uniform(0.5, 30.0))
        neighbourhood = names[int(rng.integers(0, len(names)))]
        base = 60 + 2.6 * area + 12 * bedrooms - 0.6 * age - 2.5 * distance
        price = base * NEIGHBOURHOODS[neighbourhood] + rng.normal(0, 15)
        table.append(
            {
                "area_m2": round(area, 1),
                "bedrooms": bedrooms,
                "age_years": age,
                "distance_km": round(distance, 1),
                "neighbourhood": neighbourhood,
                "price_k": round(max(price, 30.0), 1),
            }
        )
    return table


def main() -> None:
    rows = make_rows()
    path = Path(__file__).with_name("houses.csv")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
