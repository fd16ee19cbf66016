"""One-ID: identifiers to people (evidence, rules, graph, matching, the stage, and its evaluation)."""
