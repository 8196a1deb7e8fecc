MODEL (
  name gold.mart_market_totals,
  description 'The dashboard Overview''s market totals (market cap, 24 h volume, BTC dominance) of the latest CoinGecko snapshot, current as soon as it lands (fct_market_sentiment has them per complete UTC day). One row: the latest snapshot.',
  kind VIEW,
  owner analytics,
  grain snapshot_ts,
  audits (
    not_null(columns := (snapshot_ts)),
    accepted_range(column := btc_dominance, min_v := 0, max_v := 1)
  )
);

SELECT
  snapshot_ts, /* the latest snapshot */
  COUNT(*)::INT AS coins, /* coins in the snapshot */
  SUM(market_cap_usd)::DOUBLE PRECISION AS total_market_cap_usd, /* sum over the snapshot's coins, USD */
  SUM(volume_24h_usd)::DOUBLE PRECISION AS total_volume_24h_usd, /* sum of 24 h traded value, USD */
  (
    SUM(market_cap_usd) FILTER (WHERE coin_id = 'bitcoin') / NULLIF(SUM(market_cap_usd), 0)
  )::DOUBLE PRECISION AS btc_dominance /* bitcoin market cap / total (fraction) */
FROM silver.stg_coingecko__markets
WHERE
  snapshot_ts = (
    SELECT
      MAX(snapshot_ts)
    FROM silver.stg_coingecko__markets
  )
GROUP BY
  snapshot_ts
