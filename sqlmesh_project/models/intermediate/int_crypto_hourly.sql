MODEL (
  name silver.int_crypto_hourly,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time),
  audits (
    not_null(columns := (symbol, open_time, close)),
    unique_combination_of_columns(columns := (symbol, open_time))
  )
);

/* Hourly candles enriched with the coin's CoinGecko id and name (from its newest snapshot up to that hour's day) and that UTC day's Fear & Greed value. One row per symbol per hour. */
WITH candles AS (
  SELECT
    symbol,
    base_asset,
    open_time,
    close
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
), coins AS (
  /* one coin per pair: when several coins share a ticker, the largest by market cap */
  SELECT DISTINCT ON (symbol)
    symbol,
    coin_id,
    coin_name
  FROM silver.stg_coingecko__markets
  ORDER BY
    symbol,
    snapshot_ts DESC,
    market_cap_usd DESC NULLS LAST
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
  coins.coin_id::TEXT AS coin_id, /* CoinGecko id (NULL when CoinGecko does not list the coin) */
  coins.coin_name::TEXT AS coin_name, /* CoinGecko display name */
  c.close::NUMERIC(36, 8) AS close, /* candle close, USDT */
  s.fng_value::INT AS fng_value, /* Fear & Greed value of the candle's UTC day */
  s.fng_label::TEXT AS fng_label /* Fear & Greed label of that day */
FROM candles AS c
LEFT JOIN coins
  ON coins.symbol = c.symbol
LEFT JOIN sentiment AS s
  ON s.day = (c.open_time AT TIME ZONE 'UTC')::DATE
