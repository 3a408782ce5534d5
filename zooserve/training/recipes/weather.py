"""Weather (lesson episode 3): tomorrow's value from today's weather.

Data: Seattle's daily weather offline, or the lesson's weather_prediction_dataset_light.csv
with `--data`; chronological split. Model: Normalization -> BatchNormalization -> Dense 100
relu -> Dense 50 relu -> Dense 1 (the lesson's BatchNorm variant). Fit: mse, adam, up to 200
epochs, early stopping. Baseline: persistence ("tomorrow = today") on the same test days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooserve.training.data.dataset import Dataset
from zooserve.training.data.weather import SEATTLE_WEATHER, load_seattle_weather, load_weather_csv
from zooserve.training.fitting import FitSettings, score
from zooserve.training.spec import CardText, ModelSpec, TrainOptions

if TYPE_CHECKING:
    import keras


def load_data(options: TrainOptions) -> Dataset:
    return load_weather_csv(options.data) if options.data else load_seattle_weather()


def build_model(dataset: Dataset, options: TrainOptions, notes: dict[str, object]) -> keras.Model:
    """BN -> Dense 100 -> Dense 50 -> Dense 1, behind a Normalization layer for raw inputs."""
    import keras

    from zooserve.training.normalization import normalization_layer

    notes["target"] = dataset.extras["target"]
    inputs = keras.Input(shape=(dataset.x_train.shape[1],), name="features")
    x = normalization_layer(dataset.x_train)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(100, activation="relu")(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    outputs = keras.layers.Dense(1, name="prediction")(x)
    return keras.Model(inputs, outputs, name="weather_regressor")


FIT = FitSettings(
    epochs=200, batch_size=32, loss="mse", metrics=("rmse",), early_stopping_patience=10
)


def persistence_baseline(
    dataset: Dataset, options: TrainOptions, settings: FitSettings
) -> dict[str, dict[str, float]]:
    """Tomorrow = today, scored on the same test days."""
    return {"persistence": score("regression", dataset.y_test, dataset.extras["test_persistence"])}


def describe(dataset: Dataset) -> CardText:
    target = dataset.extras["target"]
    if dataset.name == SEATTLE_WEATHER:
        description = (
            "Tomorrow's maximum temperature in Seattle from today's and yesterday's weather."
        )
        output = "tomorrow's value of the target (temp_max in C by default)"
    else:  # the lesson's CSV with --data
        description = f"The {target} from today's weather ({dataset.name})."
        output = f"the {target}"
    return CardText(
        description=description,
        inputs={"features": "raw weather features, in the order of feature_names"},
        output=("prediction", output),
    )


SPECS = [
    ModelSpec(
        name="weather",
        task="regression",
        primary_metric="rmse",
        higher_is_better=False,
        tolerance="test RMSE within 0.15 of the card, and below the persistence baseline",
        describe=describe,
        load=load_data,
        build=build_model,
        fit=FIT,
        baselines=persistence_baseline,
    )
]
