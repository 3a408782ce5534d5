"""Weather (lesson episode 3): tomorrow's value from today's (and yesterday's) measurements.

Both loaders split chronologically and carry `extras["test_persistence"]` (today's value of
the target on the test days: the "tomorrow = today" baseline) and `extras["target"]`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zooserve.repository.layout import sha256_of_file
from zooserve.training.data.dataset import Dataset, packaged_file, require_file

SEATTLE_WEATHER = "seattle-weather"
WEATHER_ZENODO = (
    "download weather_prediction_dataset_light.csv from Zenodo record 5071376 "
    "(https://zenodo.org/records/5071376)"
)
TEST_FRACTION = 0.2


def _days_in_order(
    name: str, source: str, path: Path, feature_names: list[str], x: np.ndarray,
    y: np.ndarray, persistence: np.ndarray, target: str,
) -> Dataset:  # fmt: skip
    """Rows of consecutive days as a Dataset: the last 20% of days is the test set, so no
    future day leaks into training; `persistence` is today's value of the target."""
    cut = int(round(len(x) * (1 - TEST_FRACTION)))
    return Dataset(
        name=name,
        source=source,
        sha256=sha256_of_file(path),
        x_train=x[:cut],
        y_train=y[:cut],
        x_test=x[cut:],
        y_test=y[cut:],
        split="chronological: first 80% of days train, last 20% test",
        feature_names=feature_names,
        extras={"test_persistence": persistence[cut:], "target": target},
    )


def load_seattle_weather() -> Dataset:
    """Seattle daily weather from the `vega_datasets` wheel: predict tomorrow's temp_max.

    Features are today's and yesterday's measurements, today's sky as one-hot, and the
    season as sin/cos of the day of the year. Chronological split: the last 20% of days
    is the test set. `extras["test_persistence"]` is today's temp_max (the baseline).
    """
    import pandas as pd

    path = packaged_file("vega_datasets", "_data/seattle-weather.csv")
    frame = pd.read_csv(path, parse_dates=["date"]).sort_values("date").reset_index(drop=True)
    measured = ["precipitation", "temp_max", "temp_min", "wind"]
    skies = ["drizzle", "fog", "rain", "snow", "sun"]
    columns: dict[str, np.ndarray] = {}
    for name in measured:
        columns[name] = frame[name].to_numpy()
    for name in measured:
        columns[f"{name}_yesterday"] = frame[name].shift(1).to_numpy()
    for sky in skies:
        columns[f"weather_{sky}"] = (frame["weather"] == sky).to_numpy(dtype=float)
    angle = 2 * np.pi * frame["date"].dt.day_of_year.to_numpy() / 365.25
    columns["season_sin"] = np.sin(angle)
    columns["season_cos"] = np.cos(angle)
    features = pd.DataFrame(columns)
    target = frame["temp_max"].shift(-1)
    usable = features.notna().all(axis=1) & target.notna()
    x = features[usable].to_numpy(dtype="float32")
    y = target[usable].to_numpy(dtype="float32").reshape(-1, 1)
    persistence = frame["temp_max"][usable].to_numpy(dtype="float32").reshape(-1, 1)
    return _days_in_order(
        SEATTLE_WEATHER,
        "vega_datasets wheel, _data/seattle-weather.csv (NOAA, 2012-2015)",
        path, list(features.columns), x, y, persistence, "next day's temp_max (C)",
    )  # fmt: skip


def load_weather_csv(path: str | Path, target: str = "BASEL_sunshine") -> Dataset:
    """The lesson's weather_prediction_dataset_light.csv: predict tomorrow's BASEL_sunshine.

    As in the lesson, every column except DATE and MONTH is a feature of today; the target
    is the next day's value. Chronological 80/20 split, persistence baseline as above.
    """
    import pandas as pd

    path = require_file(Path(path), "weather_prediction_dataset_light.csv", WEATHER_ZENODO)
    frame = pd.read_csv(path)
    if target not in frame.columns:
        raise ValueError(f"{path} has no column {target!r}: is it the lesson's weather CSV?")
    features = frame.drop(columns=[c for c in ("DATE", "MONTH") if c in frame.columns])
    x = features.to_numpy(dtype="float32")[:-1]
    y = frame[target].to_numpy(dtype="float32")[1:].reshape(-1, 1)
    persistence = frame[target].to_numpy(dtype="float32")[:-1].reshape(-1, 1)
    return _days_in_order(
        "weather_prediction_dataset_light", f"{path} (Zenodo record 5071376)",
        path, list(features.columns), x, y, persistence, f"next day's {target}",
    )  # fmt: skip
