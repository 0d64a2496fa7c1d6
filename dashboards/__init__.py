"""Panel dashboards (installed as ``workbench.dashboards``)."""
