MODEL (
  name silver.int_indicators_hourly,
  description 'Every hourly indicator in one sorted pass over each pair''s candles: returns over exact time offsets, moving averages, the 24-hour VWAP and rolling volatility; a missing candle shrinks a window instead of stretching it. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, open_time, ma_7d, ma_30d)),
    accepted_range(column := change_1h, min_v := -1, max_v := 100),
    accepted_range(column := ma_7d, min_v := 0),
    accepted_range(column := volatility_30d, min_v := 0, max_v := 100)
  )
);

WITH candles AS (
  /* 720 hours of history before the interval for the 30-day windows, and 1 more for their first return */
  SELECT
    symbol,
    open_time,
    close,
    close::DOUBLE PRECISION AS price, /* for ratios: converted once (outputs are float8) */
    volume,
    quote_volume
  FROM silver.stg_binance__ohlcv
  WHERE
    open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '721 hours' AND @end_ts
), running AS (
  /* running totals (exact numeric for prices and volumes: a window's total is then one subtraction, so the
     pass is O(n)) and the pair's previous candle */
  SELECT
    symbol,
    open_time,
    price,
    @over_pair(LAG(open_time), 0) AS previous_time,
    @over_pair(LAG(price), 0) AS previous_price,
    @over_pair(SUM(close), 0) AS close_sum,
    @over_pair(SUM(volume), 0) AS volume_sum,
    @over_pair(SUM(quote_volume), 0) AS quote_sum,
    @over_pair(ROW_NUMBER(), 0) AS n
  FROM candles
), hourly AS (
  /* the 1-hour return exists only when the previous candle opened exactly one hour earlier */
  SELECT
    *,
    CASE
      WHEN previous_time = open_time - INTERVAL '1 hour'
      THEN price / previous_price
    END AS ratio_1h
  FROM running
), running_returns AS (
  SELECT
    *,
    LN(ratio_1h) AS r, /* the hourly log return */
    COALESCE(@over_pair(SUM(LN(ratio_1h)), 0), 0) AS s1,
    COALESCE(@over_pair(SUM(LN(ratio_1h) * LN(ratio_1h)), 0), 0) AS s2,
    @over_pair(COUNT(ratio_1h), 0) AS n_r
  FROM hourly
), windowed AS (
  /* each total over the hours ending at t (24 h, 168 h = 7 days, 720 h = 30 days), and the last candle at
     or before t - 24 h and t - 168 h, used below only if it opened exactly that long before */
  SELECT
    symbol,
    open_time,
    price,
    ratio_1h,
    r,
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
)
SELECT
  symbol::TEXT AS symbol, /* Binance pair */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC */
  (ratio_1h - 1)::DOUBLE PRECISION AS change_1h, /* close / close 1 h earlier - 1, a fraction (0.05 = +5%); NULL when that candle is missing */
  (
    CASE WHEN t24 = open_time - INTERVAL '24 hours' THEN price / p24 - 1 END
  )::DOUBLE PRECISION AS change_24h, /* close / close 24 h earlier - 1 (fraction); NULL when that candle is missing */
  (
    CASE WHEN t168 = open_time - INTERVAL '168 hours' THEN price / p168 - 1 END
  )::DOUBLE PRECISION AS change_7d, /* close / close 168 h earlier - 1 (fraction); NULL when that candle is missing */
  r::DOUBLE PRECISION AS log_return_1h, /* ln(close / close 1 h earlier); NULL when that candle is missing */
  (close_7d::DOUBLE PRECISION / n_7d)::DOUBLE PRECISION AS ma_7d, /* mean close of the candles in the 168 hours ending at t */
  (close_30d::DOUBLE PRECISION / n_30d)::DOUBLE PRECISION AS ma_30d, /* mean close of the candles in the 720 hours ending at t */
  (quote_volume_24h::DOUBLE PRECISION / NULLIF(volume_24h, 0)::DOUBLE PRECISION)::DOUBLE PRECISION AS vwap_24h, /* sum(quote_volume) / sum(volume) over 24 h */
  volume_24h::NUMERIC(36, 8) AS volume_24h, /* base volume over 24 h */
  quote_volume_24h::NUMERIC(36, 8) AS quote_volume_24h, /* USDT volume over 24 h */
  n_7d::INT AS candles_in_7d, /* candles in the 168-hour window (168 when complete) */
  @annualised_std(s1_24h, s2_24h, nr_24h)::DOUBLE PRECISION AS volatility_24h, /* sample std of the hourly log returns over 24 h x sqrt(24 x 365); NULL with fewer than two */
  @annualised_std(s1_7d, s2_7d, nr_7d)::DOUBLE PRECISION AS volatility_7d, /* the same over 168 h */
  @annualised_std(s1_30d, s2_30d, nr_30d)::DOUBLE PRECISION AS volatility_30d, /* the same over 720 h */
  nr_30d::INT AS returns_in_30d /* hourly returns in the 720-hour window (720 when complete) */
FROM windowed
WHERE
  open_time BETWEEN @start_ts AND @end_ts
;

@unique_grain(open_time, symbol);

@analyze_after_backfill()
