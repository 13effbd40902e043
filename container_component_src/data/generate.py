"""Synthetic ECLSS-like telemetry and anomaly reports, in the formats of the real archives.

Every clean channel is a pure function of absolute time (daily and ~92 min orbital cycles,
crew activity, fan modes, O2 repressurisation), so the generator streams one row group at a time
and never holds a whole year. Noise, irregular sampling, gaps and anomalies are drawn from
seeded generators, so the same options always give the same files.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from container_component_src import storage
from container_component_src.errors import OptionError

DAY_S = 86_400.0
ORBIT_S = 92.0 * 60.0
ANOMALY_KINDS = (
    "spike",
    "level_shift",
    "drift",
    "stuck",
    "noise_burst",
    "correlation_break",
)
REPORT_COLUMNS = ("ID", "SYMBOL", "TITLE", "EVENT GMT (DOY/HH:MM:SS)", "Duration/End GMT")


@dataclass(frozen=True)
class ChannelSpec:
    """One telemetry channel: its level, cycle amplitudes, noise and typical variation."""

    name: str
    title: str
    base: float
    daily: float
    orbital: float
    noise: float
    scale: float


BASE_CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("cabin_air_temp_degC", "cabin air temperature", 22.5, 0.6, 0.15, 0.03, 0.5),
    ChannelSpec("cabin_humidity_pct", "cabin relative humidity", 44.0, -3.0, 0.4, 0.3, 2.5),
    ChannelSpec("ppco2_mmHg", "CO2 partial pressure", 2.6, 0.6, 0.05, 0.04, 0.45),
    ChannelSpec("ppo2_kPa", "O2 partial pressure", 21.3, -0.1, 0.0, 0.02, 0.15),
    ChannelSpec("cabin_pressure_kPa", "cabin total pressure", 101.2, -0.1, 0.0, 0.03, 0.2),
    ChannelSpec("cabin_fan_speed_rpm", "cabin fan speed", 3150.0, 0.0, 0.0, 8.0, 250.0),
    ChannelSpec("avionics_fan_speed_rpm", "avionics fan speed", 5100.0, 0.0, 0.0, 12.0, 150.0),
    ChannelSpec("lt_loop_supply_temp_degC", "LT coolant supply temperature", 9.6, 0.1, 0.4, 0.04, 0.35),
    ChannelSpec("lt_loop_return_temp_degC", "LT coolant return temperature", 13.0, 0.5, 0.5, 0.05, 0.6),
    ChannelSpec("mt_loop_supply_temp_degC", "MT coolant supply temperature", 16.8, 0.1, 0.3, 0.05, 0.3),
    ChannelSpec("lt_loop_flow_kgph", "LT coolant flow", 620.0, 0.0, 4.0, 2.5, 30.0),
    ChannelSpec("mt_loop_flow_kgph", "MT coolant flow", 900.0, 0.0, 6.0, 3.0, 35.0),
    ChannelSpec("chx_outlet_temp_degC", "condensing heat exchanger outlet temperature", 8.5, 0.3, 0.3, 0.04, 0.35),
    ChannelSpec("tcv_position_pct", "temperature control valve position", 45.0, 0.0, 0.0, 0.4, 8.0),
    ChannelSpec("bypass_valve_position_pct", "coolant bypass valve position", 30.0, 0.0, 0.0, 0.3, 5.0),
    ChannelSpec("water_separator_speed_rpm", "water separator speed", 1800.0, 40.0, 0.0, 5.0, 50.0),
)

# Channels whose value is driven by another one; breaking that link is an anomaly of its own.
COUPLED = ("tcv_position_pct", "lt_loop_return_temp_degC", "cabin_pressure_kPa", "cabin_humidity_pct")


@dataclass(frozen=True)
class GeneratorOptions:
    """What to generate.

    Attributes:
        years: One archive file per year.
        days_per_year: Days of telemetry in each year, from 1 January.
        sampling_period_s: Nominal sampling period; actual samples jitter and drop out.
        n_channels: Number of float channels (the base set repeats with offsets past 16).
        seed: Seed for every random choice.
        anomalies_per_day: Mean number of injected anomalies per day.
        row_group_rows: Rows per parquet row group.
    """

    years: tuple[int, ...] = (2021, 2022)
    days_per_year: int = 21
    sampling_period_s: float = 10.0
    n_channels: int = 16
    seed: int = 7
    anomalies_per_day: float = 0.5
    row_group_rows: int = 20_000

    def validate(self) -> None:
        if not self.years:
            raise OptionError("--years: give at least one year")
        if not 1 <= self.days_per_year <= 365:
            raise OptionError(f"--days-per-year must be in 1..365, got {self.days_per_year}")
        if self.sampling_period_s <= 0:
            raise OptionError(f"--sampling-period-s must be > 0, got {self.sampling_period_s}")
        if self.n_channels < 1:
            raise OptionError(f"--n-channels must be >= 1, got {self.n_channels}")
        if self.anomalies_per_day < 0:
            raise OptionError(f"--anomalies-per-day must be >= 0, got {self.anomalies_per_day}")
        # Timestamps are nanoseconds since 1970: the years they hold, whole.
        outside = [year for year in self.years if not 1678 <= year <= 2261]
        if outside:
            raise OptionError(f"--years must be from 1678 to 2261 (nanosecond timestamps), got {outside[0]}")


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly: exact ground truth, in seconds since the Unix epoch."""

    kind: str
    channel: str
    start_s: float
    end_s: float
    magnitude: float


