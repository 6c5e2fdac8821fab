"""OpenSearch Dashboards content: specs under dashboards/ rendered to saved objects, their aggregations
as plain searches (for tests and the console), and how the pack owns them in a Dashboards instance."""
