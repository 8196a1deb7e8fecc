MODEL (
  name gold.mart_market_overview,
  description 'The dashboard Overview''s top 10 coins by market cap in the latest snapshot, with CoinGecko''s 24 h change and, for coins with a pair the pipeline knows (gold.dim_pair), that pair and its newest hourly close and change from fct_prices. One row per coin.',
  kind VIEW,
  owner analytics,
  grain coin_id,
  audits (
    unique_combination_of_columns(columns := (coin_id))
  )
);

WITH top10 AS (
  /* positions 1-10 of the latest snapshot (gold.fct_market_ranks keeps every snapshot's ranks) */
  SELECT
    *
  FROM gold.fct_market_ranks
  WHERE
    snapshot_ts = (
      SELECT
        MAX(snapshot_ts)
      FROM gold.fct_market_ranks
    )
    AND position <= 10
), known_pair AS (
  /* pairs the exchange lists or listed, as the pipeline saw them: a coin off the universe has none, nor USDT itself (the quote asset) */
  SELECT
    symbol
  FROM gold.dim_pair
  WHERE
    NOT listed_from IS NULL
), last_price AS (
  SELECT DISTINCT ON (symbol)
    symbol,
    open_time,
    close,
    change_24h
  FROM gold.fct_prices
  WHERE
    open_time >= NOW() - INTERVAL '7 days'
  ORDER BY
    symbol,
    open_time DESC
)
SELECT
  t.position::INT AS position, /* 1-10 by market cap */
  t.coin_id::TEXT AS coin_id, /* CoinGecko id */
  t.coin_name::TEXT AS coin_name, /* display name */
  k.symbol::TEXT AS symbol, /* its Binance pair, from gold.dim_pair (NULL if the pipeline knows none, e.g. USDT) */
  t.price_usd::DOUBLE PRECISION AS price_usd, /* CoinGecko price */
  t.market_cap_usd::DOUBLE PRECISION AS market_cap_usd, /* market cap, USD */
  t.volume_24h_usd::DOUBLE PRECISION AS volume_24h_usd, /* 24 h volume, USD */
  (t.change_24h_pct / 100)::DOUBLE PRECISION AS change_24h, /* CoinGecko 24 h change (fraction) */
  p.close::NUMERIC(36, 8) AS last_close, /* newest hourly close on Binance (NULL if not tracked) */
  p.change_24h::DOUBLE PRECISION AS last_change_24h, /* Binance close / close 24 h earlier - 1 */
  p.open_time::TIMESTAMPTZ AS last_candle_open_time, /* open time of that candle */
  t.snapshot_ts::TIMESTAMPTZ AS snapshot_ts /* when the snapshot was taken */
FROM top10 AS t
LEFT JOIN known_pair AS k
  ON k.symbol = t.symbol
LEFT JOIN last_price AS p
  ON p.symbol = k.symbol
