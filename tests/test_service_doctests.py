"""The daemon's docstring examples, run on the installed package (``streamrnn_service``).

pytest's own doctest collection would import ``service/*.py`` by their folder's name, ``service``, and
the suite would hold two copies of every daemon module; so ``service`` is not in ``testpaths``, and
the examples run here, on the modules every other test imports."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamrnn_service

MODULES = sorted(m.name for m in pkgutil.iter_modules(streamrnn_service.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"streamrnn_service.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_examples_are_found():
    counts = {name: doctest.testmod(importlib.import_module(f"streamrnn_service.{name}")).attempted
              for name in ("config", "names", "protocol", "sources")}
    assert all(counts.values()), counts
