"""Personal data: the PII class of every table column, keyed tokens and ad-platform hashing, marketing consent."""
