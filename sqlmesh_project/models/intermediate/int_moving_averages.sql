MODEL (
  name silver.int_moving_averages,
  description 'Moving averages of the close over the 168 and 720 hours ending at each candle, and the 24-hour VWAP. One row per symbol per hour.',
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
  /* exact (numeric) running sums: a window's total is one subtraction, so the pass is O(n) */
  SELECT
    symbol,
    open_time,
    @over_pair(SUM(close), 0) AS close_sum,
    @over_pair(SUM(volume), 0) AS volume_sum,
    @over_pair(SUM(quote_volume), 0) AS quote_sum,
    @over_pair(ROW_NUMBER(), 0) AS n
  FROM candles
), windowed AS (
  SELECT
    symbol,
    open_time,
    @trailing(close_sum, 168) AS close_7d,
    @trailing(n, 168) AS n_7d,
    @trailing(close_sum, 720) AS close_30d,
    @trailing(n, 720) AS n_30d,
    @trailing(volume_sum, 24) AS volume_24h,
    @trailing(quote_sum, 24) AS quote_volume_24h
  FROM running
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  (close_7d / n_7d)::DOUBLE PRECISION AS ma_7d, /* mean close of the candles in the 168 hours ending at t */
  (close_30d / n_30d)::DOUBLE PRECISION AS ma_30d, /* mean close of the candles in the 720 hours ending at t */
  (quote_volume_24h / NULLIF(volume_24h, 0))::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  volume_24h::NUMERIC(36, 8) AS volume_24h, /* base volume over 24 h */
  quote_volume_24h::NUMERIC(36, 8) AS quote_volume_24h, /* USDT volume over 24 h */
  n_7d::INT AS candles_in_7d /* candles in the 168-hour window (168 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
