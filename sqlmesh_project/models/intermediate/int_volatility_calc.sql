MODEL (
  name silver.int_volatility_calc,
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

/* Rolling volatility per symbol per hour: volatility_Xd = sample standard deviation of the hourly log returns whose candles lie in the X x 24 hours ending at t (RANGE windows over time, so missing hours shrink the sample instead of stretching the window), annualised by sqrt(24 x 365). NULL with fewer than two returns. Sums run over numeric so Postgres slides the windows in O(n). */
WITH returns AS (
  SELECT
    symbol,
    open_time,
    log_return_1h::NUMERIC AS r
  FROM silver.int_returns
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '720 hours' AND @end_ts
), windowed AS (
  SELECT
    symbol,
    open_time,
    STDDEV_SAMP(r) OVER w24 AS sd_24h,
    STDDEV_SAMP(r) OVER w168 AS sd_7d,
    STDDEV_SAMP(r) OVER w720 AS sd_30d,
    COUNT(r) OVER w720 AS n_30d
  FROM returns
  WINDOW
    w24 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '23 hours' PRECEDING AND CURRENT ROW),
    w168 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '167 hours' PRECEDING AND CURRENT ROW),
    w720 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '719 hours' PRECEDING AND CURRENT ROW)
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  (sd_24h * SQRT(24 * 365))::DOUBLE PRECISION AS volatility_24h, /* annualised std of hourly log returns over 24 h */
  (sd_7d * SQRT(24 * 365))::DOUBLE PRECISION AS volatility_7d, /* annualised std over 168 h */
  (sd_30d * SQRT(24 * 365))::DOUBLE PRECISION AS volatility_30d, /* annualised std over 720 h */
  n_30d::INT AS returns_in_30d /* hourly returns in the 720-hour window (720 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
