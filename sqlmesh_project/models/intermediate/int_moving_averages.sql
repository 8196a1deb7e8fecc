MODEL (
  name silver.int_moving_averages,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time),
  audits (
    not_null(columns := (symbol, open_time, ma_7d, ma_30d)),
    unique_combination_of_columns(columns := (symbol, open_time)),
    accepted_range(column := ma_7d, min_v := 0)
  )
);

/* Moving averages and VWAP per symbol per hour, over time windows ending at t: MA_7d = mean close of the candles in the 168 hours ending at t, MA_30d the same over 720 hours, VWAP_24h = sum(quote_volume) / sum(volume) over 24 hours. Computed over numeric, which Postgres slides in O(n). */
WITH candles AS (
  SELECT
    symbol,
    open_time,
    close,
    volume,
    quote_volume
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '720 hours' AND @end_ts
), windowed AS (
  SELECT
    symbol,
    open_time,
    AVG(close) OVER w168 AS ma_7d,
    AVG(close) OVER w720 AS ma_30d,
    SUM(quote_volume) OVER w24 AS quote_volume_24h,
    SUM(volume) OVER w24 AS volume_24h,
    COUNT(*) OVER w168 AS n_7d
  FROM candles
  WINDOW
    w24 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '23 hours' PRECEDING AND CURRENT ROW),
    w168 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '167 hours' PRECEDING AND CURRENT ROW),
    w720 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN INTERVAL '719 hours' PRECEDING AND CURRENT ROW)
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  ma_7d::DOUBLE PRECISION AS ma_7d, /* mean close over the 168 hours ending at t */
  ma_30d::DOUBLE PRECISION AS ma_30d, /* mean close over the 720 hours ending at t */
  (quote_volume_24h / NULLIF(volume_24h, 0))::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  volume_24h::NUMERIC(36, 8) AS volume_24h, /* base volume over 24 h */
  quote_volume_24h::NUMERIC(36, 8) AS quote_volume_24h, /* USDT volume over 24 h */
  n_7d::INT AS candles_in_7d /* candles in the 168-hour window (168 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
