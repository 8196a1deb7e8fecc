-- The SQL of pipelines/ingest/gaps.py, one named statement per section (`-- name: <name>`).

-- name: detect_gaps
-- Missing hours inside each window (not already known gaps), recorded as status missing.
-- Params: symbols, start ms, end ms (one entry per window), interval, run id.
WITH w AS (  -- one row per window (i): a symbol can have several (pages, re-fetch ranges)
    SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) WITH ORDINALITY
        AS t(symbol, start_ms, end_ms, i)
), bounds AS (
    SELECT i, symbol, to_timestamp(start_ms / 1000.0) AS lo, to_timestamp(end_ms / 1000.0) AS hi FROM w
), present AS (  -- LATERAL ... OFFSET 0: an index range scan per window, never the whole table
    SELECT b.i, k.symbol, k.open_time,
           lag(k.open_time) OVER (PARTITION BY b.i ORDER BY k.open_time) AS prev
    FROM bounds b CROSS JOIN LATERAL (
        SELECT r.symbol, r.open_time FROM raw.binance_klines r
        WHERE r.symbol = b.symbol AND r.open_time BETWEEN b.lo AND b.hi OFFSET 0
    ) k
), holes AS (
    SELECT symbol, prev + interval '1 hour' AS first_missing, open_time - interval '1 hour' AS last_missing
    FROM present WHERE prev IS NOT NULL AND open_time - prev > interval '1 hour'
    UNION ALL  -- missing at the start or end of a window, or a window with no rows at all
    SELECT b.symbol, b.lo, coalesce(min(p.open_time) - interval '1 hour', b.hi)
    FROM bounds b LEFT JOIN present p USING (i) GROUP BY b.i, b.symbol, b.lo, b.hi
    HAVING min(p.open_time) IS NULL OR min(p.open_time) > b.lo
    UNION ALL
    SELECT b.symbol, max(p.open_time) + interval '1 hour', b.hi
    FROM bounds b JOIN present p USING (i) GROUP BY b.i, b.symbol, b.hi
    HAVING max(p.open_time) < b.hi
)
INSERT INTO ops.gaps (symbol, interval, open_time, status, detected_run_id)
SELECT h.symbol, %s, g, 'missing', %s
FROM holes h, generate_series(h.first_missing, h.last_missing, interval '1 hour') AS g
ON CONFLICT (symbol, interval, open_time) DO UPDATE
    SET status = 'missing', detected_run_id = EXCLUDED.detected_run_id, detected_at = now()
    WHERE ops.gaps.status <> 'known_gap'
RETURNING symbol, (extract(epoch FROM open_time) * 1000)::bigint;

-- name: short_windows
-- The windows holding fewer candles than their hours (an index-only count per window).
-- Params: symbols, start ms, end ms, the interval in ms.
SELECT w.i FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS w(symbol, lo, hi, i)
WHERE (SELECT count(*) FROM raw.binance_klines k WHERE k.symbol = w.symbol
       AND k.open_time BETWEEN to_timestamp(w.lo / 1000.0) AND to_timestamp(w.hi / 1000.0))
      < (w.hi - w.lo) / %s + 1;

-- name: settle_gaps
-- After the one re-fetch: hours now present are refilled, this run's others known gaps; hours an
-- earlier (killed) run left missing are settled too once raw has them. Params: run.
UPDATE ops.gaps g
SET refetched_at = CASE WHEN g.detected_run_id = %(run)s THEN now() ELSE g.refetched_at END,
    status = CASE WHEN EXISTS (SELECT 1 FROM raw.binance_klines k
                               WHERE k.symbol = g.symbol AND k.open_time = g.open_time)
                  THEN 'refilled' ELSE 'known_gap' END
WHERE g.status = 'missing'
  AND (g.detected_run_id = %(run)s OR EXISTS (SELECT 1 FROM raw.binance_klines k
                                            WHERE k.symbol = g.symbol AND k.open_time = g.open_time))
RETURNING status;

-- name: classify_gaps
-- Known gaps: an exchange outage when at least two pairs miss the hour and no tracked pair traded in it,
-- else a pair halt. `symbol = ANY(<constant array>) AND open_time = h` is one index probe per pair.
-- Params: tracked.
WITH hours AS (
    SELECT open_time, count(*) AS missing_pairs FROM ops.gaps
    WHERE status = 'known_gap' GROUP BY open_time
), traded AS (
    SELECT h.open_time, h.missing_pairs,
           EXISTS (SELECT 1 FROM raw.binance_klines k
                   WHERE k.symbol = ANY(%(tracked)s::text[]) AND k.open_time = h.open_time)
               AS someone_traded
    FROM hours h
)
UPDATE ops.gaps g
SET gap_class = CASE WHEN NOT t.someone_traded AND t.missing_pairs >= 2
                     THEN 'exchange_outage' ELSE 'pair_halt' END
FROM traded t
WHERE t.open_time = g.open_time AND g.status = 'known_gap';
