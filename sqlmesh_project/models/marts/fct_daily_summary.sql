MODEL (
  name gold.fct_daily_summary,
  description 'Daily summary: one row per symbol per UTC day - OHLC, volumes, daily VWAP = sum(quote_volume) / sum(volume) over the day, realised volatility (sample std of the day''s hourly log returns x sqrt(24 x 365)), change_1d = close / previous UTC day''s close - 1, and the coin''s market cap from the day''s last CoinGecko snapshot.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column day,
    lookback 2
  ),
  cron '@daily',
  owner analytics,
  grain (symbol, day),
  audits (
    not_null(columns := (symbol, day, open, high, low, close, volume, candles)),
    unique_combination_of_columns(columns := (symbol, day)),
    accepted_range(column := candles, min_v := 1, max_v := 24),
    accepted_range(column := volume, min_v := 0),
    assert_ohlc_consistent,
    not_null(columns := (coin_id)) /* referential integrity: every symbol has a current dim_crypto row */
  )
);

WITH candles AS (
  SELECT
    symbol,
    (open_time AT TIME ZONE 'UTC')::DATE AS day,
    open_time,
    open,
    high,
    low,
    close,
    volume,
    quote_volume,
    trades
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '1 day' AND @end_ts
), daily AS (
  SELECT
    symbol,
    day,
    (ARRAY_AGG(open ORDER BY open_time))[1] AS open,
    MAX(high) AS high,
    MIN(low) AS low,
    (ARRAY_AGG(close ORDER BY open_time DESC))[1] AS close,
    SUM(volume) AS volume,
    SUM(quote_volume) AS quote_volume,
    SUM(trades) AS trades,
    COUNT(*) AS candles
  FROM candles
  GROUP BY
    symbol,
    day
), day_returns AS (
  SELECT
    symbol,
    (open_time AT TIME ZONE 'UTC')::DATE AS day,
    STDDEV_SAMP(log_return_1h) AS sd
  FROM silver.int_returns
  WHERE
    open_time BETWEEN @start_ts AND @end_ts
  GROUP BY
    symbol,
    (open_time AT TIME ZONE 'UTC')::DATE
), coins AS (
  /* the current dim_crypto row per pair; when coins share a ticker, the best ranked */
  SELECT DISTINCT ON (symbol)
    symbol,
    coin_id
  FROM gold.dim_crypto
  WHERE
    is_current
  ORDER BY
    symbol,
    market_cap_rank NULLS LAST,
    coin_id
), market_caps AS (
  SELECT DISTINCT ON (symbol, (snapshot_ts AT TIME ZONE 'UTC')::DATE)
    symbol,
    (snapshot_ts AT TIME ZONE 'UTC')::DATE AS day,
    market_cap_usd
  FROM silver.stg_coingecko__markets
  WHERE
    snapshot_ts BETWEEN @start_ts AND @end_ts
  ORDER BY
    symbol,
    (snapshot_ts AT TIME ZONE 'UTC')::DATE,
    snapshot_ts DESC,
    market_cap_usd DESC NULLS LAST
)
SELECT
  d.symbol::TEXT AS symbol, /* Binance pair */
  d.day::DATE AS day, /* UTC day */
  coins.coin_id::TEXT AS coin_id, /* the coin in gold.dim_crypto (its current version) */
  d.open::NUMERIC(36, 8) AS open, /* first hourly open of the day, USDT */
  d.high::NUMERIC(36, 8) AS high, /* highest hourly high, USDT */
  d.low::NUMERIC(36, 8) AS low, /* lowest hourly low, USDT */
  d.close::NUMERIC(36, 8) AS close, /* last hourly close of the day, USDT */
  d.volume::NUMERIC(36, 8) AS volume, /* base asset quantity traded */
  d.quote_volume::NUMERIC(36, 8) AS quote_volume, /* USDT value traded */
  d.trades::BIGINT AS trades, /* number of trades */
  d.candles::INT AS candles, /* hourly candles in the day (24 unless the exchange had an outage) */
  (d.quote_volume / NULLIF(d.volume, 0))::DOUBLE PRECISION AS vwap, /* sum(quote_volume) / sum(volume) over the day */
  (r.sd * SQRT(24 * 365))::DOUBLE PRECISION AS volatility, /* annualised std of the day's hourly log returns */
  (d.close / p.close - 1)::DOUBLE PRECISION AS change_1d, /* close / previous day's close - 1 (fraction) */
  m.market_cap_usd::DOUBLE PRECISION AS market_cap_usd /* market cap at the day's last CoinGecko snapshot (NULL if none) */
FROM daily AS d
LEFT JOIN daily AS p
  ON p.symbol = d.symbol AND p.day = d.day - 1
LEFT JOIN day_returns AS r
  ON r.symbol = d.symbol AND r.day = d.day
LEFT JOIN market_caps AS m
  ON m.symbol = d.symbol AND m.day = d.day
LEFT JOIN coins
  ON coins.symbol = d.symbol
WHERE
  d.day BETWEEN @start_ds AND @end_ds
