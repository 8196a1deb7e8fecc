MODEL (
  name silver.int_pair_snapshots_daily,
  description 'The coin each Binance pair maps to in the newest CoinGecko snapshot of each UTC day that lists it, the largest by market cap when coins share a ticker. One row per symbol per snapshot day.',
  kind FULL,
  cron '@hourly',
  owner data_eng,
  grain (symbol, day),
  audits (
    not_null(columns := (symbol, day, snapshot_ts, coin_id)),
    unique_combination_of_columns(columns := (symbol, day))
  )
);

WITH snapshots AS (
  SELECT
    symbol,
    (snapshot_ts AT TIME ZONE 'UTC')::DATE AS day,
    snapshot_ts,
    coin_id,
    coin_name,
    market_cap_usd
  FROM silver.stg_coingecko__markets
), newest AS (
  /* coin_id last: equal market caps resolve the same way on every rebuild */
  SELECT DISTINCT ON (symbol, day)
    *
  FROM snapshots
  ORDER BY
    symbol,
    day,
    snapshot_ts DESC,
    market_cap_usd DESC NULLS LAST,
    coin_id
)
SELECT
  symbol::TEXT AS symbol, /* Binance USDT pair, e.g. BTCUSDT */
  day::DATE AS day, /* UTC day of the snapshot */
  snapshot_ts::TIMESTAMPTZ AS snapshot_ts, /* the newest snapshot of that day listing the pair */
  coin_id::TEXT AS coin_id, /* CoinGecko id the pair maps to in that snapshot */
  coin_name::TEXT AS coin_name, /* CoinGecko display name in that snapshot */
  market_cap_usd::DOUBLE PRECISION AS market_cap_usd /* the coin's market cap in that snapshot, USD */
FROM newest
