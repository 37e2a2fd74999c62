"""OAuth2 pieces of the registry: scopes, client key sets (the authorization server comes next)."""
