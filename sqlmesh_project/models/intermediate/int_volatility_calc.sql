MODEL (
  name silver.int_volatility_calc,
  description 'Rolling volatility: the annualised sample standard deviation of the hourly log returns in the 24 hours, 7 days and 30 days ending at each candle. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time),
  audits (
    not_null(columns := (symbol, open_time)),
    unique_combination_of_columns(columns := (symbol, open_time)),
    accepted_range(column := volatility_30d, min_v := 0, max_v := 100)
  )
);

WITH returns AS (
  SELECT
    symbol,
    open_time,
    log_return_1h AS r
  FROM silver.int_returns
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '720 hours' AND @end_ts
), running AS (
  /* running sums of r and r^2: a window's sums are one subtraction, so the pass is O(n) */
  SELECT
    symbol,
    open_time,
    COALESCE(@over_pair(SUM(r), 0), 0) AS s1,
    COALESCE(@over_pair(SUM(r * r), 0), 0) AS s2,
    @over_pair(COUNT(r), 0) AS n
  FROM returns
), windowed AS (
  /* time windows: missing hours shrink the sample instead of stretching the window */
  SELECT
    symbol,
    open_time,
    @trailing(s1, 24) AS s1_24h,
    @trailing(s2, 24) AS s2_24h,
    @trailing(n, 24) AS n_24h,
    @trailing(s1, 168) AS s1_7d,
    @trailing(s2, 168) AS s2_7d,
    @trailing(n, 168) AS n_7d,
    @trailing(s1, 720) AS s1_30d,
    @trailing(s2, 720) AS s2_30d,
    @trailing(n, 720) AS n_30d
  FROM running
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  @annualised_std(s1_24h, s2_24h, n_24h)::DOUBLE PRECISION AS volatility_24h, /* sample std of the hourly log returns over 24 h x sqrt(24 x 365); NULL with fewer than two */
  @annualised_std(s1_7d, s2_7d, n_7d)::DOUBLE PRECISION AS volatility_7d, /* the same over 168 h */
  @annualised_std(s1_30d, s2_30d, n_30d)::DOUBLE PRECISION AS volatility_30d, /* the same over 720 h */
  n_30d::INT AS returns_in_30d /* hourly returns in the 720-hour window (720 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
