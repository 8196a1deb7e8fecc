/* OHLC consistency: low <= open, close <= high and every price positive. */
AUDIT (name assert_ohlc_consistent);
SELECT *
FROM @this_model
WHERE low <= 0 OR high < low OR open NOT BETWEEN low AND high OR close NOT BETWEEN low AND high
