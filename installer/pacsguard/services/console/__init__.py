"""`pacsguard console`: a small web app for clusters without OpenSearch Dashboards."""
