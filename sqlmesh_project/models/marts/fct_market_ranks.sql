MODEL (
  name gold.fct_market_ranks,
  description 'Market-cap positions as of every CoinGecko snapshot, kept so that the top N as of any date (the last snapshot on or before it) keeps coins that later fell out or were delisted. One row per coin per snapshot.',
  kind VIEW,
  owner analytics,
  grain (snapshot_ts, coin_id),
  audits (
    not_null(columns := (snapshot_ts, coin_id, position)),
    unique_combination_of_columns(columns := (snapshot_ts, coin_id))
  )
);

SELECT
  snapshot_ts::TIMESTAMPTZ AS snapshot_ts, /* the snapshot's hour, UTC */
  ROW_NUMBER() OVER (
    PARTITION BY snapshot_ts
    ORDER BY market_cap_usd DESC NULLS LAST, coin_id
  )::INT AS position, /* 1 = the largest market cap in that snapshot */
  coin_id::TEXT AS coin_id, /* CoinGecko id */
  coin_name::TEXT AS coin_name, /* display name */
  symbol::TEXT AS symbol, /* the Binance USDT pair it maps to */
  market_cap_rank::INT AS market_cap_rank, /* CoinGecko's own rank (refreshed less often than prices) */
  market_cap_usd::DOUBLE PRECISION AS market_cap_usd, /* market cap, USD */
  price_usd::DOUBLE PRECISION AS price_usd, /* price, USD */
  volume_24h_usd::DOUBLE PRECISION AS volume_24h_usd, /* 24 h volume, USD */
  change_24h_pct::DOUBLE PRECISION AS change_24h_pct /* 24 h change, percent */
FROM silver.stg_coingecko__markets
