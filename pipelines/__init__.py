"""cryptoflow: crypto market ELT on PostgreSQL."""
