"""``likelihood="auto"`` weighs the negative binomial against the discretized logistic by
their Laplace evidence.

Checks: the rule itself (margin, rivals), the evidence's direction on series simulated
from each kind of law (a known answer), the real series where the dispersion index points
the wrong way (the NYC airports' total), a tie that keeps the index's choice, the
subsample a long frame is weighed on, and a save/load round trip.
"""

import numpy as np
import pandas as pd
import pytest

from posheads.datasets import load_nyc_departures, load_seatbelts
from posheads.estimators import load
from posheads.estimators.forecasting import CountForecaster, dispersion_index, laplace_mixin
from posheads.estimators.forecasting.likelihood import (
    AUTO,
    EVIDENCE_MARGIN,
    UNDER_DISPERSED,
    by_evidence,
    rival_family,
)
from posheads.families import (
    DISCRETIZED_LOGISTIC,
    HURDLE_NEGATIVE_BINOMIAL,
    NEGATIVE_BINOMIAL,
    POISSON,
)

NB, DL = NEGATIVE_BINOMIAL.name, DISCRETIZED_LOGISTIC.name


def test_rivals_are_the_two_laws_auto_chooses_between():
    assert rival_family(AUTO, NEGATIVE_BINOMIAL) is DISCRETIZED_LOGISTIC
    assert rival_family(AUTO, DISCRETIZED_LOGISTIC) is NEGATIVE_BINOMIAL
    assert rival_family(AUTO, HURDLE_NEGATIVE_BINOMIAL) is None  # intermittent: no rival
    assert rival_family("negative_binomial", NEGATIVE_BINOMIAL) is None  # named by the user
    assert rival_family(POISSON, POISSON) is None


def test_the_rival_needs_more_than_the_margin():
    ev = {NB: -100.0}
    for gap, winner in [(EVIDENCE_MARGIN + 1e-9, DL), (EVIDENCE_MARGIN, NB), (4.0, NB),
                        (-50.0, NB)]:
        assert by_evidence(NEGATIVE_BINOMIAL, DISCRETIZED_LOGISTIC,
                           {**ev, DL: -100.0 + gap}).name == winner


def _local_level(rng, n, start, sd):
    return np.maximum(start * np.exp(np.cumsum(rng.normal(0.0, sd, n))), 1.0)


@pytest.mark.parametrize("kind", ["over", "under"])
def test_the_evidence_prefers_the_law_that_simulated_the_series(kind):
    # a slowly moving level; counts negative binomial with concentration 3 (far above the
    # Poisson's variance) or binomial(2 mu, 1/2) (half the Poisson's variance)
    rng = np.random.default_rng(11)
    mu = _local_level(rng, 300, 40.0, 0.01)
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu)) if kind == "over" else \
        rng.binomial(np.round(2 * mu).astype(int), 0.5)
    est = CountForecaster((), random_state=0, num_samples=50).fit(y)
    ev = est.likelihood_evidence_
    assert set(ev) == {NB, DL}
    winner, loser = (NB, DL) if kind == "over" else (DL, NB)
    assert ev[winner] > ev[loser] + EVIDENCE_MARGIN, ev
    assert est.likelihood_ == winner


def _nyc_total(days):
    parts = [load_nyc_departures("D", origin=o, as_frame=True, fill_missing=True)
             for o in ("EWR", "JFK", "LGA")]
    y = sum(b.target.to_numpy(dtype=np.float64) for b in parts)[:days]
    index = pd.DatetimeIndex(parts[0].target.index[:days], freq="D")
    X = sum(b.data[["precip", "wind_speed", "visib"]].to_numpy() for b in parts) / 3
    X = pd.DataFrame(X[:days], index=index, columns=["precip", "wind_speed", "visib"])
    X.insert(0, "holiday", np.max([b.data["holiday"].to_numpy()[:days] for b in parts], 0))
    return pd.Series(y, index=index), X


def test_the_evidence_overrules_the_index_on_the_airports_total():
    # the index reads 0.54 (just above its 0.5 threshold: negative binomial), yet the total
    # of scheduled departures is under-dispersed once the week and the weather are in the
    # model; the negative binomial's level then runs through the counts
    y, X = _nyc_total(197)
    assert dispersion_index(y.to_numpy(), 7) > UNDER_DISPERSED
    auto = CountForecaster(random_state=0, num_samples=100).fit(y, X)
    ev = auto.likelihood_evidence_
    assert auto.likelihood_ == DL and ev[DL] > ev[NB] + 50.0, ev
    named = CountForecaster(likelihood=DL, random_state=0, num_samples=100).fit(y, X)
    assert named.likelihood_evidence_ == pytest.approx({DL: ev[DL]}, rel=1e-12)
    future = pd.DataFrame(np.zeros((7, 4)), columns=X.columns,
                          index=pd.date_range(y.index[-1], periods=8, freq="D")[1:])
    np.testing.assert_array_equal(auto.sample_paths(7, 100, X_future=future),
                                  named.sample_paths(7, 100, X_future=future))


def test_a_tie_keeps_the_index_choice():
    # Seatbelts' drivers: over-dispersed by the index, the two laws' evidences within a
    # few nats of each other
    y = load_seatbelts(as_frame=True).target.iloc[:120]
    est = CountForecaster(random_state=0, num_samples=50).fit(y)
    ev = est.likelihood_evidence_
    assert abs(ev[DL] - ev[NB]) < EVIDENCE_MARGIN, ev
    assert est.likelihood_ == NB


def _frame(n_series, seed=5, n=150):
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2021-01-01", periods=n, freq="D")
    return pd.concat([pd.DataFrame({"unique_id": f"s{k}", "ds": ds,
                                    "y": rng.poisson(_local_level(rng, n, 30.0, 0.02))})
                      for k in range(n_series)], ignore_index=True)


def test_a_long_frame_is_weighed_on_a_spread_sample(monkeypatch):
    monkeypatch.setattr(laplace_mixin, "_EVIDENCE_SERIES", 2)
    df = _frame(4)
    est = CountForecaster(random_state=0, num_samples=50).fit(df)
    assert est.laplace_.level.shape[1] == 4  # the chosen law is fitted to every series
    ev = est.likelihood_evidence_
    sample = df[df.unique_id.isin(["s0", "s3"])]  # the first and the last
    for law in (NB, DL):
        alone = CountForecaster(likelihood=law, random_state=0, num_samples=50).fit(sample)
        assert alone.likelihood_evidence_[law] == pytest.approx(ev[law], rel=1e-10)


def test_named_laws_and_save_load_keep_the_evidence(tmp_path):
    y = _frame(1).y.to_numpy()
    est = CountForecaster((), likelihood="poisson", random_state=0, num_samples=50).fit(y)
    assert list(est.likelihood_evidence_) == [POISSON.name]
    assert np.isfinite(est.likelihood_evidence_[POISSON.name])
    auto = CountForecaster((), random_state=0, num_samples=50).fit(y)
    auto.save(tmp_path / "f")
    back = load(tmp_path / "f")
    assert back.likelihood_evidence_ == auto.likelihood_evidence_
    assert back.likelihood_ == auto.likelihood_
