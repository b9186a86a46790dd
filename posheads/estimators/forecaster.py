"""The import path of the forecasters before :mod:`posheads.estimators.forecasting`."""

from .forecasting import CountForecaster, SeasonalNaiveForecaster, dispersion_index

__all__ = ["CountForecaster", "SeasonalNaiveForecaster", "dispersion_index"]
