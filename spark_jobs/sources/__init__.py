"""Landing sources: their declarations (conf/sources.yaml), SDK presets, field expressions and readers."""
