"""The examples in the package's docstrings run and give what they show."""

import doctest

import pytest

from recsys_helpers import implicit_tools, interactions, metrics, surprise_tools, tuning


@pytest.mark.parametrize("module", [implicit_tools, interactions, metrics, tuning,
                                    surprise_tools],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
