"""The registry's OAuth2 authorization server: scopes, client key sets, signing keys, the Authlib
adapter (``server``), grants and endpoints. See docs/registry.md, section "OAuth2"."""
