MODEL (
  name gold.dim_pair,
  description 'Trading pairs and their life on Binance - status now, listing, delisting and successor - which says why a delisted pair''s facts in fct_prices end. One row per pair the pipeline has seen.',
  kind FULL,
  cron '@hourly',
  owner analytics,
  grain symbol,
  audits (
    not_null(columns := (symbol, status)),
    unique_combination_of_columns(columns := (symbol))
  )
);

WITH pairs AS (
  SELECT
    symbol,
    status,
    status_since,
    first_candle,
    successor
  FROM ops.pairs
), stored AS (
  /* first and last stored candle per pair: two index probes each, no scan of the history */
  SELECT
    p.symbol,
    (SELECT MIN(k.open_time) FROM raw.binance_klines AS k WHERE k.symbol = p.symbol) AS first_open,
    (SELECT MAX(k.open_time) FROM raw.binance_klines AS k WHERE k.symbol = p.symbol) AS last_open
  FROM pairs AS p
)
SELECT
  p.symbol::TEXT AS symbol, /* Binance pair, e.g. POLUSDT */
  p.status::TEXT AS status, /* exchangeInfo status now: TRADING, BREAK, or NOT_LISTED (removed: klines answer -1121) */
  (p.status = 'TRADING')::BOOLEAN AS is_trading, /* TRUE while the pair trades */
  COALESCE(p.first_candle, s.first_open)::TIMESTAMPTZ AS listed_from, /* open time of its first candle on the exchange */
  CASE
    WHEN p.status <> 'TRADING'
    THEN COALESCE(s.last_open + INTERVAL '1 hour', p.status_since)
  END::TIMESTAMPTZ AS delisted_at, /* close of its last stored candle once it stopped trading (else when it was first seen not trading) */
  p.status_since::TIMESTAMPTZ AS status_since, /* first run (exchange clock) that saw the current status */
  p.successor::TEXT AS successor, /* the pair that replaced it (universe.successors), e.g. POLUSDT for MATICUSDT */
  s.first_open::TIMESTAMPTZ AS first_candle_stored, /* oldest candle in raw */
  s.last_open::TIMESTAMPTZ AS last_candle_stored /* newest candle in raw: facts end here for a delisted pair */
FROM pairs AS p
LEFT JOIN stored AS s
  USING (symbol)
