MODEL (
  name gold.dim_crypto,
  description 'Coins as a type 2 slowly changing dimension over CoinGecko''s attributes (name, rank, supplies, pair), rebuilt from the whole snapshot history so re-runs and backfills give the same rows. One row per coin per version.',
  kind FULL,
  cron '@hourly',
  owner analytics,
  grain (coin_id, valid_from),
  audits (
    not_null(columns := (coin_id, symbol, valid_from)),
    unique_combination_of_columns(columns := (coin_id, valid_from))
  )
);

WITH snapshots AS (
  SELECT
    coin_id,
    symbol,
    symbol_base,
    coin_name,
    market_cap_rank,
    circulating_supply,
    total_supply,
    max_supply,
    snapshot_ts
  FROM silver.stg_coingecko__markets
), flagged AS (
  SELECT
    *,
    CASE
      WHEN LAG(
        ROW(coin_name, market_cap_rank, circulating_supply, total_supply, max_supply, symbol)::TEXT
      ) OVER (PARTITION BY coin_id ORDER BY snapshot_ts) IS NOT DISTINCT FROM ROW(coin_name, market_cap_rank, circulating_supply, total_supply, max_supply, symbol)::TEXT
      THEN 0
      ELSE 1
    END AS is_change
  FROM snapshots
), versions AS (
  SELECT
    *,
    SUM(is_change) OVER (PARTITION BY coin_id ORDER BY snapshot_ts) AS version
  FROM flagged
), final AS (
  SELECT
    coin_id,
    version,
    MIN(snapshot_ts) AS valid_from,
    MIN(symbol) AS symbol,
    MIN(symbol_base) AS symbol_base,
    MIN(coin_name) AS coin_name,
    MIN(market_cap_rank) AS market_cap_rank,
    MIN(circulating_supply) AS circulating_supply,
    MIN(total_supply) AS total_supply,
    MIN(max_supply) AS max_supply
  FROM versions
  GROUP BY
    coin_id,
    version
)
SELECT
  coin_id::TEXT AS coin_id, /* CoinGecko id, e.g. bitcoin */
  symbol::TEXT AS symbol, /* Binance USDT pair the coin maps to, e.g. BTCUSDT */
  symbol_base::TEXT AS symbol_base, /* ticker, e.g. BTC */
  coin_name::TEXT AS coin_name, /* display name */
  market_cap_rank::INT AS market_cap_rank, /* rank by market cap in this version */
  circulating_supply::DOUBLE PRECISION AS circulating_supply, /* coins in circulation */
  total_supply::DOUBLE PRECISION AS total_supply, /* coins in existence (NULL when unknown) */
  max_supply::DOUBLE PRECISION AS max_supply, /* hard cap (NULL when uncapped or unknown) */
  valid_from::TIMESTAMPTZ AS valid_from, /* first snapshot with these attributes */
  LEAD(valid_from) OVER (PARTITION BY coin_id ORDER BY valid_from)::TIMESTAMPTZ AS valid_to, /* snapshot that changed them; NULL while current */
  (LEAD(valid_from) OVER (PARTITION BY coin_id ORDER BY valid_from) IS NULL)::BOOLEAN AS is_current /* TRUE for the coin's current version */
FROM final
