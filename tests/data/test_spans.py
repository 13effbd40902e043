import pandas as pd
import pytest

from container_component_src.data.spans import describe_span, parse_span
from container_component_src.errors import OptionError


@pytest.mark.parametrize(
    "text",
    [
        "1ns",
        "250us",
        "1.25us",
        "5ms",
        "10s",
        "1.5s",
        "90 s",
        "1sec",
        "10 seconds",
        "1min",
        "5 minutes",
        "2h",
        "1.5h",
        "3 hours",
        "1h30min",
        "1D",
        "1d",
        "0.5D",
        "2 days",
        "1W",
        "1w",
        "1D 2h 3min 4s 5ms 6us 7ns",
    ],
)
def test_spans_read_as_pandas_reads_them(text: str) -> None:
    assert parse_span(text, "--x") == pd.Timedelta(text).value


def test_spans_pandas_refuses_or_rounds_are_read_exactly_or_refused_by_name() -> None:
    assert parse_span("2 weeks", "--x") == 14 * 86_400 * 10**9
    with pytest.raises(OptionError, match=r"--x: '1.5ns' is not a whole number of nanoseconds"):
        parse_span("1.5ns", "--x")
    for text in ("1m", "1M", "1Y", "1 mins", "s", "1", "1h 30", ""):
        with pytest.raises(OptionError, match="is not a time span"):
            parse_span(text, "--x")


@pytest.mark.parametrize("ns", [1, 999, 1_000, 90 * 10**9, 5_400 * 10**9, 86_400 * 10**9, 7 * 86_400 * 10**9 + 1])
def test_a_described_span_reads_back(ns: int) -> None:
    assert parse_span(describe_span(ns), "--x") == ns
