MODEL (
  name silver.int_crypto_daily,
  description 'The coin each pair maps to on each UTC day it has candles (the newest CoinGecko snapshot day on or before it; before the first snapshot: the first) and that day''s Fear & Greed value. Both change only by day, so fct_prices and fct_daily_summary join this small table by (symbol, day). One row per symbol per UTC day with candles.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column day,
    lookback 48
  ),
  cron '@hourly', /* the hourly fct_prices needs today's row as soon as its first candle is in */
  owner data_eng,
  grain (symbol, day), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, day))
  )
);

WITH candle_days AS (
  /* the pairs with candles on each UTC day of the interval (whole days: a run rewrites its days); the bounds
     are timestamps AT TIME ZONE 'UTC' (a date there would be read in the session's time zone) */
  SELECT DISTINCT
    symbol,
    (open_time AT TIME ZONE 'UTC')::DATE AS day
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time >= @start_ds::TIMESTAMP AT TIME ZONE 'UTC'
    AND open_time < (@end_ds::DATE + 1)::TIMESTAMP AT TIME ZONE 'UTC'
), coin_days AS (
  SELECT
    symbol,
    day,
    coin_id,
    coin_name
  FROM silver.int_pair_snapshots_daily
), sequence AS (
  /* snapshot days and candle days in one timeline per pair; a snapshot sorts before candles of its day */
  SELECT
    symbol,
    day,
    coin_id,
    coin_name,
    0 AS is_candle
  FROM coin_days
  UNION ALL
  SELECT
    symbol,
    day,
    NULL,
    NULL,
    1
  FROM candle_days
), numbered AS (
  /* version = how many snapshot days up to and including this day */
  SELECT
    *,
    COUNT(coin_id) OVER (PARTITION BY symbol ORDER BY day, is_candle) AS version
  FROM sequence
), as_of AS (
  /* a candle day takes the coin of its version's snapshot day (the first row of the version);
     days before any snapshot (version 0) take the first snapshot */
  SELECT
    symbol,
    day,
    is_candle,
    CASE
      WHEN version > 0
      THEN FIRST_VALUE(coin_id) OVER (PARTITION BY symbol, version ORDER BY is_candle, day)
      ELSE FIRST_VALUE(coin_id) OVER (PARTITION BY symbol ORDER BY is_candle, day)
    END AS coin_id,
    CASE
      WHEN version > 0
      THEN FIRST_VALUE(coin_name) OVER (PARTITION BY symbol, version ORDER BY is_candle, day)
      ELSE FIRST_VALUE(coin_name) OVER (PARTITION BY symbol ORDER BY is_candle, day)
    END AS coin_name
  FROM numbered
), sentiment AS (
  SELECT
    day,
    fng_value,
    fng_label
  FROM silver.stg_alternative_me__fear_greed
)
SELECT
  a.symbol::TEXT AS symbol, /* Binance pair */
  a.day::DATE AS day, /* UTC day */
  a.coin_id::TEXT AS coin_id, /* CoinGecko id from the newest snapshot on or before the day (before the first snapshot: the first); NULL when CoinGecko never listed the pair */
  a.coin_name::TEXT AS coin_name, /* CoinGecko display name from that snapshot */
  s.fng_value::INT AS fng_value, /* Fear & Greed value of the UTC day */
  s.fng_label::TEXT AS fng_label /* Fear & Greed label of that day */
FROM as_of AS a
LEFT JOIN sentiment AS s
  ON s.day = a.day
WHERE
  a.is_candle = 1
;

@unique_grain(day, symbol);

@analyze_after_backfill(day, symbol)