def channel_specs(n_channels: int) -> list[ChannelSpec]:
    """Return `n_channels` specs: the base set, then numbered replicas with small offsets."""
    specs = []
    for i in range(n_channels):
        spec = BASE_CHANNELS[i % len(BASE_CHANNELS)]
        replica = i // len(BASE_CHANNELS)
        if replica:
            spec = ChannelSpec(
                f"{spec.name}_{replica + 1}",
                f"{spec.title} (sensor {replica + 1})",
                spec.base + 0.05 * replica * spec.scale,
                spec.daily,
                spec.orbital,
                spec.noise,
                spec.scale,
            )
        specs.append(spec)
    return specs


class _Drivers:
    """Slow, shared processes of one year: fan modes and O2 repressurisations."""

    def __init__(self, rng: np.random.Generator, t0: float, t1: float) -> None:
        n_modes = max(2, int((t1 - t0) / DAY_S * 0.7))
        self.mode_times = np.sort(rng.uniform(t0, t1, n_modes))
        self.mode_values = rng.integers(0, 2, n_modes + 1).astype(float)
        self.repress_period = rng.uniform(2.5, 3.5) * DAY_S

    def fan_mode(self, t: np.ndarray) -> np.ndarray:
        """1.0 in the high fan mode, 0.0 in the low one."""
        return self.mode_values[np.searchsorted(self.mode_times, t)]

    def o2_cycle(self, t: np.ndarray) -> np.ndarray:
        """Slow O2 depletion (1 -> 0) until each repressurisation: a sawtooth."""
        return 1.0 - np.mod(t, self.repress_period) / self.repress_period


def clean_signals(t: np.ndarray, specs: list[ChannelSpec], drivers: _Drivers) -> np.ndarray:
    """Noise-free channel values at times `t` (seconds since epoch), shape (len(t), channels)."""
    daily = np.sin(2 * np.pi * (t / DAY_S - 0.3))
    orbital = np.sin(2 * np.pi * t / ORBIT_S)
    day_phase = np.mod(t, DAY_S) / DAY_S
    # Crew awake 06:00-21:30 GMT: smooth on/off, peaks of activity after meals.
    crew = 1 / (1 + np.exp(-(day_phase - 0.25) * 80)) - 1 / (1 + np.exp(-(day_phase - 0.895) * 80))
    crew = crew * (0.8 + 0.2 * np.sin(2 * np.pi * day_phase * 3))
    fan = drivers.fan_mode(t)
    o2 = drivers.o2_cycle(t)
    out = np.empty((t.size, len(specs)))
    for j, spec in enumerate(specs):
        value = spec.base + spec.daily * daily + spec.orbital * orbital
        if spec.name.startswith("cabin_air_temp"):
            value = value + 0.25 * crew - 0.15 * fan
        elif spec.name.startswith("cabin_humidity"):
            value = value + 4.0 * crew - 1.0 * fan
        elif spec.name.startswith("ppco2"):
            value = value + 0.9 * crew - 0.2 * fan
        elif spec.name.startswith("ppo2"):
            value = value + 0.5 * o2 - 0.1 * crew
        elif spec.name.startswith("cabin_pressure"):
            value = value + 0.6 * o2 - 0.1 * crew
        elif spec.name.startswith("cabin_fan_speed"):
            value = value + 450.0 * (fan - 0.5)
        elif spec.name.startswith("avionics_fan_speed"):
            value = value + 60.0 * (fan - 0.5)
        elif spec.name.startswith("lt_loop_return"):
            value = value + 0.8 * crew + 0.3 * fan
        elif spec.name.startswith("lt_loop_flow") or spec.name.startswith("mt_loop_flow"):
            value = value + 0.04 * spec.base * (fan - 0.5)
        elif spec.name.startswith("tcv_position"):
            # The valve opens as the cabin warms: follows cabin temperature and crew heat.
            cabin = 0.6 * daily + 0.15 * orbital + 0.25 * crew - 0.15 * fan
            value = value + 12.0 * cabin
        elif spec.name.startswith("bypass_valve"):
            value = value - 6.0 * (fan - 0.5) + 2.0 * orbital
        elif spec.name.startswith("water_separator"):
            value = value + 30.0 * crew
        out[:, j] = value
    return out


