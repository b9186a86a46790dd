"""Count forecasting: the forecasters, their backtests and their persistence, in one place.

- :class:`CountForecaster` (:mod:`.forecaster`): the Bayesian count forecaster over
  :class:`posheads.models.forecast.CountForecastModel`, its count law a family of
  :mod:`posheads.families` chosen by :mod:`.likelihood` (with :func:`dispersion_index`
  behind ``likelihood="auto"``);
- :class:`SeasonalNaiveForecaster` and the behaviour every forecaster shares --
  ``sample_paths``, ``predict_interval``, ``plot``, ``backtest`` (:mod:`.baseline`);
- series and covariate checks, Fourier features and backtest scores (:mod:`.series`);
- posterior summaries (:mod:`.report`), saving and loading (:mod:`.state`), and the NUTS
  forecaster with the isolation every fit and forecast runs in (:mod:`.engine`).
"""

from .baseline import SeasonalNaiveForecaster
from .forecaster import CountForecaster
from .likelihood import dispersion_index

__all__ = ["CountForecaster", "SeasonalNaiveForecaster", "dispersion_index"]
