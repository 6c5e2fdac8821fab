"""Identity providers' APIs (Keycloak's admin REST API), shared by the dev Keycloak, the
containment connector and, later, the user-directory job."""