def draw_anomalies(
    rng: np.random.Generator, specs: list[ChannelSpec], t0: float, t1: float, per_day: float
) -> list[Anomaly]:
    """Draw non-overlapping anomalies of every kind between `t0` and `t1`."""
    n = max(1, rng.poisson(per_day * (t1 - t0) / DAY_S))
    durations = {
        "spike": (60, 300),
        "level_shift": (1800, 4 * 3600),
        "drift": (2 * 3600, 8 * 3600),
        "stuck": (3600, 6 * 3600),
        "noise_burst": (1200, 2 * 3600),
        "correlation_break": (3600, 4 * 3600),
    }
    coupled = [s.name for s in specs if s.name.startswith(COUPLED)] or [specs[0].name]
    anomalies: list[Anomaly] = []
    first_kind = int(rng.integers(len(ANOMALY_KINDS)))
    for _ in range(n * 20):
        if len(anomalies) == n:
            break
        kind = ANOMALY_KINDS[(first_kind + len(anomalies)) % len(ANOMALY_KINDS)]
        low, high = durations[kind]
        duration = rng.uniform(low, high)
        start = rng.uniform(t0 + 3600, t1 - duration - 3600)
        # Keep a day between events so that each report describes one event.
        if any(start < a.end_s + DAY_S / 2 and a.start_s < start + duration + DAY_S / 2 for a in anomalies):
            continue
        pool = coupled if kind == "correlation_break" else [s.name for s in specs]
        channel = str(rng.choice(pool))
        sign = rng.choice([-1.0, 1.0])
        magnitude = sign * {"spike": 6.0, "level_shift": 3.0, "drift": 4.0}.get(kind, 1.0) * rng.uniform(1, 1.5)
        anomalies.append(Anomaly(kind, channel, start, start + duration, float(magnitude)))
    return sorted(anomalies, key=lambda a: a.start_s)


def _apply_anomalies(
    values: np.ndarray,
    t: np.ndarray,
    specs: list[ChannelSpec],
    anomalies: list[Anomaly],
    drivers: _Drivers,
    rng: np.random.Generator,
) -> None:
    """Modify `values` in place where an anomaly overlaps the times `t`."""
    index = {s.name: j for j, s in enumerate(specs)}
    for anomaly in anomalies:
        lo, hi = np.searchsorted(t, [anomaly.start_s, anomaly.end_s])
        if lo == hi:
            continue
        j = index[anomaly.channel]
        spec = specs[j]
        rows = slice(lo, hi)
        progress = (t[rows] - anomaly.start_s) / (anomaly.end_s - anomaly.start_s)
        if anomaly.kind in ("spike", "level_shift"):
            values[rows, j] += anomaly.magnitude * spec.scale
        elif anomaly.kind == "drift":
            values[rows, j] += anomaly.magnitude * spec.scale * progress
        elif anomaly.kind == "stuck":
            onset = clean_signals(np.array([anomaly.start_s]), [spec], drivers)[0, 0]
            values[rows, j] = onset
        elif anomaly.kind == "noise_burst":
            values[rows, j] += rng.normal(0, 1.5 * spec.scale, hi - lo)
        elif anomaly.kind == "correlation_break":
            # Mirror the deviation from the level: same range, opposite response to its driver.
            values[rows, j] = 2 * spec.base - values[rows, j]


