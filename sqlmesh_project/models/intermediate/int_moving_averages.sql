MODEL (
  name silver.int_moving_averages,
  description 'Moving averages and VWAP per symbol per hour, over time windows ending at t: MA_7d = mean close of the candles in the 168 hours ending at t, MA_30d the same over 720 hours, VWAP_24h = sum(quote_volume) / sum(volume) over 24 hours. Exact (numeric) and O(n): running sums minus their values at the last candle at or before t - window.',
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
), running AS (
  SELECT
    symbol,
    open_time,
    SUM(close) OVER upto AS close_sum,
    SUM(volume) OVER upto AS volume_sum,
    SUM(quote_volume) OVER upto AS quote_sum,
    ROW_NUMBER() OVER upto AS n
  FROM candles
  WINDOW upto AS (PARTITION BY symbol ORDER BY open_time ROWS UNBOUNDED PRECEDING)
), windowed AS (
  SELECT
    symbol,
    open_time,
    @trailing(close_sum, before168) AS close_7d,
    @trailing(n, before168) AS n_7d,
    @trailing(close_sum, before720) AS close_30d,
    @trailing(n, before720) AS n_30d,
    @trailing(volume_sum, before24) AS volume_24h,
    @trailing(quote_sum, before24) AS quote_volume_24h
  FROM running
  WINDOW
    before24 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '24 hours' PRECEDING),
    before168 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '168 hours' PRECEDING),
    before720 AS (PARTITION BY symbol ORDER BY open_time RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '720 hours' PRECEDING)
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  (close_7d / n_7d)::DOUBLE PRECISION AS ma_7d, /* mean close over the 168 hours ending at t */
  (close_30d / n_30d)::DOUBLE PRECISION AS ma_30d, /* mean close over the 720 hours ending at t */
  (quote_volume_24h / NULLIF(volume_24h, 0))::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  volume_24h::NUMERIC(36, 8) AS volume_24h, /* base volume over 24 h */
  quote_volume_24h::NUMERIC(36, 8) AS quote_volume_24h, /* USDT volume over 24 h */
  n_7d::INT AS candles_in_7d /* candles in the 168-hour window (168 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
