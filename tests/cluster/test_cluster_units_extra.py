"""Sizes that round to no byte at all are refused, not loaded as 0 (found by the CLI fuzz test:
such a cluster loaded, but did not load again from its own saved form)."""

import pytest

from coinfer.cluster.units import parse_memory


@pytest.mark.parametrize("value", [0.4, "0.4B", 1e-9])
def test_sizes_below_one_byte_are_refused(value):
    with pytest.raises(ValueError, match="positive and finite"):
        parse_memory(value)


def test_a_size_of_one_byte_or_more_is_kept_whole():
    assert parse_memory(0.6) == 1 and parse_memory("2KiB") == 2048