def _year_bounds(year: int, days: int) -> tuple[float, float]:
    t0 = pd.Timestamp(year=year, month=1, day=1, tz="UTC").timestamp()
    return t0, t0 + days * DAY_S


def _gap_intervals(rng: np.random.Generator, t0: float, t1: float, per_day: float, max_s: float) -> np.ndarray:
    n = rng.poisson(per_day * (t1 - t0) / DAY_S)
    starts = np.sort(rng.uniform(t0, t1, n))
    return np.column_stack([starts, starts + rng.uniform(30, max_s, n)])


def _inside(t: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    if not len(intervals):
        return np.zeros(t.size, dtype=bool)
    idx = np.searchsorted(intervals[:, 0], t, side="right") - 1
    return (idx >= 0) & (t < intervals[np.clip(idx, 0, None), 1])


def generate_year(
    year: int, options: GeneratorOptions, specs: list[ChannelSpec], timestamp_column: str
) -> tuple[list[Anomaly], _YearWriter]:
    """Plan one year: draw its drivers and anomalies and return a streaming row-group writer."""
    rng = np.random.default_rng([options.seed, year])
    t0, t1 = _year_bounds(year, options.days_per_year)
    drivers = _Drivers(rng, t0, t1)
    anomalies = draw_anomalies(rng, specs, t0, t1, options.anomalies_per_day)
    return anomalies, _YearWriter(year, options, specs, timestamp_column, drivers, anomalies, rng)


class _YearWriter:
    """Yields the row groups of one year's archive as Arrow tables."""

    def __init__(
        self,
        year: int,
        options: GeneratorOptions,
        specs: list[ChannelSpec],
        timestamp_column: str,
        drivers: _Drivers,
        anomalies: list[Anomaly],
        rng: np.random.Generator,
    ) -> None:
        self.year, self.options, self.specs = year, options, specs
        self.timestamp_column, self.drivers, self.anomalies = timestamp_column, drivers, anomalies
        self.t0, self.t1 = _year_bounds(year, options.days_per_year)
        # Downlink losses (no rows) and per-sensor dropouts (NaN), a few per day each.
        self.losses = _gap_intervals(rng, self.t0, self.t1, 0.5, 1800)
        self.dropouts = [_gap_intervals(rng, self.t0, self.t1, 0.3, 900) for _ in specs]
        self.n_nominal = int((self.t1 - self.t0) / options.sampling_period_s)

    @property
    def n_row_groups(self) -> int:
        return -(-self.n_nominal // self.options.row_group_rows)

    def schema(self) -> pa.Schema:
        fields = [pa.field(self.timestamp_column, pa.timestamp("us", tz="UTC"))]
        fields += [pa.field(s.name, pa.float32()) for s in self.specs]
        return pa.schema(fields)

    def row_groups(self):
        period, step = self.options.sampling_period_s, self.options.row_group_rows
        for k, lo in enumerate(range(0, self.n_nominal, step)):
            rng = np.random.default_rng([self.options.seed, self.year, k])
            nominal = self.t0 + period * np.arange(lo, min(lo + step, self.n_nominal))
            t = nominal + rng.uniform(0.0, 0.4, nominal.size) * period  # stays inside the year
            keep = (rng.random(t.size) > 0.01) & ~_inside(t, self.losses)
            t = t[keep]
            values = clean_signals(t, self.specs, self.drivers)
            values += rng.normal(size=values.shape) * np.array([s.noise for s in self.specs])
            _apply_anomalies(values, t, self.specs, self.anomalies, self.drivers, rng)
            for j, dropouts in enumerate(self.dropouts):
                values[_inside(t, dropouts), j] = np.nan
            timestamps = pa.array((t * 1e6).astype("int64"), pa.timestamp("us", tz="UTC"))
            columns = [timestamps] + [pa.array(values[:, j], pa.float32()) for j in range(len(self.specs))]
            yield pa.Table.from_arrays(columns, schema=self.schema())


def _doy(seconds: float, round_up: bool = False) -> pd.Timestamp:
    ts = pd.Timestamp(seconds, unit="s", tz="UTC")
    return ts.ceil("s") if round_up else ts.floor("s")


def format_doy(ts: pd.Timestamp) -> str:
    """Format as the reports do: YYYY/DOY/HH:MM:SS."""
    return f"{ts.year}/{ts.day_of_year:03d}/{ts:%H:%M:%S}"


def format_duration(seconds: float) -> str:
    """Format a duration as HH:MM:SS (hours may exceed 24)."""
    total = int(np.ceil(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def anomaly_reports(anomalies: list[Anomaly], specs: list[ChannelSpec]) -> pd.DataFrame:
    """One report row per anomaly; every other row gives a duration instead of an end time."""
    titles = {s.name: s.title for s in specs}
    rows = []
    for i, a in enumerate(anomalies):
        start, end = _doy(a.start_s), _doy(a.end_s, round_up=True)
        rows.append(
            {
                "ID": f"AR-{start.year}-{i + 1:04d}",
                "SYMBOL": a.channel.upper(),
                "TITLE": f"{a.kind.replace('_', ' ').capitalize()} on {titles[a.channel]}",
                "EVENT GMT (DOY/HH:MM:SS)": format_doy(start),
                "Duration/End GMT": format_doy(end)
                if i % 2 == 0
                else format_duration(end.timestamp() - start.timestamp()),
            }
        )
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def encode_reports(reports: pd.DataFrame, url: str) -> bytes:
    """The reports as the bytes of an .xlsx or .csv file, by the extension of `url`."""
    if url.endswith(".csv"):
        return reports.to_csv(index=False).encode()
    if url.endswith(".xlsx"):
        buffer = io.BytesIO()
        reports.to_excel(buffer, index=False, sheet_name="Anomaly reports")
        return buffer.getvalue()
    raise OptionError(f"reports file {url} must end in .xlsx or .csv")


def write_reports(reports: pd.DataFrame, url: str) -> None:
    """Write reports as .xlsx or .csv, by the extension of `url`, atomically."""
    data = encode_reports(reports, url)
    with storage.atomic_write(url) as handle:
        handle.write(data)


def run_generate_data(
    archives_url: str,
    reports_url: str,
    ground_truth_url: str,
    options: GeneratorOptions,
    timestamp_column: str = "normalizedTime",
) -> dict[str, int]:
    """Write one archive per year, the anomaly reports and the exact ground-truth intervals.

    The data set appears whole or not at all: everything is written to temporary names first and
    renamed into place at the end (the archive folder last, replacing any earlier one), so an
    interrupted run leaves no archive without its reports.

    Returns:
        Counts: rows, channels, anomalies, archives.
    """
    options.validate()
    encode_reports(pd.DataFrame(), reports_url)  # a bad extension fails before minutes of work
    for option, url in (("--reports", reports_url), ("--ground-truth", ground_truth_url)):
        if url.startswith(archives_url.rstrip("/") + "/"):
            raise OptionError(f"{option} {url} must not be inside --archives: the archive folder is replaced whole")
    storage.remove_stale_temporaries(archives_url)
    specs = channel_specs(options.n_channels)
    all_anomalies: list[Anomaly] = []
    rows = 0
    with storage.atomic_directory(archives_url) as folder:
        for year in options.years:
            anomalies, writer = generate_year(year, options, specs, timestamp_column)
            all_anomalies += anomalies
            url = storage.join(folder, f"eclss_{year}.parquet")
            schema = writer.schema()
            with (
                storage.atomic_write(url) as handle,
                pq.ParquetWriter(handle, schema, **storage.parquet_options(schema)) as out,
            ):
                for table in tqdm(writer.row_groups(), total=writer.n_row_groups, desc=f"archive {year}", unit="group"):
                    out.write_table(table)
                    rows += table.num_rows
        truth = pd.DataFrame([asdict(a) for a in all_anomalies])
        truth["start"] = pd.to_datetime(truth.pop("start_s"), unit="s", utc=True)
        truth["end"] = pd.to_datetime(truth.pop("end_s"), unit="s", utc=True)
        storage.write_parquet(truth, ground_truth_url)
        write_reports(anomaly_reports(all_anomalies, specs), reports_url)
    return {"rows": rows, "channels": len(specs), "anomalies": len(all_anomalies), "archives": len(options.years)}
