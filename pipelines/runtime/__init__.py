"""The runtime: the Postgres server (embedded or configured; roles, connections, locks), the local services
`cryptoflow up` starts (Airflow, the metrics endpoint, the dashboard) and the Streamlit process."""
