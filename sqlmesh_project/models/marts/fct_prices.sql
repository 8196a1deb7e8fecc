MODEL (
  name gold.fct_prices,
  description 'Hourly prices with OHLCV, every indicator, the coin as of that hour and the day''s sentiment: the table analysts and the dashboard read. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner analytics,
  grain (symbol, open_time), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, open_time, coin_id)), /* coin_id: every pair maps to a CoinGecko coin */
    accepted_range(column := change_24h, min_v := -1, max_v := 100)
  )
);

WITH candles AS (
  SELECT
    *
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
), indicators AS (
  SELECT
    *
  FROM silver.int_indicators_hourly
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
), enriched AS (
  SELECT
    *
  FROM silver.int_crypto_hourly
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
)
SELECT
  c.symbol::TEXT AS symbol, /* Binance pair, e.g. BTCUSDT */
  c.open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  e.coin_id::TEXT AS coin_id, /* the CoinGecko coin the pair mapped to as of this hour's UTC day (a later snapshot never rewrites it) */
  e.coin_name::TEXT AS coin_name, /* its CoinGecko display name as of that day */
  c.open::NUMERIC(36, 8) AS open, /* USDT */
  c.high::NUMERIC(36, 8) AS high, /* USDT */
  c.low::NUMERIC(36, 8) AS low, /* USDT */
  c.close::NUMERIC(36, 8) AS close, /* USDT */
  c.volume::NUMERIC(36, 8) AS volume, /* base asset quantity */
  c.quote_volume::NUMERIC(36, 8) AS quote_volume, /* USDT value traded */
  c.trades::BIGINT AS trades, /* number of trades */
  i.change_1h::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1 (fraction) */
  i.change_24h::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 (fraction) */
  i.change_7d::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 (fraction) */
  i.log_return_1h::DOUBLE PRECISION AS log_return_1h, /* ln(close / close 1 h earlier) */
  i.ma_7d::DOUBLE PRECISION AS ma_7d, /* mean close over the 168 hours ending at t */
  i.ma_30d::DOUBLE PRECISION AS ma_30d, /* mean close over the 720 hours ending at t */
  i.vwap_24h::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  i.volatility_24h::DOUBLE PRECISION AS volatility_24h, /* annualised std of hourly log returns, 24 h */
  i.volatility_7d::DOUBLE PRECISION AS volatility_7d, /* the same over 168 h */
  i.volatility_30d::DOUBLE PRECISION AS volatility_30d, /* the same over 720 h */
  e.fng_value::INT AS fng_value, /* Fear & Greed value of the UTC day */
  e.fng_label::TEXT AS fng_label /* Fear & Greed label of the UTC day */
FROM candles AS c
LEFT JOIN indicators AS i
  ON i.symbol = c.symbol AND i.open_time = c.open_time
LEFT JOIN enriched AS e
  ON e.symbol = c.symbol AND e.open_time = c.open_time
;

@unique_grain(open_time, symbol);

@analyze_after_backfill()
