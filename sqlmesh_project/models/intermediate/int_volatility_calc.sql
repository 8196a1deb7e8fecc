MODEL (
  name silver.int_volatility_calc,
  description 'Rolling volatility per symbol per hour: volatility_Xd = sample standard deviation of the hourly log returns whose candles lie in the X x 24 hours ending at t (time windows, so missing hours shrink the sample instead of stretching the window), annualised by sqrt(24 x 365). NULL with fewer than two returns. Computed in O(n): running sums of r and r^2, minus their values at the last candle at or before t - window.',
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
  SELECT
    symbol,
    open_time,
    COALESCE(SUM(r) OVER upto, 0) AS s1,
    COALESCE(SUM(r * r) OVER upto, 0) AS s2,
    COUNT(r) OVER upto AS n
  FROM returns
  WINDOW upto AS (PARTITION BY symbol ORDER BY open_time ROWS UNBOUNDED PRECEDING)
), windowed AS (
  SELECT
    symbol,
    open_time,
    @trailing(s1, before24) AS s1_24h,
    @trailing(s2, before24) AS s2_24h,
    @trailing(n, before24) AS n_24h,
    @trailing(s1, before168) AS s1_7d,
    @trailing(s2, before168) AS s2_7d,
    @trailing(n, before168) AS n_7d,
    @trailing(s1, before720) AS s1_30d,
    @trailing(s2, before720) AS s2_30d,
    @trailing(n, before720) AS n_30d
  FROM running
  WINDOW
    before24 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '24 hours' PRECEDING),
    before168 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '168 hours' PRECEDING),
    before720 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '720 hours' PRECEDING)
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  @annualised_std(s1_24h, s2_24h, n_24h)::DOUBLE PRECISION AS volatility_24h, /* annualised std of hourly log returns over 24 h */
  @annualised_std(s1_7d, s2_7d, n_7d)::DOUBLE PRECISION AS volatility_7d, /* annualised std over 168 h */
  @annualised_std(s1_30d, s2_30d, n_30d)::DOUBLE PRECISION AS volatility_30d, /* annualised std over 720 h */
  n_30d::INT AS returns_in_30d /* hourly returns in the 720-hour window (720 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
