MODEL (
  name gold.fct_prices,
  description 'Hourly prices with OHLCV, every indicator, the coin as of that hour and the day''s sentiment: the table analysts and the dashboard read. The indicators come from one sorted pass over each pair''s candles: returns over exact time offsets, moving averages, the 24-hour VWAP and rolling volatility; a missing candle gives a NULL return and shrinks a window instead of stretching it. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner analytics,
  grain (symbol, open_time), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, open_time, coin_id, ma_7d, ma_30d)), /* coin_id: every pair maps to a CoinGecko coin */
    accepted_range(column := change_24h, min_v := -1, max_v := 100),
    accepted_range(column := volatility_30d, min_v := 0, max_v := 100)
  )
);

WITH candles AS (
  /* 720 hours of history before the interval for the 30-day windows, and 1 more for their first return */
  SELECT
    symbol,
    open_time,
    open,
    high,
    low,
    close,
    close::DOUBLE PRECISION AS price, /* for ratios: converted once (outputs are float8) */
    volume,
    quote_volume,
    trades
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '721 hours' AND @end_ts
), running AS (
  /* the 1-hour ratio (NULL when the pair's previous candle did not open exactly one hour earlier) and running
     totals (exact numeric for prices and volumes: a window's total is then one subtraction, so the pass is
     O(n)) */
  SELECT
    *,
    @ratio_1h(price) AS ratio_1h,
    @over_pair(SUM(close), 0) AS close_sum,
    @over_pair(SUM(volume), 0) AS volume_sum,
    @over_pair(SUM(quote_volume), 0) AS quote_sum,
    @over_pair(ROW_NUMBER(), 0) AS n
  FROM candles
), running_returns AS (
  SELECT
    *,
    LN(ratio_1h) AS r, /* the hourly log return */
    COALESCE(@over_pair(SUM(LN(ratio_1h)), 0), 0) AS s1,
    COALESCE(@over_pair(SUM(LN(ratio_1h) * LN(ratio_1h)), 0), 0) AS s2,
    @over_pair(COUNT(ratio_1h), 0) AS n_r
  FROM running
), windowed AS (
  /* each total over the hours ending at t (24 h, 168 h = 7 days, 720 h = 30 days), and the last candle at
     or before t - 24 h and t - 168 h, used below only if it opened exactly that long before */
  SELECT
    *,
    @over_pair(LAST_VALUE(open_time), 24) AS t24,
    @over_pair(LAST_VALUE(price), 24) AS p24,
    @over_pair(LAST_VALUE(open_time), 168) AS t168,
    @over_pair(LAST_VALUE(price), 168) AS p168,
    @trailing(close_sum, 168) AS close_7d,
    @trailing(n, 168) AS n_7d,
    @trailing(close_sum, 720) AS close_30d,
    @trailing(n, 720) AS n_30d,
    @trailing(volume_sum, 24) AS volume_24h,
    @trailing(quote_sum, 24) AS quote_volume_24h,
    @trailing(s1, 24) AS s1_24h,
    @trailing(s2, 24) AS s2_24h,
    @trailing(n_r, 24) AS nr_24h,
    @trailing(s1, 168) AS s1_7d,
    @trailing(s2, 168) AS s2_7d,
    @trailing(n_r, 168) AS nr_7d,
    @trailing(s1, 720) AS s1_30d,
    @trailing(s2, 720) AS s2_30d,
    @trailing(n_r, 720) AS nr_30d
  FROM running_returns
), days AS (
  SELECT
    *
  FROM silver.int_crypto_daily
  WHERE
    day BETWEEN @start_ds AND @end_ds
)
SELECT
  w.symbol::TEXT AS symbol, /* Binance pair, e.g. BTCUSDT */
  w.open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  d.coin_id::TEXT AS coin_id, /* the CoinGecko coin the pair mapped to as of this hour's UTC day (a later snapshot never rewrites it) */
  d.coin_name::TEXT AS coin_name, /* its CoinGecko display name as of that day */
  w.open::NUMERIC(36, 8) AS open, /* USDT */
  w.high::NUMERIC(36, 8) AS high, /* USDT */
  w.low::NUMERIC(36, 8) AS low, /* USDT */
  w.close::NUMERIC(36, 8) AS close, /* USDT */
  w.volume::NUMERIC(36, 8) AS volume, /* base asset quantity */
  w.quote_volume::NUMERIC(36, 8) AS quote_volume, /* USDT value traded */
  w.trades::BIGINT AS trades, /* number of trades */
  (w.ratio_1h - 1)::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1, a fraction (0.05 = +5%); NULL when that candle is missing */
  (
    CASE WHEN w.t24 = w.open_time - INTERVAL '24 hours' THEN w.price / w.p24 - 1 END
  )::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 (fraction); NULL when that candle is missing */
  (
    CASE WHEN w.t168 = w.open_time - INTERVAL '168 hours' THEN w.price / w.p168 - 1 END
  )::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 (fraction); NULL when that candle is missing */
  w.r::DOUBLE PRECISION AS log_return_1h, /* ln(close / close 1 h earlier); NULL when that candle is missing */
  (w.close_7d::DOUBLE PRECISION / w.n_7d)::DOUBLE PRECISION AS ma_7d, /* mean close of the candles in the 168 hours ending at t */
  (w.close_30d::DOUBLE PRECISION / w.n_30d)::DOUBLE PRECISION AS ma_30d, /* mean close of the candles in the 720 hours ending at t */
  (w.quote_volume_24h::DOUBLE PRECISION / NULLIF(w.volume_24h, 0)::DOUBLE PRECISION)::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  w.volume_24h::NUMERIC(36, 8) AS volume_24h, /* base volume over 24 h */
  w.quote_volume_24h::NUMERIC(36, 8) AS quote_volume_24h, /* USDT volume over 24 h */
  w.n_7d::INT AS candles_in_7d, /* candles in the 168-hour window (168 when complete) */
  @annualised_std(w.s1_24h, w.s2_24h, w.nr_24h)::DOUBLE PRECISION AS volatility_24h, /* sample std of the hourly log returns over 24 h x sqrt(24 x 365); NULL with fewer than two */
  @annualised_std(w.s1_7d, w.s2_7d, w.nr_7d)::DOUBLE PRECISION AS volatility_7d, /* the same over 168 h */
  @annualised_std(w.s1_30d, w.s2_30d, w.nr_30d)::DOUBLE PRECISION AS volatility_30d, /* the same over 720 h */
  w.nr_30d::INT AS returns_in_30d, /* hourly returns in the 720-hour window (720 when complete) */
  d.fng_value::INT AS fng_value, /* Fear & Greed value of the UTC day */
  d.fng_label::TEXT AS fng_label /* Fear & Greed label of the UTC day */
FROM windowed AS w
LEFT JOIN days AS d
  ON d.symbol = w.symbol AND d.day = (w.open_time AT TIME ZONE 'UTC')::DATE
WHERE
  w.open_time BETWEEN @start_ts AND @end_ts
;

@unique_grain(open_time, symbol);

@analyze_after_backfill(open_time, symbol)
