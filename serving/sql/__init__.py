"""The BI SQL endpoint: Arrow Flight SQL over the lakehouse's Delta tables, read-only, behind the API keys."""
