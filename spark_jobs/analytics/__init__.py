"""Analysis and alerting: metrics, funnels, retention and transitions as gold marts, anomaly alerts, the run report."""
