/* Row-count sanity: the model is not empty. */
AUDIT (name assert_positive_rows);
SELECT 1 AS empty_model
WHERE NOT EXISTS (SELECT 1 FROM @this_model)
