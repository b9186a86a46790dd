"""Shared test set-up: a clean Pyro parameter store and fixed seeds for every test."""

import pytest
import torch


def cuda_available() -> bool:
    return torch.cuda.is_available()


DEVICES = ["cpu"] + (["cuda"] if cuda_available() else [])


@pytest.fixture(autouse=True)
def _clean_state():
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
