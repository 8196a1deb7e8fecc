MODEL (
  name silver.stg_coingecko__markets,
  description 'CoinGecko market snapshots kept as history, renamed and typed, with the Binance USDT pair each coin maps to; rebuilt in full (they are small) so a snapshot is visible as soon as it lands. One row per coin per snapshot.',
  kind FULL,
  cron '@hourly',
  owner data_eng,
  grain (coin_id, snapshot_ts),
  audits (
    not_null(columns := (coin_id, snapshot_ts, symbol)),
    unique_combination_of_columns(columns := (coin_id, snapshot_ts)),
    accepted_range(column := price_usd, min_v := 0),
    assert_positive_rows
  )
);

SELECT
  /* ids */
  id::TEXT AS coin_id, /* CoinGecko id, e.g. bitcoin */
  UPPER(symbol)::TEXT AS symbol_base, /* ticker, upper case, e.g. BTC */
  (UPPER(symbol) || 'USDT')::TEXT AS symbol, /* the Binance pair this coin maps to, e.g. BTCUSDT */
  name::TEXT AS coin_name, /* display name, e.g. Bitcoin */
  market_cap_rank::INT AS market_cap_rank, /* rank by market cap in this snapshot (NULL when unranked) */
  /* numerics, USD (CoinGecko's doubles) */
  current_price AS price_usd, /* last price */
  market_cap AS market_cap_usd, /* price x circulating supply */
  total_volume AS volume_24h_usd, /* traded value over the last 24 h */
  price_change_percentage_24h AS change_24h_pct, /* price change over 24 h, percent */
  circulating_supply AS circulating_supply, /* coins in circulation */
  total_supply AS total_supply, /* coins in existence (NULL when unknown) */
  max_supply AS max_supply, /* hard cap (NULL when uncapped or unknown) */
  /* timestamps */
  snapshot_ts::TIMESTAMPTZ AS snapshot_ts, /* hour the snapshot was taken, UTC */
  last_updated::TIMESTAMPTZ AS last_updated /* CoinGecko's own update time */
FROM raw.coingecko_markets
