"""Data services: publish the gold marts to an online store and serve profiles, tags and audiences over HTTP."""
