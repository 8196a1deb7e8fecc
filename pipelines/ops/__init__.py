"""Operations: the run ledger and logging (observability), the Prometheus metrics endpoint, Slack
incidents and the email digest, and the ledger of alert deliveries."""
