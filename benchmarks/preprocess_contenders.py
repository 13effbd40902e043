"""What a user who knows the field would write instead of our preprocessing: Polars and DuckDB,
each the same step (partitions -> a regular grid of per-period means, gaps of up to
`max_gap_periods` interpolated, channels missing on more than `max_missing_share` of the observed
grid dropped, incomplete rows dropped), written the way each tool's documentation teaches.

Run as a fresh process, as a user would, so that each contender pays its own imports:

    python -m benchmarks.preprocess_contenders polars OUT.parquet FILE...

(`scan` instead of `polars`: the plain pyarrow scan the benchmark measures everything against.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

TIMESTAMP = "normalizedTime"
PERIOD_S = 60
MAX_GAP = 5
MAX_MISSING_SHARE = 0.5


def polars_grid(files: list[str], out: str) -> int:
    """Idiomatic Polars: a lazy scan, `group_by_dynamic`, `upsample`, `interpolate` masked to short gaps."""
    import polars as pl

    scan = pl.scan_parquet(files).with_columns(pl.col(TIMESTAMP).set_sorted())
    schema = scan.collect_schema()
    channels = [name for name, kind in schema.items() if name != TIMESTAMP and kind.is_numeric()]
    grid = (
        scan.group_by_dynamic(TIMESTAMP, every=f"{PERIOD_S}s")
        # NaN is a missing sample in the archives; Polars' mean would propagate it.
        .agg(pl.col(channels).fill_nan(None).mean())
        .collect()
        .upsample(TIMESTAMP, every=f"{PERIOD_S}s")
    )
    observed = grid.select(pl.any_horizontal(pl.col(channels).is_not_null()).sum()).item()
    missing = grid.select(pl.col(channels).null_count()).row(0)
    kept = [
        c for c, n in zip(channels, missing, strict=True) if 1 - (len(grid) - n) / max(observed, 1) <= MAX_MISSING_SHARE
    ]

    def filled(name: str) -> pl.Expr:
        column = pl.col(name)
        gap = pl.len().over(column.is_null().rle_id())
        return pl.when(column.is_null() & (gap > MAX_GAP)).then(None).otherwise(column.interpolate()).alias(name)

    result = grid.select(TIMESTAMP, *(filled(c) for c in kept)).drop_nulls()
    result.write_parquet(out)
    return len(result)


def duckdb_grid(files: list[str], out: str) -> int:
    """Idiomatic DuckDB SQL: `time_bucket` means over the full grid (`generate_series`), gaps
    interpolated between the last and the next value (running `max`/`arg_max` windows; `IGNORE
    NULLS` windows scan back through every missing row, quadratic over a long outage)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [files]).fetchall()
    numeric = ("FLOAT", "DOUBLE", "INTEGER", "BIGINT", "SMALLINT", "TINYINT")
    channels = [row[0] for row in described if row[0] != TIMESTAMP and row[1] in numeric]
    q = '"{}"'.format
    means = ", ".join(f"avg(CASE WHEN isnan({q(c)}) THEN NULL ELSE {q(c)} END)::FLOAT AS {q(c)}" for c in channels)
    con.execute(
        f"""CREATE TEMP TABLE means AS SELECT time_bucket(INTERVAL '{PERIOD_S} seconds', {q(TIMESTAMP)}) AS t, {means}
        FROM read_parquet(?) GROUP BY 1""",
        [files],
    )
    con.execute(
        f"""CREATE TEMP TABLE grid AS SELECT g.t, means.* EXCLUDE (t) FROM
        (SELECT unnest(generate_series(min(t), max(t), INTERVAL '{PERIOD_S} seconds')) AS t FROM means) g
        LEFT JOIN means USING (t)"""
    )
    present = " OR ".join(f"{q(c)} IS NOT NULL" for c in channels)
    observed = con.execute(f"SELECT count(*) FROM grid WHERE {present}").fetchone()[0]
    counts = con.execute(f"SELECT {', '.join(f'count({q(c)})' for c in channels)} FROM grid").fetchone()
    kept = [c for c, n in zip(channels, counts, strict=True) if 1 - n / max(observed, 1) <= MAX_MISSING_SHARE]

    def filled(c: str) -> str:
        seen = f"CASE WHEN {q(c)} IS NOT NULL THEN t END"
        before, after = f"max({seen}) OVER w", f"min({seen}) OVER v"
        left, right = f"arg_max({q(c)}, {seen}) OVER w", f"arg_min({q(c)}, {seen}) OVER v"
        span = f"(epoch({after}) - epoch({before}))"
        return (
            f"CASE WHEN {q(c)} IS NOT NULL THEN {q(c)} WHEN {span} <= {(MAX_GAP + 1) * PERIOD_S} THEN "
            f"({left} + ({right} - {left}) * ((epoch(t) - epoch({before})) / {span}))::FLOAT END AS {q(c)}"
        )

    con.execute(
        f"""COPY (SELECT * FROM (SELECT t AS {q(TIMESTAMP)}, {", ".join(filled(c) for c in kept)} FROM grid
        WINDOW w AS (ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
               v AS (ORDER BY t ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING))
        WHERE {" AND ".join(f"{q(c)} IS NOT NULL" for c in kept)} ORDER BY 1) TO '{out}' (FORMAT parquet)"""
    )
    return con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]


def scan(files: list[str], out: str) -> int:
    """The baseline: read and decode every column of every row, multi-threaded; nothing written."""
    import pyarrow.dataset as pads

    return sum(batch.num_rows for batch in pads.dataset(files, format="parquet").to_batches())


CONTENDERS: dict[str, Callable[[list[str], str], int]] = {"scan": scan, "polars": polars_grid, "duckdb": duckdb_grid}

if __name__ == "__main__":
    name, out, *inputs = sys.argv[1:]
    print(CONTENDERS[name](inputs, out))
