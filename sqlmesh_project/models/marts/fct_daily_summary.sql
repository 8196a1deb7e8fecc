MODEL (
  name gold.fct_daily_summary,
  description 'Daily candles with volumes, VWAP, realised volatility, change, moving averages of the daily close, the coin as of the day and its market cap. One row per symbol per UTC day.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column day,
    lookback 2
  ),
  cron '@daily',
  owner analytics,
  grain (symbol, day),
  audits (
    not_null(columns := (symbol, day, coin_id)), /* coin_id: every pair maps to a CoinGecko coin */
    accepted_range(column := candles, min_v := 1, max_v := 24),
    unique_combination_of_columns(columns := (symbol, day))
  )
);

WITH candles AS (
  /* from 29 days before the interval: the previous day's close and the 30-day mean of the first day */
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
    trades,
    LN(@ratio_1h(close::DOUBLE PRECISION)) AS log_return_1h /* as in fct_prices; NULL after a missing hour */
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '29 days' AND @end_ts
), coins AS (
  SELECT
    symbol,
    day,
    coin_id
  FROM silver.int_crypto_daily
  WHERE
    day BETWEEN @start_ds AND @end_ds
), market_caps AS (
  SELECT
    symbol,
    day,
    market_cap_usd
  FROM silver.int_pair_snapshots_daily
  WHERE
    day BETWEEN @start_ds AND @end_ds
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
    COUNT(*) AS candles,
    STDDEV_SAMP(log_return_1h) AS sd
  FROM candles
  GROUP BY
    symbol,
    day
), moving AS (
  /* means of the daily closes (as float8) of the days with candles among the 7 / 30 ending on each day */
  SELECT
    symbol,
    day,
    AVG(close::DOUBLE PRECISION) OVER (PARTITION BY symbol ORDER BY day RANGE BETWEEN INTERVAL '6 days' PRECEDING AND CURRENT ROW) AS ma_7d,
    AVG(close::DOUBLE PRECISION) OVER (PARTITION BY symbol ORDER BY day RANGE BETWEEN INTERVAL '29 days' PRECEDING AND CURRENT ROW) AS ma_30d
  FROM daily
)
SELECT
  d.symbol::TEXT AS symbol, /* Binance pair */
  d.day::DATE AS day, /* UTC day */
  coins.coin_id::TEXT AS coin_id, /* the CoinGecko coin the pair mapped to as of that day (a later snapshot never rewrites it) */
  d.open::NUMERIC(36, 8) AS open, /* first hourly open of the day, USDT */
  d.high::NUMERIC(36, 8) AS high, /* highest hourly high, USDT */
  d.low::NUMERIC(36, 8) AS low, /* lowest hourly low, USDT */
  d.close::NUMERIC(36, 8) AS close, /* last hourly close of the day, USDT */
  d.volume::NUMERIC(36, 8) AS volume, /* base asset quantity traded */
  d.quote_volume::NUMERIC(36, 8) AS quote_volume, /* USDT value traded */
  d.trades::BIGINT AS trades, /* number of trades */
  d.candles::INT AS candles, /* hourly candles in the day (24 unless the exchange had an outage) */
  (d.quote_volume / NULLIF(d.volume, 0))::DOUBLE PRECISION AS vwap, /* sum(quote_volume) / sum(volume) over the day */
  (d.sd * SQRT(24 * 365))::DOUBLE PRECISION AS volatility, /* sample std of the day's hourly log returns x sqrt(24 x 365) */
  (d.close / p.close - 1)::DOUBLE PRECISION AS change_1d, /* close / previous UTC day's close - 1 (fraction) */
  m.ma_7d::DOUBLE PRECISION AS ma_7d, /* mean daily close of the 7 UTC days ending that day (days without candles left out) */
  m.ma_30d::DOUBLE PRECISION AS ma_30d, /* mean daily close of the 30 UTC days ending that day (days without candles left out) */
  caps.market_cap_usd::DOUBLE PRECISION AS market_cap_usd /* market cap in the day's newest CoinGecko snapshot (NULL if none) */
FROM daily AS d
LEFT JOIN daily AS p
  ON p.symbol = d.symbol AND p.day = d.day - 1
LEFT JOIN moving AS m
  ON m.symbol = d.symbol AND m.day = d.day
LEFT JOIN market_caps AS caps
  ON caps.symbol = d.symbol AND caps.day = d.day
LEFT JOIN coins
  ON coins.symbol = d.symbol AND coins.day = d.day
WHERE
  d.day BETWEEN @start_ds AND @end_ds
