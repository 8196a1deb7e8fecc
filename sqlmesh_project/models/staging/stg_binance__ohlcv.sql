MODEL (
  name silver.stg_binance__ohlcv,
  description 'Binance hourly candles, typed, valid rows only. raw holds one row per (symbol, open_time), the latest load of it (its unique index binance_klines_natural_key: a revised candle replaces the row), so no deduplication is needed here; the 48-hour lookback lets late corrections in raw flow through. One row per symbol per hour.',
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column open_time,
    lookback 48
  ),
  cron '@hourly',
  owner data_eng,
  grain (symbol, open_time), /* a unique index (@unique_grain below): the database refuses a duplicate */
  audits (
    not_null(columns := (symbol, open_time, quote_volume)), /* prices and volume: the WHERE below keeps none NULL */
    accepted_range(column := quote_volume, min_v := 0)
  )
);

SELECT
  /* ids */
  symbol::TEXT AS symbol, /* Binance spot pair, e.g. BTCUSDT */
  LEFT(symbol, LENGTH(symbol) - 4)::TEXT AS base_asset, /* the coin, e.g. BTC (pairs are quoted in USDT) */
  /* timestamps */
  open_time::TIMESTAMPTZ AS open_time, /* candle open, UTC, on the hourly grid */
  close_time::TIMESTAMPTZ AS close_time, /* candle close, UTC (open + 1 h - 1 ms) */
  /* prices, USDT, exact */
  open::NUMERIC(36, 8) AS open, /* first trade price of the hour */
  high::NUMERIC(36, 8) AS high, /* highest trade price of the hour */
  low::NUMERIC(36, 8) AS low, /* lowest trade price of the hour */
  close::NUMERIC(36, 8) AS close, /* last trade price of the hour */
  /* volumes */
  volume::NUMERIC(36, 8) AS volume, /* traded quantity of the base asset */
  quote_volume::NUMERIC(36, 8) AS quote_volume, /* traded value in USDT */
  trades::BIGINT AS trades, /* number of trades */
  taker_buy_base_volume::NUMERIC(36, 8) AS taker_buy_base_volume, /* base quantity bought by takers */
  taker_buy_quote_volume::NUMERIC(36, 8) AS taker_buy_quote_volume, /* USDT value bought by takers */
  load_id::TEXT AS load_id /* ingestion run that delivered this version of the row */
FROM raw.binance_klines
WHERE
  open_time BETWEEN @start_ts AND @end_ts
  AND interval = '1h'
  /* valid rows only: positive, consistent OHLC and a non-negative volume (raw's Soda checks count the rest) */
  AND low > 0
  AND high >= low
  AND open BETWEEN low AND high
  AND close BETWEEN low AND high
  AND volume >= 0
;

@unique_grain(open_time, symbol);

@analyze_after_backfill(open_time, symbol)
