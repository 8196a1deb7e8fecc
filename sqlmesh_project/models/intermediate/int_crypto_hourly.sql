MODEL (
  name silver.int_crypto_hourly,
  description 'Hourly candles with the coin each pair mapped to as of the candle''s UTC day and that day''s Fear & Greed value. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, open_time, close))
  )
);

WITH candles AS (
  SELECT
    symbol,
    base_asset,
    open_time,
    (open_time AT TIME ZONE 'UTC')::DATE AS day,
    close
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
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
  SELECT DISTINCT
    symbol,
    day,
    NULL,
    NULL,
    1
  FROM candles
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
  c.symbol::TEXT AS symbol, /* Binance pair */
  c.open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  c.base_asset::TEXT AS base_asset, /* the coin's ticker */
  a.coin_id::TEXT AS coin_id, /* CoinGecko id from the newest snapshot on or before the candle's UTC day (before the first snapshot: the first); NULL when CoinGecko never listed the pair */
  a.coin_name::TEXT AS coin_name, /* CoinGecko display name from that snapshot */
  c.close::NUMERIC(36, 8) AS close, /* candle close, USDT */
  s.fng_value::INT AS fng_value, /* Fear & Greed value of the candle's UTC day */
  s.fng_label::TEXT AS fng_label /* Fear & Greed label of that day */
FROM candles AS c
LEFT JOIN as_of AS a
  ON a.symbol = c.symbol AND a.day = c.day AND a.is_candle = 1
LEFT JOIN sentiment AS s
  ON s.day = c.day
;

@unique_grain(open_time, symbol);

@analyze_after_backfill()
